/* libFuzzer target for virtio-blk (src/virtio/blk.c): the input describes what a guest driver
 * puts in a small guest RAM (the descriptor table, the avail ring, request headers with any
 * type and sector, data segment lists of any length and direction, indirect tables,
 * discard / write-zeroes ranges), the features it accepted, whether the disk is read-only,
 * and then the order in which the backend completes the requests (with injected I/O errors),
 * device resets with requests in flight, and raw bytes written over the guest RAM.
 *
 * blk.c runs as in the VMM, except that its block backend is an in-memory disk and the event
 * loop is this harness: completions and queue kicks are delivered one at a time, in the
 * order the input says. blk.c is included here so that block_backend_open can be pointed at
 * the in-memory backend; the generic checks of block/block.c still run before it.
 *
 * Whatever the input: no crash, no access outside guest RAM or the disk (AddressSanitizer
 * watches both buffers' edges), no leak (the device is destroyed with requests in flight),
 * every used element names a head that was in flight, and no request completed after a reset
 * reaches the used ring. For well-formed requests (no raw bytes written over RAM, no injected
 * errors) the status byte and the used length are what the specification says: S_OK, IOERR
 * (range, length, read-only) or UNSUPP (type, feature, flags).
 *
 *   make fuzz && build/fuzz/fuzz_blk -max_total_time=60 build/fuzz/corpus-blk */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "core/log.h"

/* blk.c with its backend opened here. */
static int fuzz_backend_open(const char *uri, const struct block_options *opts,
			     struct event_loop *loop, struct block_backend **out);
#define block_backend_open_opts fuzz_backend_open
#include "virtio/blk.c"
#undef block_backend_open_opts

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/* ---- The input ---------------------------------------------------------------------- */

struct input {
	const uint8_t *p;
	size_t left;
};

static uint8_t in_u8(struct input *in)
{
	if (!in->left)
		return 0;
	in->left--;
	return *in->p++;
}

static uint16_t in_u16(struct input *in)
{
	return (uint16_t)(in_u8(in) | in_u8(in) << 8);
}

static uint32_t in_u32(struct input *in)
{
	return (uint32_t)in_u16(in) | (uint32_t)in_u16(in) << 16;
}

static uint64_t in_u64(struct input *in)
{
	return (uint64_t)in_u32(in) | (uint64_t)in_u32(in) << 32;
}

/* ---- The in-memory backend ---------------------------------------------------------- */

/* Bytes of the disk actually stored: a larger disk reads a pattern beyond them and drops
 * writes there, so that requests of many MiB (and the in-flight limit) are reachable. */
#define MEM_BACKED_MAX (256u << 10)
#define MEM_PENDING_MAX 512

struct mem_disk {
	uint8_t *data;
	uint64_t backed;
	struct block_request *pending[MEM_PENDING_MAX];
	unsigned npending;
	bool fail_submit; /* the next submit fails (set by the harness) */
};

static uint64_t fuzz_disk_size; /* for the next open */
static struct mem_disk *fuzz_disk;

static int mem_open(struct block_backend *bb, const char *uri, const struct block_options *opts,
		    struct event_loop *loop)
{
	bool readonly = opts->readonly;
	(void)uri, (void)loop;
	struct mem_disk *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->backed = fuzz_disk_size < MEM_BACKED_MAX ? fuzz_disk_size : MEM_BACKED_MAX;
	/* Exactly the backed size, so that ASan sees any access past it. */
	d->data = malloc(d->backed ? d->backed : 1);
	if (!d->data) {
		free(d);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < d->backed; i += BLOCK_SECTOR_SIZE)
		memset(d->data + i, (int)(uint8_t)(i / BLOCK_SECTOR_SIZE * 7 + 1),
		       d->backed - i < BLOCK_SECTOR_SIZE ? d->backed - i : BLOCK_SECTOR_SIZE);
	bb->size = fuzz_disk_size;
	bb->readonly = readonly;
	bb->priv = d;
	fuzz_disk = d;
	return 0;
}

