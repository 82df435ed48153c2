/* The destination: migration_incoming (the connection, the state's arrival, GO), then the
 * connection thread while the VM runs here, the source's reconnections (RESUME) and an
 * abandoned migration. Post-copy's own part is postcopy_dest.c. */
#define _GNU_SOURCE
#include "migration/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"

/* Points the write stream at fd, forgetting an error on an earlier connection (a stream
 * refuses to write after its first error). Under d->lock. */
static struct stream *dest_writer(struct dest *d, int fd)
{
	d->w.fd = fd;
	d->w.len = 0;
	d->w.err[0] = 0;
	return &d->w;
}

/* Sends one record on the current connection (if any). */
int dest_send(struct dest *d, uint8_t type, const void *p, uint32_t len)
{
	int err = -ENOTCONN;
	pthread_mutex_lock(&d->lock);
	if (d->fd >= 0) {
		err = send_record(dest_writer(d, d->fd), type, p, len);
		/* A record half sent leaves the connection useless: end it, and the
		 * connection thread waits for the source to come back. */
		if (err)
			shutdown(d->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&d->lock);
	return err;
}

/* The lacking pages as a RESUME_ACK payload: u64 running since, then the bitmap. Under
 * d->lock. */
static int dest_resume_ack(struct dest *d, int fd)
{
	struct sbuf b;
	int err;

	sbuf_init(&b);
	sbuf_u64(&b, d->t_run);
	if (d->postcopy)
		for (uint64_t i = 0; i < d->words; i++)
			sbuf_u64(&b, ~__atomic_load_n(&d->have[i], __ATOMIC_ACQUIRE) &
					     (i == d->words - 1 && d->npages % 64
						      ? (1ULL << (d->npages % 64)) - 1
						      : ~0ULL));
	err = b.oom ? -ENOMEM
		    : send_record(dest_writer(d, fd), REC_RESUME_ACK, b.data, (uint32_t)b.len);
	sbuf_free(&b);
	return err;
}

/* Waits up to timeout_ms on the listening socket for the source to come back; returns the
 * new connection once it has said RESUME with our id (the caller answers), -ETIMEDOUT,
 * -ECANCELED when stopped, -ECONNABORTED when before_go and the source says with its token
 * that it kept the VM (ABANDON), or another -errno. */
static int dest_accept_resume(struct dest *d, int timeout_ms, bool before_go)
{
	struct pollfd p[2] = { { .fd = d->lfd, .events = POLLIN },
			       { .fd = d->stop_efd, .events = POLLIN } };
	int r = poll(p, 2, timeout_ms);
	if (r < 0)
		return errno == EINTR ? -ETIMEDOUT : -errno;
	if (p[1].revents)
		return -ECANCELED;
	if (!r)
		return -ETIMEDOUT;
	int fd = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return -ETIMEDOUT;
	char who[80];
	peer_name(fd, who, sizeof(who));
	fd = accept_secure(d->link, fd, who);
	if (fd < 0)
		return -ETIMEDOUT;
	set_timeouts(fd, IO_TIMEOUT_S);
	struct stream s;
	if (stream_init(&s, fd)) {
		close(fd);
		return -ENOMEM;
	}
	uint8_t type;
	uint16_t ver;
	const uint8_t *p0;
	uint32_t len;
	int err = stream_read_header(&s, STREAM_MIGRATION, NULL);
	if (!err)
		err = stream_read_record(&s, &type, &ver, &p0, &len);
	if (!err && ((type != REC_RESUME && type != REC_ABANDON) || len != 8))
		err = -EPROTO;
	uint64_t id = err ? 0 : get_u64(p0);
	if (!err && type == REC_ABANDON && before_go && d->token && id == d->token) {
		stream_free(&s);
		close(fd);
		return -ECONNABORTED;
	}
	if (!err && (type == REC_ABANDON || id != d->id)) {
		static const char msg[] = "no such migration here";
		struct stream w;
		if (stream_init(&w, fd) == 0) {
			if (stream_write_record(&w, REC_NACK, 1, msg, sizeof(msg) - 1) == 0)
				(void)stream_flush(&w);
			stream_free(&w);
		}
		err = -EPROTO;
	}
	stream_free(&s);
	if (err) {
		close(fd);
		return -ETIMEDOUT; /* not our source: keep waiting */
	}
	return fd;
}

/* Makes fd the connection: answers RESUME, asks again for what is waited on. */
static int dest_reconnected(struct dest *d, int fd)
{
	pthread_mutex_lock(&d->lock);
	int err = dest_resume_ack(d, fd);
	if (!err)
		d->fd = fd;
	pthread_mutex_unlock(&d->lock);
	if (err) {
		close(fd);
		return err;
	}
	atomic_store(&d->link_up, true);
	return 0;
}

static void dest_link_down(struct dest *d)
{
	pthread_mutex_lock(&d->lock);
	if (d->fd >= 0) {
		shutdown(d->fd, SHUT_RDWR);
		close(d->fd);
		d->fd = -1;
	}
	pthread_mutex_unlock(&d->lock);
	atomic_store(&d->link_up, false);
}

static void *dest_conn_thread(void *arg)
{
	struct dest *d = arg;
	uint8_t *buf = aligned_alloc(PAGE_SIZE, PAGE_SIZE);
	uint64_t down_since = 0;
	struct stream s;
	bool have_stream = false;
	int sfd = -1;

	while (buf && !atomic_load(&d->finished)) {
		pthread_mutex_lock(&d->lock);
		int fd = d->fd;
		pthread_mutex_unlock(&d->lock);
		if (fd < 0) {
			if (have_stream) {
				stream_free(&s);
				have_stream = false;
			}
			if (!down_since) {
				down_since = host_now_ns();
				log_warn("migration: the link to the source is down; %s",
					 d->postcopy ? "the guest waits for the pages it lacks"
						     : "waiting for it to come back");
			}
			if (!d->postcopy && host_now_ns() - down_since > RECONNECT_WINDOW_NS)
				break;
			int nfd = dest_accept_resume(d, 1000, false);
			if (nfd == -ECANCELED)
				break;
			if (nfd >= 0 && dest_reconnected(d, nfd) == 0) {
				log_info("migration: the source is back after %" PRIu64 " ms",
					 (host_now_ns() - down_since) / 1000000);
				down_since = 0;
				if (d->postcopy)
					dest_rerequest(d);
			}
			continue;
		}
		if (!have_stream || sfd != fd) {
			if (have_stream)
				stream_free(&s);
			if (stream_init(&s, fd))
				break;
			have_stream = true;
			sfd = fd;
		}
		uint8_t type;
		uint16_t ver;
		const uint8_t *p;
		uint32_t len;
		int err = stream_read_record(&s, &type, &ver, &p, &len);
		if (!err && type == REC_PAGES && d->postcopy)
			err = dest_pages(d, buf, p, len);
		else if (!err && type == REC_PC_DONE) {
			if (atomic_load(&d->missing) == 0) {
				/* Every page is current: those never mapped are zeros, which
				 * plain anonymous memory gives on its own. */
				struct uffdio_range r = { .start = (uintptr_t)d->vm->ram.host,
							  .len = d->vm->ram.size };
				/* Only post-copy registered guest RAM: a pre-copy arrival ends
				 * here too, with no userfaultfd at all. */
				if (d->uffd >= 0 && ioctl(d->uffd, UFFDIO_UNREGISTER, &r) < 0)
					log_warn("migration: userfaultfd: unregister: %s",
						 strerror(errno));
				(void)dest_send(d, REC_PC_COMPLETE, NULL, 0);
				atomic_store(&d->finished, true);
				break;
			}
			dest_rerequest(d); /* should not happen: ask for the rest */
		} else if (!err) {
			err = -EPROTO;
		}
		if (err) {
			if (err == -EPROTO)
				log_warn("migration: unexpected data from the source (record %u)",
					 type);
			dest_link_down(d);
		}
	}
	if (have_stream)
		stream_free(&s);
	free(buf);
	return NULL;
}

/* Frees what dest_create made (not lfd, which the caller still owns if it fails). */
static void dest_release(struct dest *d)
{
	if (d->stop_efd >= 0)
		close(d->stop_efd);
	pthread_mutex_destroy(&d->lock);
	ZSTD_freeDCtx(d->dctx);
	stream_free(&d->w);
	free(d->have);
	free(d->requested);
	free(d);
}

/* Ends the destination's side: the threads stop, and a post-copy guest's memory becomes
 * ordinary memory (pages still lacking read as zeros: only when the VM ends before the
 * migration does). */
void dest_free(struct dest *d)
{
	if (!d)
		return;
	uint64_t one = 1;
	if (write(d->stop_efd, &one, sizeof(one)) < 0)
		log_debug("migration: stop: %s", strerror(errno));
	pthread_mutex_lock(&d->lock);
	if (d->fd >= 0) {
		if (d->postcopy && !atomic_load(&d->finished)) {
			/* The VM ended here first: the source need not wait for us. */
			(void)send_record(dest_writer(d, d->fd), REC_PC_COMPLETE, NULL, 0);
		}
		shutdown(d->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&d->lock);
	if (d->uffd >= 0) {
		struct uffdio_range r = { .start = (uintptr_t)d->vm->ram.host,
					  .len = d->vm->ram.size };
		ioctl(d->uffd, UFFDIO_UNREGISTER, &r);
	}
	if (d->conn_started)
		pthread_join(d->conn_thread, NULL);
	if (d->fault_started)
		pthread_join(d->fault_thread, NULL);
	if (d->fd >= 0)
		close(d->fd);
	if (d->uffd >= 0)
		close(d->uffd);
	if (d->lfd >= 0)
		close(d->lfd);
	if (d->unix_path[0])
		unlink(d->unix_path);
	dest_release(d);
}

static struct dest *dest_create(struct vm *vm, int lfd, const char *uri)
{
	struct dest *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->vm = vm;
	d->link = vm->migration ? vm->migration->link : NULL;
	d->lfd = lfd;
	d->fd = -1;
	d->uffd = -1;
	d->npages = vm->ram.size >> PAGE_SHIFT;
	d->words = (d->npages + 63) / 64;
	if (strncmp(uri, "unix:", 5) == 0)
		snprintf(d->unix_path, sizeof(d->unix_path), "%s", uri + 5);
	pthread_mutex_init(&d->lock, NULL);
	d->stop_efd = eventfd(0, EFD_CLOEXEC);
	d->have = calloc(d->words, 8);
	d->requested = calloc(d->words, 8);
	d->dctx = ZSTD_createDCtx();
	if (getrandom(&d->id, sizeof(d->id), 0) != sizeof(d->id))
		d->id = host_now_ns() ^ (uint64_t)getpid() << 32;
	if (d->stop_efd < 0 || !d->have || !d->requested || !d->dctx || stream_init(&d->w, -1)) {
		dest_release(d);
		return NULL;
	}
	return d;
}

/* Answers NACK with why (best effort). */
static void send_nack(int fd, const char *why)
{
	struct stream w;
	if (stream_init(&w, fd) == 0) {
		(void)send_record(&w, REC_NACK, why, (uint32_t)strlen(why));
		stream_free(&w);
	}
}

/* The hand-over: the VM is ours, its disks' locks with it (the source dropped them before
 * GO). Someone else may have taken one in between, or the source be a VMM that keeps them:
 * the guest cannot go back, so it runs here all the same, after a while and with a warning
 * (the failure is logged naming the disk). */
static void dest_claim(struct vm *vm)
{
	for (int i = 0; vm->state_ops->claim(vm, true) != 0; i++) {
		if (i == 1) {
			log_warn("migration: the guest runs without its disk's lock");
			return;
		}
		sleep_ns(500 * 1000000ULL);
	}
}

/* After ACK: GO, or a source that comes back with RESUME (the link broke in between),
 * or its NACK or end of stream (it kept the VM). 0 with d->fd the live connection. */
static int dest_wait_go(struct dest *d, struct stream *s, int fd, char *why, size_t n)
{
	uint8_t type;
	uint16_t ver;
	const uint8_t *p;
	uint32_t len;
	int err = stream_read_record(s, &type, &ver, &p, &len);

	if (!err && type == REC_GO) {
		d->t_run = host_now_ns();
		pthread_mutex_lock(&d->lock);
		d->fd = fd;
		pthread_mutex_unlock(&d->lock);
		uint8_t t[8];
		put_u64(t, d->t_run);
		/* Lost, it is asked for again on a new connection (RESUME). */
		(void)dest_send(d, REC_RUNNING, t, sizeof(t));
		atomic_store(&d->link_up, true);
		return 0;
	}
	if ((!err && type == REC_NACK) || err == -ENODATA) {
		snprintf(why, n, "the source kept the VM");
		close(fd);
		return -ECANCELED;
	}
	if (!err) {
		snprintf(why, n, "unexpected record %u instead of the source's word", type);
		send_nack(fd, why);
		close(fd);
		return -EPROTO;
	}
	close(fd);
	/* The link broke: the source has either kept the VM or let go of it; only it knows.
	 * Nothing runs here until it comes back and says which. */
	log_warn("migration: the link to the source broke before its word (%s); waiting for "
		 "it to come back (the guest does not run meanwhile)",
		 s->err);
	for (;;) {
		int nfd = dest_accept_resume(d, 1000, true);
		if (nfd == -ETIMEDOUT && atomic_load(&d->vm->exit_reason))
			nfd = -ECANCELED; /* the VMM is ending */
		if (nfd == -ECANCELED) {
			snprintf(why, n, "stopped");
			return nfd;
		}
		if (nfd == -ECONNABORTED) {
			snprintf(why, n, "the source kept the VM (it came back to say so)");
			return -ECANCELED;
		}
		if (nfd < 0)
			continue;
		d->t_run = host_now_ns();
		if (dest_reconnected(d, nfd) == 0)
			return 0;
	}
}

/* Reads a migration stream's header and, from version 3 on, its first record: the source's
 * token (SOURCE). -ECONNABORTED for a connection that carries an ABANDON instead (a source
 * whose destination is gone); else 0 or an error, with s->err saying why. */
static int incoming_first(struct stream *s, uint32_t *version, uint64_t *token)
{
	uint8_t type;
	uint16_t ver;
	const uint8_t *p;
	uint32_t len;
	int err = stream_read_header(s, STREAM_MIGRATION, version);

	if (err || *version < 3)
		return err;
	err = stream_read_record(s, &type, &ver, &p, &len);
	if (err)
		return err;
	if (type == REC_ABANDON)
		return -ECONNABORTED;
	if (type != REC_SOURCE || len != 8) {
		snprintf(s->err, sizeof(s->err),
			 "the stream does not start with the source's token");
		return -EPROTO;
	}
	*token = get_u64(p);
	return 0;
}

int migration_incoming(struct vm *vm, const char *uri)
{
	if (!vm->state_ops) {
		log_error("--incoming %s: this machine cannot load a migrated state", uri);
		return -ENOTSUP;
	}
	struct mig_link *link = vm->migration ? vm->migration->link : NULL;
	char why[200] = "";
	int lfd = open_uri(uri, true, why, sizeof(why));

	if (lfd < 0) {
		log_error("--incoming %s", why);
		return lfd;
	}
	log_info("waiting for a migration on %s", uri);
	vm_set_phase(vm, "waiting for an incoming migration");
	int fd, first;
	struct stream s;
	uint32_t version = 0;
	uint64_t token = 0;
	/* --timeout bounds the wait too: rejected peers must not keep it up forever. */
	double limit = vm->cfg ? vm->cfg->timeout : 0;
	uint64_t deadline = limit > 0 ? host_now_ns() + (uint64_t)(limit * 1e9) : 0;
	for (;;) {
		/* Looks up now and then: the VMM may be told to end (a signal) meanwhile, and
		 * --timeout may run out. */
		struct pollfd pl = { .fd = lfd, .events = POLLIN };
		int r;
		bool late = false;
		for (;;) {
			int slice = 200;
			if (deadline) {
				uint64_t now = host_now_ns();
				if (now >= deadline) {
					late = true;
					r = 0;
					break;
				}
				if ((deadline - now) / 1000000 + 1 < (uint64_t)slice)
					slice = (int)((deadline - now) / 1000000 + 1);
			}
			r = poll(&pl, 1, slice);
			if (r > 0 || atomic_load(&vm->exit_reason))
				break;
			if (r < 0 && errno != EINTR)
				break;
		}
		if (late) {
			log_error("--incoming %s: no migration came within %g s", uri, limit);
			close(lfd);
			if (strncmp(uri, "unix:", 5) == 0)
				unlink(uri + 5);
			return -ETIME;
		}
		if (r <= 0 && atomic_load(&vm->exit_reason)) {
			log_info("--incoming %s: no longer waiting (the VMM is ending)", uri);
			close(lfd);
			if (strncmp(uri, "unix:", 5) == 0)
				unlink(uri + 5);
			return -ECANCELED;
		}
		do
			fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		while (fd < 0 && errno == EINTR);
		if (fd < 0) {
			int err = -errno;
			log_error("--incoming %s: accept: %s", uri, strerror(-err));
			close(lfd);
			if (strncmp(uri, "unix:", 5) == 0)
				unlink(uri + 5);
			return err;
		}
		/* Anyone may connect: a peer that fails the handshake, says nothing valid or
		 * goes away is dropped, and the VM waits on for its source. */
		char who[80];
		peer_name(fd, who, sizeof(who));
		fd = accept_secure(link, fd, who);
		if (fd < 0)
			continue;
		/* From the first byte on, a stalled source is a failed migration, not a hang. */
		set_timeouts(fd, IO_TIMEOUT_S);
		vm_set_phase(vm, "receiving the migration");
		if (stream_init(&s, fd)) {
			close(fd);
			close(lfd);
			log_error("--incoming %s: out of memory", uri);
			return -ENOMEM;
		}
		first = incoming_first(&s, &version, &token);
		if (!first)
			break;
		if (first == -ECONNABORTED) {
			/* The source of an earlier migration telling its destination it kept
			 * the VM. */
			log_info("migration: a source's word for an earlier destination: ignored");
		} else {
			log_warn("migration: rejected %s: %s", who,
				 s.err[0] ? s.err : strerror(-first));
			send_nack(fd, s.err[0] ? s.err : "not a migration stream");
		}
		stream_free(&s);
		close(fd);
	}

	struct loader l = { .vm = vm };
	struct dest *d = dest_create(vm, lfd, uri);
	if (!d) {
		stream_free(&s);
		close(fd);
		close(lfd);
		log_error("--incoming %s: out of memory", uri);
		return -ENOMEM;
	}
	d->token = token;
	struct stream ackw;
	bool ack_ok = stream_init(&ackw, fd) == 0;
	l.ack = ack_ok ? &ackw : NULL;
	l.written = calloc((vm->ram.size / PAGE_SIZE + 63) / 64, sizeof(uint64_t));
	l.dctx = ZSTD_createDCtx();
	int err = l.dctx && ack_ok && l.written ? first : -ENOMEM;
	if (err)
		snprintf(l.why, sizeof(l.why), "%s", s.err[0] ? s.err : "out of memory");
	if (!err)
		err = loader_read(&l, &s);
	log_debug("migration: state received at %" PRIu64 " ms", host_now_ns() / 1000000);
	if (!err && l.need && version < 2) {
		snprintf(l.why, sizeof(l.why), "post-copy in a version 1 stream");
		err = -EPROTO;
	}
	if (!err) {
		/* The guest clock moves on by the time the switch-over took (host clocks agree
		 * on one machine and, with NTP, between hosts); never backwards. */
		uint64_t now = realtime_ns();
		uint64_t elapsed = now > l.clock_realtime ? now - l.clock_realtime : 0;
		if (elapsed > 60ULL * 1000000000ULL)
			elapsed = 0; /* the clocks disagree: do not jump */
		err = loader_apply(&l, elapsed);
	}
	if (!err && l.need)
		err = dest_postcopy_setup(d, l.need, l.why, sizeof(l.why));
	if (err) {
		log_error("incoming migration failed: %s", l.why);
		send_nack(fd, l.why);
		close(fd);
	} else {
		/* Loaded. Version 1: the source's ACK means run. Version 2: ACK says loaded,
		 * with this migration's id, and the guest runs on GO only (the source has let
		 * go then), so that it never runs on both sides. */
		uint8_t ack[16];
		uint64_t t = host_now_ns();
		log_debug("migration: state loaded at %" PRIu64 " ms", t / 1000000);
		put_u64(ack, t);
		put_u64(ack + 8, d->id);
		err = send_record(&ackw, REC_ACK, ack, version < 2 ? 8 : 16);
		if (err) {
			snprintf(l.why, sizeof(l.why), "cannot acknowledge: %s", ackw.err);
			close(fd);
		} else if (version < 2) {
			close(fd);
		} else {
			vm_set_phase(vm, "waiting for the source's go-ahead");
			err = dest_wait_go(d, &s, fd, l.why, sizeof(l.why));
		}
		if (err)
			log_error("incoming migration failed: %s", l.why);
	}
	if (!err)
		dest_claim(vm);
	if (!err) {
		log_info("migration received (%u passes, %" PRIu64 " MiB%s)", l.passes,
			 s.bytes >> 20,
			 d->postcopy ? "; post-copy: the rest comes while it runs" : "");
		/* Stay reachable until the source is done with us. */
		if (version >= 2) {
			d->conn_started =
				pthread_create(&d->conn_thread, NULL, dest_conn_thread, d) == 0;
			if (d->postcopy)
				d->fault_started = pthread_create(&d->fault_thread, NULL,
								  dest_fault_thread, d) == 0;
			if (!d->conn_started || (d->postcopy && !d->fault_started)) {
				log_error("incoming migration: cannot start a thread");
				err = -EAGAIN; /* too late for the source: it let go */
			}
		}
	}
	loader_free(&l);
	if (ack_ok)
		stream_free(&ackw);
	stream_free(&s);
	if (!err && version >= 2 && vm->migration)
		vm->migration->dest = d;
	else
		dest_free(d);
	return err;
}
