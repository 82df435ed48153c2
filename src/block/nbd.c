/* The NBD backend ("nbd://HOST[:PORT]/EXPORT", "nbd+unix:///EXPORT?socket=PATH"): the disk
 * is an export of a network block device server (nbdkit, qemu-nbd, nbd-server), reached
 * through libnbd's asynchronous API.
 *
 * One I/O thread per disk owns the libnbd handle. It polls the handle's socket (in the
 * direction libnbd asks for) and an eventfd that submit pokes; it turns each request into
 * NBD commands of at most the server's maximum block size, keeps up to NBD_MAX_CHUNKS of
 * them in flight, and hands finished requests to the event loop through a second eventfd,
 * as the file backend does. Neither a vCPU nor the event loop ever waits for the network.
 *
 * When the connection drops, the requests it carried and those that arrive later wait; the
 * thread reconnects with a back-off of NBD_BACKOFF_MIN_MS doubling to NBD_BACKOFF_MAX_MS
 * and then sends the unfinished requests again, whole (reads and writes of the same bytes
 * can be repeated: the guest has not seen them complete, so it has nothing overlapping in
 * flight). If the server stays away past the disk's reconnect timeout, the waiting
 * requests fail with -EIO; a later request starts a new round of attempts. */
#define _GNU_SOURCE
#include <errno.h>
#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "core/event.h"
#include "core/log.h"

/* Commands in flight on the connection at most. */
#define NBD_MAX_CHUNKS 64
/* Data per read or write when the server names no maximum (the protocol's usual one). */
#define NBD_DEFAULT_MAX_DATA (32u << 20)
/* Length per trim or zero: the protocol's lengths are 32 bits. */
#define NBD_MAX_NODATA (1u << 30)
/* Zeros written per command where the server cannot zero. */
#define NBD_ZERO_BUF (1u << 20)
#define NBD_BACKOFF_MIN_MS 100
#define NBD_BACKOFF_MAX_MS 2000
/* The connection at open gets the reconnect timeout, but at least the first and at most
 * the second: a server that does not answer must not hold the VM's start for long. */
#define NBD_OPEN_TIMEOUT_MIN_MS 5000
#define NBD_OPEN_TIMEOUT_MAX_MS 30000
/* One reconnect attempt's handshake at most: a server that accepts the connection but
 * does not answer is tried again. */
#define NBD_ATTEMPT_TIMEOUT_MS 5000
/* At close, how long commands on a live connection get to finish. */
#define NBD_CLOSE_GRACE_MS 5000

enum nbd_state {
	NBD_DOWN,	/* no handle: waiting for the next attempt (or idle) */
	NBD_CONNECTING, /* a handle in its handshake */
	NBD_CONNECTED,
};

/* A request on the I/O thread, with its progress. */
struct nbd_op {
	struct block_request *req;
	struct nbd_op *next;
	uint64_t issued;      /* bytes of the range sent as commands */
	bool flush_sent;      /* FLUSH: the command is sent */
	unsigned outstanding; /* its commands in flight */
	int err;	      /* the first command error, -errno */
};

/* One command's callback data: the connection it went out on, so that a late callback
 * from a connection given up is ignored. */
struct nbd_chunk {
	struct block_nbd *n;
	struct nbd_op *op;
	uint64_t conn;
};

struct block_nbd {
	char uri[1024];
	struct event_loop *loop;
	int done_fd;	 /* eventfd: completions -> event loop */
	bool registered; /* done_fd is on loop */
	int wake_fd;	 /* eventfd: submissions or stop -> I/O thread */
	pthread_t thread;
	bool started;

	pthread_mutex_t lock;
	struct block_request *queue; /* submitted, not yet taken by the thread (under lock) */
	struct block_request **queue_tail;
	struct block_request *done; /* finished, not yet delivered (under lock) */
	struct block_request **done_tail;
	bool stopping; /* (under lock) */

