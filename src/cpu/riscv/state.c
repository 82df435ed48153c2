/* Saving and restoring a hart's architectural state (for snapshots and live migration).
 *
 * Only what the guest can observe is saved: registers, FP state, the LR reservation and the
 * CSRs. Caches (TLBs, decoded and translated blocks) are rebuilt on the other side, and the
 * interrupt lines driven by devices (mip_hw) are driven again by the restored devices. A
 * hart is saved only while parked at a block boundary (vm_pause), where h->pc is the next
 * instruction and nothing is half done. */
#include <errno.h>
#include <string.h>

#include "core/vm.h"
#include "cpu/riscv/hart.h"
#include "cpu/riscv/state.h"
#include "migration/sbuf.h"

#define HART_STATE_CSRS 32

void hart_save(const struct hart *h, struct sbuf *b)
{
	for (int i = 0; i < 32; i++)
		sbuf_u64(b, h->x[i]);
	sbuf_u64(b, h->pc);
	sbuf_u64(b, h->instret);
	sbuf_u8(b, (uint8_t)h->priv);
	for (int i = 0; i < 32; i++)
		sbuf_u64(b, h->f[i]);
	sbuf_u32(b, h->fflags);
	sbuf_u32(b, h->frm);
	sbuf_u64(b, h->lr_addr);
	sbuf_u64(b, h->lr_val);
	sbuf_bool(b, h->lr_valid);

	const uint64_t csrs[HART_STATE_CSRS] = {
		h->mstatus,
		h->misa,
		h->medeleg,
		h->mideleg,
		h->mie,
		h->mip_sw,
		h->mtvec,
		h->stvec,
		h->mscratch,
		h->sscratch,
		h->mepc,
		h->sepc,
		h->mcause,
		h->scause,
		h->mtval,
		h->stval,
		h->satp,
		h->mcounteren,
		h->scounteren,
		h->menvcfg,
		h->senvcfg,
		h->mcountinhibit,
		(uint64_t)h->cycle_delta,
		h->minstret_frozen,
		h->mcycle_frozen,
		h->pmpcfg[0],
		h->pmpcfg[1],
		h->tselect,
		h->tdata1,
		h->tdata2,
		h->mhartid,
		h->stimecmp, /* version 2; a spare zero in version 1 */
	};
	for (int i = 0; i < HART_STATE_CSRS; i++)
		sbuf_u64(b, csrs[i]);
	for (int i = 0; i < 16; i++)
		sbuf_u64(b, h->pmpaddr[i]);
}

/* Checks that a saved hart is one the guest could have reached on this emulator: only the
 * values its CSR writes and traps can produce (anything else, e.g. a privilege mode or a
 * paging scheme it does not have, would run as something no guest asked for). NULL, or
 * the reason. csrs[] is in hart_save's order. */
