/* Split virtqueues against rings built by hand in a fake guest RAM: normal and indirect
 * chains, the used ring, EVENT_IDX notification suppression, and every malformed chain a
 * guest could make, each of which must break the queue (the device then needs a reset)
 * without crashing or touching memory outside guest RAM. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "core/vm.h"
#include "virtio/virtqueue.h"

/* Fake guest RAM: 8 MiB (only touched pages cost memory), so that 32-bit length overflow
 * is reachable with in-RAM buffers. */
#define RAM_SIZE (8ULL << 20)
#define DESC (RAM_BASE + 0x0000)
#define AVAIL (RAM_BASE + 0x4000)
#define USED (RAM_BASE + 0x8000)
#define TABLE (RAM_BASE + 0x10000) /* indirect tables */
#define BUF (RAM_BASE + 0x20000)   /* data buffers */
#define RAM_END (RAM_BASE + RAM_SIZE)

static struct vm vm;
static struct virtq q;
static int errors;
static char last_error[200];
static uint16_t avail_shadow; /* the driver's avail->idx */
static uint16_t used_seen;    /* the driver's last seen used->idx */

static void on_error(void *opaque, const struct virtq *vq, const char *why)
{
	(void)opaque;
	(void)vq;
	errors++;
	snprintf(last_error, sizeof(last_error), "%s", why);
}

static void *gp(uint64_t gpa)
{
	return vm.ram.host + (gpa - RAM_BASE);
}

static void put16(uint64_t gpa, uint16_t v)
{
	memcpy(gp(gpa), &v, 2);
}

static uint16_t get16(uint64_t gpa)
{
	uint16_t v;
	memcpy(&v, gp(gpa), 2);
	return v;
}

static uint32_t get32(uint64_t gpa)
{
	uint32_t v;
	memcpy(&v, gp(gpa), 4);
	return v;
}

static void set_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *p = gp(table + 16ULL * i);
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

/* The driver makes chain head available. */
static void avail_add(uint16_t head)
{
	put16(AVAIL + 4 + 2ULL * (avail_shadow % q.size), head);
	avail_shadow++;
	put16(AVAIL + 2, avail_shadow);
}

static uint16_t used_idx(void)
{
	return get16(USED + 2);
}

static void used_elem(uint16_t i, uint32_t *id, uint32_t *len)
{
	*id = get32(USED + 4 + 8ULL * (i % q.size));
	*len = get32(USED + 4 + 8ULL * (i % q.size) + 4);
}

static void set_used_event(uint16_t v)
{
	put16(AVAIL + 4 + 2ULL * q.size, v);
}

static uint16_t avail_event(void)
{
	return get16(USED + 4 + 8ULL * q.size);
}

/* A fresh queue of size n with the given features, rings zeroed. */
static void queue_setup(uint16_t n, bool event_idx, bool indirect)
{
	memset(gp(RAM_BASE), 0, 0x30000);
	virtq_init(&q, &vm, 0, on_error, NULL);
	q.size = n;
	q.desc = DESC;
	q.avail = AVAIL;
	q.used = USED;
	avail_shadow = 0;
	used_seen = 0;
	errors = 0;
	last_error[0] = 0;
	assert_int_equal(virtq_enable(&q, 256, event_idx, indirect), 0);
}

static int setup(void **state)
{
	(void)state;
	memset(&vm, 0, sizeof(vm));
	void *p = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(p != MAP_FAILED);
	vm.ram.base = RAM_BASE;
	vm.ram.size = RAM_SIZE;
	vm.ram.host = p;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	munmap(vm.ram.host, RAM_SIZE);
	return 0;
}

/* ---- normal operation ---- */

