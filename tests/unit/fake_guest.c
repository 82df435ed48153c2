/* The fake guest: see fake_guest.h. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/console.h"
#include "core/event.h"
#include "cpu/riscv/cpu.h"
#include "fake_guest.h"
#include "fake_harts.h"

struct fake_guest fg;

int fg_setup(void **state)
{
	(void)state;
	memset(&fg.vm, 0, sizeof(fg.vm));
	memset(&fg.cfg, 0, sizeof(fg.cfg));
	fg.cfg.cpus = 1;
	fg.cfg.memory = fg.ram_size;
	fg.vm.cfg = &fg.cfg;
	fg.vm.ram.base = RAM_BASE;
	fg.vm.ram.size = fg.ram_size;
	fg.vm.ram.host = aligned_alloc(4096, fg.ram_size);
	assert_non_null(fg.vm.ram.host);
	memset(fg.vm.ram.host, 0, fg.ram_size);
	fg.vm.nharts = 1;
	fg.vm.harts[0] = (struct hart *)&fake_harts[0];
	atomic_store(&mip[0], 0);
	pthread_mutex_init(&fg.vm.exit_lock, NULL);
	pthread_cond_init(&fg.vm.exit_cond, NULL);
	fg.vm.clock_base_ns = host_now_ns();
	assert_int_equal(event_loop_create(&fg.vm.loop), 0);
	assert_int_equal(event_loop_start(fg.vm.loop), 0);

	static const struct mmio_region plic_where = { .base = 0xc000000, .size = 0x4000000 };
	assert_int_equal(plic_create(&fg.vm, &plic_where, &fg.plic), 0);
	fg.vm.plic = fg.plic;
	/* Source 1 to hart 0's S-mode context. */
	plic_ops.write(fg.plic, PLIC_PRIORITY + 4 * SLOT_IRQ, 1, 4);
	plic_ops.write(fg.plic, PLIC_ENABLE + PLIC_ENABLE_STRIDE * 1, 1u << SLOT_IRQ, 4);
	fg.avail_shadow[0] = fg.avail_shadow[1] = 0;
	fg.mmio = NULL;
	return 0;
}

int fg_teardown(void **state)
{
	(void)state;
	virtio_mmio_destroy(fg.mmio);
	event_loop_destroy(fg.vm.loop);
	plic_destroy(fg.plic);
	if (fg.vm.console)
		console_destroy(fg.vm.console);
	free(fg.vm.ram.host);
	pthread_mutex_destroy(&fg.vm.exit_lock);
	pthread_cond_destroy(&fg.vm.exit_cond);
	return 0;
}

int fg_create(const struct virtio_device_ops *ops, const struct vm_device_config *dc)
{
	static const struct mmio_region where = { .base = SLOT_BASE,
						  .size = 0x1000,
						  .irq = SLOT_IRQ };
	return virtio_mmio_create(&fg.vm, &where, 1, ops, dc, &fg.mmio);
}

uint32_t rd(uint64_t off)
{
	return (uint32_t)virtio_mmio_ops.read(fg.mmio, off, 4);
}

void wr(uint64_t off, uint32_t val)
{
	virtio_mmio_ops.write(fg.mmio, off, val, 4);
}

void *gp(uint64_t gpa)
{
	return fg.vm.ram.host + (gpa - RAM_BASE);
}

uint16_t get16(uint64_t gpa)
{
	uint16_t v;
	memcpy(&v, gp(gpa), 2);
	return v;
}

void put16(uint64_t gpa, uint16_t v)
{
	memcpy(gp(gpa), &v, 2);
}

bool irq_line(void)
{
	return atomic_load(&mip[0]) & MIP_SEIP;
}

uint32_t negotiate(uint64_t features)
{
	wr(VIRTIO_MMIO_STATUS, 0);
	wr(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
	wr(VIRTIO_MMIO_STATUS,
	   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	return rd(VIRTIO_MMIO_STATUS);
}

void setup_queue(unsigned q, uint16_t size)
{
	wr(VIRTIO_MMIO_QUEUE_SEL, q);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_READY), 0);
	wr(VIRTIO_MMIO_QUEUE_NUM, size);
	wr(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)QDESC(q));
	wr(VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(QDESC(q) >> 32));
	wr(VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)QAVAIL(q));
	wr(VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
	wr(VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)QUSED(q));
	wr(VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
	wr(VIRTIO_MMIO_QUEUE_READY, 1);
}

void driver_ok(void)
{
	wr(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

void set_desc(unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *p = gp(QDESC(q) + 16ULL * i);
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

void avail_add(unsigned q, uint16_t head)
{
	put16(QAVAIL(q) + 4 + 2ULL * (fg.avail_shadow[q] % fg.qsize), head);
	fg.avail_shadow[q]++;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	put16(QAVAIL(q) + 2, fg.avail_shadow[q]);
}

bool wait_used(unsigned q, uint16_t n, int ms)
{
	for (int i = 0; i < ms; i++) {
		if (__atomic_load_n((uint16_t *)gp(QUSED(q) + 2), __ATOMIC_ACQUIRE) == n)
			return true;
		usleep(1000);
	}
	return false;
}

bool wait_status(uint32_t bits, int ms)
{
	for (int i = 0; i < ms; i++) {
		if ((rd(VIRTIO_MMIO_STATUS) & bits) == bits)
			return true;
		usleep(1000);
	}
	return false;
}

void used_elem(unsigned q, uint16_t i, uint32_t *id, uint32_t *len)
{
	memcpy(id, gp(QUSED(q) + 4 + 8ULL * (i % fg.qsize)), 4);
	memcpy(len, gp(QUSED(q) + 8 + 8ULL * (i % fg.qsize)), 4);
}
