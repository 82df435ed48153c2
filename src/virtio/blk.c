/* virtio-blk (device id 2; virtio 1.2, section 5.2 "Block Device"): one request queue whose
 * requests go to a block backend (block/block.h), several in flight at once.
 *
 * A request is a readable header (type, sector), data (readable for writes, writable for
 * reads), and a writable status byte, the chain's last. The device checks it (lengths in
 * whole sectors, the range inside the disk, writes to a read-only disk) and answers a bad
 * one with VIRTIO_BLK_S_IOERR or S_UNSUPP; only a chain without room for the header or the
 * status breaks the device (DEVICE_NEEDS_RESET).
 *
 * Data goes through a bounce buffer: writes are copied out of guest RAM when the request is
 * taken, reads into guest RAM when it completes, on the event loop under vdev->lock. So the
 * backend never touches guest memory, and a reset needs no waiting: it bumps a generation
 * number, and requests still in flight from before are dropped when they complete (their
 * writes may still reach the disk, as if they had finished just before the reset), never
 * pushed onto the queues the driver set up afresh. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "core/config.h"
#include "core/log.h"
#include "core/vm.h"
#include "virtio/virtio.h"

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status values (5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_WZ_F_UNMAP 1

#define BLK_QUEUE_MAX 256
/* Data segments per request (config seg_max); a chain adds the header and the status. */
#define BLK_SEG_MAX (BLK_QUEUE_MAX - 2)
#define BLK_MAX_SEGS (BLK_SEG_MAX + 2)
/* Bytes of data per request at most (a guest cannot make the VMM allocate more). */
#define BLK_MAX_REQUEST (32u << 20)
/* Bounce-buffer bytes in flight at most: past this the device takes no more chains until
 * requests complete (chains may share guest buffers, so guest RAM does not bound it). */
#define BLK_MAX_INFLIGHT_BYTES (64u << 20)
/* Discard / write-zeroes limits (config): one range per request. */
#define BLK_MAX_DISCARD_SECTORS (1u << 22)
#define BLK_DISCARD_ALIGNMENT 8 /* sectors: 4 KiB, the host's page and file system block */

/* Configuration space (struct virtio_blk_config), the fields up to write_zeroes_may_unmap. */
#define BLK_CFG_CAPACITY 0
#define BLK_CFG_SEG_MAX 12
#define BLK_CFG_BLK_SIZE 20
#define BLK_CFG_MAX_DISCARD_SECTORS 36
#define BLK_CFG_MAX_DISCARD_SEG 40
#define BLK_CFG_DISCARD_ALIGNMENT 44
#define BLK_CFG_MAX_WZ_SECTORS 48
#define BLK_CFG_MAX_WZ_SEG 52
#define BLK_CFG_WZ_MAY_UNMAP 56
#define BLK_CONFIG_SIZE 60

#define BLK_HDR_SIZE 16
#define BLK_ID_BYTES 20

struct blk_dev;

/* A request in flight. */
struct blk_req {
	struct block_request breq;
	struct blk_dev *blk;
	struct blk_req *prev, *next; /* blk->inflight (under vdev->lock) */
	uint64_t gen;		     /* blk->gen when taken */
	uint16_t head;
	uint32_t type;
	uint32_t status_off; /* of the status byte in the writable part */
	struct virtq_chain chain;
	struct virtq_seg segs[];
};

struct blk_dev {
	struct virtio_dev *vdev;
	struct block_backend *bb;
	uint64_t capacity; /* sectors */
	uint64_t gen;	   /* bumped by each reset (under vdev->lock) */
	struct blk_req *inflight;
	uint64_t inflight_bytes; /* bounce buffers of inflight (under vdev->lock) */
	bool throttled;		 /* stopped taking chains at BLK_MAX_INFLIGHT_BYTES */
	unsigned errors;	 /* I/O errors logged */
	char serial[BLK_ID_BYTES];
	uint8_t config[BLK_CONFIG_SIZE];

