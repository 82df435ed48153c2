/* The hart's internal state, shared by the interpreter, CSRs, MMU and traps. */
#ifndef MABO_CPU_RISCV_HART_H
#define MABO_CPU_RISCV_HART_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cpu/riscv/cpu.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

enum { PRV_U = 0, PRV_S = 1, PRV_M = 3 };

/* Exception causes */
enum {
	EXC_INSN_MISALIGNED = 0,
	EXC_INSN_ACCESS = 1,
	EXC_ILLEGAL = 2,
	EXC_BREAKPOINT = 3,
	EXC_LOAD_MISALIGNED = 4,
	EXC_LOAD_ACCESS = 5,
	EXC_STORE_MISALIGNED = 6,
	EXC_STORE_ACCESS = 7,
	EXC_ECALL_U = 8,
	EXC_ECALL_S = 9,
	EXC_ECALL_M = 11,
	EXC_INSN_PAGE = 12,
	EXC_LOAD_PAGE = 13,
	EXC_STORE_PAGE = 15,
};

#define IRQ_FLAG (1ULL << 63)

/* mstatus fields */
#define MSTATUS_SIE (1ULL << 1)
#define MSTATUS_MIE (1ULL << 3)
#define MSTATUS_SPIE (1ULL << 5)
#define MSTATUS_UBE (1ULL << 6)
#define MSTATUS_MPIE (1ULL << 7)
#define MSTATUS_SPP (1ULL << 8)
#define MSTATUS_VS (3ULL << 9)
#define MSTATUS_MPP_SHIFT 11
#define MSTATUS_MPP (3ULL << 11)
#define MSTATUS_FS_SHIFT 13
#define MSTATUS_FS (3ULL << 13)
#define MSTATUS_XS (3ULL << 15)
#define MSTATUS_MPRV (1ULL << 17)
#define MSTATUS_SUM (1ULL << 18)
#define MSTATUS_MXR (1ULL << 19)
#define MSTATUS_TVM (1ULL << 20)
#define MSTATUS_TW (1ULL << 21)
#define MSTATUS_TSR (1ULL << 22)
#define MSTATUS_UXL (3ULL << 32)
#define MSTATUS_SXL (3ULL << 34)
#define MSTATUS_SD (1ULL << 63)

/* menvcfg fields: FIOM (no effect here: fences order all I/O anyway) and Sstc's STCE. */
#define MENVCFG_FIOM (1ULL << 0)
#define MENVCFG_STCE (1ULL << 63)
#define MENVCFG_WMASK (MENVCFG_FIOM | MENVCFG_STCE)

/* What the guest can write (csr.c) and so what a saved hart may hold (state.c). */
#define MIP_S_MASK (MIP_SSIP | MIP_STIP | MIP_SEIP)
#define MIE_MASK (MIP_SSIP | MIP_MSIP | MIP_STIP | MIP_MTIP | MIP_SEIP | MIP_MEIP)
#define MEDELEG_MASK 0xb3ffULL /* every synchronous cause but ecall-from-M */
#define MSTATUS_WMASK                                                                              \
	(MSTATUS_SIE | MSTATUS_MIE | MSTATUS_SPIE | MSTATUS_MPIE | MSTATUS_SPP | MSTATUS_MPP |     \
	 MSTATUS_FS | MSTATUS_MPRV | MSTATUS_SUM | MSTATUS_MXR | MSTATUS_TVM | MSTATUS_TW |        \
	 MSTATUS_TSR)

/* Software TLB: direct-mapped, one array per access kind. An entry maps a page-aligned
 * virtual address (tag) to a host address: host = va + addend. Misaligned accesses miss
 * the tag compare on purpose and take the slow path. */
#define TLB_BITS 8
#define TLB_SIZE (1 << TLB_BITS)
#define TLB_INVALID (~0ULL)

struct tlb_entry {
	uint64_t tag;
	uintptr_t addend;
};

struct tlb {
	struct tlb_entry r[TLB_SIZE];
	struct tlb_entry w[TLB_SIZE];
	struct tlb_entry x[TLB_SIZE];
};

struct block_cache;

struct hart {
	/* Hot: registers and the TLBs in use. x[32] is the sink for writes to x0. */
	uint64_t x[33];
	uint64_t pc;
	struct tlb *itlb; /* fetch: the current privilege's set */
	struct tlb *dtlb; /* loads/stores: the effective privilege's set (MPRV) */
	uint64_t instret;
	int priv;
	/* Set from any thread when the hart must look at interrupts or the VM state. */
	atomic_int kick;

	uint64_t f[32];
	uint32_t fflags;
	uint32_t frm;

	/* LR/SC reservation: address and the value loaded (SC compares and swaps). */
	uint64_t lr_addr;
	uint64_t lr_val;
	bool lr_valid;

