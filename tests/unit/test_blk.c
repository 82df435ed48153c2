/* virtio-blk driven through virtio-mmio registers as a guest driver would, against a temp
 * file through the file backend, with the event loop and the backend's I/O threads real:
 * configuration and features, write / flush / read round trips checked against the file,
 * requests refused with IOERR / UNSUPP (range, length, read-only disk, unknown type),
 * GET_ID, discard and write-zeroes, many requests in flight, a malformed chain making the
 * device need a reset, and a reset with requests in flight never pushing stale heads. */
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

#include "fake_guest.h"

#define RAM_SIZE (4ULL << 20)
#define QSIZE 64

#define DISK_SECTORS 2048 /* 1 MiB */
static char disk_path[64];
static int disk_fd = -1;

static void setup_disk(void)
{
	snprintf(disk_path, sizeof(disk_path), "/tmp/mabo-test-blk-XXXXXX");
	disk_fd = mkstemp(disk_path);
	assert_true(disk_fd >= 0);
	assert_int_equal(ftruncate(disk_fd, DISK_SECTORS * 512), 0);
}

static int setup(void **state)
{
	setup_disk();
	return fg_setup(state);
}

static int teardown(void **state)
{
	fg_teardown(state);
	unlink(disk_path);
	close(disk_fd);
	return 0;
}

/* A virtio-blk on the temp disk, read-only or not, with serial id ("" = the file name). */
static void create(bool readonly, const char *id)
{
	static struct vm_device_config dc = { .type = "virtio-blk" };
	snprintf(dc.disk.path, sizeof(dc.disk.path), "%s", disk_path);
	snprintf(dc.disk.id, sizeof(dc.disk.id), "%s", id);
	dc.disk.readonly = readonly;
	assert_int_equal(fg_create(&virtio_blk_ops, &dc), 0);
}

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define F_SEG_MAX 2
#define F_RO 5
#define F_BLK_SIZE 6
#define F_FLUSH 9
#define F_DISCARD 13
#define F_WRITE_ZEROES 14
#define BLK_FEATURES                                                                               \
	(ALL_FEATURES | VIRTIO_FEATURE(F_SEG_MAX) | VIRTIO_FEATURE(F_BLK_SIZE) |                   \
	 VIRTIO_FEATURE(F_FLUSH) | VIRTIO_FEATURE(F_DISCARD) | VIRTIO_FEATURE(F_WRITE_ZEROES))

/* Request k (< 16) uses descriptors 3k .. 3k+2, its header at HDR(k), status at STAT(k),
 * data at DATA(k) (up to 64 KiB). */
#define HDR(k) (BUF + 0x100ULL * (k))
#define STAT(k) (BUF + 0x8000ULL + (k))
#define DATA(k) (BUF + 0x10000ULL + 0x10000ULL * (k))

static void ready(bool readonly, const char *id)
{
	create(readonly, id);
	uint64_t f = BLK_FEATURES | (readonly ? VIRTIO_FEATURE(F_RO) : 0);
	if (readonly)
		f &= ~(VIRTIO_FEATURE(F_DISCARD) | VIRTIO_FEATURE(F_WRITE_ZEROES));
	assert_int_equal(negotiate(f) & VIRTIO_STATUS_FEATURES_OK, VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, QSIZE);
	driver_ok();
}

/* Makes request k (header, len bytes of data readable or writable as type wants, status)
 * available, without notifying. */
static void post(unsigned k, uint32_t type, uint64_t sector, uint32_t len)
{
	uint8_t *h = gp(HDR(k));
	uint32_t zero = 0;
	memcpy(h, &type, 4), memcpy(h + 4, &zero, 4), memcpy(h + 8, &sector, 8);
	*(uint8_t *)gp(STAT(k)) = 0xff;
	uint16_t d = (uint16_t)(3 * k);
	set_desc(0, d, HDR(k), 16, VIRTQ_DESC_F_NEXT, d + 1);
	if (len) {
		bool in = type == T_IN || type == T_GET_ID;
		set_desc(0, d + 1, DATA(k), len, VIRTQ_DESC_F_NEXT | (in ? VIRTQ_DESC_F_WRITE : 0),
			 d + 2);
		set_desc(0, d + 2, STAT(k), 1, VIRTQ_DESC_F_WRITE, 0);
	} else {
		set_desc(0, d, HDR(k), 16, VIRTQ_DESC_F_NEXT, d + 2);
		set_desc(0, d + 2, STAT(k), 1, VIRTQ_DESC_F_WRITE, 0);
	}
	avail_add(0, d);
}