static int mem_submit(struct block_backend *bb, struct block_request *req)
{
	struct mem_disk *d = bb->priv;

	/* block_backend_submit checked these already. */
	if (req->op != BLOCK_OP_FLUSH)
		CHECK(req->offset <= bb->size && req->len <= bb->size - req->offset);
	if (req->op == BLOCK_OP_READ || req->op == BLOCK_OP_WRITE)
		CHECK(req->buf || !req->len);
	CHECK(!bb->readonly || req->op == BLOCK_OP_READ || req->op == BLOCK_OP_FLUSH);
	if (d->fail_submit || d->npending == MEM_PENDING_MAX) {
		d->fail_submit = false;
		return -EIO;
	}
	d->pending[d->npending++] = req;
	return 0;
}

/* Does request i's work and removes it from the pending list (done not called yet). */
static struct block_request *mem_complete(struct mem_disk *d, unsigned i, int result)
{
	struct block_request *req = d->pending[i];
	d->pending[i] = d->pending[--d->npending];

	uint64_t off = req->offset, len = req->len;
	uint64_t in_backed = off >= d->backed ? 0 : (len < d->backed - off ? len : d->backed - off);
	uint8_t *buf = req->buf;
	switch (req->op) {
	case BLOCK_OP_READ:
		if (in_backed)
			memcpy(buf, d->data + off, in_backed);
		if (len > in_backed)
			memset(buf + in_backed, 0x5a, len - in_backed);
		break;
	case BLOCK_OP_WRITE:
		if (in_backed)
			memcpy(d->data + off, buf, in_backed);
		break;
	case BLOCK_OP_DISCARD:
	case BLOCK_OP_WRITE_ZEROES:
		if (in_backed)
			memset(d->data + off, 0, in_backed);
		break;
	case BLOCK_OP_FLUSH: break;
	}
	req->result = result;
	return req;
}

static void mem_close(struct block_backend *bb)
{
	struct mem_disk *d = bb->priv;
	/* Requests still pending are dropped without their callbacks (block.h): the device
	 * frees them itself. */
	free(d->data);
	free(d);
	fuzz_disk = NULL;
}

static const struct block_backend_ops mem_ops = {
	.scheme = "mem",
	.open = mem_open,
	.submit = mem_submit,
	.close = mem_close,
};

static int fuzz_backend_open(const char *uri, const struct block_options *opts,
			     struct event_loop *loop, struct block_backend **out)
{
	struct block_backend *bb = calloc(1, sizeof(*bb));
	if (!bb)
		return -ENOMEM;
	bb->ops = &mem_ops;
	int err = mem_ops.open(bb, uri, opts, loop);
	if (err) {
		free(bb);
		return err;
	}
	*out = bb;
	return 0;
}

/* ---- The transport and the event loop ------------------------------------------------ */

static unsigned fuzz_interrupts;

static void fuzz_interrupt(void *transport, uint32_t cause, unsigned q)
{
	(void)transport;
	CHECK(cause == VIRTIO_INT_USED || cause == VIRTIO_INT_CONFIG);
	CHECK(q == 0);
	fuzz_interrupts++;
}

static const struct virtio_transport_ops fuzz_transport = { .interrupt = fuzz_interrupt };

static void fuzz_queue_error(void *opaque, const struct virtq *q, const char *why)
{
	(void)q;
	virtio_dev_fail(opaque, why);
}

/* What the event loop does for the device's eventfd (virtio.c, virtio_dev_on_notify). */
static void run_notify(struct virtio_dev *vdev)
{
	uint64_t pending = atomic_exchange(&vdev->notify_pending, 0);
	pthread_mutex_lock(&vdev->lock);
	struct virtq *q = virtio_dev_queue(vdev, 0);
	if ((pending & 1) && virtio_dev_running(vdev) && q->ready && !q->broken)
		vdev->ops->queue_notify(vdev, 0);
	pthread_mutex_unlock(&vdev->lock);
}

/* ---- Guest memory --------------------------------------------------------------------- */

#define FUZZ_RAM_SIZE 0x40000 /* 256 KiB at RAM_BASE */
#define DESC_AT 0x0000	      /* up to 128 descriptors */
#define AVAIL_AT 0x0800
#define USED_AT 0x0c00
#define INDIRECT_AT 0x1100 /* indirect tables, 0x4000 bytes (after the used ring) */
/* Status bytes, headers and discard ranges have places of their own, one per request of a
 * round, so that data read by one request never lands on another's header or status. */
#define STATUS_AT 0x5100
#define REQS_AT 0x5200 /* 32 bytes each: header, range */
#define DATA_AT 0x6200 /* data buffers, shared round-robin (they may overlap) */
#define QUEUE_MAX_EXP 7

