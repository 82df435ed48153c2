/* Block backends: where a disk's bytes live (a local file, or an export of an NBD server),
 * apart from the device that shows them to the guest (virtio-blk knows virtqueues, not files).
 *
 * A backend type is a const struct block_backend_ops registered by URI scheme ("file",
 * "nbd", "nbd+unix"; a bare path means "file"). block_backend_open gives a struct
 * block_backend with the disk's size and read-only flag; requests are submitted
 * asynchronously, several at once, and each completes by a call of its done callback on
 * the VM's event-loop thread (never on a vCPU thread, never inside submit). A backend
 * does its I/O on its own threads (or sockets), so a slow disk never stalls a vCPU.
 *
 * Requests carry plain host buffers: a device copies guest data in and out itself, so a
 * backend never sees guest addresses. */
#ifndef MABO_BLOCK_BLOCK_H
#define MABO_BLOCK_BLOCK_H

#include <stdbool.h>
#include <stdint.h>

struct event_loop;
struct block_backend;

#define BLOCK_SECTOR_SIZE 512

enum block_op {
	BLOCK_OP_READ,	       /* len bytes at offset into buf */
	BLOCK_OP_WRITE,	       /* len bytes from buf to offset */
	BLOCK_OP_FLUSH,	       /* make completed writes durable (offset, len unused) */
	BLOCK_OP_DISCARD,      /* the range's contents may be dropped (a hint) */
	BLOCK_OP_WRITE_ZEROES, /* the range reads as zeros afterwards */
};

struct block_request;
/* Completion, on the event-loop thread: req->result is 0 or -errno. */
typedef void (*block_done_fn)(struct block_request *req);

/* One request; owned by the submitter, which must keep it alive until done is called (or
 * the backend is closed). */
struct block_request {
	enum block_op op;
	uint64_t offset; /* bytes */
	uint64_t len;	 /* bytes */
	void *buf;	 /* READ/WRITE */
	bool unmap;	 /* WRITE_ZEROES: the backend may deallocate the range */
	block_done_fn done;
	void *opaque;		    /* the submitter's */
	int result;		    /* set by the backend before done */
	struct block_request *next; /* the backend's, while in flight */
};

/* How a disk is opened. */
struct block_options {
	bool readonly; /* refuse writes */
	/* Network backends: seconds to keep retrying a lost server, with the requests
	 * waiting, before they fail with -EIO. */
	unsigned reconnect_timeout;
	/* Local files: no lock at all (locking=off), for storage that arbitrates its own
	 * writers. Otherwise the file is locked the way QEMU locks its images (see
	 * block_backend_lock), so that two VMMs, or a VMM and QEMU, never both write it. */
	bool nolock;
	/* Open without the lock; block_backend_lock takes it later (a migration's
	 * destination, which gets the disk at the hand-over). */
	bool lock_later;
};

/* reconnect_timeout when none is given. */
#define BLOCK_RECONNECT_TIMEOUT_DEFAULT 30

/* A backend type. Never written at run time. */
struct block_backend_ops {
	const char *scheme; /* "file" */
	/* The backend's open gets the whole URI ("nbd://host/export"), not just the part
	 * after "scheme:". */
	bool whole_uri;
	/* Opens uri (the part after "scheme:", a bare path, or the whole URI) with
	 * completions delivered on loop. Fills bb->size, bb->readonly, bb->priv. 0 or -errno
	 * after logging one line that names the disk. */
	int (*open)(struct block_backend *bb, const char *uri, const struct block_options *opts,
		    struct event_loop *loop);
	/* Queues req; 0 (done will be called later) or -errno (it will not). */
	int (*submit)(struct block_backend *bb, struct block_request *req);
	/* Waits for requests in flight to finish, without calling their done callbacks, and
	 * frees bb->priv. Not from the event-loop thread. */
	void (*close)(struct block_backend *bb);
	/* Takes (take) or drops the lock that keeps other openers out. NULL: a backend
	 * whose server arbitrates (NBD). 0, or -errno after logging one line naming the
	 * disk (-EBUSY: another process holds it). */
	int (*lock)(struct block_backend *bb, bool take);
};

struct block_backend {
	const struct block_backend_ops *ops;
	uint64_t size; /* bytes, a multiple of BLOCK_SECTOR_SIZE */
	bool readonly;
	void *priv; /* the backend's state */
};

/* Opens the disk named by uri ("file:/path", or a path) with the backend its scheme
 * names. 0 or -errno (after logging one line); *out is freed with block_backend_close. */
int block_backend_open(const char *uri, bool readonly, struct event_loop *loop,
		       struct block_backend **out) __attribute__((warn_unused_result));

/* block_backend_open with every option. */
int block_backend_open_opts(const char *uri, const struct block_options *opts,
			    struct event_loop *loop, struct block_backend **out)
	__attribute__((warn_unused_result));

/* Submits req (see block_backend_ops.submit). Writes and write-zeroes to a read-only disk,
 * and ranges beyond the end, fail here with -EROFS / -EINVAL. */
int block_backend_submit(struct block_backend *bb, struct block_request *req)
	__attribute__((warn_unused_result));

/* Takes or drops bb's lock: a writable disk keeps every other writer and every reader that
 * wants a stable disk out; a read-only one keeps writers out. 0 for backends without locks
 * and for disks opened with nolock. -EBUSY (after logging one line naming the disk) when
 * another process holds a conflicting lock. */
int block_backend_lock(struct block_backend *bb, bool take) __attribute__((warn_unused_result));

/* Waits for requests in flight (their done callbacks are not called) and frees bb. NULL is
 * fine. Not from the event-loop thread. */
void block_backend_close(struct block_backend *bb);

/* ---- Backend types ---- */
extern const struct block_backend_ops block_file_ops;	  /* block/file.c */
extern const struct block_backend_ops block_nbd_ops;	  /* block/nbd.c: nbd:// */
extern const struct block_backend_ops block_nbd_unix_ops; /* block/nbd.c: nbd+unix:// */

#endif
