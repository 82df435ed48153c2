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
	char name[64]; /* for messages */
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
	if (f->fd >= 0)
		close(f->fd);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
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
	if (stat(path, &st) < 0) {
		err = -errno;
		log_error("disk '%s': %s", path, strerror(errno));
		return err;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		log_error("disk '%s': not a regular file or block device", path);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->fd = f->done_fd = -1;
	f->loop = loop;
	f->queue_tail = &f->queue;
	f->done_tail = &f->done;
	f->is_blkdev = S_ISBLK(st.st_mode);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);

	f->fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (f->fd < 0) {
		err = -errno;
		if (!readonly && (errno == EACCES || errno == EROFS || errno == EPERM))
			log_error("disk '%s': cannot open for writing: %s (add readonly=on?)", path,
				  strerror(errno));
		else
			log_error("disk '%s': cannot open: %s", path, strerror(errno));
		goto err;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (f->is_blkdev && ioctl(f->fd, BLKGETSIZE64, &size) < 0) {
		err = -errno;
		log_error("disk '%s': cannot get the device's size: %s", path, strerror(errno));
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
	if (size) {
		uint8_t sector[BLOCK_SECTOR_SIZE];
		err = file_pread_all(f->fd, sector, sizeof(sector), 0);
		if (err) {
			log_error("disk '%s': cannot read: %s", path, strerror(-err));
			goto err;
		}
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
	snprintf(f->name, sizeof(f->name), "%s", path);
	bb->size = size;
	bb->readonly = readonly;
	bb->priv = f;
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
};
