/* SiFive CLINT as on QEMU's virt machine.
 *
 * Harts never poll the clock: one timer thread per VM sleeps on a timerfd armed for the
 * earliest mtimecmp deadline and raises MTIP on the harts whose compare has passed. MTIP is
 * a level, (mtime >= mtimecmp[h]), so a write to mtimecmp recomputes it at once. The writer
 * arms the timerfd itself when the new compare is earlier than the armed deadline, so the
 * guest programming its next tick (every tick, on an idle guest) wakes no thread; a compare
 * moved later leaves the earlier deadline armed, and the thread re-arms when it fires. One
 * mutex covers all the state; hart_set_irq is called with it held so that the order in which
 * lines change always matches the order of the writes that caused it.
 *
 * Each hart's Sstc compare (stimecmp, a CSR of the hart) is kept here too, told by the hart
 * whenever it changes (clint_stimer): STIP is then a level (mtime >= stimecmp[h]) driven the
 * same way, and a hart's deadline is the earlier of its two compares. */
#include "machine/riscv-virt/clint.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"
#include "migration/sbuf.h"
#include "cpu/riscv/cpu.h"
#include "machine/riscv-virt/fdt_util.h"

#include <libfdt.h>

struct clint {
	struct vm *vm;
	uint64_t base;
	uint64_t size;
	int nharts;

	pthread_mutex_t lock;
	int tfd;	/* timerfd, CLOCK_MONOTONIC, absolute: the thread's next wake-up */
	uint64_t armed; /* the deadline (host ns) tfd is armed for; UINT64_MAX: disarmed */
	pthread_t thread;
	bool stop;

	uint64_t mtimecmp[VM_MAX_CPUS];
	bool mtip[VM_MAX_CPUS]; /* level last driven on each hart */
	/* Sstc: the hart's stimecmp and menvcfg.STCE as it last told, and STIP as driven. */
	uint64_t stimecmp[VM_MAX_CPUS];
	bool stce[VM_MAX_CPUS];
	bool stip[VM_MAX_CPUS];
	/* The hart sleeps in WFI until its own compare (clint_wfi_sleep): the thread leaves
	 * that deadline to it. */
	bool wfi_owned[VM_MAX_CPUS];
	uint32_t msip[VM_MAX_CPUS];
};

/* Bytes [shift, shift+size) of a register value, for sub-word or split accesses. */
static uint64_t clint_extract(uint64_t reg, unsigned shift, unsigned size)
{
	uint64_t v = reg >> (8 * shift);
	return size >= 8 ? v : v & ((1ULL << (8 * size)) - 1);
}

static uint64_t clint_merge(uint64_t reg, unsigned shift, unsigned size, uint64_t val)
{
	uint64_t mask = size >= 8 ? UINT64_MAX : ((1ULL << (8 * size)) - 1);
	return (reg & ~(mask << (8 * shift))) | ((val & mask) << (8 * shift));
}

/* Hart h's earliest compare still in the future at mtime `now` (UINT64_MAX: none). */
static uint64_t clint_hart_next(const struct clint *c, int h, uint64_t now)
{
	uint64_t next = now < c->mtimecmp[h] ? c->mtimecmp[h] : UINT64_MAX;
	if (c->stce[h] && now < c->stimecmp[h] && c->stimecmp[h] < next)
		next = c->stimecmp[h];
	return next;
}

/* Drives hart h's STIP to its Sstc level at mtime `now`, if that changed. Caller holds the
 * lock. */
static void clint_drive_stip_locked(struct clint *c, int h, uint64_t now)
{
	bool level = c->stce[h] && now >= c->stimecmp[h];
	if (level != c->stip[h]) {
		c->stip[h] = level;
		hart_set_irq(c->vm->harts[h], MIP_STIP, level);
	}
}

/* Recomputes every MTIP and STIP line for mtime `now`; returns the earliest compare still
 * in the future among the harts not waiting for their own (UINT64_MAX when none). Caller
 * holds the lock. */
