/* CSRs (csr_access), traps (hart_trap), xRET and interrupt selection, driven directly on a
 * hart without running guest code. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "cpu/riscv/hart.h"
#include "hart_fixture.h"

#define RAM_SIZE (1ULL << 20)

enum {
	CSR_FFLAGS = 0x001,
	CSR_FRM = 0x002,
	CSR_FCSR = 0x003,
	CSR_CYCLE = 0xc00,
	CSR_TIME = 0xc01,
	CSR_INSTRET = 0xc02,
	CSR_HPMCOUNTER3 = 0xc03,
	CSR_SSTATUS = 0x100,
	CSR_SIE = 0x104,
	CSR_STVEC = 0x105,
	CSR_SCOUNTEREN = 0x106,
	CSR_SSCRATCH = 0x140,
	CSR_SEPC = 0x141,
	CSR_SCAUSE = 0x142,
	CSR_STVAL = 0x143,
	CSR_SIP = 0x144,
	CSR_STIMECMP = 0x14d,
	CSR_SATP = 0x180,
	CSR_MVENDORID = 0xf11,
	CSR_MHARTID = 0xf14,
	CSR_MSTATUS = 0x300,
	CSR_MISA = 0x301,
	CSR_MEDELEG = 0x302,
	CSR_MIDELEG = 0x303,
	CSR_MIE = 0x304,
	CSR_MTVEC = 0x305,
	CSR_MCOUNTEREN = 0x306,
	CSR_MENVCFG = 0x30a,
	CSR_MSCRATCH = 0x340,
	CSR_MEPC = 0x341,
	CSR_MCAUSE = 0x342,
	CSR_MTVAL = 0x343,
	CSR_MIP = 0x344,
	CSR_PMPCFG0 = 0x3a0,
	CSR_PMPCFG1 = 0x3a1,
	CSR_PMPADDR0 = 0x3b0,
	CSR_MCYCLE = 0xb00,
	CSR_MINSTRET = 0xb02,
};

struct fix {
	struct vm vm; /* first, for hart_fixture_new */
	struct hart *h;
};

static int setup(void **state)
{
	struct fix *f = hart_fixture_new(sizeof(*f), RAM_SIZE, 3, 0);
	f->h = f->vm.harts[0];
	*state = f;
	return 0;
}

static bool rd(struct hart *h, uint32_t csr, uint64_t *v)
{
	return csr_access(h, csr, v, false, 0, 0);
}

static uint64_t get(struct hart *h, uint32_t csr)
{
	uint64_t v = 0xdeadbeef;
	assert_true(rd(h, csr, &v));
	return v;
}

/* csrrw: returns whether the access was legal. */
static bool wr(struct hart *h, uint32_t csr, uint64_t val)
{
	uint64_t old;
	return csr_access(h, csr, &old, true, val, ~0ULL);
}

static void put(struct hart *h, uint32_t csr, uint64_t val)
{
	assert_true(wr(h, csr, val));
}

/* csrrs / csrrc */
static void set_bits(struct hart *h, uint32_t csr, uint64_t bits)
{
	uint64_t old;
	assert_true(csr_access(h, csr, &old, true, ~0ULL, bits));
}

static void clear_bits(struct hart *h, uint32_t csr, uint64_t bits)
{
	uint64_t old;
	assert_true(csr_access(h, csr, &old, true, 0, bits));
}

#define MPP(p) ((uint64_t)(p) << MSTATUS_MPP_SHIFT)
#define FS_DIRTY MSTATUS_FS
#define FS_INITIAL (1ULL << MSTATUS_FS_SHIFT)
#define XL64 ((2ULL << 32) | (2ULL << 34))

/* ---- mstatus / sstatus ---- */

static void test_mstatus_warl(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	/* UXL and SXL are read-only 2 (64-bit), whatever is written. */
	assert_int_equal(get(h, CSR_MSTATUS) & (MSTATUS_UXL | MSTATUS_SXL), XL64);
	put(h, CSR_MSTATUS, 0);
	assert_int_equal(get(h, CSR_MSTATUS), XL64);

	/* MPP = 2 is not a mode: the old value stays. */
	put(h, CSR_MSTATUS, MPP(PRV_S));
	assert_int_equal(get(h, CSR_MSTATUS) & MSTATUS_MPP, MPP(PRV_S));
	put(h, CSR_MSTATUS, MPP(2) | MSTATUS_MIE);
	assert_int_equal(get(h, CSR_MSTATUS) & MSTATUS_MPP, MPP(PRV_S));
	assert_true(get(h, CSR_MSTATUS) & MSTATUS_MIE); /* the rest of the write applies */
	put(h, CSR_MSTATUS, MPP(PRV_M));
	assert_int_equal(get(h, CSR_MSTATUS) & MSTATUS_MPP, MPP(PRV_M));
	put(h, CSR_MSTATUS, MPP(PRV_U));
	assert_int_equal(get(h, CSR_MSTATUS) & MSTATUS_MPP, 0);

	/* SD summarises FS = dirty; it is not itself writable. */
	put(h, CSR_MSTATUS, MSTATUS_SD);
	assert_false(get(h, CSR_MSTATUS) & MSTATUS_SD);
	put(h, CSR_MSTATUS, FS_INITIAL);
	assert_false(get(h, CSR_MSTATUS) & MSTATUS_SD);
	put(h, CSR_MSTATUS, FS_DIRTY);
	assert_true(get(h, CSR_MSTATUS) & MSTATUS_SD);
	assert_true(get(h, CSR_SSTATUS) & MSTATUS_SD);

	/* Writable fields read back; unimplemented ones (UBE, VS, XS, MBE...) stay 0. */
	uint64_t w = MSTATUS_SIE | MSTATUS_MIE | MSTATUS_SPIE | MSTATUS_MPIE | MSTATUS_SPP |
		     MPP(PRV_M) | MSTATUS_FS | MSTATUS_MPRV | MSTATUS_SUM | MSTATUS_MXR |
		     MSTATUS_TVM | MSTATUS_TW | MSTATUS_TSR;
	put(h, CSR_MSTATUS, ~0ULL);
	assert_int_equal(get(h, CSR_MSTATUS), w | XL64 | MSTATUS_SD);
}

