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
		0,
	};
	for (int i = 0; i < HART_STATE_CSRS; i++)
		sbuf_u64(b, csrs[i]);
	for (int i = 0; i < 16; i++)
		sbuf_u64(b, h->pmpaddr[i]);
}

int hart_load(struct hart *h, struct sreader *r)
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
	if (priv != PRV_U && priv != PRV_S && priv != PRV_M) {
		sreader_fail(r, "bad privilege level");
		return -EINVAL;
	}
	if (fflags > 0x1f || frm > 7 || x[0] != 0 || (pc & 1)) {
		sreader_fail(r, "bad register values");
		return -EINVAL;
	}
	if (csrs[30] != h->mhartid) {
		sreader_fail(r, "hart id mismatch");
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
	memcpy(h->pmpaddr, pmpaddr, sizeof(pmpaddr));

	/* Caches start empty; device lines are driven again by the restored devices. */
	atomic_store(&h->mip_hw, 0);
	memset(h->tlbs, 0xff, sizeof(h->tlbs));
	memset(h->tlb_super, 0, sizeof(h->tlb_super));
	h->priv = priv;
	hart_update_tlb_ptrs(h);
	block_cache_flush(h);
	h->jit_block = NULL;
	atomic_store(&h->kick, 1);
	return 0;
}
