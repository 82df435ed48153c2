/* The rv64gc hart: the interface the machine and devices see. */
#ifndef MABO_CPU_RISCV_CPU_H
#define MABO_CPU_RISCV_CPU_H

#include <stdbool.h>
#include <stdint.h>

struct vm;
struct hart;

/* mip bits */
#define MIP_SSIP (1ULL << 1)
#define MIP_MSIP (1ULL << 3)
#define MIP_STIP (1ULL << 5)
#define MIP_MTIP (1ULL << 7)
#define MIP_SEIP (1ULL << 9)
#define MIP_MEIP (1ULL << 11)

/* Allocates hart `id` of vm (mhartid = id). NULL on allocation failure. */
struct hart *hart_create(struct vm *vm, int id);
void hart_destroy(struct hart *h);

/* Resets the hart to M-mode at pc with a0..a2 set (the boot protocol's registers). */
void hart_reset(struct hart *h, uint64_t pc, uint64_t a0, uint64_t a1, uint64_t a2);

/* Raises (level = true) or lowers a device-driven interrupt line (MSIP, MTIP, MEIP, SEIP)
 * from any thread, and wakes the hart if it sleeps in WFI. */
void hart_set_irq(struct hart *h, uint64_t mask, bool level);

/* How often an idle hart has emptied its block and code caches and given their pages back
 * to the host, and how many bytes the caches hold now (both from the hart's thread, or while
 * it is paused or stopped). */
uint64_t hart_cache_trims(const struct hart *h);
size_t hart_cache_used(const struct hart *h);

/* Makes the hart leave its run loop soon (to notice vm exit, pause, ...), from any thread. */
void hart_kick(struct hart *h);

/* Drops every write translation the hart has cached, so its next store to any page goes
 * through the slow path (which logs the page dirty). Only while the hart is paused. */
void hart_flush_write_tlb(struct hart *h);

/* Drops every translation the hart has cached, of every privilege, so that its next access
 * to any page goes through the slow path. Only while the hart is paused. */
void hart_flush_tlb_all(struct hart *h);

/* Runs the hart on the calling thread until the VM exits. */
void hart_run(struct hart *h);

#endif