static void test_normal_chain(void **state)
{
	(void)state;
	struct virtq_seg segs[8];
	struct virtq_chain c;

	queue_setup(8, false, false);
	/* A request: 16 readable bytes, then 32 + 8 writable. */
	memcpy(gp(BUF), "0123456789abcdef", 16);
	set_desc(DESC, 3, BUF, 16, VIRTQ_DESC_F_NEXT, 5);
	set_desc(DESC, 5, BUF + 0x100, 32, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	set_desc(DESC, 1, BUF + 0x200, 8, VIRTQ_DESC_F_WRITE, 0);
	assert_int_equal(virtq_pop(&q, segs, 8, &c), 0); /* nothing yet */
	avail_add(3);

	assert_int_equal(virtq_pop(&q, segs, 8, &c), 1);
	assert_int_equal(c.head, 3);
	assert_int_equal(c.nsegs, 3);
	assert_int_equal(c.nout, 1);
	assert_int_equal(c.out_len, 16);
	assert_int_equal(c.in_len, 40);
	assert_int_equal(segs[0].addr, BUF);
	assert_false(segs[0].write);
	assert_int_equal(segs[1].addr, BUF + 0x100);
	assert_true(segs[1].write);
	assert_int_equal(segs[2].len, 8);

	char buf[64];
	assert_int_equal(virtq_chain_read(&q, &c, 4, buf, 64), 12);
	assert_memory_equal(buf, "456789abcdef", 12);
	/* A write spanning both writable buffers. */
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(virtq_chain_write(&q, &c, 28, buf, 64), 12);
	assert_memory_equal(gp(BUF + 0x100 + 28), "xxxx", 4);
	assert_memory_equal(gp(BUF + 0x200), "xxxxxxxx", 8);

	assert_int_equal(virtq_pop(&q, segs, 8, &c), 0);
	assert_int_equal(used_idx(), 0);
	assert_int_equal(virtq_push(&q, 3, 40), 0);
	assert_int_equal(used_idx(), 1);
	uint32_t id, len;
	used_elem(0, &id, &len);
	assert_int_equal(id, 3);
	assert_int_equal(len, 40);
	assert_true(virtq_should_notify(&q));		 /* avail->flags is 0 */
	assert_int_equal(virtq_push(&q, 8, 0), -EINVAL); /* a head past the queue: device bug */
	assert_int_equal(errors, 0);
}

static void test_indirect(void **state)
{
	(void)state;
	struct virtq_seg segs[16];
	struct virtq_chain c;

	queue_setup(4, false, true);
	/* A direct descriptor, then an indirect table of three. */
	set_desc(DESC, 0, BUF, 10, VIRTQ_DESC_F_NEXT, 2);
	set_desc(DESC, 2, TABLE, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(TABLE, 0, BUF + 0x100, 20, VIRTQ_DESC_F_NEXT, 2);
	set_desc(TABLE, 2, BUF + 0x200, 30, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	set_desc(TABLE, 1, BUF + 0x300, 40, VIRTQ_DESC_F_WRITE, 0);
	avail_add(0);
	/* Only an indirect descriptor. */
	set_desc(DESC, 1, TABLE + 0x100, 16, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(TABLE + 0x100, 0, BUF + 0x400, 50, VIRTQ_DESC_F_WRITE, 0);
	avail_add(1);

	assert_int_equal(virtq_pop(&q, segs, 16, &c), 1);
	assert_int_equal(c.head, 0);
	assert_int_equal(c.nsegs, 4);
	assert_int_equal(c.nout, 2);
	assert_int_equal(c.out_len, 30);
	assert_int_equal(c.in_len, 70);
	assert_int_equal(segs[1].addr, BUF + 0x100);
	assert_int_equal(segs[3].addr, BUF + 0x300);

	assert_int_equal(virtq_pop(&q, segs, 16, &c), 1);
	assert_int_equal(c.head, 1);
	assert_int_equal(c.nsegs, 1);
	assert_int_equal(c.in_len, 50);
	assert_int_equal(virtq_push(&q, 1, 50), 0);
	assert_int_equal(virtq_push(&q, 0, 70), 0);
	uint32_t id, len;
	used_elem(0, &id, &len);
	assert_int_equal(id, 1);
	used_elem(1, &id, &len);
	assert_int_equal(id, 0);
	assert_int_equal(len, 70);
	assert_int_equal(errors, 0);
}

/* Indices wrap at 16 bits; the rings at the queue size. */
static void test_ring_wrap(void **state)
{
	(void)state;
	struct virtq_seg segs[2];
	struct virtq_chain c;

	queue_setup(4, true, false);
	for (uint16_t i = 0; i < 4; i++)
		set_desc(DESC, i, BUF + 0x100ULL * i, 16, VIRTQ_DESC_F_WRITE, 0);
	for (unsigned n = 0; n < 70000; n++) {
		uint16_t head = (uint16_t)(n % 4);
		avail_add(head);
		assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
		assert_int_equal(c.head, head);
		assert_int_equal(virtq_push(&q, head, n & 0xff), 0);
		assert_int_equal(used_idx(), (uint16_t)(n + 1));
		uint32_t id, len;
		used_elem((uint16_t)n, &id, &len);
		assert_int_equal(id, head);
		assert_int_equal(len, n & 0xff);
		assert_int_equal(avail_event(), (uint16_t)(n + 1));
	}
	/* A full ring at once, across the wrap. */
	for (uint16_t i = 0; i < 4; i++)
		avail_add(i);
	for (uint16_t i = 0; i < 4; i++) {
		assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
		assert_int_equal(c.head, i);
	}
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 0);
	assert_int_equal(errors, 0);
}

static void test_need_event(void **state)
{
	(void)state;
	/* The driver asked to hear when index event_idx + 1 is reached. */
	assert_true(virtq_need_event(0, 1, 0));
	assert_false(virtq_need_event(1, 1, 0));
	assert_true(virtq_need_event(1, 2, 0));
	assert_true(virtq_need_event(7, 10, 6));
	assert_false(virtq_need_event(5, 10, 6));  /* already passed before old */
	assert_false(virtq_need_event(12, 10, 6)); /* not yet reached */
	assert_true(virtq_need_event(9, 10, 9));
	assert_false(virtq_need_event(10, 10, 9));
	/* Across the 16-bit wrap. */
	assert_true(virtq_need_event(0xffff, 0, 0xfffe));
	assert_true(virtq_need_event(0xfffe, 2, 0xfff0));
	assert_false(virtq_need_event(3, 2, 0xfff0));
	assert_false(virtq_need_event(0, 0, 0)); /* nothing moved */
}

static void test_event_idx_suppression(void **state)
{
	(void)state;
	struct virtq_seg segs[2];
	struct virtq_chain c;

	queue_setup(8, true, false);
	for (uint16_t i = 0; i < 8; i++)
		set_desc(DESC, i, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
	for (uint16_t i = 0; i < 8; i++)
		avail_add(i);

	/* The first decision always notifies (nothing recorded yet). */
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
	assert_int_equal(virtq_push(&q, c.head, 1), 0); /* used idx 1 */
	set_used_event(5);
	assert_true(virtq_should_notify(&q));

	/* used_event 2: notify when used idx moves past 2, i.e. reaches 3. */
	set_used_event(2);
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
	assert_int_equal(virtq_push(&q, c.head, 1), 0); /* 2 */
	assert_false(virtq_should_notify(&q));
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
	assert_int_equal(virtq_push(&q, c.head, 1), 0); /* 3 */
	assert_true(virtq_should_notify(&q));
	/* Nothing pushed since: no notification. */
	assert_false(virtq_should_notify(&q));

	/* A batch (3 -> 5) that crosses used_event 3 notifies once. */
	set_used_event(3);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
		assert_int_equal(virtq_push(&q, c.head, 1), 0);
	}
	assert_true(virtq_should_notify(&q));
	/* used_event far ahead: silence. */
	set_used_event(100);
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
	assert_int_equal(virtq_push(&q, c.head, 1), 0);
	assert_false(virtq_should_notify(&q));

	/* avail_event follows what the device took while notifications are on. */
	assert_int_equal(avail_event(), 6);
	virtq_disable_notify(&q);
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
	assert_int_equal(avail_event(), 6); /* not moved while disabled */
	/* Re-enabling publishes last_avail and reports the chain still waiting. */
	assert_true(virtq_enable_notify(&q));
	assert_int_equal(avail_event(), 7);
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
	assert_false(virtq_enable_notify(&q));
	/* An empty pop leaves avail_event at the next index the driver will fill. */
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 0);
	assert_int_equal(avail_event(), 8);
	assert_int_equal(errors, 0);
}

static void test_flags_suppression(void **state)
{
	(void)state;
	struct virtq_seg segs[2];
	struct virtq_chain c;

	queue_setup(8, false, false);
	set_desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
	avail_add(0);
	assert_int_equal(virtq_pop(&q, segs, 2, &c), 1);
	assert_int_equal(virtq_push(&q, 0, 0), 0);
	put16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
	assert_false(virtq_should_notify(&q));
	put16(AVAIL, 0);
	assert_true(virtq_should_notify(&q));

	/* The device's hint to the driver: used->flags. */
	assert_int_equal(get16(USED), 0);
	virtq_disable_notify(&q);
	assert_int_equal(get16(USED), VIRTQ_USED_F_NO_NOTIFY);
	assert_false(virtq_enable_notify(&q));
	assert_int_equal(get16(USED), 0);
	avail_add(0);
	virtq_disable_notify(&q);
	assert_true(virtq_enable_notify(&q));
	assert_int_equal(errors, 0);
}

/* ---- a driver breaking the rules ---- */

/* The queue is broken with one report naming why, and stays broken and silent. */
static void expect_broken(const char *why_part)
{
	struct virtq_seg segs[4];
	struct virtq_chain c;
	uint16_t used = used_idx();

	assert_int_equal(errors, 1);
	if (!strstr(last_error, why_part))
		fail_msg("error '%s' does not mention '%s'", last_error, why_part);
	assert_true(q.broken);
	assert_int_equal(virtq_pop(&q, segs, 4, &c), -EIO);
	assert_int_equal(virtq_push(&q, 0, 0), -EIO);
	assert_false(virtq_should_notify(&q));
	assert_false(virtq_enable_notify(&q));
	assert_int_equal(used_idx(), used);
	assert_int_equal(errors, 1);
}

/* Pops once, expecting the queue to break. */
static void pop_breaks(unsigned max_segs, const char *why_part)
{
	struct virtq_seg segs[VIRTQ_MAX_SEGS];
	struct virtq_chain c;

	assert_int_equal(virtq_pop(&q, segs, max_segs, &c), -EIO);
	expect_broken(why_part);
}

static void test_bad_loop(void **state)
{
	(void)state;
	queue_setup(8, false, false);
	set_desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 0); /* points at itself */
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "loops");
}

