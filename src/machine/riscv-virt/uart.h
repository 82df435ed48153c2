/* ns16550a UART: guest console on the host's standard input and output. */
#ifndef MABO_MACHINE_RISCV_VIRT_UART_H
#define MABO_MACHINE_RISCV_VIRT_UART_H

#include <stddef.h>

#include "core/bus.h"

struct vm;
struct uart;

/* Input clock the guest divides for the baud rate (QEMU virt's value). */
#define UART_CLOCK_HZ 3686400

extern const struct mmio_ops uart_ops;

/* Creates the UART at where->base raising PLIC source where->irq. Output goes to out_fd
 * unbuffered; a thread reads in_fd (in_fd < 0: no input). When in_fd is the terminal of
 * the foreground process group it is put in raw mode (no echo, no signals; Ctrl-A x ends
 * the VM) until uart_destroy or process exit. 0 or -errno. */
int uart_create(struct vm *vm, const struct mmio_region *where, int in_fd, int out_fd,
		struct uart **out) __attribute__((warn_unused_result));

/* Stops the input thread, restores the terminal, frees. NULL is fine. */
void uart_destroy(struct uart *u);

/* The UART's device-tree path ("/soc/serial@10000000"), for /chosen stdout-path. */
int uart_fdt_path(const struct uart *u, char *buf, size_t len);

#endif