static void test_sstatus_view(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;
	uint64_t sview =
		MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_FS | MSTATUS_SUM | MSTATUS_MXR;

	put(h, CSR_MSTATUS, ~0ULL);
	/* Only S fields (and UXL, SD) show through. */
	assert_int_equal(get(h, CSR_SSTATUS), sview | (2ULL << 32) | MSTATUS_SD);
	/* Clearing everything through sstatus leaves the M fields alone. */
	put(h, CSR_SSTATUS, 0);
	uint64_t m = get(h, CSR_MSTATUS);
	assert_int_equal(m & sview, 0);
	assert_true(m & MSTATUS_MIE);
	assert_true(m & MSTATUS_MPIE);
	assert_int_equal(m & MSTATUS_MPP, MPP(PRV_M));
	assert_true(m & MSTATUS_MPRV);
	assert_true(m & MSTATUS_TVM);
	assert_true(m & MSTATUS_TW);
	assert_true(m & MSTATUS_TSR);
	assert_int_equal(m & (MSTATUS_UXL | MSTATUS_SXL), XL64);
	assert_int_equal(get(h, CSR_SSTATUS), 2ULL << 32);

	/* Setting everything through sstatus sets only the S fields. */
	put(h, CSR_MSTATUS, 0);
	put(h, CSR_SSTATUS, ~0ULL);
	assert_int_equal(get(h, CSR_MSTATUS), sview | XL64 | MSTATUS_SD);

	/* S-mode may use sstatus, not mstatus; U-mode neither. */
	hart_set_priv(h, PRV_S);
	assert_true(wr(h, CSR_SSTATUS, MSTATUS_SIE));
	uint64_t v;
	assert_false(rd(h, CSR_MSTATUS, &v));
	hart_set_priv(h, PRV_U);
	assert_false(rd(h, CSR_SSTATUS, &v));
}

/* ---- interrupt enables and pending bits ---- */

static void test_sie_sip_masked_by_mideleg(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;
	const uint64_t all = MIP_SSIP | MIP_MSIP | MIP_STIP | MIP_MTIP | MIP_SEIP | MIP_MEIP;

	/* mideleg: only S interrupts can be delegated. */
	put(h, CSR_MIDELEG, ~0ULL);
	assert_int_equal(get(h, CSR_MIDELEG), MIP_SSIP | MIP_STIP | MIP_SEIP);
	put(h, CSR_MIE, ~0ULL);
	assert_int_equal(get(h, CSR_MIE), all);

	/* sie shows mie's delegated bits only. */
	put(h, CSR_MIDELEG, MIP_STIP);
	assert_int_equal(get(h, CSR_SIE), MIP_STIP);
	/* sie writes reach only delegated bits. */
	put(h, CSR_SIE, 0);
	assert_int_equal(get(h, CSR_MIE), all & ~MIP_STIP);
	put(h, CSR_MIDELEG, MIP_SSIP | MIP_SEIP);
	put(h, CSR_SIE, 0);
	assert_int_equal(get(h, CSR_MIE), MIP_MSIP | MIP_MTIP | MIP_MEIP);
	put(h, CSR_SIE, ~0ULL);
	assert_int_equal(get(h, CSR_MIE), MIP_MSIP | MIP_MTIP | MIP_MEIP | MIP_SSIP | MIP_SEIP);
	assert_int_equal(get(h, CSR_SIE), MIP_SSIP | MIP_SEIP);

	/* mip: software writes only the S bits; device lines show through. */
	put(h, CSR_MIP, ~0ULL);
	assert_int_equal(get(h, CSR_MIP), MIP_SSIP | MIP_STIP | MIP_SEIP);
	put(h, CSR_MIP, 0);
	hart_set_irq(h, MIP_MTIP | MIP_SEIP, true);
	assert_int_equal(get(h, CSR_MIP), MIP_MTIP | MIP_SEIP);
	put(h, CSR_MIP, MIP_SSIP | MIP_STIP);
	assert_int_equal(get(h, CSR_MIP), MIP_MTIP | MIP_SEIP | MIP_SSIP | MIP_STIP);

	/* sip: the delegated view; only SSIP is writable. */
	put(h, CSR_MIDELEG, MIP_SSIP | MIP_SEIP);
	assert_int_equal(get(h, CSR_SIP), MIP_SSIP | MIP_SEIP);
	put(h, CSR_SIP, 0);
	assert_int_equal(get(h, CSR_MIP), MIP_MTIP | MIP_SEIP | MIP_STIP);
	put(h, CSR_SIP, ~0ULL);
	assert_int_equal(get(h, CSR_MIP), MIP_MTIP | MIP_SEIP | MIP_STIP | MIP_SSIP);
	put(h, CSR_MIDELEG, MIP_STIP);
	put(h, CSR_SIP, 0); /* STIP is not software-writable through sip */
	assert_int_equal(get(h, CSR_SIP), MIP_STIP);
	put(h, CSR_MIDELEG, 0);
	put(h, CSR_SIP, 0); /* SSIP no longer delegated: unchanged */
	assert_true(get(h, CSR_MIP) & MIP_SSIP);
	assert_int_equal(get(h, CSR_SIP), 0);
	hart_set_irq(h, MIP_MTIP | MIP_SEIP, false);
}

