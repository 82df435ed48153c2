/* Small guest programs run through the interpreter (hart_run) until they write the HTIF
 * tohost word. The programs were assembled with riscv64-unknown-elf-as (and linked at the
 * address in their "at" comment) while writing this test; their words are embedded below,
 * compressed instructions as 16-bit entries, each commented with the low 16 bits of its
 * address and its disassembly; the PROG_LABEL constants are the programs' symbols. Each
 * program ends with PASS: t6 = TOHOST; t5 = 1; sd t5, 0(t6); j . */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "cpu/riscv/hart.h"
#include "hart_fixture.h"
#include "machine/riscv-virt/htif.h"
#include "xregs.h"

#define RAM_SIZE (4ULL << 20)
#define TOHOST (RAM_BASE + 0x3ff000)
#define DATA (RAM_BASE + 0x10000)
#define RES (RAM_BASE + 0x20000)
#define TIMEOUT_S 5

struct fix {
	struct vm vm; /* first, for hart_fixture_new */
	struct hart *h;
	uint64_t next_table;
	uint64_t root;
};

static int setup(void **state)
{
	struct fix *f = hart_fixture_new(sizeof(*f), RAM_SIZE, 0, TOHOST);
	f->h = f->vm.harts[0];
	f->next_table = RAM_BASE + 0x100000;
	*state = f;
	return 0;
}

static uint8_t *ram(struct fix *f, uint64_t pa, uint64_t len)
{
	uint8_t *p = vm_ram_ptr(&f->vm, pa, len);
	assert_non_null(p);
	return p;
}

static uint64_t rd64(struct fix *f, uint64_t pa)
{
	uint64_t v;
	memcpy(&v, ram(f, pa, 8), 8);
	return v;
}

static uint32_t rd32(struct fix *f, uint64_t pa)
{
	uint32_t v;
	memcpy(&v, ram(f, pa, 4), 4);
	return v;
}

static void wr64(struct fix *f, uint64_t pa, uint64_t v)
{
	memcpy(ram(f, pa, 8), &v, 8);
}

static void wr32(struct fix *f, uint64_t pa, uint32_t v)
{
	memcpy(ram(f, pa, 4), &v, 4);
}

/* Writes instruction words at physical address pa: entries whose low bits are not 11
 * are 16-bit instructions. Returns the address after the last one. */
static uint64_t load(struct fix *f, uint64_t pa, const uint32_t *w, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		unsigned len = (w[k] & 3) == 3 ? 4 : 2;
		memcpy(ram(f, pa, len), &w[k], len);
		pa += len;
	}
	return pa;
}

#define LOAD(f, pa, arr) load((f), (pa), (arr), sizeof(arr) / sizeof((arr)[0]))

static void *hart_thread(void *arg)
{
	hart_run(arg);
	return NULL;
}

/* Runs the hart until the program exits (or TIMEOUT_S pass); returns the exit reason.
 * With irq != 0, raises that line once the hart has reached wait_pc (polled) and then
 * delay_ms more have passed. */
