/* Saved VM state: the stream's framing (sbuf, CRC-32C, records), and a whole snapshot of a
 * real machine (harts, RAM, PLIC, CLINT, UART, a virtio-blk disk and a virtio-rng) written
 * by one VM and restored into another; then the same snapshot truncated and corrupted at
 * many places, each of which must be refused with an error, never loaded. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/event.h"
#include "core/vm.h"
#include "cpu/riscv/hart.h"
#include "machine/riscv-virt/plic.h"
#include "machine/riscv-virt/virt.h"
#include "migration/migration.h"
#include "migration/sbuf.h"
#include "migration/stream.h"

static void test_sbuf_roundtrip(void **state)
{
	struct sbuf b;
	struct sreader r;
	char s[16];

	(void)state;
	sbuf_init(&b);
	sbuf_u8(&b, 0xab);
	sbuf_u16(&b, 0x1234);
	sbuf_u32(&b, 0xdeadbeef);
	sbuf_u64(&b, 0x0123456789abcdefULL);
	sbuf_bool(&b, true);
	sbuf_str(&b, "hello");
	assert_false(b.oom);
	assert_int_equal(b.len, 1 + 2 + 4 + 8 + 1 + 2 + 5);
	/* Little-endian on the wire, whatever the host. */
	assert_int_equal(b.data[1], 0x34);
	assert_int_equal(b.data[3], 0xef);

	sreader_init(&r, b.data, b.len);
	assert_int_equal(sreader_u8(&r), 0xab);
	assert_int_equal(sreader_u16(&r), 0x1234);
	assert_int_equal(sreader_u32(&r), 0xdeadbeef);
	assert_true(sreader_u64(&r) == 0x0123456789abcdefULL);
	assert_true(sreader_bool(&r));
	sreader_str(&r, s, sizeof(s));
	assert_string_equal(s, "hello");
	assert_true(sreader_ok(&r));
	assert_int_equal(r.left, 0);
	/* Past the end: zeros and an error, never a read beyond. */
	assert_int_equal(sreader_u32(&r), 0);
	assert_false(sreader_ok(&r));

	/* A string longer than the buffer is an error. */
	sreader_init(&r, b.data, b.len);
	sreader_get(&r, s, 16);
	sreader_str(&r, s, 4);
	assert_false(sreader_ok(&r));
	/* A length above its bound is an error. */
	sreader_init(&r, b.data + 3, 4);
	assert_int_equal(sreader_len(&r, 100, "too long"), 0);
	assert_string_equal(r.err, "too long");
	sbuf_free(&b);
}

/* Strings from a stream, escaped for a message: one line, no terminal escapes, and a
 * too-small buffer cuts between escapes, never inside one. */
static void test_str_escape(void **state)
{
	char out[64];
	(void)state;

	str_escape(out, sizeof(out), "virtio-blk", 10);
	assert_string_equal(out, "virtio-blk");
	str_escape(out, sizeof(out), "a\nb\x1b[31m\\\xff", 10);
	assert_string_equal(out, "a\\x0ab\\x1b[31m\\x5c\\xff");
	str_escape(out, 6, "ab\ncd", 5);
	assert_string_equal(out, "ab");
	str_escape(out, 1, "abc", 3);
	assert_string_equal(out, "");
}

static void test_crc32c(void **state)
{
	(void)state;
	/* The standard check value of CRC-32C. */
	assert_int_equal(crc32c(0, "123456789", 9), 0xe3069283);
	assert_int_equal(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xe3069283);
}

