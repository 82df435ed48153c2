/* Split virtqueues (virtio 1.2, section 2.7 "Split Virtqueues"), the device side: take the
 * chains the driver makes available, give back used buffers, decide when to interrupt.
 * With VIRTIO_F_INDIRECT_DESC (indirect descriptor tables) and VIRTIO_F_EVENT_IDX
 * (used_event / avail_event suppression).
 *
 * Guest addresses only: the queue keeps the rings' guest physical addresses and indices,
 * never host pointers, and translates every access with vm_ram_ptr at the moment it makes
 * it; every address and length is checked to lie wholly in guest RAM. (This also makes the
 * state plain data for snapshots and migration.)
 *
 * A driver that breaks the rules (a descriptor chain that loops or is longer than allowed,
 * an indirect table inside another, a buffer outside RAM, lengths that overflow, an avail
 * index that jumps by more than the queue size, ...) breaks the queue: it stops, touches
 * nothing more, and reports once through on_error (the device then sets
 * DEVICE_NEEDS_RESET). Nothing a guest writes can crash or hang the VMM or reach host
 * memory outside guest RAM.
 *
 * Threads: one thread at a time per queue (the device's, under its lock). The driver runs
 * on vCPU threads meanwhile; the barriers between the two are in virtqueue.c. */
#ifndef MABO_VIRTIO_VIRTQUEUE_H
#define MABO_VIRTIO_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct vm;
struct virtq;
struct sbuf;
struct sreader;

/* Descriptor flags. */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
/* avail->flags: the driver asks for no used-buffer notifications (without EVENT_IDX). */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
/* used->flags: the device asks for no available-buffer notifications (without EVENT_IDX). */
#define VIRTQ_USED_F_NO_NOTIFY 1

/* Largest queue size the spec allows (sizes are powers of 2). */
#define VIRTQ_SIZE_MAX 32768
/* The most segments a chain may have, indirect tables included (as QEMU's
 * VIRTQUEUE_MAX_SIZE): a device passes at most this to virtq_pop. */
#define VIRTQ_MAX_SEGS 1024

/* Ring layout (bytes), for a queue of size n. */
#define VIRTQ_DESC_SIZE 16
#define VIRTQ_DESC_BYTES(n) (16ULL * (n))
#define VIRTQ_AVAIL_BYTES(n) (6ULL + 2ULL * (n)) /* flags, idx, ring[n], used_event */
#define VIRTQ_USED_BYTES(n) (6ULL + 8ULL * (n))	 /* flags, idx, ring[n], avail_event */

/* One buffer of a chain: guest physical address and length, device-writable or not. */
struct virtq_seg {
	uint64_t addr;
	uint32_t len;
	bool write;
};

/* A chain taken from the avail ring. Readable segments come first (segs[0 .. nout-1]), then
 * writable ones (segs[nout .. nsegs-1]). */
struct virtq_chain {
	uint16_t head; /* the id to give back with virtq_push */
	unsigned nsegs;
	unsigned nout;		/* readable segments */
	uint32_t out_len;	/* bytes the device can read */
	uint32_t in_len;	/* bytes the device can write */
	struct virtq_seg *segs; /* the caller's array */
};

/* Called once when the queue breaks; why names the fault ("descriptor chain loops"). */
typedef void (*virtq_error_fn)(void *opaque, const struct virtq *q, const char *why);

struct virtq {
	struct vm *vm;
	unsigned index; /* queue number within its device, for messages */
	virtq_error_fn on_error;
	void *error_opaque;

	/* Set by the driver through the transport while the queue is not ready. */
	uint16_t size;	/* entries; a power of 2 */
	uint64_t desc;	/* descriptor table */
	uint64_t avail; /* driver area */
	uint64_t used;	/* device area */