static void test_medeleg_and_misa(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	put(h, CSR_MEDELEG, ~0ULL);
	uint64_t d = get(h, CSR_MEDELEG);
	assert_false(d & (1ULL << EXC_ECALL_M));
	assert_true(d & (1ULL << EXC_ECALL_U));
	assert_true(d & (1ULL << EXC_ECALL_S));
	assert_true(d & (1ULL << EXC_ILLEGAL));
	assert_true(d & (1ULL << EXC_INSN_PAGE));
	assert_true(d & (1ULL << EXC_LOAD_PAGE));
	assert_true(d & (1ULL << EXC_STORE_PAGE));
	assert_int_equal(d, 0xb3ff);

	uint64_t want = (2ULL << 62);
	for (const char *e = "IMAFDCSU"; *e; e++)
		want |= 1ULL << (*e - 'A');
	assert_int_equal(get(h, CSR_MISA), want);
	/* WARL, fixed: a write is legal and changes nothing. */
	put(h, CSR_MISA, 0);
	assert_int_equal(get(h, CSR_MISA), want);
	assert_int_equal(get(h, CSR_MHARTID), 3);
	assert_int_equal(get(h, CSR_MVENDORID), 0);
}

static void test_trap_vectors_and_epc_masks(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	put(h, CSR_MEPC, 0x80001233);
	assert_int_equal(get(h, CSR_MEPC), 0x80001232);
	put(h, CSR_SEPC, 0xffffffffffffffffULL);
	assert_int_equal(get(h, CSR_SEPC), 0xfffffffffffffffeULL);
	put(h, CSR_MTVEC, 0x80000101);
	assert_int_equal(get(h, CSR_MTVEC), 0x80000101);
	put(h, CSR_MTVEC, 0x80000102); /* mode 2 is reserved */
	assert_true((get(h, CSR_MTVEC) & 3) < 2);
	put(h, CSR_STVEC, 0x80000200);
	assert_int_equal(get(h, CSR_STVEC), 0x80000200);
	put(h, CSR_MSCRATCH, 0x0123456789abcdefULL);
	assert_int_equal(get(h, CSR_MSCRATCH), 0x0123456789abcdefULL);
}

/* ---- satp ---- */

static void test_satp(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;
	const uint64_t sv39 = (8ULL << 60) | (0x1234ULL << 44) | 0x80123;
	const uint64_t sv48 = (9ULL << 60) | 0x80456;

	put(h, CSR_SATP, sv39);
	assert_int_equal(get(h, CSR_SATP), sv39);
	assert_int_equal(h->satp, sv39);
	/* Sv57 (10) and Sv64 (11), and the reserved modes, are not supported: the write is
	 * ignored as a whole. */
	put(h, CSR_SATP, (10ULL << 60) | 0x80999);
	assert_int_equal(get(h, CSR_SATP), sv39);
	put(h, CSR_SATP, (11ULL << 60) | 0x80999);
	assert_int_equal(get(h, CSR_SATP), sv39);
	put(h, CSR_SATP, (1ULL << 60) | 0x80999);
	assert_int_equal(get(h, CSR_SATP), sv39);
	put(h, CSR_SATP, sv48);
	assert_int_equal(get(h, CSR_SATP), sv48);
	put(h, CSR_SATP, 0);
	assert_int_equal(get(h, CSR_SATP), 0);

	/* S-mode: allowed unless TVM. */
	hart_set_priv(h, PRV_S);
	assert_true(wr(h, CSR_SATP, sv39));
	assert_int_equal(h->satp, sv39);
	h->mstatus |= MSTATUS_TVM;
	uint64_t v;
	assert_false(rd(h, CSR_SATP, &v));
	assert_false(wr(h, CSR_SATP, 0));
	assert_int_equal(h->satp, sv39);
	/* TVM does not trap M-mode. */
	hart_set_priv(h, PRV_M);
	assert_true(wr(h, CSR_SATP, 0));
	/* U-mode never. */
	h->mstatus &= ~MSTATUS_TVM;
	hart_set_priv(h, PRV_U);
	assert_false(rd(h, CSR_SATP, &v));
}

/* ---- privilege and read-only checks ---- */

static void test_privilege_checks(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;
	uint64_t v;

	/* M-mode CSRs from S and U. */
	static const uint32_t mcsrs[] = { CSR_MSTATUS, CSR_MISA,     CSR_MEDELEG, CSR_MIE,
					  CSR_MTVEC,   CSR_MSCRATCH, CSR_MEPC,	  CSR_MCAUSE,
					  CSR_MIP,     CSR_MHARTID,  CSR_MCYCLE,  CSR_MINSTRET,
					  CSR_PMPCFG0 };
	for (int p = PRV_U; p <= PRV_S; p++) {
		hart_set_priv(h, p);
		for (size_t k = 0; k < sizeof(mcsrs) / sizeof(mcsrs[0]); k++) {
			assert_false(rd(h, mcsrs[k], &v));
			assert_false(wr(h, mcsrs[k], 0));
		}
	}
	/* S CSRs from U. */
	hart_set_priv(h, PRV_U);
	assert_false(rd(h, CSR_SSCRATCH, &v));
	assert_false(rd(h, CSR_SEPC, &v));
	hart_set_priv(h, PRV_S);
	put(h, CSR_SSCRATCH, 42);
	assert_int_equal(get(h, CSR_SSCRATCH), 42);

	/* Read-only CSRs: reads work, writes are illegal even in M-mode. */
	hart_set_priv(h, PRV_M);
	assert_int_equal(get(h, CSR_MHARTID), 3);
	assert_false(wr(h, CSR_MHARTID, 0));
	assert_false(wr(h, CSR_MVENDORID, 0));
	assert_false(wr(h, CSR_CYCLE, 0));
	assert_false(wr(h, CSR_INSTRET, 0));
	assert_false(wr(h, CSR_TIME, 0));
	assert_int_equal(h->mhartid, 3);
	/* A csrrs with rs1 = x0 is a pure read: fine. */
	assert_true(rd(h, CSR_CYCLE, &v));

	/* Unknown CSRs, and RV32-only ones. */
	assert_false(rd(h, 0x8ff, &v));
	assert_false(rd(h, 0x5c0, &v));
	assert_false(rd(h, CSR_PMPCFG1, &v));
	assert_false(rd(h, 0xc80, &v)); /* cycleh */
	assert_false(rd(h, 0x200, &v)); /* hypervisor space */
	/* The PMP registers that exist hold their values. */
	put(h, CSR_PMPADDR0, ~0ULL);
	assert_int_equal(get(h, CSR_PMPADDR0), (1ULL << 54) - 1);
	put(h, CSR_PMPCFG0, 0x1f);
	assert_int_equal(get(h, CSR_PMPCFG0), 0x1f);
}