	/* The I/O thread's own (and open's, before the thread starts). */
	struct nbd_handle *h;
	enum nbd_state state;
	uint64_t conn;	   /* bumped for each handle */
	uint64_t size;	   /* the disk's, fixed at open */
	uint32_t max_data; /* bytes per read or write */
	bool can_flush, can_trim, can_zero;
	void *zeros;	    /* NBD_ZERO_BUF zero bytes, when the server cannot zero */
	struct nbd_op *ops; /* taken, unfinished, oldest first */
	struct nbd_op **ops_tail;
	unsigned chunks;	 /* commands in flight */
	unsigned timeout_ms;	 /* reconnect timeout */
	bool retrying;		 /* a round of reconnect attempts is on */
	uint64_t down_since;	 /* ms, when the connection was lost */
	uint64_t deadline;	 /* ms, the end of this round of attempts */
	uint64_t next_attempt;	 /* ms */
	uint64_t attempt_end;	 /* ms, when the attempt connecting now is given up */
	unsigned backoff;	 /* ms before the attempt after next */
	bool warned_unreachable; /* this round's failed attempt is logged */
	char why[256];		 /* the last libnbd error on the connection */
};

static uint64_t nbd_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* libnbd's last error on this thread, without a trailing newline. */
static const char *nbd_error_text(void)
{
	const char *e = nbd_get_error();
	if (!e || !*e)
		return "unknown error";
	/* "nbd_aio_connect_uri: connect: ...": the function's name says nothing to a user. */
	if (strncmp(e, "nbd_", 4) == 0 && strstr(e, ": "))
		e = strstr(e, ": ") + 2;
	return e;
}

/* ---- The connection ---- */

/* Starts connecting a new handle. 0, or -errno with msg filled. */
static int nbd_connect_start(struct block_nbd *n, char *msg, size_t cap)
{
	struct nbd_handle *h = nbd_create();

	if (!h) {
		snprintf(msg, cap, "%s", nbd_error_text());
		return -ENOMEM;
	}
	if (nbd_aio_connect_uri(h, n->uri) < 0) {
		int err = nbd_get_errno();
		snprintf(msg, cap, "%s", nbd_error_text());
		nbd_close(h);
		return err > 0 ? -err : -EIO;
	}
	n->h = h;
	n->conn++;
	n->state = NBD_CONNECTING;
	return 0;
}

/* Drops the handle: libnbd forgets its commands (their callbacks only free their data). */
static void nbd_drop_handle(struct block_nbd *n)
{
	n->conn++; /* callbacks still to come from this handle are ignored */
	if (n->h)
		nbd_close(n->h);
	n->h = NULL;
	n->chunks = 0;
	n->state = NBD_DOWN;
}

/* Moves a handle in its handshake on after the socket was ready: 1 connected, 0 still
 * going, -errno failed (msg filled). */
static int nbd_connect_progress(struct block_nbd *n, short revents, char *msg, size_t cap)
{
	int r = 0;

	if (revents & (POLLIN | POLLHUP | POLLERR))
		r = nbd_aio_notify_read(n->h);
	else if (revents & POLLOUT)
		r = nbd_aio_notify_write(n->h);
	if (r < 0 || nbd_aio_is_dead(n->h) || nbd_aio_is_closed(n->h)) {
		int err = nbd_get_errno();
		snprintf(msg, cap, "%s", nbd_error_text());
		return err > 0 ? -err : -EIO;
	}
	return nbd_aio_is_ready(n->h) ? 1 : 0;
}

/* What the server offers, read once the handshake is done. 0, or -errno (msg filled). */
static int nbd_read_caps(struct block_nbd *n, bool first, char *msg, size_t cap)
{
	int64_t size = nbd_get_size(n->h);
	if (size < 0) {
		snprintf(msg, cap, "cannot get the export's size: %s", nbd_error_text());
		return -EIO;
	}
	if (first) {
		n->size = (uint64_t)size & ~(uint64_t)(BLOCK_SECTOR_SIZE - 1);
		if (n->size != (uint64_t)size)
			log_warn("disk '%s': the export's %lld bytes are not whole sectors; the "
				 "guest sees %llu",
				 n->uri, (long long)size, (unsigned long long)n->size);
	} else if ((uint64_t)size < n->size) {
		snprintf(msg, cap, "the export shrank to %lld bytes", (long long)size);
		return -EIO;
	}
	int64_t max = nbd_get_block_size(n->h, LIBNBD_SIZE_MAXIMUM);
	int64_t min = nbd_get_block_size(n->h, LIBNBD_SIZE_MINIMUM);
	uint32_t align =
		min > BLOCK_SECTOR_SIZE && min <= 65536 ? (uint32_t)min : BLOCK_SECTOR_SIZE;
	/* Chunks start and end on the server's minimum block (or a sector). */
	n->max_data = max > 0 && max < NBD_DEFAULT_MAX_DATA ? (uint32_t)max : NBD_DEFAULT_MAX_DATA;
	n->max_data -= n->max_data % align;
	if (n->max_data < BLOCK_SECTOR_SIZE) {
		snprintf(msg, cap, "the server's maximum block size %lld is below %d",
			 (long long)max, BLOCK_SECTOR_SIZE);
		return -EINVAL;
	}
	n->can_flush = nbd_can_flush(n->h) == 1;
	n->can_trim = nbd_can_trim(n->h) == 1;
	n->can_zero = nbd_can_zero(n->h) == 1;
	return 0;
}

