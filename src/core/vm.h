/* One virtual machine: guest RAM, the bus, harts and devices. No global state: everything a
 * VM owns hangs off struct vm. */
#ifndef MABO_CORE_VM_H
#define MABO_CORE_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/config.h"

struct hart;
struct event_loop;
struct console;
struct clint;
struct plic;
struct uart;
struct virtio_dev;
struct htif;
struct migration;
struct api;

#define RAM_BASE 0x80000000ULL
#define PAGE_SHIFT 12
#define PAGE_SIZE (1ULL << PAGE_SHIFT)

/* Guest clock: mtime and the time CSR tick at this rate. */
#define VM_TIMEBASE_HZ 10000000ULL

enum vm_exit_reason {
	VM_EXIT_NONE = 0,
	VM_EXIT_POWEROFF, /* guest powered off */
	VM_EXIT_REBOOT,	  /* guest asked for a reset */
	VM_EXIT_PASS,	  /* bare-metal test reported pass */
	VM_EXIT_FAIL, /* test reported failure: exit_code is an HTIF exit value ((n << 1) | 1) */
	VM_EXIT_TIMEOUT,
	VM_EXIT_ERROR,	  /* host-side failure */
	VM_EXIT_MIGRATED, /* the VM now runs on another host */
};

struct guest_ram {
	uint64_t base;
	uint64_t size;
	uint8_t *host;
};

/* The machine's timer as a hart sees it: so that a sleeping hart waits for its own next
 * timer interrupt and no timer thread has to wake to deliver it, and so that the hart's own
 * timer compare (Sstc's stimecmp) is kept with the machine's. */
struct vm_wfi_ops {
	/* The hart is about to sleep: returns the CLOCK_MONOTONIC ns at which its timer
	 * fires (UINT64_MAX: none pending), which the hart now waits for itself. */
	uint64_t (*sleep)(void *opaque, int hart);
	/* The hart woke (at that time or earlier): raises its timer line if due. */
	void (*wake)(void *opaque, int hart);
	/* The hart's Sstc supervisor timer changed (a stimecmp or menvcfg.STCE write, a reset
	 * or a restore): from now on the device drives the hart's STIP to (enabled && mtime >=
	 * cmp), at once and when that time comes, and counts cmp among the deadlines above.
	 * Called from the hart's own thread, or while it does not run. */
	void (*stimer)(void *opaque, int hart, uint64_t cmp, bool enabled);
};

struct vm {
	const struct vm_config *cfg;
	struct guest_ram ram;
	struct bus bus;

	int nharts;
	struct hart *harts[VM_MAX_CPUS];

	struct clint *clint;
	const struct vm_wfi_ops *wfi_ops; /* set by the timer device; NULL: none */
	void *wfi_opaque;
	struct plic *plic;
	struct uart *uart;
	/* The power button (virtio-input), which "powerdown" presses; NULL: none. */
	struct virtio_dev *power_button;
	struct htif *htif; /* bare-metal mode with a tohost symbol, else NULL */

	/* Device work and (later) the control socket run on this loop's thread, started
	 * before the vCPUs and stopped after them (core/event.h). */
	struct event_loop *loop;
	/* The host terminal: standard input and output, routed to one guest console
	 * (core/console.h). Made by the machine. */
	struct console *console;

	/* The seed the device tree hands the guest kernel's random number generator. */
	uint8_t rng_seed[32];
	bool rng_seed_set;

	/* Guest clock origin (CLOCK_MONOTONIC ns at mtime 0). */
	uint64_t clock_base_ns;

	/* The source side of migrations and snapshots (migration/migration.h), and the
	 * control socket (core/api.h) when --api-socket was given; made by main. */
	struct migration *migration;
	struct api *api;
	bool user_paused;      /* paused from the control socket (on the loop thread) */
	_Atomic bool arriving; /* --incoming or --restore: the state is not loaded yet */
	/* What the VMM is busy with before the guest runs ("loading the initramfs"): a
	 * static string, read by main's watchdog for --timeout's message; NULL at first. */
	_Atomic(const char *) phase;

