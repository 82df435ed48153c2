/* The source's job: pre-copy passes, the pause and its state, the hand-over, reconnection
 * after it, auto-converge and snapshots. Post-copy's own part is postcopy_src.c. */
#define _GNU_SOURCE
#include "migration/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/event.h"
#include "core/log.h"
#include "migration/link.h"

/* ---- State at the pause ---- */

struct sync_ctx {
	struct vm *vm;
	uint64_t *bitmap;
	unsigned busy;
};

static void run_dirty_sync(void *opaque)
{
	struct sync_ctx *c = opaque;
	vm_dirty_log_sync(c->vm, c->bitmap);
}

static void run_quiesce(void *opaque)
{
	struct sync_ctx *c = opaque;
	c->busy = c->vm->state_ops->quiesce(c->vm);
}

static void run_unquiesce(void *opaque)
{
	struct sync_ctx *c = opaque;
	c->vm->state_ops->unquiesce(c->vm);
}

/* Harvests the dirty log into bitmap, with the harts held for the instant it takes. */
static int dirty_sync(struct vm *vm, uint64_t *bitmap, bool already_paused)
{
	struct sync_ctx c = { .vm = vm, .bitmap = bitmap };
	if (!already_paused)
		vm_pause(vm);
	int err = event_loop_run(vm->loop, run_dirty_sync, &c);
	if (!already_paused)
		vm_resume(vm);
	return err;
}

/* With the vCPUs paused: waits until every device is quiet and its writes durable. */
static int quiesce_devices(struct migration *m, char *why, size_t n)
{
	struct sync_ctx c = { .vm = m->vm };
	uint64_t deadline = host_now_ns() + QUIESCE_TIMEOUT_NS;

	for (;;) {
		if (event_loop_run(m->vm->loop, run_quiesce, &c)) {
			snprintf(why, n, "out of memory");
			return -ENOMEM;
		}
		if (!c.busy)
			return 0;
		if (m->cancel) {
			snprintf(why, n, "cancelled");
			return -ECANCELED;
		}
		if (host_now_ns() > deadline) {
			snprintf(why, n, "disks did not finish their requests in time");
			return -ETIMEDOUT;
		}
		sleep_ns(200000);
	}
}

static void unquiesce_devices(struct vm *vm)
{
	struct sync_ctx c = { .vm = vm };
	if (event_loop_run(vm->loop, run_unquiesce, &c))
		log_warn("migration: cannot restart the devices' queues");
}

/* ---- The source's job ---- */

void status_update(struct migration *m, void (*fn)(struct migrate_status *, void *), void *arg)
{
	pthread_mutex_lock(&m->lock);
	fn(&m->st, arg);
	m->st.total_ms = (host_now_ns() - m->start_ns) / 1000000ULL;
	pthread_mutex_unlock(&m->lock);
}

/* ---- The source after the state is out ---- */

/* Reads the destination's next record, which must be want with at least min bytes. */
static int read_answer(struct stream *s, uint8_t want, uint32_t min, const uint8_t **p,
		       uint32_t *len, char *why, size_t n)
{
	uint8_t type;
	uint16_t ver;
	int err = stream_read_record(s, &type, &ver, p, len);

	if (err)
		return err;
	if (type == REC_NACK) {
		char msg[160];
		str_escape(msg, sizeof(msg), *p, *len);
		snprintf(why, n, "the destination refused: %s", msg);
		return -EPROTO;
	}
	if (type != want || *len < min) {
		snprintf(why, n, "unexpected answer from the destination (record %u)", type);
		return -EPROTO;
	}
	return 0;
}

/* Once committed, the link to the destination is lost: connects again until the
 * destination answers RESUME (need, when not NULL, becomes the pages it lacks). Returns 0,
 * or -ESHUTDOWN when this VMM is ending. The guest stays paused here all along. */