/* ---- floating-point CSRs ---- */

static void test_fp_csrs(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;
	uint64_t v;

	/* FS = off: all three are illegal. */
	h->mstatus &= ~MSTATUS_FS;
	assert_false(rd(h, CSR_FFLAGS, &v));
	assert_false(rd(h, CSR_FRM, &v));
	assert_false(rd(h, CSR_FCSR, &v));
	assert_false(wr(h, CSR_FCSR, 0));

	h->mstatus |= FS_INITIAL;
	put(h, CSR_FCSR, 0xffff);
	assert_int_equal(get(h, CSR_FCSR), 0xff);
	assert_int_equal(get(h, CSR_FFLAGS), 0x1f);
	assert_int_equal(get(h, CSR_FRM), 7);
	/* A write made the FP state dirty. */
	assert_int_equal(h->mstatus & MSTATUS_FS, FS_DIRTY);
	assert_true(get(h, CSR_MSTATUS) & MSTATUS_SD);

	put(h, CSR_FRM, 3);
	assert_int_equal(get(h, CSR_FCSR), (3 << 5) | 0x1f);
	put(h, CSR_FFLAGS, 0x05);
	assert_int_equal(get(h, CSR_FCSR), (3 << 5) | 0x05);
	assert_int_equal(get(h, CSR_FRM), 3);
	put(h, CSR_FFLAGS, 0xffe0); /* bits above the flags are ignored */
	assert_int_equal(get(h, CSR_FFLAGS), 0);
	assert_int_equal(get(h, CSR_FRM), 3);
	clear_bits(h, CSR_FCSR, 0x40);
	assert_int_equal(get(h, CSR_FRM), 1);
	set_bits(h, CSR_FFLAGS, 0x10);
	assert_int_equal(get(h, CSR_FCSR), (1 << 5) | 0x10);

	/* Unprivileged: U-mode may use them. */
	hart_set_priv(h, PRV_U);
	assert_int_equal(get(h, CSR_FCSR), (1 << 5) | 0x10);
	assert_true(wr(h, CSR_FRM, 2));
	assert_int_equal(h->frm, 2);
}

/* ---- counters ---- */

static void test_counter_enables(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;
	uint64_t v;
	const uint32_t ctr[3] = { CSR_CYCLE, CSR_TIME, CSR_INSTRET };

	h->instret = 10;
	for (int k = 0; k < 3; k++)
		assert_true(rd(h, ctr[k], &v)); /* M-mode: always */

	for (int k = 0; k < 3; k++) {
		uint64_t bit = 1ULL << k;
		put(h, CSR_MCOUNTEREN, 0);
		put(h, CSR_SCOUNTEREN, 0);
		hart_set_priv(h, PRV_S);
		assert_false(rd(h, ctr[k], &v));
		hart_set_priv(h, PRV_U);
		assert_false(rd(h, ctr[k], &v));

		/* mcounteren alone: S yes, U no. */
		hart_set_priv(h, PRV_M);
		put(h, CSR_MCOUNTEREN, bit);
		hart_set_priv(h, PRV_S);
		assert_true(rd(h, ctr[k], &v));
		hart_set_priv(h, PRV_U);
		assert_false(rd(h, ctr[k], &v));

		/* Both: U yes. The other counters stay off. */
		hart_set_priv(h, PRV_S);
		put(h, CSR_SCOUNTEREN, bit);
		hart_set_priv(h, PRV_U);
		assert_true(rd(h, ctr[k], &v));
		assert_false(rd(h, ctr[(k + 1) % 3], &v));

		/* scounteren alone: neither. */
		hart_set_priv(h, PRV_M);
		put(h, CSR_MCOUNTEREN, 0);
		hart_set_priv(h, PRV_U);
		assert_false(rd(h, ctr[k], &v));
		hart_set_priv(h, PRV_S);
		assert_false(rd(h, ctr[k], &v));
		hart_set_priv(h, PRV_M);
	}

	/* The values: instret counts retired instructions before the current one; time
	 * follows the guest clock. */
	h->instret = 101;
	assert_int_equal(get(h, CSR_INSTRET), 100);
	assert_int_equal(get(h, CSR_MINSTRET), 100);
	assert_int_equal(get(h, CSR_CYCLE), get(h, CSR_MCYCLE));
	uint64_t t0 = get(h, CSR_TIME);
	assert_true(t0 <= vm_mtime(&f->vm));
	assert_int_equal(get(h, CSR_HPMCOUNTER3), 0);
}

/* The interpreter adds a block's instruction count before running it, so a CSR
 * instruction sees h->instret including itself; the next instruction adds one more. */