	/* Quiesced for a snapshot or a migration (under vdev->lock): no new chains; then a
	 * flush of the backend (qflush) once nothing is in flight. */
	bool quiesced;
	int qflush_state; /* 0 not sent, 1 in flight, 2 done */
	struct block_request qflush;
};

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static int blk_create(struct virtio_dev *vdev, const struct vm_device_config *cfg)
{
	const struct vm_disk_config *disk = &cfg->disk;
	struct blk_dev *b = calloc(1, sizeof(*b));
	int err;

	if (!b)
		return -ENOMEM;
	const struct block_options opts = {
		.readonly = disk->readonly,
		.reconnect_timeout = disk->reconnect_timeout,
		.nolock = disk->nolock,
		/* A migration's destination gets the disk at the hand-over (blk_claim);
		 * --dump-dtb only describes the machine, beside a VM that may run on it. (A
		 * VM built without a configuration, as the tests do, locks at once.) */
		.lock_later = vdev->vm->cfg &&
			      (vdev->vm->cfg->incoming != NULL || vdev->vm->cfg->dump_dtb != NULL),
	};
	err = block_backend_open_opts(disk->path, &opts, vdev->vm->loop, &b->bb);
	if (err) {
		free(b);
		return err;
	}
	b->vdev = vdev;
	b->capacity = b->bb->size / BLOCK_SECTOR_SIZE;
	/* The serial: id=, or the file's name (its last 20 characters, the distinctive end). */
	const char *serial = disk->id;
	if (!*serial) {
		const char *slash = strrchr(disk->path, '/');
		serial = slash ? slash + 1 : disk->path;
		size_t len = strlen(serial);
		if (len > BLK_ID_BYTES)
			serial += len - BLK_ID_BYTES;
	}
	size_t n = strlen(serial);
	/* Zero-padded, not terminated when all 20 bytes are used (5.2.6). */
	memcpy(b->serial, serial, n < BLK_ID_BYTES ? n : BLK_ID_BYTES);

	if (b->bb->readonly)
		vdev->host_features = (vdev->host_features | VIRTIO_FEATURE(VIRTIO_BLK_F_RO)) &
				      ~(VIRTIO_FEATURE(VIRTIO_BLK_F_DISCARD) |
					VIRTIO_FEATURE(VIRTIO_BLK_F_WRITE_ZEROES));
	put_le64(b->config + BLK_CFG_CAPACITY, b->capacity);
	put_le32(b->config + BLK_CFG_SEG_MAX, BLK_SEG_MAX);
	put_le32(b->config + BLK_CFG_BLK_SIZE, BLOCK_SECTOR_SIZE);
	put_le32(b->config + BLK_CFG_MAX_DISCARD_SECTORS, BLK_MAX_DISCARD_SECTORS);
	put_le32(b->config + BLK_CFG_MAX_DISCARD_SEG, 1);
	put_le32(b->config + BLK_CFG_DISCARD_ALIGNMENT, BLK_DISCARD_ALIGNMENT);
	put_le32(b->config + BLK_CFG_MAX_WZ_SECTORS, BLK_MAX_DISCARD_SECTORS);
	put_le32(b->config + BLK_CFG_MAX_WZ_SEG, 1);
	b->config[BLK_CFG_WZ_MAY_UNMAP] = 1;
	vdev->priv = b;
	return 0;
}

static void blk_req_free(struct blk_req *r)
{
	free(r->breq.buf);
	free(r);
}

static void blk_destroy(struct virtio_dev *vdev)
{
	struct blk_dev *b = vdev->priv;

	if (!b)
		return;
	/* After the backend is closed no completion runs: what is left in flight is ours. */
	block_backend_close(b->bb);
	while (b->inflight) {
		struct blk_req *r = b->inflight;
		b->inflight = r->next;
		blk_req_free(r);
	}
	free(b);
	vdev->priv = NULL;
}

static void blk_config_read(struct virtio_dev *vdev, uint32_t off, void *buf, uint32_t len)
{
	struct blk_dev *b = vdev->priv;
	memcpy(buf, b->config + off, len);
}

static void blk_reset(struct virtio_dev *vdev)
{
	struct blk_dev *b = vdev->priv;
	b->gen++; /* requests in flight are dropped when they complete */
}

