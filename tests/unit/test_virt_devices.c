/* The virt machine's devices through their MMIO ops: PLIC claim/complete, CLINT timer
 * thread and IPIs, UART registers and input flow, syscon exits, goldfish RTC. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "fake_harts.h"
#include "machine/riscv-virt/clint.h"
#include "machine/riscv-virt/goldfish_rtc.h"
#include "machine/riscv-virt/plic.h"
#include "machine/riscv-virt/syscon.h"
#include "machine/riscv-virt/uart.h"

static bool line(int hart, uint64_t mask)
{
	return atomic_load(&mip[hart]) & mask;
}

/* Waits up to ms for a line to reach level; true when it did. */
static bool wait_line(int hart, uint64_t mask, bool level, int ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&mip_lock);
	while (line(hart, mask) != level)
		if (pthread_cond_timedwait(&mip_cond, &mip_lock, &ts) != 0)
			break;
	bool ok = line(hart, mask) == level;
	pthread_mutex_unlock(&mip_lock);
	return ok;
}

static struct vm_config cfg;
static struct vm vm;

static int setup_vm(void **state)
{
	(void)state;
	memset(&vm, 0, sizeof(vm));
	memset(&cfg, 0, sizeof(cfg));
	for (int i = 0; i < VM_MAX_CPUS; i++)
		atomic_store(&mip[i], 0);
	cfg.cpus = 4;
	cfg.memory = 1 << 20;
	vm.cfg = &cfg;
	vm.ram.base = RAM_BASE;
	vm.ram.size = cfg.memory;
	vm.nharts = 4;
	for (int h = 0; h < 4; h++)
		vm.harts[h] = (struct hart *)&fake_harts[h];
	pthread_mutex_init(&vm.exit_lock, NULL);
	pthread_cond_init(&vm.exit_cond, NULL);
	vm.clock_base_ns = host_now_ns();
	return 0;
}

static int teardown_vm(void **state)
{
	(void)state;
	pthread_mutex_destroy(&vm.exit_lock);
	pthread_cond_destroy(&vm.exit_cond);
	return 0;
}

/* ---- PLIC ---- */

static const struct mmio_region plic_where = { .base = 0xc000000, .size = 0x4000000 };

static uint32_t plic_rd(struct plic *p, uint64_t off)
{
	return (uint32_t)plic_ops.read(p, off, 4);
}

static void plic_wr(struct plic *p, uint64_t off, uint32_t val)
{
	plic_ops.write(p, off, val, 4);
}

#define CTX_ENABLE(ctx) (PLIC_ENABLE + PLIC_ENABLE_STRIDE * (ctx))
#define CTX_THRESHOLD(ctx) (PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * (ctx))
#define CTX_CLAIM(ctx) (CTX_THRESHOLD(ctx) + PLIC_CLAIM)