static uint16_t nused;

/* Posts request k, notifies, waits for it; returns its status byte. */
static uint8_t request(unsigned k, uint32_t type, uint64_t sector, uint32_t len)
{
	post(k, type, sector, len);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_used(0, ++nused, 3000));
	return *(uint8_t *)gp(STAT(k));
}

static void fill(unsigned k, uint32_t len, uint8_t seed)
{
	uint8_t *p = gp(DATA(k));
	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 9));
}

static void test_config(void **state)
{
	(void)state;
	nused = 0;
	create(false, "");
	assert_int_equal(rd(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
	wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	uint32_t f = rd(VIRTIO_MMIO_DEVICE_FEATURES);
	assert_true(f & (1u << F_SEG_MAX));
	assert_true(f & (1u << F_BLK_SIZE));
	assert_true(f & (1u << F_FLUSH));
	assert_true(f & (1u << F_DISCARD));
	assert_true(f & (1u << F_WRITE_ZEROES));
	assert_false(f & (1u << F_RO));
	uint64_t cap = rd(VIRTIO_MMIO_CONFIG) | (uint64_t)rd(VIRTIO_MMIO_CONFIG + 4) << 32;
	assert_int_equal(cap, DISK_SECTORS);
	assert_int_equal(rd(VIRTIO_MMIO_CONFIG + 12), 254); /* seg_max */
	assert_int_equal(rd(VIRTIO_MMIO_CONFIG + 20), 512); /* blk_size */
	assert_int_equal(rd(VIRTIO_MMIO_CONFIG + 40), 1);   /* max_discard_seg */
	virtio_mmio_destroy(fg.mmio);
	fg.mmio = NULL;
	create(true, "");
	wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	f = rd(VIRTIO_MMIO_DEVICE_FEATURES);
	assert_true(f & (1u << F_RO));
	assert_false(f & (1u << F_DISCARD));
}

static void test_round_trip(void **state)
{
	(void)state;
	nused = 0;
	ready(false, "");
	fill(0, 4096, 1);
	assert_int_equal(request(0, T_OUT, 8, 4096), S_OK);
	assert_int_equal(request(1, T_FLUSH, 0, 0), S_OK);
	/* The file holds it. */
	uint8_t file[4096];
	assert_int_equal(pread(disk_fd, file, sizeof(file), 8 * 512), (ssize_t)sizeof(file));
	assert_memory_equal(file, gp(DATA(0)), sizeof(file));
	/* And it reads back, with the used length counting data and status. */
	memset(gp(DATA(2)), 0, 4096);
	assert_int_equal(request(2, T_IN, 8, 4096), S_OK);
	assert_memory_equal(gp(DATA(2)), gp(DATA(0)), 4096);
	uint32_t id, len;
	used_elem(0, 2, &id, &len);
	assert_int_equal(id, 6);
	assert_int_equal(len, 4097);
	/* The last sector of the disk. */
	fill(3, 512, 9);
	assert_int_equal(request(3, T_OUT, DISK_SECTORS - 1, 512), S_OK);
	assert_int_equal(request(4, T_IN, DISK_SECTORS - 1, 512), S_OK);
	assert_memory_equal(gp(DATA(4)), gp(DATA(3)), 512);
	/* GET_ID: the file's name (its last 20 characters). */
	memset(gp(DATA(5)), 0xaa, 20);
	assert_int_equal(request(5, T_GET_ID, 0, 20), S_OK);
	const char *base = strrchr(disk_path, '/') + 1;
	assert_memory_equal(gp(DATA(5)), base, strlen(base));
	assert_int_equal(((uint8_t *)gp(DATA(5)))[strlen(base)], 0);
	/* The interrupt arrived. */
	for (int i = 0; i < 2000 && !irq_line(); i++)
		usleep(1000);
	assert_true(irq_line());
}

static void test_get_id(void **state)
{
	(void)state;
	nused = 0;
	ready(false, "serial-123");
	assert_int_equal(request(0, T_GET_ID, 0, 20), S_OK);
	assert_memory_equal(gp(DATA(0)), "serial-123\0", 11);
}

static void test_refused(void **state)
{
	(void)state;
	nused = 0;
	ready(false, "");
	/* Past the end, straddling the end, far past it (overflow). */
	assert_int_equal(request(0, T_IN, DISK_SECTORS, 512), S_IOERR);
	assert_int_equal(request(1, T_OUT, DISK_SECTORS - 1, 1024), S_IOERR);
	assert_int_equal(request(2, T_IN, ~0ULL / 256, 512), S_IOERR);
	/* Not whole sectors. */
	assert_int_equal(request(3, T_IN, 0, 100), S_IOERR);
	assert_int_equal(request(4, T_OUT, 0, 513), S_IOERR);
	/* Unknown type. */
	assert_int_equal(request(5, 99, 0, 512), S_UNSUPP);
	/* Discard with two ranges (one allowed), or the unmap flag (not for discard). */
	uint8_t seg[32] = { 0 };
	uint32_t n = 8, unmap = 1;
	memcpy(seg + 8, &n, 4), memcpy(seg + 24, &n, 4);
	memcpy(gp(DATA(6)), seg, 32);
	assert_int_equal(request(6, T_DISCARD, 0, 32), S_UNSUPP);
	memcpy(seg + 12, &unmap, 4);
	memcpy(gp(DATA(7)), seg, 16);
	assert_int_equal(request(7, T_DISCARD, 0, 16), S_UNSUPP);
	/* Write-zeroes beyond the end. */
	uint64_t start = DISK_SECTORS - 4;
	memset(seg, 0, sizeof(seg));
	memcpy(seg, &start, 8), memcpy(seg + 8, &n, 4);
	memcpy(gp(DATA(8)), seg, 16);
	assert_int_equal(request(8, T_WRITE_ZEROES, 0, 16), S_IOERR);
	/* The device still works. */
	assert_int_equal(rd(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
	assert_int_equal(request(9, T_IN, 0, 512), S_OK);
}

static void test_write_zeroes_discard(void **state)
{
	(void)state;
	nused = 0;
	ready(false, "");
	fill(0, 8192, 3);
	assert_int_equal(request(0, T_OUT, 16, 8192), S_OK);
	uint8_t seg[16] = { 0 };
	uint64_t start = 16;
	uint32_t n = 8, flags = 1; /* unmap allowed */
	memcpy(seg, &start, 8), memcpy(seg + 8, &n, 4), memcpy(seg + 12, &flags, 4);
	memcpy(gp(DATA(1)), seg, 16);
	assert_int_equal(request(1, T_WRITE_ZEROES, 0, 16), S_OK);
	flags = 0;
	start = 24;
	memcpy(seg, &start, 8), memcpy(seg + 12, &flags, 4);
	memcpy(gp(DATA(2)), seg, 16);
	assert_int_equal(request(2, T_WRITE_ZEROES, 0, 16), S_OK);
	static const uint8_t zeros[8192];
	assert_int_equal(request(3, T_IN, 16, 8192), S_OK);
	assert_memory_equal(gp(DATA(3)), zeros, 8192);
	/* Discard: allowed to keep or drop the data; it succeeds. */
	memcpy(gp(DATA(4)), seg, 16);
	assert_int_equal(request(4, T_DISCARD, 0, 16), S_OK);
}

static void test_read_only(void **state)
{
	(void)state;
	nused = 0;
	uint8_t pattern[1024];
	memset(pattern, 0x5a, sizeof(pattern));
	assert_int_equal(pwrite(disk_fd, pattern, sizeof(pattern), 0), (ssize_t)sizeof(pattern));
	ready(true, "");
	memset(gp(DATA(0)), 0x11, 1024);
	assert_int_equal(request(0, T_OUT, 0, 1024), S_IOERR);
	uint8_t seg[16] = { 0 };
	uint32_t n = 2;
	memcpy(seg + 8, &n, 4);
	memcpy(gp(DATA(1)), seg, 16);
	assert_int_equal(request(1, T_WRITE_ZEROES, 0, 16), S_UNSUPP); /* not negotiated */
	assert_int_equal(request(2, T_FLUSH, 0, 0), S_OK);
	assert_int_equal(request(3, T_IN, 0, 1024), S_OK);
	assert_memory_equal(gp(DATA(3)), pattern, sizeof(pattern));
	uint8_t file[1024];
	assert_int_equal(pread(disk_fd, file, sizeof(file), 0), (ssize_t)sizeof(file));
	assert_memory_equal(file, pattern, sizeof(pattern));
}

/* 16 writes made available at once (four I/O threads take them together), then 16 reads. */
static void test_in_flight(void **state)
{
	(void)state;
	nused = 0;
	ready(false, "");
	for (unsigned k = 0; k < 16; k++) {
		fill(k, 65536, (uint8_t)(k * 13));
		post(k, T_OUT, 128ULL * k, 65536);
	}
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_used(0, 16, 5000));
	nused = 16;
	bool seen[16] = { false };
	for (unsigned i = 0; i < 16; i++) {
		uint32_t id, len;
		used_elem(0, (uint16_t)i, &id, &len);
		assert_int_equal(id % 3, 0);
		assert_false(seen[id / 3]);
		seen[id / 3] = true;
		assert_int_equal(len, 1);
		assert_int_equal(*(uint8_t *)gp(STAT(id / 3)), S_OK);
	}
	uint8_t *expect = malloc(16 * 65536);
	assert_non_null(expect);
	for (unsigned k = 0; k < 16; k++)
		memcpy(expect + 65536 * k, gp(DATA(k)), 65536);
	for (unsigned k = 0; k < 16; k++) {
		memset(gp(DATA(k)), 0, 65536);
		post(k, T_IN, 128ULL * (15 - k), 65536);
	}
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_used(0, 32, 5000));
	for (unsigned k = 0; k < 16; k++) {
		assert_int_equal(*(uint8_t *)gp(STAT(k)), S_OK);
		assert_memory_equal(gp(DATA(k)), expect + 65536 * (15 - k), 65536);
	}
	free(expect);
}

/* A chain without a status byte: the device needs a reset, and works after it. */
static void test_malformed(void **state)
{
	(void)state;
	nused = 0;
	ready(false, "");
	set_desc(0, 0, HDR(0), 16, 0, 0);
	avail_add(0, 0);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	assert_true(wait_status(VIRTIO_STATUS_DEVICE_NEEDS_RESET, 2000));
	assert_int_equal(get16(QUSED(0) + 2), 0);
	wr(VIRTIO_MMIO_STATUS, 0);
	memset(gp(QDESC(0)), 0, 0x4000);
	fg.avail_shadow[0] = 0;
	assert_int_equal(negotiate(BLK_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	setup_queue(0, QSIZE);
	driver_ok();
	assert_int_equal(request(0, T_IN, 0, 512), S_OK);
}

/* Requests in flight at a reset are never pushed onto the queue set up afterwards. */
static void test_reset_in_flight(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		nused = 0;
		if (!fg.mmio)
			ready(false, "");
		for (unsigned k = 0; k < 16; k++)
			post(k, k & 1 ? T_IN : T_OUT, 128ULL * k, 65536);
		wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
		usleep((useconds_t)(round * 50));
		wr(VIRTIO_MMIO_STATUS, 0);
		/* A fresh driver: zeroed rings, nothing made available. */
		memset(gp(QDESC(0)), 0, 0x4000);
		memset(gp(STAT(0)), 0xee, 16);
		fg.avail_shadow[0] = 0;
		assert_int_equal(negotiate(BLK_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
				 VIRTIO_STATUS_FEATURES_OK);
		setup_queue(0, QSIZE);
		driver_ok();
		usleep(20000);
		assert_int_equal(get16(QUSED(0) + 2), 0);
		for (unsigned k = 0; k < 16; k++)
			assert_int_equal(*(uint8_t *)gp(STAT(k)), 0xee);
		/* And it serves new requests. */
		assert_int_equal(request(0, T_IN, 0, 512), S_OK);
		fg.avail_shadow[0] = 1;
	}
}

int main(void)
{
	fg.ram_size = RAM_SIZE;
	fg.qsize = QSIZE;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_zeroes_discard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_in_flight, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