/* Open: connects with a deadline, on the caller's thread (the I/O thread is not started). */
static int nbd_connect_now(struct block_nbd *n, unsigned timeout_ms, char *msg, size_t cap)
{
	uint64_t deadline = nbd_now_ms() + timeout_ms;
	int err = nbd_connect_start(n, msg, cap);

	while (!err) {
		if (nbd_aio_is_ready(n->h))
			return 0;
		uint64_t now = nbd_now_ms();
		if (now >= deadline) {
			snprintf(msg, cap, "no answer within %u s", timeout_ms / 1000);
			err = -ETIMEDOUT;
			break;
		}
		unsigned dir = nbd_aio_get_direction(n->h);
		struct pollfd p = { .fd = nbd_aio_get_fd(n->h), .events = 0 };
		if (dir & LIBNBD_AIO_DIRECTION_READ)
			p.events |= POLLIN;
		if (dir & LIBNBD_AIO_DIRECTION_WRITE)
			p.events |= POLLOUT;
		int r = poll(&p, p.fd >= 0 ? 1 : 0, (int)(deadline - now));
		if (r < 0 && errno != EINTR) {
			err = -errno;
			snprintf(msg, cap, "poll: %s", strerror(errno));
			break;
		}
		if (r > 0 && nbd_connect_progress(n, p.revents, msg, cap) < 0)
			err = -EIO;
	}
	nbd_drop_handle(n);
	return err;
}

/* ---- Requests ---- */

static void nbd_finish(struct block_nbd *n, struct block_request *req, int result)
{
	req->result = result;
	req->next = NULL;
	pthread_mutex_lock(&n->lock);
	bool was_empty = !n->done;
	*n->done_tail = req;
	n->done_tail = &req->next;
	pthread_mutex_unlock(&n->lock);
	if (was_empty) {
		uint64_t one = 1;
		ssize_t w = write(n->done_fd, &one, sizeof(one));
		(void)w; /* only fails when the counter is saturated: it is readable */
	}
}

static int nbd_chunk_done(void *opaque, int *error)
{
	struct nbd_chunk *c = opaque;

	/* From a handle being closed (nbd_drop_handle moves conn on first): its ops are reset
	 * and sent again, so this result means nothing. */
	if (c->conn != c->n->conn)
		return 1;
	c->op->outstanding--;
	c->n->chunks--;
	if (*error && !c->op->err)
		c->op->err = -*error;
	return 1;
}

/* The length of an op's range that is sent as commands. */
static uint64_t nbd_op_len(const struct nbd_op *op)
{
	return op->req->op == BLOCK_OP_FLUSH ? 0 : op->req->len;
}

static bool nbd_op_sent(const struct nbd_op *op)
{
	if (op->req->op == BLOCK_OP_FLUSH)
		return op->flush_sent;
	return op->issued >= op->req->len;
}

/* Sends op's next command. 0, 1 when nothing was left to send, or -errno from libnbd (the
 * handle may be dead: the caller checks). */