static void test_bad_longer_than_queue(void **state)
{
	(void)state;
	/* Every descriptor of the table, then back to the start: longer than the queue. */
	queue_setup(4, false, false);
	for (uint16_t i = 0; i < 4; i++)
		set_desc(DESC, i, BUF, 16, VIRTQ_DESC_F_NEXT, (uint16_t)((i + 1) % 4));
	avail_add(2);
	pop_breaks(VIRTQ_MAX_SEGS, "longer than the queue");
}

static void test_bad_too_many_segments(void **state)
{
	(void)state;
	/* A legal chain, but longer than the device takes. */
	queue_setup(8, false, false);
	for (uint16_t i = 0; i < 7; i++)
		set_desc(DESC, i, BUF, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(i + 1));
	set_desc(DESC, 7, BUF, 16, 0, 0);
	avail_add(0);
	pop_breaks(4, "more than 4 buffers");
}

static void test_bad_indirect_loop(void **state)
{
	(void)state;
	queue_setup(4, false, true);
	set_desc(DESC, 0, TABLE, 2 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(TABLE, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(TABLE, 1, BUF, 16, VIRTQ_DESC_F_NEXT, 0);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "indirect descriptor chain from head 0 loops");
}

static void test_bad_nested_indirect(void **state)
{
	(void)state;
	queue_setup(4, false, true);
	set_desc(DESC, 0, TABLE, 16, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(TABLE, 0, TABLE + 0x100, 16, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(TABLE + 0x100, 0, BUF, 16, 0, 0);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "inside an indirect table");
}

static void test_bad_indirect_forms(void **state)
{
	(void)state;
	/* Not negotiated. */
	queue_setup(4, false, false);
	set_desc(DESC, 0, TABLE, 16, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(TABLE, 0, BUF, 16, 0, 0);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "not negotiated");

	/* INDIRECT together with NEXT. */
	queue_setup(4, false, true);
	set_desc(DESC, 0, TABLE, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	set_desc(DESC, 1, BUF, 16, 0, 0);
	set_desc(TABLE, 0, BUF, 16, 0, 0);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "NEXT");

	/* A table length that is not a multiple of 16, and an empty one. */
	queue_setup(4, false, true);
	set_desc(DESC, 0, TABLE, 24, VIRTQ_DESC_F_INDIRECT, 0);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "multiple of 16");
	queue_setup(4, false, true);
	set_desc(DESC, 0, TABLE, 0, VIRTQ_DESC_F_INDIRECT, 0);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "multiple of 16");

	/* A table running past the end of RAM. */
	queue_setup(4, false, true);
	set_desc(DESC, 0, RAM_END - 32, 64, VIRTQ_DESC_F_INDIRECT, 0);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "indirect table");

	/* A next index past the end of the indirect table. */
	queue_setup(4, false, true);
	set_desc(DESC, 0, TABLE, 32, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(TABLE, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 2);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "past the end");
}

