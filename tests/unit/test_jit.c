/* Differential test of the code generator (src/cpu/riscv/jit_x86.c) against the interpreter
 * (exec.c). Random RV64GC programs, built at run time by the small encoder below from the
 * integer instructions the code generator translates (plus a few it leaves to the
 * interpreter, and some that trap), each run in fresh VMs: once with the interpreter only
 * (MABO_JIT=0) and once with every block translated before its first run (MABO_JIT_HOT=1);
 * every other program also with MABO_JIT_HOT=2, which mixes interpreted and translated runs
 * of the same blocks. All registers (integer and FP), the pc, minstret, the trap CSRs and the
 * whole of guest RAM must come out identical.
 *
 * A program is a main stream of random items (ALU and M ops with edge operands, LUI/AUIPC
 * with immediates near +-2 GiB, loads and stores of every width into a 3-page scratch area,
 * aligned, misaligned and page-crossing, RVC forms, writes to x0, forward branches and
 * jumps, indirect jumps through auipc-computed registers, counted backward loops, calls into
 * "islands" in other pages, CSR/FP/AMO/fence instructions the code generator leaves to the
 * interpreter, and faulting accesses, some only on one iteration of a loop) ending with a
 * store to the HTIF tohost word. A third of the programs run in S-mode under Sv39, the
 * scratch pages mapped to permuted physical pages, with an unmapped page and a read-only
 * alias; a sixth in M-mode with mstatus.MPRV, their loads and stores going through the same
 * tables (as S, then as U once a trap's mret has cleared MPP). The code also runs at a
 * second address, entered and left by xor-ing a jump target with 0x60000: another physical
 * copy in M-mode, a virtual alias of the same physical code under Sv39.
 *
 * Traps go to an M-mode handler that logs every register plus mcause, mepc, mtval, minstret
 * and mstatus and resumes after the trapping instruction, so the log compares the state each
 * engine had at every trap (registers cached in host registers must have been written back).
 * Every instruction the encoder emits is also decoded with rv_decode and checked.
 *
 * Targeted tests check exact values: faults in the middle of translated blocks (outside
 * RAM, across its end, Sv39 page faults, read-only pages, page-crossing accesses over
 * non-adjacent physical pages), interpreter fallbacks mid-block, a self-looping block that
 * faults on a later iteration, and patched block-to-block jumps across fence.i.
 *
 * Reproduce one program:
 *   MABO_JIT_TEST_SEED=<seed> MABO_JIT_TEST_ONLY=<index> build/tests/test_jit
 * MABO_JIT_TEST_DUMP=1 also lists the program; MABO_JIT_TEST_PROGS=<n> changes the count.
 * tests/fuzz/fuzz_jit.c includes this file (with JITDIFF_FUZZ defined) as a libFuzzer target. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "cpu/riscv/hart.h"
#include "cpu/riscv/insn.h"
#include "cpu/riscv/jit.h"
#include "machine/riscv-virt/htif.h"
#include "xregs.h"

/* ---- guest memory map ---- */

#define JD_RAM_SIZE 0x100000ULL
#define JD_CODE RAM_BASE /* 64 KiB: the main stream below JD_MAIN_END, islands above */
#define JD_CODE_SIZE 0x10000u
#define JD_MAIN_END 0x8000u
#define JD_DATA (RAM_BASE + 0x20000) /* the scratch area: 3 pages */
#define JD_DATA_SIZE 0x3000u
#define JD_GP (JD_DATA + 0x1000) /* gp: the middle page's start */
#define JD_HANDLER (RAM_BASE + 0x30000)
#define JD_LOG (RAM_BASE + 0x40000) /* trap log, 64 KiB aligned */
#define JD_TWIN 0x60000u	    /* code ^ JD_TWIN: a copy (M-mode), an alias (Sv39) */
#define JD_LOG_SIZE 0x10000u
#define JD_LOG_LIMIT 0xf000u /* the handler fails the run when the log gets here */
#define JD_LOG_WORDS 36	     /* mstatus, x1..x31, mcause, mepc, mtval, minstret */
#define JD_LOG_ENTRY (8 * JD_LOG_WORDS)
#define JD_PT (RAM_BASE + 0x80000) /* Sv39 tables: root, level 1, level 0 */
#define JD_TOHOST (RAM_BASE + 0xff000)
#define JD_TIMEOUT_MS 2000

enum { L_MSTATUS = 0, L_MCAUSE = 32, L_MEPC = 33, L_MTVAL = 34, L_MINSTRET = 35 };

static const char *const xname[32] = {
	"zero", "ra", "sp", "gp", "tp",	 "t0",	"t1", "t2", "s0", "s1", "a0",
	"a1",	"a2", "a3", "a4", "a5",	 "a6",	"a7", "s2", "s3", "s4", "s5",
	"s6",	"s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6",
};

static const char *const opname[OP_COUNT] = {
#define JD_OPNAME(n) #n,
	RV_OPS(JD_OPNAME)
#undef JD_OPNAME
};

#define PTE_V 1ULL
#define PTE_R 2ULL
#define PTE_W 4ULL
#define PTE_X 8ULL
#define PTE_U 16ULL
#define PTE_A 64ULL
#define PTE_D 128ULL

/* ---- programs ---- */

#define MAX_LAB 2048
#define MAX_FIX 2048
#define MAX_INSN 8192
#define MAX_PEND 16

struct prog {
	uint64_t seed;
	int index;
	bool smode;	   /* S-mode under Sv39 (else M-mode, bare) */
	bool mprv;	   /* M-mode with mstatus.MPRV: loads and stores through Sv39 */
	bool fs_off;	   /* mstatus.FS off: FP instructions are illegal */
	unsigned host_off; /* guest RAM's offset from a host page boundary */
	unsigned perm[3];  /* Sv39: VA scratch page k maps to physical scratch page perm[k] */
	uint64_t x[32];
	uint64_t start;	 /* first pc */
	uint64_t end_pc; /* the final "j ." */
	int ninsn;
	int nipos;
	uint32_t ipos[MAX_INSN]; /* code offsets of the instructions, for listings */
	uint8_t code[JD_CODE_SIZE];
	uint8_t data[JD_DATA_SIZE];
};

/* ---- random numbers: splitmix64, or the fuzzer's bytes first ---- */

struct gen;
static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

enum { FX_B, FX_J, FX_CB, FX_CJ, FX_HI, FX_LO };

struct fixup {
	uint32_t at;  /* code offset of the instruction to patch */
	uint32_t aux; /* FX_LO: the auipc's offset */
	int kind, lab, op;
	int32_t extra; /* FX_LO: added to the low part */
};

struct gen {
	uint64_t s;
	const uint8_t *in;
	size_t inlen, inpos;
	struct prog *p;
	uint32_t pos[2], end[2]; /* streams: 0 main, 1 islands */
	int cur;
	uint32_t lab[MAX_LAB];
	int nlab;
	struct fixup fx[MAX_FIX];
	int nfx;
	int hot[8], nhot;
	int traps;     /* trap items emitted, counted by how often they may run */
	bool bad;      /* out of room or a target out of range: generate again */
	char err[320]; /* the encoder and rv_decode disagree */
};

static uint32_t rnd(struct gen *g)
{
	if (g->in && g->inpos < g->inlen) {
		uint32_t v = 0;
		for (int k = 0; k < 4 && g->inpos < g->inlen; k++)
			v |= (uint32_t)g->in[g->inpos++] << (8 * k);
		return v;
	}
	return (uint32_t)(splitmix(&g->s) >> 32);
}

static uint32_t below(struct gen *g, uint32_t n)
{
	return n ? rnd(g) % n : 0;
}

static uint64_t rnd64(struct gen *g)
{
	uint64_t hi = rnd(g);
	return hi << 32 | rnd(g);
}

static bool chance(struct gen *g, unsigned pct)
{
	return below(g, 100) < pct;
}

/* ---- encoder ---- */

static uint32_t enc_r(uint32_t opc, uint32_t f3, uint32_t f7, int rd, int rs1, int rs2)
{
	return f7 << 25 | (uint32_t)rs2 << 20 | (uint32_t)rs1 << 15 | f3 << 12 | (uint32_t)rd << 7 |
	       opc;
}

static uint32_t enc_i(uint32_t opc, uint32_t f3, int rd, int rs1, int32_t imm)
{
	return ((uint32_t)imm & 0xfff) << 20 | (uint32_t)rs1 << 15 | f3 << 12 | (uint32_t)rd << 7 |
	       opc;
}

static uint32_t enc_s(uint32_t opc, uint32_t f3, int rs1, int rs2, int32_t imm)
{
	uint32_t u = (uint32_t)imm & 0xfff;
	return (u >> 5) << 25 | (uint32_t)rs2 << 20 | (uint32_t)rs1 << 15 | f3 << 12 |
	       (u & 31) << 7 | opc;
}

static uint32_t b_imm(int32_t imm)
{
	uint32_t u = (uint32_t)imm;
	return ((u >> 12) & 1) << 31 | ((u >> 5) & 0x3f) << 25 | ((u >> 1) & 0xf) << 8 |
	       ((u >> 11) & 1) << 7;
}

static uint32_t j_imm(int32_t imm)
{
	uint32_t u = (uint32_t)imm;
	return ((u >> 20) & 1) << 31 | ((u >> 1) & 0x3ff) << 21 | ((u >> 11) & 1) << 20 |
	       ((u >> 12) & 0xff) << 12;
}

static uint32_t cj_imm(int32_t imm)
{
	uint32_t u = (uint32_t)imm;
	return ((u >> 11) & 1) << 12 | ((u >> 4) & 1) << 11 | ((u >> 8) & 3) << 9 |
	       ((u >> 10) & 1) << 8 | ((u >> 6) & 1) << 7 | ((u >> 7) & 1) << 6 |
	       ((u >> 1) & 7) << 3 | ((u >> 5) & 1) << 2;
}

static uint32_t cb_imm(int32_t imm)
{
	uint32_t u = (uint32_t)imm;
	return ((u >> 8) & 1) << 12 | ((u >> 3) & 3) << 10 | ((u >> 6) & 3) << 5 |
	       ((u >> 1) & 3) << 3 | ((u >> 5) & 1) << 2;
}

/* The integer instructions by format, with their opcode, funct3 and funct7. */
static const struct enc {
	int op;
	char fmt; /* R, I (incl. loads, jalr), H (shift by immediate), S, B, U */
	uint32_t opc, f3, f7;
} encs[] = {
	{ OP_ADD, 'R', 0x33, 0, 0 },	  { OP_SUB, 'R', 0x33, 0, 0x20 },
	{ OP_SLL, 'R', 0x33, 1, 0 },	  { OP_SLT, 'R', 0x33, 2, 0 },
	{ OP_SLTU, 'R', 0x33, 3, 0 },	  { OP_XOR, 'R', 0x33, 4, 0 },
	{ OP_SRL, 'R', 0x33, 5, 0 },	  { OP_SRA, 'R', 0x33, 5, 0x20 },
	{ OP_OR, 'R', 0x33, 6, 0 },	  { OP_AND, 'R', 0x33, 7, 0 },
	{ OP_ADDW, 'R', 0x3b, 0, 0 },	  { OP_SUBW, 'R', 0x3b, 0, 0x20 },
	{ OP_SLLW, 'R', 0x3b, 1, 0 },	  { OP_SRLW, 'R', 0x3b, 5, 0 },
	{ OP_SRAW, 'R', 0x3b, 5, 0x20 },  { OP_MUL, 'R', 0x33, 0, 1 },
	{ OP_MULH, 'R', 0x33, 1, 1 },	  { OP_MULHSU, 'R', 0x33, 2, 1 },
	{ OP_MULHU, 'R', 0x33, 3, 1 },	  { OP_DIV, 'R', 0x33, 4, 1 },
	{ OP_DIVU, 'R', 0x33, 5, 1 },	  { OP_REM, 'R', 0x33, 6, 1 },
	{ OP_REMU, 'R', 0x33, 7, 1 },	  { OP_MULW, 'R', 0x3b, 0, 1 },
	{ OP_DIVW, 'R', 0x3b, 4, 1 },	  { OP_DIVUW, 'R', 0x3b, 5, 1 },
	{ OP_REMW, 'R', 0x3b, 6, 1 },	  { OP_REMUW, 'R', 0x3b, 7, 1 },
	{ OP_ADDI, 'I', 0x13, 0, 0 },	  { OP_SLTI, 'I', 0x13, 2, 0 },
	{ OP_SLTIU, 'I', 0x13, 3, 0 },	  { OP_XORI, 'I', 0x13, 4, 0 },
	{ OP_ORI, 'I', 0x13, 6, 0 },	  { OP_ANDI, 'I', 0x13, 7, 0 },
	{ OP_ADDIW, 'I', 0x1b, 0, 0 },	  { OP_JALR, 'I', 0x67, 0, 0 },
	{ OP_LB, 'I', 0x03, 0, 0 },	  { OP_LH, 'I', 0x03, 1, 0 },
	{ OP_LW, 'I', 0x03, 2, 0 },	  { OP_LD, 'I', 0x03, 3, 0 },
	{ OP_LBU, 'I', 0x03, 4, 0 },	  { OP_LHU, 'I', 0x03, 5, 0 },
	{ OP_LWU, 'I', 0x03, 6, 0 },	  { OP_SLLI, 'H', 0x13, 1, 0 },
	{ OP_SRLI, 'H', 0x13, 5, 0 },	  { OP_SRAI, 'H', 0x13, 5, 0x20 },
	{ OP_SLLIW, 'H', 0x1b, 1, 0 },	  { OP_SRLIW, 'H', 0x1b, 5, 0 },
	{ OP_SRAIW, 'H', 0x1b, 5, 0x20 }, { OP_SB, 'S', 0x23, 0, 0 },
	{ OP_SH, 'S', 0x23, 1, 0 },	  { OP_SW, 'S', 0x23, 2, 0 },
	{ OP_SD, 'S', 0x23, 3, 0 },	  { OP_BEQ, 'B', 0x63, 0, 0 },
	{ OP_BNE, 'B', 0x63, 1, 0 },	  { OP_BLT, 'B', 0x63, 4, 0 },
	{ OP_BGE, 'B', 0x63, 5, 0 },	  { OP_BLTU, 'B', 0x63, 6, 0 },
	{ OP_BGEU, 'B', 0x63, 7, 0 },	  { OP_LUI, 'U', 0x37, 0, 0 },
	{ OP_AUIPC, 'U', 0x17, 0, 0 },
};

