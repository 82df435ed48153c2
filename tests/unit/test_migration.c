/* Saved VM state: the stream's framing (sbuf, CRC-32C, records), and a whole snapshot of a
 * real machine (harts, RAM, PLIC, CLINT, UART, a virtio-blk disk and a virtio-rng) written
 * by one VM and restored into another; then the same snapshot truncated and corrupted at
 * many places, each of which must be refused with an error, never loaded. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
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
#include "cpu/riscv/state.h"
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
	/* a's guest clock 100 s ahead of b's: a b that kept its own clock shows it at once. */
	const uint64_t ahead_ns = 100ULL * 1000000000ULL;
	assert_true(host_now_ns() > ahead_ns);
	a.vm.clock_base_ns -= ahead_ns;
	uint64_t before_save = vm_mtime(&a.vm);
	write_snapshot(&a);
	uint64_t after_save = vm_mtime(&a.vm);

	machine_make(&b, disk_path);
	/* Restored a while after the snapshot: the clock must not jump by that while. */
	usleep(300000);
	uint64_t t_restore = host_now_ns();
	assert_int_equal(migration_restore(&b.vm, snap_path), 0);
	uint64_t restored = vm_mtime(&b.vm);
	uint64_t restore_ticks = (host_now_ns() - t_restore) / (1000000000ULL / VM_TIMEBASE_HZ);
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
	/* The guest clock continues from the snapshot's: the saved value lies between
	 * before_save and after_save, and since the restore it ran restore_ticks at most. Not
	 * restarted (b's own clock is 100 s behind), nor moved on by the 300 ms before the
	 * restore (10 ms of slack). */
	if (restored < before_save || restored > after_save + restore_ticks + VM_TIMEBASE_HZ / 100)
		fail_msg("restored mtime %" PRIu64 ", saved between %" PRIu64 " and %" PRIu64
			 " (+%" PRIu64 " since the restore)",
			 restored, before_save, after_save, restore_ticks);
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

/* ---- States that pass the checksums but mean nothing this VMM can run ---- */

/* Reads the snapshot at snap_path; *size gets its length. */
static uint8_t *read_snapshot(size_t *size)
{
	int fd = open(snap_path, O_RDONLY);
	struct stat sb;
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	*size = (size_t)sb.st_size;
	uint8_t *img = malloc(*size);
	assert_non_null(img);
	assert_int_equal(read(fd, img, *size), (ssize_t)*size);
	close(fd);
	return img;
}

/* The payload of the nth record of type in a snapshot image (its length in *len), or NULL. */
static uint8_t *find_record(uint8_t *img, size_t size, uint8_t type, int nth, uint32_t *len)
{
	size_t off = 16;
	while (off + 12 <= size) {
		uint32_t n = (uint32_t)img[off + 4] | (uint32_t)img[off + 5] << 8 |
			     (uint32_t)img[off + 6] << 16 | (uint32_t)img[off + 7] << 24;
		if (img[off] == type && nth-- == 0) {
			*len = n;
			return img + off + 8;
		}
		off += 12 + n;
	}
	return NULL;
}

/* Recomputes the CRC of the record whose payload is at p (after an edit) and writes the
 * image to path. */
static void write_image(const char *path, uint8_t *img, size_t size, uint8_t *p, uint32_t len)
{
	uint32_t c = crc32c(crc32c(0, p - 8, 8), p, len);
	for (int i = 0; i < 4; i++)
		p[len + i] = (uint8_t)(c >> (8 * i));
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, img, size), (ssize_t)size);
	close(fd);
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Where a device's blob starts inside the DEVICES payload (name, slot, length, blob). */
static uint8_t *find_device(uint8_t *p, uint32_t len, const char *name)
{
	uint32_t off = 0;
	while (off + 2 <= len) {
		uint16_t n = (uint16_t)(p[off] | p[off + 1] << 8);
		const uint8_t *nm = p + off + 2;
		uint32_t blob = (uint32_t)p[off + 2 + n + 4] | (uint32_t)p[off + 2 + n + 5] << 8 |
				(uint32_t)p[off + 2 + n + 6] << 16 |
				(uint32_t)p[off + 2 + n + 7] << 24;
		if (n == strlen(name) && memcmp(nm, name, n) == 0)
			return p + off + 2 + n + 8;
		off += 2 + n + 8 + blob;
	}
	return NULL;
}