static uint64_t clint_update_timers_locked(struct clint *c, uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (int h = 0; h < c->nharts; h++) {
		bool level = now >= c->mtimecmp[h];
		if (level != c->mtip[h]) {
			c->mtip[h] = level;
			hart_set_irq(c->vm->harts[h], MIP_MTIP, level);
		}
		clint_drive_stip_locked(c, h, now);
		if (!c->wfi_owned[h]) {
			uint64_t n = clint_hart_next(c, h, now);
			if (n < next)
				next = n;
		}
	}
	return next;
}

/* Arms the timerfd for host time ns (UINT64_MAX disarms; a time already past fires at
 * once). Caller holds the lock. */
static void clint_arm_locked(struct clint *c, uint64_t ns)
{
	struct itimerspec its = { 0 };

	if (ns != UINT64_MAX) {
		if (ns == 0)
			ns = 1; /* an all-zero it_value would disarm */
		its.it_value.tv_sec = (time_t)(ns / 1000000000ULL);
		its.it_value.tv_nsec = (long)(ns % 1000000000ULL);
	}
	if (timerfd_settime(c->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
		c->armed = ns;
}

static void *clint_timer_thread(void *arg)
{
	struct clint *c = arg;
	uint64_t expirations;

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		uint64_t next = clint_update_timers_locked(c, vm_mtime(c->vm));
		uint64_t ns = next == UINT64_MAX ? UINT64_MAX : vm_mtime_to_ns(c->vm, next);
		if (ns != c->armed)
			clint_arm_locked(c, ns);
		pthread_mutex_unlock(&c->lock);
		/* Returns at the deadline, at once when re-armed for an earlier one that has
		 * passed, or on a signal: every return just re-evaluates. */
		if (read(c->tfd, &expirations, sizeof(expirations)) < 0 && errno != EINTR &&
		    errno != EAGAIN) {
			log_error("clint: the timer thread cannot wait: %s", strerror(errno));
			pthread_mutex_lock(&c->lock);
			break;
		}
		pthread_mutex_lock(&c->lock);
		/* The expiry was consumed: nothing is armed until the next round arms it. */
		c->armed = UINT64_MAX;
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static uint64_t clint_read(void *opaque, uint64_t off, unsigned size)
{
	struct clint *c = opaque;
	uint64_t val = 0;

	pthread_mutex_lock(&c->lock);
	if (off < CLINT_MTIMECMP) {
		uint64_t h = off / 4;
		if (h < (uint64_t)c->nharts && off % 4 + size <= 4)
			val = clint_extract(c->msip[h], off % 4, size);
	} else if (off < CLINT_MTIME) {
		uint64_t h = (off - CLINT_MTIMECMP) / 8;
		if (h < (uint64_t)c->nharts)
			val = clint_extract(c->mtimecmp[h], off % 8, size);
	} else if (off < CLINT_MTIME + 8) {
		val = clint_extract(vm_mtime(c->vm), off - CLINT_MTIME, size);
	}
	pthread_mutex_unlock(&c->lock);
	return val;
}

static void clint_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct clint *c = opaque;

	pthread_mutex_lock(&c->lock);
	if (off < CLINT_MTIMECMP) {
		uint64_t h = off / 4;
		if (h < (uint64_t)c->nharts && off % 4 + size <= 4) {
			c->msip[h] = (uint32_t)clint_merge(c->msip[h], off % 4, size, val) & 1;
			hart_set_irq(c->vm->harts[h], MIP_MSIP, c->msip[h]);
		}
	} else if (off < CLINT_MTIME) {
		uint64_t h = (off - CLINT_MTIMECMP) / 8;
		if (h < (uint64_t)c->nharts) {
			c->mtimecmp[h] = clint_merge(c->mtimecmp[h], off % 8, size, val);
			/* Drive the line now (not just on change): the guest expects MTIP to drop
			 * the moment it moves the compare into the future. */
			bool level = vm_mtime(c->vm) >= c->mtimecmp[h];
			c->mtip[h] = level;
			hart_set_irq(c->vm->harts[h], MIP_MTIP, level);
			if (c->wfi_owned[h]) {
				/* It sleeps until its old compare: wake it to wait anew. */
				hart_kick(c->vm->harts[h]);
			} else if (!level) {
				uint64_t ns = vm_mtime_to_ns(c->vm, c->mtimecmp[h]);
				if (ns < c->armed)
					clint_arm_locked(c, ns);
			}
		}
	}
	/* mtime is read-only here: every hart's time CSR shares vm->clock_base_ns, which
	 * harts read without a lock; OpenSBI and Linux never write mtime on this machine. */
	pthread_mutex_unlock(&c->lock);
}

static uint64_t clint_wfi_sleep(void *opaque, int h)
{
	struct clint *c = opaque;
	uint64_t ns = UINT64_MAX;

	if (h < 0 || h >= c->nharts)
		return UINT64_MAX;
	pthread_mutex_lock(&c->lock);
	uint64_t now = vm_mtime(c->vm);
	uint64_t cmp = clint_hart_next(c, h, now);
	if (cmp != UINT64_MAX) {
		c->wfi_owned[h] = true;
		ns = vm_mtime_to_ns(c->vm, cmp);
		/* The thread's deadline without this hart's (usually none: disarmed). */
		uint64_t next = clint_update_timers_locked(c, now);
		uint64_t tns = next == UINT64_MAX ? UINT64_MAX : vm_mtime_to_ns(c->vm, next);
		if (tns != c->armed)
			clint_arm_locked(c, tns);
	}
	pthread_mutex_unlock(&c->lock);
	return ns;
}

static void clint_wfi_wake(void *opaque, int h)
{
	struct clint *c = opaque;

	if (h < 0 || h >= c->nharts)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->wfi_owned[h]) {
		c->wfi_owned[h] = false;
		uint64_t next = clint_update_timers_locked(c, vm_mtime(c->vm));
		uint64_t ns = next == UINT64_MAX ? UINT64_MAX : vm_mtime_to_ns(c->vm, next);
		if (ns < c->armed)
			clint_arm_locked(c, ns);
	}
	pthread_mutex_unlock(&c->lock);
}

static void clint_stimer(void *opaque, int h, uint64_t cmp, bool enabled)
{
	struct clint *c = opaque;

	if (h < 0 || h >= c->nharts)
		return;
	pthread_mutex_lock(&c->lock);
	c->stimecmp[h] = cmp;
	c->stce[h] = enabled;
	/* As for mtimecmp: the level follows the write at once (the guest expects STIP to drop
	 * the moment it moves the compare into the future). */
	uint64_t now = vm_mtime(c->vm);
	clint_drive_stip_locked(c, h, now);
	if (c->wfi_owned[h]) {
		hart_kick(c->vm->harts[h]);
	} else if (enabled && now < cmp) {
		uint64_t ns = vm_mtime_to_ns(c->vm, cmp);
		if (ns < c->armed)
			clint_arm_locked(c, ns);
	}
	pthread_mutex_unlock(&c->lock);
}

static const struct vm_wfi_ops clint_wfi_ops = {
	.sleep = clint_wfi_sleep,
	.wake = clint_wfi_wake,
	.stimer = clint_stimer,
};

static int clint_fdt_node(void *opaque, void *fdt, const struct vm *vm)
{
	struct clint *c = opaque;
	uint32_t cells[4 * VM_MAX_CPUS];
	int n = 0;

	for (int h = 0; h < vm->nharts && h < VM_MAX_CPUS; h++) {
		cells[n++] = cpu_to_fdt32(VIRT_PHANDLE_INTC(h));
		cells[n++] = cpu_to_fdt32(3); /* machine software interrupt */
		cells[n++] = cpu_to_fdt32(VIRT_PHANDLE_INTC(h));
		cells[n++] = cpu_to_fdt32(7); /* machine timer interrupt */
	}
	int err = virt_fdt_begin_region(fdt, "clint", c->base, c->size);
	if (err)
		return err;
	static const char compat[] = "sifive,clint0\0riscv,clint0";
	VIRT_FDT_TRY(fdt_property(fdt, "compatible", compat, sizeof(compat)));
	VIRT_FDT_TRY(fdt_property(fdt, "interrupts-extended", cells, n * (int)sizeof(cells[0])));
	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

const struct mmio_ops clint_ops = {
	.read = clint_read,
	.write = clint_write,
	.fdt_node = clint_fdt_node,
};

int clint_create(struct vm *vm, const struct mmio_region *where, struct clint **out)
{
	struct clint *c;
	int err;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->vm = vm;
	c->base = where->base;
	c->size = where->size;
	c->nharts = vm->nharts < VM_MAX_CPUS ? vm->nharts : VM_MAX_CPUS;
	for (int h = 0; h < VM_MAX_CPUS; h++)
		c->mtimecmp[h] = c->stimecmp[h] = UINT64_MAX;

	c->armed = UINT64_MAX;
	err = -pthread_mutex_init(&c->lock, NULL);
	if (err)
		goto err_free;
	/* Deadlines come from vm_mtime_to_ns, i.e. CLOCK_MONOTONIC: the timer must use it too
	 * or a wall-clock step would delay or hurry every timer interrupt. */
	c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (c->tfd < 0) {
		err = -errno;
		log_error("clint: cannot create the timer: %s", strerror(-err));
		goto err_mutex;
	}
	err = -pthread_create(&c->thread, NULL, clint_timer_thread, c);
	if (err) {
		log_error("clint: cannot start the timer thread: %s", strerror(-err));
		goto err_tfd;
	}
	vm->wfi_ops = &clint_wfi_ops;
	vm->wfi_opaque = c;
	*out = c;
	return 0;

err_tfd:
	close(c->tfd);
err_mutex:
	pthread_mutex_destroy(&c->lock);
err_free:
	free(c);
	return err;
}

void clint_destroy(struct clint *c)
{
	if (!c)
		return;
	if (c->vm->wfi_opaque == c) {
		c->vm->wfi_ops = NULL;
		c->vm->wfi_opaque = NULL;
	}
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	clint_arm_locked(c, 1); /* fires at once: the thread sees stop */
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	close(c->tfd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void clint_save(struct clint *c, struct sbuf *b)
{
	pthread_mutex_lock(&c->lock);
	sbuf_u32(b, (uint32_t)c->nharts);
	for (int h = 0; h < c->nharts; h++) {
		sbuf_u32(b, c->msip[h]);
		sbuf_u64(b, c->mtimecmp[h]);
	}
	pthread_mutex_unlock(&c->lock);
}

int clint_load(struct clint *c, struct sreader *r)
{
	uint32_t msip[VM_MAX_CPUS];
	uint64_t cmp[VM_MAX_CPUS];

	if (sreader_u32(r) != (uint32_t)c->nharts) {
		sreader_fail(r, "clint: hart count mismatch");
		return -EINVAL;
	}
	for (int h = 0; h < c->nharts; h++) {
		msip[h] = sreader_u32(r) & 1;
		cmp[h] = sreader_u64(r);
	}
	if (!sreader_ok(r))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	for (int h = 0; h < c->nharts; h++) {
		c->msip[h] = msip[h];
		c->mtimecmp[h] = cmp[h];
		c->mtip[h] = false;
		hart_set_irq(c->vm->harts[h], MIP_MSIP, msip[h]);
		hart_set_irq(c->vm->harts[h], MIP_MTIP, false);
		/* stimecmp and STCE came with the hart's state (hart_load told them). */
		c->stip[h] = false;
		hart_set_irq(c->vm->harts[h], MIP_STIP, false);
	}
	/* The timer thread recomputes every MTIP line against the restored clock. */
	clint_update_timers_locked(c, vm_mtime(c->vm));
	clint_arm_locked(c, 1);
	pthread_mutex_unlock(&c->lock);
	return 0;
}