static void test_bad_buffers(void **state)
{
	(void)state;
	static const struct {
		uint64_t addr;
		uint32_t len;
	} bad[] = {
		{ RAM_BASE - 0x1000, 16 },	      /* below RAM */
		{ RAM_END, 16 },		      /* just past RAM */
		{ RAM_END - 8, 16 },		      /* straddling the end */
		{ RAM_BASE - 8, 16 },		      /* straddling the start */
		{ 0xfffffffffffffff0ULL, 0x100 },     /* wrapping the address space */
		{ 0x1000, 0xffffffff },		      /* a huge one far below */
		{ RAM_BASE, (uint32_t)RAM_SIZE + 1 }, /* one byte too long */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		queue_setup(4, false, false);
		set_desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
		set_desc(DESC, 1, bad[i].addr, bad[i].len, VIRTQ_DESC_F_WRITE, 0);
		avail_add(0);
		pop_breaks(VIRTQ_MAX_SEGS, "outside guest RAM");
	}
	/* The whole of RAM is fine, and so is a buffer ending exactly at its end. */
	struct virtq_seg segs[4];
	struct virtq_chain c;
	queue_setup(4, false, false);
	set_desc(DESC, 0, RAM_BASE, (uint32_t)RAM_SIZE, VIRTQ_DESC_F_NEXT, 1);
	set_desc(DESC, 1, RAM_END - 16, 16, VIRTQ_DESC_F_WRITE, 0);
	avail_add(0);
	assert_int_equal(virtq_pop(&q, segs, 4, &c), 1);
	assert_int_equal(errors, 0);
}

