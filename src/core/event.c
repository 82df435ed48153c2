/* The VM's event loop (see event.h). One epoll set holds the device fds and an eventfd that
 * other threads write to wake the loop (posted functions, timer changes, stop requests).
 *
 * Lifetime of handlers: the epoll data of an fd points at its handler. A batch returned by
 * epoll_wait may still name a handler removed meanwhile, so a removed handler is only marked
 * dead (and skipped) until the round that could see it has ended: then the remover (another
 * thread, which waited for that) or the loop (for removals made inside a callback) frees it.
 * A round is one epoll_wait, its callbacks, the posted functions and the due timers; the loop
 * counts rounds under its lock and broadcasts each end. */
#include "core/event.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"

#define EVENT_BATCH 32

struct event_handler {
	int fd;
	event_fd_fn fn;
	void *opaque;
	_Atomic bool dead;
	struct event_handler *next;
};

struct event_post {
	event_fn fn;
	void *opaque;
	bool *done; /* event_loop_run's waiter: set under the lock once fn has run */
	struct event_post *next;
};

struct event_timer {
	struct event_loop *el;
	event_fn fn;
	void *opaque;
	uint64_t deadline; /* under el->lock */
	bool armed;	   /* under el->lock */
	struct event_timer *next;
};

struct event_loop {
	int epfd;
	int wake_fd;
	pthread_t thread;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* a round ended, a posted function ran, the loop stopped */
	bool running;	     /* the thread exists (started, not yet joined) */
	bool exited;	     /* the thread has left its loop (stop, or a fatal epoll error) */
	bool stop;
	uint64_t round;
	struct event_handler *handlers;
	struct event_handler *graveyard; /* removed inside a callback, freed at round end */
	struct event_post *post_head, *post_tail;
	struct event_timer *timers;
};

/* The loop whose thread this is; NULL on every other thread. */
static __thread struct event_loop *event_current;

bool event_loop_on_thread(const struct event_loop *el)
{
	return el && event_current == el;
}

static void event_loop_wake(struct event_loop *el)
{
	uint64_t one = 1;
	/* EAGAIN means the counter is already non-zero: the loop will wake anyway. */
	ssize_t n = write(el->wake_fd, &one, sizeof(one));
	(void)n;
}

/* Waits, lock held, until the loop has finished the round it may be in, so that no callback
 * of something just unlinked is still running. No-op on the loop thread or with no loop. */
static void event_loop_quiesce_locked(struct event_loop *el)
{
	if (!el->running || el->exited || event_loop_on_thread(el))
		return;
	uint64_t round = el->round;
	event_loop_wake(el);
	while (el->running && !el->exited && el->round == round)
		pthread_cond_wait(&el->cond, &el->lock);
}

