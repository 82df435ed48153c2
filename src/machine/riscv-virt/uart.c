/* ns16550a UART, the registers Linux's 8250 driver and OpenSBI's uart8250 use.
 *
 * Transmit is instantaneous: a THR write goes to the output fd at once with write(2) (no
 * stdio buffer to flush late), so THR and the transmitter are always empty and the THRE
 * interrupt re-arms after every byte. Receive: a thread reads the input fd into a bounded
 * buffer the guest drains through RBR; when the buffer is full the thread stops reading,
 * so input waits in the pipe or the terminal instead of being dropped.
 *
 * Interrupts follow the 16550 datasheet's priority (line status > received data >
 * THR empty > modem status); only received data and THR empty ever occur here. */
#include "machine/riscv-virt/uart.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"
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

/* Ctrl-A starts an escape sequence on a terminal, as in QEMU's -nographic. */
#define UART_ESCAPE 0x01

struct uart {
	struct vm *vm;
	uint64_t base;
	uint64_t size;
	int irq;
	int in_fd;
	int out_fd;

	pthread_mutex_t lock;
	pthread_cond_t space; /* the guest drained the buffer, or stop */
	uint8_t rx[UART_RX_CAP];
	size_t rx_head;
	size_t rx_count;

	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	bool thr_ipending; /* THR-empty interrupt armed, cleared by reading IIR */
	bool irq_level;    /* level last driven on the PLIC source */

	/* Input thread. */
	pthread_t thread;
	bool thread_started;
	bool stop;
	int wake[2]; /* a byte on wake[1] ends the thread's poll */
	bool tty;    /* in_fd is our terminal in raw mode: escapes apply */
	bool esc;    /* Ctrl-A seen */
};

/* The terminal is process-wide, so is what we saved of it: only one UART at a time puts
 * it in raw mode, and the restore must be reachable from atexit and signal handlers. */
static pthread_mutex_t uart_tty_lock = PTHREAD_MUTEX_INITIALIZER;
static struct termios uart_tty_saved;
static int uart_tty_fd = -1;
static volatile sig_atomic_t uart_tty_raw;
static bool uart_tty_hooks_installed;

/* Async-signal-safe: tcsetattr is on the POSIX list. */
static void uart_tty_restore(void)
{
	if (uart_tty_raw) {
		tcsetattr(uart_tty_fd, TCSANOW, &uart_tty_saved);
		uart_tty_raw = 0;
	}
}

static void uart_tty_signal(int sig)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	uart_tty_restore();
	/* Die of the same signal with the default action once this handler returns. */
	sigaction(sig, &dfl, NULL);
	raise(sig);
}

/* Leaves the terminal usable however the process ends: normal exit, or a fatal signal
 * nobody else handles. Handlers installed by the caller (before or after) take
 * precedence: we only claim signals still at their default action. */
static void uart_tty_install_hooks(void)
{
	static const int sigs[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGABRT,
				    SIGSEGV, SIGBUS, SIGILL, SIGFPE };

	if (uart_tty_hooks_installed)
		return;
	uart_tty_hooks_installed = true;
	atexit(uart_tty_restore);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		struct sigaction old, sa = { .sa_handler = uart_tty_signal };
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
static bool uart_tty_make_raw(int fd)
{
	struct termios raw;
	bool ok = false;

	pthread_mutex_lock(&uart_tty_lock);
	if (uart_tty_raw)
		goto out; /* another UART owns the terminal */
	if (tcgetattr(fd, &uart_tty_saved) != 0)
		goto out;
	raw = uart_tty_saved;
	raw.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
	raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
	raw.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
	raw.c_cflag |= CS8;
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	uart_tty_install_hooks();
	uart_tty_fd = fd;
	if (tcsetattr(fd, TCSANOW, &raw) != 0)
		goto out;
	uart_tty_raw = 1;
	ok = true;
out:
	pthread_mutex_unlock(&uart_tty_lock);
	return ok;
}

static void uart_tty_release(void)
{
	pthread_mutex_lock(&uart_tty_lock);
	uart_tty_restore();
	pthread_mutex_unlock(&uart_tty_lock);
}

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

static void uart_output(struct uart *u, uint8_t b)
{
	for (int tries = 0; tries < 10;) {
		ssize_t n = write(u->out_fd, &b, 1);
		if (n == 1)
			return;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			/* Someone made the fd non-blocking: wait a little rather than drop. */
			struct pollfd pfd = { .fd = u->out_fd, .events = POLLOUT };
			poll(&pfd, 1, 100);
			tries++;
			continue;
		}
		return; /* closed or broken output: the byte is lost, as on a cut line */
	}
}

static void uart_input_bytes(struct uart *u, const uint8_t *buf, size_t n)
{
	static const char help[] = "\r\nC-a x    exit the VM\r\nC-a C-a  send C-a\r\n";
	bool quit = false;

	pthread_mutex_lock(&u->lock);
	for (size_t i = 0; i < n; i++) {
		uint8_t b = buf[i];
		if (u->esc) {
			u->esc = false;
			if (b == 'x' || b == 'X') {
				quit = true;
			} else if (b == UART_ESCAPE) {
				uart_rx_push_locked(u, b);
			} else if (b == 'h' || b == '?') {
				ssize_t ignored = write(STDERR_FILENO, help, sizeof(help) - 1);
				(void)ignored;
			}
			continue;
		}
		if (u->tty && b == UART_ESCAPE) {
			u->esc = true;
			continue;
		}
		uart_rx_push_locked(u, b);
	}
	uart_update_irq_locked(u);
	pthread_mutex_unlock(&u->lock);
	/* Outside the lock: ending the run kicks harts, which may be waiting for it. */
	if (quit) {
		log_info("console: C-a x, terminating the VM");
		vm_request_exit(u->vm, VM_EXIT_POWEROFF, 0);
	}
}