static void test_plic_claim_complete(void **state)
{
	(void)state;
	struct plic *p;
	assert_int_equal(plic_create(&vm, &plic_where, &p), 0);

	plic_wr(p, PLIC_PRIORITY + 4 * 10, 1);
	plic_wr(p, PLIC_PRIORITY + 4 * 11, 1);
	assert_int_equal(plic_rd(p, PLIC_PRIORITY + 4 * 10), 1);
	plic_wr(p, PLIC_PRIORITY + 4 * 12, 0xff); /* only 3 bits of priority */
	assert_int_equal(plic_rd(p, PLIC_PRIORITY + 4 * 12), PLIC_PRIORITY_MAX);

	/* Hart 1's S context (3) enables 10 and 11; nothing else. */
	plic_wr(p, CTX_ENABLE(3), 1u << 10 | 1u << 11 | 1u << 0);
	assert_int_equal(plic_rd(p, CTX_ENABLE(3)), 1u << 10 | 1u << 11); /* source 0 stays off */

	plic_set_irq(p, 10, true);
	assert_int_equal(plic_rd(p, PLIC_PENDING), 1u << 10);
	assert_true(line(1, MIP_SEIP));
	assert_false(line(1, MIP_MEIP));
	assert_false(line(0, MIP_SEIP));

	/* Claim: source 10, pending cleared, line down while in service. */
	assert_int_equal(plic_rd(p, CTX_CLAIM(3)), 10);
	assert_int_equal(plic_rd(p, PLIC_PENDING), 0);
	assert_false(line(1, MIP_SEIP));
	assert_int_equal(plic_rd(p, CTX_CLAIM(3)), 0); /* nothing more */

	/* Level toggles while in service do not pend it again. */
	plic_set_irq(p, 10, false);
	plic_set_irq(p, 10, true);
	assert_int_equal(plic_rd(p, PLIC_PENDING), 0);
	assert_false(line(1, MIP_SEIP));

	/* Complete with the level still high: pending again, line up. */
	plic_wr(p, CTX_CLAIM(3), 10);
	assert_int_equal(plic_rd(p, PLIC_PENDING), 1u << 10);
	assert_true(line(1, MIP_SEIP));
	assert_int_equal(plic_rd(p, CTX_CLAIM(3)), 10);
	plic_set_irq(p, 10, false);
	plic_wr(p, CTX_CLAIM(3), 10);
	assert_int_equal(plic_rd(p, PLIC_PENDING), 0);
	assert_false(line(1, MIP_SEIP));

	/* Pending follows the level before a claim. */
	plic_set_irq(p, 11, true);
	assert_true(line(1, MIP_SEIP));
	plic_set_irq(p, 11, false);
	assert_false(line(1, MIP_SEIP));
	assert_int_equal(plic_rd(p, CTX_CLAIM(3)), 0);

	/* Threshold: priority must be strictly above it. */
	plic_wr(p, CTX_THRESHOLD(3), 1);
	assert_int_equal(plic_rd(p, CTX_THRESHOLD(3)), 1);
	plic_set_irq(p, 11, true);
	assert_false(line(1, MIP_SEIP));
	plic_wr(p, PLIC_PRIORITY + 4 * 11, 2);
	assert_true(line(1, MIP_SEIP));
	plic_wr(p, CTX_THRESHOLD(3), 0);

	/* Highest priority first, then the lowest number among equals. */
	plic_set_irq(p, 10, true);
	assert_int_equal(plic_rd(p, CTX_CLAIM(3)), 11);
	assert_true(line(1, MIP_SEIP)); /* 10 still pending */
	assert_int_equal(plic_rd(p, CTX_CLAIM(3)), 10);
	assert_false(line(1, MIP_SEIP));

	/* A completion for a source not enabled on the context is ignored. */
	plic_wr(p, CTX_CLAIM(2), 10);
	assert_int_equal(plic_rd(p, PLIC_PENDING), 0);
	plic_wr(p, CTX_CLAIM(3), 10);
	plic_wr(p, CTX_CLAIM(3), 11);
	assert_int_equal(plic_rd(p, PLIC_PENDING), 1u << 10 | 1u << 11);

	/* M context of hart 0 sees the same source when enabled there. */
	plic_wr(p, CTX_ENABLE(0), 1u << 11);
	assert_true(line(0, MIP_MEIP));
	plic_wr(p, CTX_ENABLE(0), 0);
	assert_false(line(0, MIP_MEIP));

	/* Out-of-range sources and contexts are ignored, not fatal. */
	plic_set_irq(p, 0, true);
	plic_set_irq(p, PLIC_NSOURCES, true);
	plic_set_irq(NULL, 10, true);
	plic_wr(p, CTX_ENABLE(8), 0xffffffff);
	assert_int_equal(plic_rd(p, CTX_ENABLE(8)), 0);
	assert_int_equal(plic_rd(p, CTX_CLAIM(8)), 0);
	assert_int_equal((uint32_t)plic_ops.read(p, 0x3ffffff & ~3ULL, 4), 0);

	/* 64-bit access = two words. */
	plic_ops.write(p, PLIC_PRIORITY + 4 * 20, 3ULL | 5ULL << 32, 8);
	assert_int_equal(plic_rd(p, PLIC_PRIORITY + 4 * 21), 5);
	plic_destroy(p);
}

/* ---- CLINT ---- */

static const struct mmio_region clint_where = { .base = 0x2000000, .size = 0x10000 };

