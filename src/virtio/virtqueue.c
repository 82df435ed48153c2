/* Split virtqueues, device side (see virtqueue.h).
 *
 * Memory ordering with the driver (vCPU threads writing guest RAM, this thread reading it):
 *   - the driver fills descriptors and the avail ring, then (after a write barrier) bumps
 *     avail->idx: we load avail->idx with acquire, so every entry below it is visible;
 *   - we fill a used ring entry, then store used->idx with release, so the driver never sees
 *     the index before the entry;
 *   - deciding to interrupt reads avail->flags / used_event after storing used->idx, and
 *     enabling notifications reads avail->idx after storing avail_event / used->flags: each
 *     is a store followed by a load of something the other side stores before loading ours
 *     (the driver does the mirror image), so each needs a full fence, or both sides can miss
 *     each other and the queue stalls.
 *
 * Every guest-controlled value is read once into a local copy, then checked, then used, so
 * a driver changing descriptors under our feet can only make its own chain wrong. */
#include "virtio/virtqueue.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/vm.h"
#include "migration/sbuf.h"

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

/* Breaks q (once) and tells its owner why. */
static void __attribute__((format(printf, 2, 3))) virtq_break(struct virtq *q, const char *fmt, ...)
{
	char why[160];
	va_list ap;

	if (q->broken)
		return;
	q->broken = true;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (q->on_error)
		q->on_error(q->error_opaque, q, why);
}

void virtq_init(struct virtq *q, struct vm *vm, unsigned index, virtq_error_fn on_error,
		void *error_opaque)
{
	memset(q, 0, sizeof(*q));
	q->vm = vm;
	q->index = index;
	q->on_error = on_error;
	q->error_opaque = error_opaque;
}

void virtq_reset(struct virtq *q)
{
	virtq_init(q, q->vm, q->index, q->on_error, q->error_opaque);
}

/* A ring field of 2 bytes at gpa (2-aligned, checked at enable); NULL breaks the queue. The
 * driver area is only read; device-area fields are written through the tracked path. */
static uint16_t *virtq_ring_u16(struct virtq *q, uint64_t gpa, bool write)
{
	void *p = write ? vm_guest_ptr_for_write(q->vm, gpa, 2) : vm_ram_ptr(q->vm, gpa, 2);

	if (!p)
		virtq_break(q, "ring at 0x%llx is outside guest RAM", (unsigned long long)gpa);
	return p;
}

static bool virtq_load_avail_idx(struct virtq *q, uint16_t *idx)
{
	uint16_t *p = virtq_ring_u16(q, q->avail + 2, false);

	if (!p)
		return false;
	*idx = le16toh(__atomic_load_n(p, __ATOMIC_ACQUIRE));
	return true;
}

/* avail_event: the driver notifies when its avail->idx moves past this. */
static bool virtq_store_avail_event(struct virtq *q, uint16_t val)
{
	uint16_t *p = virtq_ring_u16(q, q->used + 4 + 8ULL * q->size, true);

	if (!p)
		return false;
	__atomic_store_n(p, htole16(val), __ATOMIC_RELAXED);
	return true;
}

static bool virtq_store_used_flags(struct virtq *q, uint16_t flags)
{
	uint16_t *p = virtq_ring_u16(q, q->used, true);

	if (!p)
		return false;
	__atomic_store_n(p, htole16(flags), __ATOMIC_RELAXED);
	return true;
}

int virtq_enable(struct virtq *q, uint16_t max_size, bool event_idx, bool indirect)
{
	uint16_t n = q->size;

	if (q->broken)
		return -EINVAL;
	if (n == 0 || n > max_size || (n & (n - 1))) {
		virtq_break(q, "queue size %u is not a power of 2 from 1 to %u", n, max_size);
		return -EINVAL;
	}
	if ((q->desc & 15) || (q->avail & 1) || (q->used & 3)) {
		virtq_break(q, "misaligned rings (desc 0x%llx, driver 0x%llx, device 0x%llx)",
			    (unsigned long long)q->desc, (unsigned long long)q->avail,
			    (unsigned long long)q->used);
		return -EINVAL;
	}
	if (!vm_ram_ptr(q->vm, q->desc, VIRTQ_DESC_BYTES(n)) ||
	    !vm_ram_ptr(q->vm, q->avail, VIRTQ_AVAIL_BYTES(n)) ||
	    !vm_ram_ptr(q->vm, q->used, VIRTQ_USED_BYTES(n))) {
		virtq_break(q,
			    "rings outside guest RAM (desc 0x%llx, driver 0x%llx, device 0x%llx)",
			    (unsigned long long)q->desc, (unsigned long long)q->avail,
			    (unsigned long long)q->used);
		return -EINVAL;
	}
	q->event_idx = event_idx;
	q->indirect = indirect;
	q->last_avail = 0;
	q->used_idx = 0;
	q->signalled_used = 0;
	q->signalled_used_valid = false;
	q->notify_enabled = true;
	q->ready = true;
	if (!virtq_store_used_flags(q, 0) || (event_idx && !virtq_store_avail_event(q, 0))) {
		q->ready = false;
		return -EINVAL;
	}
	return 0;
}

