/* A fake guest driving one virtio-mmio device through its registers as a guest driver
 * would: a VM with RAM and one fake hart, a PLIC routing the device's interrupt to that
 * hart's S-mode context, a real event loop, and helpers for the registers, feature
 * negotiation, queue setup, descriptors and the avail and used rings. */
#ifndef FAKE_GUEST_H
#define FAKE_GUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/vm.h"
#include "machine/riscv-virt/plic.h"
#include "virtio/mmio.h"
#include "virtio/virtio.h"

#define SLOT_BASE 0x10001000ULL
#define SLOT_IRQ 1
/* Queue q's rings at RAM_BASE + q * 0x4000; data buffers from RAM_BASE + 0x40000. */
#define QDESC(q) (RAM_BASE + 0x4000ULL * (q))
#define QAVAIL(q) (QDESC(q) + 0x1000)
#define QUSED(q) (QDESC(q) + 0x2000)
#define BUF (RAM_BASE + 0x40000)

#define ALL_FEATURES                                                                               \
	(VIRTIO_FEATURE(VIRTIO_F_VERSION_1) | VIRTIO_FEATURE(VIRTIO_F_EVENT_IDX) |                 \
	 VIRTIO_FEATURE(VIRTIO_F_INDIRECT_DESC))

struct fake_guest {
	/* The guest's geometry, set by the test before the first fg_setup. */
	uint64_t ram_size;
	uint16_t qsize; /* the ring size the guest indexes its rings with */

	struct vm_config cfg;
	struct vm vm;
	struct plic *plic;
	struct virtio_mmio *mmio; /* the device under test, NULL until created */
	uint16_t avail_shadow[2]; /* the guest's next avail idx, per queue */
};

extern struct fake_guest fg;

/* cmocka fixtures: fg_setup makes fg's machine with zeroed RAM and no device, fg_teardown
 * frees it with its device and console (if any). */
int fg_setup(void **state);
int fg_teardown(void **state);
/* Creates the device with ops and dc at SLOT_BASE into fg.mmio: virtio_mmio_create's result. */
int fg_create(const struct virtio_device_ops *ops, const struct vm_device_config *dc);

uint32_t rd(uint64_t off);
void wr(uint64_t off, uint32_t val);
/* The host address of guest-physical gpa in RAM. */
void *gp(uint64_t gpa);
uint16_t get16(uint64_t gpa);
void put16(uint64_t gpa, uint16_t v);
/* The hart's S-mode external interrupt line. */
bool irq_line(void);
/* ACKNOWLEDGE, DRIVER, the features given, FEATURES_OK: returns the status read back. */
uint32_t negotiate(uint64_t features);
/* Queue q with size entries at QDESC(q), QAVAIL(q), QUSED(q), checked not ready before. */
void setup_queue(unsigned q, uint16_t size);
void driver_ok(void);
void set_desc(unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next);
/* Makes head available on queue q. */
void avail_add(unsigned q, uint16_t head);
/* Waits up to ms for queue q's used->idx to reach n. */
bool wait_used(unsigned q, uint16_t n, int ms);
/* Waits up to ms for all of bits to be set in the device status. */
bool wait_status(uint32_t bits, int ms);
/* Used ring entry i of queue q. */
void used_elem(unsigned q, uint16_t i, uint32_t *id, uint32_t *len);

#endif