static int nbd_issue_one(struct block_nbd *n, struct nbd_op *op)
{
	struct block_request *req = op->req;
	uint64_t left = nbd_op_len(op) - op->issued;
	uint64_t off = req->offset + op->issued;
	uint64_t len = 0;
	int64_t r;

	if (nbd_op_sent(op))
		return 1;
	/* What needs no command. */
	if ((req->op == BLOCK_OP_FLUSH && !n->can_flush) ||
	    (req->op == BLOCK_OP_DISCARD && !n->can_trim)) {
		op->flush_sent = true;
		op->issued = nbd_op_len(op);
		return 0;
	}
	struct nbd_chunk *c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	*c = (struct nbd_chunk){ .n = n, .op = op, .conn = n->conn };
	nbd_completion_callback cb = { .callback = nbd_chunk_done, .user_data = c, .free = free };

	/* Counted before the call: a command that fails at once is completed (with an
	 * error) inside it. */
	op->outstanding++;
	n->chunks++;
	switch (req->op) {
	case BLOCK_OP_READ:
		len = left < n->max_data ? left : n->max_data;
		r = nbd_aio_pread(n->h, (uint8_t *)req->buf + op->issued, len, off, cb, 0);
		break;
	case BLOCK_OP_WRITE:
		len = left < n->max_data ? left : n->max_data;
		r = nbd_aio_pwrite(n->h, (uint8_t *)req->buf + op->issued, len, off, cb, 0);
		break;
	case BLOCK_OP_FLUSH: r = nbd_aio_flush(n->h, cb, 0); break;
	case BLOCK_OP_DISCARD:
		len = left < NBD_MAX_NODATA ? left : NBD_MAX_NODATA;
		r = nbd_aio_trim(n->h, len, off, cb, 0);
		break;
	case BLOCK_OP_WRITE_ZEROES:
		if (n->can_zero) {
			len = left < NBD_MAX_NODATA ? left : NBD_MAX_NODATA;
			/* Without unmap the range stays allocated, as the guest asked. */
			uint32_t flags = req->unmap ? 0 : LIBNBD_CMD_FLAG_NO_HOLE;
			r = nbd_aio_zero(n->h, len, off, cb, flags);
		} else {
			if (!n->zeros)
				n->zeros = calloc(1, NBD_ZERO_BUF);
			if (!n->zeros) {
				op->outstanding--;
				n->chunks--;
				free(c);
				return -ENOMEM;
			}
			len = left < n->max_data ? left : n->max_data;
			len = len < NBD_ZERO_BUF ? len : NBD_ZERO_BUF;
			r = nbd_aio_pwrite(n->h, n->zeros, len, off, cb, 0);
		}
		break;
	default:
		op->outstanding--;
		n->chunks--;
		free(c);
		return -EINVAL;
	}
	/* libnbd frees c (cb.free) whether or not it took the command, and calls the
	 * completion callback only when it did. */
	if (r < 0) {
		op->outstanding--;
		n->chunks--;
		snprintf(n->why, sizeof(n->why), "%s", nbd_error_text());
		int err = nbd_get_errno();
		return err > 0 ? -err : -EIO;
	}
	op->issued += len;
	op->flush_sent = true;
	return 0;
}

/* Sends commands for the waiting ops, oldest first, up to NBD_MAX_CHUNKS in flight. */
static void nbd_issue(struct block_nbd *n)
{
	for (struct nbd_op *op = n->ops; op && n->chunks < NBD_MAX_CHUNKS; op = op->next) {
		while (n->chunks < NBD_MAX_CHUNKS) {
			int r = nbd_issue_one(n, op);
			if (r == 1)
				break;
			if (r < 0) {
				if (nbd_aio_is_dead(n->h) || nbd_aio_is_closed(n->h))
					return; /* the caller sees the connection is lost */
				if (!op->err)
					op->err = r;
				/* Stop sending this op; it completes with the error. */
				op->issued = nbd_op_len(op);
				op->flush_sent = true;
				break;
			}
		}
	}
}

/* Completes the ops whose commands have all come back. */
static void nbd_complete(struct block_nbd *n)
{
	struct nbd_op **pp = &n->ops;

	while (*pp) {
		struct nbd_op *op = *pp;
		if (!nbd_op_sent(op) || op->outstanding) {
			pp = &op->next;
			continue;
		}
		*pp = op->next;
		nbd_finish(n, op->req, op->err);
		free(op);
	}
	n->ops_tail = pp;
}

/* Fails every waiting op with err. */
static void nbd_fail_all(struct block_nbd *n, int err)
{
	while (n->ops) {
		struct nbd_op *op = n->ops;
		n->ops = op->next;
		nbd_finish(n, op->req, err);
		free(op);
	}
	n->ops_tail = &n->ops;
}