	/* CSRs */
	uint64_t mstatus;
	uint64_t misa;
	uint64_t medeleg, mideleg;
	uint64_t mie;
	uint64_t mip_sw;	 /* SSIP, STIP, SEIP as written by software */
	_Atomic uint64_t mip_hw; /* lines driven by devices */
	uint64_t mtvec, stvec;
	uint64_t mscratch, sscratch;
	uint64_t mepc, sepc;
	uint64_t mcause, scause;
	uint64_t mtval, stval;
	uint64_t satp;
	uint64_t mcounteren, scounteren;
	uint64_t menvcfg, senvcfg;
	/* Sstc: STIP is (time >= stimecmp) while menvcfg.STCE is set. The timer device
	 * drives that level into mip_hw (vm_wfi_ops.stimer), as it drives MTIP. */
	uint64_t stimecmp;
	uint64_t mcountinhibit;
	int64_t cycle_delta;			 /* mcycle = instret + cycle_delta */
	uint64_t minstret_frozen, mcycle_frozen; /* values held while mcountinhibit stops them */
	bool walk_super; /* the last successful walk ended at a superpage leaf */
	uint64_t tlb_super[4][3][TLB_SIZE / 64]; /* entries filled from superpages, per set */
	uint64_t pmpcfg[2];
	uint64_t pmpaddr[16];
	uint64_t tselect, tdata1, tdata2;
	uint64_t mhartid;

	/* The block translated code last entered and its pc0: chained blocks update them. */
	void *jit_block;
	uint64_t jit_pc0;

	/* A fault found by a slow path, raised by the interpreter that knows the pc. */
	uint64_t exc_cause;
	uint64_t exc_tval;

	struct vm *vm;
	int id;

	/* WFI sleeping */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* Host time (CLOCK_MONOTONIC ns) the current idle window began, and how much of it the
	 * hart slept in WFI: owned by the hart's thread. */
	uint64_t idle_window_start;
	uint64_t idle_window_asleep;
	bool idle_trimmed; /* the caches were released since the hart was last busy */

	struct block_cache *bc;
	struct tlb tlbs[4]; /* indexed by privilege; [2] unused */
};

/* csr.c */
void hart_update_tlb_ptrs(struct hart *h);
void tlb_flush(struct hart *h);
/* Drops the entries that may map the page holding va (sfence.vma with an address). */
void tlb_flush_page(struct hart *h, uint64_t va);
/* Accesses CSR csr; on an illegal access returns false (the caller raises illegal-insn).
 * wmask/wval: new = (old & ~wmask) | (wval & wmask); write = false for pure reads. */
bool csr_access(struct hart *h, uint32_t csr, uint64_t *old, bool write, uint64_t wval,
		uint64_t wmask);
/* Enters a trap: cause (IRQ_FLAG for interrupts), tval; h->pc is the faulting pc. */
void hart_trap(struct hart *h, uint64_t cause, uint64_t tval);
/* Delivers the highest-priority pending enabled interrupt; true if one was taken. */
bool hart_check_interrupts(struct hart *h);
uint64_t hart_read_mip(struct hart *h);
/* Tells the timer device the hart's stimecmp and menvcfg.STCE (after either changed). */
void hart_stimer_update(struct hart *h);
void hart_do_mret(struct hart *h);
void hart_do_sret(struct hart *h);
void hart_set_priv(struct hart *h, int priv);

/* mmu.c. Access kinds */
enum { ACC_R = 0, ACC_W = 1, ACC_X = 2 };
/* Translates va for an access of kind acc at the effective privilege; on success fills
 * *pa and returns 0, else returns the exception cause to raise (tval = va). */
int mmu_translate(struct hart *h, uint64_t va, int acc, uint64_t *pa);
/* Slow paths: handle TLB fills, MMIO, misaligned and page-crossing accesses, HTIF.
 * On a fault they record it in h->exc_cause / h->exc_tval and return false; the caller
 * raises it with hart_trap once h->pc holds the faulting instruction's pc. */
bool mem_load_slow(struct hart *h, uint64_t va, unsigned size, uint64_t *val);
bool mem_store_slow(struct hart *h, uint64_t va, unsigned size, uint64_t val);
/* Host pointer for an aligned atomic access of size bytes at va (RAM only), or NULL with
 * the fault recorded. acc = ACC_W for AMOs/SC (which need write permission). */
void *mem_atomic_ptr(struct hart *h, uint64_t va, unsigned size, int acc);
/* Fetches the host pointer of the page holding pc for execution, filling the fetch TLB;
 * returns NULL with the fault recorded. *pa receives the physical address of pc. */
uint8_t *mem_fetch_page(struct hart *h, uint64_t pc, uint64_t *pa);

/* exec.c */
void block_cache_flush(struct hart *h);
struct block_cache *block_cache_create(size_t size);
void block_cache_destroy(struct block_cache *bc);
void hart_execute(struct hart *h);

#endif
