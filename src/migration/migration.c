/* Live migration and snapshots: the object main and the control socket hold (see
 * migration.h). The stream's records are in wire.c, the jobs in source.c and dest.c; the
 * file map is in docs/migration.md. */
#define _GNU_SOURCE
#include "migration/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"
#include "migration/link.h"

const char *migrate_state_name(enum migrate_state s)
{
	switch (s) {
	case MIGRATE_ACTIVE: return "active";
	case MIGRATE_COMPLETED: return "completed";
	case MIGRATE_FAILED: return "failed";
	case MIGRATE_CANCELLED: return "cancelled";
	default: return "none";
	}
}

int migration_create(struct vm *vm, struct migration **out)
{
	struct migration *m = calloc(1, sizeof(*m));
	pthread_condattr_t ca;

	if (!m)
		return -ENOMEM;
	m->vm = vm;
	if (vm->cfg) {
		char why[300] = "";
		int err = mig_link_create(vm->cfg->migration_key, vm->cfg->migration_tls, &m->link,
					  why, sizeof(why));
		if (err) {
			log_error("%s", why);
			free(m);
			return err;
		}
		m->insecure = vm->cfg->migration_insecure;
	}
	pthread_mutex_init(&m->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cond, &ca);
	pthread_condattr_destroy(&ca);
	*out = m;
	return 0;
}

static void join_job(struct migration *m)
{
	if (m->thread_started) {
		pthread_join(m->thread, NULL);
		m->thread_started = false;
	}
}

void migration_stop_incoming(struct migration *m)
{
	if (m && m->dest) {
		dest_free(m->dest);
		m->dest = NULL;
	}
}

bool migration_incoming_status(struct migration *m, uint64_t *missing, bool *link_up)
{
	struct dest *d = m ? m->dest : NULL;
	if (!d || !d->postcopy || atomic_load(&d->finished))
		return false;
	*missing = atomic_load(&d->missing);
	*link_up = atomic_load(&d->link_up);
	return true;
}

void migration_shutdown(struct migration *m)
{
	if (!m)
		return;
	migration_stop_incoming(m);
	migration_cancel(m);
	pthread_mutex_lock(&m->lock);
	m->quit = 1;
	if (m->stream && m->stream->fd >= 0)
		shutdown(m->stream->fd, SHUT_RDWR);
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_lock(&m->lock);
	m->done_read = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	join_job(m);
}

void migration_destroy(struct migration *m)
{
	if (!m)
		return;
	migration_shutdown(m);
	mig_link_unref(m->link);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static int job_start(struct migration *m, bool snapshot, char *err, size_t errlen)
{
	if (!m->vm->state_ops) {
		snprintf(err, errlen, "this machine cannot save its state");
		return -ENOTSUP;
	}
	pthread_mutex_lock(&m->lock);
	if (m->busy) {
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "a %s is in progress",
			 m->is_snapshot ? "snapshot" : "migration");
		return -EBUSY;
	}
	if (m->st.state == MIGRATE_COMPLETED && !m->is_snapshot) {
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "the VM has migrated away");
		return -EINVAL;
	}
	pthread_mutex_unlock(&m->lock);
	join_job(m);
	pthread_mutex_lock(&m->lock);
	memset(&m->st, 0, sizeof(m->st));
	m->st.state = MIGRATE_ACTIVE;
	m->st.snapshot = snapshot;
	m->is_snapshot = snapshot;
	m->cancel = 0;
	m->to_postcopy = 0;
	m->committing = false;
	m->done_read = false;
	m->start_ns = host_now_ns();
	m->busy = true;
	int e = pthread_create(&m->thread, NULL, job_thread, m);
	if (e) {
		m->busy = false;
		m->st.state = MIGRATE_FAILED;
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "cannot start a thread: %s", strerror(e));
		return -e;
	}
	m->thread_started = true;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int migration_start(struct migration *m, const struct migrate_params *p, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	if (!m->busy)
		m->done = NULL;
	pthread_mutex_unlock(&m->lock);
	if (strncmp(p->uri, "tcp:", 4) != 0 && strncmp(p->uri, "unix:", 5) != 0) {
		snprintf(err, errlen, "'%s': must be tcp:HOST:PORT or unix:PATH", p->uri);
		return -EINVAL;
	}
	if (strncmp(p->uri, "tcp:", 4) == 0 && !m->link && !m->insecure) {
		snprintf(err, errlen,
			 "'%s': TCP migration needs this VMM started with --migration-key or "
			 "--migration-tls (or --migration-insecure)",
			 p->uri);
		return -EPERM;
	}
	pthread_mutex_lock(&m->lock);
	bool busy = m->busy;
	if (!busy)
		m->params = *p;
	pthread_mutex_unlock(&m->lock);
	if (busy) {
		snprintf(err, errlen, "a job is in progress");
		return -EBUSY;
	}
	return job_start(m, false, err, errlen);
}

int migration_snapshot_start(struct migration *m, const char *path, migration_done_fn done,
			     void *opaque, char *err, size_t errlen)
{
	if (!path[0] || strlen(path) >= sizeof(m->snapshot_path) - 8) {
		snprintf(err, errlen, "bad snapshot path");
		return -EINVAL;
	}
	pthread_mutex_lock(&m->lock);
	bool busy = m->busy;
	if (!busy) {
		snprintf(m->snapshot_path, sizeof(m->snapshot_path), "%s", path);
		memset(&m->params, 0, sizeof(m->params));
		m->done = done;
		m->done_opaque = opaque;
	}
	pthread_mutex_unlock(&m->lock);
	if (busy) {
		snprintf(err, errlen, "a job is in progress");
		return -EBUSY;
	}
	return job_start(m, true, err, errlen);
}

int migration_cancel(struct migration *m)
{
	pthread_mutex_lock(&m->lock);
	if (!m->busy || m->st.state != MIGRATE_ACTIVE) {
		pthread_mutex_unlock(&m->lock);
		return -ENOENT;
	}
	if (m->committing) {
		pthread_mutex_unlock(&m->lock);
		return -EBUSY;
	}
	m->cancel = 1;
	if (m->stream) {
		m->stream->cancelled = 1;
		/* Wake a blocked send or receive. */
		shutdown(m->stream->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int migration_switch_postcopy(struct migration *m)
{
	pthread_mutex_lock(&m->lock);
	int ret = !m->busy || m->is_snapshot || m->st.state != MIGRATE_ACTIVE ? -ENOENT
		  : m->committing || m->params.postcopy			      ? -EBUSY
									      : 0;
	if (!ret)
		m->to_postcopy = 1;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

void migration_get_status(struct migration *m, struct migrate_status *st)
{
	pthread_mutex_lock(&m->lock);
	if (m->st.state == MIGRATE_ACTIVE)
		m->st.total_ms = (host_now_ns() - m->start_ns) / 1000000ULL;
	*st = m->st;
	if (m->st.state != MIGRATE_ACTIVE && m->st.state != MIGRATE_NONE) {
		m->done_read = true;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
}
