/* Sv39/Sv48 translation with page tables built by hand in guest RAM, and the slow paths
 * of guest memory access (page-crossing, faults, MMIO, unmapped physical memory). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/bus.h"
#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "cpu/riscv/hart.h"
#include "hart_fixture.h"

#define RAM_SIZE (4ULL << 20)
#define TABLES (RAM_BASE + 0x100000) /* page tables are allocated from here up */

#define V (1ULL << 0)
#define R (1ULL << 1)
#define W (1ULL << 2)
#define X (1ULL << 3)
#define U (1ULL << 4)
#define A (1ULL << 6)
#define D (1ULL << 7)

#define SATP_SV39 (8ULL << 60)
#define SATP_SV48 (9ULL << 60)

struct fix {
	struct vm vm; /* first, for hart_fixture_new */
	struct hart *h;
	uint64_t next_table;
	uint64_t root;
	int levels;
};

static int setup(void **state)
{
	struct fix *f = hart_fixture_new(sizeof(*f), RAM_SIZE, 0, 0);
	f->h = f->vm.harts[0];
	f->next_table = TABLES;
	*state = f;
	return 0;
}

static void *ram(struct fix *f, uint64_t pa)
{
	void *p = vm_ram_ptr(&f->vm, pa, 8);
	assert_non_null(p);
	return p;
}

static uint64_t rd64(struct fix *f, uint64_t pa)
{
	uint64_t v;
	memcpy(&v, ram(f, pa), 8);
	return v;
}

static void wr64(struct fix *f, uint64_t pa, uint64_t v)
{
	memcpy(ram(f, pa), &v, 8);
}

static uint64_t alloc_table(struct fix *f)
{
	uint64_t pa = f->next_table;
	f->next_table += PAGE_SIZE;
	assert_true(f->next_table <= RAM_BASE + RAM_SIZE);
	memset(vm_ram_ptr(&f->vm, pa, PAGE_SIZE), 0, PAGE_SIZE);
	return pa;
}

/* Starts an address space of the given mode (SATP_SV39/SATP_SV48). */
static void space(struct fix *f, uint64_t mode)
{
	f->root = alloc_table(f);
	f->levels = mode == SATP_SV48 ? 4 : 3;
	f->h->satp = mode | (f->root >> PAGE_SHIFT);
}

static uint64_t vpn(uint64_t va, int level)
{
	return (va >> (PAGE_SHIFT + 9 * level)) & 0x1ff;
}

/* Physical address of the PTE for va at level, creating the tables above it. */
static uint64_t pte_addr(struct fix *f, uint64_t va, int level)
{
	uint64_t table = f->root;
	for (int l = f->levels - 1; l > level; l--) {
		uint64_t pa = table + vpn(va, l) * 8;
		uint64_t pte = rd64(f, pa);
		if (!(pte & V)) {
			uint64_t t = alloc_table(f);
			pte = ((t >> PAGE_SHIFT) << 10) | V;
			wr64(f, pa, pte);
		}
		table = ((pte >> 10) & ((1ULL << 44) - 1)) << PAGE_SHIFT;
	}
	return table + vpn(va, level) * 8;
}

/* Maps va to pa with a leaf at level (0: 4 KiB, 1: 2 MiB, 2: 1 GiB); returns the PTE's
 * physical address. */
static uint64_t map(struct fix *f, uint64_t va, uint64_t pa, uint64_t flags, int level)
{
	uint64_t a = pte_addr(f, va, level);
	wr64(f, a, ((pa >> PAGE_SHIFT) << 10) | flags);
	return a;
}

/* 0 on success (whatever success value mmu_translate uses), else the cause. */
static int xlate(struct fix *f, uint64_t va, int acc, uint64_t *pa)
{
	int rc = mmu_translate(f->h, va, acc, pa);
	return rc <= 0 ? 0 : rc;
}

static uint64_t xlate_ok(struct fix *f, uint64_t va, int acc)
{
	uint64_t pa = ~0ULL;
	assert_int_equal(xlate(f, va, acc, &pa), 0);
	return pa;
}

static void set_priv(struct fix *f, int priv)
{
	hart_set_priv(f->h, priv);
}

/* ---- translation ---- */

static void test_bare_and_m_mode_identity(void **state)
{
	struct fix *f = *state;
	uint64_t pa;

	set_priv(f, PRV_S);
	f->h->satp = 0;
	assert_int_equal(xlate(f, 0x12345678, ACC_R, &pa), 0);
	assert_int_equal(pa, 0x12345678);
	assert_int_equal(xlate(f, 0xffffffffdeadbeefULL, ACC_W, &pa), 0);
	assert_int_equal(pa, 0xffffffffdeadbeefULL);
	set_priv(f, PRV_U);
	assert_int_equal(xlate(f, 0x80001000, ACC_X, &pa), 0);
	assert_int_equal(pa, 0x80001000);

	/* M-mode ignores satp: nothing is mapped, yet every access is identity. */
	space(f, SATP_SV39);
	set_priv(f, PRV_M);
	for (int acc = ACC_R; acc <= ACC_X; acc++) {
		assert_int_equal(xlate(f, 0x0000004000000000ULL, acc, &pa), 0);
		assert_int_equal(pa, 0x0000004000000000ULL);
	}
	/* The same address from S-mode is translated (and here faults). */
	set_priv(f, PRV_S);
	assert_int_equal(xlate(f, 0x80001000, ACC_R, &pa), EXC_LOAD_PAGE);
}

