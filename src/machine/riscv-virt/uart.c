/* ns16550a UART, the registers Linux's 8250 driver and OpenSBI's uart8250 use.
 *
 * Transmit is instantaneous: a THR write goes to the host console at once (console_write:
 * write(2), no stdio buffer to flush late), so THR and the transmitter are always empty and
 * the THRE interrupt re-arms after every byte. Receive: when the UART is the console's input
 * consumer, the console's thread fills a bounded buffer the guest drains through RBR; when
 * the buffer is full the console stops reading, so input waits in the pipe or the terminal
 * instead of being dropped (core/console.h).
 *
 * Interrupts follow the 16550 datasheet's priority (line status > received data >
 * THR empty > modem status); only received data and THR empty ever occur here. */
#include "machine/riscv-virt/uart.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/console.h"
#include "core/log.h"
#include "core/vm.h"
#include "migration/sbuf.h"
#include "machine/riscv-virt/fdt_util.h"
#include "machine/riscv-virt/plic.h"

#include <libfdt.h>

/* Register offsets (reg-shift 0). */
#define UART_RBR 0 /* read, DLAB = 0 */
#define UART_THR 0 /* write, DLAB = 0 */
#define UART_DLL 0 /* DLAB = 1 */
#define UART_IER 1 /* DLAB = 0 */
#define UART_DLM 1 /* DLAB = 1 */
#define UART_IIR 2 /* read */
#define UART_FCR 2 /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define UART_IER_RDI 0x01  /* received data available */
#define UART_IER_THRI 0x02 /* THR empty */
#define UART_IER_MASK 0x0f

#define UART_IIR_NO_INT 0x01
#define UART_IIR_THRI 0x02
#define UART_IIR_RDI 0x04
#define UART_IIR_FIFO 0xc0 /* FIFOs enabled */

#define UART_FCR_ENABLE 0x01
#define UART_FCR_CLEAR_RX 0x02
#define UART_FCR_CLEAR_TX 0x04
#define UART_FCR_KEEP 0xc9 /* trigger level, DMA mode, enable; the clear bits self-clear */

#define UART_LCR_DLAB 0x80
#define UART_MCR_MASK 0x1f
#define UART_MCR_LOOP 0x10

#define UART_LSR_DR 0x01
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40

#define UART_MSR_CTS 0x10
#define UART_MSR_DSR 0x20
#define UART_MSR_RI 0x40
#define UART_MSR_DCD 0x80

/* Host-side receive buffer: big enough for a pasted line or a scripted burst. */
#define UART_RX_CAP 4096

struct uart {
	struct vm *vm;
	uint64_t base;
	uint64_t size;
	int irq;
	struct console *con;
	bool own_con; /* made by uart_create, destroyed with the UART */
	bool input;   /* the console's input consumer */

	pthread_mutex_t lock;
	uint8_t rx[UART_RX_CAP];
	size_t rx_head;
	size_t rx_count;

	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	bool thr_ipending; /* THR-empty interrupt armed, cleared by reading IIR */
	bool irq_level;	   /* level last driven on the PLIC source */
};

static uint8_t uart_iir_locked(const struct uart *u)
{
	uint8_t iir;

	if ((u->ier & UART_IER_RDI) && u->rx_count)
		iir = UART_IIR_RDI;
	else if ((u->ier & UART_IER_THRI) && u->thr_ipending)
		iir = UART_IIR_THRI;
	else
		iir = UART_IIR_NO_INT;
	if (u->fcr & UART_FCR_ENABLE)
		iir |= UART_IIR_FIFO;
	return iir;
}

static void uart_update_irq_locked(struct uart *u)
{
	bool level = !(uart_iir_locked(u) & UART_IIR_NO_INT);

	if (level != u->irq_level) {
		u->irq_level = level;
		plic_set_irq(u->vm->plic, u->irq, level);
	}
}

/* Appends to the receive buffer; the caller made sure there is room. */
static void uart_rx_push_locked(struct uart *u, uint8_t b)
{
	if (u->rx_count < UART_RX_CAP) {
		u->rx[(u->rx_head + u->rx_count) % UART_RX_CAP] = b;
		u->rx_count++;
	}
}

/* The console's input callbacks (console thread). */
static size_t uart_input_room(void *opaque)
{
	struct uart *u = opaque;

	pthread_mutex_lock(&u->lock);
	size_t room = UART_RX_CAP - u->rx_count;
	pthread_mutex_unlock(&u->lock);
	return room;
}