/* Reads descriptor i of the table at table (n entries, wholly in RAM when checked). */
static bool virtq_read_desc(struct virtq *q, uint64_t table, uint32_t i, struct virtq_desc *d)
{
	uint8_t raw[VIRTQ_DESC_SIZE];
	const void *p = vm_ram_ptr(q->vm, table + (uint64_t)VIRTQ_DESC_SIZE * i, sizeof(raw));

	if (!p) {
		virtq_break(q, "descriptor %u of the table at 0x%llx is outside guest RAM", i,
			    (unsigned long long)table);
		return false;
	}
	/* One copy: the checks below and the use that follows see the same values. */
	memcpy(raw, p, sizeof(raw));
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
	memcpy(&addr, raw, 8);
	memcpy(&len, raw + 8, 4);
	memcpy(&flags, raw + 12, 2);
	memcpy(&next, raw + 14, 2);
	d->addr = le64toh(addr);
	d->len = le32toh(len);
	d->flags = le16toh(flags);
	d->next = le16toh(next);
	return true;
}

/* Walks the chain at head into chain->segs; false when it breaks the queue. */
static bool virtq_walk(struct virtq *q, uint16_t head, unsigned max_segs, struct virtq_chain *chain)
{
	uint64_t table = q->desc;
	uint32_t table_n = q->size;
	uint32_t i = head;
	uint32_t visited = 0; /* in the current table: more than its entries means a loop */
	bool in_indirect = false;
	uint64_t out_len = 0, in_len = 0;
	unsigned n = 0, nout = 0;

	for (;;) {
		struct virtq_desc d;

		if (!virtq_read_desc(q, table, i, &d))
			return false;
		if (++visited > table_n) {
			if (in_indirect)
				virtq_break(q, "indirect descriptor chain from head %u loops",
					    head);
			else
				virtq_break(q,
					    "descriptor chain from head %u loops (longer than "
					    "the queue size %u)",
					    head, q->size);
			return false;
		}
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!q->indirect) {
				virtq_break(q, "indirect descriptor, but VIRTIO_F_INDIRECT_DESC "
					       "was not negotiated");
				return false;
			}
			if (in_indirect) {
				virtq_break(q, "indirect descriptor inside an indirect table");
				return false;
			}
			if (d.flags & VIRTQ_DESC_F_NEXT) {
				virtq_break(q, "indirect descriptor with the NEXT flag");
				return false;
			}
			if (d.len == 0 || d.len % VIRTQ_DESC_SIZE) {
				virtq_break(q,
					    "indirect table length %u is not a non-zero multiple "
					    "of 16",
					    d.len);
				return false;
			}
			if (!vm_ram_ptr(q->vm, d.addr, d.len)) {
				virtq_break(q,
					    "indirect table at 0x%llx (%u bytes) is outside "
					    "guest RAM",
					    (unsigned long long)d.addr, d.len);
				return false;
			}
			table = d.addr;
			table_n = d.len / VIRTQ_DESC_SIZE;
			i = 0;
			visited = 0;
			in_indirect = true;
			continue;
		}
		/* A buffer wholly in RAM (vm_ram_ptr checks addr + len without overflow). */
		if (d.len && !vm_ram_ptr(q->vm, d.addr, d.len)) {
			virtq_break(q, "buffer at 0x%llx (%u bytes) is outside guest RAM",
				    (unsigned long long)d.addr, d.len);
			return false;
		}
		if (n >= max_segs) {
			virtq_break(q, "descriptor chain from head %u has more than %u buffers",
				    head, max_segs);
			return false;
		}
		bool write = d.flags & VIRTQ_DESC_F_WRITE;
		if (write) {
			in_len += d.len;
		} else {
			if (n > nout) {
				virtq_break(q,
					    "readable buffer after a writable one in the chain "
					    "from head %u",
					    head);
				return false;
			}
			out_len += d.len;
			nout++;
		}
		if (in_len > UINT32_MAX || out_len > UINT32_MAX) {
			virtq_break(q, "buffer lengths of the chain from head %u overflow 32 bits",
				    head);
			return false;
		}
		chain->segs[n++] =
			(struct virtq_seg){ .addr = d.addr, .len = d.len, .write = write };
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= table_n) {
			virtq_break(q, "next descriptor %u is past the end of its table (%u)",
				    d.next, table_n);
			return false;
		}
		i = d.next;
	}
	chain->head = head;
	chain->nsegs = n;
	chain->nout = nout;
	chain->out_len = (uint32_t)out_len;
	chain->in_len = (uint32_t)in_len;
	return true;
}