int src_resume(struct migration *m, uint64_t id, struct stream *s, uint64_t *t_run, uint64_t *need,
	       size_t words)
{
	uint64_t t0 = host_now_ns(), next_log = t0 + 30000000000ULL;
	bool told_unknown = false;

	log_warn("migration: the link to the destination is lost after the hand-over; "
		 "reconnecting (the VM stays paused here, it now belongs to the destination)");
	for (;;) {
		pthread_mutex_lock(&m->lock);
		if (s->fd >= 0) {
			shutdown(s->fd, SHUT_RDWR);
			close(s->fd);
			s->fd = -1;
		}
		bool quit = m->quit;
		pthread_mutex_unlock(&m->lock);
		if (quit)
			return -ESHUTDOWN;
		char why[200] = "";
		int fd = connect_uri(m->link, m->params.uri, why, sizeof(why));
		if (fd >= 0) {
			const uint8_t *p;
			uint32_t len;
			uint8_t idb[8];
			put_u64(idb, id);
			pthread_mutex_lock(&m->lock);
			s->fd = fd;
			s->len = s->pos = 0;
			s->err[0] = 0;
			pthread_mutex_unlock(&m->lock);
			int err = stream_write_header(s, STREAM_MIGRATION);
			if (!err)
				err = send_record(s, REC_RESUME, idb, sizeof(idb));
			if (!err)
				err = read_answer(s, REC_RESUME_ACK, 8, &p, &len, why, sizeof(why));
			if (!err && need && len != 8 + words * 8)
				err = -EPROTO;
			if (!err) {
				*t_run = get_u64(p);
				for (size_t w = 0; need && w < words; w++)
					need[w] = get_u64(p + 8 + w * 8);
				log_info("migration: the destination is back after %" PRIu64 " ms",
					 (host_now_ns() - t0) / 1000000);
				return 0;
			}
			if (err == -EPROTO && !told_unknown) {
				log_error("migration: reconnecting: %s", why[0] ? why : s->err);
				told_unknown = true;
			}
		}
		if (host_now_ns() > next_log) {
			log_warn("migration: still no link to the destination (%" PRIu64 " s)",
				 (uint64_t)((host_now_ns() - t0) / 1000000000ULL));
			next_log += 30000000000ULL;
		}
		sleep_ns(500000000ULL);
	}
}
/* The hand-over, with the state out and the guest paused here: the destination says it
 * has loaded it (ACK); until then any failure leaves the VM here. Then GO: from that
 * instant the VM belongs to the destination and this side never resumes it, whatever
 * happens to the link (it reconnects instead). *committed says which side of the line a
 * failure fell on. Fills *t_run with the instant the destination's vCPUs ran. */
static int src_handover(struct migration *m, struct stream *s, struct page_sender *ps,
			uint64_t *need, uint64_t *hot, bool *committed, uint64_t *t_run, char *why,
			size_t n)
{
	const uint8_t *p;
	uint32_t len;
	int err = read_answer(s, REC_ACK, 16, &p, &len, why, n);
	uint64_t id = err ? 0 : get_u64(p + 8);

	if (!err) {
		pthread_mutex_lock(&m->lock);
		if (m->cancel) {
			err = -ECANCELED;
		} else {
			m->committing = true;
			*committed = true;
		}
		pthread_mutex_unlock(&m->lock);
	}
	if (err) {
		/* Tell the destination to drop what it holds (it may not hear it). */
		static const char msg[] = "the source keeps the VM";
		s->cancelled = 0;
		s->err[0] = 0; /* a failed read must not stop this write */
		(void)send_record(s, REC_NACK, msg, sizeof(msg) - 1);
		return err;
	}
	/* The disks' locks go with the VM: the destination takes them when it hears GO. From
	 * here on this side never resumes the guest (committed), so nothing takes them back. */
	(void)m->vm->state_ops->claim(m->vm, false);
	err = send_record(s, REC_GO, NULL, 0);
	if (!err)
		err = read_answer(s, REC_RUNNING, 8, &p, &len, why, n);
	if (!err)
		*t_run = get_u64(p);
	if (err) {
		size_t words = (size_t)(((m->vm->ram.size >> PAGE_SHIFT) + 63) / 64);
		err = src_resume(m, id, s, t_run, m->params.postcopy ? need : NULL, words);
		if (err)
			return err;
	}
	if (m->params.postcopy)
		return src_postcopy(m, ps, s, id, need, hot);
	/* Nothing more: the destination may let go of its listening socket. */
	(void)send_record(s, REC_PC_DONE, NULL, 0);
	return 0;
}