static void test_clint_ipi(void **state)
{
	(void)state;
	struct clint *c;
	assert_int_equal(clint_create(&vm, &clint_where, &c), 0);
	clint_ops.write(c, CLINT_MSIP + 4 * 2, 1, 4);
	assert_true(line(2, MIP_MSIP));
	assert_false(line(1, MIP_MSIP));
	assert_int_equal(clint_ops.read(c, CLINT_MSIP + 4 * 2, 4), 1);
	clint_ops.write(c, CLINT_MSIP + 4 * 2, 0xfffffffe, 4);
	assert_false(line(2, MIP_MSIP));
	/* Past the last hart: ignored. */
	clint_ops.write(c, CLINT_MSIP + 4 * 4, 1, 4);
	assert_int_equal(clint_ops.read(c, CLINT_MSIP + 4 * 4, 4), 0);
	clint_destroy(c);
}

static uint64_t ms_since(uint64_t t0)
{
	return (host_now_ns() - t0) / 1000000;
}

static void test_clint_timer(void **state)
{
	(void)state;
	struct clint *c;
	assert_int_equal(clint_create(&vm, &clint_where, &c), 0);

	/* Reset: compare at the far future, no timer interrupt. */
	assert_int_equal(clint_ops.read(c, CLINT_MTIMECMP, 8), UINT64_MAX);
	assert_false(line(0, MIP_MTIP));

	/* mtime ticks at 10 MHz and reads in halves too. */
	uint64_t t1 = clint_ops.read(c, CLINT_MTIME, 8);
	usleep(2000);
	uint64_t t2 = clint_ops.read(c, CLINT_MTIME, 8);
	assert_true(t2 - t1 >= 20000 && t2 - t1 < 10000000);
	assert_int_equal(clint_ops.read(c, CLINT_MTIME + 4, 4), vm_mtime(&vm) >> 32);

	/* A compare already passed raises MTIP at once; a future one lowers it at once. */
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 1, 0, 8);
	assert_true(line(1, MIP_MTIP));
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 1, UINT64_MAX, 8);
	assert_false(line(1, MIP_MTIP));

	/* A compare 30 ms ahead fires from the timer thread, not before. */
	uint64_t t0 = host_now_ns();
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 3, vm_mtime(&vm) + 300000, 8);
	assert_false(line(3, MIP_MTIP));
	assert_true(wait_line(3, MIP_MTIP, true, 2000));
	uint64_t ms = ms_since(t0);
	assert_true(ms >= 29 && ms < 1000);
	assert_false(line(0, MIP_MTIP));

	/* Re-arming to an earlier deadline wakes the sleeping thread. */
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 0, vm_mtime(&vm) + 100000000, 8); /* 10 s */
	usleep(5000);
	t0 = host_now_ns();
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 0, vm_mtime(&vm) + 100000, 8); /* 10 ms */
	assert_true(wait_line(0, MIP_MTIP, true, 2000));
	assert_true(ms_since(t0) < 1000);

	/* Two 32-bit halves, high first as RV32 code does. */
	uint64_t when = vm_mtime(&vm) + 200000;
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 2 + 4, when >> 32, 4);
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 2, (uint32_t)when, 4);
	assert_int_equal(clint_ops.read(c, CLINT_MTIMECMP + 8 * 2, 8), when);
	assert_int_equal(clint_ops.read(c, CLINT_MTIMECMP + 8 * 2 + 4, 4), when >> 32);
	assert_true(wait_line(2, MIP_MTIP, true, 2000));

	/* mtime writes are ignored. */
	clint_ops.write(c, CLINT_MTIME, 0, 8);
	assert_true(clint_ops.read(c, CLINT_MTIME, 8) >= t2);
	clint_destroy(c);
}

/* A hart sleeping in WFI waits for its own compare: the timer thread leaves it alone, and
 * the hart raises its line when it wakes. */