static const char *hart_state_check(const struct hart *h, uint32_t version, uint64_t pc,
				    uint8_t priv, const uint64_t *x, uint32_t fflags, uint32_t frm,
				    const uint64_t *csrs)
{
	uint64_t mstatus = csrs[0], misa = csrs[1], medeleg = csrs[2], mideleg = csrs[3];
	uint64_t mie = csrs[4], mip_sw = csrs[5], mtvec = csrs[6], stvec = csrs[7];
	uint64_t mepc = csrs[10], sepc = csrs[11], satp = csrs[16];
	uint64_t mcounteren = csrs[17], scounteren = csrs[18], menvcfg = csrs[19];
	uint64_t senvcfg = csrs[20], mcountinhibit = csrs[21];

	if (priv != PRV_U && priv != PRV_S && priv != PRV_M)
		return "bad privilege level";
	if (fflags > 0x1f || frm > 7 || x[0] != 0)
		return "bad register values";
	if (csrs[30] != h->mhartid)
		return "hart id mismatch";
	if (misa != h->misa)
		return "misa names extensions this hart does not have";
	if ((mstatus & ~(MSTATUS_WMASK | MSTATUS_UXL | MSTATUS_SXL)) ||
	    (mstatus & (MSTATUS_UXL | MSTATUS_SXL)) != ((2ULL << 32) | (2ULL << 34)) ||
	    ((mstatus & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT) == 2)
		return "mstatus holds values this hart cannot have";
	unsigned mode = (unsigned)(satp >> 60);
	if ((mode != 0 && mode != 8 && mode != 9) || (mode == 0 && satp))
		return "satp: unsupported address translation";
	if ((medeleg & ~MEDELEG_MASK) || (mideleg & ~MIP_S_MASK) || (mie & ~MIE_MASK) ||
	    (mip_sw & ~MIP_S_MASK))
		return "interrupt or exception delegation bits this hart does not have";
	if ((mtvec & 2) || (stvec & 2))
		return "trap vector with a reserved mode";
	/* Any even pc is reachable (a jump anywhere faults at the fetch, on this side as on
	 * the source); an odd one is not. */
	if ((mepc & 1) || (sepc & 1) || (pc & 1))
		return "misaligned pc or exception pc";
	/* Sstc's menvcfg.STCE came with version 2: before, no hart could set it. */
	uint64_t menvcfg_mask = version >= 2 ? MENVCFG_WMASK : MENVCFG_FIOM;
	if ((mcounteren | scounteren) >> 32 || menvcfg & ~menvcfg_mask || senvcfg & ~1ULL ||
	    mcountinhibit & ~5ULL)
		return "counter or environment CSRs hold reserved bits";
	return NULL;
}

int hart_load(struct hart *h, struct sreader *r, uint32_t version)
{
	uint64_t x[32], f[32], csrs[HART_STATE_CSRS], pmpaddr[16];

	for (int i = 0; i < 32; i++)
		x[i] = sreader_u64(r);
	uint64_t pc = sreader_u64(r);
	uint64_t instret = sreader_u64(r);
	uint8_t priv = sreader_u8(r);
	for (int i = 0; i < 32; i++)
		f[i] = sreader_u64(r);
	uint32_t fflags = sreader_u32(r);
	uint32_t frm = sreader_u32(r);
	uint64_t lr_addr = sreader_u64(r);
	uint64_t lr_val = sreader_u64(r);
	bool lr_valid = sreader_bool(r);
	for (int i = 0; i < HART_STATE_CSRS; i++)
		csrs[i] = sreader_u64(r);
	for (int i = 0; i < 16; i++)
		pmpaddr[i] = sreader_u64(r);
	if (!sreader_ok(r))
		return -EINVAL;
	if (version < 1 || version > HART_STATE_VERSION) {
		sreader_fail(r, "unknown hart state version");
		return -EINVAL;
	}
	const char *why = hart_state_check(h, version, pc, priv, x, fflags, frm, csrs);
	if (why) {
		sreader_fail(r, why);
		return -EINVAL;
	}

	memcpy(h->x, x, sizeof(x));
	h->x[32] = 0;
	h->pc = pc;
	h->instret = instret;
	memcpy(h->f, f, sizeof(f));
	h->fflags = fflags;
	h->frm = frm;
	h->lr_addr = lr_addr;
	h->lr_val = lr_val;
	h->lr_valid = lr_valid;
	int k = 0;
	h->mstatus = csrs[k++];
	h->misa = csrs[k++];
	h->medeleg = csrs[k++];
	h->mideleg = csrs[k++];
	h->mie = csrs[k++];
	h->mip_sw = csrs[k++];
	h->mtvec = csrs[k++];
	h->stvec = csrs[k++];
	h->mscratch = csrs[k++];
	h->sscratch = csrs[k++];
	h->mepc = csrs[k++];
	h->sepc = csrs[k++];
	h->mcause = csrs[k++];
	h->scause = csrs[k++];
	h->mtval = csrs[k++];
	h->stval = csrs[k++];
	h->satp = csrs[k++];
	h->mcounteren = csrs[k++];
	h->scounteren = csrs[k++];
	h->menvcfg = csrs[k++];
	h->senvcfg = csrs[k++];
	h->mcountinhibit = csrs[k++];
	h->cycle_delta = (int64_t)csrs[k++];
	h->minstret_frozen = csrs[k++];
	h->mcycle_frozen = csrs[k++];
	h->pmpcfg[0] = csrs[k++];
	h->pmpcfg[1] = csrs[k++];
	h->tselect = csrs[k++];
	h->tdata1 = csrs[k++];
	h->tdata2 = csrs[k++];
	k++; /* mhartid: checked, not loaded */
	/* Version 1 came from a hart without stimecmp (and so with STCE off): none pending. */
	h->stimecmp = version >= 2 ? csrs[k] : UINT64_MAX;
	memcpy(h->pmpaddr, pmpaddr, sizeof(pmpaddr));

	/* Caches start empty; device lines are driven again by the restored devices. */
	atomic_store(&h->mip_hw, 0);
	hart_stimer_update(h); /* the timer device drives STIP from the restored compare */
	memset(h->tlbs, 0xff, sizeof(h->tlbs));
	memset(h->tlb_super, 0, sizeof(h->tlb_super));
	h->priv = priv;
	hart_update_tlb_ptrs(h);
	block_cache_flush(h);
	h->jit_block = NULL;
	atomic_store(&h->kick, 1);
	return 0;
}