static const struct enc *enc_of(int op)
{
	for (size_t k = 0; k < sizeof(encs) / sizeof(encs[0]); k++)
		if (encs[k].op == op)
			return &encs[k];
	abort();
}

static unsigned mem_size(int op)
{
	switch (op) {
	case OP_LB:
	case OP_LBU:
	case OP_SB: return 1;
	case OP_LH:
	case OP_LHU:
	case OP_SH: return 2;
	case OP_LW:
	case OP_LWU:
	case OP_SW: return 4;
	default: return 8;
	}
}

enum { C_RD = 1, C_RS1 = 2, C_RS2 = 4, C_IMM = 8 };

/* Decodes raw with rv_decode and records a disagreement with what the encoder meant. */
static void chk(struct gen *g, uint32_t raw, int op, int rd, int rs1, int rs2, int64_t imm,
		unsigned m)
{
	struct insn in;
	int got = (int)rv_decode(raw, &in);
	int grd = in.rd == RV_X0_SINK ? 0 : in.rd;
	if (got == op && (!(m & C_RD) || grd == rd) && (!(m & C_RS1) || in.rs1 == rs1) &&
	    (!(m & C_RS2) || in.rs2 == rs2) && (!(m & C_IMM) || in.imm == imm))
		return;
	if (!g->err[0])
		snprintf(g->err, sizeof(g->err),
			 "encoder and rv_decode disagree on %#x: meant %s rd %d rs1 %d rs2 %d "
			 "imm %" PRId64
			 " (checked %#x), decoded %s rd %d rs1 %d rs2 %d imm %" PRId64,
			 raw, opname[op], rd, rs1, rs2, imm, m, opname[got], grd, in.rs1, in.rs2,
			 in.imm);
}

static void put(struct gen *g, uint32_t raw, unsigned len)
{
	uint32_t at = g->pos[g->cur];
	if (at + len > g->end[g->cur]) {
		g->bad = true;
		return;
	}
	memcpy(g->p->code + at, &raw, len);
	g->pos[g->cur] = at + len;
	if (g->p->nipos < MAX_INSN)
		g->p->ipos[g->p->nipos++] = at;
	g->p->ninsn++;
}

static void e32(struct gen *g, uint32_t raw, int op, int rd, int rs1, int rs2, int64_t imm,
		unsigned m)
{
	chk(g, raw, op, rd, rs1, rs2, imm, m);
	put(g, raw, 4);
}

static void e16(struct gen *g, uint32_t raw, int op, int rd, int rs1, int rs2, int64_t imm,
		unsigned m)
{
	chk(g, raw, op, rd, rs1, rs2, imm, m);
	put(g, raw, 2);
}

static void R(struct gen *g, int op, int rd, int rs1, int rs2)
{
	const struct enc *e = enc_of(op);
	e32(g, enc_r(e->opc, e->f3, e->f7, rd, rs1, rs2), op, rd, rs1, rs2, 0,
	    C_RD | C_RS1 | C_RS2);
}

/* ALU with immediate, shifts (imm = shamt), loads, jalr. */
static void I(struct gen *g, int op, int rd, int rs1, int32_t imm)
{
	const struct enc *e = enc_of(op);
	if (e->fmt == 'H')
		e32(g, enc_i(e->opc, e->f3, rd, rs1, (int32_t)(e->f7 << 5) | imm), op, rd, rs1, 0,
		    imm, C_RD | C_RS1 | C_IMM);
	else
		e32(g, enc_i(e->opc, e->f3, rd, rs1, imm), op, rd, rs1, 0, imm,
		    C_RD | C_RS1 | C_IMM);
}

static void S(struct gen *g, int op, int rs1, int rs2, int32_t imm)
{
	const struct enc *e = enc_of(op);
	e32(g, enc_s(0x23, e->f3, rs1, rs2, imm), op, 0, rs1, rs2, imm, C_RS1 | C_RS2 | C_IMM);
}

static void U(struct gen *g, int op, int rd, uint32_t imm20)
{
	const struct enc *e = enc_of(op);
	imm20 &= 0xfffff;
	e32(g, imm20 << 12 | (uint32_t)rd << 7 | e->opc, op, rd, 0, 0,
	    (int64_t)(int32_t)(imm20 << 12), C_RD | C_IMM);
}

static void CSRR(struct gen *g, int rd, uint32_t csr)
{
	e32(g, csr << 20 | 2u << 12 | (uint32_t)rd << 7 | 0x73, OP_CSRRS, rd, 0, 0, csr,
	    C_RD | C_RS1 | C_IMM);
}

static void CSRW(struct gen *g, uint32_t csr, int rs1)
{
	e32(g, csr << 20 | (uint32_t)rs1 << 15 | 1u << 12 | 0x73, OP_CSRRW, 0, rs1, 0, csr,
	    C_RD | C_RS1 | C_IMM);
}

static void RAW32(struct gen *g, uint32_t raw, int op)
{
	e32(g, raw, op, 0, 0, 0, 0, 0);
}

static void RAW16(struct gen *g, uint32_t raw, int op)
{
	e16(g, raw, op, 0, 0, 0, 0, 0);
}

/* RVC. Register arguments are architectural numbers (x8..x15 for the 3-bit fields). */
static uint32_t c_ci(uint32_t f3, uint32_t q, int rd, int32_t imm6)
{
	uint32_t u = (uint32_t)imm6;
	return f3 << 13 | ((u >> 5) & 1) << 12 | (uint32_t)rd << 7 | (u & 0x1f) << 2 | q;
}

static void C_ADDI(struct gen *g, int rd, int32_t imm)
{
	e16(g, c_ci(0, 1, rd, imm), OP_ADDI, rd, rd, 0, imm, C_RD | C_RS1 | C_IMM);
}

static void C_ADDIW(struct gen *g, int rd, int32_t imm)
{
	e16(g, c_ci(1, 1, rd, imm), OP_ADDIW, rd, rd, 0, imm, C_RD | C_RS1 | C_IMM);
}

static void C_LI(struct gen *g, int rd, int32_t imm)
{
	e16(g, c_ci(2, 1, rd, imm), OP_ADDI, rd, 0, 0, imm, C_RD | C_RS1 | C_IMM);
}

static void C_LUI(struct gen *g, int rd, int32_t imm6)
{
	e16(g, c_ci(3, 1, rd, imm6), OP_LUI, rd, 0, 0, (int64_t)imm6 * 4096, C_RD | C_IMM);
}

static void C_SLLI(struct gen *g, int rd, int sh)
{
	e16(g, c_ci(0, 2, rd, sh), OP_SLLI, rd, rd, 0, sh, C_RD | C_RS1 | C_IMM);
}

/* c.srli (f2 0), c.srai (1), c.andi (2) */
static void C_SHA(struct gen *g, int f2, int rd, int32_t imm)
{
	uint32_t u = (uint32_t)imm;
	uint32_t raw = 4u << 13 | ((u >> 5) & 1) << 12 | (uint32_t)f2 << 10 |
		       (uint32_t)(rd - 8) << 7 | (u & 0x1f) << 2 | 1;
	static const int ops[3] = { OP_SRLI, OP_SRAI, OP_ANDI };
	e16(g, raw, ops[f2], rd, rd, 0, imm, C_RD | C_RS1 | C_IMM);
}

/* c.sub c.xor c.or c.and c.subw c.addw */
static void C_ALU(struct gen *g, int op, int rd, int rs2)
{
	uint32_t b12 = op == OP_SUBW || op == OP_ADDW;
	uint32_t f = op == OP_SUB || op == OP_SUBW   ? 0
		     : op == OP_XOR || op == OP_ADDW ? 1
		     : op == OP_OR		     ? 2
						     : 3;
	uint32_t raw = 4u << 13 | b12 << 12 | 3u << 10 | (uint32_t)(rd - 8) << 7 | f << 5 |
		       (uint32_t)(rs2 - 8) << 2 | 1;
	e16(g, raw, op, rd, rd, rs2, 0, C_RD | C_RS1 | C_RS2);
}

static void C_MV(struct gen *g, int rd, int rs2)
{
	e16(g, 4u << 13 | (uint32_t)rd << 7 | (uint32_t)rs2 << 2 | 2, OP_ADD, rd, 0, rs2, 0,
	    C_RD | C_RS1 | C_RS2);
}

static void C_ADD(struct gen *g, int rd, int rs2)
{
	e16(g, 4u << 13 | 1u << 12 | (uint32_t)rd << 7 | (uint32_t)rs2 << 2 | 2, OP_ADD, rd, rd,
	    rs2, 0, C_RD | C_RS1 | C_RS2);
}

static void C_JR(struct gen *g, int rs1)
{
	e16(g, 4u << 13 | (uint32_t)rs1 << 7 | 2, OP_JALR, 0, rs1, 0, 0, C_RD | C_RS1 | C_IMM);
}

static void C_JALR(struct gen *g, int rs1)
{
	e16(g, 4u << 13 | 1u << 12 | (uint32_t)rs1 << 7 | 2, OP_JALR, 1, rs1, 0, 0,
	    C_RD | C_RS1 | C_IMM);
}

static void C_ADDI4SPN(struct gen *g, int rd, uint32_t u)
{
	uint32_t raw = ((u >> 4) & 3) << 11 | ((u >> 6) & 0xf) << 7 | ((u >> 2) & 1) << 6 |
		       ((u >> 3) & 1) << 5 | (uint32_t)(rd - 8) << 2;
	e16(g, raw, OP_ADDI, rd, SP, 0, u, C_RD | C_RS1 | C_IMM);
}

/* c.lw c.ld c.sw c.sd: r is rd or rs2 */
static void C_MEM(struct gen *g, int op, int r, int base, uint32_t u)
{
	uint32_t raw;
	bool d = op == OP_LD || op == OP_SD;
	uint32_t f3 = op == OP_LW ? 2 : op == OP_LD ? 3 : op == OP_SW ? 6 : 7;
	if (d)
		raw = f3 << 13 | ((u >> 3) & 7) << 10 | (uint32_t)(base - 8) << 7 |
		      ((u >> 6) & 3) << 5 | (uint32_t)(r - 8) << 2;
	else
		raw = f3 << 13 | ((u >> 3) & 7) << 10 | (uint32_t)(base - 8) << 7 |
		      ((u >> 2) & 1) << 6 | ((u >> 6) & 1) << 5 | (uint32_t)(r - 8) << 2;
	if (op == OP_LW || op == OP_LD)
		e16(g, raw, op, r, base, 0, u, C_RD | C_RS1 | C_IMM);
	else
		e16(g, raw, op, 0, base, r, u, C_RS1 | C_RS2 | C_IMM);
}

/* c.lwsp c.ldsp c.swsp c.sdsp */
static void C_SPMEM(struct gen *g, int op, int r, uint32_t u)
{
	uint32_t raw;
	switch (op) {
	case OP_LW:
		raw = 2u << 13 | ((u >> 5) & 1) << 12 | (uint32_t)r << 7 | ((u >> 2) & 7) << 4 |
		      ((u >> 6) & 3) << 2 | 2;
		break;
	case OP_LD:
		raw = 3u << 13 | ((u >> 5) & 1) << 12 | (uint32_t)r << 7 | ((u >> 3) & 3) << 5 |
		      ((u >> 6) & 7) << 2 | 2;
		break;
	case OP_SW:
		raw = 6u << 13 | ((u >> 2) & 0xf) << 9 | ((u >> 6) & 3) << 7 | (uint32_t)r << 2 | 2;
		break;
	default:
		raw = 7u << 13 | ((u >> 3) & 7) << 10 | ((u >> 6) & 7) << 7 | (uint32_t)r << 2 | 2;
		break;
	}
	if (op == OP_LW || op == OP_LD)
		e16(g, raw, op, r, SP, 0, u, C_RD | C_RS1 | C_IMM);
	else
		e16(g, raw, op, 0, SP, r, u, C_RS1 | C_RS2 | C_IMM);
}

static void C_NOP(struct gen *g)
{
	e16(g, 1, OP_ADDI, 0, 0, 0, 0, C_RD | C_RS1 | C_IMM);
}

/* ---- labels and fixups ---- */

#define UNPLACED UINT32_MAX

static int new_label(struct gen *g)
{
	if (g->nlab == MAX_LAB) {
		g->bad = true;
		return 0;
	}
	g->lab[g->nlab] = UNPLACED;
	return g->nlab++;
}

static void place(struct gen *g, int l)
{
	g->lab[l] = g->pos[g->cur];
}

static void add_fix(struct gen *g, int kind, int lab, int op, uint32_t aux, int32_t extra)
{
	if (g->nfx == MAX_FIX) {
		g->bad = true;
		return;
	}
	g->fx[g->nfx++] = (struct fixup){
		.at = g->pos[g->cur], .aux = aux, .kind = kind, .lab = lab, .op = op, .extra = extra
	};
}

static void B(struct gen *g, int op, int rs1, int rs2, int lab)
{
	const struct enc *e = enc_of(op);
	add_fix(g, FX_B, lab, op, 0, 0);
	e32(g, enc_r(0x63, e->f3, 0, 0, rs1, rs2), op, 0, rs1, rs2, 0, C_RS1 | C_RS2);
}

static void JAL(struct gen *g, int rd, int lab)
{
	add_fix(g, FX_J, lab, OP_JAL, 0, 0);
	e32(g, (uint32_t)rd << 7 | 0x6f, OP_JAL, rd, 0, 0, 0, C_RD);
}

static void C_J(struct gen *g, int lab)
{
	add_fix(g, FX_CJ, lab, OP_JAL, 0, 0);
	e16(g, 5u << 13 | 1, OP_JAL, 0, 0, 0, 0, C_RD);
}

static void C_BZ(struct gen *g, bool nz, int rs1, int lab)
{
	int op = nz ? OP_BNE : OP_BEQ;
	add_fix(g, FX_CB, lab, op, 0, 0);
	e16(g, (nz ? 7u : 6u) << 13 | (uint32_t)(rs1 - 8) << 7 | 1, op, 0, rs1, 0, 0,
	    C_RS1 | C_RS2);
}

