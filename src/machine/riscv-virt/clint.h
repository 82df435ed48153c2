/* SiFive CLINT: software interrupts (msip) and the machine timer (mtime, mtimecmp). */
#ifndef MABO_MACHINE_RISCV_VIRT_CLINT_H
#define MABO_MACHINE_RISCV_VIRT_CLINT_H

#include "core/bus.h"

struct vm;
struct sbuf;
struct sreader;
struct clint;

/* Register map (offsets from the CLINT base). */
#define CLINT_MSIP 0x0000     /* + 4 * hart, 32-bit, bit 0 */
#define CLINT_MTIMECMP 0x4000 /* + 8 * hart, 64-bit */
#define CLINT_MTIME 0xbff8    /* 64-bit, read-only here */

extern const struct mmio_ops clint_ops;

/* Creates the CLINT for vm->nharts harts at where->base and starts its timer thread.
 * 0 or -errno. */
int clint_create(struct vm *vm, const struct mmio_region *where, struct clint **out)
	__attribute__((warn_unused_result));

/* Stops and joins the timer thread, then frees. NULL is fine. */
void clint_destroy(struct clint *c);

/* Saved state: msip and mtimecmp of every hart (snapshots, migration). Load drives the
 * lines again for the current guest clock. 0 or -EINVAL (r->err says why). */
void clint_save(struct clint *c, struct sbuf *b);
int clint_load(struct clint *c, struct sreader *r);

#endif