static void test_sv39_4k_and_ad_bits(void **state)
{
	struct fix *f = *state;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	uint64_t data = map(f, 0x10000000, RAM_BASE + 0x20000, V | R | W, 0);
	uint64_t code = map(f, 0x10001000, RAM_BASE + 0x31000, V | R | X, 0);

	assert_int_equal(xlate_ok(f, 0x10000abc, ACC_R), RAM_BASE + 0x20abc);
	/* A read sets A, not D, in the PTE in memory. */
	assert_int_equal(rd64(f, data) & (A | D), A);
	assert_int_equal(xlate_ok(f, 0x10000ff8, ACC_W), RAM_BASE + 0x20ff8);
	assert_int_equal(rd64(f, data) & (A | D), A | D);
	/* The rest of the PTE is preserved. */
	assert_int_equal(rd64(f, data), (((RAM_BASE + 0x20000) >> 12) << 10) | V | R | W | A | D);

	/* A write as the first access sets both. */
	uint64_t d2 = map(f, 0x10002000, RAM_BASE + 0x22000, V | R | W, 0);
	assert_int_equal(xlate_ok(f, 0x10002010, ACC_W), RAM_BASE + 0x22010);
	assert_int_equal(rd64(f, d2) & (A | D), A | D);

	/* A fetch sets A only. */
	assert_int_equal(xlate_ok(f, 0x10001002, ACC_X), RAM_BASE + 0x31002);
	assert_int_equal(rd64(f, code) & (A | D), A);

	/* Neighbouring pages stay unmapped. */
	uint64_t pa;
	assert_int_equal(xlate(f, 0x10003000, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate(f, 0x0ffff000, ACC_W, &pa), EXC_STORE_PAGE);
}

static void test_sv39_2m_page(void **state)
{
	struct fix *f = *state;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	uint64_t pte = map(f, 0x40200000, RAM_BASE + 0x200000, V | R | W | A | D, 1);

	assert_int_equal(xlate_ok(f, 0x40200000, ACC_R), RAM_BASE + 0x200000);
	assert_int_equal(xlate_ok(f, 0x402abcde, ACC_R), RAM_BASE + 0x2abcde);
	assert_int_equal(xlate_ok(f, 0x403ffff8, ACC_W), RAM_BASE + 0x3ffff8);
	uint64_t pa;
	assert_int_equal(xlate(f, 0x40400000, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(rd64(f, pte) & (A | D), A | D);
}

static void test_sv39_1g_page(void **state)
{
	struct fix *f = *state;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	/* A root leaf: va 1 GiB -> pa 2 GiB (RAM_BASE is 1 GiB aligned). */
	uint64_t pte = map(f, 0x40000000, RAM_BASE, V | R | X, 2);
	assert_int_equal(pte, f->root + 8);

	assert_int_equal(xlate_ok(f, 0x40000000, ACC_R), RAM_BASE);
	assert_int_equal(xlate_ok(f, 0x7fedcba8, ACC_X), RAM_BASE + 0x3fedcba8);
	assert_int_equal(rd64(f, pte) & (A | D), A);
	uint64_t pa;
	assert_int_equal(xlate(f, 0x40000000, ACC_W, &pa), EXC_STORE_PAGE);
	assert_int_equal(xlate(f, 0x80000000, ACC_R, &pa), EXC_LOAD_PAGE);
}

static void test_sv39_canonical(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);

	/* The top of the address space: root index 256 and up, sign-extended. */
	map(f, 0xffffffc000001000ULL, RAM_BASE + 0x5000, V | R | W | A | D, 0);
	assert_int_equal(xlate_ok(f, 0xffffffc000001234ULL, ACC_R), RAM_BASE + 0x5234);

	/* Same low 39 bits, but bits 63..39 are not copies of bit 38: page faults even
	 * though the walk would find the mapping above. */
	for (int acc = ACC_R; acc <= ACC_X; acc++) {
		static const int cause[3] = { EXC_LOAD_PAGE, EXC_STORE_PAGE, EXC_INSN_PAGE };
		assert_int_equal(xlate(f, 0x0000004000001234ULL, acc, &pa), cause[acc]);
		assert_int_equal(xlate(f, 0x7fffffc000001234ULL, acc, &pa), cause[acc]);
		assert_int_equal(xlate(f, 0xfffffe8000001234ULL, acc, &pa), cause[acc]);
	}
	/* Bit 39 set alone is not canonical either. */
	map(f, 0x0000000000001000ULL, RAM_BASE + 0x6000, V | R | A, 0);
	assert_int_equal(xlate_ok(f, 0x1000, ACC_R), RAM_BASE + 0x6000);
	assert_int_equal(xlate(f, 0x0000008000001000ULL, ACC_R, &pa), EXC_LOAD_PAGE);
}

static void test_sv48(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV48);
	set_priv(f, PRV_S);

	map(f, 0x00007f0012345000ULL, RAM_BASE + 0x7000, V | R | W, 0);
	assert_int_equal(xlate_ok(f, 0x00007f0012345678ULL, ACC_W), RAM_BASE + 0x7678);
	/* Bit 38 set: not canonical for Sv39 but fine for Sv48. */
	map(f, 0x0000004000000000ULL, RAM_BASE + 0x8000, V | R | A, 0);
	assert_int_equal(xlate_ok(f, 0x0000004000000010ULL, ACC_R), RAM_BASE + 0x8010);
	/* The upper half. */
	map(f, 0xffff800000000000ULL, RAM_BASE + 0x9000, V | R | A, 0);
	assert_int_equal(xlate_ok(f, 0xffff800000000ff0ULL, ACC_R), RAM_BASE + 0x9ff0);
	/* Bits 63..48 must copy bit 47. */
	assert_int_equal(xlate(f, 0x0000800000000000ULL, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate(f, 0x7fff800000000000ULL, ACC_X, &pa), EXC_INSN_PAGE);
	/* 2 MiB and 1 GiB leaves at levels 1 and 2. */
	map(f, 0x0000123440000000ULL, RAM_BASE, V | R | A, 2);
	assert_int_equal(xlate_ok(f, 0x0000123440123458ULL, ACC_R), RAM_BASE + 0x123458);
	map(f, 0x0000100000200000ULL, RAM_BASE + 0x200000, V | R | A, 1);
	assert_int_equal(xlate_ok(f, 0x0000100000300008ULL, ACC_R), RAM_BASE + 0x300008);
	/* A 512 GiB leaf at the root. */
	map(f, 0x0000200000000000ULL, 0, V | R | A, 3);
	assert_int_equal(xlate_ok(f, 0x0000200123456789ULL, ACC_R), 0x123456789ULL);
}

static void test_u_page_from_s(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	uint64_t pte = map(f, 0x10000000, RAM_BASE + 0x20000, V | R | W | X | U, 0);

	assert_int_equal(xlate(f, 0x10000000, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate(f, 0x10000000, ACC_W, &pa), EXC_STORE_PAGE);
	assert_int_equal(xlate(f, 0x10000000, ACC_X, &pa), EXC_INSN_PAGE);
	/* Faulting accesses leave A and D alone. */
	assert_int_equal(rd64(f, pte) & (A | D), 0);

	f->h->mstatus |= MSTATUS_SUM;
	assert_int_equal(xlate_ok(f, 0x10000010, ACC_R), RAM_BASE + 0x20010);
	assert_int_equal(xlate_ok(f, 0x10000010, ACC_W), RAM_BASE + 0x20010);
	/* SUM never allows S-mode to execute user code. */
	assert_int_equal(xlate(f, 0x10000010, ACC_X, &pa), EXC_INSN_PAGE);

	/* U-mode itself may use it all. */
	set_priv(f, PRV_U);
	f->h->mstatus &= ~MSTATUS_SUM;
	assert_int_equal(xlate_ok(f, 0x10000020, ACC_X), RAM_BASE + 0x20020);
}

static void test_s_page_from_u(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	map(f, 0x10000000, RAM_BASE + 0x20000, V | R | W | X | A | D, 0);
	set_priv(f, PRV_U);
	f->h->mstatus |= MSTATUS_SUM | MSTATUS_MXR; /* neither matters to U-mode */

	assert_int_equal(xlate(f, 0x10000000, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate(f, 0x10000000, ACC_W, &pa), EXC_STORE_PAGE);
	assert_int_equal(xlate(f, 0x10000000, ACC_X, &pa), EXC_INSN_PAGE);
	set_priv(f, PRV_S);
	assert_int_equal(xlate_ok(f, 0x10000000, ACC_X), RAM_BASE + 0x20000);
}

static void test_permissions(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	uint64_t ro = map(f, 0x10000000, RAM_BASE + 0x20000, V | R, 0);
	map(f, 0x10001000, RAM_BASE + 0x21000, V | R | W | A | D, 0);
	map(f, 0x10002000, RAM_BASE + 0x22000, V | X | A, 0);

	/* Read-only: reads work, writes fault and do not set D (nor A). */
	assert_int_equal(xlate(f, 0x10000000, ACC_W, &pa), EXC_STORE_PAGE);
	assert_int_equal(rd64(f, ro) & (A | D), 0);
	xlate_ok(f, 0x10000000, ACC_R);
	assert_int_equal(xlate(f, 0x10000000, ACC_X, &pa), EXC_INSN_PAGE);

	/* Not executable. */
	assert_int_equal(xlate(f, 0x10001000, ACC_X, &pa), EXC_INSN_PAGE);

	/* Execute-only: no reads without MXR, reads with it; never writes. */
	assert_int_equal(xlate(f, 0x10002000, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate_ok(f, 0x10002000, ACC_X), RAM_BASE + 0x22000);
	f->h->mstatus |= MSTATUS_MXR;
	assert_int_equal(xlate_ok(f, 0x10002008, ACC_R), RAM_BASE + 0x22008);
	assert_int_equal(xlate(f, 0x10002000, ACC_W, &pa), EXC_STORE_PAGE);
	/* MXR does not make a non-X page readable... it is readable already; it does not
	 * make a read-only page writable either. */
	assert_int_equal(xlate(f, 0x10000000, ACC_W, &pa), EXC_STORE_PAGE);
}

static void test_w_without_r(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	map(f, 0x10000000, RAM_BASE + 0x20000, V | W | A | D, 0);
	map(f, 0x10001000, RAM_BASE + 0x21000, V | W | X | A | D, 0);

	assert_int_equal(xlate(f, 0x10000000, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate(f, 0x10000000, ACC_W, &pa), EXC_STORE_PAGE);
	assert_int_equal(xlate(f, 0x10000000, ACC_X, &pa), EXC_INSN_PAGE);
	assert_int_equal(xlate(f, 0x10001000, ACC_W, &pa), EXC_STORE_PAGE);
	assert_int_equal(xlate(f, 0x10001000, ACC_X, &pa), EXC_INSN_PAGE);
	f->h->mstatus |= MSTATUS_MXR;
	assert_int_equal(xlate(f, 0x10001000, ACC_R, &pa), EXC_LOAD_PAGE);
}

static void test_misaligned_superpage(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	/* A 2 MiB leaf whose PPN is only 4 KiB aligned. */
	uint64_t pte = map(f, 0x40200000, RAM_BASE + 0x201000, V | R | W | X, 1);
	assert_int_equal(xlate(f, 0x40200000, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate(f, 0x40200000, ACC_W, &pa), EXC_STORE_PAGE);
	assert_int_equal(xlate(f, 0x40200000, ACC_X, &pa), EXC_INSN_PAGE);
	assert_int_equal(rd64(f, pte) & (A | D), 0);
	/* A 1 GiB leaf that is only 2 MiB aligned. */
	map(f, 0x80000000, RAM_BASE + 0x200000, V | R, 2);
	assert_int_equal(xlate(f, 0x80000000, ACC_R, &pa), EXC_LOAD_PAGE);
}

static void test_invalid_ptes(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);

	/* Nothing at the root. */
	assert_int_equal(xlate(f, 0x10000000, ACC_R, &pa), EXC_LOAD_PAGE);
	/* A leaf with V clear. */
	map(f, 0x10000000, RAM_BASE + 0x20000, R | W | X | A | D, 0);
	assert_int_equal(xlate(f, 0x10000000, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate(f, 0x10000000, ACC_W, &pa), EXC_STORE_PAGE);
	assert_int_equal(xlate(f, 0x10000000, ACC_X, &pa), EXC_INSN_PAGE);
	/* A pointer PTE (R=W=X=0) at the last level. */
	map(f, 0x10001000, RAM_BASE + 0x21000, V, 0);
	assert_int_equal(xlate(f, 0x10001000, ACC_R, &pa), EXC_LOAD_PAGE);
	/* Reserved high bits (N, PBMT: not implemented). */
	map(f, 0x10002000, RAM_BASE + 0x22000, V | R | A | (1ULL << 63), 0);
	assert_int_equal(xlate(f, 0x10002000, ACC_R, &pa), EXC_LOAD_PAGE);
	map(f, 0x10003000, RAM_BASE + 0x23000, V | R | A | (1ULL << 61), 0);
	assert_int_equal(xlate(f, 0x10003000, ACC_R, &pa), EXC_LOAD_PAGE);
	/* The same PTE without them works. */
	map(f, 0x10003000, RAM_BASE + 0x23000, V | R | A, 0);
	assert_int_equal(xlate_ok(f, 0x10003000, ACC_R), RAM_BASE + 0x23000);
}

static void test_pte_outside_ram(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	set_priv(f, PRV_S);

	/* A root entry pointing at a next-level table outside RAM: access faults. */
	wr64(f, f->root + vpn(0x10000000, 2) * 8, ((0x1000ULL >> PAGE_SHIFT) << 10) | V);
	assert_int_equal(xlate(f, 0x10000000, ACC_R, &pa), EXC_LOAD_ACCESS);
	assert_int_equal(xlate(f, 0x10000000, ACC_W, &pa), EXC_STORE_ACCESS);
	assert_int_equal(xlate(f, 0x10000000, ACC_X, &pa), EXC_INSN_ACCESS);
	/* Just past the end of RAM. */
	wr64(f, f->root + vpn(0x10000000, 2) * 8,
	     (((RAM_BASE + RAM_SIZE) >> PAGE_SHIFT) << 10) | V);
	assert_int_equal(xlate(f, 0x10000000, ACC_R, &pa), EXC_LOAD_ACCESS);
	/* The root itself outside RAM. */
	f->h->satp = SATP_SV39 | (0x2000 >> PAGE_SHIFT);
	assert_int_equal(xlate(f, 0x10000000, ACC_X, &pa), EXC_INSN_ACCESS);

	/* A leaf pointing outside RAM translates: the access itself is what faults. */
	space(f, SATP_SV39);
	map(f, 0x10000000, 0x1000, V | R | W | A | D, 0);
	assert_int_equal(xlate_ok(f, 0x10000010, ACC_R), 0x1010);
}

static void test_mprv(void **state)
{
	struct fix *f = *state;
	uint64_t pa;
	space(f, SATP_SV39);
	map(f, 0x10000000, RAM_BASE + 0x20000, V | R | W | A | D, 0);
	set_priv(f, PRV_M);

	/* MPRV = 0: identity. */
	f->h->mstatus = (f->h->mstatus & ~MSTATUS_MPP) | (1ULL << MSTATUS_MPP_SHIFT);
	assert_int_equal(xlate_ok(f, 0x10000000, ACC_R), 0x10000000);

	/* MPRV = 1, MPP = S: loads and stores are translated as S, fetches are not. */
	f->h->mstatus |= MSTATUS_MPRV;
	assert_int_equal(xlate_ok(f, 0x10000040, ACC_R), RAM_BASE + 0x20040);
	assert_int_equal(xlate_ok(f, 0x10000040, ACC_W), RAM_BASE + 0x20040);
	assert_int_equal(xlate_ok(f, 0x10000040, ACC_X), 0x10000040);
	assert_int_equal(xlate(f, 0x10001000, ACC_R, &pa), EXC_LOAD_PAGE);

	/* MPP = U: the S page is not accessible. */
	f->h->mstatus &= ~MSTATUS_MPP;
	assert_int_equal(xlate(f, 0x10000040, ACC_R, &pa), EXC_LOAD_PAGE);
	assert_int_equal(xlate(f, 0x10000040, ACC_W, &pa), EXC_STORE_PAGE);

	/* MPP = M: identity again. */
	f->h->mstatus |= MSTATUS_MPP;
	assert_int_equal(xlate_ok(f, 0x10000040, ACC_R), 0x10000040);

	/* MPRV only applies in M-mode. */
	f->h->mstatus = (f->h->mstatus & ~MSTATUS_MPP) | MSTATUS_MPRV;
	set_priv(f, PRV_S);
	assert_int_equal(xlate_ok(f, 0x10000040, ACC_R), RAM_BASE + 0x20040);
}

/* hart.h documents: "on success fills *pa and returns 0, else returns the exception
 * cause". */
static void test_translate_success_value_matches_header(void **state)
{
	struct fix *f = *state;
	uint64_t pa = 0;
	set_priv(f, PRV_M);
	assert_int_equal(mmu_translate(f->h, RAM_BASE, ACC_R, &pa), 0);
	assert_int_equal(pa, RAM_BASE);
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	map(f, 0x10000000, RAM_BASE + 0x20000, V | R | W | A | D, 0);
	assert_int_equal(mmu_translate(f->h, 0x10000000, ACC_R, &pa), 0);
	assert_int_equal(pa, RAM_BASE + 0x20000);
}

/* ---- slow paths ---- */

#define P1 (RAM_BASE + 0x20000)
#define P2 (RAM_BASE + 0x35000) /* not adjacent to P1 */

static void slow_space(struct fix *f)
{
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	map(f, 0x10000000, P1, V | R | W | A | D, 0);
}

static void test_slow_cross_page_mapped(void **state)
{
	struct fix *f = *state;
	slow_space(f);
	map(f, 0x10001000, P2, V | R | W | A | D, 0);
	uint8_t *p1 = vm_ram_ptr(&f->vm, P1, PAGE_SIZE);
	uint8_t *p2 = vm_ram_ptr(&f->vm, P2, PAGE_SIZE);
	static const uint8_t bytes[8] = { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 };
	memcpy(p1 + 0xffd, bytes, 3);
	memcpy(p2, bytes + 3, 5);

	uint64_t v = 0;
	assert_true(mem_load_slow(f->h, 0x10000ffd, 8, &v));
	assert_int_equal(v, 0x8877665544332211ULL);
	assert_true(mem_load_slow(f->h, 0x10000fff, 2, &v));
	assert_int_equal(v, 0x4433);
	assert_true(mem_load_slow(f->h, 0x10000ffe, 4, &v));
	assert_int_equal(v, 0x55443322);

	assert_true(mem_store_slow(f->h, 0x10000ffa, 8, 0x0102030405060708ULL));
	static const uint8_t want1[6] = { 0x08, 0x07, 0x06, 0x05, 0x04, 0x03 };
	static const uint8_t want2[2] = { 0x02, 0x01 };
	assert_memory_equal(p1 + 0xffa, want1, 6);
	assert_memory_equal(p2, want2, 2);
	/* Nothing else on the second page moved, and the bytes after it are intact. */
	assert_int_equal(p2[2], 0x66);
	/* Physically, the page after P1 is untouched. */
	assert_int_equal(*(uint8_t *)vm_ram_ptr(&f->vm, P1 + PAGE_SIZE, 1), 0);
}

static void test_slow_misaligned_within_page(void **state)
{
	struct fix *f = *state;
	slow_space(f);
	uint8_t *p1 = vm_ram_ptr(&f->vm, P1, PAGE_SIZE);
	uint64_t v;

	assert_true(mem_store_slow(f->h, 0x10000103, 8, 0xa1b2c3d4e5f60718ULL));
	static const uint8_t want[8] = { 0x18, 0x07, 0xf6, 0xe5, 0xd4, 0xc3, 0xb2, 0xa1 };
	assert_memory_equal(p1 + 0x103, want, 8);
	assert_int_equal(p1[0x102], 0);
	assert_int_equal(p1[0x10b], 0);
	assert_true(mem_load_slow(f->h, 0x10000105, 4, &v));
	assert_int_equal(v, 0xc3d4e5f6); /* zero-extended: the caller sign-extends */
	assert_true(mem_load_slow(f->h, 0x10000101, 2, &v));
	assert_int_equal(v, 0x0000);
	assert_true(mem_store_slow(f->h, 0x10000ffe, 2, 0xbeef));
	assert_true(mem_load_slow(f->h, 0x10000ffe, 2, &v));
	assert_int_equal(v, 0xbeef);
}

static void test_slow_cross_page_load_fault(void **state)
{
	struct fix *f = *state;
	slow_space(f);
	uint64_t v = 0x5a5a;

	/* Second page unmapped: the fault is on its first byte. */
	assert_false(mem_load_slow(f->h, 0x10000ffc, 8, &v));
	assert_int_equal(f->h->exc_cause, EXC_LOAD_PAGE);
	assert_int_equal(f->h->exc_tval, 0x10001000);
	assert_int_equal(v, 0x5a5a); /* the destination is not written */

	/* First page unmapped: the fault is at the access address. */
	assert_false(mem_load_slow(f->h, 0x0ffffffe, 4, &v));
	assert_int_equal(f->h->exc_cause, EXC_LOAD_PAGE);
	assert_int_equal(f->h->exc_tval, 0x0ffffffe);
}

static void test_slow_cross_page_store_fault_leaves_memory(void **state)
{
	struct fix *f = *state;
	slow_space(f);
	uint8_t *p1 = vm_ram_ptr(&f->vm, P1, PAGE_SIZE);
	memset(p1 + 0xff0, 0xcc, 16);

	/* Second page unmapped. */
	assert_false(mem_store_slow(f->h, 0x10000ffc, 8, 0x1122334455667788ULL));
	assert_int_equal(f->h->exc_cause, EXC_STORE_PAGE);
	for (int k = 0xff0; k < 0x1000; k++)
		assert_int_equal(p1[k], 0xcc);

	/* Second page read-only. */
	map(f, 0x10001000, P2, V | R | A, 0);
	uint8_t *p2 = vm_ram_ptr(&f->vm, P2, PAGE_SIZE);
	memset(p2, 0xdd, 16);
	assert_false(mem_store_slow(f->h, 0x10000ffe, 4, 0x11223344));
	assert_int_equal(f->h->exc_cause, EXC_STORE_PAGE);
	for (int k = 0xff0; k < 0x1000; k++)
		assert_int_equal(p1[k], 0xcc);
	for (int k = 0; k < 16; k++)
		assert_int_equal(p2[k], 0xdd);

	/* First page unmapped, second mapped: the second is untouched. */
	map(f, 0x10001000, P2, V | R | W | A | D, 0);
	assert_false(mem_store_slow(f->h, 0x0ffffffe, 4, 0x11223344));
	assert_int_equal(f->h->exc_cause, EXC_STORE_PAGE);
	assert_int_equal(f->h->exc_tval, 0x0ffffffe);
	for (int k = 0; k < 16; k++)
		assert_int_equal(p2[k], 0xdd);
}

/* The store's tval should name the same address the load path names (and Spike/QEMU
 * report): the first byte of the page that faulted. */
static void test_slow_cross_page_store_fault_tval(void **state)
{
	struct fix *f = *state;
	slow_space(f);
	assert_false(mem_store_slow(f->h, 0x10000ffc, 8, 0x1122334455667788ULL));
	assert_int_equal(f->h->exc_cause, EXC_STORE_PAGE);
	assert_int_equal(f->h->exc_tval, 0x10001000);
}

static void test_slow_unmapped_physical(void **state)
{
	struct fix *f = *state;
	uint64_t v = 0;
	set_priv(f, PRV_M);

	assert_false(mem_load_slow(f->h, 0x1000, 4, &v));
	assert_int_equal(f->h->exc_cause, EXC_LOAD_ACCESS);
	assert_int_equal(f->h->exc_tval, 0x1000);
	assert_false(mem_store_slow(f->h, 0x1008, 8, 1));
	assert_int_equal(f->h->exc_cause, EXC_STORE_ACCESS);
	assert_int_equal(f->h->exc_tval, 0x1008);

	/* Just past the end of RAM, and an access that runs off its end. */
	assert_false(mem_load_slow(f->h, RAM_BASE + RAM_SIZE, 1, &v));
	assert_int_equal(f->h->exc_cause, EXC_LOAD_ACCESS);
	assert_false(mem_load_slow(f->h, RAM_BASE + RAM_SIZE - 4, 8, &v));
	assert_int_equal(f->h->exc_cause, EXC_LOAD_ACCESS);
	assert_int_equal(f->h->exc_tval, RAM_BASE + RAM_SIZE);
	uint8_t *last = vm_ram_ptr(&f->vm, RAM_BASE + RAM_SIZE - 4, 4);
	assert_false(mem_store_slow(f->h, RAM_BASE + RAM_SIZE - 4, 8, ~0ULL));
	assert_int_equal(f->h->exc_cause, EXC_STORE_ACCESS);
	for (int k = 0; k < 4; k++)
		assert_int_equal(last[k], 0);

	/* Translated to a physical address outside RAM: access fault, not page fault. */
	space(f, SATP_SV39);
	set_priv(f, PRV_S);
	map(f, 0x10000000, 0x1000, V | R | W | A | D, 0);
	assert_false(mem_load_slow(f->h, 0x10000010, 8, &v));
	assert_int_equal(f->h->exc_cause, EXC_LOAD_ACCESS);
	assert_int_equal(f->h->exc_tval, 0x10000010);
	assert_false(mem_store_slow(f->h, 0x10000010, 2, 0));
	assert_int_equal(f->h->exc_cause, EXC_STORE_ACCESS);
	assert_int_equal(f->h->exc_tval, 0x10000010);
}

struct fake_dev {
	uint64_t last_off, last_val;
	unsigned last_size;
	int reads, writes;
};

static uint64_t fake_read(void *opaque, uint64_t off, unsigned size)
{
	struct fake_dev *d = opaque;
	d->reads++;
	d->last_off = off;
	d->last_size = size;
	return 0xabcd0000 | off;
}

static void fake_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct fake_dev *d = opaque;
	d->writes++;
	d->last_off = off;
	d->last_val = val;
	d->last_size = size;
}

static const struct mmio_ops fake_ops = { .read = fake_read, .write = fake_write };

static void test_slow_mmio(void **state)
{
	struct fix *f = *state;
	struct fake_dev dev = { 0 };
	struct mmio_region r = {
		.base = 0x10000000,
		.size = 0x100,
		.ops = &fake_ops,
		.opaque = &dev,
		.name = "fake",
	};
	assert_int_equal(bus_register(&f->vm.bus, &r), 0);
	set_priv(f, PRV_M);
	uint64_t v = 0;

	assert_true(mem_load_slow(f->h, 0x10000010, 4, &v));
	assert_int_equal(v, 0xabcd0010);
	assert_int_equal(dev.last_off, 0x10);
	assert_int_equal(dev.last_size, 4);
	assert_true(mem_store_slow(f->h, 0x10000008, 8, 0x1234));
	assert_int_equal(dev.writes, 1);
	assert_int_equal(dev.last_off, 8);
	assert_int_equal(dev.last_val, 0x1234);
	assert_int_equal(dev.last_size, 8);
	/* Running off the end of the region: access fault, the device is not called. */
	int reads = dev.reads;
	assert_false(mem_load_slow(f->h, 0x100000fc, 8, &v));
	assert_int_equal(f->h->exc_cause, EXC_LOAD_ACCESS);
	assert_int_equal(dev.reads, reads);
	assert_false(mem_store_slow(f->h, 0x10000100, 1, 0));
	assert_int_equal(f->h->exc_cause, EXC_STORE_ACCESS);
	assert_int_equal(dev.writes, 1);
}

static void test_atomic_ptr_and_fetch_page(void **state)
{
	struct fix *f = *state;
	slow_space(f);
	map(f, 0x10001000, P2, V | R | X | A, 0);

	uint8_t *p1 = vm_ram_ptr(&f->vm, P1, PAGE_SIZE);
	assert_ptr_equal(mem_atomic_ptr(f->h, 0x10000008, 8, ACC_W), p1 + 8);
	assert_ptr_equal(mem_atomic_ptr(f->h, 0x10000004, 4, ACC_R), p1 + 4);
	assert_null(mem_atomic_ptr(f->h, 0x10000004, 8, ACC_W));
	assert_int_equal(f->h->exc_cause, EXC_STORE_MISALIGNED);
	assert_int_equal(f->h->exc_tval, 0x10000004);
	assert_null(mem_atomic_ptr(f->h, 0x10000002, 4, ACC_R));
	assert_int_equal(f->h->exc_cause, EXC_LOAD_MISALIGNED);
	assert_null(mem_atomic_ptr(f->h, 0x10001000, 4, ACC_W)); /* read-only page */
	assert_int_equal(f->h->exc_cause, EXC_STORE_PAGE);

	uint64_t pa = 0;
	uint8_t *page = mem_fetch_page(f->h, 0x10001ffe, &pa);
	assert_ptr_equal(page, vm_ram_ptr(&f->vm, P2, PAGE_SIZE));
	assert_int_equal(pa, P2 + 0xffe);
	assert_null(mem_fetch_page(f->h, 0x10000000, &pa)); /* not executable */
	assert_int_equal(f->h->exc_cause, EXC_INSN_PAGE);
	assert_int_equal(f->h->exc_tval, 0x10000000);

	/* Outside RAM. */
	set_priv(f, PRV_M);
	assert_null(mem_fetch_page(f->h, 0x1000, &pa));
	assert_int_equal(f->h->exc_cause, EXC_INSN_ACCESS);
	assert_null(mem_atomic_ptr(f->h, 0x1000, 8, ACC_W));
	assert_int_equal(f->h->exc_cause, EXC_STORE_ACCESS);
}

/* The access log (post-copy's pages to send first): every page a TLB refill maps is marked,
 * by physical page, whatever the access; pages never touched are not; starting the log
 * flushes the TLBs so that pages already mapped count once touched again. */
static void test_access_log(void **state)
{
	struct fix *f = *state;
	uint64_t v = 0;
	slow_space(f);
	map(f, 0x10001000, P2, V | R | W | A | D, 0);
	assert_true(mem_load_slow(f->h, 0x10000008, 8, &v)); /* P1 in the TLB before the log */

	assert_int_equal(vm_access_log_start(&f->vm), 0);
	assert_true(mem_load_slow(f->h, 0x10000010, 8, &v));
	assert_true(mem_store_slow(f->h, 0x10001008, 8, 7));
	uint64_t *log = vm_access_log_stop(&f->vm);
	assert_non_null(log);
	assert_null(vm_access_log_stop(&f->vm));
	uint64_t p1 = (P1 - RAM_BASE) / PAGE_SIZE, p2 = (P2 - RAM_BASE) / PAGE_SIZE;
	uint64_t marked = 0;
	for (uint64_t i = 0; i < RAM_SIZE / PAGE_SIZE; i++)
		if (log[i / 64] >> (i % 64) & 1) {
			marked++;
			assert_true(i == p1 || i == p2);
		}
	assert_int_equal(marked, 2);
	free(log);
	/* Off again: refills mark nothing, and nothing breaks. */
	assert_true(mem_load_slow(f->h, 0x10001010, 8, &v));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, hart_fixture_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_bare_and_m_mode_identity),
		T(test_sv39_4k_and_ad_bits),
		T(test_sv39_2m_page),
		T(test_sv39_1g_page),
		T(test_sv39_canonical),
		T(test_sv48),
		T(test_u_page_from_s),
		T(test_s_page_from_u),
		T(test_permissions),
		T(test_w_without_r),
		T(test_misaligned_superpage),
		T(test_invalid_ptes),
		T(test_pte_outside_ram),
		T(test_mprv),
		T(test_translate_success_value_matches_header),
		T(test_slow_cross_page_mapped),
		T(test_slow_misaligned_within_page),
		T(test_slow_cross_page_load_fault),
		T(test_slow_cross_page_store_fault_leaves_memory),
		T(test_slow_cross_page_store_fault_tval),
		T(test_slow_unmapped_physical),
		T(test_slow_mmio),
		T(test_atomic_ptr_and_fetch_page),
		T(test_access_log),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