static void *throttle_thread(void *arg)
{
	struct migration *m = arg;
	const uint64_t period = 20000000ULL; /* 20 ms */

	while (!m->throttle_stop) {
		unsigned pct = m->throttle_pct;
		if (!pct) {
			sleep_ns(period);
			continue;
		}
		vm_pause(m->vm);
		sleep_ns(period * pct / 100);
		vm_resume(m->vm);
		sleep_ns(period * (100 - pct) / 100);
	}
	return NULL;
}

static void throttle_set(struct migration *m, unsigned pct)
{
	m->throttle_pct = pct;
	if (pct && !m->throttle_running) {
		m->throttle_stop = false;
		if (pthread_create(&m->throttle_thread, NULL, throttle_thread, m) == 0)
			m->throttle_running = true;
	}
}

static void throttle_end(struct migration *m)
{
	if (m->throttle_running) {
		m->throttle_stop = true;
		pthread_join(m->throttle_thread, NULL);
		m->throttle_running = false;
	}
	m->throttle_pct = 0;
}

struct pass_info {
	unsigned pass;
	uint64_t remaining, dirty_rate, bw_mibps, expected_ms, bytes;
	unsigned throttle;
};

static void set_pass(struct migrate_status *st, void *arg)
{
	struct pass_info *p = arg;
	st->pass = p->pass;
	st->rounds = p->pass > 0 ? p->pass - 1 : 0;
	st->remaining_pages = p->remaining;
	st->dirty_rate_pps = p->dirty_rate;
	st->bandwidth_mibps = p->bw_mibps;
	st->expected_downtime_ms = p->expected_ms;
	st->bytes = p->bytes;
	st->throttle_pct = p->throttle;
}

/* Makes the file a snapshot is written to before it is renamed to path: a new one, in
 * path's directory (a rename stays within one file system), made exclusively under a name
 * nobody can have planted a link or a FIFO at (O_EXCL never follows a link). A path that
 * exists and is not a regular file (a symlink, a device, a FIFO, a directory) is refused:
 * the snapshot would replace it. The descriptor with tmp (n bytes) its name, or -errno with
 * why. */
static int snapshot_create(const char *path, char *tmp, size_t tn, char *why, size_t n)
{
	struct stat st;

	if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		snprintf(why, n, "'%.120s': exists and is not a regular file (not replaced)", path);
		return -EEXIST;
	}
	const char *slash = strrchr(path, '/');
	int dirlen = slash ? (int)(slash - path) + 1 : 0;
	if ((size_t)snprintf(tmp, tn, "%.*s.%s.XXXXXX", dirlen, path, slash ? slash + 1 : path) >=
	    tn) {
		snprintf(why, n, "'%.120s': path too long", path);
		return -ENAMETOOLONG;
	}
	int fd = mkostemp(tmp, O_CLOEXEC); /* O_CREAT | O_EXCL, mode 0600 */
	if (fd < 0) {
		int err = -errno;
		snprintf(why, n, "'%.120s': %s", path, strerror(-err));
		return err;
	}
	return fd;
}