static void test_bad_length_overflow(void **state)
{
	(void)state;
	/* 600 writable buffers of (nearly) all of RAM each: every one in RAM, their sum past
	 * 4 GiB. */
	queue_setup(4, false, true);
	set_desc(DESC, 0, TABLE, 600 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	for (uint16_t i = 0; i < 600; i++)
		set_desc(TABLE, i, RAM_BASE, (uint32_t)RAM_SIZE,
			 VIRTQ_DESC_F_WRITE | (i < 599 ? VIRTQ_DESC_F_NEXT : 0), (uint16_t)(i + 1));
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "overflow");
}

static void test_bad_order(void **state)
{
	(void)state;
	queue_setup(4, false, false);
	set_desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	set_desc(DESC, 1, BUF, 16, 0, 0);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "readable buffer after a writable");
}

static void test_bad_indices(void **state)
{
	(void)state;
	/* avail->idx jumping by more than the queue size. */
	queue_setup(8, false, false);
	set_desc(DESC, 0, BUF, 16, 0, 0);
	put16(AVAIL + 2, 9);
	pop_breaks(VIRTQ_MAX_SEGS, "more than the queue size");

	/* ... and by a "negative" amount. */
	queue_setup(8, false, false);
	put16(AVAIL + 2, 0xffff);
	pop_breaks(VIRTQ_MAX_SEGS, "more than the queue size");

	/* A head past the descriptor table. */
	queue_setup(8, false, false);
	avail_add(8);
	pop_breaks(VIRTQ_MAX_SEGS, "past the queue size");

	/* A next index past the descriptor table. */
	queue_setup(8, false, false);
	set_desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 8);
	avail_add(0);
	pop_breaks(VIRTQ_MAX_SEGS, "past the end");
}