static void test_clint_wfi(void **state)
{
	(void)state;
	struct clint *c;
	assert_int_equal(clint_create(&vm, &clint_where, &c), 0);
	assert_ptr_equal(vm.wfi_opaque, c);
	const struct vm_wfi_ops *ops = vm.wfi_ops;
	assert_non_null(ops);

	/* No compare pending: nothing to wait for. */
	assert_int_equal(ops->sleep(c, 1), UINT64_MAX);
	ops->wake(c, 1);

	/* A compare 30 ms ahead: the hart is told when, and the thread does not fire it. */
	uint64_t when = vm_mtime(&vm) + 300000;
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 1, when, 8);
	assert_int_equal(ops->sleep(c, 1), vm_mtime_to_ns(&vm, when));
	assert_false(wait_line(1, MIP_MTIP, true, 100));
	/* Woken past it: the line rises at once. */
	ops->wake(c, 1);
	assert_true(line(1, MIP_MTIP));

	/* Woken early (another interrupt): the thread takes the deadline back and fires it. */
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 2, vm_mtime(&vm) + 300000, 8);
	assert_true(ops->sleep(c, 2) != UINT64_MAX);
	ops->wake(c, 2);
	assert_false(line(2, MIP_MTIP));
	assert_true(wait_line(2, MIP_MTIP, true, 2000));

	/* A new compare for a sleeping hart wakes it to wait anew. */
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 3, vm_mtime(&vm) + 100000000, 8);
	assert_true(ops->sleep(c, 3) != UINT64_MAX);
	int k = atomic_load(&kicks[3]);
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 3, vm_mtime(&vm) + 50000000, 8);
	assert_int_equal(atomic_load(&kicks[3]), k + 1);
	ops->wake(c, 3);
	assert_false(line(3, MIP_MTIP));

	/* Harts the machine does not have are ignored. */
	assert_int_equal(ops->sleep(c, VM_MAX_CPUS), UINT64_MAX);
	ops->wake(c, -1);
	clint_destroy(c);
	assert_null(vm.wfi_ops);
}

/* Sstc: the CLINT drives each hart's STIP from the stimecmp the hart tells it, as it drives
 * MTIP from mtimecmp, and counts it among the hart's WFI deadlines. */
static void test_clint_sstc(void **state)
{
	(void)state;
	struct clint *c;
	assert_int_equal(clint_create(&vm, &clint_where, &c), 0);
	const struct vm_wfi_ops *ops = vm.wfi_ops;
	assert_non_null(ops->stimer);

	/* A compare already passed raises STIP at once, only while enabled; a future one
	 * lowers it at once. */
	ops->stimer(c, 1, 0, false);
	assert_false(line(1, MIP_STIP));
	ops->stimer(c, 1, 0, true);
	assert_true(line(1, MIP_STIP));
	assert_false(line(1, MIP_MTIP));
	ops->stimer(c, 1, vm_mtime(&vm) + 100000000, true);
	assert_false(line(1, MIP_STIP));
	ops->stimer(c, 1, 0, true);
	ops->stimer(c, 1, 0, false); /* STCE cleared: the line drops */
	assert_false(line(1, MIP_STIP));

	/* A compare 30 ms ahead fires from the timer thread, not before. */
	uint64_t t0 = host_now_ns();
	ops->stimer(c, 2, vm_mtime(&vm) + 300000, true);
	assert_false(line(2, MIP_STIP));
	assert_true(wait_line(2, MIP_STIP, true, 2000));
	uint64_t ms = ms_since(t0);
	assert_true(ms >= 29 && ms < 1000);
	assert_false(line(2, MIP_MTIP));
	ops->stimer(c, 2, UINT64_MAX, true);
	assert_false(line(2, MIP_STIP));

	/* Disabled, a compare never fires. */
	ops->stimer(c, 0, vm_mtime(&vm) + 100000, false);
	assert_false(wait_line(0, MIP_STIP, true, 50));

	/* WFI: the hart waits for the earlier of its two compares... */
	uint64_t mt = vm_mtime(&vm) + 50000000, st = vm_mtime(&vm) + 300000;
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 3, mt, 8);
	ops->stimer(c, 3, st, true);
	assert_int_equal(ops->sleep(c, 3), vm_mtime_to_ns(&vm, st));
	/* ...which the thread leaves to it; the line rises when it wakes past it. */
	assert_false(wait_line(3, MIP_STIP, true, 100));
	ops->wake(c, 3);
	assert_true(line(3, MIP_STIP));
	assert_false(line(3, MIP_MTIP));
	/* With the supervisor compare passed (or disabled), mtimecmp is the deadline. */
	assert_int_equal(ops->sleep(c, 3), vm_mtime_to_ns(&vm, mt));
	ops->wake(c, 3);
	ops->stimer(c, 3, vm_mtime(&vm) + 1000, false);
	assert_false(line(3, MIP_STIP));
	assert_int_equal(ops->sleep(c, 3), vm_mtime_to_ns(&vm, mt));
	ops->wake(c, 3);
	/* Neither pending: no deadline. */
	clint_ops.write(c, CLINT_MTIMECMP + 8 * 3, UINT64_MAX, 8);
	assert_int_equal(ops->sleep(c, 3), UINT64_MAX);
	ops->wake(c, 3);

	/* A new supervisor compare for a sleeping hart wakes it to wait anew. */
	ops->stimer(c, 3, vm_mtime(&vm) + 100000000, true);
	assert_true(ops->sleep(c, 3) != UINT64_MAX);
	int k = atomic_load(&kicks[3]);
	ops->stimer(c, 3, vm_mtime(&vm) + 50000000, true);
	assert_int_equal(atomic_load(&kicks[3]), k + 1);
	ops->wake(c, 3);

	/* Harts the machine does not have are ignored. */
	ops->stimer(c, VM_MAX_CPUS, 0, true);
	ops->stimer(c, -1, 0, true);
	clint_destroy(c);
}