static int run_irq(struct fix *f, uint64_t irq, uint64_t wait_pc, unsigned delay_ms)
{
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, hart_thread, f->h), 0);
	if (irq) {
		for (int k = 0; k < 2000; k++) {
			if (__atomic_load_n(&f->h->pc, __ATOMIC_RELAXED) == wait_pc)
				break;
			usleep(1000);
		}
		usleep(delay_ms * 1000);
		hart_set_irq(f->h, irq, true);
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += TIMEOUT_S;
	pthread_mutex_lock(&f->vm.exit_lock);
	while (!atomic_load(&f->vm.exit_reason)) {
		if (pthread_cond_timedwait(&f->vm.exit_cond, &f->vm.exit_lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&f->vm.exit_lock);
	if (!atomic_load(&f->vm.exit_reason))
		vm_request_exit(&f->vm, VM_EXIT_TIMEOUT, 0);
	pthread_join(t, NULL);
	return atomic_load(&f->vm.exit_reason);
}

static void run_pass(struct fix *f)
{
	int r = run_irq(f, 0, 0, 0);
	if (r != VM_EXIT_PASS)
		print_error("exit reason %d (code %#llx), pc %#llx, mcause %#llx, mepc %#llx\n", r,
			    (unsigned long long)f->vm.exit_code, (unsigned long long)f->h->pc,
			    (unsigned long long)f->h->mcause, (unsigned long long)f->h->mepc);
	assert_int_equal(r, VM_EXIT_PASS);
}

#define X(r) (f->h->x[(r)])

/* The PASS sequence, for programs built at run time. */
static const uint32_t pass_tail[] = {
	0x00080fb7, /* lui t6, 0x80 */
	0x3fff8f9b, /* addiw t6, t6, 1023 */
	0x00cf9f93, /* slli t6, t6, 12 */
	0x00100f13, /* addi t5, zero, 1 */
	0x01efb023, /* sd t5, 0(t6) */
	0x0000006f, /* j . */
};

/* ---- arithmetic ---- */

static uint32_t enc_i(uint32_t opc, uint32_t f3, uint32_t rd, uint32_t rs1, int32_t imm)
{
	return ((uint32_t)imm & 0xfff) << 20 | rs1 << 15 | f3 << 12 | rd << 7 | opc;
}

static uint32_t enc_s(uint32_t opc, uint32_t f3, uint32_t rs2, uint32_t rs1, int32_t imm)
{
	uint32_t u = (uint32_t)imm & 0xfff;
	return (u >> 5) << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | (u & 31) << 7 | opc;
}

#define LD(rd, rs1, off) enc_i(0x03, 3, (rd), (rs1), (off))
#define SD(rs2, rs1, off) enc_s(0x23, 3, (rs2), (rs1), (off))

/* Each operation computes a2 from a0, a1 (or a0 and its immediate). */
static const struct acase {
	const char *name;
	uint32_t insn;
	uint64_t a, b, want;
} acases[] = {
	{ "div INT64_MIN/-1", 0x02b54633, 0x8000000000000000ULL, ~0ULL, 0x8000000000000000ULL },
	{ "rem INT64_MIN%-1", 0x02b56633, 0x8000000000000000ULL, ~0ULL, 0 },
	{ "div 7/0", 0x02b54633, 7, 0, ~0ULL },
	{ "rem 7%0", 0x02b56633, 7, 0, 7 },
	{ "divu 7/0", 0x02b55633, 7, 0, ~0ULL },
	{ "remu 7%0", 0x02b57633, 7, 0, 7 },
	{ "divw INT32_MIN/-1", 0x02b5463b, 0x80000000ULL, ~0ULL, 0xffffffff80000000ULL },
	{ "remw INT32_MIN%-1", 0x02b5663b, 0x80000000ULL, ~0ULL, 0 },
	{ "divw 7/0", 0x02b5463b, 7, 0, ~0ULL },
	{ "remw x%0", 0x02b5663b, 0x80000001ULL, 0, 0xffffffff80000001ULL },
	{ "divuw x/0", 0x02b5563b, 0x80000000ULL, 0, ~0ULL },
	{ "remuw x%0", 0x02b5763b, 0xffffffff80000001ULL, 0, 0xffffffff80000001ULL },
	{ "div -7/2", 0x02b54633, (uint64_t)-7, 2, (uint64_t)-3 },
	{ "rem -7%2", 0x02b56633, (uint64_t)-7, 2, (uint64_t)-1 },
	{ "mulh -1*-1", 0x02b51633, ~0ULL, ~0ULL, 0 },
	{ "mulh MIN*MIN", 0x02b51633, 0x8000000000000000ULL, 0x8000000000000000ULL,
	  0x4000000000000000ULL },
	{ "mulh -2*3", 0x02b51633, (uint64_t)-2, 3, ~0ULL },
	{ "mulhsu -1*UMAX", 0x02b52633, ~0ULL, ~0ULL, ~0ULL },
	{ "mulhsu 2*UMAX", 0x02b52633, 2, ~0ULL, 1 },
	{ "mulhu UMAX*UMAX", 0x02b53633, ~0ULL, ~0ULL, 0xfffffffffffffffeULL },
	{ "mulhsu MIN*UMAX", 0x02b52633, 0x8000000000000000ULL, ~0ULL, 0x8000000000000000ULL },
	{ "mulw", 0x02b5063b, 0x7fffffffULL, 2, 0xfffffffffffffffeULL },
	{ "sraw", 0x40b5563b, 0x80000000ULL, 4, 0xfffffffff8000000ULL },
	{ "srlw ignores the upper half", 0x00b5563b, 0xffffffff80000000ULL, 1, 0x40000000ULL },
	{ "srlw by 0 sign-extends", 0x00b5563b, 0x80000000ULL, 0, 0xffffffff80000000ULL },
	{ "srlw uses 5 shift bits", 0x00b5563b, 0x80000000ULL, 33, 0x40000000ULL },
	{ "sllw", 0x00b5163b, 1, 31, 0xffffffff80000000ULL },
	{ "addw overflow", 0x00b5063b, 0x7fffffffULL, 1, 0xffffffff80000000ULL },
	{ "subw", 0x40b5063b, 0, 0x80000000ULL, 0xffffffff80000000ULL },
	{ "sraiw 31", 0x41f5561b, 0x80000000ULL, 0, ~0ULL },
	{ "srliw 31", 0x01f5561b, 0x80000000ULL, 0, 1 },
	{ "sra 63", 0x40b55633, 0x8000000000000000ULL, 63, ~0ULL },
	{ "srl 63", 0x00b55633, 0x8000000000000000ULL, 63, 1 },
	{ "sll uses 6 shift bits", 0x00b51633, 1, 67, 8 },
	{ "slt", 0x00b52633, ~0ULL, 1, 1 },
	{ "sltu", 0x00b53633, ~0ULL, 1, 0 },
	{ "sltiu -1", 0xfff53613, 0, 0, 1 },
	{ "divuw", 0x02b5563b, 0xffffffffULL, 2, 0x7fffffffULL },
	{ "addiw overflow", 0x0015061b, 0x7fffffffULL, 0, 0xffffffff80000000ULL },
	{ "mul", 0x02b50633, 0x123456789ULL, 0x987654321ULL, 0xd77d742cce1833a9ULL },
	{ "divw ignores the upper half", 0x02b5463b, 0x12345678fffffff9ULL, 2, (uint64_t)-3 },
	{ "remuw", 0x02b5763b, 0xfffffff5ULL, 0xfffffff0ULL, 5 },
	{ "divu", 0x02b55633, ~0ULL, 3, 0x5555555555555555ULL },
	{ "srai 63", 0x43f55613, 0x8000000000000000ULL, 0, ~0ULL },
	{ "xori -1", 0xfff54613, 0xf0f, 0, 0xfffffffffffff0f0ULL },
};

#define NCASES (sizeof(acases) / sizeof(acases[0]))

static void test_arith(void **state)
{
	struct fix *f = *state;
	uint64_t pc = RAM_BASE;
	uint32_t w[4];

	for (size_t k = 0; k < NCASES; k++) {
		wr64(f, DATA + 16 * k, acases[k].a);
		wr64(f, DATA + 16 * k + 8, acases[k].b);
		wr64(f, RES + 8 * k, 0xdeadbeefdeadbeefULL);
		w[0] = LD(A0, S1, 16 * k);
		w[1] = LD(A1, S1, 16 * k + 8);
		w[2] = acases[k].insn;
		w[3] = SD(A2, S2, 8 * k);
		pc = load(f, pc, w, 4);
	}
	/* Writes to x0 are discarded. */
	static const uint32_t x0[] = {
		0x00b50033, /* add zero, a0, a1 */
		0x00500013, /* addi zero, zero, 5 */
	};
	pc = LOAD(f, pc, x0);
	w[0] = SD(ZERO, S2, 8 * NCASES);
	wr64(f, RES + 8 * NCASES, 0xdeadbeefdeadbeefULL);
	pc = load(f, pc, w, 1);
	LOAD(f, pc, pass_tail);
	X(S1) = DATA;
	X(S2) = RES;

	run_pass(f);
	for (size_t k = 0; k < NCASES; k++) {
		uint64_t got = rd64(f, RES + 8 * k);
		if (got != acases[k].want)
			print_error("%s: %#llx op %#llx = %#llx, want %#llx\n", acases[k].name,
				    (unsigned long long)acases[k].a,
				    (unsigned long long)acases[k].b, (unsigned long long)got,
				    (unsigned long long)acases[k].want);
		assert_int_equal(got, acases[k].want);
	}
	assert_int_equal(rd64(f, RES + 8 * NCASES), 0);
	assert_int_equal(X(ZERO), 0);
}

/* ---- control flow ---- */

/* at 0x80000000 */
static const uint32_t loop[] = {
	0x00000513, /* 0000: addi a0,zero,0 */
	0x3e800593, /* 0004: addi a1,zero,1000 */
	0x00000613, /* 0008: addi a2,zero,0 */
	0x00b50533, /* 000c: add a0,a0,a1 */
	0x00160613, /* 0010: addi a2,a2,1 */
	0xfff58593, /* 0014: addi a1,a1,-1 */
	0xfe059ae3, /* 0018: bne a1,zero,8000000c */
	0x00000293, /* 001c: addi t0,zero,0 */
	0x00a00313, /* 0020: addi t1,zero,10 */
	0x01400393, /* 0024: addi t2,zero,20 */
	0x00128293, /* 0028: addi t0,t0,1 */
	0xfff38393, /* 002c: addi t2,t2,-1 */
	0xfe039ce3, /* 0030: bne t2,zero,80000028 */
	0xfff30313, /* 0034: addi t1,t1,-1 */
	0xfe6046e3, /* 0038: blt zero,t1,80000024 */
	0x00500493, /* 003c: addi s1,zero,5 */
	0x00000913, /* 0040: addi s2,zero,0 */
	0x00190913, /* 0044: addi s2,s2,1 */
	0x00996463, /* 0048: bltu s2,s1,80000050 */
	0x0080006f, /* 004c: jal zero,80000054 */
	0xff5ff06f, /* 0050: jal zero,80000044 */
	0x00080fb7, /* 0054: lui t6,0x80 */
	0x3fff8f9b, /* 0058: addiw t6,t6,1023 */
	0x00cf9f93, /* 005c: slli t6,t6,0xc */
	0x00100f13, /* 0060: addi t5,zero,1 */
	0x01efb023, /* 0064: sd t5,0(t6) */
	0x0000006f, /* 0068: jal zero,80000068 */
};

/* A backward branch: the loop's block chains to itself. */
static void test_loops(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, loop);
	run_pass(f);
	assert_int_equal(X(A0), 500500);
	assert_int_equal(X(A2), 1000);
	assert_int_equal(X(A1), 0);
	assert_int_equal(X(T0), 200);
	assert_int_equal(X(T1), 0);
	assert_int_equal(X(S2), 5);
}

/* at 0x80000000 */
static const uint32_t jal[] = {
	0x05c000ef, /* 0000: jal ra,8000005c */
	0x00008493, /* 0004: addi s1,ra,0 */
	0x058002ef, /* 0008: jal t0,80000060 */
	0x00028913, /* 000c: addi s2,t0,0 */
	0x00000317, /* 0010: auipc t1,0x0 */
	0x05430313, /* 0014: addi t1,t1,84 */
	0x001309e7, /* 0018: jalr s3,1(t1) */
	0x00000317, /* 001c: auipc t1,0x0 */
	0x04c30313, /* 0020: addi t1,t1,76 */
	0x00030367, /* 0024: jalr t1,0(t1) */
	0x00030a13, /* 0028: addi s4,t1,0 */
	0x00000397, /* 002c: auipc t2,0x0 */
	0x04838393, /* 0030: addi t2,t2,72 */
	0xff838ae7, /* 0034: jalr s5,-8(t2) */
	0x0080006f, /* 0038: jal zero,80000040 */
	0xfff00b13, /* 003c: addi s6,zero,-1 */
	0x00100b93, /* 0040: addi s7,zero,1 */
	0x00080fb7, /* 0044: lui t6,0x80 */
	0x3fff8f9b, /* 0048: addiw t6,t6,1023 */
	0x00cf9f93, /* 004c: slli t6,t6,0xc */
	0x00100f13, /* 0050: addi t5,zero,1 */
	0x01efb023, /* 0054: sd t5,0(t6) */
	0x0000006f, /* 0058: jal zero,80000058 */
	0x00008067, /* 005c: jalr zero,0(ra) */
	0x00028067, /* 0060: jalr zero,0(t0) */
	0x00098067, /* 0064: jalr zero,0(s3) */
	0x00030067, /* 0068: jalr zero,0(t1) */
	0x000a8c13, /* 006c: addi s8,s5,0 */
	0x000a8067, /* 0070: jalr zero,0(s5) */
};
#define JAL_F1 0x8000005cULL
#define JAL_F2 0x80000060ULL
#define JAL_F3 0x80000064ULL
#define JAL_F4 0x80000068ULL
#define JAL_F5 0x8000006cULL
#define JAL_F6 0x80000040ULL
#define JAL_R1 0x80000004ULL
#define JAL_R2 0x8000000cULL
#define JAL_R3 0x8000001cULL
#define JAL_R4 0x80000028ULL
#define JAL_R5 0x80000038ULL

static void test_jal_jalr(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, jal);
	run_pass(f);
	assert_int_equal(X(S1), JAL_R1); /* jal ra: link = pc + 4 */
	assert_int_equal(X(S2), JAL_R2); /* jal t0 */
	assert_int_equal(X(S3), JAL_R3); /* jalr to an odd address: bit 0 cleared */
	assert_int_equal(X(S4), JAL_R4); /* jalr t1, 0(t1): target read before the link */
	assert_int_equal(X(S5), JAL_R5); /* jalr with a negative offset */
	assert_int_equal(X(S8), JAL_R5);
	assert_int_equal(X(S6), 0); /* skipped by jal zero */
	assert_int_equal(X(S7), 1);
	assert_int_equal(X(RA), JAL_R1);
}

/* at 0x80000000 */
static const uint32_t comp[] = {
	0x4515,	    /* 0000: c.li a0,5 */
	0x00700593, /* 0002: addi a1,zero,7 */
	0x952e,	    /* 0006: c.add a0,a1 */
	0x862a,	    /* 0008: c.mv a2,a0 */
	0x0612,	    /* 000a: c.slli a2,0x4 */
	0x167d,	    /* 000c: c.addi a2,-1 */
	0x123456b7, /* 000e: lui a3,0x12345 */
	0x82b1,	    /* 0012: c.srli a3,0xc */
	0x8abd,	    /* 0014: c.andi a3,15 */
	0x8cb2,	    /* 0016: c.mv s9,a2 */
	0x8d36,	    /* 0018: c.mv s10,a3 */
	0x00080137, /* 001a: lui sp,0x80 */
	0x0111011b, /* 001e: addiw sp,sp,17 */
	0x00c11113, /* 0022: slli sp,sp,0xc */
	0x7139,	    /* 0026: c.addi16sp sp,-64 */
	0xe42a,	    /* 0028: c.sdsp a0,8(sp) */
	0x6722,	    /* 002a: c.ldsp a4,8(sp) */
	0xc82e,	    /* 002c: c.swsp a1,16(sp) */
	0x4ec2,	    /* 002e: c.lwsp t4,16(sp) */
	0x440d,	    /* 0030: c.li s0,3 */
	0x4481,	    /* 0032: c.li s1,0 */
	0x0489,	    /* 0034: c.addi s1,2 */
	0xfff40413, /* 0036: addi s0,s0,-1 */
	0xfc6d,	    /* 003a: c.bnez s0,80000034 */
	0xa011,	    /* 003c: c.j 80000040 */
	0x4481,	    /* 003e: c.li s1,0 */
	0xc011,	    /* 0040: c.beqz s0,80000044 */
	0x4481,	    /* 0042: c.li s1,0 */
	0x00000297, /* 0044: auipc t0,0x0 */
	0x05e28293, /* 0048: addi t0,t0,94 */
	0x9282,	    /* 004c: c.jalr t0 */
	0x8906,	    /* 004e: c.mv s2,ra */
	0x4429,	    /* 0050: c.li s0,10 */
	0x450d,	    /* 0052: c.li a0,3 */
	0x8c09,	    /* 0054: c.sub s0,a0 */
	0x4599,	    /* 0056: c.li a1,6 */
	0x8da9,	    /* 0058: c.xor a1,a0 */
	0x8dae,	    /* 005a: c.mv s11,a1 */
	0x4631,	    /* 005c: c.li a2,12 */
	0x8e49,	    /* 005e: c.or a2,a0 */
	0x46b9,	    /* 0060: c.li a3,14 */
	0x8ee9,	    /* 0062: c.and a3,a0 */
	0x800007b7, /* 0064: lui a5,0x80000 */
	0xfff7879b, /* 0068: addiw a5,a5,-1 */
	0x4505,	    /* 006c: c.li a0,1 */
	0x9d3d,	    /* 006e: c.addw a0,a5 */
	0x89aa,	    /* 0070: c.mv s3,a0 */
	0x4505,	    /* 0072: c.li a0,1 */
	0x9d11,	    /* 0074: c.subw a0,a2 */
	0x8a2a,	    /* 0076: c.mv s4,a0 */
	0x2501,	    /* 0078: c.addiw a0,0 */
	0x0828,	    /* 007a: c.addi4spn a0,sp,24 */
	0x8aaa,	    /* 007c: c.mv s5,a0 */
	0x402a8ab3, /* 007e: sub s5,s5,sp */
	0x45a5,	    /* 0082: c.li a1,9 */
	0xc10c,	    /* 0084: c.sw a1,0(a0) */
	0x410c,	    /* 0086: c.lw a1,0(a0) */
	0x8b2e,	    /* 0088: c.mv s6,a1 */
	0x6ba2,	    /* 008a: c.ldsp s7,8(sp) */
	0x7e01,	    /* 008c: c.lui t3,0xfffe0 */
	0x8c72,	    /* 008e: c.mv s8,t3 */
	0x00080fb7, /* 0090: lui t6,0x80 */
	0x3fff8f9b, /* 0094: addiw t6,t6,1023 */
	0x0fb2,	    /* 0098: c.slli t6,0xc */
	0x4f05,	    /* 009a: c.li t5,1 */
	0x01efb023, /* 009c: sd t5,0(t6) */
	0xa001,	    /* 00a0: c.j 800000a0 */
	0x0001,	    /* 00a2: c.addi zero,0 */
	0x8082,	    /* 00a4: c.jr ra */
};
#define COMP_CFUN 0x800000a2ULL
#define COMP_RET1 0x8000004eULL