/* Writes the status byte at status_off and gives the chain back with used bytes written
 * (the status included). 0, or -EIO when the queue broke. */
static int blk_finish(struct virtq *q, const struct virtq_chain *c, uint32_t status_off,
		      uint8_t status, uint32_t used)
{
	if (virtq_chain_write(q, c, status_off, &status, 1) != 1)
		return -EIO;
	return virtq_push(q, c->head, used);
}

static void blk_log_error(struct blk_dev *b, const struct blk_req *r, int err)
{
	if (b->errors >= 10)
		return;
	b->errors++;
	log_warn("%s: request type %u at byte %llu: %s%s", b->vdev->name, r->type,
		 (unsigned long long)r->breq.offset, strerror(-err),
		 b->errors == 10 ? " (no more I/O errors logged)" : "");
}

/* A backend request finished: on the event loop, without vdev->lock. */
static void blk_done(struct block_request *breq)
{
	struct blk_req *r = (struct blk_req *)((char *)breq - offsetof(struct blk_req, breq));
	struct blk_dev *b = r->blk;
	struct virtio_dev *vdev = b->vdev;
	bool resume = false;

	pthread_mutex_lock(&vdev->lock);
	if (breq->buf)
		b->inflight_bytes -= breq->len;
	if (b->throttled && b->inflight_bytes < BLK_MAX_INFLIGHT_BYTES) {
		b->throttled = false;
		resume = true;
	}
	if (r->prev)
		r->prev->next = r->next;
	else
		b->inflight = r->next;
	if (r->next)
		r->next->prev = r->prev;
	/* From before a reset: the driver has forgotten it. */
	if (r->gen == b->gen) {
		struct virtq *q = virtio_dev_queue(vdev, 0);
		uint8_t status = VIRTIO_BLK_S_OK;
		uint32_t used = 1;
		int err = 0;
		if (breq->result) {
			blk_log_error(b, r, breq->result);
			status = VIRTIO_BLK_S_IOERR;
		} else if (r->type == VIRTIO_BLK_T_IN) {
			if (virtq_chain_write(q, &r->chain, 0, breq->buf, breq->len) !=
			    (ssize_t)breq->len)
				err = -EIO;
			used += (uint32_t)breq->len;
		}
		if (!err && blk_finish(q, &r->chain, r->status_off, status, used) == 0)
			virtio_dev_signal_used(vdev, 0);
	}
	pthread_mutex_unlock(&vdev->lock);
	blk_req_free(r);
	if (resume)
		virtio_dev_kick(vdev, 0);
}

/* The sector range [sector, sector + n) lies on the disk. */
static bool blk_range_ok(const struct blk_dev *b, uint64_t sector, uint64_t n)
{
	return sector <= b->capacity && n <= b->capacity - sector;
}

/* Serves one chain. 0 (answered now or submitted), or -EIO when the device cannot go on.
 * *pushed is set when a chain was given back now. */