/* ---- UART ---- */

static const struct mmio_region uart_where = { .base = 0x10000000, .size = 0x100, .irq = 10 };

struct uart_rig {
	struct plic *plic;
	struct uart *uart;
	int in[2], out[2];
};

static void uart_rig_init(struct uart_rig *r)
{
	assert_int_equal(pipe(r->in), 0);
	assert_int_equal(pipe(r->out), 0);
	fcntl(r->out[0], F_SETFL, O_NONBLOCK);
	assert_int_equal(plic_create(&vm, &plic_where, &r->plic), 0);
	vm.plic = r->plic;
	/* Source 10 to hart 0's S context. */
	plic_ops.write(r->plic, PLIC_PRIORITY + 4 * 10, 1, 4);
	plic_ops.write(r->plic, CTX_ENABLE(1), 1u << 10, 4);
	assert_int_equal(uart_create(&vm, &uart_where, r->in[0], r->out[1], &r->uart), 0);
}

static void uart_rig_free(struct uart_rig *r)
{
	uart_destroy(r->uart);
	plic_destroy(r->plic);
	vm.plic = NULL;
	close(r->in[0]);
	if (r->in[1] >= 0)
		close(r->in[1]);
	close(r->out[0]);
	close(r->out[1]);
}

static uint8_t ur(struct uart_rig *r, uint64_t off)
{
	return (uint8_t)uart_ops.read(r->uart, off, 1);
}

static void uw(struct uart_rig *r, uint64_t off, uint8_t v)
{
	uart_ops.write(r->uart, off, v, 1);
}

/* Waits for data-ready. */
static bool uart_wait_dr(struct uart_rig *r, int ms)
{
	for (int i = 0; i < ms; i++) {
		if (ur(r, 5) & 1)
			return true;
		usleep(1000);
	}
	return false;
}