/* auipc rd, %hi(lab); returns the auipc's offset for the %lo fixups. */
static uint32_t AUIPC_HI(struct gen *g, int rd, int lab)
{
	uint32_t at = g->pos[g->cur];
	add_fix(g, FX_HI, lab, OP_AUIPC, 0, 0);
	e32(g, (uint32_t)rd << 7 | 0x17, OP_AUIPC, rd, 0, 0, 0, C_RD);
	return at;
}

/* addi or jalr rd, rs1, %lo(lab - hi_at) + extra */
static void I_LO(struct gen *g, int op, int rd, int rs1, int lab, uint32_t hi_at, int32_t extra)
{
	const struct enc *e = enc_of(op);
	add_fix(g, FX_LO, lab, op, hi_at, extra);
	e32(g, enc_i(e->opc, e->f3, rd, rs1, 0), op, rd, rs1, 0, 0, C_RD | C_RS1);
}

static void resolve(struct gen *g)
{
	for (int k = 0; k < g->nfx && !g->bad; k++) {
		const struct fixup *f = &g->fx[k];
		if (g->lab[f->lab] == UNPLACED) {
			snprintf(g->err, sizeof(g->err), "label %d never placed", f->lab);
			return;
		}
		int64_t off = (int64_t)g->lab[f->lab] - (int64_t)f->at;
		uint32_t raw = 0;
		int64_t imm = off;
		bool ok;
		memcpy(&raw, g->p->code + f->at, 4);
		switch (f->kind) {
		case FX_B:
			ok = off >= -4096 && off <= 4094;
			raw |= b_imm((int32_t)off);
			break;
		case FX_J:
			ok = off >= -(1 << 20) && off < (1 << 20);
			raw |= j_imm((int32_t)off);
			break;
		case FX_CB:
			ok = off >= -256 && off <= 254;
			raw = (raw & 0xffff) | cb_imm((int32_t)off);
			break;
		case FX_CJ:
			ok = off >= -2048 && off <= 2046;
			raw = (raw & 0xffff) | cj_imm((int32_t)off);
			break;
		case FX_HI: {
			int64_t hi = (off + 0x800) >> 12;
			ok = true;
			raw |= ((uint32_t)hi & 0xfffff) << 12;
			imm = (int64_t)(int32_t)(((uint32_t)hi & 0xfffff) << 12);
			break;
		}
		default: { /* FX_LO */
			int64_t o = (int64_t)g->lab[f->lab] - (int64_t)f->aux;
			int64_t lo = o - (((o + 0x800) >> 12) << 12) + f->extra;
			ok = lo >= -2048 && lo <= 2047;
			raw |= ((uint32_t)lo & 0xfff) << 20;
			imm = lo;
			break;
		}
		}
		if (!ok) {
			g->bad = true;
			return;
		}
		unsigned len = f->kind == FX_CB || f->kind == FX_CJ ? 2 : 4;
		memcpy(g->p->code + f->at, &raw, len);
		chk(g, raw, f->op, 0, 0, 0, imm, C_IMM);
	}
}

/* ---- random program items ---- */

struct ctx {
	uint32_t forbid; /* registers the item may not write */
	bool loops, calls;
	int mult;    /* how many times the context may run (loop iterations) */
	int counter; /* in a loop: its counter register (n down to 1), else 0 */
	int iters;   /* the loop's n */
	int npend;
	int plab[MAX_PEND], pcnt[MAX_PEND];
};

static void item(struct gen *g, struct ctx *c);

static void pend(struct gen *g, struct ctx *c, int lab, int after)
{
	if (after <= 0 || c->npend == MAX_PEND) {
		place(g, lab);
		return;
	}
	c->plab[c->npend] = lab;
	c->pcnt[c->npend++] = after;
}

static void tick(struct gen *g, struct ctx *c)
{
	for (int k = 0; k < c->npend;) {
		if (--c->pcnt[k] <= 0) {
			place(g, c->plab[k]);
			c->npend--;
			c->plab[k] = c->plab[c->npend];
			c->pcnt[k] = c->pcnt[c->npend];
		} else {
			k++;
		}
	}
}

static void close_ctx(struct gen *g, struct ctx *c)
{
	for (int k = 0; k < c->npend; k++)
		place(g, c->plab[k]);
	c->npend = 0;
}

static int pick_src(struct gen *g)
{
	uint32_t k = below(g, 100);
	if (k < 8)
		return 0;
	if (k < 55)
		return g->hot[below(g, (uint32_t)g->nhot)];
	return (int)below(g, 32);
}

static bool writable(const struct ctx *c, int r)
{
	return !((c->forbid >> r) & 1);
}

static int pick_dst(struct gen *g, const struct ctx *c)
{
	for (;;) {
		uint32_t k = below(g, 100);
		int r = k < 5	 ? 0
			: k < 55 ? g->hot[below(g, (uint32_t)g->nhot)]
				 : 1 + (int)below(g, 31);
		if (writable(c, r))
			return r;
	}
}

static int pick_dst_nz(struct gen *g, const struct ctx *c)
{
	for (;;) {
		int r = pick_dst(g, c);
		if (r)
			return r;
	}
}

/* x8..x15, writable; -1 when none is */
static int pick_cdst(struct gen *g, const struct ctx *c)
{
	for (int t = 0; t < 16; t++) {
		int r = chance(g, 50) && g->hot[0] >= 8 && g->hot[0] < 16 ? g->hot[0]
									  : 8 + (int)below(g, 8);
		if (writable(c, r))
			return r;
	}
	for (int r = 8; r < 16; r++)
		if (writable(c, r))
			return r;
	return -1;
}

static int pick_csrc(struct gen *g)
{
	return 8 + (int)below(g, 8);
}

static int32_t imm12(struct gen *g)
{
	static const int32_t edge[] = { 0, 1, -1, 2047, -2048, 2, -2, 0x7f0, 0x400 };
	uint32_t k = below(g, 10);
	if (k < 3)
		return edge[below(g, sizeof(edge) / sizeof(edge[0]))];
	if (k < 6)
		return (int32_t)below(g, 33) - 16;
	return (int32_t)below(g, 4096) - 2048;
}

static int32_t imm6(struct gen *g)
{
	return (int32_t)below(g, 64) - 32;
}

static int32_t nz_imm6(struct gen *g)
{
	int32_t v;
	do
		v = imm6(g);
	while (!v);
	return v;
}

static uint32_t imm20(struct gen *g)
{
	static const uint32_t edge[] = { 0x7ffff, 0x80000, 0x80001, 0xfffff, 0x00001,
					 0x7fffe, 0x00000, 0xffffe, 0x12345 };
	if (chance(g, 60))
		return edge[below(g, sizeof(edge) / sizeof(edge[0]))];
	return rnd(g) & 0xfffff;
}

/* r = v for any 64-bit v: lui/addiw the top half, then shift in the low half. */
static void li64(struct gen *g, int r, uint64_t v)
{
	int32_t hi = (int32_t)(v >> 32);
	uint32_t lo = (uint32_t)v;
	int32_t h12 = (int32_t)((uint32_t)hi << 20) >> 20;
	uint32_t h20 = ((uint32_t)hi - (uint32_t)h12) >> 12;
	U(g, OP_LUI, r, h20);
	I(g, OP_ADDIW, r, r, h12);
	I(g, OP_SLLI, r, r, 11);
	I(g, OP_ORI, r, r, (int32_t)((lo >> 21) & 0x7ff));
	I(g, OP_SLLI, r, r, 11);
	I(g, OP_ORI, r, r, (int32_t)((lo >> 10) & 0x7ff));
	I(g, OP_SLLI, r, r, 10);
	I(g, OP_ORI, r, r, (int32_t)(lo & 0x3ff));
}

enum { EDGE_0 = 0, EDGE_M1 = 1, EDGE_I64MIN = 3, EDGE_I32MIN = 6, EDGE_KINDS = 12 };

/* r = an edge value: 0, -1, 1, INT64_MIN, INT64_MAX, INT32_MIN, INT32_MAX, ... */
static void set_edge_kind(struct gen *g, int r, uint32_t kind)
{
	switch (kind) {
	case 0:
		if (chance(g, 50))
			C_LI(g, r, 0);
		else
			I(g, OP_ADDI, r, 0, 0);
		break;
	case 1:
		if (chance(g, 50))
			C_LI(g, r, -1);
		else
			I(g, OP_ADDI, r, 0, -1);
		break;
	case 2: I(g, OP_ADDI, r, 0, 1); break;
	case 3:
		I(g, OP_ADDI, r, 0, -1);
		I(g, OP_SLLI, r, r, 63);
		break;
	case 4:
		C_LI(g, r, 1);
		C_SLLI(g, r, 63);
		break;
	case 5:
		I(g, OP_ADDI, r, 0, -1);
		I(g, OP_SRLI, r, r, 1);
		break;
	case 6: U(g, OP_LUI, r, 0x80000); break;
	case 7:
		U(g, OP_LUI, r, 0x80000);
		I(g, OP_ADDIW, r, r, -1);
		break;
	case 8:
		I(g, OP_ADDI, r, 0, -1);
		I(g, OP_SRLI, r, r, 32);
		break;
	case 9:
		I(g, OP_ADDI, r, 0, 1);
		I(g, OP_SLLI, r, r, 31);
		break;
	case 10: li64(g, r, rnd64(g)); break;
	default: I(g, OP_ADDI, r, 0, imm12(g)); break;
	}
}

static void set_edge(struct gen *g, int r)
{
	set_edge_kind(g, r, below(g, EDGE_KINDS));
}

static void it_alu_imm(struct gen *g, struct ctx *c)
{
	static const int ops[] = { OP_ADDI,  OP_SLTI,  OP_SLTIU, OP_XORI, OP_ORI,
				   OP_ANDI,  OP_ADDIW, OP_SLLI,	 OP_SRLI, OP_SRAI,
				   OP_SLLIW, OP_SRLIW, OP_SRAIW, OP_ADDI, OP_ADDIW };
	int op = ops[below(g, sizeof(ops) / sizeof(ops[0]))];
	int rd = pick_dst(g, c), rs1 = pick_src(g);
	int32_t imm;
	if (enc_of(op)->fmt == 'H') {
		bool w = op == OP_SLLIW || op == OP_SRLIW || op == OP_SRAIW;
		static const int32_t edge[] = { 0, 1, 31, 32, 63 };
		imm = chance(g, 30) ? edge[below(g, 5)] : (int32_t)below(g, 64);
		if (w)
			imm &= 31;
	} else {
		imm = imm12(g);
	}
	I(g, op, rd, rs1, imm);
}

static const int alu_rr[] = { OP_ADD, OP_SUB, OP_SLL,  OP_SLT,	OP_SLTU, OP_XOR,  OP_SRL, OP_SRA,
			      OP_OR,  OP_AND, OP_ADDW, OP_SUBW, OP_SLLW, OP_SRLW, OP_SRAW };
static const int muldiv[] = { OP_MUL,  OP_MULH, OP_MULHSU, OP_MULHU, OP_DIV,  OP_DIVU, OP_REM,
			      OP_REMU, OP_MULW, OP_DIVW,   OP_DIVUW, OP_REMW, OP_REMUW };

static void it_alu_reg(struct gen *g, struct ctx *c, bool m)
{
	int op = m ? muldiv[below(g, sizeof(muldiv) / sizeof(muldiv[0]))]
		   : alu_rr[below(g, sizeof(alu_rr) / sizeof(alu_rr[0]))];
	int rs1 = pick_src(g), rs2 = chance(g, 10) ? rs1 : pick_src(g);
	bool w =
		op == OP_MULW || op == OP_DIVW || op == OP_DIVUW || op == OP_REMW || op == OP_REMUW;
	if (m && rs1 && rs2 && rs1 != rs2 && writable(c, rs1) && writable(c, rs2) &&
	    chance(g, 30)) {
		/* the division edge cases: MIN / -1, x / 0 */
		switch (below(g, 3)) {
		case 0:
			set_edge_kind(g, rs1, w ? EDGE_I32MIN : EDGE_I64MIN);
			set_edge_kind(g, rs2, EDGE_M1);
			break;
		case 1: set_edge_kind(g, rs2, EDGE_0); break;
		default: /* INT32_MIN in the low half, other bits above */
			set_edge_kind(g, rs1, EDGE_I32MIN);
			I(g, OP_XORI, rs1, rs1, 0x100 << below(g, 3));
			I(g, OP_XORI, rs1, rs1, 0x100 << below(g, 3));
			set_edge_kind(g, rs2, chance(g, 50) ? EDGE_M1 : EDGE_0);
			break;
		}
	} else {
		if (m && rs1 && writable(c, rs1) && chance(g, 40))
			set_edge(g, rs1);
		if (m && rs2 && rs2 != rs1 && writable(c, rs2) && chance(g, 40))
			set_edge(g, rs2);
	}
	R(g, op, pick_dst(g, c), rs1, rs2);
}

static void it_upper(struct gen *g, struct ctx *c)
{
	uint32_t k = below(g, 5);
	if (k == 4) {
		int rd = pick_dst_nz(g, c);
		if (rd != SP) {
			C_LUI(g, rd, nz_imm6(g));
			return;
		}
	}
	U(g, k < 2 ? OP_LUI : OP_AUIPC, pick_dst(g, c), imm20(g));
}

static void it_copy(struct gen *g, struct ctx *c)
{
	int rd = pick_dst(g, c), rs = pick_src(g);
	switch (below(g, 4)) {
	case 0:
		if (rd && rs) {
			C_MV(g, rd, rs);
			break;
		}
		/* fall through */
	case 1: I(g, OP_ADDI, rd, rs, 0); break;
	case 2: R(g, OP_ADD, rd, 0, rs); break;
	default: R(g, OP_OR, rd, rs, rs); break;
	}
}

static void it_edge(struct gen *g, struct ctx *c)
{
	set_edge(g, pick_dst_nz(g, c));
}

