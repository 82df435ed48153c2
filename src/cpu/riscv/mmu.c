/* Sv39/Sv48 translation, the software TLB, and the slow paths of guest memory access. */
#include <string.h>

#include "core/vm.h"
#include "cpu/riscv/hart.h"
#include "machine/riscv-virt/htif.h"

#define PTE_V (1ULL << 0)
#define PTE_R (1ULL << 1)
#define PTE_W (1ULL << 2)
#define PTE_X (1ULL << 3)
#define PTE_U (1ULL << 4)
#define PTE_A (1ULL << 6)
#define PTE_D (1ULL << 7)
#define PTE_PPN_MASK 0x003ffffffffffc00ULL
#define PTE_RESERVED 0xffc0000000000000ULL /* N, PBMT, reserved: none implemented */

static const int fault_cause[3] = { EXC_LOAD_PAGE, EXC_STORE_PAGE, EXC_INSN_PAGE };
static const int access_cause[3] = { EXC_LOAD_ACCESS, EXC_STORE_ACCESS, EXC_INSN_ACCESS };

static inline int effective_priv(const struct hart *h, int acc)
{
	if (acc != ACC_X && (h->mstatus & MSTATUS_MPRV) && h->priv == PRV_M)
		return (h->mstatus >> MSTATUS_MPP_SHIFT) & 3;
	return h->priv;
}