/* Compressed instructions mixed with 32-bit ones, some of them only 2-byte aligned. */
static void test_compressed(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, comp);
	run_pass(f);
	assert_int_equal(X(S9), 191);			/* ((5 + 7) << 4) - 1 */
	assert_int_equal(X(S10), 5);			/* (0x12345000 >> 12) & 15 */
	assert_int_equal(X(SP), 0x80010fc0);		/* c.addi16sp -64 */
	assert_int_equal(X(A4), 12);			/* c.sdsp / c.ldsp */
	assert_int_equal(X(T4), 7);			/* c.swsp / c.lwsp */
	assert_int_equal(X(S1), 6);			/* c.bnez loop, c.j, c.beqz */
	assert_int_equal(X(S2), COMP_RET1);		/* c.jalr links pc + 2 */
	assert_int_equal(X(S0), 7);			/* c.sub */
	assert_int_equal(X(S11), 5);			/* c.xor */
	assert_int_equal(X(A2), 15);			/* c.or */
	assert_int_equal(X(A3), 2);			/* c.and */
	assert_int_equal(X(S3), 0xffffffff80000000ULL); /* c.addw sign-extends */
	assert_int_equal(X(S4), (uint64_t)-14);		/* c.subw */
	assert_int_equal(X(S5), 24);			/* c.addi4spn */
	assert_int_equal(X(S6), 9);			/* c.sw / c.lw */
	assert_int_equal(X(S7), 12);
	assert_int_equal(X(S8), 0xfffffffffffe0000ULL); /* c.lui sign-extends */
	assert_int_equal(rd32(f, X(SP) + 24), 9);
}

/* at 0x80000ff4 */
static const uint32_t straddle_a[] = {
	0x00000513, /* 0ff4: addi a0,zero,0 */
	0x00300593, /* 0ff8: addi a1,zero,3 */
	0x4601,	    /* 0ffc: c.li a2,0 */
	0x00150513, /* 0ffe: addi a0,a0,1 */
	0x0609,	    /* 1002: c.addi a2,2 */
	0xfeb51de3, /* 1004: bne a0,a1,80000ffe */
	0x7f10006f, /* 1008: jal zero,80001ff8 */
};
/* at 0x80001ff8 */
static const uint32_t straddle_b[] = {
	0x4685,	    /* 1ff8: c.li a3,1 */
	0x4709,	    /* 1ffa: c.li a4,2 */
	0x0001,	    /* 1ffc: c.addi zero,0 */
	0x018000ef, /* 1ffe: jal ra,80002016 */
	0x479d,	    /* 2002: c.li a5,7 */
	0x00080fb7, /* 2004: lui t6,0x80 */
	0x3fff8f9b, /* 2008: addiw t6,t6,1023 */
	0x0fb2,	    /* 200c: c.slli t6,0xc */
	0x4f05,	    /* 200e: c.li t5,1 */
	0x01efb023, /* 2010: sd t5,0(t6) */
	0xa001,	    /* 2014: c.j 80002014 */
	0x8486,	    /* 2016: c.mv s1,ra */
	0x8082,	    /* 2018: c.jr ra */
};
#define STRADDLE_BACK 0x80002002ULL
#define STRADDLE_FAR 0x80002016ULL
#define STRADDLE_JMP 0x80001ffeULL
#define STRADDLE_LOOP 0x80000ffeULL
#define STRADDLE_TAIL 0x80001ff8ULL

/* 32-bit instructions whose halves lie in two pages: an addi that a loop branches back to,
 * and a jal. */
static void test_straddle_bare(void **state)
{
	struct fix *f = *state;
	LOAD(f, 0x80000ff4, straddle_a);
	LOAD(f, 0x80001ff8, straddle_b);
	f->h->pc = 0x80000ff4;
	run_pass(f);
	assert_int_equal(X(A0), 3);
	assert_int_equal(X(A2), 6);
	assert_int_equal(X(A3), 1);
	assert_int_equal(X(A4), 2);
	assert_int_equal(X(A5), 7);
	assert_int_equal(X(S1), STRADDLE_BACK); /* link of the straddling jal: pc + 4 */
}

/* ---- Sv39 helpers ---- */

#define PTE_V 1
#define PTE_R 2
#define PTE_W 4
#define PTE_X 8
#define PTE_A 64
#define PTE_D 128

static uint64_t alloc_table(struct fix *f)
{
	uint64_t pa = f->next_table;
	f->next_table += PAGE_SIZE;
	memset(ram(f, pa, PAGE_SIZE), 0, PAGE_SIZE);
	return pa;
}

/* Maps va -> pa with a leaf at level (0: 4 KiB, 1: 2 MiB) in the f->root tables; returns
 * the leaf PTE's physical address. */
static uint64_t map_leaf(struct fix *f, uint64_t va, uint64_t pa, uint64_t flags, int level)
{
	uint64_t table = f->root;
	for (int l = 2; l > level; l--) {
		uint64_t a = table + ((va >> (12 + 9 * l)) & 0x1ff) * 8;
		uint64_t pte = rd64(f, a);
		if (!(pte & PTE_V)) {
			pte = ((alloc_table(f) >> 12) << 10) | PTE_V;
			wr64(f, a, pte);
		}
		table = (pte >> 10) << 12;
	}
	uint64_t a = table + ((va >> (12 + 9 * level)) & 0x1ff) * 8;
	wr64(f, a, ((pa >> 12) << 10) | flags);
	return a;
}

/* S-mode with Sv39: code pages at VA 0x10000000 and 0x10001000 map to physical pages that
 * are not adjacent (the page physically after the first is filled with 0xff), VA
 * 0x10002000 maps, 0x10003000 does not; the tohost page is identity-mapped. */
static void sv39_setup(struct fix *f)
{
	const uint64_t x = PTE_V | PTE_R | PTE_X | PTE_A;
	f->root = alloc_table(f);
	map_leaf(f, 0x10000000, RAM_BASE + 0x50000, x, 0);
	map_leaf(f, 0x10001000, RAM_BASE + 0x70000, x, 0);
	map_leaf(f, 0x10002000, RAM_BASE + 0x60000, x, 0);
	map_leaf(f, TOHOST, TOHOST, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D, 0);
	memset(ram(f, RAM_BASE + 0x51000, PAGE_SIZE), 0xff, PAGE_SIZE);
	f->h->satp = (8ULL << 60) | (f->root >> 12);
	hart_set_priv(f->h, PRV_S);
}

/* Loads words at a VA of the sv39_setup space (bytes for VA 0x10003000 are dropped). */
static void load_va(struct fix *f, uint64_t va, const uint32_t *w, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		unsigned len = (w[k] & 3) == 3 ? 4 : 2;
		const uint8_t *b = (const uint8_t *)&w[k];
		for (unsigned j = 0; j < len; j++, va++) {
			uint64_t page = va & ~0xfffULL, pa = 0;
			if (page == 0x10000000)
				pa = RAM_BASE + 0x50000;
			else if (page == 0x10001000)
				pa = RAM_BASE + 0x70000;
			else if (page == 0x10002000)
				pa = RAM_BASE + 0x60000;
			else if (page == 0x10003000)
				continue; /* unmapped: the bytes do not exist */
			else
				fail_msg("va %#llx not mapped", (unsigned long long)va);
			*ram(f, pa + (va & 0xfff), 1) = b[j];
		}
	}
}

/* at 0x10000ff4 */
static const uint32_t sv39_a[] = {
	0x00000513, /* 0ff4: addi a0,zero,0 */
	0x00400593, /* 0ff8: addi a1,zero,4 */
	0x4601,	    /* 0ffc: c.li a2,0 */
	0x00150513, /* 0ffe: addi a0,a0,1 */
	0x060d,	    /* 1002: c.addi a2,3 */
	0xfeb51de3, /* 1004: bne a0,a1,10000ffe */
	0x140026f3, /* 1008: csrrs a3,sscratch,zero */
	0x00080fb7, /* 100c: lui t6,0x80 */
	0x3fff8f9b, /* 1010: addiw t6,t6,1023 */
	0x0fb2,	    /* 1014: c.slli t6,0xc */
	0x4f05,	    /* 1016: c.li t5,1 */
	0x01efb023, /* 1018: sd t5,0(t6) */
	0xa001,	    /* 101c: c.j 1000101c */
};
/* at 0x10002ff8 */
static const uint32_t sv39_b[] = {
	0x00100513, /* 2ff8: addi a0,zero,1 */
	0x0001,	    /* 2ffc: c.addi zero,0 */
	0x00150513, /* 2ffe: addi a0,a0,1 */
};
#define SV39_BAD 0x10002ffeULL
#define SV39_LOOP 0x10000ffeULL