static void test_minstret_mcycle_writes(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	h->instret = 50; /* the csrw is the 50th instruction */
	uint64_t cyc_before = get(h, CSR_MCYCLE);
	assert_int_equal(get(h, CSR_MINSTRET), 49);
	put(h, CSR_MINSTRET, 1000);
	/* The write wins over the csrw's own retirement: the next instruction reads 1000. */
	h->instret++;
	assert_int_equal(get(h, CSR_MINSTRET), 1000);
	assert_int_equal(get(h, CSR_INSTRET), 1000);
	/* mcycle keeps counting through the minstret write. */
	assert_int_equal(get(h, CSR_MCYCLE), cyc_before + 1);
	h->instret += 5;
	assert_int_equal(get(h, CSR_MINSTRET), 1005);
	assert_int_equal(get(h, CSR_MCYCLE), cyc_before + 6);

	/* Same for mcycle; minstret is unaffected. */
	put(h, CSR_MCYCLE, 7777);
	h->instret++;
	assert_int_equal(get(h, CSR_MCYCLE), 7777);
	assert_int_equal(get(h, CSR_CYCLE), 7777);
	assert_int_equal(get(h, CSR_MINSTRET), 1006);

	/* csrrs-style partial write. */
	set_bits(h, CSR_MINSTRET, 1ULL << 40);
	h->instret++;
	assert_int_equal(get(h, CSR_MINSTRET), (1ULL << 40) | 1006);
}

/* ---- traps ---- */

static void test_trap_delegated_to_s(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	put(h, CSR_MEDELEG, 1ULL << EXC_ECALL_U | 1ULL << EXC_LOAD_PAGE);
	put(h, CSR_STVEC, 0x80002000);
	put(h, CSR_MTVEC, 0x80001000);
	h->mcause = 0x55;

	/* From U with SIE = 1. */
	h->mstatus |= MSTATUS_SIE | MSTATUS_MIE;
	hart_set_priv(h, PRV_U);
	h->pc = 0x10000;
	hart_trap(h, EXC_ECALL_U, 0);
	assert_int_equal(h->priv, PRV_S);
	assert_int_equal(h->pc, 0x80002000);
	assert_int_equal(h->scause, EXC_ECALL_U);
	assert_int_equal(h->sepc, 0x10000);
	assert_int_equal(h->stval, 0);
	assert_false(h->mstatus & MSTATUS_SIE);
	assert_true(h->mstatus & MSTATUS_SPIE);
	assert_false(h->mstatus & MSTATUS_SPP);
	assert_true(h->mstatus & MSTATUS_MIE); /* M state untouched */
	assert_int_equal(h->mcause, 0x55);

	/* From S with SIE = 0: SPP = S, SPIE = 0. */
	h->pc = 0x80002040;
	hart_trap(h, EXC_LOAD_PAGE, 0xdead000);
	assert_int_equal(h->priv, PRV_S);
	assert_int_equal(h->scause, EXC_LOAD_PAGE);
	assert_int_equal(h->sepc, 0x80002040);
	assert_int_equal(h->stval, 0xdead000);
	assert_true(h->mstatus & MSTATUS_SPP);
	assert_false(h->mstatus & MSTATUS_SPIE);
	assert_false(h->mstatus & MSTATUS_SIE);

	/* Not delegated: goes to M even from U. */
	hart_set_priv(h, PRV_U);
	h->pc = 0x10004;
	hart_trap(h, EXC_ILLEGAL, 0x12345);
	assert_int_equal(h->priv, PRV_M);
	assert_int_equal(h->pc, 0x80001000);
	assert_int_equal(h->mcause, EXC_ILLEGAL);
	assert_int_equal(h->mepc, 0x10004);
	assert_int_equal(h->mtval, 0x12345);
	assert_int_equal(h->mstatus & MSTATUS_MPP, MPP(PRV_U));
	assert_true(h->mstatus & MSTATUS_MPIE);
	assert_false(h->mstatus & MSTATUS_MIE);
	assert_int_equal(h->scause, EXC_LOAD_PAGE); /* S state untouched */
}

static void test_trap_in_m_not_delegated(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	put(h, CSR_MEDELEG, 0xb3ff);
	put(h, CSR_MIDELEG, MIP_SSIP | MIP_STIP | MIP_SEIP);
	put(h, CSR_MTVEC, 0x80001000);
	put(h, CSR_STVEC, 0x80002000);
	h->lr_valid = true;

	/* In M-mode, delegation never applies. */
	h->pc = 0x80000100;
	hart_trap(h, EXC_LOAD_PAGE, 0x42);
	assert_int_equal(h->priv, PRV_M);
	assert_int_equal(h->pc, 0x80001000);
	assert_int_equal(h->mcause, EXC_LOAD_PAGE);
	assert_int_equal(h->mepc, 0x80000100);
	assert_int_equal(h->mtval, 0x42);
	assert_int_equal(h->mstatus & MSTATUS_MPP, MPP(PRV_M));
	assert_false(h->mstatus & MSTATUS_MPIE); /* MIE was 0 */
	assert_int_equal(h->scause, 0);
	assert_false(h->lr_valid); /* a trap drops the reservation */

	/* A delegated interrupt taken while in M (only possible via hart_trap directly)
	 * also stays in M. */
	h->mstatus |= MSTATUS_MIE;
	hart_trap(h, IRQ_FLAG | 5, 0);
	assert_int_equal(h->priv, PRV_M);
	assert_int_equal(h->mcause, IRQ_FLAG | 5);
	assert_true(h->mstatus & MSTATUS_MPIE);
	assert_false(h->mstatus & MSTATUS_MIE);

	/* From S, a non-delegated exception (ecall from S when only U's is delegated). */
	put(h, CSR_MEDELEG, 1ULL << EXC_ECALL_U);
	hart_set_priv(h, PRV_S);
	h->mstatus &= ~MSTATUS_MIE;
	h->pc = 0x80002000;
	hart_trap(h, EXC_ECALL_S, 0);
	assert_int_equal(h->priv, PRV_M);
	assert_int_equal(h->mcause, EXC_ECALL_S);
	assert_int_equal(h->mstatus & MSTATUS_MPP, MPP(PRV_S));
}

