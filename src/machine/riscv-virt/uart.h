/* ns16550a UART: guest console on the host's standard input and output. */
#ifndef MABO_MACHINE_RISCV_VIRT_UART_H
#define MABO_MACHINE_RISCV_VIRT_UART_H

#include <stdbool.h>
#include <stddef.h>

#include "core/bus.h"

struct vm;
struct sbuf;
struct sreader;
struct uart;
struct console;

/* Input clock the guest divides for the baud rate (QEMU virt's value). */
#define UART_CLOCK_HZ 3686400

extern const struct mmio_ops uart_ops;

/* Creates the UART at where->base raising PLIC source where->irq, on the host console con
 * (core/console.h): output goes there; with input, the UART becomes con's input consumer
 * (otherwise it receives nothing). con must outlive the UART. 0 or -errno. */
int uart_create_console(struct vm *vm, const struct mmio_region *where, struct console *con,
			bool input, struct uart **out) __attribute__((warn_unused_result));

/* Same, on a console of its own over in_fd (< 0: no input) and out_fd: output unbuffered, a
 * thread reads in_fd. When in_fd is the terminal of the foreground process group it is put
 * in raw mode (no echo, no signals; Ctrl-A x ends the VM) until uart_destroy or process
 * exit. 0 or -errno. */
int uart_create(struct vm *vm, const struct mmio_region *where, int in_fd, int out_fd,
		struct uart **out) __attribute__((warn_unused_result));

/* Detaches from the console's input (and destroys the UART's own console), frees. NULL is
 * fine. */
void uart_destroy(struct uart *u);

/* The UART's device-tree path ("/soc/serial@10000000"), for /chosen stdout-path. */
int uart_fdt_path(const struct uart *u, char *buf, size_t len);

/* Saved state (registers and unread input); the PLIC is loaded first. 0 or -EINVAL. */
void uart_save(struct uart *u, struct sbuf *b);
int uart_load(struct uart *u, struct sreader *r);

#endif