/* Writes a whole snapshot with the guest paused. */
static int do_snapshot(struct migration *m, char *why, size_t n)
{
	struct vm *vm = m->vm;
	char tmp[4200];
	struct stream s;
	struct sbuf b;
	int err;

	int fd = snapshot_create(m->snapshot_path, tmp, sizeof(tmp), why, n);
	if (fd < 0)
		return fd;
	err = stream_init(&s, fd);
	if (err) {
		close(fd);
		unlink(tmp);
		snprintf(why, n, "out of memory");
		return err;
	}
	sbuf_init(&b);
	struct page_sender ps = { .s = &s };
	sbuf_init(&ps.rec);
	if (m->params.compress)
		ps.zctx = ZSTD_createCCtx();

	vm_pause(vm);
	uint64_t t_pause = host_now_ns();
	err = quiesce_devices(m, why, n);
	if (!err) {
		config_save(vm, &b);
		err = stream_write_header(&s, STREAM_SNAPSHOT);
		if (!err)
			err = stream_write_record(&s, REC_CONFIG, CONFIG_VERSION, b.data,
						  (uint32_t)b.len);
		uint64_t npages = vm->ram.size >> PAGE_SHIFT;
		for (uint64_t i = 0; i < npages && !err; i++) {
			const uint8_t *pg = vm->ram.host + i * PAGE_SIZE;
			/* A snapshot leaves zero pages out: the restored VM starts zeroed. */
			if (!page_is_zero(pg))
				err = pages_add(&ps, i, pg);
			if (m->cancel)
				err = -ECANCELED;
		}
		if (!err)
			err = pages_flush(&ps);
		if (!err)
			err = write_final_state(vm, &s, t_pause);
		if (!err && fsync(fd) < 0)
			err = -errno;
		if (err && !why[0])
			snprintf(why, n, "'%.60s': %.120s", tmp, s.err[0] ? s.err : strerror(-err));
		unquiesce_devices(vm);
	}
	vm_resume(vm);
	uint64_t bytes = s.bytes;
	stream_free(&s);
	sbuf_free(&b);
	sbuf_free(&ps.rec);
	ZSTD_freeCCtx(ps.zctx);
	if (close(fd) < 0 && !err) {
		err = -errno;
		snprintf(why, n, "'%.120s': %s", tmp, strerror(errno));
	}
	if (!err && rename(tmp, m->snapshot_path) < 0) {
		err = -errno;
		snprintf(why, n, "'%.120s': %s", m->snapshot_path, strerror(errno));
	}
	if (err)
		unlink(tmp);
	pthread_mutex_lock(&m->lock);
	m->st.bytes = bytes;
	m->st.downtime_us = (host_now_ns() - t_pause) / 1000ULL;
	pthread_mutex_unlock(&m->lock);
	return err;
}

/* Waits for the destination to have loaded the pass just sent. */
static int wait_pass_ack(struct stream *s, char *why, size_t n)
{
	uint8_t type;
	uint16_t ver;
	const uint8_t *p;
	uint32_t len;
	int err = stream_read_record(s, &type, &ver, &p, &len);

	if (err)
		return err;
	if (type == REC_NACK) {
		snprintf(why, n, "the destination refused: %.*s", (int)(len > 150 ? 150 : len), p);
		return -EPROTO;
	}
	if (type != REC_PASS_ACK) {
		snprintf(why, n, "unexpected answer from the destination (record %u)", type);
		return -EPROTO;
	}
	return 0;
}

/* The migration proper; on failure before the acknowledgement the guest runs on here. */
/* After a failed hand-over: tells the destination, on new connections, that this side kept
 * the VM (ABANDON with the stream's token), so that it ends instead of waiting for the source
 * forever; tried for the reconnect window, until one is delivered. */
struct abandon {
	char uri[sizeof(((struct migrate_params *)0)->uri)];
	uint64_t token;
	struct mig_link *link; /* a reference */
};

static void *abandon_thread(void *arg)
{
	struct abandon *a = arg;
	uint64_t end = host_now_ns() + RECONNECT_WINDOW_NS;
	char why[200];
	uint8_t tb[8];

	put_u64(tb, a->token);
	while (host_now_ns() < end) {
		int fd = connect_uri(a->link, a->uri, why, sizeof(why));
		struct stream w;
		if (fd >= 0 && stream_init(&w, fd) == 0) {
			set_timeouts(fd, 2);
			int err = stream_write_header(&w, STREAM_MIGRATION);
			if (!err)
				err = stream_write_record(&w, REC_ABANDON, 1, tb, sizeof(tb));
			if (!err)
				err = stream_flush(&w);
			/* Delivered once the other side has read it and closed. */
			char c;
			if (!err) {
				shutdown(fd, SHUT_WR);
				while (read(fd, &c, 1) > 0)
					;
			}
			stream_free(&w);
			close(fd);
			if (!err) {
				log_info("migration: told %s that this side kept the VM", a->uri);
				break;
			}
		} else if (fd >= 0) {
			close(fd);
		}
		sleep_ns(500000000);
	}
	mig_link_unref(a->link);
	free(a);
	return NULL;
}