/* The connection is gone: keep what finished, send the rest again after reconnecting. */
static void nbd_lost(struct block_nbd *n)
{
	unsigned waiting = 0;
	const char *why = n->why[0] ? n->why : "the server closed the connection";

	nbd_drop_handle(n);
	for (struct nbd_op *op = n->ops; op; op = op->next) {
		if (nbd_op_sent(op) && !op->outstanding && !op->err)
			continue; /* finished before the loss: nbd_complete delivers it */
		op->issued = 0;
		op->flush_sent = false;
		op->outstanding = 0;
		op->err = 0;
		waiting++;
	}
	nbd_complete(n);
	uint64_t now = nbd_now_ms();
	n->retrying = true;
	n->down_since = now;
	n->deadline = now + n->timeout_ms;
	n->next_attempt = now;
	n->backoff = NBD_BACKOFF_MIN_MS;
	n->warned_unreachable = false;
	log_warn("disk '%s': connection lost (%s); %u requests wait, reconnecting for up to %u s",
		 n->uri, why, waiting, n->timeout_ms / 1000);
	n->why[0] = '\0';
}

/* A reconnect attempt failed: the next one after the back-off. */
static void nbd_attempt_failed(struct block_nbd *n, const char *msg)
{
	nbd_drop_handle(n);
	if (!n->warned_unreachable) {
		log_warn("disk '%s': reconnecting: %s; retrying", n->uri, msg);
		n->warned_unreachable = true;
	}
	n->next_attempt = nbd_now_ms() + n->backoff;
	n->backoff = n->backoff * 2 > NBD_BACKOFF_MAX_MS ? NBD_BACKOFF_MAX_MS : n->backoff * 2;
}

/* Takes the submitted requests into n->ops. False when stopping. */
static bool nbd_take(struct block_nbd *n)
{
	pthread_mutex_lock(&n->lock);
	struct block_request *list = n->queue;
	bool stopping = n->stopping;
	n->queue = NULL;
	n->queue_tail = &n->queue;
	pthread_mutex_unlock(&n->lock);

	while (list) {
		struct block_request *req = list;
		list = req->next;
		req->next = NULL;
		struct nbd_op *op = calloc(1, sizeof(*op));
		if (!op) {
			nbd_finish(n, req, -ENOMEM);
			continue;
		}
		op->req = req;
		*n->ops_tail = op;
		n->ops_tail = &op->next;
	}
	return !stopping;
}