int mmu_translate(struct hart *h, uint64_t va, int acc, uint64_t *pa)
{
	int priv = effective_priv(h, acc);
	uint64_t mode = h->satp >> 60;
	int levels;

	if (priv == PRV_M || mode == 0) {
		*pa = va;
		h->walk_super = false;
		return 0;
	}
	levels = mode == 9 ? 4 : 3;
	/* The address must be the sign extension of its top translated bit. */
	int vabits = 12 + 9 * levels;
	if ((uint64_t)((int64_t)(va << (64 - vabits)) >> (64 - vabits)) != va)
		return fault_cause[acc];

	uint64_t a = (h->satp & ((1ULL << 44) - 1)) << PAGE_SHIFT;
	for (int i = levels - 1; i >= 0; i--) {
		uint64_t vpn = (va >> (PAGE_SHIFT + 9 * i)) & 0x1ff;
		uint64_t *ptep = vm_ram_ptr(h->vm, a + vpn * 8, 8);
		if (!ptep)
			return access_cause[acc];
		uint64_t pte = __atomic_load_n(ptep, __ATOMIC_RELAXED);
		if (!(pte & PTE_V) || (!(pte & PTE_R) && (pte & PTE_W)) || (pte & PTE_RESERVED))
			return fault_cause[acc];
		uint64_t ppn = (pte & PTE_PPN_MASK) >> 10;
		if (!(pte & (PTE_R | PTE_X))) {
			if (i == 0 || (pte & (PTE_A | PTE_D | PTE_U)))
				return fault_cause[acc];
			a = ppn << PAGE_SHIFT;
			continue;
		}
		/* A leaf: check permissions. */
		if (priv == PRV_U) {
			if (!(pte & PTE_U))
				return fault_cause[acc];
		} else if (pte & PTE_U) {
			if (acc == ACC_X || !(h->mstatus & MSTATUS_SUM))
				return fault_cause[acc];
		}
		switch (acc) {
		case ACC_R:
			if (!(pte & PTE_R) && !((h->mstatus & MSTATUS_MXR) && (pte & PTE_X)))
				return fault_cause[acc];
			break;
		case ACC_W:
			if (!(pte & PTE_W))
				return fault_cause[acc];
			break;
		default:
			if (!(pte & PTE_X))
				return fault_cause[acc];
		}
		uint64_t low_mask = (1ULL << (9 * i)) - 1;
		if (ppn & low_mask)
			return fault_cause[acc]; /* misaligned superpage */
		/* Hardware A/D update, atomically with respect to other harts. */
		uint64_t need = PTE_A | (acc == ACC_W ? PTE_D : 0);
		if ((pte & need) != need) {
			uint64_t expect = pte;
			if (!__atomic_compare_exchange_n(ptep, &expect, pte | need, false,
							 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
				return mmu_translate(h, va, acc, pa); /* PTE changed: walk again */
			vm_dirty_mark(h->vm, a + vpn * 8, 8);
		}
		h->walk_super = i > 0;
		ppn |= (va >> PAGE_SHIFT) & low_mask;
		*pa = (ppn << PAGE_SHIFT) | (va & (PAGE_SIZE - 1));
		return 0;
	}
	return fault_cause[acc];
}

static inline void tlb_fill(struct hart *h, int acc, uint64_t va, uint64_t pa)
{
	uint8_t *host = vm_ram_ptr(h->vm, pa & ~(PAGE_SIZE - 1), PAGE_SIZE);
	if (!host)
		return;
	if (acc == ACC_W && h->vm->htif &&
	    htif_covers(h->vm->htif, pa & ~(PAGE_SIZE - 1), PAGE_SIZE))
		return;
	struct tlb *t = acc == ACC_X ? h->itlb : h->dtlb;
	struct tlb_entry *arr = acc == ACC_R ? t->r : acc == ACC_W ? t->w : t->x;
	unsigned idx = (va >> PAGE_SHIFT) & (TLB_SIZE - 1);
	struct tlb_entry *e = &arr[idx];
	uint64_t *super = h->tlb_super[t - h->tlbs][acc];
	if (h->walk_super)
		super[idx / 64] |= 1ULL << (idx % 64);
	else
		super[idx / 64] &= ~(1ULL << (idx % 64));
	e->tag = va & ~(PAGE_SIZE - 1);
	e->addend = (uintptr_t)host - (uintptr_t)e->tag;
	vm_access_mark(h->vm, (uint64_t)((uintptr_t)host - (uintptr_t)h->vm->ram.host));
}

static inline bool fault(struct hart *h, uint64_t cause, uint64_t va)
{
	h->exc_cause = cause;
	h->exc_tval = va;
	return false;
}

static bool load_one(struct hart *h, uint64_t va, unsigned size, uint64_t *val)
{
	uint64_t pa = 0;
	int c = mmu_translate(h, va, ACC_R, &pa);
	if (c)
		return fault(h, c, va);
	void *p = vm_ram_ptr(h->vm, pa, size);
	if (p) {
		uint64_t v = 0;
		memcpy(&v, p, size);
		*val = v;
		tlb_fill(h, ACC_R, va, pa);
		return true;
	}
	const struct mmio_region *r = bus_find(&h->vm->bus, pa);
	if (!r || pa - r->base + size > r->size)
		return fault(h, EXC_LOAD_ACCESS, va);
	*val = r->ops->read ? r->ops->read(r->opaque, pa - r->base, size) : 0;
	return true;
}

bool mem_load_slow(struct hart *h, uint64_t va, unsigned size, uint64_t *val)
{
	if (((va & (PAGE_SIZE - 1)) + size) > PAGE_SIZE) {
		/* Crosses a page: byte by byte, so each page faults on its own. */
		uint64_t v = 0;
		for (unsigned i = 0; i < size; i++) {
			uint64_t b;
			if (!load_one(h, va + i, 1, &b))
				return false;
			v |= b << (8 * i);
		}
		*val = v;
		return true;
	}
	return load_one(h, va, size, val);
}

static bool store_one(struct hart *h, uint64_t va, unsigned size, uint64_t val, bool probe)
{
	uint64_t pa = 0;
	int c = mmu_translate(h, va, ACC_W, &pa);
	if (c)
		return fault(h, c, va);
	void *p = vm_ram_ptr(h->vm, pa, size);
	if (p) {
		if (probe)
			return true;
		memcpy(p, &val, size);
		/* The page is logged here and when its write entry is filled; entries are
		 * flushed whenever the log is harvested, so every write after is seen. */
		vm_dirty_mark(h->vm, pa, size);
		tlb_fill(h, ACC_W, va, pa);
		if (h->vm->htif && htif_covers(h->vm->htif, pa, size))
			htif_after_store(h->vm->htif, pa, size);
		return true;
	}
	const struct mmio_region *r = bus_find(&h->vm->bus, pa);
	if (!r || pa - r->base + size > r->size)
		return fault(h, EXC_STORE_ACCESS, va);
	if (!probe && r->ops->write)
		r->ops->write(r->opaque, pa - r->base, val, size);
	return true;
}

bool mem_store_slow(struct hart *h, uint64_t va, unsigned size, uint64_t val)
{
	if (((va & (PAGE_SIZE - 1)) + size) > PAGE_SIZE) {
		/* Check both pages first so a fault on the second leaves memory untouched. */
		uint64_t page2 = (va + size - 1) & ~(PAGE_SIZE - 1);
		if (!store_one(h, va, 1, 0, true) || !store_one(h, page2, 1, 0, true))
			return false;
		for (unsigned i = 0; i < size; i++)
			if (!store_one(h, va + i, 1, val >> (8 * i), false))
				return false;
		return true;
	}
	return store_one(h, va, size, val, false);
}

void *mem_atomic_ptr(struct hart *h, uint64_t va, unsigned size, int acc)
{
	uint64_t pa = 0;
	if (va & (size - 1)) {
		fault(h, acc == ACC_W ? EXC_STORE_MISALIGNED : EXC_LOAD_MISALIGNED, va);
		return NULL;
	}
	int c = mmu_translate(h, va, acc, &pa);
	if (c) {
		fault(h, c, va);
		return NULL;
	}
	void *p = vm_ram_ptr(h->vm, pa, size);
	if (!p) {
		fault(h, acc == ACC_W ? EXC_STORE_ACCESS : EXC_LOAD_ACCESS, va);
		return NULL;
	}
	if (acc == ACC_W)
		vm_dirty_mark(h->vm, pa, size);
	return p;
}

uint8_t *mem_fetch_page(struct hart *h, uint64_t pc, uint64_t *pa)
{
	int c = mmu_translate(h, pc, ACC_X, pa);
	if (c) {
		fault(h, c, pc);
		return NULL;
	}
	uint8_t *host = vm_ram_ptr(h->vm, *pa & ~(PAGE_SIZE - 1), PAGE_SIZE);
	if (!host) {
		fault(h, EXC_INSN_ACCESS, pc);
		return NULL;
	}
	tlb_fill(h, ACC_X, pc, *pa);
	return host;
}