static void it_rvc_alu(struct gen *g, struct ctx *c)
{
	int rd = pick_dst_nz(g, c), cd = pick_cdst(g, c);
	switch (below(g, 14)) {
	case 0: C_ADDI(g, rd, nz_imm6(g)); break;
	case 1: C_LI(g, pick_dst(g, c), imm6(g)); break;
	case 2:
		if (rd != SP) /* c.lui */
			C_LUI(g, rd, nz_imm6(g));
		break;
	case 3: C_ADDIW(g, rd, imm6(g)); break;
	case 4: C_SLLI(g, rd, 1 + (int)below(g, 63)); break;
	case 5:
	case 6:
		if (cd >= 0)
			C_SHA(g, (int)below(g, 2), cd, 1 + (int32_t)below(g, 63));
		break;
	case 7:
		if (cd >= 0)
			C_SHA(g, 2, cd, imm6(g));
		break;
	case 8:
	case 9: {
		static const int ops[] = { OP_SUB, OP_XOR, OP_OR, OP_AND, OP_SUBW, OP_ADDW };
		if (cd >= 0)
			C_ALU(g, ops[below(g, 6)], cd, pick_csrc(g));
		break;
	}
	case 10: {
		int rs = pick_src(g);
		if (rs)
			C_MV(g, rd, rs);
		break;
	}
	case 11: {
		int rs = pick_src(g);
		if (rs)
			C_ADD(g, rd, rs);
		break;
	}
	case 12:
		if (cd >= 0)
			C_ADDI4SPN(g, cd, 4 * (1 + below(g, 255)));
		break;
	default: C_NOP(g); break;
	}
}

static const int loads[] = { OP_LB, OP_LH, OP_LW, OP_LD, OP_LBU, OP_LHU, OP_LWU };
static const int stores[] = { OP_SB, OP_SH, OP_SW, OP_SD };

/* An offset for an access of size bytes from a base in the scratch area's middle page. */
static int32_t mem_off(struct gen *g, unsigned size, int32_t lo, int32_t hi)
{
	uint32_t k = below(g, 10);
	if (k < 3 && lo < 0 && hi > 0) /* across the page boundary at the base */
		return -(int32_t)below(g, size > 1 ? size - 1 : 1) - 1;
	int32_t v = lo + (int32_t)below(g, (uint32_t)(hi - lo + 1));
	if (k < 7)
		v &= ~(int32_t)(size - 1);
	return v;
}

static void access_item(struct gen *g, struct ctx *c, int base, int32_t off, bool store, int op)
{
	if (store)
		S(g, op, base, pick_src(g), off);
	else
		I(g, op, pick_dst(g, c), base, off);
}

static void it_mem(struct gen *g, struct ctx *c)
{
	bool store = chance(g, 45);
	int op = store ? stores[below(g, 4)] : loads[below(g, 7)];
	unsigned size = mem_size(op);
	switch (below(g, 4)) {
	case 0:
	case 1: /* off(gp) */
		access_item(g, c, GP, mem_off(g, size, -2048, 2047 - 8), store, op);
		break;
	case 2: { /* a base computed from a random register: gp + (rs & mask) [+ k] */
		int rb = pick_dst_nz(g, c), rs = pick_src(g);
		static const int32_t masks[] = { 0x7ff, 0x7f8, 0x7fc, 0x7fe, 0x0ff };
		I(g, OP_ANDI, rb, rs, masks[below(g, 5)]);
		if (chance(g, 50))
			I(g, OP_ADDI, rb, rb, (int32_t)below(g, 0x800));
		if (chance(g, 50))
			R(g, OP_ADD, rb, rb, GP);
		else
			R(g, OP_ADD, rb, GP, rb);
		access_item(g, c, rb, (int32_t)below(g, 129) - 64, store, op);
		break;
	}
	default: /* off(sp): sp is near the boundary of pages 1 and 2 */
		access_item(g, c, SP, mem_off(g, size, -2048, 2047 - 8), store, op);
		break;
	}
}

static void it_cmem(struct gen *g, struct ctx *c)
{
	if (chance(g, 50)) { /* c.lw c.ld c.sw c.sd through a base set up from gp */
		int rb = pick_cdst(g, c);
		if (rb < 0)
			return;
		I(g, OP_ADDI, rb, GP, (int32_t)below(g, 2048 + 1800) - 2048);
		static const int ops[] = { OP_LW, OP_LD, OP_SW, OP_SD };
		int op = ops[below(g, 4)];
		uint32_t u = op == OP_LW || op == OP_SW ? 4 * below(g, 32) : 8 * below(g, 32);
		if (op == OP_LW || op == OP_LD) {
			int rd = pick_cdst(g, c);
			if (rd >= 0)
				C_MEM(g, op, rd, rb, u);
		} else {
			C_MEM(g, op, pick_csrc(g), rb, u);
		}
		return;
	}
	static const int ops[] = { OP_LW, OP_LD, OP_SW, OP_SD };
	int op = ops[below(g, 4)];
	uint32_t u = op == OP_LW || op == OP_SW ? 4 * below(g, 64) : 8 * below(g, 64);
	if (op == OP_LW || op == OP_LD)
		C_SPMEM(g, op, pick_dst_nz(g, c), u);
	else
		C_SPMEM(g, op, pick_src(g), u);
}

static void it_branch(struct gen *g, struct ctx *c)
{
	static const int ops[] = { OP_BEQ, OP_BNE, OP_BLT, OP_BGE, OP_BLTU, OP_BGEU };
	int lab = new_label(g);
	uint32_t k = below(g, 10);
	if (k < 6) {
		int rs1 = pick_src(g);
		uint32_t w = below(g, 10);
		int rs2 = w == 0 ? rs1 : w == 1 ? 0 : pick_src(g);
		B(g, ops[k], rs1, rs2, lab);
	} else if (k == 6) {
		C_BZ(g, chance(g, 50), pick_csrc(g), lab);
	} else if (k == 7) {
		JAL(g, pick_dst(g, c), lab);
	} else if (k == 8) {
		C_J(g, lab);
	} else {
		B(g, ops[below(g, 6)], pick_src(g), pick_src(g), lab);
	}
	pend(g, c, lab, 1 + (int)below(g, 4));
}

/* An indirect jump to a label a few items ahead, through an auipc-computed register. */
static void it_ijump(struct gen *g, struct ctx *c)
{
	int rt = pick_dst_nz(g, c), lab = new_label(g);
	uint32_t hi = AUIPC_HI(g, rt, lab);
	switch (below(g, 3)) {
	case 0: /* jalr rd, %lo(rt), maybe odd (bit 0 is dropped) */
		I_LO(g, OP_JALR, pick_dst(g, c), rt, lab, hi, chance(g, 30) ? 1 : 0);
		break;
	case 1:
		I_LO(g, OP_ADDI, rt, rt, lab, hi, 0);
		if (chance(g, 30))
			C_JR(g, rt);
		else if (writable(c, RA) && chance(g, 30))
			C_JALR(g, rt);
		else
			I(g, OP_JALR, pick_dst(g, c), rt, 0);
		break;
	default: { /* a biased base */
		int32_t bias = (int32_t)below(g, 1024) - 512;
		I_LO(g, OP_ADDI, rt, rt, lab, hi, bias);
		I(g, OP_JALR, pick_dst(g, c), rt, -bias + (chance(g, 30) ? 1 : 0));
		break;
	}
	}
	pend(g, c, lab, (int)below(g, 4));
}

/* A jump to the same place in the other copy of the code (see JD_TWIN). */
static void it_twin(struct gen *g, struct ctx *c)
{
	int rt = pick_dst_nz(g, c), rk, lab = new_label(g);
	do
		rk = pick_dst_nz(g, c);
	while (rk == rt);
	uint32_t hi = AUIPC_HI(g, rt, lab);
	I_LO(g, OP_ADDI, rt, rt, lab, hi, 0);
	U(g, OP_LUI, rk, JD_TWIN >> 12);
	R(g, OP_XOR, rt, rt, rk);
	if (chance(g, 30))
		C_JR(g, rt);
	else
		I(g, OP_JALR, pick_dst(g, c), rt, 0);
	pend(g, c, lab, (int)below(g, 3));
}

/* A call into an island in the islands stream (another page), which returns. */
static void it_call(struct gen *g, struct ctx *c)
{
	int link = pick_dst_nz(g, c), isl = new_label(g);
	uint32_t style = below(g, 3);
	if (style == 2 && !writable(c, RA))
		style = 0;
	if (style == 2)
		link = RA;
	if (style == 0) {
		JAL(g, link, isl);
	} else if (style == 1) {
		int rt = pick_dst_nz(g, c);
		uint32_t hi = AUIPC_HI(g, rt, isl);
		I_LO(g, OP_JALR, link, rt, isl, hi, 0);
	} else {
		int rt = pick_dst_nz(g, c);
		uint32_t hi = AUIPC_HI(g, rt, isl);
		I_LO(g, OP_ADDI, rt, rt, isl, hi, 0);
		C_JALR(g, rt);
	}
	/* The island: padding (zeros trap), sometimes up to a page's last bytes. */
	int saved = g->cur;
	g->cur = 1;
	uint32_t pad = chance(g, 25) ? ((0x1000 - (g->pos[1] & 0xfff)) & 0xfff) - 2 * below(g, 6)
				     : 2 * below(g, 16);
	if (pad > 0x1000 || g->pos[1] + pad >= g->end[1])
		pad = 0;
	g->pos[1] += pad;
	place(g, isl);
	struct ctx ic = { .forbid = c->forbid | 1u << link,
			  .mult = c->mult,
			  .counter = c->counter,
			  .iters = c->iters };
	int n = 1 + (int)below(g, 8);
	for (int k = 0; k < n && !g->bad; k++)
		item(g, &ic);
	close_ctx(g, &ic);
	switch (below(g, 3)) {
	case 0: C_JR(g, link); break;
	case 1: I(g, OP_JALR, 0, link, 0); break;
	default: I(g, OP_JALR, pick_dst(g, &ic), link, 0); break;
	}
	g->cur = saved;
}

/* A counted loop: its body's blocks chain back to themselves. */
static void it_loop(struct gen *g, struct ctx *c)
{
	int rc = pick_dst_nz(g, c);
	int n = 1 + (int)below(g, 8);
	if (chance(g, 50))
		C_LI(g, rc, n);
	else
		I(g, OP_ADDI, rc, 0, n);
	int top = new_label(g);
	place(g, top);
	struct ctx bc = { .forbid = c->forbid | 1u << rc,
			  .calls = true,
			  .mult = c->mult * n,
			  .counter = rc,
			  .iters = n };
	int items = 2 + (int)below(g, 10);
	for (int k = 0; k < items && !g->bad; k++)
		item(g, &bc);
	close_ctx(g, &bc);
	switch (below(g, 3)) {
	case 0: C_ADDI(g, rc, -1); break;
	case 1: I(g, OP_ADDIW, rc, rc, -1); break;
	default: I(g, OP_ADDI, rc, rc, -1); break;
	}
	switch (below(g, 4)) {
	case 0:
		if (rc >= 8 && rc < 16) {
			C_BZ(g, true, rc, top);
			break;
		}
		/* fall through */
	case 1: B(g, OP_BNE, rc, 0, top); break;
	case 2: B(g, OP_BLT, 0, rc, top); break;
	default: B(g, OP_BLTU, 0, rc, top); break;
	}
}

static uint32_t fp_r(uint32_t f7, uint32_t rm, int rd, int rs1, int rs2)
{
	return enc_r(0x53, rm, f7, rd, rs1, rs2);
}

static const struct amo {
	uint32_t f5;
	int w, d;
} amos[] = {
	{ 0x00, OP_AMOADD_W, OP_AMOADD_D },   { 0x01, OP_AMOSWAP_W, OP_AMOSWAP_D },
	{ 0x04, OP_AMOXOR_W, OP_AMOXOR_D },   { 0x08, OP_AMOOR_W, OP_AMOOR_D },
	{ 0x0c, OP_AMOAND_W, OP_AMOAND_D },   { 0x10, OP_AMOMIN_W, OP_AMOMIN_D },
	{ 0x14, OP_AMOMAX_W, OP_AMOMAX_D },   { 0x18, OP_AMOMINU_W, OP_AMOMINU_D },
	{ 0x1c, OP_AMOMAXU_W, OP_AMOMAXU_D },
};

static void amo(struct gen *g, const struct amo *a, bool d, int rd, int rs1, int rs2)
{
	RAW32(g,
	      a->f5 << 27 | (uint32_t)rs2 << 20 | (uint32_t)rs1 << 15 | (d ? 3u : 2u) << 12 |
		      (uint32_t)rd << 7 | 0x2f,
	      d ? a->d : a->w);
}

static void fp_item(struct gen *g, struct ctx *c)
{
	int fd = (int)below(g, 32), fa = (int)below(g, 32), fb = (int)below(g, 32);
	switch (below(g, 8)) {
	case 0: RAW32(g, fp_r(0x79, 0, fd, pick_src(g), 0), OP_FMV_D_X); break;
	case 1: RAW32(g, fp_r(0x69, 7, fd, pick_src(g), 2), OP_FCVT_D_L); break;
	case 2: {
		static const uint32_t f7[] = { 0x01, 0x05, 0x09, 0x0d };
		static const int ops[] = { OP_FADD_D, OP_FSUB_D, OP_FMUL_D, OP_FDIV_D };
		uint32_t k = below(g, 4);
		RAW32(g, fp_r(f7[k], 7, fd, fa, fb), ops[k]);
		break;
	}
	case 3: RAW32(g, fp_r(0x71, 0, pick_dst(g, c), fa, 0), OP_FMV_X_D); break;
	case 4: RAW32(g, fp_r(0x61, 1, pick_dst(g, c), fa, 2), OP_FCVT_L_D); break;
	case 5: {
		static const int ops[] = { OP_FLE_D, OP_FLT_D, OP_FEQ_D };
		uint32_t rm = below(g, 3);
		RAW32(g, fp_r(0x51, rm, pick_dst(g, c), fa, fb), ops[rm]);
		break;
	}
	case 6: RAW32(g, enc_i(0x07, 3, fd, GP, (int32_t)below(g, 4000) - 2048), OP_FLD); break;
	default: RAW32(g, enc_s(0x27, 3, GP, fa, (int32_t)below(g, 4000) - 2048), OP_FSD); break;
	}
}