static void abandon_start(struct mig_link *link, const char *uri, uint64_t token)
{
	struct abandon *a = calloc(1, sizeof(*a));
	pthread_t t;
	pthread_attr_t attr;

	if (!a)
		return;
	snprintf(a->uri, sizeof(a->uri), "%s", uri);
	a->token = token;
	a->link = mig_link_ref(link);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, abandon_thread, a)) {
		mig_link_unref(a->link);
		free(a);
	}
	pthread_attr_destroy(&attr);
}

static int do_migrate(struct migration *m, char *why, size_t n)
{
	struct vm *vm = m->vm;
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	size_t words = (size_t)((npages + 63) / 64);
	uint64_t *bitmap = calloc(words, sizeof(uint64_t));
	uint64_t *hot = NULL; /* post-copy: the pages the guest used just before the pause */
	struct stream s;
	struct sbuf b;
	bool paused = false, quiesced = false, committed = false, state_sent = false;
	int err;

	if (!bitmap) {
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	int fd = connect_uri(m->link, m->params.uri, why, n);
	if (fd < 0) {
		free(bitmap);
		return fd;
	}
	err = stream_init(&s, fd);
	if (err) {
		close(fd);
		free(bitmap);
		snprintf(why, n, "out of memory");
		return err;
	}
	s.rate_bps = (uint64_t)m->params.bandwidth_mibps << 20;
	pthread_mutex_lock(&m->lock);
	m->stream = &s;
	pthread_mutex_unlock(&m->lock);

	sbuf_init(&b);
	struct page_sender ps = { .s = &s };
	sbuf_init(&ps.rec);
	if (m->params.compress)
		ps.zctx = ZSTD_createCCtx();

	/* The token proves an ABANDON to be ours, should we keep the VM after the
	 * destination has loaded it without hearing so. */
	uint64_t token = 0;
	uint8_t tb[8];
	if (getrandom(&token, sizeof(token), 0) != sizeof(token))
		token = host_now_ns() ^ (uint64_t)getpid() << 32;
	token |= 1; /* never 0, which means none */
	put_u64(tb, token);
	config_save(vm, &b);
	err = stream_write_header(&s, STREAM_MIGRATION);
	if (!err)
		err = stream_write_record(&s, REC_SOURCE, 1, tb, sizeof(tb));
	if (!err)
		err = stream_write_record(&s, REC_CONFIG, CONFIG_VERSION, b.data, (uint32_t)b.len);
	if (!err)
		err = vm_dirty_log_start(vm);
	bool logging_access = false;
	if (!err && m->params.postcopy) {
		/* Post-copy from the start: watch for a moment which pages the guest uses,
		 * to send those first after the hand-over (fewer faults as it starts there). */
		vm_pause(vm);
		logging_access = vm_access_log_start(vm) == 0;
		vm_resume(vm);
		for (int i = 0; i < POSTCOPY_WATCH_MS / 10 && !m->cancel; i++)
			sleep_ns(10000000);
	}

	uint64_t target_ns =
		(uint64_t)(m->params.downtime_ms ? m->params.downtime_ms : DEFAULT_DOWNTIME_MS) *
		1000000ULL;
	double bw = 0; /* bytes per second, measured */
	uint64_t last_sync = host_now_ns();
	unsigned pass = 0, no_progress = 0;
	uint64_t prev_dirty = UINT64_MAX;
	struct pass_info pi = { 0 };

	while (!err) {
		pass++;
		/* Harvest; from the second pass on, stop here when the rest fits the target. */
		vm_pause(vm);
		paused = true;
		err = dirty_sync(vm, bitmap, true);
		if (err)
			break;
		uint64_t now = host_now_ns();
		uint64_t dirty = bitmap_count(bitmap, npages);
		double dt = (double)(now - last_sync) / 1e9;
		last_sync = now;
		pi.pass = pass;
		pi.remaining = dirty;
		pi.dirty_rate = pass > 1 && dt > 0 ? (uint64_t)((double)dirty / dt) : 0;
		pi.bw_mibps = (uint64_t)(bw / (1 << 20));
		/* Zero pages cost little to send; count what was seen so far. */
		double cost = bw > 0 ? (double)dirty * PAGE_SIZE / bw : 1e9;
		/* Post-copy hands over at once: the outage is the state's, not the pages'. */
		pi.expected_ms = m->params.postcopy ? 0 : (uint64_t)(cost * 1000);
		pi.bytes = s.bytes;
		pi.throttle = m->throttle_pct;
		status_update(m, set_pass, &pi);
		if (m->to_postcopy)
			m->params.postcopy = true;
		if (m->params.postcopy ||
		    (pass > 1 && (cost * 1e9 <= (double)target_ns || pass >= MAX_PASSES)))
			break; /* switch over, still paused */
		vm_resume(vm);
		paused = false;
		if (m->cancel) {
			err = -ECANCELED;
			break;
		}

		/* Auto-converge: when a pass does not shrink what is dirty, hold the vCPUs a
		 * growing share of the time. */
		if (pass > 2) {
			if (dirty >= prev_dirty * 9 / 10)
				no_progress++;
			else
				no_progress = 0;
			if (no_progress >= 2) {
				unsigned t = m->throttle_pct ? m->throttle_pct + 10 : 20;
				throttle_set(m, t > 99 ? 99 : t);
				no_progress = 0;
			}
		}
		prev_dirty = dirty;

		uint64_t t0 = host_now_ns(), b0 = s.bytes;
		err = pages_send_bitmap(m, &ps, bitmap);
		if (!err)
			err = stream_write_record(&s, REC_PASS_END, 1, NULL, 0);
		if (!err)
			err = stream_flush(&s);
		if (!err)
			err = wait_pass_ack(&s, why, n);
		uint64_t t1 = host_now_ns();
		if (!err && t1 > t0 && s.bytes > b0) {
			double sample = (double)(s.bytes - b0) / ((double)(t1 - t0) / 1e9);
			/* Short passes say little about the link: weigh by duration. */
			bw = bw > 0 && t1 - t0 < 50000000ULL ? (bw + sample) / 2 : sample;
		}
	}
	throttle_end(m);
	uint64_t t_pause = host_now_ns();
	if (logging_access) {
		/* The harts must be held while the log goes (they write to it). */
		if (!paused)
			vm_pause(vm);
		hot = vm_access_log_stop(vm);
		if (!paused)
			vm_resume(vm);
	}
	if (!err) {
		/* Switch-over: paused here. Devices quiet and durable, the last pages, the
		 * state, then the destination's word. */
		quiesced = true;
		/* The guest waits now: the last pages go raw, and the bandwidth cap starts a
		 * fresh window instead of charging the passes' debt to the downtime. */
		ZSTD_freeCCtx(ps.zctx);
		ps.zctx = NULL;
		s.rate_start_ns = 0;
		err = quiesce_devices(m, why, n);
		uint64_t t_q = host_now_ns();
		if (!err)
			err = dirty_sync(vm, bitmap, true);
		uint64_t last = bitmap_count(bitmap, npages);
		uint64_t t_s = host_now_ns();
		if (!err && m->params.postcopy) {
			/* Post-copy: the destination runs without these pages and fetches them
			 * (bitmap keeps them: src_postcopy sends them). */
			sbuf_reset(&b);
			for (size_t w = 0; w < words; w++)
				sbuf_u64(&b, bitmap[w]);
			err = b.oom ? -ENOMEM
				    : stream_write_record(&s, REC_PC_START, 1, b.data,
							  (uint32_t)b.len);
		} else if (!err) {
			err = pages_send_bitmap(m, &ps, bitmap);
		}
		uint64_t t_p = host_now_ns();
		if (!err) {
			err = write_final_state(vm, &s, t_pause);
			state_sent = !err;
		}
		log_debug("migration: switch-over: quiesce %" PRIu64 " us, sync %" PRIu64
			  " us, %" PRIu64 " pages in %" PRIu64 " us, state %" PRIu64 " us",
			  (t_q - t_pause) / 1000, (t_s - t_q) / 1000, last, (t_p - t_s) / 1000,
			  (host_now_ns() - t_p) / 1000);
		uint64_t t_run = 0;
		if (!err)
			err = src_handover(m, &s, &ps, bitmap, hot, &committed, &t_run, why, n);
		if (committed) {
			/* Both stamps are CLOCK_MONOTONIC: one machine shares it. */
			uint64_t down = t_run > t_pause ? t_run - t_pause : host_now_ns() - t_pause;
			pthread_mutex_lock(&m->lock);
			m->st.downtime_us = down / 1000ULL;
			m->st.bytes = s.bytes;
			m->st.rounds = pass;
			m->st.remaining_pages = 0;
			pthread_mutex_unlock(&m->lock);
		}
	}
	if (err && !why[0])
		snprintf(why, n, "%s", s.err[0] ? s.err : strerror(-err));
	if (err == -ECANCELED)
		snprintf(why, n, "cancelled");
	if (err) {
		pthread_mutex_lock(&m->lock);
		m->st.bytes = s.bytes;
		pthread_mutex_unlock(&m->lock);
	}

	pthread_mutex_lock(&m->lock);
	m->stream = NULL;
	pthread_mutex_unlock(&m->lock);
	vm_dirty_log_stop(vm);
	if (err && committed) {
		/* The destination has the VM; this side never resumes it. */
		snprintf(why, n, "this VMM is ending while the destination %s",
			 m->params.postcopy ? "still lacks pages" : "may not have heard the end");
	} else if (err) {
		/* Nothing was acknowledged: the guest goes on here as if nothing happened. */
		if (quiesced || paused)
			unquiesce_devices(vm);
		if (paused)
			vm_resume(vm);
		/* The destination may have it all and wait for a word it will not get. */
		if (state_sent)
			abandon_start(m->link, m->params.uri, token);
	}
	/* On success the vCPUs stay paused: the VM now lives on the destination. The
	 * connection may be another than the first (src_resume). */
	if (s.fd >= 0) {
		shutdown(s.fd, SHUT_RDWR);
		close(s.fd);
	}
	stream_free(&s);
	sbuf_free(&b);
	sbuf_free(&ps.rec);
	ZSTD_freeCCtx(ps.zctx);
	free(hot);
	free(bitmap);
	return err;
}

void *job_thread(void *arg)
{
	struct migration *m = arg;
	char why[200] = "";
	bool snapshot = m->is_snapshot; /* the job's fields are the next job's once busy ends */
	int err = snapshot ? do_snapshot(m, why, sizeof(why)) : do_migrate(m, why, sizeof(why));

	if (err == -ESHUTDOWN) {
		log_warn("migration: %s", why);
	} else if (err) {
		log_warn("%s %s: %s; the guest runs on here", snapshot ? "snapshot" : "migration",
			 err == -ECANCELED ? "cancelled" : "failed", why);
	} else if (snapshot) {
		log_info("snapshot written to %s", m->snapshot_path);
	} else {
		log_info("migration completed: the VM runs on the destination");
	}
	pthread_mutex_lock(&m->lock);
	m->st.total_ms = (host_now_ns() - m->start_ns) / 1000000ULL;
	if (!err) {
		m->st.state = MIGRATE_COMPLETED;
	} else {
		m->st.state = err == -ECANCELED ? MIGRATE_CANCELLED : MIGRATE_FAILED;
		snprintf(m->st.error, sizeof(m->st.error), "%s", why);
	}
	/* The job is over before anyone hears so: a client told "done" (the snapshot's
	 * answer, a final status) may start the next job at once (job_start joins this
	 * thread). A migration that completed lingers below, but job_start refuses a VM
	 * that has migrated away. */
	m->busy = false;
	migration_done_fn done = snapshot ? m->done : NULL;
	void *done_opaque = m->done_opaque;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);

	if (done)
		done(done_opaque, err, why);
	if (!err && !snapshot) {
		/* Let a client read the final status, then end this process. */
		uint64_t deadline = host_now_ns() + DONE_LINGER_NS;
		struct timespec ts = { .tv_sec = (time_t)(deadline / 1000000000ULL),
				       .tv_nsec = (long)(deadline % 1000000000ULL) };
		pthread_mutex_lock(&m->lock);
		while (!m->done_read && host_now_ns() < deadline)
			if (pthread_cond_timedwait(&m->cond, &m->lock, &ts) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&m->lock);
		vm_request_exit(m->vm, VM_EXIT_MIGRATED, 0);
	}
	return NULL;
}