/* at 0x80002000 */
static const uint32_t mhandler[] = {
	0x342026f3, /* 2000: csrrs a3,mcause,zero */
	0x34102773, /* 2004: csrrs a4,mepc,zero */
	0x343027f3, /* 2008: csrrs a5,mtval,zero */
	0x30002873, /* 200c: csrrs a6,mstatus,zero */
	0x00080fb7, /* 2010: lui t6,0x80 */
	0x3fff8f9b, /* 2014: addiw t6,t6,1023 */
	0x00cf9f93, /* 2018: slli t6,t6,0xc */
	0x00100f13, /* 201c: addi t5,zero,1 */
	0x01efb023, /* 2020: sd t5,0(t6) */
	0x0000006f, /* 2024: jal zero,80002024 */
};

static void test_straddle_sv39(void **state)
{
	struct fix *f = *state;
	sv39_setup(f);
	load_va(f, 0x10000ff4, sv39_a, sizeof(sv39_a) / sizeof(sv39_a[0]));
	f->h->sscratch = 0x5a5a;
	f->h->pc = 0x10000ff4;
	run_pass(f);
	assert_int_equal(X(A0), 4);
	assert_int_equal(X(A2), 12);
	assert_int_equal(X(A3), 0x5a5a);
	assert_int_equal(f->h->priv, PRV_S);
}

/* The second half of a straddling instruction is on an unmapped page: an instruction
 * page fault at the instruction, with tval naming the page that faulted. */
static void test_straddle_second_page_fault(void **state)
{
	struct fix *f = *state;
	sv39_setup(f);
	load_va(f, 0x10002ff8, sv39_b, sizeof(sv39_b) / sizeof(sv39_b[0]));
	LOAD(f, 0x80002000, mhandler);
	f->h->mtvec = 0x80002000;
	f->h->pc = 0x10002ff8;
	run_pass(f);
	assert_int_equal(X(A0), 1); /* the straddling addi did not run */
	assert_int_equal(X(A3), EXC_INSN_PAGE);
	assert_int_equal(X(A4), SV39_BAD);
	assert_int_equal(X(A5), 0x10003000);
	assert_int_equal((X(A6) & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT, PRV_S);
}

/* at 0x10000000 */
static const uint32_t sfence[] = {
	0x00053483, /* 0000: ld s1,0(a0) */
	0x01393023, /* 0004: sd s3,0(s2) */
	0x12060073, /* 0008: sfence.vma a2,zero */
	0x00053a03, /* 000c: ld s4,0(a0) */
	0x12050073, /* 0010: sfence.vma a0,zero */
	0x00053a83, /* 0014: ld s5,0(a0) */
	0x0006bb03, /* 0018: ld s6,0(a3) */
	0x01773023, /* 001c: sd s7,0(a4) */
	0x12068073, /* 0020: sfence.vma a3,zero */
	0x0006bc03, /* 0024: ld s8,0(a3) */
	0x00080fb7, /* 0028: lui t6,0x80 */
	0x3fff8f9b, /* 002c: addiw t6,t6,1023 */
	0x00cf9f93, /* 0030: slli t6,t6,0xc */
	0x00100f13, /* 0034: addi t5,zero,1 */
	0x01efb023, /* 0038: sd t5,0(t6) */
	0x0000006f, /* 003c: jal zero,1000003c */
};

/* sfence.vma with an address: for a 4 KiB page, and for a 2 MiB page fenced through an
 * address in it other than the one that was accessed (one sfence.vma of any address in
 * a superpage covers the whole leaf PTE). The program rewrites the PTEs itself. */
static void test_sfence_vma_address(void **state)
{
	struct fix *f = *state;
	const uint64_t rw = PTE_V | PTE_R | PTE_W | PTE_A | PTE_D;
	sv39_setup(f);
	uint64_t big = map_leaf(f, 0x40000000, RAM_BASE + 0x200000, rw, 1);
	uint64_t small = map_leaf(f, 0x50000000, RAM_BASE + 0x30000, rw, 0);
	for (uint64_t pa = RAM_BASE + 0x100000; pa < RAM_BASE + 0x110000; pa += PAGE_SIZE)
		map_leaf(f, pa, pa, rw, 0);
	assert_true(f->next_table <= RAM_BASE + 0x110000);
	wr64(f, RAM_BASE + 0x201000, 0x1111);
	wr64(f, RAM_BASE + 0x001000, 0x2222);
	wr64(f, RAM_BASE + 0x30000, 0x3333);
	wr64(f, RAM_BASE + 0x31000, 0x4444);
	load_va(f, 0x10000000, sfence, sizeof(sfence) / sizeof(sfence[0]));
	X(A0) = 0x40001000;
	X(A2) = 0x40000000;
	X(S2) = big;
	X(S3) = ((RAM_BASE >> 12) << 10) | rw;
	X(A3) = 0x50000000;
	X(A4) = small;
	X(S7) = (((RAM_BASE + 0x31000) >> 12) << 10) | rw;
	f->h->pc = 0x10000000;
	run_pass(f);
	assert_int_equal(X(S1), 0x1111);
	assert_int_equal(X(S5), 0x2222); /* fenced at the accessed page */
	assert_int_equal(X(S6), 0x3333);
	assert_int_equal(X(S8), 0x4444); /* 4 KiB page */
	assert_int_equal(X(S4), 0x2222); /* fenced at another address of the superpage */
}

/* ---- traps ---- */

/* at 0x80000000 */
static const uint32_t trapprog[] = {
	0x00000297, /* 0000: auipc t0,0x0 */
	0x0c828293, /* 0004: addi t0,t0,200 */
	0x30529073, /* 0008: csrrw zero,mtvec,t0 */
	0x00004937, /* 000c: lui s2,0x4 */
	0x0019091b, /* 0010: addiw s2,s2,1 */
	0x01191913, /* 0014: slli s2,s2,0x11 */
	0x00000993, /* 0018: addi s3,zero,0 */
	0x00700a13, /* 001c: addi s4,zero,7 */
	0x00000d97, /* 0020: auipc s11,0x0 */
	0x00cd8d93, /* 0024: addi s11,s11,12 */
	0x30054573, /* 0028: .word 0x30054573 */
	0x00198993, /* 002c: addi s3,s3,1 */
	0x00000d97, /* 0030: auipc s11,0x0 */
	0x00ad8d93, /* 0034: addi s11,s11,10 */
	0x4002,	    /* 0038: .short 0x4002 */
	0x00000d97, /* 003a: auipc s11,0x0 */
	0x00cd8d93, /* 003e: addi s11,s11,12 */
	0x7c002573, /* 0042: csrrs a0,0x7c0,zero */
	0x00000d97, /* 0046: auipc s11,0x0 */
	0x00ad8d93, /* 004a: addi s11,s11,10 */
	0x0000,	    /* 004e: .short 0x0000 */
	0x00000d97, /* 0050: auipc s11,0x0 */
	0x010d8d93, /* 0054: addi s11,s11,16 */
	0x000012b7, /* 0058: lui t0,0x1 */
	0x0002b503, /* 005c: ld a0,0(t0) */
	0x00000d97, /* 0060: auipc s11,0x0 */
	0x00cd8d93, /* 0064: addi s11,s11,12 */
	0x00a2b423, /* 0068: sd a0,8(t0) */
	0x00000d97, /* 006c: auipc s11,0x0 */
	0x01cd8d93, /* 0070: addi s11,s11,28 */
	0x000082b7, /* 0074: lui t0,0x8 */
	0x0012829b, /* 0078: addiw t0,t0,1 */
	0x01029293, /* 007c: slli t0,t0,0x10 */
	0x00428293, /* 0080: addi t0,t0,4 */
	0x00a2b52f, /* 0084: amoadd.d a0,a0,(t0) */
	0x00000d97, /* 0088: auipc s11,0x0 */
	0x00cd8d93, /* 008c: addi s11,s11,12 */
	0x00100073, /* 0090: ebreak */
	0x00000d97, /* 0094: auipc s11,0x0 */
	0x00cd8d93, /* 0098: addi s11,s11,12 */
	0x00000073, /* 009c: ecall */
	0x00000d97, /* 00a0: auipc s11,0x0 */
	0x010d8d93, /* 00a4: addi s11,s11,16 */
	0x000012b7, /* 00a8: lui t0,0x1 */
	0x00028067, /* 00ac: jalr zero,0(t0) */
	0x00080fb7, /* 00b0: lui t6,0x80 */
	0x3fff8f9b, /* 00b4: addiw t6,t6,1023 */
	0x00cf9f93, /* 00b8: slli t6,t6,0xc */
	0x00100f13, /* 00bc: addi t5,zero,1 */
	0x01efb023, /* 00c0: sd t5,0(t6) */
	0x0000006f, /* 00c4: jal zero,800000c4 */
	0x34202373, /* 00c8: csrrs t1,mcause,zero */
	0x00693023, /* 00cc: sd t1,0(s2) */
	0x34302373, /* 00d0: csrrs t1,mtval,zero */
	0x00693423, /* 00d4: sd t1,8(s2) */
	0x34102373, /* 00d8: csrrs t1,mepc,zero */
	0x00693823, /* 00dc: sd t1,16(s2) */
	0x01890913, /* 00e0: addi s2,s2,24 */
	0x341d9073, /* 00e4: csrrw zero,mepc,s11 */
	0x30200073, /* 00e8: mret */
};
#define TRAPPROG_AMO1 0x80000084ULL
#define TRAPPROG_EB 0x80000090ULL
#define TRAPPROG_EC 0x8000009cULL
#define TRAPPROG_HANDLER 0x800000c8ULL
#define TRAPPROG_ILL1 0x80000028ULL
#define TRAPPROG_ILL2 0x80000038ULL
#define TRAPPROG_ILL3 0x80000042ULL
#define TRAPPROG_ILL4 0x8000004eULL
#define TRAPPROG_JR1 0x800000acULL
#define TRAPPROG_LD1 0x8000005cULL
#define TRAPPROG_ST1 0x80000068ULL

static void test_exceptions(void **state)
{
	struct fix *f = *state;
	static const uint64_t want[][3] = {
		{ EXC_ILLEGAL, 0x30054573, TRAPPROG_ILL1 }, /* CSR funct3 4 */
		{ EXC_ILLEGAL, 0x4002, TRAPPROG_ILL2 },	    /* c.lwsp x0: 16 bits only */
		{ EXC_ILLEGAL, 0x7c002573, TRAPPROG_ILL3 }, /* csrr of an unknown CSR */
		{ EXC_ILLEGAL, 0, TRAPPROG_ILL4 },	    /* all-zero halfword */
		{ EXC_LOAD_ACCESS, 0x1000, TRAPPROG_LD1 },
		{ EXC_STORE_ACCESS, 0x1008, TRAPPROG_ST1 },
		{ EXC_STORE_MISALIGNED, DATA + 4, TRAPPROG_AMO1 },
		{ EXC_BREAKPOINT, TRAPPROG_EB, TRAPPROG_EB },
		{ EXC_ECALL_M, 0, TRAPPROG_EC },
		{ EXC_INSN_ACCESS, 0x1000, 0x1000 }, /* jalr to outside RAM */
	};
	LOAD(f, RAM_BASE, trapprog);
	run_pass(f);
	for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
		assert_int_equal(rd64(f, RES + 24 * k), want[k][0]);
		assert_int_equal(rd64(f, RES + 24 * k + 8), want[k][1]);
		assert_int_equal(rd64(f, RES + 24 * k + 16), want[k][2]);
	}
	assert_int_equal(X(S2), RES + 24 * (sizeof(want) / sizeof(want[0])));
	assert_int_equal(X(S3), 1); /* the instruction after the first illegal one ran once */
	assert_int_equal(X(S4), 7);
	assert_int_equal(rd64(f, DATA), 0); /* the misaligned AMO wrote nothing */
	assert_int_equal(rd64(f, DATA + 8), 0);
}