static int blk_handle(struct blk_dev *b, struct virtq *q, const struct virtq_chain *c, bool *pushed)
{
	struct virtio_dev *vdev = b->vdev;
	uint8_t hdr[BLK_HDR_SIZE];
	uint8_t status = VIRTIO_BLK_S_OK;
	uint32_t used = 1;

	if (c->out_len < BLK_HDR_SIZE || c->in_len < 1) {
		virtio_dev_fail(vdev, "request without a header or a status byte");
		return -EIO;
	}
	if (virtq_chain_read(q, c, 0, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr))
		return -EIO;
	uint32_t type = get_le32(hdr);
	uint64_t sector = get_le64(hdr + 8);
	uint32_t status_off = c->in_len - 1;
	enum block_op op;
	uint64_t offset = 0, len = 0;
	bool unmap = false;

	switch (type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		len = type == VIRTIO_BLK_T_IN ? c->in_len - 1u : c->out_len - BLK_HDR_SIZE;
		op = type == VIRTIO_BLK_T_IN ? BLOCK_OP_READ : BLOCK_OP_WRITE;
		if ((type == VIRTIO_BLK_T_OUT && b->bb->readonly) || len % BLOCK_SECTOR_SIZE ||
		    len > BLK_MAX_REQUEST || !blk_range_ok(b, sector, len / BLOCK_SECTOR_SIZE))
			status = VIRTIO_BLK_S_IOERR;
		offset = sector * BLOCK_SECTOR_SIZE;
		break;
	case VIRTIO_BLK_T_FLUSH: op = BLOCK_OP_FLUSH; break;
	case VIRTIO_BLK_T_GET_ID: {
		uint32_t n = c->in_len - 1 < BLK_ID_BYTES ? c->in_len - 1 : BLK_ID_BYTES;
		if (virtq_chain_write(q, c, 0, b->serial, n) != (ssize_t)n)
			return -EIO;
		if (blk_finish(q, c, status_off, VIRTIO_BLK_S_OK, n + 1))
			return -EIO;
		*pushed = true;
		return 0;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		bool discard = type == VIRTIO_BLK_T_DISCARD;
		uint8_t seg[16];
		op = discard ? BLOCK_OP_DISCARD : BLOCK_OP_WRITE_ZEROES;
		if (!virtio_dev_has_feature(vdev, discard ? VIRTIO_BLK_F_DISCARD
							  : VIRTIO_BLK_F_WRITE_ZEROES) ||
		    c->out_len - BLK_HDR_SIZE != sizeof(seg)) {
			status = VIRTIO_BLK_S_UNSUPP; /* one range per request (max_*_seg) */
			break;
		}
		if (virtq_chain_read(q, c, BLK_HDR_SIZE, seg, sizeof(seg)) != (ssize_t)sizeof(seg))
			return -EIO;
		uint64_t start = get_le64(seg);
		uint32_t n = get_le32(seg + 8), flags = get_le32(seg + 12);
		if (flags & ~(discard ? 0u : VIRTIO_BLK_WZ_F_UNMAP)) {
			status = VIRTIO_BLK_S_UNSUPP;
			break;
		}
		if (b->bb->readonly || n > BLK_MAX_DISCARD_SECTORS || !blk_range_ok(b, start, n)) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		offset = start * BLOCK_SECTOR_SIZE;
		len = (uint64_t)n * BLOCK_SECTOR_SIZE;
		unmap = flags & VIRTIO_BLK_WZ_F_UNMAP;
		break;
	}
	default: status = VIRTIO_BLK_S_UNSUPP; break;
	}
	if (status != VIRTIO_BLK_S_OK) {
		if (blk_finish(q, c, status_off, status, used))
			return -EIO;
		*pushed = true;
		return 0;
	}

	struct blk_req *r = calloc(1, sizeof(*r) + c->nsegs * sizeof(r->segs[0]));
	if (!r)
		goto nomem;
	r->blk = b;
	r->gen = b->gen;
	r->head = c->head;
	r->type = type;
	r->status_off = status_off;
	r->chain = *c;
	r->chain.segs = r->segs;
	memcpy(r->segs, c->segs, c->nsegs * sizeof(r->segs[0]));
	r->breq = (struct block_request){
		.op = op, .offset = offset, .len = len, .unmap = unmap, .done = blk_done
	};
	if (op == BLOCK_OP_READ || op == BLOCK_OP_WRITE) {
		r->breq.buf = malloc(len ? len : 1);
		if (!r->breq.buf) {
			free(r);
			goto nomem;
		}
		if (op == BLOCK_OP_WRITE &&
		    virtq_chain_read(q, c, BLK_HDR_SIZE, r->breq.buf, len) != (ssize_t)len) {
			blk_req_free(r);
			return -EIO;
		}
	}
	int err = block_backend_submit(b->bb, &r->breq);
	if (err) {
		blk_log_error(b, r, err);
		blk_req_free(r);
		if (blk_finish(q, c, status_off, VIRTIO_BLK_S_IOERR, 1))
			return -EIO;
		*pushed = true;
		return 0;
	}
	if (r->breq.buf)
		b->inflight_bytes += len;
	r->next = b->inflight;
	if (r->next)
		r->next->prev = r;
	b->inflight = r;
	return 0;

nomem:
	if (blk_finish(q, c, status_off, VIRTIO_BLK_S_IOERR, 1))
		return -EIO;
	*pushed = true;
	return 0;
}

