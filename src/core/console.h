/* The host side of the guest's console: one input fd (standard input) and one output fd
 * (standard output), shared by the guest's consoles (the UART, virtio-console's hvc0).
 *
 * Output: any device writes to it (console_write); writes are whole and unbuffered.
 * Input: a thread reads the input fd and hands the bytes to exactly one consumer at a time
 * (console_set_input), never more than the consumer has room for; when it has none the
 * thread stops reading until the consumer calls console_input_ready, so input waits in the
 * pipe or the terminal instead of being dropped. The thread ends at EOF.
 *
 * When the input fd is the terminal of the foreground process group it is put in raw mode
 * (no echo, no line editing, no signals: Ctrl-C goes to the guest) until console_destroy or
 * process exit, and Ctrl-A starts an escape: Ctrl-A x ends the VM, Ctrl-A Ctrl-A sends
 * Ctrl-A, Ctrl-A h prints help. */
#ifndef MABO_CORE_CONSOLE_H
#define MABO_CORE_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

struct vm;
struct console;

/* A consumer of input. Both are called on the console's input thread, never at once. */
struct console_input_ops {
	/* How many bytes the consumer can take now; 0 stops reading until
	 * console_input_ready. */
	size_t (*room)(void *opaque);
	/* Delivers n bytes, n no more than room() just returned. */
	void (*receive)(void *opaque, const uint8_t *buf, size_t n);
};

/* Creates the console on in_fd (< 0: no input) and out_fd (< 0: output dropped); vm is told
 * to exit on Ctrl-A x. 0 or -errno (after logging one line). */
int console_create(struct vm *vm, int in_fd, int out_fd, struct console **out)
	__attribute__((warn_unused_result));

/* Stops the input thread, restores the terminal, frees. NULL is fine. */
void console_destroy(struct console *c);

/* Routes input to ops/opaque from now on (NULL: to nobody; input then waits). When it
 * returns, the previous consumer's callbacks are not running and will not be called. */
void console_set_input(struct console *c, const struct console_input_ops *ops, void *opaque);

/* The consumer has room again; from any thread, holding no lock its callbacks take. */
void console_input_ready(struct console *c);

/* Writes all of buf to the output (waiting briefly if the fd is non-blocking and full);
 * bytes are lost only if the output is closed or broken, as on a cut line. Any thread. */
void console_write(struct console *c, const void *buf, size_t len);

#endif