/* at 0x80000000 */
static const uint32_t fchain[] = {
	0x00000297, /* 0000: auipc t0,0x0 */
	0x02c28293, /* 0004: addi t0,t0,44 */
	0x30529073, /* 0008: csrrw zero,mtvec,t0 */
	0x00000913, /* 000c: addi s2,zero,0 */
	0x00000993, /* 0010: addi s3,zero,0 */
	0x00004b37, /* 0014: lui s6,0x4 */
	0x001b0b1b, /* 0018: addiw s6,s6,1 */
	0x011b1b13, /* 001c: slli s6,s6,0x11 */
	0x0040006f, /* 0020: jal zero,80000024 */
	0x00198993, /* 0024: addi s3,s3,1 */
	0xfd8ff06f, /* 0028: jal zero,7ffff800 */
	0x00190913, /* 002c: addi s2,s2,1 */
	0x34102373, /* 0030: csrrs t1,mepc,zero */
	0x006b3023, /* 0034: sd t1,0(s6) */
	0x008b0b13, /* 0038: addi s6,s6,8 */
	0x34202af3, /* 003c: csrrs s5,mcause,zero */
	0x00300313, /* 0040: addi t1,zero,3 */
	0xfe69c0e3, /* 0044: blt s3,t1,80000024 */
	0x00080fb7, /* 0048: lui t6,0x80 */
	0x3fff8f9b, /* 004c: addiw t6,t6,1023 */
	0x00cf9f93, /* 0050: slli t6,t6,0xc */
	0x00100f13, /* 0054: addi t5,zero,1 */
	0x01efb023, /* 0058: sd t5,0(t6) */
	0x0000006f, /* 005c: jal zero,8000005c */
};
#define FCHAIN_AGAIN 0x80000024ULL
#define FCHAIN_HANDLER 0x8000002cULL

/* A static jump whose target cannot be fetched, the trap handler being in the jump's own
 * page: every attempt must trap. (The fetch fault is raised from the block lookup; the
 * exit of the jumping block must not get chained to the handler's block.) */
static void test_fetch_fault_then_handler_in_same_page(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, fchain);
	run_pass(f);
	assert_int_equal(X(S3), 3);
	assert_int_equal(X(S5), EXC_INSN_ACCESS);
	for (int k = 0; k < 3; k++)
		assert_int_equal(rd64(f, RES + 8 * k), 0x7ffff800);
	assert_int_equal(X(S2), 3); /* one handler entry per attempt */
}

/* at 0x80000000 */
static const uint32_t ecall[] = {
	0x10000293, /* 0000: addi t0,zero,256 */
	0x30229073, /* 0004: csrrw zero,medeleg,t0 */
	0x00000297, /* 0008: auipc t0,0x0 */
	0x04828293, /* 000c: addi t0,t0,72 */
	0x10529073, /* 0010: csrrw zero,stvec,t0 */
	0x00000297, /* 0014: auipc t0,0x0 */
	0x05428293, /* 0018: addi t0,t0,84 */
	0x30529073, /* 001c: csrrw zero,mtvec,t0 */
	0x00000297, /* 0020: auipc t0,0x0 */
	0x02428293, /* 0024: addi t0,t0,36 */
	0x34129073, /* 0028: csrrw zero,mepc,t0 */
	0x000022b7, /* 002c: lui t0,0x2 */
	0x8002829b, /* 0030: addiw t0,t0,-2048 */
	0x3002b073, /* 0034: csrrc zero,mstatus,t0 */
	0x00200293, /* 0038: addi t0,zero,2 */
	0x3002a073, /* 003c: csrrs zero,mstatus,t0 */
	0x30200073, /* 0040: mret */
	0x02a00513, /* 0044: addi a0,zero,42 */
	0x00000073, /* 0048: ecall */
	0xff9ff06f, /* 004c: jal zero,80000044 */
	0x142024f3, /* 0050: csrrs s1,scause,zero */
	0x14102973, /* 0054: csrrs s2,sepc,zero */
	0x100029f3, /* 0058: csrrs s3,sstatus,zero */
	0x14302a73, /* 005c: csrrs s4,stval,zero */
	0x00000073, /* 0060: ecall */
	0xfedff06f, /* 0064: jal zero,80000050 */
	0x34202af3, /* 0068: csrrs s5,mcause,zero */
	0x34102b73, /* 006c: csrrs s6,mepc,zero */
	0x30002bf3, /* 0070: csrrs s7,mstatus,zero */
	0x00080fb7, /* 0074: lui t6,0x80 */
	0x3fff8f9b, /* 0078: addiw t6,t6,1023 */
	0x00cf9f93, /* 007c: slli t6,t6,0xc */
	0x00100f13, /* 0080: addi t5,zero,1 */
	0x01efb023, /* 0084: sd t5,0(t6) */
	0x0000006f, /* 0088: jal zero,80000088 */
};
#define ECALL_M_HANDLER 0x80000068ULL
#define ECALL_S_ECALL 0x80000060ULL
#define ECALL_S_HANDLER 0x80000050ULL
#define ECALL_U_ECALL 0x80000048ULL
#define ECALL_USER 0x80000044ULL

/* U-mode ecall delegated to S through medeleg; S-mode's own ecall goes to M. */
static void test_ecall_delegation(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, ecall);
	run_pass(f);
	assert_int_equal(X(A0), 42);
	assert_int_equal(X(S1), EXC_ECALL_U);
	assert_int_equal(X(S2), ECALL_U_ECALL);
	assert_int_equal(X(S4), 0);
	uint64_t sstatus = X(S3);
	assert_false(sstatus & MSTATUS_SPP); /* came from U */
	assert_true(sstatus & MSTATUS_SPIE); /* SIE was set in U */
	assert_false(sstatus & MSTATUS_SIE);
	assert_false(sstatus & MSTATUS_MPP); /* not visible in sstatus */
	assert_int_equal(X(S5), EXC_ECALL_S);
	assert_int_equal(X(S6), ECALL_S_ECALL);
	assert_int_equal((X(S7) & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT, PRV_S);
	assert_int_equal(f->h->priv, PRV_M);
	assert_int_equal(f->h->scause, EXC_ECALL_U);
}

/* at 0x80000000 */
static const uint32_t priv[] = {
	0x00000297, /* 0000: auipc t0,0x0 */
	0x0c428293, /* 0004: addi t0,t0,196 */
	0x30529073, /* 0008: csrrw zero,mtvec,t0 */
	0x00004937, /* 000c: lui s2,0x4 */
	0x0019091b, /* 0010: addiw s2,s2,1 */
	0x01191913, /* 0014: slli s2,s2,0x11 */
	0x007002b7, /* 0018: lui t0,0x700 */
	0x3002a073, /* 001c: csrrs zero,mstatus,t0 */
	0x000022b7, /* 0020: lui t0,0x2 */
	0x8002829b, /* 0024: addiw t0,t0,-2048 */
	0x3002b073, /* 0028: csrrc zero,mstatus,t0 */
	0x000012b7, /* 002c: lui t0,0x1 */
	0x8002829b, /* 0030: addiw t0,t0,-2048 */
	0x3002a073, /* 0034: csrrs zero,mstatus,t0 */
	0x00000297, /* 0038: auipc t0,0x0 */
	0x01028293, /* 003c: addi t0,t0,16 */
	0x34129073, /* 0040: csrrw zero,mepc,t0 */
	0x30200073, /* 0044: mret */
	0x00000d97, /* 0048: auipc s11,0x0 */
	0x00cd8d93, /* 004c: addi s11,s11,12 */
	0x30200073, /* 0050: mret */
	0x00000d97, /* 0054: auipc s11,0x0 */
	0x00cd8d93, /* 0058: addi s11,s11,12 */
	0x10200073, /* 005c: sret */
	0x00000d97, /* 0060: auipc s11,0x0 */
	0x00cd8d93, /* 0064: addi s11,s11,12 */
	0x10500073, /* 0068: wfi */
	0x00000d97, /* 006c: auipc s11,0x0 */
	0x00cd8d93, /* 0070: addi s11,s11,12 */
	0x12000073, /* 0074: sfence.vma zero,zero */
	0x00000d97, /* 0078: auipc s11,0x0 */
	0x00cd8d93, /* 007c: addi s11,s11,12 */
	0x18002573, /* 0080: csrrs a0,satp,zero */
	0x00000d97, /* 0084: auipc s11,0x0 */
	0x00cd8d93, /* 0088: addi s11,s11,12 */
	0x30002573, /* 008c: csrrs a0,mstatus,zero */
	0x00000d97, /* 0090: auipc s11,0x0 */
	0x00cd8d93, /* 0094: addi s11,s11,12 */
	0xc0002573, /* 0098: csrrs a0,cycle,zero */
	0x140029f3, /* 009c: csrrs s3,sscratch,zero */
	0x00000d97, /* 00a0: auipc s11,0x0 */
	0x00cd8d93, /* 00a4: addi s11,s11,12 */
	0x00000073, /* 00a8: ecall */
	0x00080fb7, /* 00ac: lui t6,0x80 */
	0x3fff8f9b, /* 00b0: addiw t6,t6,1023 */
	0x00cf9f93, /* 00b4: slli t6,t6,0xc */
	0x00100f13, /* 00b8: addi t5,zero,1 */
	0x01efb023, /* 00bc: sd t5,0(t6) */
	0x0000006f, /* 00c0: jal zero,800000c0 */
	0x34202373, /* 00c4: csrrs t1,mcause,zero */
	0x00693023, /* 00c8: sd t1,0(s2) */
	0x34302373, /* 00cc: csrrs t1,mtval,zero */
	0x00693423, /* 00d0: sd t1,8(s2) */
	0x34102373, /* 00d4: csrrs t1,mepc,zero */
	0x00693823, /* 00d8: sd t1,16(s2) */
	0x01890913, /* 00dc: addi s2,s2,24 */
	0x341d9073, /* 00e0: csrrw zero,mepc,s11 */
	0x30200073, /* 00e4: mret */
};
#define PRIV_HANDLER 0x800000c4ULL
#define PRIV_I_CYCLE 0x80000098ULL
#define PRIV_I_ECALL 0x800000a8ULL
#define PRIV_I_MRET 0x80000050ULL
#define PRIV_I_MSTATUS 0x8000008cULL
#define PRIV_I_SATP 0x80000080ULL
#define PRIV_I_SFENCE 0x80000074ULL
#define PRIV_I_SRET 0x8000005cULL
#define PRIV_I_WFI 0x80000068ULL
#define PRIV_S_CODE 0x80000048ULL

