/* The VM's event loop: one thread (epoll) that runs device work and, later, the control
 * socket, so that no I/O runs on a vCPU thread. One loop per VM (vm->loop), no global state.
 *
 * What it runs, always on its own thread:
 *   - fd handlers: a callback when a registered file descriptor is ready;
 *   - posted functions: any thread asks for a function to run on the loop (an eventfd wakes
 *     it), optionally waiting until it has run;
 *   - timers: a callback at a CLOCK_MONOTONIC deadline (millisecond resolution).
 *
 * Before event_loop_start and after event_loop_stop there is no loop thread: handlers and
 * timers can be registered and removed freely, and posted functions run on the caller's
 * thread (event_loop_run) or wait for the next start (event_loop_post).
 *
 * Removing a handler or destroying a timer from another thread while the loop runs waits
 * until the loop has finished the round in which the callback may be running: after the
 * call returns, the callback is not running and never will. So do not call them while
 * holding a lock that a loop callback takes. From the loop thread itself (inside a
 * callback) they return at once. */
#ifndef MABO_CORE_EVENT_H
#define MABO_CORE_EVENT_H

#include <stdbool.h>
#include <stdint.h>

struct event_loop;
struct event_timer;

/* An fd handler: events are the epoll flags that fired (EPOLLIN, EPOLLOUT, EPOLLHUP, ...). */
typedef void (*event_fd_fn)(void *opaque, uint32_t events);
/* A posted function or a timer callback. */
typedef void (*event_fn)(void *opaque);

/* Creates a loop (no thread yet). 0 or -errno. */
int event_loop_create(struct event_loop **out) __attribute__((warn_unused_result));

/* Starts the loop thread. 0 or -errno (after logging one line). */
int event_loop_start(struct event_loop *el) __attribute__((warn_unused_result));

/* Stops and joins the loop thread (if started); functions posted and not yet run are run on
 * the caller's thread. The loop can be started again. */
void event_loop_stop(struct event_loop *el);

/* Stops the loop, then frees it; every handler and timer must have been removed. NULL is
 * fine. */
void event_loop_destroy(struct event_loop *el);

/* True on the loop's own thread (inside a callback). */
bool event_loop_on_thread(const struct event_loop *el);

/* Calls fn(opaque, events) on the loop thread whenever fd is ready for events (EPOLLIN,
 * EPOLLOUT; level-triggered). One handler per fd. 0, -EEXIST, or -errno. */
int event_loop_add_fd(struct event_loop *el, int fd, uint32_t events, event_fd_fn fn, void *opaque)
	__attribute__((warn_unused_result));

/* Changes the events fd's handler waits for (e.g. drop EPOLLIN while a buffer is full).
 * 0, -ENOENT or -errno. */
int event_loop_modify_fd(struct event_loop *el, int fd, uint32_t events)
	__attribute__((warn_unused_result));

/* Unregisters fd's handler (see the header comment on waiting). Unknown fds are ignored. */
void event_loop_remove_fd(struct event_loop *el, int fd);

/* Runs fn(opaque) on the loop thread soon, from any thread, without waiting. Functions
 * posted from one thread run in the order posted. 0 or -ENOMEM. */
int event_loop_post(struct event_loop *el, event_fn fn, void *opaque)
	__attribute__((warn_unused_result));

/* Runs fn(opaque) on the loop thread and waits until it has run. From the loop thread, or
 * when the loop is not running, calls it directly. 0 or -ENOMEM. */
int event_loop_run(struct event_loop *el, event_fn fn, void *opaque)
	__attribute__((warn_unused_result));

/* A timer that calls fn(opaque) on the loop thread once its deadline passes. Created
 * disarmed. 0 or -ENOMEM. */
int event_timer_create(struct event_loop *el, event_fn fn, void *opaque, struct event_timer **out)
	__attribute__((warn_unused_result));

/* Arms (or re-arms) t for a CLOCK_MONOTONIC deadline in ns (host_now_ns() + delay); from
 * any thread. A timer fires once per arming. */
void event_timer_arm(struct event_timer *t, uint64_t deadline_ns);

/* Disarms t; from any thread. */
void event_timer_disarm(struct event_timer *t);

/* Disarms and frees t (see the header comment on waiting). NULL is fine. */
void event_timer_destroy(struct event_timer *t);

#endif