static void *uart_input_thread(void *arg)
{
	struct uart *u = arg;
	uint8_t buf[256];

	for (;;) {
		size_t room;
		bool stop;

		pthread_mutex_lock(&u->lock);
		while (!u->stop && u->rx_count == UART_RX_CAP)
			pthread_cond_wait(&u->space, &u->lock);
		stop = u->stop;
		room = UART_RX_CAP - u->rx_count;
		pthread_mutex_unlock(&u->lock);
		if (stop)
			break;

		struct pollfd pfd[2] = {
			{ .fd = u->in_fd, .events = POLLIN },
			{ .fd = u->wake[0], .events = POLLIN },
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
		/* Only as much as fits: the rest stays in the pipe or terminal. */
		ssize_t n = read(u->in_fd, buf, room < sizeof(buf) ? room : sizeof(buf));
		if (n == 0)
			break; /* EOF: nothing more will come; stop rather than spin */
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			break;
		}
		uart_input_bytes(u, buf, (size_t)n);
	}
	return NULL;
}

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

	(void)size;
	pthread_mutex_lock(&u->lock);
	switch (off) {
	case UART_RBR:
		if (u->lcr & UART_LCR_DLAB) {
			val = u->dll;
		} else if (u->rx_count) {
			val = u->rx[u->rx_head];
			u->rx_head = (u->rx_head + 1) % UART_RX_CAP;
			if (u->rx_count-- == UART_RX_CAP)
				pthread_cond_signal(&u->space);
			uart_update_irq_locked(u);
		}
		break;
	case UART_IER:
		val = u->lcr & UART_LCR_DLAB ? u->dlm : u->ier;
		break;
	case UART_IIR:
		val = uart_iir_locked(u);
		/* Reading IIR acknowledges a THR-empty interrupt (16550 datasheet). */
		if ((val & 0x0f) == UART_IIR_THRI) {
			u->thr_ipending = false;
			uart_update_irq_locked(u);
		}
		break;
	case UART_LCR:
		val = u->lcr;
		break;
	case UART_MCR:
		val = u->mcr;
		break;
	case UART_LSR:
		val = UART_LSR_THRE | UART_LSR_TEMT | (u->rx_count ? UART_LSR_DR : 0);
		break;
	case UART_MSR:
		val = uart_msr_locked(u);
		break;
	case UART_SCR:
		val = u->scr;
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&u->lock);
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
			uart_output(u, val);
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
	case UART_LCR:
		u->lcr = val;
		break;
	case UART_MCR:
		u->mcr = val & UART_MCR_MASK;
		break;
	case UART_SCR:
		u->scr = val;
		break;
	default:
		break; /* LSR and MSR are read-only */
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

/* Decides whether to read in_fd and whether it is our raw terminal. */
static bool uart_input_wanted(struct uart *u)
{
	if (u->in_fd < 0)
		return false;
	if (!isatty(u->in_fd))
		return true; /* a pipe, a file, /dev/null: read it as it comes */
	/* A background job touching its terminal gets SIGTTIN/SIGTTOU and stops. (A terminal
	 * that is not our controlling one has no foreground group: tcgetpgrp fails.) */
	pid_t fg = tcgetpgrp(u->in_fd);
	if (fg >= 0 && fg != getpgrp()) {
		log_warn("console: standard input is the terminal of a background job: no guest input");
		return false;
	}
	u->tty = uart_tty_make_raw(u->in_fd);
	return true;
}

int uart_create(struct vm *vm, const struct mmio_region *where, int in_fd, int out_fd,
		struct uart **out)
{
	struct uart *u = calloc(1, sizeof(*u));
	int err;

	if (!u)
		return -ENOMEM;
	u->vm = vm;
	u->base = where->base;
	u->size = where->size;
	u->irq = where->irq;
	u->in_fd = in_fd;
	u->out_fd = out_fd;
	u->wake[0] = u->wake[1] = -1;

	err = -pthread_mutex_init(&u->lock, NULL);
	if (err)
		goto err_free;
	err = -pthread_cond_init(&u->space, NULL);
	if (err)
		goto err_mutex;

	/* Whatever the process printed through stdio must come before the guest's output. */
	fflush(stdout);

	if (uart_input_wanted(u)) {
		if (pipe(u->wake) != 0) {
			err = -errno;
			log_error("console: cannot create a pipe: %s", strerror(errno));
			goto err_tty;
		}
		err = -pthread_create(&u->thread, NULL, uart_input_thread, u);
		if (err) {
			log_error("console: cannot start the input thread: %s", strerror(-err));
			goto err_pipe;
		}
		u->thread_started = true;
	}
	*out = u;
	return 0;

err_pipe:
	close(u->wake[0]);
	close(u->wake[1]);
err_tty:
	if (u->tty)
		uart_tty_release();
	pthread_cond_destroy(&u->space);
err_mutex:
	pthread_mutex_destroy(&u->lock);
err_free:
	free(u);
	return err;
}

void uart_destroy(struct uart *u)
{
	if (!u)
		return;
	if (u->thread_started) {
		pthread_mutex_lock(&u->lock);
		u->stop = true;
		pthread_cond_signal(&u->space);
		pthread_mutex_unlock(&u->lock);
		ssize_t ignored = write(u->wake[1], "", 1);
		(void)ignored;
		pthread_join(u->thread, NULL);
		close(u->wake[0]);
		close(u->wake[1]);
	}
	if (u->tty)
		uart_tty_release();
	pthread_cond_destroy(&u->space);
	pthread_mutex_destroy(&u->lock);
	free(u);
}