/* S-mode, with mstatus TVM, TW and TSR set and mcounteren = 0: each of these traps to M
 * as an illegal instruction whose bits are in mtval. */
static void test_privileged_insns_from_s(void **state)
{
	struct fix *f = *state;
	static const uint64_t want[][3] = {
		{ EXC_ILLEGAL, 0x30200073, PRIV_I_MRET },
		{ EXC_ILLEGAL, 0x10200073, PRIV_I_SRET },   /* TSR */
		{ EXC_ILLEGAL, 0x10500073, PRIV_I_WFI },    /* TW */
		{ EXC_ILLEGAL, 0x12000073, PRIV_I_SFENCE }, /* TVM */
		{ EXC_ILLEGAL, 0x18002573, PRIV_I_SATP },   /* TVM */
		{ EXC_ILLEGAL, 0x30002573, PRIV_I_MSTATUS },
		{ EXC_ILLEGAL, 0xc0002573, PRIV_I_CYCLE }, /* mcounteren.CY = 0 */
		{ EXC_ECALL_S, 0, PRIV_I_ECALL },
	};
	LOAD(f, RAM_BASE, priv);
	f->h->sscratch = 77;
	run_pass(f);
	for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
		assert_int_equal(rd64(f, RES + 24 * k), want[k][0]);
		assert_int_equal(rd64(f, RES + 24 * k + 8), want[k][1]);
		assert_int_equal(rd64(f, RES + 24 * k + 16), want[k][2]);
	}
	assert_int_equal(X(S2), RES + 24 * (sizeof(want) / sizeof(want[0])));
	assert_int_equal(X(S3), 77); /* S-mode's own CSRs stay usable */
	assert_int_equal(f->h->priv, PRV_S);
}

/* ---- self-modifying code ---- */

/* at 0x80000000 */
static const uint32_t smc[] = {
	0x00000493, /* 0000: addi s1,zero,0 */
	0x00000913, /* 0004: addi s2,zero,0 */
	0x00300393, /* 0008: addi t2,zero,3 */
	0x00100513, /* 000c: addi a0,zero,1 */
	0x00a90933, /* 0010: add s2,s2,a0 */
	0xfff38393, /* 0014: addi t2,t2,-1 */
	0xfe039ae3, /* 0018: bne t2,zero,8000000c */
	0x02049263, /* 001c: bne s1,zero,80000040 */
	0x00100493, /* 0020: addi s1,zero,1 */
	0x00000297, /* 0024: auipc t0,0x0 */
	0xfe828293, /* 0028: addi t0,t0,-24 */
	0x00a00337, /* 002c: lui t1,0xa00 */
	0x5133031b, /* 0030: addiw t1,t1,1299 */
	0x0062a023, /* 0034: sw t1,0(t0) */
	0x0000100f, /* 0038: fence.i */
	0xfcdff06f, /* 003c: jal zero,80000008 */
	0x00080fb7, /* 0040: lui t6,0x80 */
	0x3fff8f9b, /* 0044: addiw t6,t6,1023 */
	0x00cf9f93, /* 0048: slli t6,t6,0xc */
	0x00100f13, /* 004c: addi t5,zero,1 */
	0x01efb023, /* 0050: sd t5,0(t6) */
	0x0000006f, /* 0054: jal zero,80000054 */
};
#define SMC_AGAIN 0x80000008ULL
#define SMC_DONE 0x80000040ULL
#define SMC_LOOP 0x8000000cULL
#define SMC_TARGET 0x8000000cULL

/* A loop body runs three times (its block chained to itself), is patched with a store,
 * fence.i, then runs three more times: the patched instruction must run. */
static void test_self_modifying_fence_i(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, smc);
	run_pass(f);
	assert_int_equal(rd32(f, SMC_TARGET), 0x00a00513); /* addi a0, zero, 10 */
	assert_int_equal(X(A0), 10);
	assert_int_equal(X(S2), 3 * 1 + 3 * 10);
}

/* ---- atomics ---- */

/* at 0x80000000 */
static const uint32_t lrsc[] = {
	0x00000297, /* 0000: auipc t0,0x0 */
	0x09428293, /* 0004: addi t0,t0,148 */
	0x30529073, /* 0008: csrrw zero,mtvec,t0 */
	0x00008437, /* 000c: lui s0,0x8 */
	0x0014041b, /* 0010: addiw s0,s0,1 */
	0x01041413, /* 0014: slli s0,s0,0x10 */
	0x00500293, /* 0018: addi t0,zero,5 */
	0x00543023, /* 001c: sd t0,0(s0) */
	0x00900313, /* 0020: addi t1,zero,9 */
	0x1864352f, /* 0024: sc.d a0,t1,(s0) */
	0x00043583, /* 0028: ld a1,0(s0) */
	0x1004362f, /* 002c: lr.d a2,(s0) */
	0x186436af, /* 0030: sc.d a3,t1,(s0) */
	0x00043703, /* 0034: ld a4,0(s0) */
	0x185437af, /* 0038: sc.d a5,t0,(s0) */
	0x00043803, /* 003c: ld a6,0(s0) */
	0xfff00293, /* 0040: addi t0,zero,-1 */
	0x00542423, /* 0044: sw t0,8(s0) */
	0x00840493, /* 0048: addi s1,s0,8 */
	0x01040993, /* 004c: addi s3,s0,16 */
	0x1004a8af, /* 0050: lr.w a7,(s1) */
	0x12345337, /* 0054: lui t1,0x12345 */
	0x6783031b, /* 0058: addiw t1,t1,1656 */
	0x1869aa2f, /* 005c: sc.w s4,t1,(s3) */
	0x1004ab2f, /* 0060: lr.w s6,(s1) */
	0x1864aaaf, /* 0064: sc.w s5,t1,(s1) */
	0x00842b83, /* 0068: lw s7,8(s0) */
	0x10043c2f, /* 006c: lr.d s8,(s0) */
	0x00000073, /* 0070: ecall */
	0x18643caf, /* 0074: sc.d s9,t1,(s0) */
	0x00043d03, /* 0078: ld s10,0(s0) */
	0x00080fb7, /* 007c: lui t6,0x80 */
	0x3fff8f9b, /* 0080: addiw t6,t6,1023 */
	0x00cf9f93, /* 0084: slli t6,t6,0xc */
	0x00100f13, /* 0088: addi t5,zero,1 */
	0x01efb023, /* 008c: sd t5,0(t6) */
	0x0000006f, /* 0090: jal zero,80000090 */
	0x341023f3, /* 0094: csrrs t2,mepc,zero */
	0x00438393, /* 0098: addi t2,t2,4 */
	0x34139073, /* 009c: csrrw zero,mepc,t2 */
	0x30200073, /* 00a0: mret */
};
#define LRSC_HANDLER 0x80000094ULL

static void test_lr_sc(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, lrsc);
	run_pass(f);
	assert_int_equal(X(A0), 1); /* sc.d without lr.d fails... */
	assert_int_equal(X(A1), 5); /* ...and stores nothing */
	assert_int_equal(X(A2), 5);
	assert_int_equal(X(A3), 0); /* lr.d; sc.d succeeds */
	assert_int_equal(X(A4), 9);
	assert_int_equal(X(A5), 1); /* the reservation is used up */
	assert_int_equal(X(A6), 9);
	assert_int_equal(X(A7), ~0ULL); /* lr.w sign-extends */
	assert_int_equal(X(S4), 1);	/* sc.w to another address fails */
	assert_int_equal(rd64(f, DATA + 16), 0);
	assert_int_equal(X(S6), ~0ULL);
	assert_int_equal(X(S5), 0);
	assert_int_equal(X(S7), 0x12345678);
	assert_int_equal(X(S8), 9);
	assert_int_equal(X(S9), 1); /* a trap between lr and sc drops the reservation */
	assert_int_equal(X(S10), 9);
}