/* The I/O thread: one poll loop over the wake eventfd and the connection. */
static void *nbd_worker(void *opaque)
{
	struct block_nbd *n = opaque;
	uint64_t stop_deadline = 0;
	char msg[256];

	for (;;) {
		uint64_t now = nbd_now_ms();
		bool running = nbd_take(n);

		if (!running) {
			/* Closing: commands on a live connection may finish (their buffers
			 * stay the caller's until close returns); nothing new is sent, and a
			 * lost server is not waited for. */
			if (!stop_deadline)
				stop_deadline = now + NBD_CLOSE_GRACE_MS;
			if (n->state != NBD_CONNECTED || !n->chunks || now >= stop_deadline)
				break;
		}

		if (n->state == NBD_DOWN && running) {
			if (!n->retrying && n->ops) {
				/* A request after a round that gave up: a new round. */
				n->retrying = true;
				n->deadline = now + n->timeout_ms;
				n->next_attempt = now;
				n->backoff = NBD_BACKOFF_MIN_MS;
				n->warned_unreachable = false;
			}
			if (n->retrying && now >= n->deadline) {
				unsigned waiting = 0;
				for (struct nbd_op *op = n->ops; op; op = op->next)
					waiting++;
				unsigned s = n->timeout_ms / 1000;
				if (waiting)
					log_error("disk '%s': server unreachable for %u s; %u "
						  "requests fail with an I/O error",
						  n->uri, s, waiting);
				else
					log_warn("disk '%s': server unreachable for %u s; the "
						 "next request tries again",
						 n->uri, s);
				nbd_fail_all(n, -EIO);
				n->retrying = false;
			} else if (n->retrying && now >= n->next_attempt) {
				if (nbd_connect_start(n, msg, sizeof(msg)) < 0)
					nbd_attempt_failed(n, msg);
				n->attempt_end = now + NBD_ATTEMPT_TIMEOUT_MS;
				if (n->attempt_end > n->deadline)
					n->attempt_end = n->deadline;
			}
		}
		if (n->state == NBD_CONNECTING && now >= n->attempt_end)
			nbd_attempt_failed(n, "no answer from the server");
		if (n->state == NBD_CONNECTED) {
			if (running)
				nbd_issue(n);
			if (nbd_aio_is_dead(n->h) || nbd_aio_is_closed(n->h))
				nbd_lost(n);
			else
				nbd_complete(n);
		}

		/* Wait for the wake eventfd, the socket, or the next deadline. */
		struct pollfd p[2] = { { .fd = n->wake_fd, .events = POLLIN } };
		int np = 1;
		int timeout = -1;
		if (n->h) {
			unsigned dir = nbd_aio_get_direction(n->h);
			p[1].fd = nbd_aio_get_fd(n->h);
			p[1].events = 0;
			if (dir & LIBNBD_AIO_DIRECTION_READ)
				p[1].events |= POLLIN;
			if (dir & LIBNBD_AIO_DIRECTION_WRITE)
				p[1].events |= POLLOUT;
			if (p[1].fd >= 0)
				np = 2;
			else
				timeout = 10; /* no socket yet: look again soon */
		}
		uint64_t wake_at = 0;
		if (n->state == NBD_CONNECTING)
			wake_at = n->attempt_end;
		else if (n->state == NBD_DOWN && n->retrying)
			wake_at = n->next_attempt < n->deadline ? n->next_attempt : n->deadline;
		if (!running)
			wake_at = stop_deadline;
		if (wake_at) {
			int ms = wake_at > now ? (int)(wake_at - now) : 0;
			if (timeout < 0 || ms < timeout)
				timeout = ms;
		}
		int r = poll(p, (nfds_t)np, timeout);
		if (r < 0 && errno != EINTR) {
			log_error("disk '%s': poll: %s", n->uri, strerror(errno));
			break;
		}
		if (r <= 0)
			continue;
		if (p[0].revents & POLLIN) {
			uint64_t count;
			ssize_t rd = read(n->wake_fd, &count, sizeof(count));
			(void)rd;
		}
		if (np < 2 || !p[1].revents)
			continue;
		if (n->state == NBD_CONNECTING) {
			int c = nbd_connect_progress(n, p[1].revents, msg, sizeof(msg));
			if (c < 0) {
				nbd_attempt_failed(n, msg);
			} else if (c > 0) {
				int err = nbd_read_caps(n, false, msg, sizeof(msg));
				if (err) {
					nbd_attempt_failed(n, msg);
				} else {
					n->state = NBD_CONNECTED;
					n->retrying = false;
					uint64_t ms = nbd_now_ms() - n->down_since;
					log_warn("disk '%s': reconnected after %llu ms", n->uri,
						 (unsigned long long)ms);
				}
			}
			continue;
		}
		/* Connected: the callbacks of finished commands run inside notify. */
		int nr = 0;
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR))
			nr = nbd_aio_notify_read(n->h);
		else if (p[1].revents & POLLOUT)
			nr = nbd_aio_notify_write(n->h);
		if (nr < 0)
			snprintf(n->why, sizeof(n->why), "%s", nbd_error_text());
		if (nbd_aio_is_dead(n->h) || nbd_aio_is_closed(n->h))
			nbd_lost(n);
		else
			nbd_complete(n);
	}
	nbd_drop_handle(n);
	while (n->ops) {
		struct nbd_op *op = n->ops;
		n->ops = op->next;
		free(op);
	}
	n->ops_tail = &n->ops;
	return NULL;
}

/* ---- The backend ---- */

/* Event loop: completions are waiting. done callbacks run without n->lock, so a device may
 * submit again from them. */
static void nbd_on_done(void *opaque, uint32_t events)
{
	struct block_nbd *n = opaque;
	uint64_t count;

	(void)events;
	ssize_t rd = read(n->done_fd, &count, sizeof(count));
	(void)rd;
	pthread_mutex_lock(&n->lock);
	struct block_request *list = n->done;
	n->done = NULL;
	n->done_tail = &n->done;
	pthread_mutex_unlock(&n->lock);
	while (list) {
		struct block_request *req = list;
		list = req->next;
		req->next = NULL;
		req->done(req);
	}
}

static int nbd_submit(struct block_backend *bb, struct block_request *req)
{
	struct block_nbd *n = bb->priv;

	req->next = NULL;
	req->result = 0;
	pthread_mutex_lock(&n->lock);
	if (n->stopping) {
		pthread_mutex_unlock(&n->lock);
		return -ESHUTDOWN;
	}
	bool was_empty = !n->queue;
	*n->queue_tail = req;
	n->queue_tail = &req->next;
	pthread_mutex_unlock(&n->lock);
	if (was_empty) {
		uint64_t one = 1;
		ssize_t w = write(n->wake_fd, &one, sizeof(one));
		(void)w;
	}
	return 0;
}

