/* The raw local file backend ("file:" or a bare path): a regular file or a block device,
 * byte for byte the disk. Requests run on a small pool of I/O threads with pread, pwrite,
 * fdatasync and fallocate (PUNCH_HOLE / ZERO_RANGE), so several are in flight at once and
 * none runs on a vCPU thread; finished requests go on a list and an eventfd wakes the event
 * loop, which calls their done callbacks. (A thread pool rather than io_uring: no new
 * dependency, and the same shape an NBD backend's socket thread will have.) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"
#include "core/event.h"
#include "core/log.h"

#define FILE_THREADS 4
/* Zeros written per call when fallocate cannot zero a range. */
#define FILE_ZERO_CHUNK (256 * 1024)

struct block_file {
	int fd;
	bool is_blkdev;
	char *path;  /* for messages */
	bool nolock; /* locking=off */
	bool locked; /* holds its lock bytes (see file_lock) */
	struct event_loop *loop;
	int done_fd;	 /* eventfd: completions -> event loop */
	bool registered; /* done_fd is on loop */

	pthread_mutex_t lock;
	pthread_cond_t cond;	     /* work queued, or stopping */
	struct block_request *queue; /* to do, oldest first (under lock) */
	struct block_request **queue_tail;
	struct block_request *done; /* finished, not yet delivered (under lock) */
	struct block_request **done_tail;
	bool stopping; /* (under lock) */
	unsigned nthreads;
	pthread_t threads[FILE_THREADS];
};

static int file_pread_all(int fd, void *buf, uint64_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* the file shrank under us */
		p += n, off += (uint64_t)n, len -= (uint64_t)n;
	}
	return 0;
}

static int file_pwrite_all(int fd, const void *buf, uint64_t len, uint64_t off)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n, off += (uint64_t)n, len -= (uint64_t)n;
	}
	return 0;
}

static int file_write_zeroes(struct block_file *f, uint64_t off, uint64_t len, bool unmap)
{
	int mode;

	if (!len)
		return 0;
	/* A punched hole reads as zeros; ZERO_RANGE keeps the space allocated. */
	if (unmap) {
		mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		if (fallocate(f->fd, mode, (off_t)off, (off_t)len) == 0)
			return 0;
	}
	mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	if (fallocate(f->fd, mode, (off_t)off, (off_t)len) == 0)
		return 0;
	/* Not supported here (some file systems, older block devices): write zeros. */
	uint64_t chunk = len < FILE_ZERO_CHUNK ? len : FILE_ZERO_CHUNK;
	void *zeros = calloc(1, chunk);
	if (!zeros)
		return -ENOMEM;
	int err = 0;
	while (len && !err) {
		uint64_t n = len < chunk ? len : chunk;
		err = file_pwrite_all(f->fd, zeros, n, off);
		off += n, len -= n;
	}
	free(zeros);
	return err;
}

static int file_do(struct block_file *f, struct block_request *req)
{
	switch (req->op) {
	case BLOCK_OP_READ: return file_pread_all(f->fd, req->buf, req->len, req->offset);
	case BLOCK_OP_WRITE: return file_pwrite_all(f->fd, req->buf, req->len, req->offset);
	case BLOCK_OP_FLUSH: return fdatasync(f->fd) < 0 ? -errno : 0;
	case BLOCK_OP_DISCARD:
		/* A hint: where holes cannot be punched, keep the data. */
		if (req->len && !f->is_blkdev &&
		    fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)req->offset,
			      (off_t)req->len) < 0 &&
		    errno != EOPNOTSUPP && errno != ENOSYS)
			return -errno;
		return 0;
	case BLOCK_OP_WRITE_ZEROES: return file_write_zeroes(f, req->offset, req->len, req->unmap);
	}
	return -EINVAL;
}

