/* The VM event loop: fd handlers, posted functions, timers, and removal while running. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/event.h"
#include "core/vm.h"

/* vm.c's exit path kicks harts; there are none here. */
void hart_kick(struct hart *h)
{
	(void)h;
}

static bool wait_for(_Atomic int *v, int want, int ms)
{
	for (int i = 0; i < ms; i++) {
		if (atomic_load(v) >= want)
			return true;
		usleep(1000);
	}
	return atomic_load(v) >= want;
}

struct fd_rig {
	int fd;
	_Atomic int calls;
	_Atomic int on_loop; /* calls that ran on the loop thread */
	struct event_loop *el;
};

static void fd_cb(void *opaque, uint32_t events)
{
	struct fd_rig *r = opaque;
	uint64_t v;

	assert_true(events & EPOLLIN);
	ssize_t n = read(r->fd, &v, sizeof(v));
	(void)n;
	if (event_loop_on_thread(r->el))
		atomic_fetch_add(&r->on_loop, 1);
	atomic_fetch_add(&r->calls, 1);
}

static void kick(int fd)
{
	uint64_t one = 1;
	assert_int_equal(write(fd, &one, sizeof(one)), 8);
}

static void test_fd_handlers(void **state)
{
	(void)state;
	struct event_loop *el;
	struct fd_rig r = { .fd = eventfd(0, EFD_NONBLOCK) };

	assert_int_equal(event_loop_create(&el), 0);
	r.el = el;
	/* Registered before the loop starts; an event already pending is seen at start. */
	assert_int_equal(event_loop_add_fd(el, r.fd, EPOLLIN, fd_cb, &r), 0);
	assert_int_equal(event_loop_add_fd(el, r.fd, EPOLLIN, fd_cb, &r), -EEXIST);
	kick(r.fd);
	assert_int_equal(event_loop_start(el), 0);
	assert_true(wait_for(&r.calls, 1, 2000));
	kick(r.fd);
	assert_true(wait_for(&r.calls, 2, 2000));
	assert_int_equal(atomic_load(&r.on_loop), 2);
	assert_false(event_loop_on_thread(el));

	/* Not interested in input: no calls. */
	assert_int_equal(event_loop_modify_fd(el, r.fd, 0), 0);
	kick(r.fd);
	usleep(20000);
	assert_int_equal(atomic_load(&r.calls), 2);
	assert_int_equal(event_loop_modify_fd(el, r.fd, EPOLLIN), 0);
	assert_true(wait_for(&r.calls, 3, 2000));

	/* After removal, the callback never runs again. */
	event_loop_remove_fd(el, r.fd);
	event_loop_remove_fd(el, r.fd); /* unknown now: ignored */
	kick(r.fd);
	usleep(20000);
	assert_int_equal(atomic_load(&r.calls), 3);
	assert_int_equal(event_loop_modify_fd(el, r.fd, EPOLLIN), -ENOENT);

	event_loop_destroy(el);
	close(r.fd);
}

struct post_rig {
	struct event_loop *el;
	_Atomic int order[16];
	_Atomic int n;
	_Atomic int on_loop;
};

struct post_item {
	struct post_rig *r;
	int id;
};

static void post_fn(void *opaque)
{
	struct post_item *it = opaque;
	int i = atomic_fetch_add(&it->r->n, 1);
	if (i < 16)
		atomic_store(&it->r->order[i], it->id);
	if (event_loop_on_thread(it->r->el))
		atomic_fetch_add(&it->r->on_loop, 1);
}