/* Stops and joins the I/O thread, takes done_fd off the loop, closes everything. What open
 * made, in reverse. */
static void nbd_teardown(struct block_nbd *n)
{
	if (n->started) {
		pthread_mutex_lock(&n->lock);
		n->stopping = true;
		pthread_mutex_unlock(&n->lock);
		uint64_t one = 1;
		ssize_t w = write(n->wake_fd, &one, sizeof(one));
		(void)w;
		pthread_join(n->thread, NULL);
	}
	nbd_drop_handle(n);
	if (n->registered)
		event_loop_remove_fd(n->loop, n->done_fd);
	if (n->done_fd >= 0)
		close(n->done_fd);
	if (n->wake_fd >= 0)
		close(n->wake_fd);
	free(n->zeros);
	pthread_mutex_destroy(&n->lock);
	free(n);
}

static void nbd_backend_close(struct block_backend *bb)
{
	nbd_teardown(bb->priv);
	bb->priv = NULL;
}

static int nbd_open(struct block_backend *bb, const char *uri, const struct block_options *opts,
		    struct event_loop *loop)
{
	struct block_nbd *n;
	char msg[256];
	int err;

	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->done_fd = n->wake_fd = -1;
	n->loop = loop;
	n->queue_tail = &n->queue;
	n->done_tail = &n->done;
	n->ops_tail = &n->ops;
	n->timeout_ms = opts->reconnect_timeout * 1000;
	pthread_mutex_init(&n->lock, NULL);
	if (strlen(uri) >= sizeof(n->uri)) {
		log_error("disk '%.64s...': the URI is longer than %zu characters", uri,
			  sizeof(n->uri) - 1);
		err = -EINVAL;
		goto err;
	}
	snprintf(n->uri, sizeof(n->uri), "%s", uri);

	unsigned open_ms = n->timeout_ms < NBD_OPEN_TIMEOUT_MIN_MS   ? NBD_OPEN_TIMEOUT_MIN_MS
			   : n->timeout_ms > NBD_OPEN_TIMEOUT_MAX_MS ? NBD_OPEN_TIMEOUT_MAX_MS
								     : n->timeout_ms;
	err = nbd_connect_now(n, open_ms, msg, sizeof(msg));
	if (err) {
		log_error("disk '%s': cannot connect to the NBD server: %s", uri, msg);
		goto err;
	}
	n->state = NBD_CONNECTING;
	/* nbd_connect_now dropped the handle on failure only: it is ready here. */
	err = nbd_read_caps(n, true, msg, sizeof(msg));
	if (err) {
		log_error("disk '%s': %s", uri, msg);
		goto err;
	}
	n->state = NBD_CONNECTED;
	if (!n->size) {
		log_error("disk '%s': the export is empty", uri);
		err = -EINVAL;
		goto err;
	}
	bool server_ro = nbd_is_read_only(n->h) == 1;
	if (!n->can_flush && !server_ro && !opts->readonly)
		log_warn("disk '%s': the server cannot flush; writes may not be durable", uri);
	n->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	n->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->done_fd < 0 || n->wake_fd < 0) {
		err = -errno;
		log_error("disk '%s': cannot create an eventfd: %s", uri, strerror(errno));
		goto err;
	}
	err = event_loop_add_fd(loop, n->done_fd, EPOLLIN, nbd_on_done, n);
	if (err) {
		log_error("disk '%s': cannot watch its eventfd: %s", uri, strerror(-err));
		goto err;
	}
	n->registered = true;
	err = -pthread_create(&n->thread, NULL, nbd_worker, n);
	if (err) {
		log_error("disk '%s': cannot start its I/O thread: %s", uri, strerror(-err));
		goto err;
	}
	n->started = true;
	bb->size = n->size;
	bb->readonly = opts->readonly || server_ro;
	bb->priv = n;
	return 0;

err:
	nbd_teardown(n);
	return err;
}

const struct block_backend_ops block_nbd_ops = {
	.scheme = "nbd",
	.whole_uri = true,
	.open = nbd_open,
	.submit = nbd_submit,
	.close = nbd_backend_close,
};

const struct block_backend_ops block_nbd_unix_ops = {
	.scheme = "nbd+unix",
	.whole_uri = true,
	.open = nbd_open,
	.submit = nbd_submit,
	.close = nbd_backend_close,
};