	/* Pausing (vm_pause): a request every hart honours at its next block boundary by
	 * parking in vm_hart_park until vm_resume. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	_Atomic int pause_req; /* pauses requested and not yet resumed */
	int parked;	       /* harts parked now (under pause_lock) */
	int running_harts;     /* harts whose threads run hart_run (under pause_lock) */

	/* Dirty-page log for live migration: one bit per guest page, set by device writes
	 * (vm_guest_write) and by harts when they fill a write TLB entry; NULL when off.
	 * See vm_dirty_log_start. */
	_Atomic(uint64_t *) dirty_log;
	/* Pages used (read, written or run) since vm_access_log_start: a bit per page, set by
	 * harts when they fill a TLB entry; NULL when off. */
	_Atomic(uint64_t *) access_log;

	/* Set once by whoever ends the run; the main thread waits on exit_cond. */
	pthread_mutex_t exit_lock;
	pthread_cond_t exit_cond;
	_Atomic int exit_reason;
	uint64_t exit_code;
};

/* Host monotonic clock in ns. */
uint64_t host_now_ns(void);

/* Names what the VMM does now (a static string), for a timeout's message. */
static inline void vm_set_phase(struct vm *vm, const char *what)
{
	atomic_store(&vm->phase, what);
}

/* The guest's mtime now. */
static inline uint64_t vm_mtime(const struct vm *vm)
{
	return (host_now_ns() - vm->clock_base_ns) / (1000000000ULL / VM_TIMEBASE_HZ);
}

/* Host monotonic ns at which mtime reaches t (0: already past; UINT64_MAX: never). A guest
 * that has run longer than this host has been up (it arrived by migration) has its origin
 * before the host clock's zero: clock_base_ns wraps below zero then, which vm_mtime's
 * unsigned difference absorbs, and which is undone here. */
static inline uint64_t vm_mtime_to_ns(const struct vm *vm, uint64_t t)
{
	const uint64_t tick = 1000000000ULL / VM_TIMEBASE_HZ;
	uint64_t base = vm->clock_base_ns;

	if (t > UINT64_MAX / tick)
		return UINT64_MAX;
	uint64_t ns = t * tick;
	if (base >> 63) { /* below zero: the host clock never gets there */
		uint64_t before = 0 - base;
		return ns > before ? ns - before : 0;
	}
	return ns > UINT64_MAX - base ? UINT64_MAX : base + ns;
}

/* Host pointer for [gpa, gpa+len) when it lies wholly in RAM, else NULL. */
static inline void *vm_ram_ptr(const struct vm *vm, uint64_t gpa, uint64_t len)
{
	uint64_t off = gpa - vm->ram.base;
	if (gpa < vm->ram.base || off > vm->ram.size || len > vm->ram.size - off)
		return NULL;
	return vm->ram.host + off;
}

/* Device access to guest RAM (core/memory.c). Every device write into guest memory goes
 * through vm_guest_write or vm_guest_ptr_for_write: they are the one place where a dirty-page
 * tracker for live migration will mark the pages a device wrote (the vCPUs mark theirs when
 * a TLB entry is filled for write). Reads need no tracking and may use vm_ram_ptr. */

/* Copies len bytes of guest RAM at gpa into buf. 0, or -EFAULT when the range is not wholly
 * in RAM (buf untouched). */
int vm_guest_read(const struct vm *vm, uint64_t gpa, void *buf, size_t len)
	__attribute__((warn_unused_result));

/* Copies len bytes from buf into guest RAM at gpa. 0, or -EFAULT when the range is not wholly
 * in RAM (nothing written). */
int vm_guest_write(struct vm *vm, uint64_t gpa, const void *buf, size_t len)
	__attribute__((warn_unused_result));

/* Host pointer to [gpa, gpa+len) for a device about to write there itself (getrandom, readv
 * into guest buffers, an atomic store to a ring index); NULL when not wholly in RAM. Use it
 * at once, and never keep it beyond the current request. */