int virtq_pop(struct virtq *q, struct virtq_seg *segs, unsigned max_segs, struct virtq_chain *chain)
{
	uint16_t avail;

	if (!q->ready || q->broken)
		return -EIO;
	if (max_segs > VIRTQ_MAX_SEGS)
		max_segs = VIRTQ_MAX_SEGS;
	if (!virtq_load_avail_idx(q, &avail))
		return -EIO;
	if (avail == q->last_avail) {
		if (!q->notify_enabled)
			return 0;
		/* Empty: make sure the driver notifies for the next chain. It may have added one
		 * after our load and before it sees avail_event, so look again after a fence. */
		if (q->event_idx && !virtq_store_avail_event(q, q->last_avail))
			return -EIO;
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (!virtq_load_avail_idx(q, &avail))
			return -EIO;
		if (avail == q->last_avail)
			return 0;
	}
	uint16_t pending = (uint16_t)(avail - q->last_avail);
	if (pending > q->size) {
		virtq_break(q, "avail index moved by %u, more than the queue size %u", pending,
			    q->size);
		return -EIO;
	}
	uint16_t *slot =
		virtq_ring_u16(q, q->avail + 4 + 2ULL * (q->last_avail & (q->size - 1)), false);
	if (!slot)
		return -EIO;
	/* Ordered after the avail->idx load (acquire). */
	uint16_t head = le16toh(__atomic_load_n(slot, __ATOMIC_RELAXED));
	if (head >= q->size) {
		virtq_break(q, "avail ring names descriptor %u, past the queue size %u", head,
			    q->size);
		return -EIO;
	}
	chain->segs = segs;
	if (!virtq_walk(q, head, max_segs, chain))
		return -EIO;
	q->last_avail++;
	if (q->event_idx && q->notify_enabled && !virtq_store_avail_event(q, q->last_avail))
		return -EIO;
	return 1;
}

int virtq_push(struct virtq *q, uint16_t head, uint32_t len)
{
	if (!q->ready || q->broken)
		return -EIO;
	if (head >= q->size)
		return -EINVAL;
	uint32_t elem[2] = { htole32(head), htole32(len) };
	uint64_t at = q->used + 4 + 8ULL * (q->used_idx & (q->size - 1));
	if (vm_guest_write(q->vm, at, elem, sizeof(elem)) != 0) {
		virtq_break(q, "used ring at 0x%llx is outside guest RAM", (unsigned long long)at);
		return -EIO;
	}
	uint16_t *idx = virtq_ring_u16(q, q->used + 2, true);
	if (!idx)
		return -EIO;
	q->used_idx++;
	/* Release: the element is visible before the index that publishes it. */
	__atomic_store_n(idx, htole16(q->used_idx), __ATOMIC_RELEASE);
	return 0;
}

bool virtq_should_notify(struct virtq *q)
{
	if (!q->ready || q->broken)
		return false;
	/* Our used->idx store before reading what the driver asked (see the top comment). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!q->event_idx) {
		uint16_t *flags = virtq_ring_u16(q, q->avail, false);
		return flags && !(le16toh(__atomic_load_n(flags, __ATOMIC_RELAXED)) &
				  VIRTQ_AVAIL_F_NO_INTERRUPT);
	}
	uint16_t *ev = virtq_ring_u16(q, q->avail + 4 + 2ULL * q->size, false);
	if (!ev)
		return false;
	uint16_t used_event = le16toh(__atomic_load_n(ev, __ATOMIC_RELAXED));
	uint16_t old = q->signalled_used;
	bool valid = q->signalled_used_valid;
	q->signalled_used = q->used_idx;
	q->signalled_used_valid = true;
	return !valid || virtq_need_event(used_event, q->used_idx, old);
}

void virtq_disable_notify(struct virtq *q)
{
	if (!q->ready || q->broken || !q->notify_enabled)
		return;
	q->notify_enabled = false;
	/* With EVENT_IDX, avail_event simply stays behind: at most one more notification. */
	if (!q->event_idx)
		virtq_store_used_flags(q, VIRTQ_USED_F_NO_NOTIFY);
}