/* CPU state the guest cannot reach: each refused, and the same snapshot without the
 * change still loads. */
static void test_state_refused_cpu(void **state)
{
	struct machine a, b;
	struct hart *h;

	(void)state;
	machine_make(&a, disk_path);
	machine_make(&b, disk_path);
	h = a.vm.harts[1];
	h->pc = 0x80001000ULL;
	h->mstatus = (2ULL << 32) | (2ULL << 34);

#define REFUSED(what, field, bad)                                                                  \
	do {                                                                                       \
		__typeof__(h->field) saved = h->field;                                             \
		h->field = (bad);                                                                  \
		write_snapshot(&a);                                                                \
		h->field = saved;                                                                  \
		if (migration_restore(&b.vm, snap_path) == 0)                                      \
			fail_msg("a state with %s was loaded", what);                              \
	} while (0)
	REFUSED("privilege mode 2 (H)", priv, 2);
	REFUSED("an odd pc", pc, 0x80001001ULL);
	REFUSED("misa with the H extension", misa, h->misa | 1ULL << ('H' - 'A'));
	REFUSED("mstatus.MPP = 2", mstatus, h->mstatus | 2ULL << MSTATUS_MPP_SHIFT);
	REFUSED("mstatus.UXL = 32 bits", mstatus, (h->mstatus & ~MSTATUS_UXL) | 1ULL << 32);
	REFUSED("mstatus reserved bit 40", mstatus, h->mstatus | 1ULL << 40);
	REFUSED("satp mode 10 (Sv57)", satp, 0xa000000000012345ULL);
	REFUSED("satp bare with a root page", satp, 0x12345ULL);
	REFUSED("mideleg of a machine interrupt", mideleg, MIP_MSIP);
	REFUSED("mtvec mode 2", mtvec, 0x80000002ULL);
	REFUSED("an odd mepc", mepc, 0x80000001ULL);
#undef REFUSED
	/* The valid neighbours of those values load. */
	h->priv = PRV_U;
	h->satp = 0x9000000000012345ULL; /* Sv48 */
	h->mtvec = 0x80000001ULL;	 /* vectored */
	h->mstatus |= 3ULL << MSTATUS_MPP_SHIFT;
	write_snapshot(&a);
	assert_int_equal(migration_restore(&b.vm, snap_path), 0);
	assert_int_equal(b.vm.harts[1]->priv, PRV_U);
	assert_true(b.vm.harts[1]->satp == 0x9000000000012345ULL);
	machine_free(&b);
	machine_free(&a);
}

/* Records edited with their CRCs made good again: a PLIC priority above the maximum, a
 * guest clock centuries ahead, a queue with more requests in flight than it holds. */