static void test_post_and_run(void **state)
{
	(void)state;
	struct event_loop *el;
	struct post_rig r = { 0 };
	struct post_item items[6];

	assert_int_equal(event_loop_create(&el), 0);
	r.el = el;
	for (int i = 0; i < 6; i++)
		items[i] = (struct post_item){ &r, i };

	/* Not running: run calls directly; posts wait for the loop. */
	assert_int_equal(event_loop_run(el, post_fn, &items[0]), 0);
	assert_int_equal(atomic_load(&r.n), 1);
	assert_int_equal(event_loop_post(el, post_fn, &items[1]), 0);
	assert_int_equal(atomic_load(&r.n), 1);

	assert_int_equal(event_loop_start(el), 0);
	assert_int_equal(event_loop_post(el, post_fn, &items[2]), 0);
	assert_int_equal(event_loop_post(el, post_fn, &items[3]), 0);
	/* run waits: everything posted before it has run too, in order. */
	assert_int_equal(event_loop_run(el, post_fn, &items[4]), 0);
	assert_int_equal(atomic_load(&r.n), 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(atomic_load(&r.order[i]), i);
	assert_int_equal(atomic_load(&r.on_loop), 4);

	/* Posted and not yet run when the loop stops: run by stop. */
	event_loop_stop(el);
	assert_int_equal(event_loop_post(el, post_fn, &items[5]), 0);
	event_loop_destroy(el);
	assert_int_equal(atomic_load(&r.n), 6);
}

struct timer_rig {
	_Atomic int fired;
	uint64_t at;
};

static void timer_fn(void *opaque)
{
	struct timer_rig *r = opaque;
	r->at = host_now_ns();
	atomic_fetch_add(&r->fired, 1);
}

static void test_timers(void **state)
{
	(void)state;
	struct event_loop *el;
	struct event_timer *t1, *t2;
	struct timer_rig r1 = { 0 }, r2 = { 0 };

	assert_int_equal(event_loop_create(&el), 0);
	assert_int_equal(event_loop_start(el), 0);
	assert_int_equal(event_timer_create(el, timer_fn, &r1, &t1), 0);
	assert_int_equal(event_timer_create(el, timer_fn, &r2, &t2), 0);

	uint64_t t0 = host_now_ns();
	event_timer_arm(t1, t0 + 30000000); /* 30 ms */
	event_timer_arm(t2, t0 + 10000000); /* 10 ms */
	assert_true(wait_for(&r1.fired, 1, 2000));
	assert_int_equal(atomic_load(&r2.fired), 1);
	assert_true(r1.at >= t0 + 30000000);
	assert_true(r2.at >= t0 + 10000000);
	assert_true(r2.at <= r1.at);

	/* Once per arming; a disarmed timer does not fire. */
	usleep(20000);
	assert_int_equal(atomic_load(&r1.fired), 1);
	event_timer_arm(t1, host_now_ns() + 5000000);
	event_timer_disarm(t1);
	event_timer_arm(t2, host_now_ns()); /* due now */
	assert_true(wait_for(&r2.fired, 2, 2000));
	usleep(20000);
	assert_int_equal(atomic_load(&r1.fired), 1);

	/* Destroyed while armed: never fires. */
	event_timer_arm(t1, host_now_ns() + 5000000);
	event_timer_destroy(t1);
	usleep(20000);
	assert_int_equal(atomic_load(&r1.fired), 1);
	event_timer_destroy(t2);
	event_loop_destroy(el);
}

/* A handler removing itself from inside its callback, and another thread removing a
 * handler whose callback is running: both safe. */
struct slow_rig {
	int fd;
	struct event_loop *el;
	_Atomic int entered;
	_Atomic int left;
	bool self_remove;
};

static void slow_cb(void *opaque, uint32_t events)
{
	struct slow_rig *r = opaque;
	uint64_t v;

	(void)events;
	ssize_t n = read(r->fd, &v, sizeof(v));
	(void)n;
	atomic_fetch_add(&r->entered, 1);
	if (r->self_remove)
		event_loop_remove_fd(r->el, r->fd);
	else
		usleep(50000);
	atomic_fetch_add(&r->left, 1);
}

static void test_remove_while_running(void **state)
{
	(void)state;
	struct event_loop *el;
	struct slow_rig a = { .fd = eventfd(0, EFD_NONBLOCK), .self_remove = true };
	struct slow_rig b = { .fd = eventfd(0, EFD_NONBLOCK) };

	assert_int_equal(event_loop_create(&el), 0);
	a.el = b.el = el;
	assert_int_equal(event_loop_add_fd(el, a.fd, EPOLLIN, slow_cb, &a), 0);
	assert_int_equal(event_loop_add_fd(el, b.fd, EPOLLIN, slow_cb, &b), 0);
	assert_int_equal(event_loop_start(el), 0);

	kick(a.fd);
	assert_true(wait_for(&a.left, 1, 2000));
	kick(a.fd);
	usleep(20000);
	assert_int_equal(atomic_load(&a.entered), 1);

	kick(b.fd);
	assert_true(wait_for(&b.entered, 1, 2000));
	/* Returns only once the running callback has finished. */
	event_loop_remove_fd(el, b.fd);
	assert_int_equal(atomic_load(&b.left), 1);

	event_loop_destroy(el);
	close(a.fd);
	close(b.fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fd_handlers),
		cmocka_unit_test(test_post_and_run),
		cmocka_unit_test(test_timers),
		cmocka_unit_test(test_remove_while_running),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
