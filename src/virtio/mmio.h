/* The virtio-mmio transport, version 2 (virtio 1.2, section 4.2 "Virtio Over MMIO"; no
 * legacy version 1): one register window per device, one level-triggered PLIC interrupt
 * (high while InterruptStatus is not 0), and its own device-tree node. */
#ifndef MABO_VIRTIO_MMIO_H
#define MABO_VIRTIO_MMIO_H

#include <stdint.h>

#include "core/bus.h"

struct vm;
struct vm_device_config;
struct virtio_device_ops;
struct virtio_mmio;
struct virtio_dev;
struct sbuf;
struct sreader;

/* Register offsets. */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000 /* "virt" */
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_SHM_SEL 0x0ac
#define VIRTIO_MMIO_SHM_LEN_LOW 0x0b0
#define VIRTIO_MMIO_SHM_LEN_HIGH 0x0b4
#define VIRTIO_MMIO_SHM_BASE_LOW 0x0b8
#define VIRTIO_MMIO_SHM_BASE_HIGH 0x0bc
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976  /* "virt", little-endian */
#define VIRTIO_MMIO_VENDOR 0x4f42414d /* "MABO" */

/* The bus ops of every virtio-mmio window (opaque: struct virtio_mmio). */
extern const struct mmio_ops virtio_mmio_ops;

/* Creates a device of type ops (described by cfg) behind a virtio-mmio window at
 * where->base (where->size bytes, at least 0x200) raising PLIC source where->irq; its
 * device-tree node names irq_parent (a phandle) as its interrupt parent. 0 or -errno (after
 * logging one line). */
int virtio_mmio_create(struct vm *vm, const struct mmio_region *where, uint32_t irq_parent,
		       const struct virtio_device_ops *ops, const struct vm_device_config *cfg,
		       struct virtio_mmio **out) __attribute__((warn_unused_result));

/* Takes the device off the event loop (waiting for work in progress), destroys it, lowers
 * its interrupt and frees the transport. Not while holding the device's lock. NULL is
 * fine. */
void virtio_mmio_destroy(struct virtio_mmio *t);

/* Saved state: the transport's registers, then the device (virtio_dev_save). Load is for
 * a device just created, after the PLIC is loaded. 0 or -EINVAL (r->err says why). */
void virtio_mmio_save(struct virtio_mmio *t, struct sbuf *b);
int virtio_mmio_load(struct virtio_mmio *t, struct sreader *r) __attribute__((warn_unused_result));

/* The device behind the transport (to quiesce it). */
struct virtio_dev *virtio_mmio_dev(struct virtio_mmio *t);

#endif
