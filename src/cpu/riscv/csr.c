/* Control and status registers, privilege changes, traps and interrupts. */
#include <string.h>

#include "core/vm.h"
#include "cpu/riscv/hart.h"

#define SSTATUS_MASK                                                                               \
	(MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_FS | MSTATUS_XS | MSTATUS_VS |         \
	 MSTATUS_SUM | MSTATUS_MXR | MSTATUS_UXL | MSTATUS_SD)

void tlb_flush(struct hart *h)
{
	/* All-ones tags never match a page-aligned address. */
	memset(&h->tlbs[PRV_U], 0xff, sizeof(h->tlbs[PRV_U]));
	memset(&h->tlbs[PRV_S], 0xff, sizeof(h->tlbs[PRV_S]));
	memset(h->tlb_super, 0, sizeof(h->tlb_super));
}

void hart_flush_tlb_all(struct hart *h)
{
	memset(h->tlbs, 0xff, sizeof(h->tlbs));
	memset(h->tlb_super, 0, sizeof(h->tlb_super));
}

void hart_flush_write_tlb(struct hart *h)
{
	for (int p = 0; p < 4; p++)
		memset(h->tlbs[p].w, 0xff, sizeof(h->tlbs[p].w));
}

void tlb_flush_page(struct hart *h, uint64_t va)
{
	unsigned idx = (va >> PAGE_SHIFT) & (TLB_SIZE - 1);
	for (int p = PRV_U; p <= PRV_S; p++) {
		struct tlb_entry *arr[3] = { h->tlbs[p].r, h->tlbs[p].w, h->tlbs[p].x };
		for (int k = 0; k < 3; k++) {
			arr[k][idx].tag = TLB_INVALID;
			/* The fenced address may lie in a superpage cached as many 4 KiB
			 * entries: drop every entry that came from a superpage. */
			for (int w = 0; w < TLB_SIZE / 64; w++) {
				uint64_t bits = h->tlb_super[p][k][w];
				while (bits) {
					int b = __builtin_ctzll(bits);
					arr[k][w * 64 + b].tag = TLB_INVALID;
					bits &= bits - 1;
				}
				h->tlb_super[p][k][w] = 0;
			}
		}
	}
}

void hart_update_tlb_ptrs(struct hart *h)
{
	h->itlb = &h->tlbs[h->priv];
	int dpriv = h->priv;
	if ((h->mstatus & MSTATUS_MPRV) && h->priv == PRV_M)
		dpriv = (h->mstatus >> MSTATUS_MPP_SHIFT) & 3;
	h->dtlb = &h->tlbs[dpriv];
}

void hart_set_priv(struct hart *h, int priv)
{
	h->priv = priv;
	hart_update_tlb_ptrs(h);
	h->kick = 1; /* interrupt enables depend on the privilege */
}

uint64_t hart_read_mip(struct hart *h)
{
	uint64_t hw = atomic_load_explicit(&h->mip_hw, memory_order_acquire);
	/* With Sstc on, STIP is the timer's level alone (software's writes no longer reach
	 * it); off, it is software's bit alone, whatever the timer last drove. */
	if (h->menvcfg & MENVCFG_STCE)
		return (h->mip_sw & ~MIP_STIP) | hw;
	return h->mip_sw | (hw & ~MIP_STIP);
}

void hart_stimer_update(struct hart *h)
{
	const struct vm_wfi_ops *ops = h->vm->wfi_ops;
	bool enabled = h->menvcfg & MENVCFG_STCE;

	if (ops && ops->stimer) {
		ops->stimer(h->vm->wfi_opaque, h->id, h->stimecmp, enabled);
		return;
	}
	/* No timer device: the level as of now (nothing raises it later). On the hart's own
	 * thread, so a kick is all the interrupt check needs. */
	if (enabled && vm_mtime(h->vm) >= h->stimecmp) {
		atomic_fetch_or(&h->mip_hw, MIP_STIP);
		h->kick = 1;
	} else {
		atomic_fetch_and(&h->mip_hw, ~MIP_STIP);
	}
}