static void test_trap_vectored(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	put(h, CSR_MTVEC, 0x80001001);
	put(h, CSR_STVEC, 0x80002001);

	/* Exceptions go to the base even in vectored mode. */
	hart_trap(h, EXC_ILLEGAL, 0);
	assert_int_equal(h->pc, 0x80001000);
	/* Interrupts go to base + 4 * cause. */
	hart_trap(h, IRQ_FLAG | 7, 0);
	assert_int_equal(h->pc, 0x80001000 + 4 * 7);
	assert_int_equal(h->mcause, IRQ_FLAG | 7);
	hart_trap(h, IRQ_FLAG | 11, 0);
	assert_int_equal(h->pc, 0x80001000 + 4 * 11);

	/* Same for stvec. */
	put(h, CSR_MIDELEG, MIP_STIP);
	put(h, CSR_MEDELEG, 1ULL << EXC_BREAKPOINT);
	hart_set_priv(h, PRV_U);
	hart_trap(h, IRQ_FLAG | 5, 0);
	assert_int_equal(h->priv, PRV_S);
	assert_int_equal(h->pc, 0x80002000 + 4 * 5);
	assert_int_equal(h->scause, IRQ_FLAG | 5);
	hart_trap(h, EXC_BREAKPOINT, 0x80002000);
	assert_int_equal(h->pc, 0x80002000);

	/* Direct mode. */
	hart_set_priv(h, PRV_M);
	put(h, CSR_MTVEC, 0x80003000);
	hart_trap(h, IRQ_FLAG | 7, 0);
	assert_int_equal(h->pc, 0x80003000);
}

static void test_mret_sret(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	/* mret to S: MIE <- MPIE, MPIE <- 1, MPP <- U, MPRV cleared. */
	h->mstatus = XL64 | MPP(PRV_S) | MSTATUS_MPIE | MSTATUS_MPRV;
	h->mepc = 0x80004000;
	hart_do_mret(h);
	assert_int_equal(h->priv, PRV_S);
	assert_int_equal(h->pc, 0x80004000);
	assert_true(h->mstatus & MSTATUS_MIE);
	assert_true(h->mstatus & MSTATUS_MPIE);
	assert_int_equal(h->mstatus & MSTATUS_MPP, MPP(PRV_U));
	assert_false(h->mstatus & MSTATUS_MPRV);

	/* mret to M keeps MPRV; MPIE = 0 clears MIE. */
	hart_set_priv(h, PRV_M);
	h->mstatus = XL64 | MPP(PRV_M) | MSTATUS_MIE | MSTATUS_MPRV;
	h->mepc = 0x80004100;
	hart_do_mret(h);
	assert_int_equal(h->priv, PRV_M);
	assert_int_equal(h->pc, 0x80004100);
	assert_false(h->mstatus & MSTATUS_MIE);
	assert_true(h->mstatus & MSTATUS_MPRV);
	/* After that mret, MPP = U: the next mret goes to U. */
	hart_do_mret(h);
	assert_int_equal(h->priv, PRV_U);
	assert_false(h->mstatus & MSTATUS_MPRV);

	/* sret to U: SIE <- SPIE, SPIE <- 1, SPP <- U. */
	hart_set_priv(h, PRV_S);
	h->mstatus = XL64 | MSTATUS_SPIE | MSTATUS_MPRV;
	h->sepc = 0x10000;
	hart_do_sret(h);
	assert_int_equal(h->priv, PRV_U);
	assert_int_equal(h->pc, 0x10000);
	assert_true(h->mstatus & MSTATUS_SIE);
	assert_true(h->mstatus & MSTATUS_SPIE);
	assert_false(h->mstatus & MSTATUS_SPP);
	assert_false(h->mstatus & MSTATUS_MPRV);

	/* sret to S with SPIE = 0. */
	hart_set_priv(h, PRV_S);
	h->mstatus = XL64 | MSTATUS_SPP | MSTATUS_SIE;
	h->sepc = 0x80005000;
	hart_do_sret(h);
	assert_int_equal(h->priv, PRV_S);
	assert_false(h->mstatus & MSTATUS_SIE);
	assert_true(h->mstatus & MSTATUS_SPIE);
	assert_false(h->mstatus & MSTATUS_SPP);

	/* A trap then its return is a round trip of the enables. */
	hart_set_priv(h, PRV_M);
	put(h, CSR_MTVEC, 0x80001000);
	hart_set_priv(h, PRV_U);
	h->mstatus = XL64 | MSTATUS_MIE;
	h->pc = 0x10008;
	hart_trap(h, EXC_ECALL_U, 0);
	hart_do_mret(h);
	assert_int_equal(h->priv, PRV_U);
	assert_int_equal(h->pc, 0x10008);
	assert_true(h->mstatus & MSTATUS_MIE);
}

/* ---- interrupt selection ---- */

static void reset_to(struct hart *h, int priv, uint64_t mstatus)
{
	hart_set_priv(h, priv);
	h->mstatus = XL64 | mstatus;
	h->mcause = h->scause = 0;
	h->pc = 0x1000;
}

static void test_interrupt_priority(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;
	static const uint64_t order[] = { 11, 3, 7, 9, 1, 5 };

	put(h, CSR_MTVEC, 0x80001000);
	put(h, CSR_MIE, ~0ULL);
	hart_set_irq(h, MIP_MEIP | MIP_MSIP | MIP_MTIP | MIP_SEIP, true);
	put(h, CSR_MIP, MIP_SSIP | MIP_STIP);

	for (size_t k = 0; k < 6; k++) {
		reset_to(h, PRV_M, MSTATUS_MIE);
		assert_true(hart_check_interrupts(h));
		assert_int_equal(h->mcause, IRQ_FLAG | order[k]);
		assert_int_equal(h->mepc, 0x1000);
		assert_int_equal(h->priv, PRV_M);
		/* Lower this one: SEIP may be both a line and a software bit. */
		hart_set_irq(h, 1ULL << order[k], false);
		clear_bits(h, CSR_MIP, 1ULL << order[k]);
	}
	reset_to(h, PRV_M, MSTATUS_MIE);
	assert_false(hart_check_interrupts(h));
	assert_int_equal(h->pc, 0x1000);

	/* Pending but not enabled in mie: nothing. */
	put(h, CSR_MIE, MIP_MSIP);
	hart_set_irq(h, MIP_MTIP, true);
	assert_false(hart_check_interrupts(h));
	hart_set_irq(h, MIP_MTIP, false);
}