static void *file_worker(void *opaque)
{
	struct block_file *f = opaque;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (!f->queue && !f->stopping)
			pthread_cond_wait(&f->cond, &f->lock);
		struct block_request *req = f->queue;
		if (!req)
			break; /* stopping, and nothing left to do */
		f->queue = req->next;
		if (!f->queue)
			f->queue_tail = &f->queue;
		pthread_mutex_unlock(&f->lock);

		req->result = file_do(f, req);

		pthread_mutex_lock(&f->lock);
		req->next = NULL;
		bool was_empty = !f->done;
		*f->done_tail = req;
		f->done_tail = &req->next;
		if (was_empty) {
			uint64_t one = 1;
			ssize_t n = write(f->done_fd, &one, sizeof(one));
			(void)n; /* only fails when the counter is saturated: it is readable */
		}
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

/* Event loop: completions are waiting. done callbacks run without f->lock, so a device may
 * submit again from them. */
static void file_on_done(void *opaque, uint32_t events)
{
	struct block_file *f = opaque;
	uint64_t count;

	(void)events;
	ssize_t n = read(f->done_fd, &count, sizeof(count));
	(void)n;
	pthread_mutex_lock(&f->lock);
	struct block_request *list = f->done;
	f->done = NULL;
	f->done_tail = &f->done;
	pthread_mutex_unlock(&f->lock);
	while (list) {
		struct block_request *req = list;
		list = req->next;
		req->next = NULL;
		req->done(req);
	}
}

static int file_submit(struct block_backend *bb, struct block_request *req)
{
	struct block_file *f = bb->priv;

	req->next = NULL;
	req->result = 0;
	pthread_mutex_lock(&f->lock);
	if (f->stopping) {
		pthread_mutex_unlock(&f->lock);
		return -ESHUTDOWN;
	}
	*f->queue_tail = req;
	f->queue_tail = &req->next;
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

/* Stops and joins the workers (after they finish the queue), takes done_fd off the loop,
 * closes the files. What init made, in reverse. */
static void file_teardown(struct block_file *f)
{
	pthread_mutex_lock(&f->lock);
	f->stopping = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	for (unsigned i = 0; i < f->nthreads; i++)
		pthread_join(f->threads[i], NULL);
	if (f->registered)
		event_loop_remove_fd(f->loop, f->done_fd);
	if (f->done_fd >= 0)
		close(f->done_fd);
	/* Closing the descriptor drops its locks. */
	if (f->fd >= 0)
		close(f->fd);
	free(f->path);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* Locks, the way QEMU locks its images (so that a VMM and QEMU's tools exclude each other in
 * both directions): open file description locks (which belong to this descriptor, not to the
 * process, and so also keep two disks of one VMM on one file apart), shared, on single
 * bytes. Each permission QEMU knows has a bit; an opener holds byte LOCK_USE + bit for each
 * permission it uses and byte LOCK_UNSHARE + bit for each it does not let others have. It
 * may open if nobody holds LOCK_UNSHARE + bit for a permission it uses, nor LOCK_USE + bit for
 * one it refuses to share. */
enum {
	PERM_CONSISTENT_READ = 1 << 0,
	PERM_WRITE = 1 << 1,
	PERM_WRITE_UNCHANGED = 1 << 2,
	PERM_RESIZE = 1 << 3,
	PERM_GRAPH_MOD = 1 << 4,
};
#define PERM_BITS 5
#define LOCK_USE 100
#define LOCK_UNSHARE 200

/* Like a QEMU guest disk: it reads (and writes, unless read-only) and lets no one else write
 * or resize the image under it. Readers that share writes (qemu-img info -U, qemu-io -r)
 * are let in; two read-only disks share the file. */
static unsigned file_perms_used(const struct block_backend *bb)
{
	return PERM_CONSISTENT_READ | (bb->readonly ? 0 : PERM_WRITE);
}

static const unsigned file_perms_unshared = PERM_WRITE | PERM_RESIZE;

static int file_lock_range(int fd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 when another descriptor holds a lock on byte, 0 when none does, or -errno. */
static int file_lock_held(int fd, off_t byte)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

static int file_lock(struct block_backend *bb, bool take)
{
	struct block_file *f = bb->priv;
	unsigned used = file_perms_used(bb);
	int err = 0;

	if (f->nolock || take == f->locked)
		return 0;
	if (!take) {
		err = file_lock_range(f->fd, F_UNLCK, LOCK_USE,
				      LOCK_UNSHARE + PERM_BITS - LOCK_USE);
		if (err)
			log_warn("disk '%s': cannot drop its lock: %s", f->path, strerror(-err));
		f->locked = false;
		return err;
	}
	/* Take first, then look: of two openers racing, at least one sees the other. */
	for (int i = 0; i < PERM_BITS && !err; i++) {
		if (used & (1u << i))
			err = file_lock_range(f->fd, F_RDLCK, LOCK_USE + i, 1);
		if (!err && (file_perms_unshared & (1u << i)))
			err = file_lock_range(f->fd, F_RDLCK, LOCK_UNSHARE + i, 1);
	}
	/* EAGAIN: someone holds an exclusive lock there (not QEMU's way, but a conflict). */
	int busy = err == -EAGAIN || err == -EACCES;
	for (int i = 0; i < PERM_BITS && !err && !busy; i++) {
		if (used & (1u << i))
			busy = file_lock_held(f->fd, LOCK_UNSHARE + i);
		if (!busy && (file_perms_unshared & (1u << i)))
			busy = file_lock_held(f->fd, LOCK_USE + i);
		if (busy < 0) {
			err = busy;
			busy = 0;
		}
	}
	if (busy || err)
		(void)file_lock_range(f->fd, F_UNLCK, LOCK_USE,
				      LOCK_UNSHARE + PERM_BITS - LOCK_USE);
	if (busy) {
		log_error("disk '%s': in use by another process that holds its lock (a VMM, "
			  "QEMU)",
			  f->path);
		return -EBUSY;
	}
	if (err) {
		log_error("disk '%s': cannot lock: %s (locking=off if the storage arbitrates "
			  "writers)",
			  f->path, strerror(-err));
		return err;
	}
	f->locked = true;
	return 0;
}

static void file_close(struct block_backend *bb)
{
	file_teardown(bb->priv);
	bb->priv = NULL;
}

static int file_open(struct block_backend *bb, const char *path, const struct block_options *opts,
		     struct event_loop *loop)
{
	bool readonly = opts->readonly;
	struct block_file *f;
	struct stat st;
	int err;

	if (!*path) {
		log_error("disk '': no file name given");
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->fd = f->done_fd = -1;
	f->loop = loop;
	f->queue_tail = &f->queue;
	f->done_tail = &f->done;
	f->nolock = opts->nolock;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	f->path = strdup(path);
	if (!f->path) {
		err = -ENOMEM;
		log_error("disk '%s': out of memory", path);
		goto err;
	}

	/* O_NONBLOCK: a FIFO (or a device that waits for a peer) must not hang the open; the
	 * type is checked on what was opened, not on a name that may change in between. */
	f->fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (f->fd < 0) {
		err = -errno;
		if (!readonly && (errno == EACCES || errno == EROFS || errno == EPERM))
			log_error("disk '%s': cannot open for writing: %s (add readonly=on?)", path,
				  strerror(errno));
		else if (errno == ENXIO || errno == EISDIR)
			log_error("disk '%s': not a regular file or block device", path);
		else if (errno == ENOENT || errno == ENOTDIR)
			log_error("disk '%s': %s", path, strerror(errno));
		else
			log_error("disk '%s': cannot open: %s", path, strerror(errno));
		goto err;
	}
	if (fstat(f->fd, &st) < 0) {
		err = -errno;
		log_error("disk '%s': %s", path, strerror(errno));
		goto err;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		log_error("disk '%s': not a regular file or block device", path);
		err = -EINVAL;
		goto err;
	}
	f->is_blkdev = S_ISBLK(st.st_mode);
	int fl = fcntl(f->fd, F_GETFL);
	if (fl < 0 || fcntl(f->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		err = -errno;
		log_error("disk '%s': %s", path, strerror(errno));
		goto err;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (f->is_blkdev && ioctl(f->fd, BLKGETSIZE64, &size) < 0) {
		err = -errno;
		log_error("disk '%s': cannot get the device's size: %s", path, strerror(errno));
		goto err;
	}
	if (!size) {
		log_error("disk '%s': empty (0 bytes): give it a size first", path);
		err = -EINVAL;
		goto err;
	}
	if (size % BLOCK_SECTOR_SIZE) {
		log_error("disk '%s': size %llu bytes is not a multiple of %d", path,
			  (unsigned long long)size, BLOCK_SECTOR_SIZE);
		err = -EINVAL;
		goto err;
	}
	/* Reading the first sector now turns an unreadable file (a directory's cousins, a
	 * FUSE mount that refuses) into an error before the guest starts. */
	uint8_t sector[BLOCK_SECTOR_SIZE];
	err = file_pread_all(f->fd, sector, sizeof(sector), 0);
	if (err) {
		log_error("disk '%s': cannot read: %s", path, strerror(-err));
		goto err;
	}
	f->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (f->done_fd < 0) {
		err = -errno;
		log_error("disk '%s': cannot create an eventfd: %s", path, strerror(errno));
		goto err;
	}
	err = event_loop_add_fd(loop, f->done_fd, EPOLLIN, file_on_done, f);
	if (err) {
		log_error("disk '%s': cannot watch its eventfd: %s", path, strerror(-err));
		goto err;
	}
	f->registered = true;
	for (; f->nthreads < FILE_THREADS; f->nthreads++) {
		err = -pthread_create(&f->threads[f->nthreads], NULL, file_worker, f);
		if (err) {
			log_error("disk '%s': cannot start an I/O thread: %s", path,
				  strerror(-err));
			goto err;
		}
	}
	bb->size = size;
	bb->readonly = readonly;
	bb->priv = f;
	if (!opts->lock_later) {
		err = file_lock(bb, true);
		if (err) {
			bb->priv = NULL;
			goto err;
		}
	}
	return 0;

err:
	file_teardown(f);
	return err;
}

const struct block_backend_ops block_file_ops = {
	.scheme = "file",
	.open = file_open,
	.submit = file_submit,
	.close = file_close,
	.lock = file_lock,
};