bool virtq_enable_notify(struct virtq *q)
{
	uint16_t avail;

	if (!q->ready || q->broken)
		return false;
	q->notify_enabled = true;
	if (q->event_idx ? !virtq_store_avail_event(q, q->last_avail)
			 : !virtq_store_used_flags(q, 0))
		return false;
	/* Our store before re-reading avail->idx (see the top comment). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!virtq_load_avail_idx(q, &avail))
		return false;
	return avail != q->last_avail;
}

ssize_t virtq_chain_read(struct virtq *q, const struct virtq_chain *chain, size_t off, void *buf,
			 size_t len)
{
	uint8_t *dst = buf;
	size_t done = 0;

	for (unsigned i = 0; i < chain->nout && done < len; i++) {
		const struct virtq_seg *s = &chain->segs[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		size_t n = s->len - off;
		if (n > len - done)
			n = len - done;
		if (vm_guest_read(q->vm, s->addr + off, dst + done, n) != 0) {
			virtq_break(q, "buffer at 0x%llx is outside guest RAM",
				    (unsigned long long)s->addr);
			return -EIO;
		}
		done += n;
		off = 0;
	}
	return (ssize_t)done;
}

ssize_t virtq_chain_write(struct virtq *q, const struct virtq_chain *chain, size_t off,
			  const void *buf, size_t len)
{
	const uint8_t *src = buf;
	size_t done = 0;

	for (unsigned i = chain->nout; i < chain->nsegs && done < len; i++) {
		const struct virtq_seg *s = &chain->segs[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		size_t n = s->len - off;
		if (n > len - done)
			n = len - done;
		if (vm_guest_write(q->vm, s->addr + off, src + done, n) != 0) {
			virtq_break(q, "buffer at 0x%llx is outside guest RAM",
				    (unsigned long long)s->addr);
			return -EIO;
		}
		done += n;
		off = 0;
	}
	return (ssize_t)done;
}

void virtq_save(const struct virtq *q, struct sbuf *b)
{
	sbuf_u16(b, q->size);
	sbuf_u64(b, q->desc);
	sbuf_u64(b, q->avail);
	sbuf_u64(b, q->used);
	sbuf_bool(b, q->ready);
	sbuf_bool(b, q->broken);
	sbuf_bool(b, q->event_idx);
	sbuf_bool(b, q->indirect);
	sbuf_bool(b, q->notify_enabled);
	sbuf_u16(b, q->last_avail);
	sbuf_u16(b, q->used_idx);
	sbuf_u16(b, q->signalled_used);
	sbuf_bool(b, q->signalled_used_valid);
}

int virtq_load(struct virtq *q, uint16_t max_size, struct sreader *r)
{
	struct virtq t = *q;

	t.size = sreader_u16(r);
	t.desc = sreader_u64(r);
	t.avail = sreader_u64(r);
	t.used = sreader_u64(r);
	t.ready = sreader_bool(r);
	t.broken = sreader_bool(r);
	t.event_idx = sreader_bool(r);
	t.indirect = sreader_bool(r);
	t.notify_enabled = sreader_bool(r);
	t.last_avail = sreader_u16(r);
	t.used_idx = sreader_u16(r);
	t.signalled_used = sreader_u16(r);
	t.signalled_used_valid = sreader_bool(r);
	if (!sreader_ok(r))
		return -EINVAL;
	/* A ready queue must pass the checks virtq_enable made on the source. */
	if (t.ready) {
		uint16_t n = t.size;
		if (n == 0 || n > max_size || (n & (n - 1)) || (t.desc & 15) || (t.avail & 1) ||
		    (t.used & 3) || !vm_ram_ptr(q->vm, t.desc, VIRTQ_DESC_BYTES(n)) ||
		    !vm_ram_ptr(q->vm, t.avail, VIRTQ_AVAIL_BYTES(n)) ||
		    !vm_ram_ptr(q->vm, t.used, VIRTQ_USED_BYTES(n))) {
			sreader_fail(r, "virtqueue: bad ring layout");
			return -EINVAL;
		}
		/* The device cannot hold more requests than the ring has entries. */
		if ((uint16_t)(t.last_avail - t.used_idx) > n) {
			sreader_fail(r, "virtqueue: more requests in flight than the ring holds");
			return -EINVAL;
		}
	}
	*q = t;
	return 0;
}