static void uart_input_receive(void *opaque, const uint8_t *buf, size_t n)
{
	struct uart *u = opaque;

	pthread_mutex_lock(&u->lock);
	for (size_t i = 0; i < n; i++)
		uart_rx_push_locked(u, buf[i]);
	uart_update_irq_locked(u);
	pthread_mutex_unlock(&u->lock);
}

static const struct console_input_ops uart_input_ops = {
	.room = uart_input_room,
	.receive = uart_input_receive,
};

static uint8_t uart_msr_locked(const struct uart *u)
{
	if (u->mcr & UART_MCR_LOOP) {
		/* Loopback: the modem outputs (DTR, RTS, OUT1, OUT2) feed DSR, CTS, RI, DCD. */
		uint8_t msr = 0;
		if (u->mcr & 0x01)
			msr |= UART_MSR_DSR;
		if (u->mcr & 0x02)
			msr |= UART_MSR_CTS;
		if (u->mcr & 0x04)
			msr |= UART_MSR_RI;
		if (u->mcr & 0x08)
			msr |= UART_MSR_DCD;
		return msr;
	}
	return UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS;
}

static uint64_t uart_read(void *opaque, uint64_t off, unsigned size)
{
	struct uart *u = opaque;
	uint8_t val = 0;
	bool drained = false;

	(void)size;
	pthread_mutex_lock(&u->lock);
	switch (off) {
	case UART_RBR:
		if (u->lcr & UART_LCR_DLAB) {
			val = u->dll;
		} else if (u->rx_count) {
			val = u->rx[u->rx_head];
			u->rx_head = (u->rx_head + 1) % UART_RX_CAP;
			drained = u->rx_count-- == UART_RX_CAP;
			uart_update_irq_locked(u);
		}
		break;
	case UART_IER: val = u->lcr & UART_LCR_DLAB ? u->dlm : u->ier; break;
	case UART_IIR:
		val = uart_iir_locked(u);
		/* Reading IIR acknowledges a THR-empty interrupt (16550 datasheet). */
		if ((val & 0x0f) == UART_IIR_THRI) {
			u->thr_ipending = false;
			uart_update_irq_locked(u);
		}
		break;
	case UART_LCR: val = u->lcr; break;
	case UART_MCR: val = u->mcr; break;
	case UART_LSR: val = UART_LSR_THRE | UART_LSR_TEMT | (u->rx_count ? UART_LSR_DR : 0); break;
	case UART_MSR: val = uart_msr_locked(u); break;
	case UART_SCR: val = u->scr; break;
	default: break;
	}
	pthread_mutex_unlock(&u->lock);
	/* Outside the lock: the console's thread calls back into it. */
	if (drained && u->input)
		console_input_ready(u->con);
	return val;
}

static void uart_write(void *opaque, uint64_t off, uint64_t val64, unsigned size)
{
	struct uart *u = opaque;
	uint8_t val = (uint8_t)val64;

	(void)size;
	pthread_mutex_lock(&u->lock);
	switch (off) {
	case UART_THR:
		if (u->lcr & UART_LCR_DLAB) {
			u->dll = val;
			break;
		}
		if (u->mcr & UART_MCR_LOOP)
			uart_rx_push_locked(u, val);
		else
			console_write(u->con, &val, 1);
		/* Sent at once: THR is empty again. */
		u->thr_ipending = true;
		uart_update_irq_locked(u);
		break;
	case UART_IER:
		if (u->lcr & UART_LCR_DLAB) {
			u->dlm = val;
			break;
		}
		/* Enabling the THRE interrupt while THR is empty raises it at once: Linux's
		 * startup test (UART_BUG_THRE) and its transmit path rely on that. */
		if ((val & UART_IER_THRI) && !(u->ier & UART_IER_THRI))
			u->thr_ipending = true;
		else if (!(val & UART_IER_THRI))
			u->thr_ipending = false;
		u->ier = val & UART_IER_MASK;
		uart_update_irq_locked(u);
		break;
	case UART_FCR:
		/* FCR's clear-RX bit empties the chip's 16-byte FIFO. Our buffer stands for the
		 * host side (what QEMU keeps in its chardev) too, so it is kept: Linux clears
		 * the FIFO when it opens the port and would otherwise eat typed-ahead input. */
		u->fcr = val & UART_FCR_KEEP;
		uart_update_irq_locked(u);
		break;
	case UART_LCR: u->lcr = val; break;
	case UART_MCR: u->mcr = val & UART_MCR_MASK; break;
	case UART_SCR: u->scr = val; break;
	default: break; /* LSR and MSR are read-only */
	}
	pthread_mutex_unlock(&u->lock);
}