int event_loop_create(struct event_loop **out)
{
	struct event_loop *el = calloc(1, sizeof(*el));
	int err;

	if (!el)
		return -ENOMEM;
	el->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (el->epfd < 0) {
		err = -errno;
		goto err_free;
	}
	el->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (el->wake_fd < 0) {
		err = -errno;
		goto err_epoll;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	if (epoll_ctl(el->epfd, EPOLL_CTL_ADD, el->wake_fd, &ev) != 0) {
		err = -errno;
		goto err_wake;
	}
	err = -pthread_mutex_init(&el->lock, NULL);
	if (err)
		goto err_wake;
	err = -pthread_cond_init(&el->cond, NULL);
	if (err)
		goto err_mutex;
	*out = el;
	return 0;

err_mutex:
	pthread_mutex_destroy(&el->lock);
err_wake:
	close(el->wake_fd);
err_epoll:
	close(el->epfd);
err_free:
	free(el);
	return err;
}

/* Runs every function posted so far (on whichever thread calls this). */
static void event_loop_run_posts(struct event_loop *el)
{
	pthread_mutex_lock(&el->lock);
	struct event_post *p = el->post_head;
	el->post_head = el->post_tail = NULL;
	pthread_mutex_unlock(&el->lock);

	while (p) {
		struct event_post *next = p->next;
		p->fn(p->opaque);
		if (p->done) {
			pthread_mutex_lock(&el->lock);
			*p->done = true;
			pthread_cond_broadcast(&el->cond);
			pthread_mutex_unlock(&el->lock);
		}
		free(p);
		p = next;
	}
}

/* Fires the timers due now. Each fires at most once per call, even if its callback re-arms
 * it in the past, so a callback cannot keep the loop here. */
static void event_loop_run_timers(struct event_loop *el)
{
	uint64_t now = host_now_ns();
	unsigned budget = 0;

	pthread_mutex_lock(&el->lock);
	for (struct event_timer *t = el->timers; t; t = t->next)
		budget++;
	while (budget--) {
		struct event_timer *due = NULL;
		for (struct event_timer *t = el->timers; t; t = t->next) {
			if (t->armed && t->deadline <= now) {
				due = t;
				break;
			}
		}
		if (!due)
			break;
		due->armed = false;
		event_fn fn = due->fn;
		void *opaque = due->opaque;
		/* Unlocked: the callback may arm, disarm or destroy timers (its own included;
		 * nothing here touches due afterwards). */
		pthread_mutex_unlock(&el->lock);
		fn(opaque);
		pthread_mutex_lock(&el->lock);
	}
	pthread_mutex_unlock(&el->lock);
}

/* epoll_wait's timeout for the earliest armed timer: -1 none, else ms rounded up. */
static int event_loop_timeout_locked(const struct event_loop *el)
{
	uint64_t first = UINT64_MAX;

	for (const struct event_timer *t = el->timers; t; t = t->next)
		if (t->armed && t->deadline < first)
			first = t->deadline;
	if (first == UINT64_MAX)
		return -1;
	uint64_t now = host_now_ns();
	if (first <= now)
		return 0;
	uint64_t ms = (first - now + 999999) / 1000000;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void *event_loop_thread(void *arg)
{
	struct event_loop *el = arg;
	struct epoll_event evs[EVENT_BATCH];

	event_current = el;
	for (;;) {
		pthread_mutex_lock(&el->lock);
		bool stop = el->stop;
		int timeout = event_loop_timeout_locked(el);
		pthread_mutex_unlock(&el->lock);
		if (stop)
			break;

		int n = epoll_wait(el->epfd, evs, EVENT_BATCH, timeout);
		if (n < 0) {
			if (errno != EINTR) {
				log_error("event loop: epoll_wait failed: %s", strerror(errno));
				break;
			}
			n = 0;
		}
		for (int i = 0; i < n; i++) {
			struct event_handler *h = evs[i].data.ptr;
			if (!h) {
				uint64_t v;
				ssize_t r = read(el->wake_fd, &v, sizeof(v));
				(void)r;
				continue;
			}
			if (atomic_load(&h->dead))
				continue;
			h->fn(h->opaque, evs[i].events);
		}
		event_loop_run_posts(el);
		event_loop_run_timers(el);

		pthread_mutex_lock(&el->lock);
		struct event_handler *dead = el->graveyard;
		el->graveyard = NULL;
		el->round++;
		pthread_cond_broadcast(&el->cond);
		pthread_mutex_unlock(&el->lock);
		while (dead) {
			struct event_handler *next = dead->next;
			free(dead);
			dead = next;
		}
	}
	pthread_mutex_lock(&el->lock);
	el->exited = true;
	pthread_cond_broadcast(&el->cond);
	pthread_mutex_unlock(&el->lock);
	/* What was posted before exited was set runs here; event_loop_run calls after it run
	 * on their own thread. */
	event_loop_run_posts(el);
	event_current = NULL;
	return NULL;
}

int event_loop_start(struct event_loop *el)
{
	int err = 0;

	pthread_mutex_lock(&el->lock);
	if (el->running)
		goto out;
	el->stop = false;
	el->exited = false;
	err = -pthread_create(&el->thread, NULL, event_loop_thread, el);
	if (err) {
		log_error("event loop: cannot start its thread: %s", strerror(-err));
		goto out;
	}
	el->running = true;
out:
	pthread_mutex_unlock(&el->lock);
	return err;
}

void event_loop_stop(struct event_loop *el)
{
	pthread_mutex_lock(&el->lock);
	bool running = el->running;
	el->stop = true;
	pthread_mutex_unlock(&el->lock);

	if (running) {
		event_loop_wake(el);
		pthread_join(el->thread, NULL);
	}
	pthread_mutex_lock(&el->lock);
	struct event_handler *dead = el->graveyard;
	el->graveyard = NULL;
	el->running = false;
	el->stop = false;
	el->round++;
	pthread_cond_broadcast(&el->cond);
	pthread_mutex_unlock(&el->lock);
	while (dead) {
		struct event_handler *next = dead->next;
		free(dead);
		dead = next;
	}
	/* Nothing posted is lost, and every event_loop_run waiter is released. */
	event_loop_run_posts(el);
}

void event_loop_destroy(struct event_loop *el)
{
	if (!el)
		return;
	event_loop_stop(el);
	if (el->handlers || el->timers)
		log_warn("event loop: destroyed with handlers or timers still registered");
	while (el->handlers) {
		struct event_handler *next = el->handlers->next;
		free(el->handlers);
		el->handlers = next;
	}
	while (el->timers) {
		struct event_timer *next = el->timers->next;
		free(el->timers);
		el->timers = next;
	}
	pthread_cond_destroy(&el->cond);
	pthread_mutex_destroy(&el->lock);
	close(el->wake_fd);
	close(el->epfd);
	free(el);
}

static struct event_handler *event_find_locked(struct event_loop *el, int fd,
					       struct event_handler ***link)
{
	struct event_handler **pp = &el->handlers;

	for (; *pp; pp = &(*pp)->next) {
		if ((*pp)->fd == fd) {
			if (link)
				*link = pp;
			return *pp;
		}
	}
	return NULL;
}

int event_loop_add_fd(struct event_loop *el, int fd, uint32_t events, event_fd_fn fn, void *opaque)
{
	int err = 0;

	if (fd < 0 || !fn)
		return -EINVAL;
	struct event_handler *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->fd = fd;
	h->fn = fn;
	h->opaque = opaque;

	pthread_mutex_lock(&el->lock);
	if (event_find_locked(el, fd, NULL)) {
		err = -EEXIST;
		goto out;
	}
	struct epoll_event ev = { .events = events, .data.ptr = h };
	if (epoll_ctl(el->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		err = -errno;
		goto out;
	}
	h->next = el->handlers;
	el->handlers = h;
	h = NULL;
out:
	pthread_mutex_unlock(&el->lock);
	free(h);
	return err;
}

int event_loop_modify_fd(struct event_loop *el, int fd, uint32_t events)
{
	int err = 0;

	pthread_mutex_lock(&el->lock);
	struct event_handler *h = event_find_locked(el, fd, NULL);
	if (!h) {
		err = -ENOENT;
	} else {
		struct epoll_event ev = { .events = events, .data.ptr = h };
		if (epoll_ctl(el->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
			err = -errno;
	}
	pthread_mutex_unlock(&el->lock);
	return err;
}

void event_loop_remove_fd(struct event_loop *el, int fd)
{
	struct event_handler **link;

	pthread_mutex_lock(&el->lock);
	struct event_handler *h = event_find_locked(el, fd, &link);
	if (!h) {
		pthread_mutex_unlock(&el->lock);
		return;
	}
	*link = h->next;
	atomic_store(&h->dead, true);
	epoll_ctl(el->epfd, EPOLL_CTL_DEL, fd, NULL);
	if (event_loop_on_thread(el)) {
		/* Later events of this round's batch may still name h. */
		h->next = el->graveyard;
		el->graveyard = h;
		h = NULL;
	} else {
		event_loop_quiesce_locked(el);
	}
	pthread_mutex_unlock(&el->lock);
	free(h);
}

static int event_loop_enqueue(struct event_loop *el, event_fn fn, void *opaque, bool *done)
{
	struct event_post *p = malloc(sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->fn = fn;
	p->opaque = opaque;
	p->done = done;
	p->next = NULL;
	if (el->post_tail)
		el->post_tail->next = p;
	else
		el->post_head = p;
	el->post_tail = p;
	return 0;
}

int event_loop_post(struct event_loop *el, event_fn fn, void *opaque)
{
	pthread_mutex_lock(&el->lock);
	int err = event_loop_enqueue(el, fn, opaque, NULL);
	pthread_mutex_unlock(&el->lock);
	if (!err)
		event_loop_wake(el);
	return err;
}

int event_loop_run(struct event_loop *el, event_fn fn, void *opaque)
{
	bool done = false;

	pthread_mutex_lock(&el->lock);
	if (!el->running || el->exited || event_loop_on_thread(el)) {
		pthread_mutex_unlock(&el->lock);
		fn(opaque);
		return 0;
	}
	int err = event_loop_enqueue(el, fn, opaque, &done);
	if (!err) {
		event_loop_wake(el);
		/* The loop runs it, or runs it on its way out if it exits first. */
		while (!done)
			pthread_cond_wait(&el->cond, &el->lock);
	}
	pthread_mutex_unlock(&el->lock);
	return err;
}

int event_timer_create(struct event_loop *el, event_fn fn, void *opaque, struct event_timer **out)
{
	struct event_timer *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->el = el;
	t->fn = fn;
	t->opaque = opaque;
	pthread_mutex_lock(&el->lock);
	t->next = el->timers;
	el->timers = t;
	pthread_mutex_unlock(&el->lock);
	*out = t;
	return 0;
}

void event_timer_arm(struct event_timer *t, uint64_t deadline_ns)
{
	struct event_loop *el = t->el;

	pthread_mutex_lock(&el->lock);
	t->deadline = deadline_ns;
	t->armed = true;
	pthread_mutex_unlock(&el->lock);
	/* The loop may be sleeping until a later deadline. */
	if (!event_loop_on_thread(el))
		event_loop_wake(el);
}

void event_timer_disarm(struct event_timer *t)
{
	pthread_mutex_lock(&t->el->lock);
	t->armed = false;
	pthread_mutex_unlock(&t->el->lock);
}

void event_timer_destroy(struct event_timer *t)
{
	if (!t)
		return;
	struct event_loop *el = t->el;
	pthread_mutex_lock(&el->lock);
	for (struct event_timer **pp = &el->timers; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	t->armed = false;
	event_loop_quiesce_locked(el);
	pthread_mutex_unlock(&el->lock);
	free(t);
}
