/* SiFive PLIC with level-triggered sources, as QEMU's virt machine has it.
 *
 * A source's pending bit follows its input level while the source is not in service;
 * a claim clears pending and puts the source in service; a complete takes it out of
 * service, and a level still high pends it again. After every change each context's
 * output (some enabled pending source with priority above the threshold) is recomputed
 * and driven onto MEIP or SEIP of its hart. */
#include "machine/riscv-virt/plic.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/vm.h"
#include "migration/sbuf.h"
#include "cpu/riscv/cpu.h"
#include "machine/riscv-virt/fdt_util.h"

#include <libfdt.h>

#define PLIC_NWORDS ((PLIC_NSOURCES + 31) / 32)
#define PLIC_MAX_CONTEXTS (2 * VM_MAX_CPUS)

struct plic {
	struct vm *vm;
	uint64_t base;
	uint64_t size;
	int ncontexts;

	pthread_mutex_t lock;
	uint32_t priority[PLIC_NSOURCES];
	uint32_t level[PLIC_NWORDS]; /* input lines */
	uint32_t pending[PLIC_NWORDS];
	uint32_t active[PLIC_NWORDS]; /* claimed, not yet completed */
	uint32_t enable[PLIC_MAX_CONTEXTS][PLIC_NWORDS];
	uint32_t threshold[PLIC_MAX_CONTEXTS];
	bool out[PLIC_MAX_CONTEXTS]; /* level last driven on the context's hart line */
};

/* Bits of a source word that name real sources (source 0 and those past the end never). */
static uint32_t plic_valid_mask(unsigned word)
{
	uint32_t m = UINT32_MAX;
	if (word == 0)
		m &= ~1U;
	if ((word + 1) * 32 > PLIC_NSOURCES)
		m &= PLIC_NSOURCES % 32 ? (1U << (PLIC_NSOURCES % 32)) - 1 : UINT32_MAX;
	return m;
}

static bool plic_bit(const uint32_t *words, int src)
{
	return words[src / 32] >> (src % 32) & 1;
}

static void plic_set_bit(uint32_t *words, int src, bool on)
{
	if (on)
		words[src / 32] |= 1U << (src % 32);
	else
		words[src / 32] &= ~(1U << (src % 32));
}

/* The source a claim on ctx would return: highest priority above the threshold, lowest
 * number among equals; 0 when none. */
static int plic_best_locked(const struct plic *p, int ctx)
{
	uint32_t best_prio = p->threshold[ctx];
	int best = 0;

	for (unsigned w = 0; w < PLIC_NWORDS; w++) {
		uint32_t cand = p->pending[w] & p->enable[ctx][w];
		while (cand) {
			int bit = __builtin_ctz(cand);
			cand &= cand - 1;
			int src = (int)w * 32 + bit;
			if (p->priority[src] > best_prio) {
				best_prio = p->priority[src];
				best = src;
			}
		}
	}
	return best;
}

static void plic_update_locked(struct plic *p)
{
	for (int ctx = 0; ctx < p->ncontexts; ctx++) {
		bool level = plic_best_locked(p, ctx) != 0;
		if (level == p->out[ctx])
			continue;
		p->out[ctx] = level;
		hart_set_irq(p->vm->harts[ctx / 2], ctx & 1 ? MIP_SEIP : MIP_MEIP, level);
	}
}

void plic_set_irq(struct plic *p, int src, bool level)
{
	if (!p || src <= 0 || src >= PLIC_NSOURCES)
		return;
	pthread_mutex_lock(&p->lock);
	plic_set_bit(p->level, src, level);
	if (!plic_bit(p->active, src))
		plic_set_bit(p->pending, src, level);
	plic_update_locked(p);
	pthread_mutex_unlock(&p->lock);
}

static uint32_t plic_claim_locked(struct plic *p, int ctx)
{
	int src = plic_best_locked(p, ctx);
	if (src) {
		plic_set_bit(p->pending, src, false);
		plic_set_bit(p->active, src, true);
		plic_update_locked(p);
	}
	return (uint32_t)src;
}

static void plic_complete_locked(struct plic *p, int ctx, uint32_t src)
{
	/* The spec ignores a completion for a source not enabled on this context. */
	if (src == 0 || src >= PLIC_NSOURCES || !plic_bit(p->enable[ctx], (int)src) ||
	    !plic_bit(p->active, (int)src))
		return;
	plic_set_bit(p->active, (int)src, false);
	if (plic_bit(p->level, (int)src))
		plic_set_bit(p->pending, (int)src, true);
	plic_update_locked(p);
}