static void test_interrupt_masking(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	put(h, CSR_MTVEC, 0x80001000);
	put(h, CSR_STVEC, 0x80002000);
	put(h, CSR_MIE, ~0ULL);

	/* M interrupt: masked in M with MIE = 0, taken in M with MIE = 1. */
	hart_set_irq(h, MIP_MTIP, true);
	reset_to(h, PRV_M, 0);
	assert_false(hart_check_interrupts(h));
	assert_int_equal(h->pc, 0x1000);
	reset_to(h, PRV_M, MSTATUS_MIE);
	assert_true(hart_check_interrupts(h));
	assert_int_equal(h->mcause, IRQ_FLAG | 7);

	/* From S and U: taken regardless of MIE and SIE. */
	reset_to(h, PRV_S, 0);
	assert_true(hart_check_interrupts(h));
	assert_int_equal(h->priv, PRV_M);
	assert_int_equal(h->mcause, IRQ_FLAG | 7);
	assert_int_equal(h->mstatus & MSTATUS_MPP, MPP(PRV_S));
	reset_to(h, PRV_U, 0);
	assert_true(hart_check_interrupts(h));
	assert_int_equal(h->priv, PRV_M);
	hart_set_irq(h, MIP_MTIP, false);

	/* A delegated S interrupt (STIP). */
	put(h, CSR_MIDELEG, MIP_STIP);
	put(h, CSR_MIP, MIP_STIP);
	/* Never taken in M, whatever MIE/SIE say. */
	reset_to(h, PRV_M, MSTATUS_MIE | MSTATUS_SIE);
	assert_false(hart_check_interrupts(h));
	assert_int_equal(h->pc, 0x1000);
	/* In S: only with SIE. */
	reset_to(h, PRV_S, MSTATUS_MIE);
	assert_false(hart_check_interrupts(h));
	reset_to(h, PRV_S, MSTATUS_SIE);
	assert_true(hart_check_interrupts(h));
	assert_int_equal(h->priv, PRV_S);
	assert_int_equal(h->scause, IRQ_FLAG | 5);
	assert_int_equal(h->sepc, 0x1000);
	assert_int_equal(h->pc, 0x80002000);
	assert_true(h->mstatus & MSTATUS_SPP);
	assert_true(h->mstatus & MSTATUS_SPIE);
	assert_false(h->mstatus & MSTATUS_SIE);
	/* In U: always. */
	reset_to(h, PRV_U, 0);
	assert_true(hart_check_interrupts(h));
	assert_int_equal(h->priv, PRV_S);
	assert_int_equal(h->scause, IRQ_FLAG | 5);
	assert_false(h->mstatus & MSTATUS_SPP);

	/* A non-delegated S-level interrupt (SSIP) goes to M, from S even with SIE = 0. */
	hart_set_priv(h, PRV_M);
	put(h, CSR_MIP, MIP_SSIP);
	reset_to(h, PRV_S, 0);
	assert_true(hart_check_interrupts(h));
	assert_int_equal(h->priv, PRV_M);
	assert_int_equal(h->mcause, IRQ_FLAG | 1);

	/* M-level pending (masked in M) and a delegated one pending: still nothing in M; in
	 * S the M-level one wins. */
	hart_set_priv(h, PRV_M);
	put(h, CSR_MIP, MIP_STIP);
	hart_set_irq(h, MIP_MSIP, true);
	reset_to(h, PRV_M, MSTATUS_SIE);
	assert_false(hart_check_interrupts(h));
	reset_to(h, PRV_S, MSTATUS_SIE);
	assert_true(hart_check_interrupts(h));
	assert_int_equal(h->priv, PRV_M);
	assert_int_equal(h->mcause, IRQ_FLAG | 3);
	hart_set_irq(h, MIP_MSIP, false);
}

/* ---- Sstc ---- */

/* A timer device that records what the hart tells it. */
struct stimer_log {
	int calls;
	int hart;
	uint64_t cmp;
	bool enabled;
};

static void log_stimer(void *opaque, int hart, uint64_t cmp, bool enabled)
{
	struct stimer_log *l = opaque;
	l->calls++;
	l->hart = hart;
	l->cmp = cmp;
	l->enabled = enabled;
}

/* Who may reach stimecmp: M always; S only with menvcfg.STCE and mcounteren.TM; U never. */
static void test_stimecmp_access(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;
	uint64_t v;

	/* Reset: STCE off, no compare pending. menvcfg keeps FIOM and STCE only. */
	assert_int_equal(get(h, CSR_MENVCFG), 0);
	assert_int_equal(get(h, CSR_STIMECMP), UINT64_MAX);
	put(h, CSR_MENVCFG, ~0ULL);
	assert_int_equal(get(h, CSR_MENVCFG), MENVCFG_FIOM | MENVCFG_STCE);
	put(h, CSR_MENVCFG, 0);

	put(h, CSR_STIMECMP, 0x1234);
	assert_int_equal(get(h, CSR_STIMECMP), 0x1234);

	const uint64_t cases[][2] = {
		/* menvcfg, mcounteren: S may access only in the last row */
		{ 0, 0 },
		{ 0, 2 },
		{ MENVCFG_STCE, 0 },
		{ MENVCFG_STCE, 1 | 4 },
		{ MENVCFG_STCE, 2 },
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		hart_set_priv(h, PRV_M);
		put(h, CSR_MENVCFG, cases[k][0]);
		put(h, CSR_MCOUNTEREN, cases[k][1]);
		bool allowed = k == 4;
		hart_set_priv(h, PRV_S);
		assert_int_equal(rd(h, CSR_STIMECMP, &v), allowed);
		assert_int_equal(wr(h, CSR_STIMECMP, 0x5678 + k), allowed);
		hart_set_priv(h, PRV_U);
		assert_false(rd(h, CSR_STIMECMP, &v));
		/* M: always, whatever the enables. */
		hart_set_priv(h, PRV_M);
		assert_int_equal(get(h, CSR_STIMECMP), allowed ? 0x5678 + k : 0x1234);
	}
	/* menvcfg itself is M-only. */
	hart_set_priv(h, PRV_S);
	assert_false(rd(h, CSR_MENVCFG, &v));
	hart_set_priv(h, PRV_M);
}