struct guest {
	struct vm *vm;
	uint16_t qsize;
	uint16_t next_desc; /* free descriptors are handed out in order, per round */
	uint32_t next_indirect;
	uint32_t next_data;
	uint16_t avail_idx;
	bool intact; /* only the harness wrote the rings this round (no patches, no request
		      * whose buffers may point at them) */
	bool exact;  /* intact, and no injected errors: statuses can be checked */
};

static uint8_t *ram_at(struct guest *g, uint64_t off)
{
	return g->vm->ram.host + off;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* len bytes of the data area (wrapping round: buffers may overlap, they stay in RAM). */
static uint64_t data_alloc(struct guest *g, uint32_t len)
{
	uint32_t room = FUZZ_RAM_SIZE - DATA_AT;
	if (len > room)
		len = room;
	if (g->next_data + len > room)
		g->next_data = 0;
	uint64_t at = DATA_AT + g->next_data;
	g->next_data += (len + 15) & ~15u;
	return at;
}

struct seg_spec {
	uint64_t addr; /* guest physical */
	uint32_t len;
	bool write;
};

/* A request as the harness built it, with what the device should answer. */
struct expect {
	bool in_flight;
	bool checked; /* well-formed: status and length are known */
	uint64_t status_gpa;
	uint8_t status;
	uint32_t used_len;
};

#define SEGS_MAX 256 /* as many as an indirect table here holds */

/* Writes the chain segs[0..n) as descriptors (direct, or one indirect table) and makes it
 * available. Returns its head, or -1 when the ring or the tables are full. */
static int put_chain(struct guest *g, const struct seg_spec *segs, unsigned n, bool indirect)
{
	unsigned need = indirect ? 1 : n;
	if (g->next_desc + need > g->qsize || n == 0)
		return -1;
	uint16_t head = g->next_desc;
	uint8_t *table;
	uint16_t first;
	if (indirect) {
		if (g->next_indirect + 16 * n > STATUS_AT - INDIRECT_AT)
			return -1;
		uint64_t at = INDIRECT_AT + g->next_indirect;
		g->next_indirect += 16 * n;
		uint8_t *d = ram_at(g, DESC_AT + 16 * head);
		uint64_t gpa = RAM_BASE + at;
		memcpy(d, &gpa, 8);
		uint32_t len = 16 * n;
		memcpy(d + 8, &len, 4);
		put16(d + 12, VIRTQ_DESC_F_INDIRECT);
		put16(d + 14, 0);
		g->next_desc++;
		table = ram_at(g, at);
		first = 0;
	} else {
		table = ram_at(g, DESC_AT);
		first = head;
		g->next_desc += n;
	}
	for (unsigned i = 0; i < n; i++) {
		uint8_t *d = table + 16 * (first + i);
		memcpy(d, &segs[i].addr, 8);
		memcpy(d + 8, &segs[i].len, 4);
		uint16_t flags = (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0) |
				 (segs[i].write ? VIRTQ_DESC_F_WRITE : 0);
		put16(d + 12, flags);
		put16(d + 14, (uint16_t)(first + i + 1));
	}
	put16(ram_at(g, AVAIL_AT + 4 + 2 * (g->avail_idx % g->qsize)), head);
	g->avail_idx++;
	put16(ram_at(g, AVAIL_AT + 2), g->avail_idx);
	return head;
}

/* A sector number: small, near the end of the disk, or anything. */
static uint64_t pick_sector(struct input *in, uint64_t capacity)
{
	uint8_t s = in_u8(in);
	switch (s >> 6) {
	case 0:
	case 1: return s & 0x7f;
	case 2: return capacity - (s & 0x3f); /* wraps for a tiny disk: out of range */
	default: return in_u64(in);
	}
}

/* A data segment length: usually whole sectors, sometimes anything. */
static uint32_t pick_len(struct input *in)
{
	uint16_t v = in_u16(in);
	if (v & 0x8000)
		return v & 0x7fff;
	if ((v & 0x7000) == 0x7000)
		return 0xffffffffu - (v & 0xfff); /* overflowing lengths */
	return (uint32_t)(v & 0x3f) * BLOCK_SECTOR_SIZE;
}

enum { REQ_IN, REQ_OUT, REQ_FLUSH, REQ_GET_ID, REQ_DISCARD, REQ_WZ, REQ_RAW, REQ_BIG };

/* Builds one request from the input; fills e. Returns the head, or -1 (ring full). */
static int build_request(struct guest *g, struct input *in, unsigned nth, struct blk_dev *b,
			 struct virtio_dev *vdev, struct expect *exps)
{
	uint8_t r0 = in_u8(in);
	unsigned kind = r0 & 7;
	bool indirect = r0 & 0x08;
	bool split_header = r0 & 0x10;
	bool malformed = r0 & 0x20;
	unsigned ndata = r0 >> 6;
	uint32_t type;
	uint8_t big = 0;
	switch (kind) {
	case REQ_IN: type = VIRTIO_BLK_T_IN; break;
	case REQ_OUT: type = VIRTIO_BLK_T_OUT; break;
	case REQ_FLUSH: type = VIRTIO_BLK_T_FLUSH; break;
	case REQ_GET_ID: type = VIRTIO_BLK_T_GET_ID; break;
	case REQ_DISCARD: type = VIRTIO_BLK_T_DISCARD; break;
	case REQ_WZ: type = VIRTIO_BLK_T_WRITE_ZEROES; break;
	case REQ_RAW: type = in_u32(in); break;
	default: /* REQ_BIG: many long segments over one buffer, megabytes in all */
		big = in_u8(in);
		type = big & 1 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
		break;
	}
	uint64_t sector = pick_sector(in, b->capacity);

	struct seg_spec segs[SEGS_MAX];
	unsigned n = 0;
	uint64_t hdr = REQS_AT + 32 * nth;
	uint8_t *h = ram_at(g, hdr);
	memcpy(h, &type, 4);
	memset(h + 4, 0, 4);
	memcpy(h + 8, &sector, 8);
	if (split_header) {
		segs[n++] = (struct seg_spec){ RAM_BASE + hdr, 8, false };
		segs[n++] = (struct seg_spec){ RAM_BASE + hdr + 8, 8, false };
	} else {
		segs[n++] = (struct seg_spec){ RAM_BASE + hdr, BLK_HDR_SIZE, false };
	}

	/* The data: readable for OUT and for the discard / write-zeroes range, writable for IN
	 * and GET_ID and (harmless) for the rest. */
	bool data_write = !(type == VIRTIO_BLK_T_OUT || type == VIRTIO_BLK_T_DISCARD ||
			    type == VIRTIO_BLK_T_WRITE_ZEROES);
	uint64_t data_len = 0;
	bool range_seg = false;
	uint64_t rstart = 0;
	uint32_t rnum = 0, rflags = 0;
	if ((type == VIRTIO_BLK_T_DISCARD || type == VIRTIO_BLK_T_WRITE_ZEROES) && !(r0 & 0x40)) {
		/* One range (the device takes one per request). */
		uint64_t at = REQS_AT + 32 * nth + BLK_HDR_SIZE;
		uint8_t *p = ram_at(g, at);
		rstart = pick_sector(in, b->capacity);
		uint8_t sel = in_u8(in);
		rnum = sel & 0x80 ? in_u32(in) : (uint32_t)(sel & 0x7f) * 8;
		rflags = (sel & 0x60) == 0x60 ? in_u32(in) : (sel >> 5) & 1;
		memcpy(p, &rstart, 8);
		memcpy(p + 8, &rnum, 4);
		memcpy(p + 12, &rflags, 4);
		segs[n++] = (struct seg_spec){ RAM_BASE + at, 16, false };
		data_len = 16;
		range_seg = true;
		ndata = 0;
	}
	if (kind == REQ_BIG) {
		/* Up to 240 segments of up to 231 KiB (past BLK_MAX_REQUEST); or the largest
		 * request the device takes, 254 segments of 128 KiB, three of which go past
		 * the in-flight limit. */
		unsigned nbig = 254;
		uint32_t len = 128 << 10;
		if (!(big & 2)) {
			nbig = 2 + in_u8(in) % 240;
			len = (1 + in_u8(in) % ((FUZZ_RAM_SIZE - DATA_AT) / 1024)) * 1024;
		}
		for (unsigned i = 0; i < nbig && n < SEGS_MAX - 1; i++) {
			segs[n++] = (struct seg_spec){ RAM_BASE + DATA_AT, len, data_write };
			data_len += len;
		}
		ndata = 0;
	}
	for (unsigned i = 0; i < ndata && n < SEGS_MAX - 1; i++) {
		uint32_t len = pick_len(in);
		/* Long segments share one buffer (they may: the device bounces them). */
		uint64_t at = len <= 0x4000 ? data_alloc(g, len) : DATA_AT;
		uint32_t in_ram = FUZZ_RAM_SIZE - (uint32_t)at;
		if (len > in_ram)
			malformed = true; /* reaches past RAM: the device must refuse it */
		segs[n++] = (struct seg_spec){ RAM_BASE + at, len, data_write };
		data_len += len;
	}
	uint64_t st = STATUS_AT + nth;
	ram_at(g, st)[0] = 0xee;
	segs[n++] = (struct seg_spec){ RAM_BASE + st, 1, true };

	if (malformed && n) {
		/* One way to get it wrong. */
		uint8_t how = in_u8(in);
		unsigned i = (how >> 3) % n;
		switch (how & 7) {
		case 0: segs[i].write = !segs[i].write; break;			     /* direction */
		case 1: segs[i].addr = in_u64(in); break;			     /* anywhere */
		case 2: segs[i].addr = RAM_BASE + FUZZ_RAM_SIZE - (how >> 4); break; /* the edge */
		case 3: segs[i].len = in_u32(in); break; /* any length */
		case 4: n--; break;			 /* no status byte */
		case 5: segs[i].len = 0; break;
		case 6: segs[0].len = how >> 4; break; /* short header */
		default: break;
		}
	}
	int head = put_chain(g, segs, n,
			     indirect &&
				     vdev->guest_features & VIRTIO_FEATURE(VIRTIO_F_INDIRECT_DESC));
	if (head < 0)
		return -1;

	/* What the device should answer (blk.c's rules, from the specification). */
	struct expect *e = &exps[head];
	*e = (struct expect){ .in_flight = true, .status_gpa = RAM_BASE + st, .used_len = 1 };
	if (malformed) {
		/* Its segments may point at the rings, other requests' headers and statuses. */
		g->intact = g->exact = false;
		return head;
	}
	bool ro = b->bb->readonly;
	uint64_t cap = b->capacity;
	bool in_range;
	e->checked = true;
	e->status = VIRTIO_BLK_S_OK;
	switch (type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		in_range = sector <= cap && data_len / 512 <= cap - sector;
		if ((type == VIRTIO_BLK_T_OUT && ro) || data_len % 512 ||
		    data_len > BLK_MAX_REQUEST || !in_range)
			e->status = VIRTIO_BLK_S_IOERR;
		else if (type == VIRTIO_BLK_T_IN)
			e->used_len = 1 + (uint32_t)data_len;
		break;
	case VIRTIO_BLK_T_FLUSH: break;
	case VIRTIO_BLK_T_GET_ID:
		e->used_len = 1 + (data_len < BLK_ID_BYTES ? (uint32_t)data_len : BLK_ID_BYTES);
		break;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		bool discard = type == VIRTIO_BLK_T_DISCARD;
		in_range = rstart <= cap && rnum <= cap - rstart;
		if (!range_seg && data_len == 16) {
			e->checked = false; /* data segments that happen to make a range */
			break;
		}
		if (!virtio_dev_has_feature(vdev, discard ? VIRTIO_BLK_F_DISCARD
							  : VIRTIO_BLK_F_WRITE_ZEROES) ||
		    !range_seg || (rflags & ~(discard ? 0u : VIRTIO_BLK_WZ_F_UNMAP)))
			e->status = VIRTIO_BLK_S_UNSUPP;
		else if (ro || rnum > BLK_MAX_DISCARD_SECTORS || !in_range)
			e->status = VIRTIO_BLK_S_IOERR;
		break;
	}
	default: e->status = VIRTIO_BLK_S_UNSUPP; break;
	}
	return head;
}