static uint64_t read_mstatus(const struct hart *h)
{
	uint64_t s = h->mstatus;
	if ((s & MSTATUS_FS) == MSTATUS_FS)
		s |= MSTATUS_SD;
	return s;
}

static void write_mstatus(struct hart *h, uint64_t val, uint64_t mask)
{
	uint64_t old = h->mstatus;
	uint64_t n = (old & ~mask) | (val & mask & MSTATUS_WMASK);
	/* MPP is WARL: 2 is not a mode; keep the old value. */
	if (((n & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT) == 2)
		n = (n & ~MSTATUS_MPP) | (old & MSTATUS_MPP);
	n &= ~MSTATUS_SD;
	n |= (2ULL << 32) | (2ULL << 34); /* UXL = SXL = 64 */
	h->mstatus = n;
	if ((old ^ n) & (MSTATUS_SUM | MSTATUS_MXR))
		tlb_flush(h);
	hart_update_tlb_ptrs(h);
	h->kick = 1;
}

/* The counters as the instruction in progress reads them: it has not retired yet. */
static uint64_t minstret_value(const struct hart *h)
{
	return (h->mcountinhibit & 4) ? h->minstret_frozen : h->instret - 1;
}

static uint64_t mcycle_value(const struct hart *h)
{
	return (h->mcountinhibit & 1) ? h->mcycle_frozen : h->instret - 1 + h->cycle_delta;
}

/* Makes the next instruction read minstret = n (the writing instruction is not counted). */
static void minstret_set(struct hart *h, uint64_t n)
{
	uint64_t cyc = mcycle_value(h);
	if (h->mcountinhibit & 4)
		h->minstret_frozen = n;
	else
		h->instret = n;
	/* mcycle is derived from instret: keep it where it was. */
	h->cycle_delta = (int64_t)(cyc + 1 - h->instret);
}

static void mcycle_set(struct hart *h, uint64_t n)
{
	if (h->mcountinhibit & 1)
		h->mcycle_frozen = n;
	else
		h->cycle_delta = (int64_t)(n - h->instret);
}

static void mcountinhibit_set(struct hart *h, uint64_t v)
{
	uint64_t ir = minstret_value(h) + 1, cy = mcycle_value(h) + 1;
	h->mcountinhibit = v & 5;
	/* Hold or resume from the value counted up to and including this instruction. */
	h->minstret_frozen = ir;
	h->mcycle_frozen = cy;
	if (!(v & 4))
		h->instret = ir;
	if (!(v & 1))
		h->cycle_delta = (int64_t)(cy - h->instret);
}

static uint64_t counter_read(struct hart *h, uint32_t csr)
{
	switch (csr & 0x1f) {
	case 0: return mcycle_value(h);
	case 1: return vm_mtime(h->vm);
	case 2: return minstret_value(h);
	default: return 0;
	}
}

/* Counter CSRs reachable from S/U only when m/scounteren allow. */
static bool counter_allowed(const struct hart *h, uint32_t csr)
{
	uint32_t bit = 1u << (csr & 0x1f);
	if (h->priv < PRV_M && !(h->mcounteren & bit))
		return false;
	if (h->priv < PRV_S && !(h->scounteren & bit))
		return false;
	return true;
}

bool csr_access(struct hart *h, uint32_t csr, uint64_t *oldp, bool write, uint64_t wval,
		uint64_t wmask)
{
	uint64_t old = 0;
	int min_priv = (csr >> 8) & 3;

	if (h->priv < min_priv)
		return false;
	if (write && (csr >> 10) == 3)
		return false; /* read-only CSR */

	switch (csr) {
	/* Floating point */
	case 0x001:
	case 0x002:
	case 0x003:
		if (!(h->mstatus & MSTATUS_FS))
			return false;
		old = csr == 1 ? h->fflags : csr == 2 ? h->frm : (h->frm << 5) | h->fflags;
		if (write) {
			uint64_t n = (old & ~wmask) | (wval & wmask);
			if (csr == 1)
				h->fflags = n & 0x1f;
			else if (csr == 2)
				h->frm = n & 7;
			else {
				h->fflags = n & 0x1f;
				h->frm = (n >> 5) & 7;
			}
			h->mstatus |= MSTATUS_FS;
		}
		*oldp = old;
		return true;

	/* Counters */
	case 0xc00 ... 0xc1f:
		if (!counter_allowed(h, csr))
			return false;
		*oldp = counter_read(h, csr);
		return true;

	/* Supervisor */
	case 0x100:
		old = read_mstatus(h) & SSTATUS_MASK;
		if (write)
			write_mstatus(h, wval, wmask & SSTATUS_MASK);
		break;
	case 0x104:
		old = h->mie & h->mideleg;
		if (write) {
			uint64_t m = wmask & h->mideleg & MIE_MASK;
			h->mie = (h->mie & ~m) | (wval & m);
			h->kick = 1;
		}
		break;
	case 0x105:
		old = h->stvec;
		if (write)
			h->stvec = ((old & ~wmask) | (wval & wmask)) & ~2ULL;
		break;
	case 0x106:
		old = h->scounteren;
		if (write)
			h->scounteren = ((old & ~wmask) | (wval & wmask)) & 0xffffffffULL;
		break;
	case 0x10a:
		old = h->senvcfg;
		if (write)
			h->senvcfg = ((old & ~wmask) | (wval & wmask)) & 1;
		break;
	case 0x140:
		old = h->sscratch;
		if (write)
			h->sscratch = (old & ~wmask) | (wval & wmask);
		break;
	case 0x141:
		old = h->sepc;
		if (write)
			h->sepc = ((old & ~wmask) | (wval & wmask)) & ~1ULL;
		break;
	case 0x142:
		old = h->scause;
		if (write)
			h->scause = (old & ~wmask) | (wval & wmask);
		break;
	case 0x143:
		old = h->stval;
		if (write)
			h->stval = (old & ~wmask) | (wval & wmask);
		break;
	case 0x144:
		old = hart_read_mip(h) & h->mideleg;
		if (write) {
			uint64_t m = wmask & h->mideleg & MIP_SSIP;
			h->mip_sw = (h->mip_sw & ~m) | (wval & m);
			h->kick = 1;
		}
		break;
	case 0x14d:
		/* Sstc: below M only while menvcfg.STCE and mcounteren.TM allow. */
		if (h->priv < PRV_M && (!(h->menvcfg & MENVCFG_STCE) || !(h->mcounteren & 2)))
			return false;
		old = h->stimecmp;
		if (write) {
			h->stimecmp = (old & ~wmask) | (wval & wmask);
			hart_stimer_update(h);
		}
		break;
	case 0x180:
		if (h->priv == PRV_S && (h->mstatus & MSTATUS_TVM))
			return false;
		old = h->satp;
		if (write) {
			uint64_t n = (old & ~wmask) | (wval & wmask);
			uint64_t mode = n >> 60;
			if (mode == 0 || mode == 8 || mode == 9) {
				/* 16 ASID bits, 44 PPN bits. */
				h->satp = mode ? (n & 0xfffffffffffffffULL) | (mode << 60) : 0;
				tlb_flush(h);
			}
		}
		break;

	/* Machine */
	case 0xf11:
	case 0xf12:
	case 0xf13:
	case 0xf15: old = 0; break;
	case 0xf14: old = h->mhartid; break;
	case 0x300:
		old = read_mstatus(h);
		if (write)
			write_mstatus(h, wval, wmask);
		break;
	case 0x301:
		old = h->misa; /* read-only: writes are ignored (WARL) */
		break;
	case 0x302:
		old = h->medeleg;
		if (write)
			h->medeleg = ((old & ~wmask) | (wval & wmask)) & MEDELEG_MASK;
		break;
	case 0x303:
		old = h->mideleg;
		if (write) {
			h->mideleg = ((old & ~wmask) | (wval & wmask)) & MIP_S_MASK;
			h->kick = 1;
		}
		break;
	case 0x304:
		old = h->mie;
		if (write) {
			h->mie = ((old & ~wmask) | (wval & wmask)) & MIE_MASK;
			h->kick = 1;
		}
		break;
	case 0x305:
		old = h->mtvec;
		if (write)
			h->mtvec = ((old & ~wmask) | (wval & wmask)) & ~2ULL;
		break;
	case 0x306:
		old = h->mcounteren;
		if (write)
			h->mcounteren = ((old & ~wmask) | (wval & wmask)) & 0xffffffffULL;
		break;
	case 0x30a:
		old = h->menvcfg;
		if (write) {
			h->menvcfg = ((old & ~wmask) | (wval & wmask)) & MENVCFG_WMASK;
			if ((old ^ h->menvcfg) & MENVCFG_STCE) {
				hart_stimer_update(h);
				h->kick = 1; /* STIP's source changed */
			}
		}
		break;
	case 0x320:
		old = h->mcountinhibit;
		if (write)
			mcountinhibit_set(h, (old & ~wmask) | (wval & wmask));
		break;
	case 0x323 ... 0x33f: /* mhpmevent: no events */ old = 0; break;
	case 0x340:
		old = h->mscratch;
		if (write)
			h->mscratch = (old & ~wmask) | (wval & wmask);
		break;
	case 0x341:
		old = h->mepc;
		if (write)
			h->mepc = ((old & ~wmask) | (wval & wmask)) & ~1ULL;
		break;
	case 0x342:
		old = h->mcause;
		if (write)
			h->mcause = (old & ~wmask) | (wval & wmask);
		break;
	case 0x343:
		old = h->mtval;
		if (write)
			h->mtval = (old & ~wmask) | (wval & wmask);
		break;
	case 0x344:
		old = hart_read_mip(h);
		if (write) {
			uint64_t m = wmask & MIP_S_MASK;
			if (h->menvcfg & MENVCFG_STCE)
				m &= ~MIP_STIP; /* read-only: the timer's level */
			h->mip_sw = (h->mip_sw & ~m) | (wval & m);
			h->kick = 1;
		}
		break;
	case 0x3a0:
	case 0x3a2:
		old = h->pmpcfg[(csr - 0x3a0) / 2];
		if (write)
			h->pmpcfg[(csr - 0x3a0) / 2] = (old & ~wmask) | (wval & wmask);
		break;
	case 0x3a1:
	case 0x3a3 ... 0x3af:
		if (csr & 1)
			return false; /* odd pmpcfg registers exist only in RV32 */
		old = 0;
		break;
	case 0x3b0 ... 0x3bf:
		old = h->pmpaddr[csr - 0x3b0];
		if (write)
			h->pmpaddr[csr - 0x3b0] =
				((old & ~wmask) | (wval & wmask)) & ((1ULL << 54) - 1);
		break;
	case 0x3c0 ... 0x3ef: /* pmpaddr16..63: this hart has 16 PMP entries; the rest read as zero
			       */
		old = 0;
		break;
	case 0x7a0:
		old = 0; /* one trigger slot that does nothing: tdata1 never reads back */
		break;
	case 0x7a1:
	case 0x7a2:
	case 0x7a3: old = 0; break;
	case 0xb00:
		old = mcycle_value(h);
		if (write)
			mcycle_set(h, (old & ~wmask) | (wval & wmask));
		break;
	case 0xb02:
		old = minstret_value(h);
		if (write)
			minstret_set(h, (old & ~wmask) | (wval & wmask));
		break;
	case 0xb03 ... 0xb1f: /* mhpmcounter: read as zero */ old = 0; break;
	default: return false;
	}
	*oldp = old;
	return true;
}

void hart_trap(struct hart *h, uint64_t cause, uint64_t tval)
{
	bool irq = cause & IRQ_FLAG;
	uint64_t code = cause & ~IRQ_FLAG;
	uint64_t deleg = irq ? h->mideleg : h->medeleg;
	int prev = h->priv;

	h->lr_valid = false;
	if (prev <= PRV_S && code < 64 && ((deleg >> code) & 1)) {
		h->scause = cause;
		h->sepc = h->pc;
		h->stval = tval;
		uint64_t s = h->mstatus;
		s = (s & ~MSTATUS_SPIE) | ((s & MSTATUS_SIE) ? MSTATUS_SPIE : 0);
		s = (s & ~MSTATUS_SPP) | (prev == PRV_S ? MSTATUS_SPP : 0);
		s &= ~MSTATUS_SIE;
		h->mstatus = s;
		h->pc = (h->stvec & ~3ULL) + ((irq && (h->stvec & 1)) ? 4 * code : 0);
		hart_set_priv(h, PRV_S);
	} else {
		h->mcause = cause;
		h->mepc = h->pc;
		h->mtval = tval;
		uint64_t s = h->mstatus;
		s = (s & ~MSTATUS_MPIE) | ((s & MSTATUS_MIE) ? MSTATUS_MPIE : 0);
		s = (s & ~MSTATUS_MPP) | ((uint64_t)prev << MSTATUS_MPP_SHIFT);
		s &= ~MSTATUS_MIE;
		h->mstatus = s;
		h->pc = (h->mtvec & ~3ULL) + ((irq && (h->mtvec & 1)) ? 4 * code : 0);
		hart_set_priv(h, PRV_M);
	}
}

bool hart_check_interrupts(struct hart *h)
{
	uint64_t pending = hart_read_mip(h) & h->mie;
	if (!pending)
		return false;
	uint64_t m = pending & ~h->mideleg;
	uint64_t s = pending & h->mideleg;
	uint64_t take = 0;
	if (m && (h->priv < PRV_M || (h->mstatus & MSTATUS_MIE)))
		take = m;
	else if (s && (h->priv < PRV_S || (h->priv == PRV_S && (h->mstatus & MSTATUS_SIE))))
		take = s;
	if (!take)
		return false;
	static const int order[] = { 11, 3, 7, 9, 1, 5 };
	for (unsigned i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		if (take & (1ULL << order[i])) {
			hart_trap(h, IRQ_FLAG | order[i], 0);
			return true;
		}
	}
	return false;
}

void hart_do_mret(struct hart *h)
{
	uint64_t s = h->mstatus;
	int mpp = (s >> MSTATUS_MPP_SHIFT) & 3;
	s = (s & ~MSTATUS_MIE) | ((s & MSTATUS_MPIE) ? MSTATUS_MIE : 0);
	s |= MSTATUS_MPIE;
	s &= ~MSTATUS_MPP; /* MPP = U */
	if (mpp != PRV_M)
		s &= ~MSTATUS_MPRV;
	h->mstatus = s;
	h->pc = h->mepc;
	hart_set_priv(h, mpp);
}

void hart_do_sret(struct hart *h)
{
	uint64_t s = h->mstatus;
	int spp = (s & MSTATUS_SPP) ? PRV_S : PRV_U;
	s = (s & ~MSTATUS_SIE) | ((s & MSTATUS_SPIE) ? MSTATUS_SIE : 0);
	s |= MSTATUS_SPIE;
	s &= ~MSTATUS_SPP;
	s &= ~MSTATUS_MPRV;
	h->mstatus = s;
	h->pc = h->sepc;
	hart_set_priv(h, spp);
}