/* at 0x80000000 */
static const uint32_t amo[] = {
	0x00008437, /* 0000: lui s0,0x8 */
	0x0014041b, /* 0004: addiw s0,s0,1 */
	0x01041413, /* 0008: slli s0,s0,0x10 */
	0x00004937, /* 000c: lui s2,0x4 */
	0x0019091b, /* 0010: addiw s2,s2,1 */
	0x01191913, /* 0014: slli s2,s2,0x11 */
	0x00100313, /* 0018: addi t1,zero,1 */
	0x0064252f, /* 001c: amoadd.w a0,t1,(s0) */
	0x00a93023, /* 0020: sd a0,0(s2) */
	0x0064252f, /* 0024: amoadd.w a0,t1,(s0) */
	0x00a93423, /* 0028: sd a0,8(s2) */
	0x00840493, /* 002c: addi s1,s0,8 */
	0xfff00313, /* 0030: addi t1,zero,-1 */
	0xe064b52f, /* 0034: amomaxu.d a0,t1,(s1) */
	0x00a93823, /* 0038: sd a0,16(s2) */
	0x01040493, /* 003c: addi s1,s0,16 */
	0xa064b52f, /* 0040: amomax.d a0,t1,(s1) */
	0x00a93c23, /* 0044: sd a0,24(s2) */
	0x8064b52f, /* 0048: amomin.d a0,t1,(s1) */
	0x02a93023, /* 004c: sd a0,32(s2) */
	0x01840493, /* 0050: addi s1,s0,24 */
	0x00100313, /* 0054: addi t1,zero,1 */
	0xc064a52f, /* 0058: amominu.w a0,t1,(s1) */
	0x02a93423, /* 005c: sd a0,40(s2) */
	0x02040493, /* 0060: addi s1,s0,32 */
	0x00700313, /* 0064: addi t1,zero,7 */
	0x0864a52f, /* 0068: amoswap.w a0,t1,(s1) */
	0x02a93823, /* 006c: sd a0,48(s2) */
	0x02840493, /* 0070: addi s1,s0,40 */
	0x0010031b, /* 0074: addiw t1,zero,1 */
	0x01f31313, /* 0078: slli t1,t1,0x1f */
	0xe064a52f, /* 007c: amomaxu.w a0,t1,(s1) */
	0x02a93c23, /* 0080: sd a0,56(s2) */
	0x03040493, /* 0084: addi s1,s0,48 */
	0xa064a52f, /* 0088: amomax.w a0,t1,(s1) */
	0x04a93023, /* 008c: sd a0,64(s2) */
	0x03840493, /* 0090: addi s1,s0,56 */
	0x00010337, /* 0094: lui t1,0x10 */
	0xf003031b, /* 0098: addiw t1,t1,-256 */
	0x6064b52f, /* 009c: amoand.d a0,t1,(s1) */
	0x04a93423, /* 00a0: sd a0,72(s2) */
	0x4064b52f, /* 00a4: amoor.d a0,t1,(s1) */
	0x04a93823, /* 00a8: sd a0,80(s2) */
	0x2064b52f, /* 00ac: amoxor.d a0,t1,(s1) */
	0x04a93c23, /* 00b0: sd a0,88(s2) */
	0x04040493, /* 00b4: addi s1,s0,64 */
	0x0010031b, /* 00b8: addiw t1,zero,1 */
	0x02031313, /* 00bc: slli t1,t1,0x20 */
	0x00130313, /* 00c0: addi t1,t1,1 */
	0x0064b52f, /* 00c4: amoadd.d a0,t1,(s1) */
	0x06a93023, /* 00c8: sd a0,96(s2) */
	0x04840493, /* 00cc: addi s1,s0,72 */
	0x0064a02f, /* 00d0: amoadd.w zero,t1,(s1) */
	0x00080fb7, /* 00d4: lui t6,0x80 */
	0x3fff8f9b, /* 00d8: addiw t6,t6,1023 */
	0x00cf9f93, /* 00dc: slli t6,t6,0xc */
	0x00100f13, /* 00e0: addi t5,zero,1 */
	0x01efb023, /* 00e4: sd t5,0(t6) */
	0x0000006f, /* 00e8: jal zero,800000e8 */
};

static void test_amo(void **state)
{
	struct fix *f = *state;
	wr32(f, DATA + 0, 0x7fffffff);
	wr64(f, DATA + 8, 5);
	wr64(f, DATA + 16, 5);
	wr32(f, DATA + 24, 0xffffffff);
	wr32(f, DATA + 32, 0x80000000);
	wr32(f, DATA + 40, 0x7fffffff);
	wr32(f, DATA + 48, 0x7fffffff);
	wr64(f, DATA + 56, 0x0ff0);
	wr64(f, DATA + 64, ~0ULL);
	wr32(f, DATA + 72, 0x7fffffff);
	wr32(f, DATA + 76, 0x12345678);
	LOAD(f, RAM_BASE, amo);
	run_pass(f);

	/* amoadd.w: the old value is sign-extended */
	assert_int_equal(rd64(f, RES + 0), 0x7fffffff);
	assert_int_equal(rd64(f, RES + 8), 0xffffffff80000000ULL);
	assert_int_equal(rd32(f, DATA + 0), 0x80000001);
	/* amomaxu.d 5, -1 */
	assert_int_equal(rd64(f, RES + 16), 5);
	assert_int_equal(rd64(f, DATA + 8), ~0ULL);
	/* amomax.d then amomin.d with -1 */
	assert_int_equal(rd64(f, RES + 24), 5);
	assert_int_equal(rd64(f, RES + 32), 5);
	assert_int_equal(rd64(f, DATA + 16), ~0ULL);
	/* amominu.w 0xffffffff, 1 */
	assert_int_equal(rd64(f, RES + 40), ~0ULL);
	assert_int_equal(rd32(f, DATA + 24), 1);
	/* amoswap.w */
	assert_int_equal(rd64(f, RES + 48), 0xffffffff80000000ULL);
	assert_int_equal(rd32(f, DATA + 32), 7);
	/* amomaxu.w / amomax.w with 0x80000000 */
	assert_int_equal(rd64(f, RES + 56), 0x7fffffff);
	assert_int_equal(rd32(f, DATA + 40), 0x80000000);
	assert_int_equal(rd64(f, RES + 64), 0x7fffffff);
	assert_int_equal(rd32(f, DATA + 48), 0x7fffffff);
	/* amoand.d, amoor.d, amoxor.d with 0xff00 */
	assert_int_equal(rd64(f, RES + 72), 0x0ff0);
	assert_int_equal(rd64(f, RES + 80), 0x0f00);
	assert_int_equal(rd64(f, RES + 88), 0xff00);
	assert_int_equal(rd64(f, DATA + 56), 0);
	/* amoadd.d */
	assert_int_equal(rd64(f, RES + 96), ~0ULL);
	assert_int_equal(rd64(f, DATA + 64), 0x100000000ULL);
	/* amoadd.w touches only its word */
	assert_int_equal(rd32(f, DATA + 72), 0x80000000);
	assert_int_equal(rd32(f, DATA + 76), 0x12345678);
	assert_int_equal(X(ZERO), 0);
}

/* ---- misaligned accesses ---- */

/* at 0x80000000 */
static const uint32_t mis[] = {
	0x00008437, /* 0000: lui s0,0x8 */
	0x0014041b, /* 0004: addiw s0,s0,1 */
	0x01041413, /* 0008: slli s0,s0,0x10 */
	0x00142503, /* 000c: lw a0,1(s0) */
	0x00345583, /* 0010: lhu a1,3(s0) */
	0x00541603, /* 0014: lh a2,5(s0) */
	0x00646683, /* 0018: lwu a3,6(s0) */
	0x00943703, /* 001c: ld a4,9(s0) */
	0x004492b7, /* 0020: lui t0,0x449 */
	0x8cd2829b, /* 0024: addiw t0,t0,-1843 */
	0x00e29293, /* 0028: slli t0,t0,0xe */
	0x45528293, /* 002c: addi t0,t0,1109 */
	0x00c29293, /* 0030: slli t0,t0,0xc */
	0x66728293, /* 0034: addi t0,t0,1639 */
	0x00c29293, /* 0038: slli t0,t0,0xc */
	0x78828293, /* 003c: addi t0,t0,1928 */
	0x00542923, /* 0040: sw t0,18(s0) */
	0x025430a3, /* 0044: sd t0,33(s0) */
	0x000804b7, /* 0048: lui s1,0x80 */
	0x0114849b, /* 004c: addiw s1,s1,17 */
	0x00c49493, /* 0050: slli s1,s1,0xc */
	0xffc48493, /* 0054: addi s1,s1,-4 */
	0x0004b783, /* 0058: ld a5,0(s1) */
	0x00349803, /* 005c: lh a6,3(s1) */
	0xfe54bf23, /* 0060: sd t0,-2(s1) */
	0x7e54bca3, /* 0064: sd t0,2041(s1) */
	0x7f94b883, /* 0068: ld a7,2041(s1) */
	0x00080fb7, /* 006c: lui t6,0x80 */
	0x3fff8f9b, /* 0070: addiw t6,t6,1023 */
	0x00cf9f93, /* 0074: slli t6,t6,0xc */
	0x00100f13, /* 0078: addi t5,zero,1 */
	0x01efb023, /* 007c: sd t5,0(t6) */
	0x0000006f, /* 0080: jal zero,80000080 */
};

static void test_misaligned(void **state)
{
	struct fix *f = *state;
	uint8_t *d = ram(f, DATA, 2 * PAGE_SIZE);
	for (int k = 0; k < 64; k++)
		d[k] = (uint8_t)(0x80 + k);
	for (int k = 0; k < 8; k++)
		d[0xffc + k] = (uint8_t)(0xa0 + k);
	LOAD(f, RAM_BASE, mis);
	run_pass(f);

	assert_int_equal(X(A0), 0xffffffff84838281ULL); /* lw 1(s0) */
	assert_int_equal(X(A1), 0x8483);		/* lhu 3(s0) */
	assert_int_equal(X(A2), 0xffffffffffff8685ULL); /* lh 5(s0) */
	assert_int_equal(X(A3), 0x89888786);		/* lwu 6(s0) */
	assert_int_equal(X(A4), 0x908f8e8d8c8b8a89ULL); /* ld 9(s0) */
	static const uint8_t t0[8] = { 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11 };
	assert_memory_equal(d + 18, t0, 4); /* sw 18(s0) */
	assert_int_equal(d[17], 0x80 + 17);
	assert_int_equal(d[22], 0x80 + 22);
	assert_memory_equal(d + 33, t0, 8); /* sd 33(s0) */
	assert_int_equal(d[32], 0x80 + 32);
	assert_int_equal(d[41], 0x80 + 41);
	/* Across the page boundary at DATA + 0x1000. */
	assert_int_equal(X(A5), 0xa7a6a5a4a3a2a1a0ULL);
	assert_int_equal(X(A6), 0xffffffffffffa4a3ULL);
	assert_memory_equal(d + 0xffa, t0, 8);
	assert_int_equal(d[0xff9], 0);
	assert_int_equal(d[0x1002], 0xa6);
	assert_int_equal(X(A7), 0x1122334455667788ULL);
	assert_memory_equal(d + 0x17f5, t0, 8);
}

/* ---- counters ---- */