void *vm_guest_ptr_for_write(struct vm *vm, uint64_t gpa, uint64_t len);

/* Ends the run with a reason (first caller wins) and wakes every hart. */
void vm_request_exit(struct vm *vm, enum vm_exit_reason reason, uint64_t code);

/* Sets vm up for cfg: guest RAM (mapped, untouched pages cost nothing), the event loop (not
 * started), the harts; no devices. 0 or -errno after logging one line. vm_free undoes it
 * (after the machine is destroyed). */
int vm_init(struct vm *vm, const struct vm_config *cfg) __attribute__((warn_unused_result));
void vm_free(struct vm *vm);

/* Initialises the pause and dirty-log state of vm (its other fields untouched). */
void vm_pause_init(struct vm *vm);
void vm_pause_uninit(struct vm *vm);

/* Stops every running hart at a block boundary and waits until all are parked (or the VM
 * is exiting). Nested pauses count: each needs its vm_resume. Not from a hart thread. */
void vm_pause(struct vm *vm);
/* Undoes one vm_pause; the harts run again when the last one is undone. */
void vm_resume(struct vm *vm);
/* A hart thread saw vm->pause_req: waits until resumed or the VM exits. */
void vm_hart_park(struct vm *vm);
/* A hart thread is about to start (called before creating it) / has stopped running guest
 * code (hart_run, on its way out): vm_pause waits only for running harts. */
void vm_hart_enter(struct vm *vm);
void vm_hart_leave(struct vm *vm);

/* Starts logging dirty pages: every page counts as dirty at first. 0 or -ENOMEM. */
int vm_dirty_log_start(struct vm *vm) __attribute__((warn_unused_result));
/* Stops logging and frees the log. */
void vm_dirty_log_stop(struct vm *vm);
/* Marks the pages of [gpa, gpa + len) dirty when logging (any thread). */
static inline void vm_dirty_mark(struct vm *vm, uint64_t gpa, uint64_t len)
{
	uint64_t *log = atomic_load_explicit(&vm->dirty_log, memory_order_acquire);
	if (!log || !len || gpa < vm->ram.base)
		return;
	uint64_t first = (gpa - vm->ram.base) >> PAGE_SHIFT;
	uint64_t last = (gpa - vm->ram.base + len - 1) >> PAGE_SHIFT;
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	for (uint64_t p = first; p <= last && p < npages; p++) {
		_Atomic uint64_t *w = (_Atomic uint64_t *)&log[p / 64];
		if (!(atomic_load_explicit(w, memory_order_relaxed) & (1ULL << (p % 64))))
			atomic_fetch_or(w, 1ULL << (p % 64));
	}
}
/* With the harts paused: moves the log into out (npages bits, which it ORs in) and clears
 * it, and flushes every hart's write TLB so that their next write to any page marks it
 * again. */
void vm_dirty_log_sync(struct vm *vm, uint64_t *out);

/* With the harts paused: starts logging the pages they use (and flushes their TLBs, so that
 * every page they touch from now on is seen). 0 or -ENOMEM. */
int vm_access_log_start(struct vm *vm) __attribute__((warn_unused_result));
/* With the harts paused: stops logging; returns the log (the caller frees it), or NULL. */
uint64_t *vm_access_log_stop(struct vm *vm);
/* Marks the page of RAM offset off used when logging (a hart filling its TLB). */
static inline void vm_access_mark(struct vm *vm, uint64_t off)
{
	uint64_t *log = atomic_load_explicit(&vm->access_log, memory_order_acquire);
	if (!log || off >= vm->ram.size)
		return;
	uint64_t p = off >> PAGE_SHIFT;
	_Atomic uint64_t *w = (_Atomic uint64_t *)&log[p / 64];
	if (!(atomic_load_explicit(w, memory_order_relaxed) & (1ULL << (p % 64))))
		atomic_fetch_or(w, 1ULL << (p % 64));
}

#endif