/* Writes a few records to a pipe-like file and reads them back; a flipped byte fails. */
static void test_stream_records(void **state)
{
	char path[] = "/tmp/mabo-test-stream-XXXXXX";
	int fd = mkstemp(path);
	struct stream s;
	uint8_t big[70000];

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(stream_init(&s, fd), 0);
	assert_int_equal(stream_write_header(&s, STREAM_SNAPSHOT), 0);
	assert_int_equal(stream_write_record(&s, REC_CONFIG, 1, "abc", 3), 0);
	assert_int_equal(stream_write_record(&s, REC_PAGES, 1, big, sizeof(big)), 0);
	assert_int_equal(stream_write_record(&s, REC_END, 1, NULL, 0), 0);
	assert_int_equal(stream_flush(&s), 0);
	stream_free(&s);
	off_t size = lseek(fd, 0, SEEK_END);
	assert_int_equal(size, 16 + (12 + 3) + (12 + sizeof(big)) + 12);

	uint8_t type;
	uint16_t ver;
	const uint8_t *p;
	uint32_t len;
	lseek(fd, 0, SEEK_SET);
	assert_int_equal(stream_init(&s, fd), 0);
	assert_int_equal(stream_read_header(&s, STREAM_MIGRATION, NULL), -EPROTO);
	stream_free(&s);
	lseek(fd, 0, SEEK_SET);
	assert_int_equal(stream_init(&s, fd), 0);
	assert_int_equal(stream_read_header(&s, STREAM_SNAPSHOT, NULL), 0);
	assert_int_equal(stream_read_record(&s, &type, &ver, &p, &len), 0);
	assert_int_equal(type, REC_CONFIG);
	assert_int_equal(len, 3);
	assert_memory_equal(p, "abc", 3);
	assert_int_equal(stream_read_record(&s, &type, &ver, &p, &len), 0);
	assert_int_equal(len, sizeof(big));
	assert_memory_equal(p, big, sizeof(big));
	assert_int_equal(stream_read_record(&s, &type, &ver, &p, &len), 0);
	assert_int_equal(type, REC_END);
	assert_int_equal(stream_read_record(&s, &type, &ver, &p, &len), -ENODATA);
	stream_free(&s);

	/* One flipped bit in the big payload: the CRC catches it. */
	uint8_t c;
	assert_int_equal(pread(fd, &c, 1, 16 + 15 + 12 + 5000), 1);
	c ^= 0x10;
	assert_int_equal(pwrite(fd, &c, 1, 16 + 15 + 12 + 5000), 1);
	lseek(fd, 0, SEEK_SET);
	assert_int_equal(stream_init(&s, fd), 0);
	assert_int_equal(stream_read_header(&s, STREAM_SNAPSHOT, NULL), 0);
	assert_int_equal(stream_read_record(&s, &type, &ver, &p, &len), 0);
	assert_int_equal(stream_read_record(&s, &type, &ver, &p, &len), -EPROTO);
	assert_non_null(strstr(s.err, "checksum"));
	stream_free(&s);
	close(fd);
}

/* ---- A whole machine ---- */

struct machine {
	struct vm_config cfg;
	struct vm vm;
	char disk[64];
};

static void machine_make(struct machine *m, const char *disk)
{
	memset(m, 0, sizeof(*m));
	m->cfg.memory = 4ULL << 20;
	m->cfg.cpus = 2;
	m->cfg.kernel = "none";
	m->cfg.firmware = "none";
	m->cfg.ndevices = 2;
	m->cfg.devices[0].type = "virtio-blk";
	snprintf(m->cfg.devices[0].disk.path, sizeof(m->cfg.devices[0].disk.path), "%s", disk);
	/* A saved and a restored machine live side by side here, on one disk file. */
	m->cfg.devices[0].disk.nolock = true;
	m->cfg.devices[1].type = "virtio-rng";
	assert_int_equal(vm_init(&m->vm, &m->cfg), 0);
	assert_int_equal(virt_create(&m->vm), 0);
	assert_int_equal(event_loop_start(m->vm.loop), 0);
}

static void machine_free(struct machine *m)
{
	event_loop_stop(m->vm.loop);
	virt_destroy(&m->vm);
	vm_free(&m->vm);
}

static const struct mmio_region *find_region(struct vm *vm, const char *name)
{
	for (int i = 0; i < vm->bus.count; i++)
		if (strcmp(vm->bus.regions[i].name, name) == 0)
			return &vm->bus.regions[i];
	return NULL;
}