static void test_state_refused_records(void **state)
{
	struct machine a, b;
	size_t size;
	uint32_t len;
	char bad[80];

	(void)state;
	snprintf(bad, sizeof(bad), "%s.bad", snap_path);
	machine_make(&a, disk_path);
	/* virtio-rng (the second virtio slot) with a ready queue of 8 at 0x80010000. */
	const struct mmio_region *rng = NULL;
	for (int i = 0, n = 0; i < a.vm.bus.count && !rng; i++)
		if (strcmp(a.vm.bus.regions[i].name, "virtio_mmio") == 0 && n++ == 1)
			rng = &a.vm.bus.regions[i];
	assert_non_null(rng);
	static const uint32_t setup[][2] = {
		{ 0x030, 0 },	       /* QueueSel */
		{ 0x038, 8 },	       /* QueueNum */
		{ 0x080, 0x80010000 }, /* QueueDescLow */
		{ 0x090, 0x80010400 }, /* QueueDriverLow */
		{ 0x0a0, 0x80010800 }, /* QueueDeviceLow */
		{ 0x044, 1 },	       /* QueueReady */
	};
	for (size_t k = 0; k < sizeof(setup) / sizeof(setup[0]); k++)
		rng->ops->write(rng->opaque, setup[k][0], setup[k][1], 4);
	assert_int_equal(rng->ops->read(rng->opaque, 0x044, 4), 1);
	write_snapshot(&a);
	machine_free(&a);
	uint8_t *img = read_snapshot(&size);
	machine_make(&b, disk_path);

	/* The PLIC: u32 sources, u32 contexts, then each source's priority. */
	uint8_t *p = find_record(img, size, REC_DEVICES, 0, &len);
	assert_non_null(p);
	uint8_t *plic = find_device(p, len, "plic");
	assert_non_null(plic);
	plic[8 + 4 * 10] = PLIC_PRIORITY_MAX + 1;
	write_image(bad, img, size, p, len);
	if (migration_restore(&b.vm, bad) == 0)
		fail_msg("a PLIC priority above the maximum was loaded");
	plic[8 + 4 * 10] = PLIC_PRIORITY_MAX;
	write_image(bad, img, size, p, len);
	assert_int_equal(migration_restore(&b.vm, bad), 0);

	/* The clock: mtime first. 200 years of uptime is refused; 30 days (longer than this
	 * host may have been up) loads, and timers still fire on time. */
	uint8_t *clk = find_record(img, size, REC_CLOCK, 0, &len);
	assert_non_null(clk);
	uint8_t saved_clock[8];
	memcpy(saved_clock, clk, 8);
	put64(clk, 200ULL * 365 * 86400 * VM_TIMEBASE_HZ);
	write_image(bad, img, size, clk, len);
	if (migration_restore(&b.vm, bad) == 0)
		fail_msg("a guest clock 200 years ahead was loaded");
	uint64_t month = 30ULL * 86400 * VM_TIMEBASE_HZ;
	put64(clk, month + host_now_ns() / 100);
	write_image(bad, img, size, clk, len);
	assert_int_equal(migration_restore(&b.vm, bad), 0);
	uint64_t now = host_now_ns(), t = vm_mtime(&b.vm);
	assert_true(t >= month);
	/* A second ahead on the guest clock is about a second ahead on the host's. */
	uint64_t due = vm_mtime_to_ns(&b.vm, t + VM_TIMEBASE_HZ);
	assert_true(due > now && due < now + 3000000000ULL);
	assert_true(vm_mtime_to_ns(&b.vm, 0) <= now); /* long past: due already */
	memcpy(clk, saved_clock, 8);
	write_image(bad, img, size, clk, len);

	/* The rng's queue: last_avail - used_idx beyond the ring's 8 entries. The virtio
	 * blob: isr state (17 bytes), the name, features, status, generation, queue count,
	 * then each queue: size, desc, avail, used, 5 bools, last_avail, used_idx, ... */
	p = find_record(img, size, REC_DEVICES, 0, &len);
	uint8_t *dev = find_device(p, len, "virtio_mmio");
	assert_non_null(dev);
	/* The first virtio-mmio is the disk; the rng's blob follows it. */
	uint32_t first = (uint32_t)dev[-4] | (uint32_t)dev[-3] << 8 | (uint32_t)dev[-2] << 16 |
			 (uint32_t)dev[-1] << 24;
	uint8_t *rngb = find_device(dev + first, len - (uint32_t)(dev + first - p), "virtio_mmio");
	assert_non_null(rngb);
	uint8_t *vd = rngb + 17;
	uint16_t nlen = (uint16_t)(vd[0] | vd[1] << 8);
	uint8_t *q = vd + 2 + nlen + 8 + 8 + 1 + 4 + 4;
	assert_int_equal(q[0] | q[1] << 8, 8); /* the queue's size */
	assert_int_equal(q[2 + 24], 1);	       /* ready */
	uint8_t *last_avail = q + 2 + 24 + 5;
	last_avail[0] = 9; /* used_idx stays 0 */
	write_image(bad, img, size, p, len);
	if (migration_restore(&b.vm, bad) == 0)
		fail_msg("a queue with 9 requests in flight in 8 entries was loaded");
	last_avail[0] = 8;
	write_image(bad, img, size, p, len);
	assert_int_equal(migration_restore(&b.vm, bad), 0);

	unlink(bad);
	free(img);
	machine_free(&b);
}

/* Sstc: stimecmp and menvcfg.STCE travel with the hart and the restored CLINT drives STIP
 * from them; a version 1 CPU record (from before Sstc) still loads, with no compare pending,
 * but not with STCE set; a version from the future is refused. */