/* at 0x80000000 */
static const uint32_t cnt[] = {
	0x00000297, /* 0000: auipc t0,0x0 */
	0x09828293, /* 0004: addi t0,t0,152 */
	0x30529073, /* 0008: csrrw zero,mtvec,t0 */
	0xb0202573, /* 000c: csrrs a0,minstret,zero */
	0x00128293, /* 0010: addi t0,t0,1 */
	0x00128293, /* 0014: addi t0,t0,1 */
	0x00128293, /* 0018: addi t0,t0,1 */
	0x00128293, /* 001c: addi t0,t0,1 */
	0x00128293, /* 0020: addi t0,t0,1 */
	0x00128293, /* 0024: addi t0,t0,1 */
	0x00128293, /* 0028: addi t0,t0,1 */
	0x00128293, /* 002c: addi t0,t0,1 */
	0x00128293, /* 0030: addi t0,t0,1 */
	0x00128293, /* 0034: addi t0,t0,1 */
	0xb02025f3, /* 0038: csrrs a1,minstret,zero */
	0x00500313, /* 003c: addi t1,zero,5 */
	0xfff30313, /* 0040: addi t1,t1,-1 */
	0xfe031ee3, /* 0044: bne t1,zero,80000040 */
	0xb0202673, /* 0048: csrrs a2,minstret,zero */
	0x3e800393, /* 004c: addi t2,zero,1000 */
	0xb0239073, /* 0050: csrrw zero,minstret,t2 */
	0xb02026f3, /* 0054: csrrs a3,minstret,zero */
	0xc0202773, /* 0058: csrrs a4,instret,zero */
	0xb00024f3, /* 005c: csrrs s1,mcycle,zero */
	0xb0002973, /* 0060: csrrs s2,mcycle,zero */
	0xb02029f3, /* 0064: csrrs s3,minstret,zero */
	0x00100293, /* 0068: addi t0,zero,1 */
	0x00128293, /* 006c: addi t0,t0,1 */
	0x30054573, /* 0070: .word 0x30054573 */
	0xb0202a73, /* 0074: csrrs s4,minstret,zero */
	0x00000073, /* 0078: ecall */
	0xb0202b73, /* 007c: csrrs s6,minstret,zero */
	0x00080fb7, /* 0080: lui t6,0x80 */
	0x3fff8f9b, /* 0084: addiw t6,t6,1023 */
	0x00cf9f93, /* 0088: slli t6,t6,0xc */
	0x00100f13, /* 008c: addi t5,zero,1 */
	0x01efb023, /* 0090: sd t5,0(t6) */
	0x0000006f, /* 0094: jal zero,80000094 */
	0xb0202af3, /* 0098: csrrs s5,minstret,zero */
	0x341022f3, /* 009c: csrrs t0,mepc,zero */
	0x00428293, /* 00a0: addi t0,t0,4 */
	0x34129073, /* 00a4: csrrw zero,mepc,t0 */
	0x30200073, /* 00a8: mret */
};
#define CNT_HANDLER 0x80000098ULL

/* minstret counts retired instructions: a csrr reads the count before itself; a write is
 * what the next instruction reads; a trapping instruction (illegal, ecall) does not
 * retire; mcycle runs on through a minstret write. */
static void test_minstret(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, cnt);
	run_pass(f);
	assert_int_equal(X(A0), 3);
	assert_int_equal(X(A1) - X(A0), 11); /* csrr + 10 addi */
	assert_int_equal(X(A2) - X(A1), 12); /* csrr + li + 5 * (addi + bnez) */
	assert_int_equal(X(A3), 1000);
	assert_int_equal(X(A4), 1001);
	assert_int_equal(X(S1), 31);
	assert_int_equal(X(S2), 32);
	assert_int_equal(X(S3), 1004);
	assert_int_equal(X(S4), 1012); /* csrr + 2 addi + 5 in the handler */
	assert_int_equal(X(S5), 1013); /* csrr; the ecall did not retire */
	assert_int_equal(X(S6), 1018);
}

/* at 0x80000000 */
static const uint32_t inh[] = {
	0x32025073, /* 0000: csrrwi zero,mcountinhibit,4 */
	0x32002473, /* 0004: csrrs s0,mcountinhibit,zero */
	0xb0202573, /* 0008: csrrs a0,minstret,zero */
	0x00128293, /* 000c: addi t0,t0,1 */
	0x00128293, /* 0010: addi t0,t0,1 */
	0x00128293, /* 0014: addi t0,t0,1 */
	0x00128293, /* 0018: addi t0,t0,1 */
	0xb02025f3, /* 001c: csrrs a1,minstret,zero */
	0x3200d073, /* 0020: csrrwi zero,mcountinhibit,1 */
	0xb0002673, /* 0024: csrrs a2,mcycle,zero */
	0x00128293, /* 0028: addi t0,t0,1 */
	0x00128293, /* 002c: addi t0,t0,1 */
	0x00128293, /* 0030: addi t0,t0,1 */
	0xb00026f3, /* 0034: csrrs a3,mcycle,zero */
	0x32005073, /* 0038: csrrwi zero,mcountinhibit,0 */
	0x00080fb7, /* 003c: lui t6,0x80 */
	0x3fff8f9b, /* 0040: addiw t6,t6,1023 */
	0x00cf9f93, /* 0044: slli t6,t6,0xc */
	0x00100f13, /* 0048: addi t5,zero,1 */
	0x01efb023, /* 004c: sd t5,0(t6) */
	0x0000006f, /* 0050: jal zero,80000050 */
};

/* mcountinhibit.IR / .CY stop minstret / mcycle. */
static void test_mcountinhibit(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, inh);
	run_pass(f);
	assert_int_equal(X(S0), 4);	/* the bit is implemented (reads back) */
	assert_int_equal(X(A1), X(A0)); /* so minstret must not count */
	assert_int_equal(X(A3), X(A2)); /* nor mcycle with CY */
}

/* ---- interrupts ---- */

/* at 0x80000000 */
static const uint32_t irqspin[] = {
	0x00000297, /* 0000: auipc t0,0x0 */
	0x02428293, /* 0004: addi t0,t0,36 */
	0x30529073, /* 0008: csrrw zero,mtvec,t0 */
	0x00800293, /* 000c: addi t0,zero,8 */
	0x3042a073, /* 0010: csrrs zero,mie,t0 */
	0x30046073, /* 0014: csrrsi zero,mstatus,8 */
	0x00000593, /* 0018: addi a1,zero,0 */
	0x00158593, /* 001c: addi a1,a1,1 */
	0xffdff06f, /* 0020: jal zero,8000001c */
	0x34202573, /* 0024: csrrs a0,mcause,zero */
	0x34102673, /* 0028: csrrs a2,mepc,zero */
	0x30401073, /* 002c: csrrw zero,mie,zero */
	0x00080fb7, /* 0030: lui t6,0x80 */
	0x3fff8f9b, /* 0034: addiw t6,t6,1023 */
	0x00cf9f93, /* 0038: slli t6,t6,0xc */
	0x00100f13, /* 003c: addi t5,zero,1 */
	0x01efb023, /* 0040: sd t5,0(t6) */
	0x0000006f, /* 0044: jal zero,80000044 */
};
#define IRQSPIN_HANDLER 0x80000024ULL
#define IRQSPIN_SPIN 0x8000001cULL

/* An interrupt raised from another thread stops a self-chained loop. */
static void test_interrupt_breaks_loop(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, irqspin);
	int r = run_irq(f, MIP_MSIP, IRQSPIN_SPIN, 10);
	assert_int_equal(r, VM_EXIT_PASS);
	assert_int_equal(X(A0), IRQ_FLAG | 3);
	assert_true(X(A2) == IRQSPIN_SPIN || X(A2) == IRQSPIN_SPIN + 4);
	assert_true(X(A1) > 0);
	assert_int_equal(f->h->priv, PRV_M);
}

/* at 0x80000000 */
static const uint32_t wfi[] = {
	0x00000297, /* 0000: auipc t0,0x0 */
	0x02828293, /* 0004: addi t0,t0,40 */
	0x30529073, /* 0008: csrrw zero,mtvec,t0 */
	0x08000293, /* 000c: addi t0,zero,128 */
	0x3042a073, /* 0010: csrrs zero,mie,t0 */
	0x30046073, /* 0014: csrrsi zero,mstatus,8 */
	0x00000593, /* 0018: addi a1,zero,0 */
	0x10500073, /* 001c: wfi */
	0x00158593, /* 0020: addi a1,a1,1 */
	0xff9ff06f, /* 0024: jal zero,8000001c */
	0x34202573, /* 0028: csrrs a0,mcause,zero */
	0x34102673, /* 002c: csrrs a2,mepc,zero */
	0x30401073, /* 0030: csrrw zero,mie,zero */
	0x00080fb7, /* 0034: lui t6,0x80 */
	0x3fff8f9b, /* 0038: addiw t6,t6,1023 */
	0x00cf9f93, /* 003c: slli t6,t6,0xc */
	0x00100f13, /* 0040: addi t5,zero,1 */
	0x01efb023, /* 0044: sd t5,0(t6) */
	0x0000006f, /* 0048: jal zero,80000048 */
};
#define WFI_HANDLER 0x80000028ULL
#define WFI_SLEEP 0x8000001cULL

/* WFI sleeps until an enabled interrupt is pending; mepc is the instruction after it. */
static void test_wfi_wakes(void **state)
{
	struct fix *f = *state;
	LOAD(f, RAM_BASE, wfi);
	int r = run_irq(f, MIP_MTIP, WFI_SLEEP + 4, 10);
	assert_int_equal(r, VM_EXIT_PASS);
	assert_int_equal(X(A0), IRQ_FLAG | 7);
	assert_int_equal(X(A2), WFI_SLEEP + 4);
	assert_int_equal(X(A1), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, hart_fixture_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_arith),
		T(test_loops),
		T(test_jal_jalr),
		T(test_compressed),
		T(test_straddle_bare),
		T(test_straddle_sv39),
		T(test_straddle_second_page_fault),
		T(test_sfence_vma_address),
		T(test_exceptions),
		T(test_fetch_fault_then_handler_in_same_page),
		T(test_ecall_delegation),
		T(test_privileged_insns_from_s),
		T(test_self_modifying_fence_i),
		T(test_lr_sc),
		T(test_amo),
		T(test_misaligned),
		T(test_minstret),
		T(test_mcountinhibit),
		T(test_interrupt_breaks_loop),
		T(test_wfi_wakes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
