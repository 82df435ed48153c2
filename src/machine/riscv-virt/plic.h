/* SiFive PLIC (platform-level interrupt controller) as on QEMU's virt machine. */
#ifndef MABO_MACHINE_RISCV_VIRT_PLIC_H
#define MABO_MACHINE_RISCV_VIRT_PLIC_H

#include <stdbool.h>

#include "core/bus.h"

struct vm;
struct sbuf;
struct sreader;
struct plic;

/* Sources 1 .. PLIC_NSOURCES - 1 (source 0 means "none"); riscv,ndev = PLIC_NSOURCES - 1. */
#define PLIC_NSOURCES 96
#define PLIC_PRIORITY_MAX 7

/* Register map (offsets from the PLIC base). Context 2*h is hart h's M-mode (MEIP),
 * context 2*h+1 its S-mode (SEIP). */
#define PLIC_PRIORITY 0x0   /* + 4 * source */
#define PLIC_PENDING 0x1000 /* bit per source, read-only */
#define PLIC_ENABLE 0x2000  /* + 0x80 * context, bit per source */
#define PLIC_ENABLE_STRIDE 0x80
#define PLIC_CONTEXT 0x200000 /* + 0x1000 * context: threshold, then claim/complete */
#define PLIC_CONTEXT_STRIDE 0x1000
#define PLIC_CLAIM 0x4 /* within a context */

extern const struct mmio_ops plic_ops;

/* Creates the PLIC with 2 contexts per hart of vm. 0 or -errno. */
int plic_create(struct vm *vm, const struct mmio_region *where, struct plic **out)
	__attribute__((warn_unused_result));
void plic_destroy(struct plic *p);

/* Sets the level of a level-triggered source (1 .. PLIC_NSOURCES - 1), from any thread.
 * p may be NULL (no PLIC yet): the call is then ignored. */
void plic_set_irq(struct plic *p, int src, bool level);

/* Saved state (snapshots, migration); load drives the harts' lines again. 0 or -EINVAL. */
void plic_save(struct plic *p, struct sbuf *b);
int plic_load(struct plic *p, struct sreader *r);

#endif