static void mmio_write32(struct vm *vm, const char *name, uint64_t off, uint32_t v)
{
	const struct mmio_region *r = find_region(vm, name);
	assert_non_null(r);
	r->ops->write(r->opaque, off, v, 4);
}

static uint32_t mmio_read32(struct vm *vm, const char *name, uint64_t off)
{
	const struct mmio_region *r = find_region(vm, name);
	assert_non_null(r);
	return (uint32_t)r->ops->read(r->opaque, off, 4);
}

static int wait_job(struct migration *mig, struct migrate_status *st)
{
	for (int i = 0; i < 1000; i++) {
		migration_get_status(mig, st);
		if (st->state != MIGRATE_ACTIVE)
			return 0;
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

static char snap_path[64];
static char disk_path[64];

static void write_snapshot(struct machine *a)
{
	struct migration *mig;
	struct migrate_status st;
	char err[200] = "";

	assert_int_equal(migration_create(&a->vm, &mig), 0);
	assert_int_equal(migration_snapshot_start(mig, snap_path, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(wait_job(mig, &st), 0);
	if (st.state != MIGRATE_COMPLETED)
		fail_msg("snapshot failed: %s", st.error);
	migration_destroy(mig);
}

static int setup_files(void **state)
{
	(void)state;
	snprintf(snap_path, sizeof(snap_path), "/tmp/mabo-test-snap-%d", (int)getpid());
	snprintf(disk_path, sizeof(disk_path), "/tmp/mabo-test-disk-%d", (int)getpid());
	int fd = open(disk_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		return -1;
	close(fd);
	return 0;
}

static int remove_files(void **state)
{
	(void)state;
	unlink(snap_path);
	unlink(disk_path);
	return 0;
}

static void test_snapshot_roundtrip(void **state)
{
	struct machine a, b;

	(void)state;
	machine_make(&a, disk_path);
	/* State to carry: registers, FP, CSRs, RAM, the PLIC, the CLINT, virtio status. */
	for (int h = 0; h < 2; h++) {
		struct hart *ht = a.vm.harts[h];
		for (int i = 1; i < 32; i++)
			ht->x[i] = 0x1000ULL * (uint64_t)h + (uint64_t)i;
		ht->f[5] = 0x400921fb54442d18ULL;
		ht->pc = 0x80001000ULL + 4 * (uint64_t)h;
		ht->priv = PRV_S;
		ht->satp = 0x8000000000012345ULL;
		ht->stvec = 0x80200000ULL;
		ht->mie = 0x222;
	}
	for (uint64_t i = 0; i < a.vm.ram.size; i += 4096)
		a.vm.ram.host[i + (i >> 12) % 4000] = (uint8_t)(i >> 12 | 1);
	mmio_write32(&a.vm, "plic", PLIC_PRIORITY + 4 * 10, 5);
	mmio_write32(&a.vm, "plic", PLIC_ENABLE + PLIC_ENABLE_STRIDE * 1, 1u << 10);
	mmio_write32(&a.vm, "clint", 0x4000 + 8, 0x12345678);
	mmio_write32(&a.vm, "virtio_mmio", 0x070, 1); /* status: ACKNOWLEDGE */
	mmio_write32(&a.vm, "uart0", 7, 0x5a);	      /* scratch register */
	uint64_t before_save = vm_mtime(&a.vm);
	write_snapshot(&a);

	machine_make(&b, disk_path);
	assert_int_equal(migration_restore(&b.vm, snap_path), 0);
	for (int h = 0; h < 2; h++) {
		struct hart *x = a.vm.harts[h], *y = b.vm.harts[h];
		assert_memory_equal(x->x, y->x, 32 * sizeof(uint64_t));
		assert_memory_equal(x->f, y->f, sizeof(x->f));
		assert_true(x->pc == y->pc);
		assert_int_equal(y->priv, PRV_S);
		assert_true(x->satp == y->satp);
		assert_true(x->stvec == y->stvec);
		assert_true(x->mie == y->mie);
	}
	assert_memory_equal(a.vm.ram.host, b.vm.ram.host, a.vm.ram.size);
	assert_int_equal(mmio_read32(&b.vm, "plic", PLIC_PRIORITY + 4 * 10), 5);
	assert_int_equal(mmio_read32(&b.vm, "plic", PLIC_ENABLE + PLIC_ENABLE_STRIDE), 1u << 10);
	assert_int_equal(mmio_read32(&b.vm, "clint", 0x4000 + 8), 0x12345678);
	assert_int_equal(mmio_read32(&b.vm, "virtio_mmio", 0x070), 1);
	assert_int_equal(mmio_read32(&b.vm, "uart0", 7), 0x5a);
	/* The guest clock continues, never behind where it was saved (the saved value is at
	 * least before_save; a's clock runs on meanwhile, so it is no yardstick). */
	assert_true(vm_mtime(&b.vm) >= before_save);
	machine_free(&b);
	machine_free(&a);
}

/* Every truncation and many corruptions of a snapshot are refused. */
static void test_snapshot_corrupt(void **state)
{
	struct machine a, b;
	char bad[80];

	(void)state;
	machine_make(&a, disk_path);
	memset(a.vm.ram.host + 8192, 0x77, 100);
	write_snapshot(&a);
	machine_free(&a);

	int fd = open(snap_path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat sb;
	assert_int_equal(fstat(fd, &sb), 0);
	size_t size = (size_t)sb.st_size;
	uint8_t *img = malloc(size);
	assert_int_equal(read(fd, img, size), (ssize_t)size);
	close(fd);

	snprintf(bad, sizeof(bad), "%s.bad", snap_path);
	machine_make(&b, disk_path);
	/* Truncations: at the header, inside records, just before the end. */
	size_t cuts[] = { 0, 5, 16, 20, 40, size / 3, size / 2, size - 13, size - 1 };
	for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
		fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_int_equal(write(fd, img, cuts[k]), (ssize_t)cuts[k]);
		close(fd);
		if (migration_restore(&b.vm, bad) == 0)
			fail_msg("a snapshot cut at %zu of %zu bytes was accepted", cuts[k], size);
	}
	/* Flipped bytes at spread-out places. */
	for (size_t off = 3; off < size; off += size / 37 + 1) {
		img[off] ^= 0x41;
		fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_int_equal(write(fd, img, size), (ssize_t)size);
		close(fd);
		img[off] ^= 0x41;
		if (migration_restore(&b.vm, bad) == 0)
			fail_msg("a snapshot with byte %zu changed was accepted", off);
	}
	/* The intact one still loads. */
	assert_int_equal(migration_restore(&b.vm, snap_path), 0);
	assert_int_equal(b.vm.ram.host[8192 + 50], 0x77);
	unlink(bad);
	free(img);
	machine_free(&b);
}

/* A snapshot of a VM of another shape is refused with a reason. */
static void test_snapshot_wrong_shape(void **state)
{
	struct machine a, b;

	(void)state;
	machine_make(&a, disk_path);
	write_snapshot(&a);
	machine_free(&a);
	memset(&b, 0, sizeof(b));
	b.cfg.memory = 8ULL << 20;
	b.cfg.cpus = 2;
	b.cfg.kernel = b.cfg.firmware = "none";
	b.cfg.ndevices = 2;
	b.cfg.devices[0].type = "virtio-blk";
	snprintf(b.cfg.devices[0].disk.path, sizeof(b.cfg.devices[0].disk.path), "%s", disk_path);
	b.cfg.devices[1].type = "virtio-rng";
	assert_int_equal(vm_init(&b.vm, &b.cfg), 0);
	assert_int_equal(virt_create(&b.vm), 0);
	assert_int_equal(event_loop_start(b.vm.loop), 0);
	assert_int_not_equal(migration_restore(&b.vm, snap_path), 0);
	machine_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sbuf_roundtrip),
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_str_escape),
		cmocka_unit_test(test_stream_records),
		cmocka_unit_test(test_snapshot_roundtrip),
		cmocka_unit_test(test_snapshot_corrupt),
		cmocka_unit_test(test_snapshot_wrong_shape),
	};
	return cmocka_run_group_tests(tests, setup_files, remove_files);
}