	/* Device state. */
	bool ready;
	bool broken;
	bool event_idx;		 /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;		 /* VIRTIO_F_INDIRECT_DESC negotiated */
	bool notify_enabled;	 /* the device wants available-buffer notifications */
	uint16_t last_avail;	 /* next avail ring index to take */
	uint16_t used_idx;	 /* next used ring index to fill (our copy of used->idx) */
	uint16_t signalled_used; /* used_idx at the last should-notify decision */
	bool signalled_used_valid;
};

/* Sets q up (not ready) for queue index of a device on vm; on_error may be NULL. */
void virtq_init(struct virtq *q, struct vm *vm, unsigned index, virtq_error_fn on_error,
		void *error_opaque);

/* Forgets the driver's configuration and all state (device reset); keeps vm, index and
 * on_error. */
void virtq_reset(struct virtq *q);

/* The driver made the queue ready (QueueReady = 1) with the features it negotiated: checks
 * the size (a power of 2, 1 .. max_size) and that each ring lies wholly in RAM with its
 * alignment (desc 16, avail 2, used 4). 0, or -EINVAL after breaking the queue. */
int virtq_enable(struct virtq *q, uint16_t max_size, bool event_idx, bool indirect)
	__attribute__((warn_unused_result));

/* Takes the next available chain into segs (room for max_segs, at most VIRTQ_MAX_SEGS).
 * 1: *chain filled; 0: nothing available (and, when notifications are enabled, the driver
 * has been told to notify for the next buffer); -EIO: the queue is broken (now or before),
 * or not ready. A chain with more than max_segs segments breaks the queue: a device sizes
 * max_segs to what it advertises. */
int virtq_pop(struct virtq *q, struct virtq_seg *segs, unsigned max_segs, struct virtq_chain *chain)
	__attribute__((warn_unused_result));

/* Gives chain head back to the driver with len bytes written into it. 0, or -EIO when the
 * queue is broken or not ready (or -EINVAL for a head out of range: a device bug). */
int virtq_push(struct virtq *q, uint16_t head, uint32_t len);

/* After pushing: true when the driver wants a used-buffer notification now (VIRTQ_AVAIL_F_
 * NO_INTERRUPT, or with EVENT_IDX used_event and vring_need_event). Call it once per batch
 * of pushes; it records the used index it decided at. */
bool virtq_should_notify(struct virtq *q);

/* Asks the driver not to notify while the device is busy taking chains (a hint). */
void virtq_disable_notify(struct virtq *q);

/* Asks for notifications again; true when chains arrived meanwhile that the driver will
 * not notify about, so the device must go on taking them. Typical device loop:
 *   do { virtq_disable_notify(q); while (virtq_pop(...) > 0) ...; } while (virtq_enable_notify(q));
 */
bool virtq_enable_notify(struct virtq *q);

/* Copies up to len bytes of the chain's readable data, from byte off on, into buf: the
 * number copied, or -EIO (the queue breaks) if a segment is no longer in RAM. */
ssize_t virtq_chain_read(struct virtq *q, const struct virtq_chain *chain, size_t off, void *buf,
			 size_t len);

/* Copies up to len bytes from buf into the chain's writable buffers, from byte off of the
 * writable part on (through vm_guest_write): the number copied, or -EIO. */
ssize_t virtq_chain_write(struct virtq *q, const struct virtq_chain *chain, size_t off,
			  const void *buf, size_t len);

/* virtio's vring_need_event: true when moving an index from old to new_idx passes
 * event_idx (the other side asked to hear when event_idx + 1 is reached). */
static inline bool virtq_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event_idx - 1) < (uint16_t)(new_idx - old);
}

/* Saved state: the driver's ring addresses and the device's indices (never host
 * pointers). Load checks a ready queue's rings as virtq_enable does and writes nothing
 * into guest memory (which is restored as it was). 0 or -EINVAL (r->err says why). */
void virtq_save(const struct virtq *q, struct sbuf *b);
int virtq_load(struct virtq *q, uint16_t max_size, struct sreader *r)
	__attribute__((warn_unused_result));

#endif