/* With STCE on, STIP is (time >= stimecmp), told to the timer device on every change and
 * read-only to mip writes; with it off, STIP is software's bit again. */
static void test_sstc_stip(void **state)
{
	struct fix *f = *state;
	struct hart *h = f->h;

	/* No timer device: the level is computed at the write. */
	put(h, CSR_MIP, MIP_STIP); /* software's bit, STCE off */
	assert_true(get(h, CSR_MIP) & MIP_STIP);
	put(h, CSR_STIMECMP, 0);
	put(h, CSR_MIP, 0);
	assert_false(get(h, CSR_MIP) & MIP_STIP); /* compare passed, but STCE is off */
	put(h, CSR_MENVCFG, MENVCFG_STCE);
	assert_true(get(h, CSR_MIP) & MIP_STIP); /* time >= 0 */
	put(h, CSR_MIP, 0);			 /* read-only now */
	assert_true(get(h, CSR_MIP) & MIP_STIP);
	put(h, CSR_STIMECMP, vm_mtime(&f->vm) + 100000000); /* 10 s ahead */
	assert_false(get(h, CSR_MIP) & MIP_STIP);
	put(h, CSR_MIP, MIP_STIP); /* ignored: the timer's level */
	assert_false(get(h, CSR_MIP) & MIP_STIP);
	put(h, CSR_MENVCFG, 0); /* software's bit again: as before STCE (the write missed it) */
	assert_false(get(h, CSR_MIP) & MIP_STIP);
	put(h, CSR_MIP, MIP_STIP);
	assert_true(get(h, CSR_MIP) & MIP_STIP);
	put(h, CSR_MENVCFG, MENVCFG_STCE); /* and hidden by the timer's level */
	assert_false(get(h, CSR_MIP) & MIP_STIP);

	/* The Sstc STIP is a supervisor timer interrupt like any: taken in S when delegated. */
	put(h, CSR_MIDELEG, MIP_STIP);
	put(h, CSR_MIE, MIP_STIP);
	put(h, CSR_STVEC, 0x80002000);
	put(h, CSR_MCOUNTEREN, 2);
	hart_set_priv(h, PRV_S);
	h->mstatus |= MSTATUS_SIE;
	h->pc = 0x1000;
	assert_false(hart_check_interrupts(h));
	put(h, CSR_STIMECMP, vm_mtime(&f->vm)); /* S programs its own tick: due now */
	assert_true(hart_check_interrupts(h));
	assert_int_equal(h->priv, PRV_S);
	assert_int_equal(h->scause, IRQ_FLAG | 5);
	assert_int_equal(h->pc, 0x80002000);
	put(h, CSR_STIMECMP, UINT64_MAX); /* the handler moves it on: the line drops */
	assert_false(get(h, CSR_SIP) & MIP_STIP);

	/* With a timer device, each change is told to it (which then drives the line). */
	struct stimer_log log = { 0 };
	const struct vm_wfi_ops ops = { .stimer = log_stimer };
	f->vm.wfi_ops = &ops;
	f->vm.wfi_opaque = &log;
	put(h, CSR_STIMECMP, 777);
	assert_int_equal(log.calls, 1);
	assert_int_equal(log.hart, h->id);
	assert_int_equal(log.cmp, 777);
	assert_true(log.enabled);
	hart_set_priv(h, PRV_M);
	put(h, CSR_MENVCFG, MENVCFG_FIOM); /* STCE off */
	assert_int_equal(log.calls, 2);
	assert_false(log.enabled);
	put(h, CSR_MENVCFG, MENVCFG_FIOM); /* no change: nothing to tell */
	assert_int_equal(log.calls, 2);
	put(h, CSR_MENVCFG, MENVCFG_STCE);
	assert_int_equal(log.calls, 3);
	assert_true(log.enabled);
	assert_int_equal(log.cmp, 777);
	hart_reset(h, 0x80000000, 0, 0, 0); /* a reset turns it off */
	assert_int_equal(log.calls, 4);
	assert_false(log.enabled);
	assert_int_equal(log.cmp, UINT64_MAX);
	f->vm.wfi_ops = NULL;
	f->vm.wfi_opaque = NULL;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, hart_fixture_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_mstatus_warl),
		T(test_sstatus_view),
		T(test_sie_sip_masked_by_mideleg),
		T(test_medeleg_and_misa),
		T(test_trap_vectors_and_epc_masks),
		T(test_satp),
		T(test_privilege_checks),
		T(test_fp_csrs),
		T(test_counter_enables),
		T(test_minstret_mcycle_writes),
		T(test_trap_delegated_to_s),
		T(test_trap_in_m_not_delegated),
		T(test_trap_vectored),
		T(test_mret_sret),
		T(test_interrupt_priority),
		T(test_interrupt_masking),
		T(test_stimecmp_access),
		T(test_sstc_stip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