/* Instructions the code generator leaves to the interpreter, in the middle of a block or
 * ending it: CSR accesses, FP, atomics, fences. */
static void it_fallback(struct gen *g, struct ctx *c)
{
	switch (below(g, 7)) {
	case 0: {
		static const uint32_t m_csrs[] = { 0xb02, 0xb00, 0xc02, 0xc00, 0xf14,
						   0x301, 0x140, 0x001, 0x003, 0x300 };
		static const uint32_t s_csrs[] = { 0x140, 0x001, 0x003, 0x100, 0x140 };
		uint32_t csr = g->p->smode ? s_csrs[below(g, 5)] : m_csrs[below(g, 10)];
		CSRR(g, pick_dst(g, c), csr);
		break;
	}
	case 1:
		CSRW(g, 0x140, pick_src(g)); /* sscratch */
		break;
	case 2:
	case 3: {
		int n = 1 + (int)below(g, 3);
		for (int k = 0; k < n; k++)
			fp_item(g, c);
		break;
	}
	case 4: { /* an aligned AMO on the scratch area */
		int rb = pick_dst_nz(g, c);
		bool d = chance(g, 50);
		I(g, OP_ADDI, rb, GP, (int32_t)(below(g, 4000) - 2048) & (d ? ~7 : ~3));
		amo(g, &amos[below(g, 9)], d, pick_dst(g, c), rb, pick_src(g));
		break;
	}
	case 5: { /* lr/sc */
		int rb = pick_dst_nz(g, c), rd;
		I(g, OP_ADDI, rb, GP, (int32_t)(below(g, 4000) - 2048) & ~7);
		do
			rd = pick_dst(g, c);
		while (rd == rb);
		RAW32(g, 0x02u << 27 | (uint32_t)rb << 15 | 3u << 12 | (uint32_t)rd << 7 | 0x2f,
		      OP_LR_D);
		int t = pick_dst(g, c);
		if (t != rb && chance(g, 50))
			R(g, OP_ADD, t, rd, pick_src(g));
		RAW32(g,
		      0x03u << 27 | (uint32_t)pick_src(g) << 20 | (uint32_t)rb << 15 | 3u << 12 |
			      (uint32_t)pick_dst(g, c) << 7 | 0x2f,
		      OP_SC_D);
		break;
	}
	default:
		switch (below(g, 3)) {
		case 0: RAW32(g, 0x0ff0000f, OP_FENCE); break;
		case 1: RAW32(g, 0x0000100f, OP_FENCE_I); break;
		default: RAW32(g, 0x12000073, OP_SFENCE_VMA); break;
		}
		break;
	}
}

/* An instruction that traps: the handler logs the state and resumes after it. */
static void it_trap(struct gen *g, struct ctx *c)
{
	bool store = chance(g, 45);
	int op = store ? stores[below(g, 4)] : loads[below(g, 7)];
	unsigned size = mem_size(op);
	int rb = pick_dst_nz(g, c);
	if (c->counter && chance(g, 60)) {
		/* In a loop: an access that faults only on the iteration where the counter is k,
		 * without a branch (so the loop's block may still branch back to itself):
		 * rb = gp + ((counter == k) << 40..59), outside RAM / not canonical. */
		g->traps++;
		I(g, OP_ADDI, rb, c->counter, -(1 + (int32_t)below(g, (uint32_t)c->iters)));
		I(g, OP_SLTIU, rb, rb, 1);
		I(g, OP_SLLI, rb, rb, 40 + (int32_t)below(g, 20));
		R(g, OP_ADD, rb, rb, GP);
		access_item(g, c, rb, (int32_t)below(g, 129) - 64, store, op);
		return;
	}
	g->traps += c->mult;
	switch (below(g, 6)) {
	case 0:
	case 1:
		if (!g->p->smode && !g->p->mprv) {
			if (chance(g, 50)) { /* outside RAM (below, or sign-extended above it) */
				static const uint32_t his[] = { 0x00001, 0x7ffff, 0x80100, 0xfffff,
								0x12345 };
				U(g, OP_LUI, rb, his[below(g, 5)]);
				access_item(g, c, rb, imm12(g), store, op);
			} else { /* across the end of RAM */
				U(g, OP_LUI, rb, 0xdf);
				R(g, OP_ADD, rb, rb, GP); /* RAM end */
				access_item(g, c, rb,
					    size > 1 ? -(int32_t)below(g, size - 1) - 1
						     : (int32_t)below(g, 64),
					    store, op);
			}
		} else {
			switch (below(g, 4)) {
			case 0: /* the unmapped page after the scratch area, or across into it */
				U(g, OP_LUI, rb, 0x2);
				R(g, OP_ADD, rb, rb, GP);
				access_item(g, c, rb,
					    chance(g, 50) ? -(int32_t)below(g, size) - 1
							  : (int32_t)below(g, 2040),
					    store, op);
				break;
			case 1: /* the read-only alias: stores fault */
				U(g, OP_LUI, rb, 0x3);
				R(g, OP_ADD, rb, rb, GP);
				access_item(g, c, rb, (int32_t)below(g, 2040), store, op);
				break;
			case 2: /* not a canonical Sv39 address */
				I(g, OP_ADDI, rb, 0, 1);
				I(g, OP_SLLI, rb, rb, 38 + (int32_t)below(g, 25));
				access_item(g, c, rb, imm12(g), store, op);
				break;
			default:
				U(g, OP_LUI, rb, 1 + below(g, 0x7f000));
				access_item(g, c, rb, imm12(g), store, op);
				break;
			}
		}
		break;
	case 2: { /* a misaligned AMO or LR */
		bool d = chance(g, 50);
		I(g, OP_ADDI, rb, GP,
		  (int32_t)((below(g, 4000) - 2048) & ~7) + 1 + (int32_t)below(g, d ? 7 : 3));
		if (chance(g, 70))
			amo(g, &amos[below(g, 9)], d, pick_dst(g, c), rb, pick_src(g));
		else
			RAW32(g,
			      0x02u << 27 | (uint32_t)rb << 15 | (d ? 3u : 2u) << 12 |
				      (uint32_t)pick_dst(g, c) << 7 | 0x2f,
			      d ? OP_LR_D : OP_LR_W);
		break;
	}
	case 3: /* illegal */
		switch (below(g, 4)) {
		case 0: CSRR(g, pick_dst(g, c), 0x7c0); break;
		case 1: RAW16(g, 0x0000, OP_ILLEGAL); break;
		case 2: RAW32(g, 0xffffffff, OP_ILLEGAL); break;
		default: /* an M-mode CSR: illegal in S-mode only */
			CSRR(g, pick_dst(g, c), g->p->smode ? 0xb02 : 0x7c0);
			break;
		}
		break;
	case 4:
		if (chance(g, 50))
			RAW32(g, 0x00000073, OP_ECALL);
		else if (chance(g, 50))
			RAW32(g, 0x00100073, OP_EBREAK);
		else
			RAW16(g, 0x9002, OP_EBREAK);
		break;
	default: /* FP with a misaligned page-crossing address: no fault, just the slow path */
		RAW32(g, enc_i(0x07, 3, (int)below(g, 32), SP, 0xfc), OP_FLD);
		break;
	}
}

static void item(struct gen *g, struct ctx *c)
{
	uint32_t w = below(g, 1000);
	if (w < 140)
		it_alu_imm(g, c);
	else if (w < 280)
		it_alu_reg(g, c, false);
	else if (w < 350)
		it_alu_reg(g, c, true);
	else if (w < 390)
		it_edge(g, c);
	else if (w < 430)
		it_upper(g, c);
	else if (w < 460)
		it_copy(g, c);
	else if (w < 570)
		it_rvc_alu(g, c);
	else if (w < 690)
		it_mem(g, c);
	else if (w < 750)
		it_cmem(g, c);
	else if (w < 840)
		it_branch(g, c);
	else if (w < 865)
		it_ijump(g, c);
	else if (w < 875)
		it_twin(g, c);
	else if (w < 900 && c->calls)
		it_call(g, c);
	else if (w < 915 && c->loops)
		it_loop(g, c);
	else if (w < 945)
		it_fallback(g, c);
	else if (w < 965 && g->traps + c->mult <= 120)
		it_trap(g, c);
	else
		it_alu_imm(g, c);
	tick(g, c);
}

/* ---- program skeleton: start, tail, trap handler, page tables ---- */

static void gen_init(struct gen *g, struct prog *p, uint64_t seed)
{
	memset(g, 0, sizeof(*g));
	g->s = seed;
	g->p = p;
	p->ninsn = 0;
	p->nipos = 0;
	memset(p->code, 0, sizeof(p->code));
}

/* t6 = tohost; t5 = 1; sd t5, 0(t6); j . */
static void gen_tail(struct gen *g)
{
	U(g, OP_LUI, T6, 0x80);
	I(g, OP_ADDIW, T6, T6, (int32_t)((JD_TOHOST - RAM_BASE) >> 12));
	I(g, OP_SLLI, T6, T6, 12);
	I(g, OP_ADDI, T5, 0, 1);
	S(g, OP_SD, T6, T5, 0);
	g->p->end_pc = JD_CODE + g->pos[0];
	e32(g, 0x6f, OP_JAL, 0, 0, 0, 0, C_RD | C_IMM);
}

/* Random initial state and skeleton: returns false when the program must be made again. */
static bool gen_random(struct gen *g, struct prog *p)
{
	uint32_t mode = below(g, 6);
	p->smode = mode < 2;
	p->mprv = mode == 2;
	p->fs_off = false;
	p->host_off = chance(g, 50) ? 0 : 16 * (1 + below(g, 255));
	for (int k = 0; k < 3; k++)
		p->perm[k] = (unsigned)k;
	for (int k = 2; k > 0; k--) {
		unsigned j = below(g, (uint32_t)k + 1), t = p->perm[k];
		p->perm[k] = p->perm[j];
		p->perm[j] = t;
	}
	for (int r = 0; r < 32; r++) {
		static const uint64_t edge[] = { 0,
						 1,
						 ~0ULL,
						 0x8000000000000000ULL,
						 0x7fffffffffffffffULL,
						 0xffffffff80000000ULL,
						 0x7fffffff,
						 0x80000000ULL,
						 0xffffffffULL };
		uint32_t k = below(g, 10);
		p->x[r] = k < 2	  ? edge[below(g, 9)]
			  : k < 4 ? (uint64_t)(int64_t)imm12(g)
				  : rnd64(g);
	}
	p->x[0] = 0;
	static const unsigned spoff[] = { 0x1f00, 0x1f04, 0x1f02, 0x1f01, 0x1f06, 0x1f08 };
	p->x[SP] = JD_DATA + spoff[below(g, 6)];
	p->x[GP] = JD_GP;
	for (unsigned k = 0; k < JD_DATA_SIZE; k += 4) {
		uint32_t v = rnd(g);
		memcpy(p->data + k, &v, 4);
	}

	/* A few "hot" registers most items use, so blocks keep some in host registers. */
	g->nhot = 3 + (int)below(g, 4);
	g->hot[0] = 8 + (int)below(g, 8);
	for (int k = 1; k < g->nhot; k++) {
		int r;
		do
			r = 1 + (int)below(g, 31);
		while (r == SP || r == GP);
		g->hot[k] = r;
	}

	uint32_t start = chance(g, 60) ? 0x1000 - 2 * (1 + below(g, 0x100)) : 2 * below(g, 0x1800);
	g->pos[0] = start;
	g->end[0] = JD_MAIN_END;
	g->pos[1] = JD_MAIN_END + 2 * below(g, 0x800);
	g->end[1] = JD_CODE_SIZE;
	p->start = JD_CODE + start;

	struct ctx main = {
		.forbid = 1u << SP | 1u << GP, .loops = true, .calls = true, .mult = 1
	};
	int target = 20 + (int)below(g, 181);
	while (p->ninsn < target && !g->bad && !g->err[0])
		item(g, &main);
	close_ctx(g, &main);
	gen_tail(g);
	resolve(g);
	return !g->bad;
}

/* The M-mode trap handler: logs mstatus, x1..x31, mcause, mepc, mtval and minstret at
 * mscratch (advanced by one entry), then resumes after the trapping instruction. */
static void emit_handler(struct gen *g)
{
	e32(g, 0x340u << 20 | (uint32_t)TP << 15 | 1u << 12 | (uint32_t)TP << 7 | 0x73, OP_CSRRW,
	    TP, TP, 0, 0x340, C_RD | C_RS1 | C_IMM); /* csrrw tp, mscratch, tp */
	for (int r = 1; r < 32; r++)
		if (r != TP)
			S(g, OP_SD, TP, r, 8 * r);
	CSRR(g, T0, 0x340);
	S(g, OP_SD, TP, T0, 8 * TP);
	CSRR(g, T0, 0x342);
	S(g, OP_SD, TP, T0, 8 * L_MCAUSE);
	CSRR(g, T0, 0x341);
	S(g, OP_SD, TP, T0, 8 * L_MEPC);
	CSRR(g, T0, 0x343);
	S(g, OP_SD, TP, T0, 8 * L_MTVAL);
	CSRR(g, T0, 0xb02);
	S(g, OP_SD, TP, T0, 8 * L_MINSTRET);
	CSRR(g, T0, 0x300);
	S(g, OP_SD, TP, T0, 8 * L_MSTATUS);
	/* Log full: fail the run. */
	int full = new_label(g), two = new_label(g);
	I(g, OP_SLLI, T0, TP, 48);
	I(g, OP_SRLI, T0, T0, 48);
	U(g, OP_LUI, T1, JD_LOG_LIMIT >> 12);
	B(g, OP_BGEU, T0, T1, full);
	/* mepc += the length of the instruction there */
	CSRR(g, T0, 0x341);
	I(g, OP_LHU, T1, T0, 0);
	I(g, OP_ANDI, T1, T1, 3);
	I(g, OP_ADDI, T1, T1, -3);
	I(g, OP_ADDI, T0, T0, 2);
	B(g, OP_BNE, T1, 0, two);
	I(g, OP_ADDI, T0, T0, 2);
	place(g, two);
	CSRW(g, 0x341, T0);
	I(g, OP_ADDI, T0, TP, JD_LOG_ENTRY);
	e32(g, 0x340u << 20 | (uint32_t)T0 << 15 | 1u << 12 | (uint32_t)TP << 7 | 0x73, OP_CSRRW,
	    TP, T0, 0, 0x340, C_RD | C_RS1 | C_IMM);
	I(g, OP_LD, T1, T0, 8 * T1 - JD_LOG_ENTRY);
	I(g, OP_LD, T0, T0, 8 * T0 - JD_LOG_ENTRY);
	RAW32(g, 0x30200073, OP_MRET);
	place(g, full);
	U(g, OP_LUI, T0, 0x80);
	I(g, OP_ADDIW, T0, T0, (int32_t)((JD_TOHOST - RAM_BASE) >> 12));
	I(g, OP_SLLI, T0, T0, 12);
	I(g, OP_ADDI, T1, 0, 3);
	S(g, OP_SD, T0, T1, 0);
	e32(g, 0x6f, OP_JAL, 0, 0, 0, 0, C_RD | C_IMM);
}

