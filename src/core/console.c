/* The host terminal and its routing to one guest console (see console.h). */
#include "core/console.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"

/* Ctrl-A starts an escape sequence on a terminal, as in QEMU's -nographic. */
#define CONSOLE_ESCAPE 0x01
#define CONSOLE_CHUNK 256

struct console {
	struct vm *vm;
	int in_fd;
	int out_fd;
	bool tty; /* in_fd is our terminal in raw mode: escapes apply */

	/* The consumer: changed and called only under cb_lock. */
	pthread_mutex_t cb_lock;
	const struct console_input_ops *ops;
	void *opaque;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* ready_gen moved, or stop */
	uint64_t ready_gen;  /* bumped by console_input_ready and console_set_input */
	bool stop;

	/* Input thread; pend holds bytes read but not yet taken (a consumer that shrank). */
	pthread_t thread;
	bool thread_started;
	int wake[2]; /* a byte on wake[1] ends the thread's poll */
	bool esc;    /* Ctrl-A seen */
	uint8_t pend[CONSOLE_CHUNK];
	size_t pend_len;
};

/* The terminal is process-wide, so is what we saved of it: only one console at a time puts
 * it in raw mode, and the restore must be reachable from atexit and signal handlers (the
 * one piece of process-wide state here, by necessity). */
static pthread_mutex_t console_tty_lock = PTHREAD_MUTEX_INITIALIZER;
static struct termios console_tty_saved;
static int console_tty_fd = -1;
static volatile sig_atomic_t console_tty_raw;
static bool console_tty_hooks_installed;

/* Async-signal-safe: tcsetattr is on the POSIX list. */
static void console_tty_restore(void)
{
	if (console_tty_raw) {
		tcsetattr(console_tty_fd, TCSANOW, &console_tty_saved);
		console_tty_raw = 0;
	}
}

static void console_tty_signal(int sig)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	console_tty_restore();
	/* Die of the same signal with the default action once this handler returns. */
	sigaction(sig, &dfl, NULL);
	raise(sig);
}

/* Leaves the terminal usable however the process ends: normal exit, or a fatal signal
 * nobody else handles. Handlers installed by the caller (before or after) take
 * precedence: we only claim signals still at their default action. */
static void console_tty_install_hooks(void)
{
	static const int sigs[] = { SIGHUP,  SIGINT, SIGQUIT, SIGTERM, SIGABRT,
				    SIGSEGV, SIGBUS, SIGILL,  SIGFPE };

	if (console_tty_hooks_installed)
		return;
	console_tty_hooks_installed = true;
	atexit(console_tty_restore);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		struct sigaction old, sa = { .sa_handler = console_tty_signal };
		if (sigaction(sigs[i], NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
		    old.sa_handler == SIG_DFL) {
			sigemptyset(&sa.sa_mask);
			sigaction(sigs[i], &sa, NULL);
		}
	}
}

/* Puts fd in raw mode like QEMU's stdio console: no echo, no line editing, no signals
 * (Ctrl-C goes to the guest). Output post-processing stays on, as in QEMU, so host-side
 * messages ending in \n still return the carriage. True when the terminal is now raw. */
static bool console_tty_make_raw(int fd)
{
	struct termios raw;
	bool ok = false;

	pthread_mutex_lock(&console_tty_lock);
	if (console_tty_raw)
		goto out; /* another console owns the terminal */
	if (tcgetattr(fd, &console_tty_saved) != 0)
		goto out;
	raw = console_tty_saved;
	raw.c_iflag &=
		~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
	raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
	raw.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
	raw.c_cflag |= CS8;
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	console_tty_install_hooks();
	console_tty_fd = fd;
	if (tcsetattr(fd, TCSANOW, &raw) != 0)
		goto out;
	console_tty_raw = 1;
	ok = true;
out:
	pthread_mutex_unlock(&console_tty_lock);
	return ok;
}

static void console_tty_release(void)
{
	pthread_mutex_lock(&console_tty_lock);
	console_tty_restore();
	pthread_mutex_unlock(&console_tty_lock);
}

void console_write(struct console *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	for (int tries = 0; len && tries < 10;) {
		ssize_t n = write(c->out_fd, p, len);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			/* Someone made the fd non-blocking: wait a little rather than drop. */
			struct pollfd pfd = { .fd = c->out_fd, .events = POLLOUT };
			poll(&pfd, 1, 100);
			tries++;
			continue;
		}
		return; /* closed or broken output: the bytes are lost, as on a cut line */
	}
}

/* Applies the Ctrl-A escapes to buf in place (on a raw terminal); returns the bytes left
 * for the guest and sets *quit on Ctrl-A x. */
static size_t console_escapes(struct console *c, uint8_t *buf, size_t n, bool *quit)
{
	static const char help[] = "\r\nC-a x    exit the VM\r\nC-a C-a  send C-a\r\n";
	size_t out = 0;

	if (!c->tty)
		return n;
	for (size_t i = 0; i < n; i++) {
		uint8_t b = buf[i];
		if (c->esc) {
			c->esc = false;
			if (b == 'x' || b == 'X') {
				*quit = true;
			} else if (b == CONSOLE_ESCAPE) {
				buf[out++] = b;
			} else if (b == 'h' || b == '?') {
				ssize_t ignored = write(STDERR_FILENO, help, sizeof(help) - 1);
				(void)ignored;
			}
			continue;
		}
		if (b == CONSOLE_ESCAPE) {
			c->esc = true;
			continue;
		}
		buf[out++] = b;
	}
	return out;
}

