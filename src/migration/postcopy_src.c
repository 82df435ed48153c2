/* Post-copy on the source: the destination's requests read on a thread of their own, and
 * pages pushed, the requested ones first. */
#define _GNU_SOURCE
#include "migration/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"

/* Post-copy on the source: the destination's requests first, the rest in order from the
 * last one asked for. */
#define PC_BACKLOG_MAX (256U << 10) /* bytes queued in the socket before pushing more */

/* With TLS, fd is the socket pair to the relay: SIOCOUTQ counts what the relay has not
 * taken yet, and the relay keeps little unsent in TCP (link.c: TCP_NOTSENT_LOWAT). */
static unsigned socket_backlog(int fd)
{
	int n = 0;
	return ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0 ? (unsigned)n : 0;
}

struct pc_src {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int fd;
	uint64_t q[4096];
	unsigned qn;
	bool complete, broken;
	pthread_t reader;
	bool reader_started;
};

static void *src_reader_thread(void *arg)
{
	struct pc_src *p = arg;
	struct stream r;
	bool ok = stream_init(&r, p->fd) == 0;

	while (ok) {
		uint8_t type;
		uint16_t ver;
		const uint8_t *pl;
		uint32_t len;
		int err = stream_read_record(&r, &type, &ver, &pl, &len);
		pthread_mutex_lock(&p->lock);
		if (!err && type == REC_PC_REQ && len % 8 == 0) {
			for (uint32_t i = 0; i < len / 8 && p->qn < 4096; i++)
				p->q[p->qn++] = get_u64(pl + i * 8);
		} else if (!err && type == REC_PC_COMPLETE) {
			p->complete = true;
			ok = false;
		} else {
			p->broken = true;
			ok = false;
		}
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
	if (r.buf)
		stream_free(&r);
	else {
		pthread_mutex_lock(&p->lock);
		p->broken = true;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

static void pc_reader_start(struct pc_src *p, int fd)
{
	struct timeval none = { 0 };
	p->fd = fd;
	p->qn = 0;
	p->broken = false;
	/* The destination may say nothing for long: only writes time out here. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
	p->reader_started = pthread_create(&p->reader, NULL, src_reader_thread, p) == 0;
	if (!p->reader_started)
		p->broken = true;
}

static void pc_reader_stop(struct pc_src *p)
{
	if (p->reader_started) {
		shutdown(p->fd, SHUT_RDWR);
		pthread_join(p->reader, NULL);
		p->reader_started = false;
	}
}

static void set_postcopy(struct migrate_status *st, void *arg)
{
	const uint64_t *v = arg;
	st->postcopy_active = true;
	st->remaining_pages = v[0];
	st->bytes = v[1];
}

/* Sends the pages in need until the destination has them all. 0, or -ESHUTDOWN. */
int src_postcopy(struct migration *m, struct page_sender *ps, struct stream *s, uint64_t id,
		 uint64_t *need, uint64_t *hot)
{
	struct vm *vm = m->vm;
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	size_t words = (size_t)((npages + 63) / 64);
	static const uint8_t zero_page[PAGE_SIZE];
	struct pc_src *p = calloc(1, sizeof(*p));
	struct pagemap *pm = malloc(sizeof(*pm));
	uint64_t left = bitmap_count(need, npages), cursor = 0, hot_w = 0, t_run, backlog_since = 0;
	unsigned last_backlog = 0;
	bool done_sent = false;
	int ret = 0;

	if (!p || !pm) {
		free(p);
		free(pm);
		return -ENOMEM;
	}
	pm->fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	pm->first = pm->count = 0;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	pc_reader_start(p, s->fd);
	uint64_t nhot = 0;
	for (size_t w = 0; hot && w < words; w++)
		nhot += (uint64_t)__builtin_popcountll(hot[w] & need[w]);
	log_info("migration: post-copy: %" PRIu64 " pages to send while the guest runs there, "
		 "first the %" PRIu64 " it used last",
		 left, nhot);
	for (;;) {
		uint64_t q[256];
		unsigned nq = 0;
		pthread_mutex_lock(&p->lock);
		if (done_sent && !p->complete && !p->broken && !p->qn) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += IO_TIMEOUT_S;
			if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT &&
			    !p->complete && !p->qn)
				p->broken = true; /* no word from the destination */
		}
		bool complete = p->complete, broken = p->broken;
		/* First asked, first served: a fault's page before those asked after it. */
		nq = p->qn < 256 ? p->qn : 256;
		memcpy(q, p->q, nq * sizeof(q[0]));
		memmove(p->q, p->q + nq, (p->qn - nq) * sizeof(q[0]));
		p->qn -= nq;
		pthread_mutex_unlock(&p->lock);
		if (complete)
			break;
		if (broken || m->quit) {
			pc_reader_stop(p);
			if (m->quit) {
				ret = -ESHUTDOWN;
				break;
			}
			ret = src_resume(m, id, s, &t_run, need, words);
			if (ret)
				break;
			s->rate_bps = (uint64_t)m->params.bandwidth_mibps << 20;
			s->rate_start_ns = 0;
			sbuf_reset(&ps->rec);
			left = bitmap_count(need, npages);
			done_sent = false;
			pc_reader_start(p, s->fd);
			continue;
		}
		int err = 0;
		unsigned backlog = !nq && left ? socket_backlog(s->fd) : 0;
		if (backlog > PC_BACKLOG_MAX) {
			/* Keep the queue to the destination short, so that a page it asks for
			 * does not wait behind megabytes of others. A queue that does not move
			 * for the I/O timeout is a dead link. */
			uint64_t now = host_now_ns();
			if (backlog != last_backlog) {
				last_backlog = backlog;
				backlog_since = now;
			}
			pthread_mutex_lock(&p->lock);
			if (now - backlog_since > IO_TIMEOUT_S * 1000000000ULL)
				p->broken = true;
			if (!p->qn && !p->complete && !p->broken) {
				struct timespec ts;
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += 500000;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&p->cond, &p->lock, &ts);
			}
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		for (unsigned i = 0; i < nq && !err; i++) {
			uint64_t idx = q[i];
			if (idx >= npages)
				continue;
			/* The guest touches memory in runs: the rest follows from here. */
			cursor = idx / 64;
			err = pages_add(ps, idx, vm->ram.host + idx * PAGE_SIZE);
			if (need[idx / 64] >> (idx % 64) & 1) {
				need[idx / 64] &= ~(1ULL << (idx % 64));
				left--;
			}
		}
		if (!nq && left) {
			/* Up to 64 pages in need (a quarter MiB), then requests again: first
			 * those the vCPUs used last (hot), then in address order from the last
			 * page asked for. */
			uint64_t bits = 0, w;
			while (hot && hot_w < words && !(bits = hot[hot_w] & need[hot_w]))
				hot_w++;
			if (bits) {
				w = hot_w;
				hot[w] = 0;
				need[w] &= ~bits;
			} else {
				while (!need[cursor])
					cursor = (cursor + 1) % words;
				w = cursor;
				bits = need[w];
				need[w] = 0;
			}
			uint64_t unbacked =
				(w + 1) * 64 <= npages ? pagemap_unbacked(pm, vm, w * 64) : 0;
			while (bits && !err) {
				unsigned bit = (unsigned)__builtin_ctzll(bits);
				bits &= bits - 1;
				uint64_t idx = w * 64 + bit;
				err = pages_add(ps, idx,
						unbacked >> bit & 1
							? zero_page
							: vm->ram.host + idx * PAGE_SIZE);
				left--;
			}
		} else if (!nq && !done_sent) {
			err = pages_flush(ps);
			if (!err)
				err = stream_write_record(s, REC_PC_DONE, 1, NULL, 0);
			done_sent = true;
		}
		if (!err)
			err = pages_flush(ps);
		if (!err)
			err = stream_flush(s);
		if (err) {
			pthread_mutex_lock(&p->lock);
			p->broken = true;
			pthread_mutex_unlock(&p->lock);
		}
		uint64_t v[2] = { left, s->bytes };
		status_update(m, set_postcopy, v);
	}
	pc_reader_stop(p);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	if (pm->fd >= 0)
		close(pm->fd);
	free(pm);
	free(p);
	return ret;
}
