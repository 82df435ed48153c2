/* The virtio-mmio transport driven through its registers as a guest driver would, with the
 * devices behind it running on a real event loop: feature negotiation (VERSION_1 required),
 * queue setup, notifications, interrupts through the PLIC, DEVICE_NEEDS_RESET on a bad
 * ring and recovery by reset; virtio-rng filling buffers; virtio-console input and output. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/console.h"
#include "core/event.h"
#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "machine/riscv-virt/htif.h"
#include "machine/riscv-virt/plic.h"
#include "virtio/mmio.h"
#include "virtio/virtio.h"

/* Fake harts: the interrupt lines the PLIC drives. */
static char fake_harts[VM_MAX_CPUS];
static _Atomic uint64_t mip[VM_MAX_CPUS];

void hart_set_irq(struct hart *h, uint64_t mask, bool level)
{
	int i = (int)((char *)h - fake_harts);
	if (level)
		atomic_fetch_or(&mip[i], mask);
	else
		atomic_fetch_and(&mip[i], ~mask);
}
void hart_reset(struct hart *h, uint64_t pc, uint64_t a0, uint64_t a1, uint64_t a2)
{
	(void)h, (void)pc, (void)a0, (void)a1, (void)a2;
}
void hart_kick(struct hart *h)
{
	(void)h;
}
struct htif *htif_create(struct vm *vm, uint64_t tohost)
{
	(void)vm, (void)tohost;
	return NULL;
}
void htif_destroy(struct htif *h)
{
	(void)h;
}

#define RAM_SIZE (1ULL << 20)
#define SLOT_BASE 0x10001000ULL
#define SLOT_IRQ 1
/* Queue q's rings at RAM_BASE + q * 0x4000; data buffers from RAM_BASE + 0x40000. */
#define QDESC(q) (RAM_BASE + 0x4000ULL * (q))
#define QAVAIL(q) (QDESC(q) + 0x1000)
#define QUSED(q) (QDESC(q) + 0x2000)
#define BUF (RAM_BASE + 0x40000)
#define QSIZE 8

static struct vm_config cfg;
static struct vm vm;
static struct plic *plic;
static struct virtio_mmio *t;
static uint16_t avail_shadow[2];

static int setup(void **state)
{
	(void)state;
	memset(&vm, 0, sizeof(vm));
	memset(&cfg, 0, sizeof(cfg));
	cfg.cpus = 1;
	cfg.memory = RAM_SIZE;
	vm.cfg = &cfg;
	vm.ram.base = RAM_BASE;
	vm.ram.size = RAM_SIZE;
	vm.ram.host = aligned_alloc(4096, RAM_SIZE);
	assert_non_null(vm.ram.host);
	memset(vm.ram.host, 0, RAM_SIZE);
	vm.nharts = 1;
	vm.harts[0] = (struct hart *)&fake_harts[0];
	atomic_store(&mip[0], 0);
	pthread_mutex_init(&vm.exit_lock, NULL);
	pthread_cond_init(&vm.exit_cond, NULL);
	vm.clock_base_ns = host_now_ns();
	assert_int_equal(event_loop_create(&vm.loop), 0);
	assert_int_equal(event_loop_start(vm.loop), 0);

	static const struct mmio_region plic_where = { .base = 0xc000000, .size = 0x4000000 };
	assert_int_equal(plic_create(&vm, &plic_where, &plic), 0);
	vm.plic = plic;
	/* Source 1 to hart 0's S-mode context. */
	plic_ops.write(plic, PLIC_PRIORITY + 4 * SLOT_IRQ, 1, 4);
	plic_ops.write(plic, PLIC_ENABLE + PLIC_ENABLE_STRIDE * 1, 1u << SLOT_IRQ, 4);
	avail_shadow[0] = avail_shadow[1] = 0;
	t = NULL;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	virtio_mmio_destroy(t);
	event_loop_destroy(vm.loop);
	plic_destroy(plic);
	if (vm.console)
		console_destroy(vm.console);
	free(vm.ram.host);
	pthread_mutex_destroy(&vm.exit_lock);
	pthread_cond_destroy(&vm.exit_cond);
	return 0;
}