static void blk_queue_notify(struct virtio_dev *vdev, unsigned qi)
{
	struct blk_dev *b = vdev->priv;
	struct virtq *q = virtio_dev_queue(vdev, qi);
	struct virtq_seg segs[BLK_MAX_SEGS];
	struct virtq_chain c;
	bool pushed = false;
	int r;

	if (b->quiesced)
		return; /* unquiescing looks at the queue again */

	do {
		virtq_disable_notify(q);
		while ((r = virtq_pop(q, segs, BLK_MAX_SEGS, &c)) > 0) {
			if (blk_handle(b, q, &c, &pushed) < 0) {
				r = -EIO;
				break;
			}
			if (b->inflight_bytes >= BLK_MAX_INFLIGHT_BYTES) {
				/* A completion kicks the queue again (blk_done). */
				b->throttled = true;
				break;
			}
		}
		if (r < 0 || b->throttled)
			break;
	} while (virtq_enable_notify(q));
	if (pushed)
		virtio_dev_signal_used(vdev, qi);
}

/* The quiescing flush finished: on the event loop, without vdev->lock. */
static void blk_qflush_done(struct block_request *breq)
{
	struct blk_dev *b = breq->opaque;

	pthread_mutex_lock(&b->vdev->lock);
	if (breq->result) {
		log_warn("%s: flush before saving state: %s (retrying)", b->vdev->name,
			 strerror(-breq->result));
		b->qflush_state = 0;
	} else {
		b->qflush_state = 2;
	}
	pthread_mutex_unlock(&b->vdev->lock);
}

static unsigned blk_quiesce(struct virtio_dev *vdev)
{
	struct blk_dev *b = vdev->priv;
	unsigned busy = 0;

	b->quiesced = true;
	for (struct blk_req *r = b->inflight; r; r = r->next)
		busy++;
	if (busy)
		return busy;
	if (b->qflush_state == 2 || b->bb->readonly)
		return 0;
	if (b->qflush_state == 0) {
		memset(&b->qflush, 0, sizeof(b->qflush));
		b->qflush.op = BLOCK_OP_FLUSH;
		b->qflush.done = blk_qflush_done;
		b->qflush.opaque = b;
		if (block_backend_submit(b->bb, &b->qflush) == 0)
			b->qflush_state = 1;
	}
	return 1;
}

static void blk_unquiesce(struct virtio_dev *vdev)
{
	struct blk_dev *b = vdev->priv;

	b->quiesced = false;
	if (b->qflush_state == 2)
		b->qflush_state = 0;
}

static int blk_claim(struct virtio_dev *vdev, bool take)
{
	struct blk_dev *b = vdev->priv;
	return block_backend_lock(b->bb, take);
}

const struct virtio_device_ops virtio_blk_ops = {
	.name = "virtio-blk",
	.device_id = VIRTIO_ID_BLOCK,
	.features = VIRTIO_FEATURE(VIRTIO_BLK_F_SEG_MAX) | VIRTIO_FEATURE(VIRTIO_BLK_F_BLK_SIZE) |
		    VIRTIO_FEATURE(VIRTIO_BLK_F_FLUSH) | VIRTIO_FEATURE(VIRTIO_BLK_F_DISCARD) |
		    VIRTIO_FEATURE(VIRTIO_BLK_F_WRITE_ZEROES),
	.num_queues = 1,
	.queue_max = BLK_QUEUE_MAX,
	.config_size = BLK_CONFIG_SIZE,
	.create = blk_create,
	.destroy = blk_destroy,
	.config_read = blk_config_read,
	.queue_notify = blk_queue_notify,
	.reset = blk_reset,
	.quiesce = blk_quiesce,
	.unquiesce = blk_unquiesce,
	.claim = blk_claim,
};