/* Hands pending bytes to the consumer, as many as it takes. */
static void console_deliver(struct console *c)
{
	pthread_mutex_lock(&c->cb_lock);
	if (c->ops && c->pend_len) {
		size_t room = c->ops->room(c->opaque);
		size_t n = room < c->pend_len ? room : c->pend_len;
		if (n) {
			c->ops->receive(c->opaque, c->pend, n);
			memmove(c->pend, c->pend + n, c->pend_len - n);
			c->pend_len -= n;
		}
	}
	pthread_mutex_unlock(&c->cb_lock);
}

static size_t console_room(struct console *c)
{
	size_t room = 0;

	pthread_mutex_lock(&c->cb_lock);
	if (c->ops)
		room = c->ops->room(c->opaque);
	pthread_mutex_unlock(&c->cb_lock);
	return room;
}

static void *console_input_thread(void *arg)
{
	struct console *c = arg;
	bool eof = false;

	for (;;) {
		pthread_mutex_lock(&c->lock);
		uint64_t gen = c->ready_gen;
		bool stop = c->stop;
		pthread_mutex_unlock(&c->lock);
		if (stop)
			break;

		console_deliver(c);
		size_t room = c->pend_len ? 0 : console_room(c);
		if (room == 0) {
			if (eof && !c->pend_len)
				break;
			/* Wait until the consumer drains something (or a new one attaches). */
			pthread_mutex_lock(&c->lock);
			while (!c->stop && c->ready_gen == gen)
				pthread_cond_wait(&c->cond, &c->lock);
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		if (eof)
			break;

		struct pollfd pfd[2] = {
			{ .fd = c->in_fd, .events = POLLIN },
			{ .fd = c->wake[0], .events = POLLIN },
		};
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & POLLNVAL)
			break;
		if (!pfd[0].revents)
			continue;
		/* Only as much as the consumer takes: the rest stays in the pipe or terminal. */
		ssize_t n = read(c->in_fd, c->pend, room < CONSOLE_CHUNK ? room : CONSOLE_CHUNK);
		if (n == 0) {
			eof = true; /* nothing more will come; stop rather than spin */
			continue;
		}
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			break;
		}
		bool quit = false;
		c->pend_len = console_escapes(c, c->pend, (size_t)n, &quit);
		if (quit) {
			log_info("console: C-a x, terminating the VM");
			vm_request_exit(c->vm, VM_EXIT_POWEROFF, 0);
		}
	}
	return NULL;
}

/* Decides whether to read in_fd and whether it is our raw terminal. */
static bool console_input_wanted(struct console *c)
{
	if (c->in_fd < 0)
		return false;
	if (!isatty(c->in_fd))
		return true; /* a pipe, a file, /dev/null: read it as it comes */
	/* A background job touching its terminal gets SIGTTIN/SIGTTOU and stops. (A terminal
	 * that is not our controlling one has no foreground group: tcgetpgrp fails.) */
	pid_t fg = tcgetpgrp(c->in_fd);
	if (fg >= 0 && fg != getpgrp()) {
		log_warn("console: standard input is the terminal of a background job: no guest "
			 "input");
		return false;
	}
	c->tty = console_tty_make_raw(c->in_fd);
	return true;
}

int console_create(struct vm *vm, int in_fd, int out_fd, struct console **out)
{
	struct console *c = calloc(1, sizeof(*c));
	int err;

	if (!c)
		return -ENOMEM;
	c->vm = vm;
	c->in_fd = in_fd;
	c->out_fd = out_fd;
	c->wake[0] = c->wake[1] = -1;

	err = -pthread_mutex_init(&c->cb_lock, NULL);
	if (err)
		goto err_free;
	err = -pthread_mutex_init(&c->lock, NULL);
	if (err)
		goto err_cb_lock;
	err = -pthread_cond_init(&c->cond, NULL);
	if (err)
		goto err_lock;

	/* Whatever the process printed through stdio must come before the guest's output. */
	fflush(stdout);

	if (console_input_wanted(c)) {
		if (pipe(c->wake) != 0) {
			err = -errno;
			log_error("console: cannot create a pipe: %s", strerror(errno));
			goto err_tty;
		}
		err = -pthread_create(&c->thread, NULL, console_input_thread, c);
		if (err) {
			log_error("console: cannot start the input thread: %s", strerror(-err));
			goto err_pipe;
		}
		c->thread_started = true;
	}
	*out = c;
	return 0;

err_pipe:
	close(c->wake[0]);
	close(c->wake[1]);
err_tty:
	if (c->tty)
		console_tty_release();
	pthread_cond_destroy(&c->cond);
err_lock:
	pthread_mutex_destroy(&c->lock);
err_cb_lock:
	pthread_mutex_destroy(&c->cb_lock);
err_free:
	free(c);
	return err;
}

void console_destroy(struct console *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->lock);
		c->stop = true;
		pthread_cond_signal(&c->cond);
		pthread_mutex_unlock(&c->lock);
		ssize_t ignored = write(c->wake[1], "", 1);
		(void)ignored;
		pthread_join(c->thread, NULL);
		close(c->wake[0]);
		close(c->wake[1]);
	}
	if (c->tty)
		console_tty_release();
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->cb_lock);
	free(c);
}

void console_set_input(struct console *c, const struct console_input_ops *ops, void *opaque)
{
	/* cb_lock: the thread is not inside the old consumer's callbacks once we hold it. */
	pthread_mutex_lock(&c->cb_lock);
	c->ops = ops;
	c->opaque = opaque;
	pthread_mutex_unlock(&c->cb_lock);
	console_input_ready(c);
}

void console_input_ready(struct console *c)
{
	pthread_mutex_lock(&c->lock);
	c->ready_gen++;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}
