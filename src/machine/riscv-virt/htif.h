/* HTIF "tohost" for bare-metal test programs: exit status and putchar. */
#ifndef MABO_MACHINE_RISCV_HTIF_H
#define MABO_MACHINE_RISCV_HTIF_H

#include <stdbool.h>
#include <stdint.h>

struct vm;

struct htif {
	struct vm *vm;
	uint64_t tohost;   /* guest physical address of the tohost word */
	uint64_t fromhost; /* tohost + 0x40 */
	uint32_t pending_lo;
	bool have_lo;
};

/* Watches guest stores to [tohost, tohost+8). */
struct htif *htif_create(struct vm *vm, uint64_t tohost);
void htif_destroy(struct htif *h);

/* True when [pa, pa+size) touches the tohost word (such stores take the slow path). */
static inline bool htif_covers(const struct htif *h, uint64_t pa, unsigned size)
{
	return h && pa < h->tohost + 8 && h->tohost < pa + size;
}

/* Called after a guest store reached RAM at pa: acts on a completed tohost value. */
void htif_after_store(struct htif *h, uint64_t pa, unsigned size);

#endif