int uart_fdt_path(const struct uart *u, char *buf, size_t len)
{
	int n = snprintf(buf, len, "/soc/serial@%" PRIx64, u->base);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int uart_fdt_node(void *opaque, void *fdt, const struct vm *vm)
{
	struct uart *u = opaque;
	int err;

	(void)vm;
	err = virt_fdt_begin_region(fdt, "serial", u->base, u->size);
	if (err)
		return err;
	VIRT_FDT_TRY(fdt_property_string(fdt, "compatible", "ns16550a"));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "clock-frequency", UART_CLOCK_HZ));
	err = virt_fdt_plic_irq(fdt, u->irq);
	if (err)
		return err;
	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

const struct mmio_ops uart_ops = {
	.read = uart_read,
	.write = uart_write,
	.fdt_node = uart_fdt_node,
};

int uart_create_console(struct vm *vm, const struct mmio_region *where, struct console *con,
			bool input, struct uart **out)
{
	struct uart *u = calloc(1, sizeof(*u));
	int err;

	if (!u)
		return -ENOMEM;
	u->vm = vm;
	u->base = where->base;
	u->size = where->size;
	u->irq = where->irq;
	u->con = con;
	err = -pthread_mutex_init(&u->lock, NULL);
	if (err) {
		free(u);
		return err;
	}
	if (input) {
		u->input = true;
		console_set_input(con, &uart_input_ops, u);
	}
	*out = u;
	return 0;
}

int uart_create(struct vm *vm, const struct mmio_region *where, int in_fd, int out_fd,
		struct uart **out)
{
	struct console *con;
	int err = console_create(vm, in_fd, out_fd, &con);

	if (err)
		return err;
	err = uart_create_console(vm, where, con, true, out);
	if (err) {
		console_destroy(con);
		return err;
	}
	(*out)->own_con = true;
	return 0;
}

void uart_destroy(struct uart *u)
{
	if (!u)
		return;
	if (u->input)
		console_set_input(u->con, NULL, NULL);
	if (u->own_con)
		console_destroy(u->con);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

void uart_save(struct uart *u, struct sbuf *b)
{
	pthread_mutex_lock(&u->lock);
	const uint8_t regs[7] = { u->ier, u->lcr, u->mcr, u->scr, u->dll, u->dlm, u->fcr };
	sbuf_put(b, regs, sizeof(regs));
	sbuf_bool(b, u->thr_ipending);
	sbuf_bool(b, u->irq_level);
	sbuf_u32(b, (uint32_t)u->rx_count);
	for (size_t i = 0; i < u->rx_count; i++)
		sbuf_u8(b, u->rx[(u->rx_head + i) % UART_RX_CAP]);
	pthread_mutex_unlock(&u->lock);
}

int uart_load(struct uart *u, struct sreader *r)
{
	uint8_t regs[7];

	sreader_get(r, regs, sizeof(regs));
	bool thr = sreader_bool(r);
	bool level = sreader_bool(r);
	uint32_t n = sreader_len(r, UART_RX_CAP, "uart: receive buffer too long");
	const uint8_t *rx = sreader_take(r, n);
	if (!sreader_ok(r))
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	u->ier = regs[0];
	u->lcr = regs[1];
	u->mcr = regs[2];
	u->scr = regs[3];
	u->dll = regs[4];
	u->dlm = regs[5];
	u->fcr = regs[6];
	u->thr_ipending = thr;
	/* Input typed while the VM was loading follows what the guest had not read yet. */
	uint8_t typed[UART_RX_CAP];
	size_t ntyped = u->rx_count;
	for (size_t i = 0; i < ntyped; i++)
		typed[i] = u->rx[(u->rx_head + i) % UART_RX_CAP];
	u->rx_head = 0;
	u->rx_count = n;
	if (n)
		memcpy(u->rx, rx, n);
	for (size_t i = 0; i < ntyped && u->rx_count < UART_RX_CAP; i++)
		u->rx[u->rx_count++] = typed[i];
	/* The PLIC's copy of the line was restored with it. */
	u->irq_level = level;
	uart_update_irq_locked(u);
	pthread_mutex_unlock(&u->lock);
	return 0;
}