static uint32_t plic_read32_locked(struct plic *p, uint64_t off)
{
	if (off < PLIC_PENDING) {
		uint64_t src = off / 4;
		return src < PLIC_NSOURCES ? p->priority[src] : 0;
	}
	if (off < PLIC_ENABLE) {
		uint64_t w = (off - PLIC_PENDING) / 4;
		return w < PLIC_NWORDS ? p->pending[w] : 0;
	}
	if (off < PLIC_CONTEXT) {
		uint64_t ctx = (off - PLIC_ENABLE) / PLIC_ENABLE_STRIDE;
		uint64_t w = (off - PLIC_ENABLE) % PLIC_ENABLE_STRIDE / 4;
		return ctx < (uint64_t)p->ncontexts && w < PLIC_NWORDS ? p->enable[ctx][w] : 0;
	}
	uint64_t ctx = (off - PLIC_CONTEXT) / PLIC_CONTEXT_STRIDE;
	uint64_t reg = (off - PLIC_CONTEXT) % PLIC_CONTEXT_STRIDE;
	if (ctx >= (uint64_t)p->ncontexts)
		return 0;
	if (reg == 0)
		return p->threshold[ctx];
	if (reg == PLIC_CLAIM)
		return plic_claim_locked(p, (int)ctx);
	return 0;
}

static void plic_write32_locked(struct plic *p, uint64_t off, uint32_t val)
{
	if (off < PLIC_PENDING) {
		uint64_t src = off / 4;
		if (src > 0 && src < PLIC_NSOURCES) {
			p->priority[src] = val & PLIC_PRIORITY_MAX;
			plic_update_locked(p);
		}
		return;
	}
	if (off < PLIC_ENABLE)
		return; /* pending bits are read-only */
	if (off < PLIC_CONTEXT) {
		uint64_t ctx = (off - PLIC_ENABLE) / PLIC_ENABLE_STRIDE;
		uint64_t w = (off - PLIC_ENABLE) % PLIC_ENABLE_STRIDE / 4;
		if (ctx < (uint64_t)p->ncontexts && w < PLIC_NWORDS) {
			p->enable[ctx][w] = val & plic_valid_mask((unsigned)w);
			plic_update_locked(p);
		}
		return;
	}
	uint64_t ctx = (off - PLIC_CONTEXT) / PLIC_CONTEXT_STRIDE;
	uint64_t reg = (off - PLIC_CONTEXT) % PLIC_CONTEXT_STRIDE;
	if (ctx >= (uint64_t)p->ncontexts)
		return;
	if (reg == 0) {
		p->threshold[ctx] = val & PLIC_PRIORITY_MAX;
		plic_update_locked(p);
	} else if (reg == PLIC_CLAIM) {
		plic_complete_locked(p, (int)ctx, val);
	}
}

/* Registers are 32-bit. A 64-bit access is two 32-bit ones (low word first); a narrower
 * read sees part of the word, a narrower write is ignored (no guest we run does either). */
static uint64_t plic_read(void *opaque, uint64_t off, unsigned size)
{
	struct plic *p = opaque;
	uint64_t val;

	pthread_mutex_lock(&p->lock);
	if (size == 8) {
		val = plic_read32_locked(p, off);
		val |= (uint64_t)plic_read32_locked(p, off + 4) << 32;
	} else {
		val = plic_read32_locked(p, off & ~3ULL) >> (8 * (off & 3));
		if (size < 4)
			val &= (1ULL << (8 * size)) - 1;
	}
	pthread_mutex_unlock(&p->lock);
	return val;
}

static void plic_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct plic *p = opaque;

	if (size < 4 || off & 3)
		return;
	pthread_mutex_lock(&p->lock);
	plic_write32_locked(p, off, (uint32_t)val);
	if (size == 8)
		plic_write32_locked(p, off + 4, (uint32_t)(val >> 32));
	pthread_mutex_unlock(&p->lock);
}

static int plic_fdt_node(void *opaque, void *fdt, const struct vm *vm)
{
	struct plic *p = opaque;
	uint32_t cells[4 * VM_MAX_CPUS];
	int n = 0;

	/* Context order is the contract with the guest: 2*h is M-mode, 2*h+1 S-mode. */
	for (int h = 0; h < vm->nharts && h < VM_MAX_CPUS; h++) {
		cells[n++] = cpu_to_fdt32(VIRT_PHANDLE_INTC(h));
		cells[n++] = cpu_to_fdt32(11); /* machine external interrupt */
		cells[n++] = cpu_to_fdt32(VIRT_PHANDLE_INTC(h));
		cells[n++] = cpu_to_fdt32(9); /* supervisor external interrupt */
	}
	int err = virt_fdt_begin_region(fdt, "plic", p->base, p->size);
	if (err)
		return err;
	static const char compat[] = "sifive,plic-1.0.0\0riscv,plic0";
	VIRT_FDT_TRY(fdt_property(fdt, "compatible", compat, sizeof(compat)));
	/* #address-cells 0: an interrupt provider needs it for interrupt-map users (dtc warns). */
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#address-cells", 0));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#interrupt-cells", 1));
	VIRT_FDT_TRY(fdt_property(fdt, "interrupt-controller", NULL, 0));
	VIRT_FDT_TRY(fdt_property(fdt, "interrupts-extended", cells, n * (int)sizeof(cells[0])));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "riscv,ndev", PLIC_NSOURCES - 1));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "phandle", VIRT_PHANDLE_PLIC));
	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