static void test_bad_rings(void **state)
{
	(void)state;
	static const struct {
		uint16_t size;
		uint64_t desc, avail, used;
		const char *why;
	} bad[] = {
		{ 0, DESC, AVAIL, USED, "power of 2" },
		{ 6, DESC, AVAIL, USED, "power of 2" },
		{ 512, DESC, AVAIL, USED, "power of 2" }, /* over the device's 256 */
		{ 8, DESC + 8, AVAIL, USED, "misaligned" },
		{ 8, DESC, AVAIL + 1, USED, "misaligned" },
		{ 8, DESC, AVAIL, USED + 2, "misaligned" },
		{ 8, 0x1000, AVAIL, USED, "outside guest RAM" },
		{ 8, DESC, RAM_END - 16, USED, "outside guest RAM" },
		{ 256, DESC, AVAIL, RAM_END - 0x400, "outside guest RAM" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		virtq_init(&q, &vm, 0, on_error, NULL);
		errors = 0;
		q.size = bad[i].size;
		q.desc = bad[i].desc;
		q.avail = bad[i].avail;
		q.used = bad[i].used;
		assert_int_equal(virtq_enable(&q, 256, true, true), -EINVAL);
		assert_false(q.ready);
		expect_broken(bad[i].why);
	}
	/* A reset clears the breakage. */
	virtq_reset(&q);
	assert_false(q.broken);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normal_chain),
		cmocka_unit_test(test_indirect),
		cmocka_unit_test(test_ring_wrap),
		cmocka_unit_test(test_need_event),
		cmocka_unit_test(test_event_idx_suppression),
		cmocka_unit_test(test_flags_suppression),
		cmocka_unit_test(test_bad_loop),
		cmocka_unit_test(test_bad_longer_than_queue),
		cmocka_unit_test(test_bad_too_many_segments),
		cmocka_unit_test(test_bad_indirect_loop),
		cmocka_unit_test(test_bad_nested_indirect),
		cmocka_unit_test(test_bad_indirect_forms),
		cmocka_unit_test(test_bad_buffers),
		cmocka_unit_test(test_bad_length_overflow),
		cmocka_unit_test(test_bad_order),
		cmocka_unit_test(test_bad_indices),
		cmocka_unit_test(test_bad_rings),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