static void test_uart_registers(void **state)
{
	(void)state;
	struct uart_rig r;
	uart_rig_init(&r);

	/* After reset: THR empty, no data, no interrupt. */
	assert_int_equal(ur(&r, 5), 0x60);
	assert_int_equal(ur(&r, 2) & 0x0f, 0x01);
	assert_int_equal(ur(&r, 6), 0xb0);

	/* Divisor latch. */
	uw(&r, 3, 0x83);
	uw(&r, 0, 0x12);
	uw(&r, 1, 0x34);
	assert_int_equal(ur(&r, 0), 0x12);
	assert_int_equal(ur(&r, 1), 0x34);
	uw(&r, 3, 0x03);
	assert_int_equal(ur(&r, 3), 0x03);
	assert_int_equal(ur(&r, 1), 0); /* IER, not DLM */
	uw(&r, 7, 0x5a);
	assert_int_equal(ur(&r, 7), 0x5a);

	/* FIFO enabled shows in IIR's top bits. */
	uw(&r, 2, 0x07);
	assert_int_equal(ur(&r, 2), 0xc1);

	/* Transmit goes straight out. */
	uw(&r, 0, 'h');
	uw(&r, 0, 'i');
	char buf[8];
	assert_int_equal(read(r.out[0], buf, sizeof(buf)), 2);
	assert_memory_equal(buf, "hi", 2);

	/* THRE interrupt: raised on enabling, acknowledged by reading IIR, re-armed by a
	 * transmit. */
	uw(&r, 1, 0x02);
	assert_true(line(0, MIP_SEIP));
	assert_int_equal(ur(&r, 2), 0xc2);
	assert_false(line(0, MIP_SEIP));
	assert_int_equal(ur(&r, 2), 0xc1);
	uw(&r, 0, '!');
	assert_true(line(0, MIP_SEIP));
	assert_int_equal(read(r.out[0], buf, sizeof(buf)), 1);
	uw(&r, 1, 0x00);
	assert_false(line(0, MIP_SEIP));

	/* Received data: DR, RDI (which outranks THRE), read clears. */
	assert_int_equal(write(r.in[1], "ab", 2), 2);
	assert_true(uart_wait_dr(&r, 2000));
	assert_false(line(0, MIP_SEIP)); /* IER off */
	uw(&r, 1, 0x03);
	assert_true(line(0, MIP_SEIP));
	assert_int_equal(ur(&r, 2), 0xc4);
	assert_int_equal(ur(&r, 0), 'a');
	assert_true(ur(&r, 5) & 1);
	assert_int_equal(ur(&r, 0), 'b');
	assert_int_equal(ur(&r, 5), 0x60);
	assert_int_equal(ur(&r, 2), 0xc2); /* THRE still armed from the enable */
	assert_int_equal(ur(&r, 2), 0xc1);
	assert_false(line(0, MIP_SEIP));
	assert_int_equal(ur(&r, 0), 0); /* empty: reads 0 */

	/* Loopback: transmit comes back as input and the modem lines follow MCR. */
	uw(&r, 1, 0);
	uw(&r, 4, 0x1f);
	assert_int_equal(ur(&r, 6), 0xf0);
	uw(&r, 0, 'L');
	assert_int_equal(ur(&r, 5) & 1, 1);
	assert_int_equal(ur(&r, 0), 'L');
	assert_int_equal(read(r.out[0], buf, sizeof(buf)), -1); /* nothing went out */
	uw(&r, 4, 0x03);
	assert_int_equal(ur(&r, 6), 0xb0);

	uart_rig_free(&r);
}

struct writer {
	int fd;
	const uint8_t *data;
	size_t len;
};