const struct mmio_ops plic_ops = {
	.read = plic_read,
	.write = plic_write,
	.fdt_node = plic_fdt_node,
};

int plic_create(struct vm *vm, const struct mmio_region *where, struct plic **out)
{
	struct plic *p = calloc(1, sizeof(*p));
	int err;

	if (!p)
		return -ENOMEM;
	p->vm = vm;
	p->base = where->base;
	p->size = where->size;
	p->ncontexts = 2 * (vm->nharts < VM_MAX_CPUS ? vm->nharts : VM_MAX_CPUS);
	err = -pthread_mutex_init(&p->lock, NULL);
	if (err) {
		free(p);
		return err;
	}
	*out = p;
	return 0;
}

void plic_destroy(struct plic *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void plic_save(struct plic *p, struct sbuf *b)
{
	pthread_mutex_lock(&p->lock);
	sbuf_u32(b, PLIC_NSOURCES);
	sbuf_u32(b, (uint32_t)p->ncontexts);
	for (int s = 0; s < PLIC_NSOURCES; s++)
		sbuf_u32(b, p->priority[s]);
	for (unsigned w = 0; w < PLIC_NWORDS; w++) {
		sbuf_u32(b, p->level[w]);
		sbuf_u32(b, p->pending[w]);
		sbuf_u32(b, p->active[w]);
	}
	for (int c = 0; c < p->ncontexts; c++) {
		sbuf_u32(b, p->threshold[c]);
		for (unsigned w = 0; w < PLIC_NWORDS; w++)
			sbuf_u32(b, p->enable[c][w]);
	}
	pthread_mutex_unlock(&p->lock);
}

int plic_load(struct plic *p, struct sreader *r)
{
	struct plic t;

	if (sreader_u32(r) != PLIC_NSOURCES || sreader_u32(r) != (uint32_t)p->ncontexts) {
		sreader_fail(r, "plic: shape mismatch");
		return -EINVAL;
	}
	/* Values the guest's writes cannot make (a priority above the maximum, a source
	 * that does not exist) mean a state from somewhere else: refused, not masked. */
	bool bad = false;
	for (int s = 0; s < PLIC_NSOURCES; s++) {
		t.priority[s] = sreader_u32(r);
		bad |= t.priority[s] > PLIC_PRIORITY_MAX;
	}
	for (unsigned w = 0; w < PLIC_NWORDS; w++) {
		t.level[w] = sreader_u32(r);
		t.pending[w] = sreader_u32(r);
		t.active[w] = sreader_u32(r);
		bad |= ((t.level[w] | t.pending[w] | t.active[w]) & ~plic_valid_mask(w)) != 0;
	}
	for (int c = 0; c < p->ncontexts; c++) {
		t.threshold[c] = sreader_u32(r);
		bad |= t.threshold[c] > PLIC_PRIORITY_MAX;
		for (unsigned w = 0; w < PLIC_NWORDS; w++) {
			t.enable[c][w] = sreader_u32(r);
			bad |= (t.enable[c][w] & ~plic_valid_mask(w)) != 0;
		}
	}
	if (!sreader_ok(r))
		return -EINVAL;
	if (bad) {
		sreader_fail(r, "plic: a priority, threshold or source out of range");
		return -EINVAL;
	}
	pthread_mutex_lock(&p->lock);
	memcpy(p->priority, t.priority, sizeof(p->priority));
	memcpy(p->level, t.level, sizeof(p->level));
	memcpy(p->pending, t.pending, sizeof(p->pending));
	memcpy(p->active, t.active, sizeof(p->active));
	for (int c = 0; c < p->ncontexts; c++) {
		p->threshold[c] = t.threshold[c];
		memcpy(p->enable[c], t.enable[c], sizeof(p->enable[c]));
		/* Drive every output again: the harts' lines start low after a load. */
		p->out[c] = false;
		hart_set_irq(p->vm->harts[c / 2], c & 1 ? MIP_SEIP : MIP_MEIP, false);
	}
	plic_update_locked(p);
	pthread_mutex_unlock(&p->lock);
	return 0;
}