/* The handler's code (assembled once, at JD_HANDLER). */
static uint8_t handler_code[1024];
static size_t handler_len;

static bool build_handler(char *err, size_t errlen)
{
	static struct prog hp;
	static struct gen hg;
	gen_init(&hg, &hp, 0);
	hg.end[0] = sizeof(handler_code);
	emit_handler(&hg);
	resolve(&hg);
	if (hg.bad || hg.err[0]) {
		snprintf(err, errlen, "trap handler: %s", hg.err[0] ? hg.err : "too long");
		return false;
	}
	memcpy(handler_code, hp.code, sizeof(handler_code));
	handler_len = hg.pos[0];
	return true;
}

static void pt_map(uint8_t *ram, uint64_t va, uint64_t pa, uint64_t flags)
{
	uint64_t l0 = JD_PT + 0x2000;
	uint64_t pte = ((pa >> 12) << 10) | flags;
	memcpy(ram + (l0 - RAM_BASE) + 8 * ((va >> 12) & 0x1ff), &pte, 8);
}

/* Sv39: every address used lies in [0x80000000, 0x80200000): one table per level. */
static void build_tables(uint8_t *ram, const struct prog *p)
{
	uint64_t root = JD_PT, l1 = JD_PT + 0x1000, l0 = JD_PT + 0x2000;
	memset(ram + (JD_PT - RAM_BASE), 0, 0x3000);
	uint64_t pte = ((l1 >> 12) << 10) | PTE_V;
	memcpy(ram + (root - RAM_BASE) + 8 * ((RAM_BASE >> 30) & 0x1ff), &pte, 8);
	pte = ((l0 >> 12) << 10) | PTE_V;
	memcpy(ram + (l1 - RAM_BASE) + 8 * ((RAM_BASE >> 21) & 0x1ff), &pte, 8);
	for (uint64_t a = JD_CODE; a < JD_CODE + JD_CODE_SIZE; a += PAGE_SIZE) {
		pt_map(ram, a, a, PTE_V | PTE_R | PTE_X | PTE_A);
		pt_map(ram, a ^ JD_TWIN, a, PTE_V | PTE_R | PTE_X | PTE_A);
	}
	/* Data pages are user pages (mstatus.SUM is set): MPRV programs access them as U after
	 * their first trap. */
	pt_map(ram, JD_TOHOST, JD_TOHOST, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D | PTE_U);
	for (unsigned k = 0; k < 3; k++)
		pt_map(ram, JD_DATA + k * PAGE_SIZE, JD_DATA + p->perm[k] * PAGE_SIZE,
		       PTE_V | PTE_R | PTE_W | PTE_A | PTE_D | PTE_U);
	/* JD_DATA + 3 pages: unmapped; + 4 pages: a read-only alias of VA page 0 */
	pt_map(ram, JD_DATA + 4 * PAGE_SIZE, JD_DATA + p->perm[0] * PAGE_SIZE,
	       PTE_V | PTE_R | PTE_A | PTE_U);
}

/* ---- running a program ---- */

struct machine {
	struct vm vm;
	struct hart *h;
	void *map;
	size_t maplen;
	int reason;
};

static uint8_t *mram(struct machine *m, uint64_t pa)
{
	return m->vm.ram.host + (pa - RAM_BASE);
}

/* hot = 0: interpreter only; else MABO_JIT_HOT. */
static bool machine_init(struct machine *m, const struct prog *p, int hot)
{
	memset(m, 0, sizeof(*m));
	m->maplen = JD_RAM_SIZE + PAGE_SIZE;
	m->map = mmap(NULL, m->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m->map == MAP_FAILED)
		return false;
	m->vm.ram.base = RAM_BASE;
	m->vm.ram.size = JD_RAM_SIZE;
	m->vm.ram.host = (uint8_t *)m->map + p->host_off;
	pthread_mutex_init(&m->vm.exit_lock, NULL);
	pthread_cond_init(&m->vm.exit_cond, NULL);
	m->vm.clock_base_ns = host_now_ns();
	m->vm.htif = htif_create(&m->vm, JD_TOHOST);
	if (hot) {
		char s[16];
		snprintf(s, sizeof(s), "%d", hot);
		unsetenv("MABO_JIT");
		setenv("MABO_JIT_HOT", s, 1);
	} else {
		setenv("MABO_JIT", "0", 1);
		unsetenv("MABO_JIT_HOT");
	}
	m->h = hart_create(&m->vm, 0);
	unsetenv("MABO_JIT");
	unsetenv("MABO_JIT_HOT");
	if (!m->h || !m->vm.htif)
		return false;
	m->vm.harts[0] = m->h;
	m->vm.nharts = 1;

	memcpy(mram(m, JD_CODE), p->code, JD_CODE_SIZE);
	/* M-mode: the twin copy runs; Sv39: only the handler reads it (mepc is a VA) */
	memcpy(mram(m, JD_CODE ^ JD_TWIN), p->code, JD_CODE_SIZE);
	memcpy(mram(m, JD_DATA), p->data, JD_DATA_SIZE);
	memcpy(mram(m, JD_HANDLER), handler_code, handler_len);
	struct hart *h = m->h;
	memcpy(h->x, p->x, sizeof(p->x));
	h->pc = p->start;
	h->mtvec = JD_HANDLER;
	h->mscratch = JD_LOG;
	if (!p->fs_off)
		h->mstatus |= 1ULL << MSTATUS_FS_SHIFT;
	if (p->smode || p->mprv) {
		build_tables(m->vm.ram.host, p);
		h->satp = (8ULL << 60) | (JD_PT >> 12);
		h->mstatus |= MSTATUS_SUM;
		if (p->mprv)
			h->mstatus |= MSTATUS_MPRV | (uint64_t)PRV_S << MSTATUS_MPP_SHIFT;
		hart_set_priv(h, p->smode ? PRV_S : PRV_M);
	}
	return true;
}

static void *hart_thread(void *arg)
{
	hart_run(arg);
	return NULL;
}