static void create(const struct virtio_device_ops *ops)
{
	static const struct mmio_region where = { .base = SLOT_BASE,
						  .size = 0x1000,
						  .irq = SLOT_IRQ };
	static const struct vm_device_config dc = { .type = "test" };
	assert_int_equal(virtio_mmio_create(&vm, &where, 1, ops, &dc, &t), 0);
}

static uint32_t rd(uint64_t off)
{
	return (uint32_t)virtio_mmio_ops.read(t, off, 4);
}

static void wr(uint64_t off, uint32_t val)
{
	virtio_mmio_ops.write(t, off, val, 4);
}

static void *gp(uint64_t gpa)
{
	return vm.ram.host + (gpa - RAM_BASE);
}

static uint16_t get16(uint64_t gpa)
{
	uint16_t v;
	memcpy(&v, gp(gpa), 2);
	return v;
}

static void put16(uint64_t gpa, uint16_t v)
{
	memcpy(gp(gpa), &v, 2);
}

static bool irq_line(void)
{
	return atomic_load(&mip[0]) & MIP_SEIP;
}

/* ACKNOWLEDGE, DRIVER, the features given, FEATURES_OK: returns the status read back. */
static uint32_t negotiate(uint64_t features)
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

#define ALL_FEATURES                                                                               \
	(VIRTIO_FEATURE(VIRTIO_F_VERSION_1) | VIRTIO_FEATURE(VIRTIO_F_EVENT_IDX) |                 \
	 VIRTIO_FEATURE(VIRTIO_F_INDIRECT_DESC))

static void setup_queue(unsigned q, uint16_t size)
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