static void test_snapshot_sstc(void **state)
{
	struct machine a, b;
	size_t size;
	uint32_t len;
	char old[80];

	(void)state;
	snprintf(old, sizeof(old), "%s.v1", snap_path);
	machine_make(&a, disk_path);
	const uint64_t later = vm_mtime(&a.vm) + 1000 * VM_TIMEBASE_HZ;
	a.vm.harts[0]->menvcfg = a.vm.harts[1]->menvcfg = MENVCFG_STCE;
	a.vm.harts[0]->stimecmp = 0; /* due */
	a.vm.harts[1]->stimecmp = later;
	write_snapshot(&a);
	machine_free(&a);

	machine_make(&b, disk_path);
	assert_int_equal(migration_restore(&b.vm, snap_path), 0);
	struct hart *h0 = b.vm.harts[0], *h1 = b.vm.harts[1];
	assert_true(h0->menvcfg == MENVCFG_STCE && h1->menvcfg == MENVCFG_STCE);
	assert_true(h0->stimecmp == 0 && h1->stimecmp == later);
	assert_true(hart_read_mip(h0) & MIP_STIP);
	assert_false(hart_read_mip(h1) & MIP_STIP);

	/* Hart 0's record made version 1: the spare slot where stimecmp now goes was zero. The
	 * payload: the hart id (4 bytes), x (256), pc, instret, priv (1), f (256), fflags,
	 * frm, lr_addr, lr_val, lr_valid (1), then the CSRs: menvcfg 19th, stimecmp 31st. */
	uint8_t *img = read_snapshot(&size);
	uint8_t *p = find_record(img, size, REC_CPU, 0, &len);
	assert_non_null(p);
	const uint32_t csrs = 4 + 256 + 8 + 8 + 1 + 256 + 4 + 4 + 8 + 8 + 1;
	uint8_t *menvcfg = p + csrs + 8 * 19, *stimecmp = p + csrs + 8 * 31;
	assert_int_equal(menvcfg[7], 0x80); /* STCE, bit 63: the offsets are right */
	p[-6] = 1;
	put64(stimecmp, 0);
	put64(menvcfg, 0);
	write_image(old, img, size, p, len);
	assert_int_equal(migration_restore(&b.vm, old), 0);
	assert_true(h0->menvcfg == 0);
	assert_true(h0->stimecmp == UINT64_MAX);
	assert_false(hart_read_mip(h0) & MIP_STIP);
	put64(menvcfg, MENVCFG_STCE);
	write_image(old, img, size, p, len);
	if (migration_restore(&b.vm, old) == 0)
		fail_msg("a version 1 CPU record with menvcfg.STCE was loaded");
	p[-6] = HART_STATE_VERSION + 1;
	write_image(old, img, size, p, len);
	if (migration_restore(&b.vm, old) == 0)
		fail_msg("a CPU record of version %d was loaded", HART_STATE_VERSION + 1);

	unlink(old);
	free(img);
	machine_free(&b);
}

/* A job is over (a new one may start) before its caller hears that it ended: a client
 * that takes a snapshot right after the answer to the last one is not told "busy". */
struct chain {
	struct migration *mig;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done;
};

static void chain_done(void *opaque, int err, const char *msg)
{
	struct chain *c = opaque;
	(void)err;
	(void)msg;
	pthread_mutex_lock(&c->lock);
	c->done++;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	/* The answer is on its way; whatever the job does after it must not hold the next. */
	usleep(100000);
}

static void test_snapshot_back_to_back(void **state)
{
	struct machine a;
	struct chain c = { .done = 0 };
	char err[200] = "";
	struct migrate_status st;

	(void)state;
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.cond, NULL);
	machine_make(&a, disk_path);
	assert_int_equal(migration_create(&a.vm, &c.mig), 0);
	for (int k = 0; k < 3; k++) {
		int ret = migration_snapshot_start(c.mig, snap_path, chain_done, &c, err,
						   sizeof(err));
		if (ret)
			fail_msg("snapshot %d right after the last one's answer: %s", k + 1, err);
		pthread_mutex_lock(&c.lock);
		while (c.done == k)
			pthread_cond_wait(&c.cond, &c.lock);
		pthread_mutex_unlock(&c.lock);
		migration_get_status(c.mig, &st);
		assert_int_equal(st.state, MIGRATE_COMPLETED);
	}
	assert_int_equal(wait_job(c.mig, &st), 0);
	migration_destroy(c.mig);
	machine_free(&a);
	pthread_cond_destroy(&c.cond);
	pthread_mutex_destroy(&c.lock);
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
		cmocka_unit_test(test_state_refused_cpu),
		cmocka_unit_test(test_state_refused_records),
		cmocka_unit_test(test_snapshot_sstc),
		cmocka_unit_test(test_snapshot_back_to_back),
	};
	return cmocka_run_group_tests(tests, setup_files, remove_files);
}