/* Checks the used ring entries from *seen to the device's index. */
static void check_used(struct guest *g, struct virtq *q, uint16_t *seen, struct expect *exps)
{
	uint16_t idx = get16(ram_at(g, USED_AT + 2));
	if (!g->intact) {
		/* The guest may have written over the used ring itself. */
		*seen = q->used_idx;
		return;
	}
	CHECK(idx == q->used_idx || q->broken || !q->ready);
	CHECK((uint16_t)(idx - *seen) <= g->qsize);
	for (; *seen != idx; (*seen)++) {
		const uint8_t *u = ram_at(g, USED_AT + 4 + 8 * (*seen % g->qsize));
		uint32_t id, len;
		memcpy(&id, u, 4);
		memcpy(&len, u + 4, 4);
		CHECK(id < g->qsize);
		struct expect *e = &exps[id];
		/* Never a head twice, never one that was not given. */
		CHECK(e->in_flight || !g->intact);
		e->in_flight = false;
		if (g->exact && e->checked) {
			uint8_t status = *(uint8_t *)vm_ram_ptr(g->vm, e->status_gpa, 1);
			CHECK(status == e->status);
			CHECK(len == (status == VIRTIO_BLK_S_OK ? e->used_len : 1));
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct expect exps[1u << QUEUE_MAX_EXP];
	struct input in = { data, size };
	if (size < 4)
		return 0;

	struct vm vm;
	memset(&vm, 0, sizeof(vm));
	/* Exactly the RAM's size, so ASan flags any access past either end; allocated once
	 * (a fresh mapping per input costs more than the rest of the run). */
	static uint8_t *ram;
	if (!ram && !(ram = malloc(FUZZ_RAM_SIZE)))
		return 0;
	memset(ram, 0, FUZZ_RAM_SIZE);
	vm.ram.base = RAM_BASE;
	vm.ram.size = FUZZ_RAM_SIZE;
	vm.ram.host = ram;

	/* Header: read-only, accepted features, queue size, disk size. */
	uint8_t flags = in_u8(&in);
	uint8_t qexp = in_u8(&in);
	uint8_t dsel = in_u8(&in);
	uint8_t mode = in_u8(&in);
	bool readonly = flags & 1;
	bool patches = mode & 1;  /* raw bytes over RAM after building */
	bool do_reset = mode & 2; /* reset with requests in flight */
	bool inject = mode & 4;	  /* backend errors at submit and completion */
	bool abandon = mode & 8;  /* destroy the device with requests in flight */
	if ((dsel & 0xc0) == 0xc0)
		fuzz_disk_size = (64ull << 20) + (uint64_t)(dsel & 0x3f) * (1 << 20);
	else
		fuzz_disk_size = (uint64_t)dsel * 8 * BLOCK_SECTOR_SIZE + (dsel & 1) * 512;

	struct virtio_dev vdev;
	memset(&vdev, 0, sizeof(vdev));
	vdev.vm = &vm;
	vdev.ops = &virtio_blk_ops;
	vdev.transport_ops = &fuzz_transport;
	vdev.notify_fd = -1; /* kicks are seen in notify_pending */
	snprintf(vdev.name, sizeof(vdev.name), "virtio-blk (fuzz)");
	vdev.host_features = virtio_blk_ops.features | VIRTIO_FEATURE(VIRTIO_F_VERSION_1) |
			     VIRTIO_FEATURE(VIRTIO_F_INDIRECT_DESC) |
			     VIRTIO_FEATURE(VIRTIO_F_EVENT_IDX);
	virtq_init(&vdev.queues[0], &vm, 0, fuzz_queue_error, &vdev);
	pthread_mutex_init(&vdev.lock, NULL);
	struct vm_device_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.type = "virtio-blk";
	snprintf(cfg.disk.path, sizeof(cfg.disk.path), "mem:%s-%u",
		 flags & 0x80 ? "/images/a-disk-with-a-name-longer-than-the-serial" : "disk",
		 flags);
	cfg.disk.readonly = readonly;
	if (flags & 2)
		snprintf(cfg.disk.id, sizeof(cfg.disk.id), "serial-of-twenty-chars");
	CHECK(virtio_blk_ops.create(&vdev, &cfg) == 0);
	struct blk_dev *b = vdev.priv;
	CHECK(b->capacity == fuzz_disk_size / BLOCK_SECTOR_SIZE);

	/* The driver's side of feature negotiation and queue setup. */
	uint64_t want = VIRTIO_FEATURE(VIRTIO_F_VERSION_1);
	if (flags & 0x04)
		want |= VIRTIO_FEATURE(VIRTIO_F_EVENT_IDX);
	if (flags & 0x08)
		want |= VIRTIO_FEATURE(VIRTIO_F_INDIRECT_DESC);
	if (flags & 0x10)
		want |= VIRTIO_FEATURE(VIRTIO_BLK_F_DISCARD);
	if (flags & 0x20)
		want |= VIRTIO_FEATURE(VIRTIO_BLK_F_WRITE_ZEROES);
	if (flags & 0x40)
		want |= VIRTIO_FEATURE(VIRTIO_BLK_F_FLUSH);
	vdev.guest_features = want & vdev.host_features;
	struct guest g = { .vm = &vm, .qsize = (uint16_t)(1u << (qexp % (QUEUE_MAX_EXP + 1))) };
	struct virtq *q = virtio_dev_queue(&vdev, 0);
	pthread_mutex_lock(&vdev.lock);
	vdev.status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	q->size = g.qsize;
	q->desc = RAM_BASE + DESC_AT;
	q->avail = RAM_BASE + AVAIL_AT;
	q->used = RAM_BASE + USED_AT;
	virtio_dev_set_queue_ready(&vdev, 0, true);
	vdev.status |= VIRTIO_STATUS_DRIVER_OK;
	pthread_mutex_unlock(&vdev.lock);
	CHECK(q->ready && !q->broken);
	uint8_t cfgbuf[BLK_CONFIG_SIZE];
	virtio_dev_config_read(&vdev, 0, cfgbuf, sizeof(cfgbuf));
	CHECK(get_le64(cfgbuf + BLK_CFG_CAPACITY) == b->capacity);

	memset(exps, 0, sizeof(exps));
	uint16_t seen = 0;
	bool reset_done = false;
	/* Rounds: the driver fills the ring, the device takes the requests, the backend
	 * completes them in the input's order, and the descriptors are used again. */
	for (unsigned round = 0; round < 4 && in.left && !reset_done; round++) {
		g.next_desc = 0;
		g.next_indirect = 0;
		unsigned nreq = 1 + in_u8(&in) % g.qsize;
		g.intact = !patches;
		g.exact = !patches && !inject;
		for (unsigned i = 0; i < nreq; i++)
			if (build_request(&g, &in, i, b, &vdev, exps) < 0)
				break;
		if (patches) {
			unsigned np = in_u8(&in) % 16;
			for (unsigned i = 0; i < np; i++) {
				uint16_t off = in_u16(&in) % FUZZ_RAM_SIZE;
				ram[off] = in_u8(&in);
			}
		}
		if (inject && fuzz_disk)
			fuzz_disk->fail_submit = in_u8(&in) & 1;
		virtio_dev_notify(&vdev, 0);
		run_notify(&vdev);
		/* Complete in the input's order; kicks from completions (the in-flight limit)
		 * are run as the loop would. */
		unsigned reset_at = do_reset ? in_u8(&in) : ~0u;
		unsigned stop_at = abandon ? in_u8(&in) : ~0u;
		for (unsigned step = 0; fuzz_disk && fuzz_disk->npending; step++) {
			if (step == stop_at)
				goto out; /* with requests in flight */
			if (step == reset_at) {
				/* The driver resets the device: what completes later is dropped. */
				pthread_mutex_lock(&vdev.lock);
				check_used(&g, q, &seen, exps);
				virtio_dev_set_status(&vdev, 0);
				pthread_mutex_unlock(&vdev.lock);
				reset_done = true;
			}
			uint8_t c = in_u8(&in);
			int result = inject && (c & 0x80) ? -EIO : 0;
			uint16_t used_before = get16(ram + USED_AT + 2);
			struct block_request *req =
				mem_complete(fuzz_disk, c % fuzz_disk->npending, result);
			req->done(req);
			if (reset_done)
				CHECK(get16(ram + USED_AT + 2) == used_before);
			run_notify(&vdev);
		}
		if (reset_done)
			break;
		pthread_mutex_lock(&vdev.lock);
		if (!q->broken && !(vdev.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)) {
			check_used(&g, q, &seen, exps);
			/* Everything taken was answered. */
			for (unsigned i = 0; i < g.qsize && g.intact; i++)
				CHECK(!exps[i].in_flight || q->last_avail != g.avail_idx);
		}
		pthread_mutex_unlock(&vdev.lock);
		if (q->broken || (vdev.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET))
			break;
		for (unsigned i = 0; i < g.qsize; i++)
			exps[i].in_flight = false;
	}
out:
	/* Requests still in flight are freed by destroy (the backend drops them). */
	virtio_blk_ops.destroy(&vdev);
	CHECK(fuzz_disk == NULL);
	pthread_mutex_destroy(&vdev.lock);
	return 0;
}