static void driver_ok(void)
{
	wr(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

static void set_desc(unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *p = gp(QDESC(q) + 16ULL * i);
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

static void avail_add(unsigned q, uint16_t head)
{
	put16(QAVAIL(q) + 4 + 2ULL * (avail_shadow[q] % QSIZE), head);
	avail_shadow[q]++;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	put16(QAVAIL(q) + 2, avail_shadow[q]);
}

/* Waits up to ms for queue q's used->idx to reach n. */
static bool wait_used(unsigned q, uint16_t n, int ms)
{
	for (int i = 0; i < ms; i++) {
		if (__atomic_load_n((uint16_t *)gp(QUSED(q) + 2), __ATOMIC_ACQUIRE) == n)
			return true;
		usleep(1000);
	}
	return false;
}

static bool wait_status(uint32_t bits, int ms)
{
	for (int i = 0; i < ms; i++) {
		if ((rd(VIRTIO_MMIO_STATUS) & bits) == bits)
			return true;
		usleep(1000);
	}
	return false;
}

static void used_elem(unsigned q, uint16_t i, uint32_t *id, uint32_t *len)
{
	memcpy(id, gp(QUSED(q) + 4 + 8ULL * (i % QSIZE)), 4);
	memcpy(len, gp(QUSED(q) + 8 + 8ULL * (i % QSIZE)), 4);
}

static void test_registers(void **state)
{
	(void)state;
	create(&virtio_rng_ops);
	assert_int_equal(rd(VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
	assert_int_equal(rd(VIRTIO_MMIO_VERSION), 2);
	assert_int_equal(rd(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_RNG);
	assert_int_equal(rd(VIRTIO_MMIO_VENDOR_ID), VIRTIO_MMIO_VENDOR);
	wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	uint32_t lo = rd(VIRTIO_MMIO_DEVICE_FEATURES);
	assert_true(lo & (1u << VIRTIO_F_INDIRECT_DESC));
	assert_true(lo & (1u << VIRTIO_F_EVENT_IDX));
	wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	assert_int_equal(rd(VIRTIO_MMIO_DEVICE_FEATURES), 1); /* VERSION_1 */
	wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
	assert_int_equal(rd(VIRTIO_MMIO_DEVICE_FEATURES), 0);
	wr(VIRTIO_MMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
	wr(VIRTIO_MMIO_QUEUE_SEL, 1);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 0); /* no such queue */
	wr(VIRTIO_MMIO_SHM_SEL, 0);
	assert_int_equal(rd(VIRTIO_MMIO_SHM_LEN_LOW), 0xffffffff);
	assert_int_equal(rd(VIRTIO_MMIO_SHM_LEN_HIGH), 0xffffffff);
	assert_int_equal(rd(VIRTIO_MMIO_CONFIG_GENERATION), 0);
	assert_int_equal(rd(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	/* Registers are 32-bit: other widths read 0. */
	assert_int_equal(virtio_mmio_ops.read(t, VIRTIO_MMIO_MAGIC_VALUE, 2), 0);
	assert_int_equal(virtio_mmio_ops.read(t, VIRTIO_MMIO_MAGIC_VALUE, 8), 0);
	/* No configuration space: zeros. */
	assert_int_equal(virtio_mmio_ops.read(t, VIRTIO_MMIO_CONFIG, 4), 0);
	/* Queue addresses read back. */
	wr(VIRTIO_MMIO_QUEUE_SEL, 0);
	wr(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x12345000);
	wr(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0x9);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_DESC_LOW), 0x12345000);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_DESC_HIGH), 0x9);
}

static void test_features(void **state)
{
	(void)state;
	create(&virtio_rng_ops);
	/* A legacy driver (no VERSION_1) is refused. */
	assert_int_equal(negotiate(VIRTIO_FEATURE(VIRTIO_F_EVENT_IDX)) & VIRTIO_STATUS_FEATURES_OK,
			 0);
	/* So is a feature the device did not offer. */
	assert_int_equal(negotiate(ALL_FEATURES | VIRTIO_FEATURE(5)) & VIRTIO_STATUS_FEATURES_OK,
			 0);
	/* Reset clears the status. */
	wr(VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(rd(VIRTIO_MMIO_STATUS), 0);
	assert_int_equal(negotiate(VIRTIO_FEATURE(VIRTIO_F_VERSION_1)),
			 VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				 VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(negotiate(ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
}

static void test_rng(void **state)
{
	(void)state;
	create(&virtio_rng_ops);
	assert_int_equal(negotiate(ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, QSIZE);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_READY), 1);

	/* Before DRIVER_OK the device does not touch the queue. */
	set_desc(0, 0, BUF, 64, VIRTQ_DESC_F_WRITE, 0);
	avail_add(0, 0);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	usleep(30000);
	assert_int_equal(get16(QUSED(0) + 2), 0);
	assert_false(irq_line());

	/* DRIVER_OK: the waiting request is served. */
	driver_ok();
	assert_true(wait_used(0, 1, 2000));
	uint32_t id, len;
	used_elem(0, 0, &id, &len);
	assert_int_equal(id, 0);
	assert_int_equal(len, 64);
	static const uint8_t zeros[64];
	assert_memory_not_equal(gp(BUF), zeros, 64);
	/* The interrupt (EVENT_IDX: used_event 0 was passed). */
	for (int i = 0; i < 2000 && !irq_line(); i++)
		usleep(1000);
	assert_true(irq_line());
	assert_int_equal(rd(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_INT_USED);
	wr(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_INT_USED);
	assert_int_equal(rd(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	assert_false(irq_line());

	/* An indirect request of two writable buffers. */
	set_desc(0, 1, BUF + 0x1000, 32, VIRTQ_DESC_F_INDIRECT, 0);
	uint8_t *table = gp(BUF + 0x1000);
	uint64_t a0 = BUF + 0x2000, a1 = BUF + 0x3000;
	uint32_t l0 = 16, l1 = 8;
	uint16_t f0 = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, f1 = VIRTQ_DESC_F_WRITE, n0 = 1;
	memcpy(table, &a0, 8), memcpy(table + 8, &l0, 4), memcpy(table + 12, &f0, 2);
	memcpy(table + 14, &n0, 2);
	memcpy(table + 16, &a1, 8), memcpy(table + 24, &l1, 4), memcpy(table + 28, &f1, 2);
	put16(QAVAIL(0) + 4 + 2 * QSIZE, 1); /* used_event: interrupt when idx passes 1 */
	avail_add(0, 1);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_used(0, 2, 2000));
	used_elem(0, 1, &id, &len);
	assert_int_equal(id, 1);
	assert_int_equal(len, 24);
	for (int i = 0; i < 2000 && !irq_line(); i++)
		usleep(1000);
	assert_true(irq_line());
}

static void test_needs_reset(void **state)
{
	(void)state;
	create(&virtio_rng_ops);
	assert_int_equal(negotiate(ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, QSIZE);
	driver_ok();
	/* A chain that loops. */
	set_desc(0, 3, BUF, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
	avail_add(0, 3);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_status(VIRTIO_STATUS_DEVICE_NEEDS_RESET, 2000));
	assert_int_equal(rd(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_INT_CONFIG);
	assert_true(irq_line());
	assert_int_equal(get16(QUSED(0) + 2), 0);
	/* The driver cannot clear it except by a reset. */
	driver_ok();
	assert_true(rd(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	/* Further notifications do nothing. */
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	usleep(20000);
	assert_int_equal(get16(QUSED(0) + 2), 0);

	/* Reset: everything cleared, interrupt line down, queue not ready. */
	wr(VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(rd(VIRTIO_MMIO_STATUS), 0);
	assert_int_equal(rd(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	assert_false(irq_line());
	wr(VIRTIO_MMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_READY), 0);

	/* And the device works again. */
	memset(gp(QDESC(0)), 0, 0x4000);
	avail_shadow[0] = 0;
	assert_int_equal(negotiate(ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, QSIZE);
	driver_ok();
	set_desc(0, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
	avail_add(0, 0);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_used(0, 1, 2000));
	assert_int_equal(rd(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
}

static void test_bad_queue_setup(void **state)
{
	(void)state;
	create(&virtio_rng_ops);
	assert_int_equal(negotiate(ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	/* Not a power of 2: the queue stays not ready and the device needs a reset. */
	setup_queue(0, 6);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_READY), 0);
	assert_true(rd(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	wr(VIRTIO_MMIO_STATUS, 0);
	/* Rings outside RAM. */
	assert_int_equal(negotiate(ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	wr(VIRTIO_MMIO_QUEUE_SEL, 0);
	wr(VIRTIO_MMIO_QUEUE_NUM, 8);
	wr(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
	wr(VIRTIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_READY), 0);
	assert_true(rd(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	/* A notify for a queue that does not exist is ignored. */
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 7);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0xffff);
}

static void test_console(void **state)
{
	(void)state;
	int in[2], out[2];
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(out), 0);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	assert_int_equal(console_create(&vm, in[0], out[1], &vm.console), 0);
	create(&virtio_console_ops);
	assert_int_equal(rd(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_CONSOLE);
	wr(VIRTIO_MMIO_QUEUE_SEL, 1);
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
	assert_int_equal(negotiate(ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, QSIZE);
	setup_queue(1, QSIZE);
	driver_ok();

	/* Input typed before the guest has a buffer waits, then arrives. */
	assert_int_equal(write(in[1], "abc", 3), 3);
	usleep(30000);
	set_desc(0, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
	avail_add(0, 0);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_used(0, 1, 2000));
	uint32_t id, len;
	used_elem(0, 0, &id, &len);
	assert_int_equal(len, 3);
	assert_memory_equal(gp(BUF), "abc", 3);
	/* With a buffer waiting, input goes straight in. */
	set_desc(0, 1, BUF + 0x100, 16, VIRTQ_DESC_F_WRITE, 0);
	avail_add(0, 1);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_int_equal(write(in[1], "xy", 2), 2);
	assert_true(wait_used(0, 2, 2000));
	used_elem(0, 1, &id, &len);
	assert_int_equal(id, 1);
	assert_int_equal(len, 2);
	assert_memory_equal(gp(BUF + 0x100), "xy", 2);

	/* Output: two readable buffers of one chain. */
	memcpy(gp(BUF + 0x1000), "hello ", 6);
	memcpy(gp(BUF + 0x2000), "world\n", 6);
	set_desc(1, 0, BUF + 0x1000, 6, VIRTQ_DESC_F_NEXT, 1);
	set_desc(1, 1, BUF + 0x2000, 6, 0, 0);
	avail_add(1, 0);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
	assert_true(wait_used(1, 1, 2000));
	char buf[32];
	ssize_t n = read(out[0], buf, sizeof(buf));
	assert_int_equal(n, 12);
	assert_memory_equal(buf, "hello world\n", 12);

	virtio_mmio_destroy(t);
	t = NULL;
	console_destroy(vm.console);
	vm.console = NULL;
	close(in[0]);
	close(in[1]);
	close(out[0]);
	close(out[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_registers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_features, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rng, setup, teardown),
		cmocka_unit_test_setup_teardown(test_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_queue_setup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
