/* The virtio-mmio transport driven through its registers as a guest driver would, with the
 * devices behind it running on a real event loop: feature negotiation (VERSION_1 required),
 * queue setup, notifications, interrupts through the PLIC, DEVICE_NEEDS_RESET on a bad
 * ring and recovery by reset; virtio-rng filling buffers; virtio-console input and output;
 * the virtio-input power button (configuration queries, presses, its saved state). */
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

#include "core/console.h"
#include "fake_guest.h"
#include "migration/sbuf.h"
#include "virtio/input.h"

#define RAM_SIZE (1ULL << 20)
#define QSIZE 8

static void create(const struct virtio_device_ops *ops)
{
	static const struct vm_device_config dc = { .type = "test" };
	assert_int_equal(fg_create(ops, &dc), 0);
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
	assert_int_equal(virtio_mmio_ops.read(fg.mmio, VIRTIO_MMIO_MAGIC_VALUE, 2), 0);
	assert_int_equal(virtio_mmio_ops.read(fg.mmio, VIRTIO_MMIO_MAGIC_VALUE, 8), 0);
	/* No configuration space: zeros. */
	assert_int_equal(virtio_mmio_ops.read(fg.mmio, VIRTIO_MMIO_CONFIG, 4), 0);
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
	fg.avail_shadow[0] = 0;
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
	assert_int_equal(console_create(&fg.vm, in[0], out[1], &fg.vm.console), 0);
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

	virtio_mmio_destroy(fg.mmio);
	fg.mmio = NULL;
	console_destroy(fg.vm.console);
	fg.vm.console = NULL;
	close(in[0]);
	close(in[1]);
	close(out[0]);
	close(out[1]);
}

static uint8_t cfg8(uint32_t off)
{
	return (uint8_t)virtio_mmio_ops.read(fg.mmio, VIRTIO_MMIO_CONFIG + off, 1);
}

/* The driver's configuration query (5.8.5): select and subsel, then size and the union. */
static uint8_t cfg_select(uint8_t sel, uint8_t subsel)
{
	virtio_mmio_ops.write(fg.mmio, VIRTIO_MMIO_CONFIG, sel, 1);
	virtio_mmio_ops.write(fg.mmio, VIRTIO_MMIO_CONFIG + 1, subsel, 1);
	return cfg8(2);
}

static void test_input(void **state)
{
	(void)state;
	create(&virtio_input_ops);
	struct virtio_dev *vdev = virtio_mmio_dev(fg.mmio);
	assert_int_equal(rd(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_INPUT);

	/* Its name, and one key: KEY_POWER (116: byte 14, bit 4) under EV_KEY (1). */
	assert_int_equal(cfg_select(0x01, 0), 17);
	char name[18] = "";
	for (int i = 0; i < 17; i++)
		name[i] = (char)cfg8(8 + (uint32_t)i);
	assert_string_equal(name, "mabo power button");
	assert_int_equal(cfg_select(0x11, 1), 15);
	for (uint32_t i = 0; i < 15; i++)
		assert_int_equal(cfg8(8 + i), i == 14 ? 0x10 : 0);
	/* Nothing else: no relative axes, no serial, no absolute axes, ids or properties. */
	assert_int_equal(cfg_select(0x11, 2), 0);
	assert_int_equal(cfg8(8 + 14), 0);
	assert_int_equal(cfg_select(0x02, 0), 0);
	assert_int_equal(cfg_select(0x12, 0), 0);
	assert_int_equal(cfg_select(0x00, 0), 0);
	/* Only select and subsel are writable. */
	virtio_mmio_ops.write(fg.mmio, VIRTIO_MMIO_CONFIG + 2, 99, 1);
	assert_int_equal(cfg8(2), 0);

	/* No driver yet: the press is refused, not kept. */
	assert_int_equal(virtio_input_press(vdev, VIRTIO_INPUT_KEY_POWER), -ENODEV);

	assert_int_equal(negotiate(ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, QSIZE);
	setup_queue(1, QSIZE);
	driver_ok();
	/* Pressed before the driver gave buffers: the events wait, up to 4 presses. */
	for (int i = 0; i < VIRTIO_INPUT_MAX_PENDING / 4; i++)
		assert_int_equal(virtio_input_press(vdev, VIRTIO_INPUT_KEY_POWER), 0);
	assert_int_equal(virtio_input_press(vdev, VIRTIO_INPUT_KEY_POWER), -EBUSY);

	/* The waiting events travel with the saved state; a state with too many is refused. */
	struct sbuf b;
	sbuf_init(&b);
	pthread_mutex_lock(&vdev->lock);
	virtio_input_ops.save(vdev, &b);
	struct sreader r;
	sreader_init(&r, b.data, b.len);
	assert_int_equal(virtio_input_ops.load(vdev, &r), 0);
	assert_int_equal(r.left, 0);
	uint8_t bad[6] = { 0, 0, 100, 0, 0, 0 };
	sreader_init(&r, bad, sizeof(bad));
	assert_int_equal(virtio_input_ops.load(vdev, &r), -EINVAL);
	pthread_mutex_unlock(&vdev->lock);
	sbuf_free(&b);
	assert_int_equal(virtio_input_press(vdev, VIRTIO_INPUT_KEY_POWER), -EBUSY);

	/* Four buffers: the first press and release, each followed by a SYN_REPORT. */
	for (unsigned i = 0; i < 4; i++) {
		set_desc(0, i, BUF + 16 * i, 8, VIRTQ_DESC_F_WRITE, 0);
		avail_add(0, (uint16_t)i);
	}
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_used(0, 4, 2000));
	static const uint8_t want[4][8] = {
		{ 1, 0, 116, 0, 1, 0, 0, 0 },
		{ 0, 0, 0, 0, 0, 0, 0, 0 },
		{ 1, 0, 116, 0, 0, 0, 0, 0 },
		{ 0, 0, 0, 0, 0, 0, 0, 0 },
	};
	for (unsigned i = 0; i < 4; i++) {
		uint32_t id, len;
		used_elem(0, (uint16_t)i, &id, &len);
		assert_int_equal(id, i);
		assert_int_equal(len, 8);
		assert_memory_equal(gp(BUF + 16 * i), want[i], 8);
	}
	/* Room again for one press. */
	assert_int_equal(virtio_input_press(vdev, VIRTIO_INPUT_KEY_POWER), 0);

	/* A status buffer (an LED request) is given back unread. */
	set_desc(1, 0, BUF + 0x1000, 8, 0, 0);
	avail_add(1, 0);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
	assert_true(wait_used(1, 1, 2000));

	/* A reset forgets the waiting presses: a next kernel must not see them. */
	wr(VIRTIO_MMIO_STATUS, 0);
	pthread_mutex_lock(&vdev->lock);
	sbuf_init(&b);
	virtio_input_ops.save(vdev, &b);
	pthread_mutex_unlock(&vdev->lock);
	assert_int_equal(b.len, 6);
	assert_int_equal(b.data[2], 0);
	sbuf_free(&b);
}

int main(void)
{
	fg.ram_size = RAM_SIZE;
	fg.qsize = QSIZE;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_registers, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_features, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_rng, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_needs_reset, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_bad_queue_setup, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_console, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_input, fg_setup, fg_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