static int machine_run(struct machine *m)
{
	pthread_t t;
	if (pthread_create(&t, NULL, hart_thread, m->h) != 0)
		return -1;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += JD_TIMEOUT_MS / 1000;
	ts.tv_nsec += (JD_TIMEOUT_MS % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&m->vm.exit_lock);
	while (!atomic_load(&m->vm.exit_reason)) {
		if (pthread_cond_timedwait(&m->vm.exit_cond, &m->vm.exit_lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&m->vm.exit_lock);
	if (!atomic_load(&m->vm.exit_reason))
		vm_request_exit(&m->vm, VM_EXIT_TIMEOUT, 0);
	pthread_join(t, NULL);
	m->reason = atomic_load(&m->vm.exit_reason);
	return m->reason;
}

static void machine_free(struct machine *m)
{
	if (m->h)
		hart_destroy(m->h);
	if (m->vm.htif)
		htif_destroy(m->vm.htif);
	pthread_mutex_destroy(&m->vm.exit_lock);
	pthread_cond_destroy(&m->vm.exit_cond);
	if (m->map && m->map != MAP_FAILED)
		munmap(m->map, m->maplen);
	memset(m, 0, sizeof(*m));
}

static uint64_t log_word(struct machine *m, unsigned entry, unsigned word)
{
	uint64_t v;
	memcpy(&v, mram(m, JD_LOG + (uint64_t)entry * JD_LOG_ENTRY + 8 * word), 8);
	return v;
}

/* Number of trap log entries written. */
static unsigned log_entries(struct machine *m)
{
	return (unsigned)((m->h->mscratch - JD_LOG) / JD_LOG_ENTRY);
}

static void list_program(const struct prog *p)
{
	uint32_t *pos = malloc(sizeof(uint32_t) * (size_t)p->nipos);
	if (!pos)
		return;
	memcpy(pos, p->ipos, sizeof(uint32_t) * (size_t)p->nipos);
	for (int a = 1; a < p->nipos; a++) /* insertion sort: offsets are mostly in order */
		for (int b = a; b > 0 && pos[b - 1] > pos[b]; b--) {
			uint32_t t = pos[b];
			pos[b] = pos[b - 1];
			pos[b - 1] = t;
		}
	fprintf(stderr, "  program %d: %d instructions, %s, start %#" PRIx64 ", end %#" PRIx64 "\n",
		p->index, p->ninsn,
		p->smode  ? "S-mode Sv39"
		: p->mprv ? "M-mode, MPRV with Sv39"
			  : "M-mode",
		p->start, p->end_pc);
	for (int k = 0; k < p->nipos; k++) {
		uint32_t raw = 0;
		memcpy(&raw, p->code + pos[k], 4);
		if ((raw & 3) != 3)
			raw &= 0xffff;
		struct insn in;
		int op = (int)rv_decode(raw, &in);
		fprintf(stderr,
			"  %08" PRIx64 ": %0*x  %-10s rd %-2d rs1 %-2d rs2 %-2d imm %" PRId64 "\n",
			(uint64_t)(JD_CODE + pos[k]), (raw & 3) == 3 ? 8 : 4, raw, opname[op],
			in.rd == RV_X0_SINK ? 0 : in.rd, in.rs1, in.rs2, in.imm);
	}
	free(pos);
}

/* Compares run b (name bn) with the reference a; prints the differences (the first differing
 * register first) and returns their number. */
static int compare(const struct prog *p, struct machine *a, struct machine *b, const char *bn)
{
	int diffs = 0;
	struct hart *ha = a->h, *hb = b->h;
#define JD_DIFF(what, va, vb)                                                                      \
	do {                                                                                       \
		if ((uint64_t)(va) != (uint64_t)(vb)) {                                            \
			if (diffs++ < 12)                                                          \
				fprintf(stderr,                                                    \
					"program %d (seed %#" PRIx64                               \
					"): %s: interpreter %#" PRIx64 ", %s %#" PRIx64 "\n",      \
					p->index, p->seed, what, (uint64_t)(va), bn,               \
					(uint64_t)(vb));                                           \
		}                                                                                  \
	} while (0)
	char what[64];
	for (int r = 0; r < 32; r++) {
		snprintf(what, sizeof(what), "x%d (%s)", r, xname[r]);
		JD_DIFF(what, ha->x[r], hb->x[r]);
	}
	JD_DIFF("exit reason", a->reason, b->reason);
	JD_DIFF("pc", ha->pc, hb->pc);
	JD_DIFF("instret", ha->instret, hb->instret);
	JD_DIFF("priv", ha->priv, hb->priv);
	JD_DIFF("mstatus", ha->mstatus, hb->mstatus);
	JD_DIFF("mepc", ha->mepc, hb->mepc);
	JD_DIFF("mcause", ha->mcause, hb->mcause);
	JD_DIFF("mtval", ha->mtval, hb->mtval);
	JD_DIFF("mscratch (trap log end)", ha->mscratch, hb->mscratch);
	JD_DIFF("sscratch", ha->sscratch, hb->sscratch);
	JD_DIFF("fflags", ha->fflags, hb->fflags);
	for (int r = 0; r < 32; r++) {
		snprintf(what, sizeof(what), "f%d", r);
		JD_DIFF(what, ha->f[r], hb->f[r]);
	}
	/* The trap log, entry by entry, then the rest of RAM. */
	unsigned na = log_entries(a), nb = log_entries(b);
	for (unsigned e = 0; e < na && e < nb && e < JD_LOG_LIMIT / JD_LOG_ENTRY; e++) {
		for (unsigned w = 0; w < JD_LOG_WORDS; w++) {
			static const char *const names[] = { [L_MCAUSE] = "mcause",
							     [L_MEPC] = "mepc",
							     [L_MTVAL] = "mtval",
							     [L_MINSTRET] = "minstret" };
			if (w == 0)
				snprintf(what, sizeof(what), "trap %u: mstatus", e);
			else if (w < 32)
				snprintf(what, sizeof(what), "trap %u at %#" PRIx64 ": x%u (%s)", e,
					 log_word(a, e, L_MEPC), w, xname[w]);
			else
				snprintf(what, sizeof(what), "trap %u at %#" PRIx64 ": %s", e,
					 log_word(a, e, L_MEPC), names[w]);
			JD_DIFF(what, log_word(a, e, w), log_word(b, e, w));
		}
	}
	const uint8_t *ra = a->vm.ram.host, *rb = b->vm.ram.host;
	if (memcmp(ra, rb, JD_RAM_SIZE) != 0) {
		uint64_t off = 0;
		while (ra[off] == rb[off])
			off++;
		uint64_t va = 0, vb = 0;
		uint64_t at = off & ~7ULL;
		memcpy(&va, ra + at, 8);
		memcpy(&vb, rb + at, 8);
		snprintf(what, sizeof(what), "RAM %s at %#" PRIx64,
			 at >= JD_DATA - RAM_BASE && at < JD_DATA - RAM_BASE + JD_DATA_SIZE
				 ? "(scratch)"
			 : at >= JD_LOG - RAM_BASE && at < JD_LOG - RAM_BASE + JD_LOG_SIZE
				 ? "(trap log)"
				 : "",
			 (uint64_t)(RAM_BASE + at));
		JD_DIFF(what, va, vb);
	}
	/* Sanity: the programs must have run to their end. */
	if (a->reason != VM_EXIT_PASS || (ha->pc != p->end_pc && ha->pc != (p->end_pc ^ JD_TWIN)) ||
	    hb->pc != ha->pc) {
		fprintf(stderr,
			"program %d (seed %#" PRIx64 "): did not run to its end (%#" PRIx64
			"): interpreter exit %d pc %#" PRIx64 ", %s exit %d pc %#" PRIx64 "\n",
			p->index, p->seed, p->end_pc, a->reason, ha->pc, bn, b->reason, hb->pc);
		diffs++;
	}
	if (ha->x[0] != 0 || hb->x[0] != 0) {
		fprintf(stderr, "program %d: x0 is not 0\n", p->index);
		diffs++;
	}
#undef JD_DIFF
	return diffs;
}

/* Runs p interpreted and translated with each of the hot thresholds in hots[] (0-ended);
 * returns the number of differences (printed). *ran_translated reports whether translated
 * code ran at all in the hot = 1 run. */
static int run_diff(const struct prog *p, const int *hots, bool *ran_translated, bool verbose)
{
	struct machine ref, other;
	int diffs = 0;
	if (!machine_init(&ref, p, 0)) {
		fprintf(stderr, "cannot set up a VM\n");
		machine_free(&ref);
		return 1;
	}
	machine_run(&ref);
	for (const int *hot = hots; *hot; hot++) {
		if (!machine_init(&other, p, *hot)) {
			fprintf(stderr, "cannot set up a VM\n");
			machine_free(&other);
			diffs++;
			break;
		}
		machine_run(&other);
		char bn[32];
		snprintf(bn, sizeof(bn), "translated (MABO_JIT_HOT=%d)", *hot);
		int d = compare(p, &ref, &other, bn);
		if (*hot == 1 && ran_translated)
			*ran_translated = other.h->jit_block != NULL;
		if (d && verbose)
			list_program(p);
		diffs += d;
		machine_free(&other);
		if (d)
			break;
	}
	machine_free(&ref);
	return diffs;
}

#ifndef JITDIFF_FUZZ

#include <setjmp.h>

#include <cmocka.h>

#define JD_SEED 0x6a69742d64696666ULL /* "jit-diff" */
/* Sanitizer builds (make sanitize) pay for every fresh hart's 64 MiB block arena in shadow
 * memory: fewer programs there by default. */
#if defined(__SANITIZE_ADDRESS__)
#define JD_PROGS 300
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JD_PROGS 300
#endif
#endif
#ifndef JD_PROGS
#define JD_PROGS 2000
#endif

/* Makes program `index` of the series seeded with seed (deterministic). */
static bool make_program(struct prog *p, uint64_t seed, int index, char *err, size_t errlen)
{
	static struct gen g;
	uint64_t s = seed ^ (0x100000001b3ULL * (uint64_t)(index + 1));
	for (int attempt = 0; attempt < 16; attempt++) {
		gen_init(&g, p, splitmix(&s));
		p->seed = seed;
		p->index = index;
		bool ok = gen_random(&g, p);
		if (g.err[0]) {
			snprintf(err, errlen, "program %d (seed %#" PRIx64 "): %s", index, seed,
				 g.err);
			return false;
		}
		if (ok)
			return true;
	}
	snprintf(err, errlen, "program %d (seed %#" PRIx64 "): cannot lay it out", index, seed);
	return false;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

static void require_jit(void)
{
#if defined(__x86_64__)
	struct jit *j = jit_create();
	assert_non_null(j);
	jit_destroy(j);
#else
	/* scripts/test.sh counts these lines as skipped cases. */
	printf("SKIP: test_jit: the code generator needs an x86-64 host\n");
	skip();
#endif
}

static void test_random_programs(void **state)
{
	(void)state;
	require_jit();
	char err[512];
	assert_true(build_handler(err, sizeof(err)));
	uint64_t seed = env_u64("MABO_JIT_TEST_SEED", JD_SEED);
	int nprogs = (int)env_u64("MABO_JIT_TEST_PROGS", JD_PROGS);
	int only = (int)env_u64("MABO_JIT_TEST_ONLY", (uint64_t)-1);
	bool dump = env_u64("MABO_JIT_TEST_DUMP", 0) != 0;
	static struct prog p;
	int failed = 0, translated = 0, smode = 0, mprv = 0;
	long insns = 0;
	for (int k = 0; k < nprogs; k++) {
		if (only >= 0 && k != only)
			continue;
		if (!make_program(&p, seed, k, err, sizeof(err)))
			fail_msg("%s", err);
		if (dump)
			list_program(&p);
		/* Every program fully translated; every other one also with blocks translated
		 * after their second run (interpreted and translated runs of the same code). */
		static const int all[] = { 1, 2, 0 }, one[] = { 1, 0 };
		bool ran = false;
		int d = run_diff(&p, k % 2 ? one : all, &ran, failed < 3);
		if (d) {
			if (++failed == 5)
				nprogs = k + 1; /* enough: stop here */
			fprintf(stderr,
				"  reproduce: MABO_JIT_TEST_SEED=%#" PRIx64
				" MABO_JIT_TEST_ONLY=%d MABO_JIT_TEST_DUMP=1 "
				"build/tests/test_jit\n",
				seed, k);
		}
		translated += ran;
		smode += p.smode;
		mprv += p.mprv;
		insns += p.ninsn;
	}
	print_message("%d programs (%ld instructions; %d in S-mode, %d in M-mode with MPRV), "
		      "%d ran translated code, %d differed\n",
		      only >= 0 ? 1 : nprogs, insns, smode, mprv, translated, failed);
	assert_int_equal(failed, 0);
	assert_true(translated > 0);
}

/* ---- targeted programs ---- */

/* Starts a hand-written program at JD_CODE + off. */
static void manual(struct gen *g, struct prog *p, bool smode, uint32_t off)
{
	gen_init(g, p, 1);
	memset(p->data, 0, sizeof(p->data));
	for (unsigned k = 0; k < JD_DATA_SIZE; k++)
		p->data[k] = (uint8_t)(k * 7 + 1);
	p->smode = smode;
	p->mprv = false;
	p->fs_off = false;
	p->host_off = 0;
	p->perm[0] = 2;
	p->perm[1] = 0;
	p->perm[2] = 1;
	for (int r = 0; r < 32; r++)
		p->x[r] = 0x0101010101010101ULL * (uint64_t)r;
	p->x[0] = 0;
	p->x[SP] = JD_DATA + 0x1f00;
	p->x[GP] = JD_GP;
	g->pos[0] = off;
	g->end[0] = JD_MAIN_END;
	g->pos[1] = JD_MAIN_END;
	g->end[1] = JD_CODE_SIZE;
	p->start = JD_CODE + off;
	p->index = -1;
}

static void finish(struct gen *g)
{
	gen_tail(g);
	resolve(g);
	if (g->err[0])
		fail_msg("%s", g->err);
	assert_false(g->bad);
}

static uint64_t here(struct gen *g)
{
	return JD_CODE + g->pos[0];
}

/* Runs p in both engines, compares them, and leaves the translated run in *m for checks. */
static void run_both(const struct prog *p, struct machine *m)
{
	static const int hots[] = { 1, 2, 0 };
	char err[512];
	require_jit();
	assert_true(build_handler(err, sizeof(err)));
	bool ran = false;
	int d = run_diff(p, hots, &ran, true);
	assert_int_equal(d, 0);
	assert_true(ran); /* translated code did run */
	assert_true(machine_init(m, p, 1));
	assert_int_equal(machine_run(m), VM_EXIT_PASS);
	assert_int_equal(m->h->pc, p->end_pc);
}

/* Checks the trap log of run m against the expected causes, pcs, tvals and registers. */
static void check_traps(struct machine *m, unsigned n, const uint64_t *cause, const uint64_t *pc,
			const uint64_t *tval, uint64_t (*regs)[32])
{
	assert_int_equal(log_entries(m), n);
	for (unsigned k = 0; k < n; k++) {
		assert_int_equal(log_word(m, k, L_MCAUSE), cause[k]);
		assert_int_equal(log_word(m, k, L_MEPC), pc[k]);
		assert_int_equal(log_word(m, k, L_MTVAL), tval[k]);
		for (int r = 1; r < 32; r++) {
			if (log_word(m, k, (unsigned)r) != regs[k][r])
				print_error("trap %u: x%d (%s) = %#" PRIx64 ", want %#" PRIx64 "\n",
					    k, r, xname[r], log_word(m, k, (unsigned)r),
					    regs[k][r]);
			assert_int_equal(log_word(m, k, (unsigned)r), regs[k][r]);
		}
	}
}

static void check_regs(struct machine *m, const uint64_t *x)
{
	for (int r = 0; r < 32; r++) {
		if (m->h->x[r] != x[r])
			print_error("x%d (%s) = %#" PRIx64 ", want %#" PRIx64 "\n", r, xname[r],
				    m->h->x[r], x[r]);
		assert_int_equal(m->h->x[r], x[r]);
	}
}

/* The handler's instructions before its csrr minstret, and in all for a 4-byte insn. */
#define H_BEFORE_MINSTRET 39
#define H_TOTAL 60

/* A load outside RAM in the middle of a translated block, after instructions whose results
 * live in host registers: the handler must see them; then a store and a load across the end
 * of RAM (the store, faulting on its second page, writes nothing). */
static void test_fault_writeback_bare(void **state)
{
	(void)state;
	static struct prog p;
	static struct gen g;
	uint64_t x[32], snap[3][32], pcs[3];
	manual(&g, &p, false, 0x100);
	memcpy(x, p.x, sizeof(x));
	I(&g, OP_ADDI, A0, A0, 5);
	x[A0] += 5;
	R(&g, OP_ADD, A1, A0, A0);
	x[A1] = x[A0] + x[A0];
	R(&g, OP_XOR, A0, A0, A1);
	x[A0] ^= x[A1];
	I(&g, OP_SLLI, A2, A0, 3);
	x[A2] = x[A0] << 3;
	I(&g, OP_ADDI, A0, A0, 7);
	x[A0] += 7;
	R(&g, OP_SUB, A1, A1, A0);
	x[A1] -= x[A0];
	U(&g, OP_LUI, S2, 1);
	x[S2] = 0x1000;
	pcs[0] = here(&g);
	memcpy(snap[0], x, sizeof(x));
	I(&g, OP_LD, A3, S2, 8); /* trap 0 */
	R(&g, OP_ADD, A4, A0, A1);
	x[A4] = x[A0] + x[A1];
	S(&g, OP_SD, GP, A4, 0);
	I(&g, OP_ADDI, A0, A0, 1);
	x[A0] += 1;
	U(&g, OP_LUI, S3, 0xdf);
	R(&g, OP_ADD, S3, S3, GP);
	x[S3] = RAM_BASE + JD_RAM_SIZE;
	R(&g, OP_ADD, A5, A0, A0);
	x[A5] = x[A0] + x[A0];
	pcs[1] = here(&g);
	memcpy(snap[1], x, sizeof(x));
	S(&g, OP_SW, S3, A5, -2); /* trap 1 */
	I(&g, OP_ADDI, A0, A0, 1);
	x[A0] += 1;
	C_LI(&g, A1, 3);
	x[A1] = 3;
	pcs[2] = here(&g);
	memcpy(snap[2], x, sizeof(x));
	I(&g, OP_LW, A6, S3, -1); /* trap 2 */
	R(&g, OP_ADD, A7, A0, A1);
	x[A7] = x[A0] + x[A1];
	finish(&g);
	x[T6] = JD_TOHOST;
	x[T5] = 1;

	struct machine m;
	run_both(&p, &m);
	static const uint64_t cause[3] = { EXC_LOAD_ACCESS, EXC_STORE_ACCESS, EXC_LOAD_ACCESS };
	const uint64_t tval[3] = { 0x1008, RAM_BASE + JD_RAM_SIZE, RAM_BASE + JD_RAM_SIZE };
	check_traps(&m, 3, cause, pcs, tval, snap);
	check_regs(&m, x);
	/* minstret in the handler: the instructions retired before it */
	assert_int_equal(log_word(&m, 0, L_MINSTRET), 7 + H_BEFORE_MINSTRET);
	assert_int_equal(log_word(&m, 1, L_MINSTRET), 7 + H_TOTAL + 6 + H_BEFORE_MINSTRET);
	assert_int_equal(log_word(&m, 2, L_MINSTRET), 7 + 2 * H_TOTAL + 8 + H_BEFORE_MINSTRET);
	assert_int_equal(m.h->instret, 7 + 3 * H_TOTAL + 8 + 1 + 6);
	uint64_t v;
	memcpy(&v, mram(&m, RAM_BASE + JD_RAM_SIZE - 8), 8);
	assert_int_equal(v, 0); /* the faulting store wrote nothing */
	memcpy(&v, mram(&m, JD_GP), 8);
	assert_int_equal(v, x[A4]);
	assert_int_equal(m.h->mcause, EXC_LOAD_ACCESS);
	assert_int_equal(m.h->mepc, pcs[2] + 4); /* the handler stepped over it */
	assert_int_equal(m.h->mtval, RAM_BASE + JD_RAM_SIZE);
	machine_free(&m);
}

/* The scratch byte a VA of the manual Sv39 programs reads (perm = { 2, 1, 0 }). */
static uint8_t *sv39_byte(struct prog *p, uint64_t va)
{
	uint64_t page = (va - JD_DATA) >> 12;
	assert_true(page < 3 || page == 4);
	unsigned phys = p->perm[page == 4 ? 0 : page];
	return &p->data[phys * PAGE_SIZE + (va & 0xfff)];
}

static uint64_t sv39_read(struct prog *p, uint64_t va, unsigned size)
{
	uint64_t v = 0;
	for (unsigned k = 0; k < size; k++)
		v |= (uint64_t)*sv39_byte(p, va + k) << (8 * k);
	return v;
}

/* S-mode under Sv39: page faults in the middle of translated blocks (an unmapped page, a load
 * into it across a page end, a store to a read-only page, a store across into the unmapped
 * page), and accesses across pages whose physical pages are not adjacent. */
static void test_fault_writeback_sv39(void **state)
{
	(void)state;
	static struct prog p;
	static struct gen g;
	uint64_t x[32], snap[4][32], pcs[4];
	manual(&g, &p, true, 0xf00); /* the code crosses into the next page too */
	p.perm[0] = 2;
	p.perm[1] = 1;
	p.perm[2] = 0;
	memcpy(x, p.x, sizeof(x));
	I(&g, OP_ADDI, A0, A0, 9);
	x[A0] += 9;
	R(&g, OP_ADD, A1, A0, A0);
	x[A1] = x[A0] + x[A0];
	I(&g, OP_ADDI, A0, A0, 1);
	x[A0] += 1;
	U(&g, OP_LUI, S2, 2);
	R(&g, OP_ADD, S2, S2, GP);
	x[S2] = JD_DATA + 0x3000;
	pcs[0] = here(&g);
	memcpy(snap[0], x, sizeof(x));
	I(&g, OP_LD, A3, S2, 16); /* trap 0: unmapped */
	I(&g, OP_ADDI, A0, A0, 1);
	x[A0] += 1;
	R(&g, OP_ADD, A1, A1, A0);
	x[A1] += x[A0];
	pcs[1] = here(&g);
	memcpy(snap[1], x, sizeof(x));
	I(&g, OP_LW, A4, S2, -2); /* trap 1: across into the unmapped page */
	I(&g, OP_ADDI, A0, A0, 1);
	x[A0] += 1;
	U(&g, OP_LUI, S3, 3);
	R(&g, OP_ADD, S3, S3, GP);
	x[S3] = JD_DATA + 0x4000;
	I(&g, OP_LD, A5, S3, 8); /* the read-only alias reads fine */
	x[A5] = sv39_read(&p, JD_DATA + 0x4008, 8);
	pcs[2] = here(&g);
	memcpy(snap[2], x, sizeof(x));
	S(&g, OP_SD, S3, A0, 8); /* trap 2: read-only */
	I(&g, OP_ADDI, A0, A0, 1);
	x[A0] += 1;
	pcs[3] = here(&g);
	memcpy(snap[3], x, sizeof(x));
	S(&g, OP_SD, S2, A0, -4); /* trap 3: across into the unmapped page; writes nothing */
	I(&g, OP_LD, A6, S2, -8);
	x[A6] = sv39_read(&p, JD_DATA + 0x2ff8, 8);
	I(&g, OP_LD, A7, SP, 0xfc); /* across VA pages 1 and 2: physical pages 1 and 0 */
	x[A7] = sv39_read(&p, JD_DATA + 0x1ffc, 8);
	S(&g, OP_SD, SP, A1, 0xfe);
	R(&g, OP_ADD, S4, A6, A7);
	x[S4] = x[A6] + x[A7];
	I(&g, OP_LHU, S5, SP, 0x100); /* reads back the middle of that store */
	x[S5] = (x[A1] >> 16) & 0xffff;
	finish(&g);
	x[T6] = JD_TOHOST;
	x[T5] = 1;

	struct machine m;
	run_both(&p, &m);
	static const uint64_t cause[4] = { EXC_LOAD_PAGE, EXC_LOAD_PAGE, EXC_STORE_PAGE,
					   EXC_STORE_PAGE };
	const uint64_t tval[4] = { JD_DATA + 0x3010, JD_DATA + 0x3000, JD_DATA + 0x4008,
				   JD_DATA + 0x3000 };
	check_traps(&m, 4, cause, pcs, tval, snap);
	check_regs(&m, x);
	assert_int_equal(m.h->priv, PRV_S);
	for (unsigned k = 0; k < 4; k++) /* trapped from S */
		assert_int_equal((log_word(&m, k, L_MSTATUS) & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT,
				 PRV_S);
	/* nothing written by the faulting stores; the crossing store split over PA pages 1, 0 */
	uint8_t *ram = mram(&m, JD_DATA);
	for (unsigned k = 0; k < 4; k++)
		assert_int_equal(ram[*&p.perm[2] * PAGE_SIZE + 0xffc + k],
				 *sv39_byte(&p, JD_DATA + 0x2ffc + k));
	for (unsigned k = 0; k < 8; k++) {
		uint64_t va = JD_DATA + 0x1ffe + k;
		unsigned page = (unsigned)((va - JD_DATA) >> 12);
		assert_int_equal(ram[p.perm[page] * PAGE_SIZE + (va & 0xfff)],
				 (uint8_t)(x[A1] >> (8 * k)));
	}
	for (unsigned k = 0; k < 8; k++)
		assert_int_equal(ram[p.perm[0] * PAGE_SIZE + 8 + k],
				 *sv39_byte(&p, JD_DATA + 0x4008 + k));
	machine_free(&m);
}

static uint64_t f64_bits(double d)
{
	uint64_t v;
	memcpy(&v, &d, 8);
	return v;
}

/* Instructions the code generator leaves to the interpreter in the middle of runs of integer
 * instructions: a CSR read (ends a block), FP, an AMO, a fence; then the same with
 * mstatus.FS off, so that the interpreted FP instruction traps after a translated prefix,
 * and a misaligned AMO. */
static void test_fallback_mid_block(void **state)
{
	(void)state;
	static struct prog p;
	static struct gen g;
	manual(&g, &p, false, 0x200);
	uint64_t x[32], old;
	memcpy(x, p.x, sizeof(x));
	memcpy(&old, p.data + 0x1000, 8);
	I(&g, OP_ADDI, A0, 0, 3);
	I(&g, OP_ADDI, A1, A0, 4);
	R(&g, OP_ADD, A0, A0, A1);
	CSRR(&g, A2, 0xb02);
	I(&g, OP_ADDI, A0, A0, 1);
	RAW32(&g, fp_r(0x69, 7, 1, A0, 2), OP_FCVT_D_L); /* fcvt.d.l f1, a0 */
	RAW32(&g, fp_r(0x69, 7, 2, A1, 2), OP_FCVT_D_L); /* fcvt.d.l f2, a1 */
	R(&g, OP_ADD, A3, A0, A1);
	RAW32(&g, fp_r(0x01, 7, 3, 1, 2), OP_FADD_D);	 /* fadd.d f3, f1, f2 */
	RAW32(&g, fp_r(0x71, 0, A4, 3, 0), OP_FMV_X_D);	 /* fmv.x.d a4, f3 */
	RAW32(&g, fp_r(0x61, 1, A5, 3, 2), OP_FCVT_L_D); /* fcvt.l.d a5, f3, rtz */
	I(&g, OP_ADDI, A0, A0, 1);
	amo(&g, &amos[0], true, A6, GP, A0); /* amoadd.d a6, a0, (gp) */
	I(&g, OP_LD, A7, GP, 0);
	CSRR(&g, S2, 0xb02);
	I(&g, OP_ADDI, A0, A0, 1);
	RAW32(&g, 0x0ff0000f, OP_FENCE);
	R(&g, OP_ADD, S3, A0, A7);
	finish(&g);
	x[A0] = 13;
	x[A1] = 7;
	x[A2] = 3;
	x[A3] = 18;
	x[A4] = f64_bits(18.0);
	x[A5] = 18;
	x[A6] = old;
	x[A7] = old + 12;
	x[S2] = 14;
	x[S3] = 13 + old + 12;
	x[T6] = JD_TOHOST;
	x[T5] = 1;
	struct machine m;
	run_both(&p, &m);
	check_regs(&m, x);
	assert_int_equal(m.h->f[3], f64_bits(18.0));
	assert_int_equal(log_entries(&m), 0);
	machine_free(&m);

	/* FS off: the FP instruction traps after the translated prefix of its block. */
	manual(&g, &p, false, 0xff0);
	p.fs_off = true;
	uint64_t snap[2][32], pcs[2];
	memcpy(x, p.x, sizeof(x));
	I(&g, OP_ADDI, A0, 0, 3);
	R(&g, OP_ADD, A0, A0, A0);
	I(&g, OP_ADDI, A1, A0, 1);
	R(&g, OP_ADD, A1, A1, A0);
	x[A0] = 6;
	x[A1] = 13;
	pcs[0] = here(&g);
	memcpy(snap[0], x, sizeof(x));
	uint32_t fcvt = fp_r(0x69, 7, 1, A0, 2);
	RAW32(&g, fcvt, OP_FCVT_D_L); /* trap 0: illegal */
	R(&g, OP_ADD, A2, A0, A1);
	x[A2] = 19;
	I(&g, OP_ADDI, S4, GP, 2);
	x[S4] = JD_GP + 2;
	I(&g, OP_ADDI, A0, A0, 1);
	x[A0] = 7;
	pcs[1] = here(&g);
	memcpy(snap[1], x, sizeof(x));
	amo(&g, &amos[0], false, A3, S4, A2); /* trap 1: misaligned amoadd.w */
	I(&g, OP_ADDI, A0, A0, 1);
	x[A0] = 8;
	finish(&g);
	x[T6] = JD_TOHOST;
	x[T5] = 1;
	run_both(&p, &m);
	static const uint64_t cause[2] = { EXC_ILLEGAL, EXC_STORE_MISALIGNED };
	const uint64_t tval[2] = { fcvt, JD_GP + 2 };
	check_traps(&m, 2, cause, pcs, tval, snap);
	check_regs(&m, x);
	assert_int_equal(m.h->f[1], 0);
	machine_free(&m);
}

/* A counted loop whose block branches back to its own start (the code generator keeps it
 * in its code with registers cached): a load faults on the third iteration, after a
 * register cached in a host register was written (after the load) by the earlier ones. */
static void test_self_loop_trap(void **state)
{
	(void)state;
	static struct prog p;
	static struct gen g;
	uint64_t x[32], snap[1][32], pcs[1];
	manual(&g, &p, false, 0x300);
	memcpy(x, p.x, sizeof(x));
	I(&g, OP_ADDI, S0, 0, 3);
	I(&g, OP_ADDI, S1, GP, 0);
	U(&g, OP_LUI, S2, 0x80);
	x[S0] = 3;
	x[S1] = JD_GP;
	x[S2] = 0x80000;
	int top = new_label(&g);
	place(&g, top);
	for (int it = 0; it < 3; it++) {
		if (it == 0) {
			I(&g, OP_ADDI, A0, A0, 1);
			pcs[0] = here(&g);
			I(&g, OP_LD, A1, S1, 0);
			I(&g, OP_ADDI, A2, A2, 5);
			R(&g, OP_ADD, A2, A2, A2); /* a2: the most used register, cached */
			R(&g, OP_ADD, S1, S1, S2);
			I(&g, OP_ADDI, S0, S0, -1);
			B(&g, OP_BNE, S0, 0, top);
		}
		x[A0] += 1;
		if (it == 2) { /* gp + 1 MiB: outside RAM */
			memcpy(snap[0], x, sizeof(x));
		} else {
			x[A1] = 0;
			if (it == 0)
				memcpy(&x[A1], p.data + 0x1000, 8);
		}
		x[A2] = (x[A2] + 5) * 2;
		x[S1] += x[S2];
		x[S0] -= 1;
	}
	finish(&g);
	x[T6] = JD_TOHOST;
	x[T5] = 1;
	struct machine m;
	run_both(&p, &m);
	static const uint64_t cause[1] = { EXC_LOAD_ACCESS };
	const uint64_t tval[1] = { JD_GP + 0x100000 };
	check_traps(&m, 1, cause, pcs, tval, snap);
	check_regs(&m, x);
	assert_int_equal(log_word(&m, 0, L_MINSTRET), 3 + 7 + 7 + 1 + H_BEFORE_MINSTRET);
	assert_int_equal(m.h->instret, 3 + 7 * 3 - 1 + H_TOTAL + 6);
	machine_free(&m);
}

/* A jump to a block in the same page, patched into a direct jump to its checked entry once
 * the successor is translated; then fence.i with the successor unchanged (the checked entry
 * must send it back through the dispatcher, and the patched jump works again after), and a
 * store that rewrites the successor followed by fence.i (the new code must run). */
static void test_patched_chain_fence_i(void **state)
{
	(void)state;
	static struct prog p;
	static struct gen g;
	manual(&g, &p, false, 0x400);
	uint64_t x[32];
	memcpy(x, p.x, sizeof(x));
	int top = new_label(&g), succ = new_label(&g), n1 = new_label(&g), n2 = new_label(&g);
	uint32_t newinsn = enc_i(0x13, 0, A1, A1, 100); /* addi a1, a1, 100 */
	I(&g, OP_ADDI, S0, 0, 8);
	I(&g, OP_ADDI, A1, 0, 0);
	uint32_t hi = AUIPC_HI(&g, T2, succ);
	I_LO(&g, OP_ADDI, T2, T2, succ, hi, 0);
	li64(&g, T1, newinsn);
	place(&g, top);
	JAL(&g, 0, succ);
	C_NOP(&g); /* never runs */
	place(&g, succ);
	I(&g, OP_ADDI, A1, A1, 1); /* rewritten at s0 == 3 */
	I(&g, OP_ADDI, S0, S0, -1);
	I(&g, OP_ADDI, T0, 0, 5);
	B(&g, OP_BNE, S0, T0, n1);
	RAW32(&g, 0x0000100f, OP_FENCE_I); /* s0 == 5: nothing changed */
	place(&g, n1);
	I(&g, OP_ADDI, T0, 0, 3);
	B(&g, OP_BNE, S0, T0, n2);
	S(&g, OP_SW, T2, T1, 0); /* s0 == 3: rewrite the successor */
	RAW32(&g, 0x0000100f, OP_FENCE_I);
	place(&g, n2);
	B(&g, OP_BNE, S0, 0, top);
	finish(&g);
	x[S0] = 0;
	x[A1] = 5 * 1 + 3 * 100;
	x[T0] = 3;
	x[T1] = newinsn;
	x[T2] = JD_CODE + g.lab[succ];
	x[T6] = JD_TOHOST;
	x[T5] = 1;
	struct machine m;
	run_both(&p, &m);
	check_regs(&m, x);
	assert_int_equal(log_entries(&m), 0);
	uint32_t w;
	memcpy(&w, mram(&m, JD_CODE + g.lab[succ]), 4);
	assert_int_equal(w, newinsn);
	machine_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_writeback_bare),
		cmocka_unit_test(test_fault_writeback_sv39),
		cmocka_unit_test(test_fallback_mid_block),
		cmocka_unit_test(test_self_loop_trap),
		cmocka_unit_test(test_patched_chain_fence_i),
		cmocka_unit_test(test_random_programs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif /* JITDIFF_FUZZ */