static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	size_t done = 0;
	while (done < w->len) {
		ssize_t n = write(w->fd, w->data + done, w->len - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	close(w->fd);
	return NULL;
}

/* A burst much larger than the buffer, read slowly: nothing lost, order kept, and EOF
 * ends the input thread. */
static void test_uart_input_flow(void **state)
{
	(void)state;
	struct uart_rig r;
	uart_rig_init(&r);
	enum { N = 100000 };
	static uint8_t data[N], got[N];
	for (size_t i = 0; i < N; i++)
		data[i] = (uint8_t)(i * 31 + i / 256);

	struct writer w = { .fd = r.in[1], .data = data, .len = N };
	pthread_t t;
	r.in[1] = -1;
	assert_int_equal(pthread_create(&t, NULL, writer_thread, &w), 0);
	usleep(50000); /* let the buffer fill up and the pipe back up */
	size_t n = 0;
	uint64_t t0 = host_now_ns();
	while (n < N && ms_since(t0) < 20000) {
		if (ur(&r, 5) & 1)
			got[n++] = ur(&r, 0);
		else
			usleep(100);
	}
	pthread_join(t, NULL);
	assert_int_equal(n, N);
	assert_memory_equal(got, data, N);
	usleep(20000);
	assert_int_equal(ur(&r, 5) & 1, 0);
	uart_rig_free(&r);
}

/* No input at all (in_fd < 0), and an input at EOF from the start. */
static void test_uart_no_input(void **state)
{
	(void)state;
	struct uart *u;
	assert_int_equal(uart_create(&vm, &uart_where, -1, -1, &u), 0);
	assert_int_equal(uart_ops.read(u, 5, 1), 0x60);
	uart_ops.write(u, 0, 'x', 1); /* output to a closed fd: dropped, no crash */
	char path[64];
	assert_int_equal(uart_fdt_path(u, path, sizeof(path)), 0);
	assert_string_equal(path, "/soc/serial@10000000");
	uart_destroy(u);

	int fd = open("/dev/null", O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(uart_create(&vm, &uart_where, fd, -1, &u), 0);
	usleep(10000);
	assert_int_equal(uart_ops.read(u, 5, 1), 0x60);
	uart_destroy(u);
	close(fd);
}

/* ---- syscon ---- */

static void expect_exit(struct syscon *s, uint64_t val, int reason, uint64_t code)
{
	atomic_store(&vm.exit_reason, VM_EXIT_NONE);
	vm.exit_code = 0;
	syscon_ops.write(s, 0, val, 4);
	assert_int_equal(atomic_load(&vm.exit_reason), reason);
	assert_int_equal(vm.exit_code, code);
}

static void test_syscon(void **state)
{
	(void)state;
	static const struct mmio_region where = { .base = 0x100000, .size = 0x1000 };
	struct syscon *s;
	assert_int_equal(syscon_create(&vm, &where, &s), 0);
	expect_exit(s, 0x5555, VM_EXIT_POWEROFF, 0);
	expect_exit(s, 0x7777, VM_EXIT_REBOOT, 0);
	expect_exit(s, 0x3333 | 42 << 16, VM_EXIT_FAIL, (42 << 1) | 1);
	expect_exit(s, 0x1234, VM_EXIT_NONE, 0);
	atomic_store(&vm.exit_reason, VM_EXIT_NONE);
	syscon_ops.write(s, 4, 0x5555, 4); /* other offsets: nothing */
	assert_int_equal(atomic_load(&vm.exit_reason), VM_EXIT_NONE);
	assert_int_equal(syscon_ops.read(s, 0, 4), 0);
	syscon_destroy(s);
}

/* ---- goldfish RTC ---- */

static uint64_t rtc_now(struct goldfish_rtc *r)
{
	uint64_t lo = goldfish_rtc_ops.read(r, GOLDFISH_RTC_TIME_LOW, 4);
	uint64_t hi = goldfish_rtc_ops.read(r, GOLDFISH_RTC_TIME_HIGH, 4);
	return hi << 32 | lo;
}

static void test_goldfish_rtc(void **state)
{
	(void)state;
	static const struct mmio_region where = { .base = 0x101000, .size = 0x1000, .irq = 11 };
	struct goldfish_rtc *r;
	struct timespec ts;
	assert_int_equal(goldfish_rtc_create(&vm, &where, &r), 0);

	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t host = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	uint64_t t = rtc_now(r);
	assert_true(t >= host && t - host < 1000000000ULL);

	/* Setting the time: HIGH then LOW, as Linux does. */
	uint64_t set = 1000000000ULL * 86400 * 365;
	goldfish_rtc_ops.write(r, GOLDFISH_RTC_TIME_HIGH, set >> 32, 4);
	goldfish_rtc_ops.write(r, GOLDFISH_RTC_TIME_LOW, (uint32_t)set, 4);
	t = rtc_now(r);
	assert_true(t >= set && t - set < 1000000000ULL);

	/* Alarm registers hold their values. */
	goldfish_rtc_ops.write(r, GOLDFISH_RTC_ALARM_HIGH, 1, 4);
	goldfish_rtc_ops.write(r, GOLDFISH_RTC_ALARM_LOW, 2, 4);
	assert_int_equal(goldfish_rtc_ops.read(r, GOLDFISH_RTC_ALARM_STATUS, 4), 1);
	assert_int_equal(goldfish_rtc_ops.read(r, GOLDFISH_RTC_ALARM_HIGH, 4), 1);
	assert_int_equal(goldfish_rtc_ops.read(r, GOLDFISH_RTC_ALARM_LOW, 4), 2);
	goldfish_rtc_ops.write(r, GOLDFISH_RTC_CLEAR_ALARM, 1, 4);
	assert_int_equal(goldfish_rtc_ops.read(r, GOLDFISH_RTC_ALARM_STATUS, 4), 0);
	goldfish_rtc_ops.write(r, GOLDFISH_RTC_CLEAR_INTERRUPT, 1, 4);
	goldfish_rtc_destroy(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_plic_claim_complete, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_clint_ipi, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_clint_timer, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_clint_wfi, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_clint_sstc, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_uart_registers, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_uart_input_flow, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_uart_no_input, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_syscon, setup_vm, teardown_vm),
		cmocka_unit_test_setup_teardown(test_goldfish_rtc, setup_vm, teardown_vm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
