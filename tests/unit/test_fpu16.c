/* Zfh half-precision arithmetic (fpu16.c) against the results and fflags of Berkeley
 * SoftFloat as spike configures it: every rounding mode on ties, overflow, the tininess
 * boundary, NaN rules, signed zeros, fmin/fmax, compares, fclass and every conversion.
 * The vectors were cross-checked on qemu-riscv64 -cpu rv64,Zfh=true. Consistency checks
 * then compare add/mul/div/sqrt over a grid of operands with exact (or innocuously double
 * rounded) host double arithmetic narrowed by f64_to_f16. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/riscv/fpu.h"
#include "cpu/riscv/fpu16.h"

#define RNE FRM_RNE
#define RTZ FRM_RTZ
#define RDN FRM_RDN
#define RUP FRM_RUP
#define RMM FRM_RMM

#define NV FFLAG_NV
#define DZ FFLAG_DZ
#define OF FFLAG_OF
#define UF FFLAG_UF
#define NX FFLAG_NX

/* Halves used throughout. */
#define PZERO 0x0000
#define NZERO 0x8000
#define ONE 0x3c00
#define NONE 0xbc00 /* -1.0 */
#define TWO 0x4000
#define HALF 0x3800
#define PINF 0x7c00
#define NINF 0xfc00
#define QNAN 0x7e00  /* the canonical NaN */
#define NQNAN 0xfe55 /* a negative quiet NaN with payload */
#define SNAN 0x7c01
#define NSNAN 0xfd00
#define MAXF 0x7bff   /* 65504 */
#define MINSUB 0x0001 /* 2^-24 */
#define MAXSUB 0x03ff
#define MINNORM 0x0400 /* 2^-14 */
#define ULP1 0x1400    /* 2^-10, one ulp of 1.0 */
#define HULP1 0x1000   /* 2^-11, half an ulp of 1.0 */

enum op {
	ADD,
	SUB,
	MUL,
	DIV,
	SQRT,
	MADD,
	MSUB,
	NMSUB,
	NMADD,
	MIN,
	MAX,
	EQ,
	LT,
	LE,
	CLASS,
	TO_W,
	TO_WU,
	TO_L,
	TO_LU,
	FROM_W,
	FROM_WU,
	FROM_L,
	FROM_LU,
	TO_S,
	TO_D,
	FROM_S,
	FROM_D,
};

static const char *const op_names[] = {
	"add",	  "sub",    "mul",    "div",	"sqrt",	  "madd",   "msub",   "nmsub",	"nmadd",
	"min",	  "max",    "eq",     "lt",	"le",	  "class",  "to_i32", "to_u32", "to_i64",
	"to_u64", "i32_to", "u32_to", "i64_to", "u64_to", "to_f32", "to_f64", "f32_to", "f64_to",
};

struct vec {
	enum op op;
	int rm;
	uint64_t a, b, c;
	uint64_t r;
	uint32_t fl;
	int line;
};

#define V(op, rm, a, b, c, r, fl)                                                                  \
	{                                                                                          \
		op, rm, a, b, c, r, fl, __LINE__                                                   \
	}

static uint64_t run_op(const struct vec *v, uint32_t *fl)
{
	uint16_t a = (uint16_t)v->a, b = (uint16_t)v->b, c = (uint16_t)v->c;

	switch (v->op) {
	case ADD: return f16_add(a, b, v->rm, fl);
	case SUB: return f16_sub(a, b, v->rm, fl);
	case MUL: return f16_mul(a, b, v->rm, fl);
	case DIV: return f16_div(a, b, v->rm, fl);
	case SQRT: return f16_sqrt(a, v->rm, fl);
	case MADD: return f16_madd(a, b, c, v->rm, fl);
	case MSUB: return f16_msub(a, b, c, v->rm, fl);
	case NMSUB: return f16_nmsub(a, b, c, v->rm, fl);
	case NMADD: return f16_nmadd(a, b, c, v->rm, fl);
	case MIN: return f16_min(a, b, fl);
	case MAX: return f16_max(a, b, fl);
	case EQ: return (uint64_t)f16_eq(a, b, fl);
	case LT: return (uint64_t)f16_lt(a, b, fl);
	case LE: return (uint64_t)f16_le(a, b, fl);
	case CLASS: return f16_classify(a);
	case TO_W: return (uint64_t)f16_to_i32(a, v->rm, fl);
	case TO_WU: return (uint64_t)f16_to_u32(a, v->rm, fl);
	case TO_L: return (uint64_t)f16_to_i64(a, v->rm, fl);
	case TO_LU: return f16_to_u64(a, v->rm, fl);
	case FROM_W: return i32_to_f16((int32_t)v->a, v->rm, fl);
	case FROM_WU: return u32_to_f16((uint32_t)v->a, v->rm, fl);
	case FROM_L: return i64_to_f16((int64_t)v->a, v->rm, fl);
	case FROM_LU: return u64_to_f16(v->a, v->rm, fl);
	case TO_S: return f16_to_f32(a, fl);
	case TO_D: return f16_to_f64(a, fl);
	case FROM_S: return f32_to_f16((uint32_t)v->a, v->rm, fl);
	case FROM_D: return f64_to_f16(v->a, v->rm, fl);
	}
	return 0;
}

/* Runs every vector, reports each mismatch with its source line, fails if any. */
static void run_vecs(const struct vec *vs, size_t n)
{
	int bad = 0;

	for (size_t i = 0; i < n; i++) {
		const struct vec *v = &vs[i];
		/* Flags accumulate: start from a bit no operation raises to see that it stays. */
		uint32_t fl = 0x100;
		uint64_t r = run_op(v, &fl);

		if (r != v->r || fl != (v->fl | 0x100)) {
			print_error("line %d: %s rm=%d a=%#llx b=%#llx c=%#llx: got %#llx fl=%#x, "
				    "want %#llx fl=%#x\n",
				    v->line, op_names[v->op], v->rm, (unsigned long long)v->a,
				    (unsigned long long)v->b, (unsigned long long)v->c,
				    (unsigned long long)r, fl & 0xff, (unsigned long long)v->r,
				    v->fl);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

#define RUN(vs) run_vecs(vs, sizeof(vs) / sizeof((vs)[0]))

/* Ties and near-ties in every mode; RMM differs from RNE exactly on even ties. */
static void test_rounding_modes(void **state)
{
	static const struct vec vs[] = {
		/* 1 + 2^-11: a tie whose lower neighbour (1.0) is even. */
		V(ADD, RNE, ONE, HULP1, 0, 0x3c00, NX),
		V(ADD, RTZ, ONE, HULP1, 0, 0x3c00, NX),
		V(ADD, RDN, ONE, HULP1, 0, 0x3c00, NX),
		V(ADD, RUP, ONE, HULP1, 0, 0x3c01, NX),
		V(ADD, RMM, ONE, HULP1, 0, 0x3c01, NX),
		/* (1 + 2^-10) + 2^-11: a tie whose lower neighbour is odd. */
		V(ADD, RNE, 0x3c01, HULP1, 0, 0x3c02, NX),
		V(ADD, RTZ, 0x3c01, HULP1, 0, 0x3c01, NX),
		V(ADD, RDN, 0x3c01, HULP1, 0, 0x3c01, NX),
		V(ADD, RUP, 0x3c01, HULP1, 0, 0x3c02, NX),
		V(ADD, RMM, 0x3c01, HULP1, 0, 0x3c02, NX),
		/* The negative mirror: RDN and RUP swap, RMM goes away from zero. */
		V(SUB, RNE, NONE, HULP1, 0, 0xbc00, NX),
		V(SUB, RTZ, NONE, HULP1, 0, 0xbc00, NX),
		V(SUB, RDN, NONE, HULP1, 0, 0xbc01, NX),
		V(SUB, RUP, NONE, HULP1, 0, 0xbc00, NX),
		V(SUB, RMM, NONE, HULP1, 0, 0xbc01, NX),
		/* Exact results raise nothing in any mode. */
		V(ADD, RUP, ONE, ULP1, 0, 0x3c01, 0),
		V(ADD, RMM, ONE, ONE, 0, TWO, 0),
		/* 1/3 = 0x3555 + 0.33 ulp: only RUP moves up. */
		V(DIV, RNE, ONE, 0x4200, 0, 0x3555, NX),
		V(DIV, RTZ, ONE, 0x4200, 0, 0x3555, NX),
		V(DIV, RDN, ONE, 0x4200, 0, 0x3555, NX),
		V(DIV, RUP, ONE, 0x4200, 0, 0x3556, NX),
		V(DIV, RMM, ONE, 0x4200, 0, 0x3555, NX),
		V(DIV, RDN, NONE, 0x4200, 0, 0xb556, NX),
		/* sqrt(2) = 0x3da8 + 0.49 ulp. */
		V(SQRT, RNE, TWO, 0, 0, 0x3da8, NX),
		V(SQRT, RMM, TWO, 0, 0, 0x3da8, NX),
		V(SQRT, RUP, TWO, 0, 0, 0x3da9, NX),
		V(SQRT, RTZ, TWO, 0, 0, 0x3da8, NX),
		V(SQRT, RNE, 0x4400, 0, 0, TWO, 0),
		/* 3 * (1 + 2^-10) = 3 + 3 * 2^-10, a tie at the ulp 2^-9 of [2, 4). */
		V(MUL, RNE, 0x4200, 0x3c01, 0, 0x4202, NX),
		V(MUL, RMM, 0x4200, 0x3c01, 0, 0x4202, NX),
		V(MUL, RTZ, 0x4200, 0x3c01, 0, 0x4201, NX),
		V(MUL, RUP, 0x4200, 0x3c01, 0, 0x4202, NX),
		V(MUL, RDN, 0x4200, 0x3c01, 0, 0x4201, NX),
	};

	(void)state;
	RUN(vs);
}

/* Overflow: inf when rounding away from zero in the value's direction, else 0x7bff. */
static void test_overflow(void **state)
{
	static const struct vec vs[] = {
		V(ADD, RNE, MAXF, MAXF, 0, PINF, OF | NX),
		V(ADD, RTZ, MAXF, MAXF, 0, MAXF, OF | NX),
		V(ADD, RDN, MAXF, MAXF, 0, MAXF, OF | NX),
		V(ADD, RUP, MAXF, MAXF, 0, PINF, OF | NX),
		V(ADD, RMM, MAXF, MAXF, 0, PINF, OF | NX),
		V(ADD, RNE, 0xfbff, 0xfbff, 0, NINF, OF | NX),
		V(ADD, RTZ, 0xfbff, 0xfbff, 0, 0xfbff, OF | NX),
		V(ADD, RDN, 0xfbff, 0xfbff, 0, NINF, OF | NX),
		V(ADD, RUP, 0xfbff, 0xfbff, 0, 0xfbff, OF | NX),
		V(ADD, RMM, 0xfbff, 0xfbff, 0, NINF, OF | NX),
		/* 65504 + 16 = 65520, the tie between 0x7bff and 2^16: overflow only if rounded up.
		 */
		V(ADD, RNE, MAXF, 0x4c00, 0, PINF, OF | NX),
		V(ADD, RMM, MAXF, 0x4c00, 0, PINF, OF | NX),
		V(ADD, RTZ, MAXF, 0x4c00, 0, MAXF, NX),
		V(ADD, RDN, MAXF, 0x4c00, 0, MAXF, NX),
		V(ADD, RUP, MAXF, 0x4c00, 0, PINF, OF | NX),
		/* 65504 + 8: below the tie, so only RUP overflows. */
		V(ADD, RNE, MAXF, 0x4800, 0, MAXF, NX),
		V(ADD, RMM, MAXF, 0x4800, 0, MAXF, NX),
		V(ADD, RUP, MAXF, 0x4800, 0, PINF, OF | NX),
		V(MUL, RNE, 0x5bff, 0x5bff, 0, 0x7bfe, NX),    /* 65472.02 */
		V(MUL, RNE, 0x5c00, 0x5c00, 0, PINF, OF | NX), /* 2^16 */
		V(MUL, RTZ, 0xdc00, 0x5c00, 0, 0xfbff, OF | NX),
		V(DIV, RDN, MAXF, 0x3800, 0, MAXF, OF | NX),
		V(DIV, RDN, MAXF, 0xb800, 0, NINF, OF | NX),
		/* Infinite results from infinite operands are exact. */
		V(ADD, RNE, PINF, MAXF, 0, PINF, 0),
		V(MUL, RTZ, PINF, NONE, 0, NINF, 0),
	};

	(void)state;
	RUN(vs);
}

/* Subnormal results; UF needs tiny after rounding and inexact. */
static void test_subnormal_underflow(void **state)
{
	static const struct vec vs[] = {
		/* 2^-25: the tie between 0 and the smallest subnormal. */
		V(MUL, RNE, MINSUB, HALF, 0, PZERO, UF | NX),
		V(MUL, RTZ, MINSUB, HALF, 0, PZERO, UF | NX),
		V(MUL, RDN, MINSUB, HALF, 0, PZERO, UF | NX),
		V(MUL, RUP, MINSUB, HALF, 0, MINSUB, UF | NX),
		V(MUL, RMM, MINSUB, HALF, 0, MINSUB, UF | NX),
		V(MUL, RDN, 0x8001, HALF, 0, 0x8001, UF | NX),
		V(MUL, RUP, 0x8001, HALF, 0, NZERO, UF | NX),
		/* Exact subnormal results raise nothing. */
		V(MUL, RNE, 0x0002, HALF, 0, MINSUB, 0),
		V(MUL, RNE, MINNORM, HALF, 0, 0x0200, 0),
		V(SUB, RNE, MINNORM, MINSUB, 0, MAXSUB, 0),
		V(ADD, RNE, MAXSUB, MINSUB, 0, MINNORM, 0),
		/* (63/64) * (65 * 2^-20) = 2^-14 - 2^-26: rounded to 11 bits with an unbounded
		 * exponent it is a tie that reaches 2^-14 under RNE/RMM/RUP, so not tiny. */
		V(MUL, RNE, 0x3be0, 0x0410, 0, MINNORM, NX),
		V(MUL, RMM, 0x3be0, 0x0410, 0, MINNORM, NX),
		V(MUL, RUP, 0x3be0, 0x0410, 0, MINNORM, NX),
		V(MUL, RTZ, 0x3be0, 0x0410, 0, MAXSUB, UF | NX),
		V(MUL, RDN, 0x3be0, 0x0410, 0, MAXSUB, UF | NX),
		V(MUL, RDN, 0xbbe0, 0x0410, 0, 0x8400, NX),
		/* 1.4375 * (712 * 2^-24) = 2047 * 2^-25 = 2^-14 - 2^-25: exact in 11 bits, so tiny,
		 * yet the subnormal rounding gives 2^-14: UF with a normal result. */
		V(MUL, RNE, 0x3dc0, 0x02c8, 0, MINNORM, UF | NX),
		V(MUL, RMM, 0x3dc0, 0x02c8, 0, MINNORM, UF | NX),
		V(MUL, RUP, 0x3dc0, 0x02c8, 0, MINNORM, UF | NX),
		V(MUL, RTZ, 0x3dc0, 0x02c8, 0, MAXSUB, UF | NX),
		V(MUL, RDN, 0x3dc0, 0x02c8, 0, MAXSUB, UF | NX),
		/* Division into the subnormal range, and far below it. */
		V(DIV, RNE, MINNORM, 0x4200, 0, 0x0155, UF | NX),
		V(DIV, RUP, MINSUB, MAXF, 0, MINSUB, UF | NX),
		V(DIV, RNE, MINSUB, MAXF, 0, PZERO, UF | NX),
		V(DIV, RNE, 0x8001, MAXF, 0, NZERO, UF | NX),
		/* Subnormal operands are normalized exactly. */
		V(MUL, RNE, MAXSUB, 0x6800, 0, 0x2ffe, 0),
		V(DIV, RNE, MINSUB, MINSUB, 0, ONE, 0),
		V(SQRT, RNE, MINSUB, 0, 0, 0x0c00, 0),
		V(SQRT, RNE, MAXSUB, 0, 0, 0x1fff, NX),
	};

	(void)state;
	RUN(vs);
}

/* Every NaN result is 0x7e00; NV only for signalling operands (or invalid operations). */
static void test_nan(void **state)
{
	static const struct vec vs[] = {
		V(ADD, RNE, QNAN, ONE, 0, QNAN, 0),
		V(ADD, RNE, NQNAN, ONE, 0, QNAN, 0),
		V(ADD, RNE, ONE, 0x7fff, 0, QNAN, 0),
		V(ADD, RNE, SNAN, ONE, 0, QNAN, NV),
		V(ADD, RNE, ONE, NSNAN, 0, QNAN, NV),
		V(ADD, RNE, QNAN, SNAN, 0, QNAN, NV),
		V(SUB, RNE, PINF, SNAN, 0, QNAN, NV),
		V(MUL, RNE, NQNAN, PZERO, 0, QNAN, 0),
		V(MUL, RNE, SNAN, PINF, 0, QNAN, NV),
		V(DIV, RNE, QNAN, PZERO, 0, QNAN, 0),
		V(DIV, RNE, ONE, SNAN, 0, QNAN, NV),
		V(SQRT, RNE, NQNAN, 0, 0, QNAN, 0),
		V(SQRT, RNE, SNAN, 0, 0, QNAN, NV),
		/* Invalid operations. */
		V(ADD, RNE, PINF, NINF, 0, QNAN, NV),
		V(SUB, RNE, PINF, PINF, 0, QNAN, NV),
		V(ADD, RNE, PINF, PINF, 0, PINF, 0),
		V(MUL, RNE, PINF, PZERO, 0, QNAN, NV),
		V(MUL, RNE, NZERO, NINF, 0, QNAN, NV),
		V(DIV, RNE, PZERO, NZERO, 0, QNAN, NV),
		V(DIV, RNE, PINF, NINF, 0, QNAN, NV),
		V(SQRT, RNE, NONE, 0, 0, QNAN, NV),
		V(SQRT, RNE, NINF, 0, 0, QNAN, NV),
		V(SQRT, RNE, 0x8001, 0, 0, QNAN, NV),
	};

	(void)state;
	RUN(vs);
}

/* x/0 is DZ only for finite nonzero x; inf and zero operands give exact results. */
static void test_div_sqrt_special(void **state)
{
	static const struct vec vs[] = {
		V(DIV, RNE, ONE, PZERO, 0, PINF, DZ), V(DIV, RNE, NONE, PZERO, 0, NINF, DZ),
		V(DIV, RTZ, ONE, NZERO, 0, NINF, DZ), V(DIV, RNE, MINSUB, PZERO, 0, PINF, DZ),
		V(DIV, RNE, PINF, PZERO, 0, PINF, 0), V(DIV, RNE, ONE, NINF, 0, NZERO, 0),
		V(DIV, RNE, NZERO, ONE, 0, NZERO, 0), V(DIV, RNE, 0x4500, TWO, 0, 0x4100, 0),
		V(SQRT, RNE, PZERO, 0, 0, PZERO, 0),  V(SQRT, RDN, NZERO, 0, 0, NZERO, 0),
		V(SQRT, RNE, PINF, 0, 0, PINF, 0),    V(SQRT, RNE, MAXF, 0, 0, 0x5bff, NX),
	};

	(void)state;
	RUN(vs);
}

/* x + (-x) is +0 except under RDN; zeros of one sign keep it. */
static void test_signed_zero(void **state)
{
	static const struct vec vs[] = {
		V(ADD, RNE, ONE, NONE, 0, PZERO, 0),
		V(ADD, RTZ, ONE, NONE, 0, PZERO, 0),
		V(ADD, RUP, ONE, NONE, 0, PZERO, 0),
		V(ADD, RMM, ONE, NONE, 0, PZERO, 0),
		V(ADD, RDN, ONE, NONE, 0, NZERO, 0),
		V(SUB, RNE, MINSUB, MINSUB, 0, PZERO, 0),
		V(SUB, RDN, MINSUB, MINSUB, 0, NZERO, 0),
		V(ADD, RNE, PZERO, NZERO, 0, PZERO, 0),
		V(ADD, RDN, PZERO, NZERO, 0, NZERO, 0),
		V(ADD, RNE, NZERO, NZERO, 0, NZERO, 0),
		V(ADD, RUP, NZERO, NZERO, 0, NZERO, 0),
		V(ADD, RDN, PZERO, PZERO, 0, PZERO, 0),
		V(SUB, RNE, NZERO, PZERO, 0, NZERO, 0),
		V(ADD, RNE, NZERO, ONE, 0, ONE, 0),
		V(MUL, RNE, NZERO, ONE, 0, NZERO, 0),
		V(MUL, RNE, NZERO, NONE, 0, PZERO, 0),
		/* A product that underflows to zero keeps its sign. */
		V(MUL, RNE, 0x8001, MINSUB, 0, NZERO, UF | NX),
		V(MUL, RUP, 0x8001, MINSUB, 0, NZERO, UF | NX),
	};

	(void)state;
	RUN(vs);
}

/* Fused multiply-add: one rounding, sign variants, inf * 0, exact cancellation. */
static void test_fma(void **state)
{
	static const struct vec vs[] = {
		V(MADD, RNE, TWO, 0x4200, ONE, 0x4700, 0),  /*  2*3+1 =  7 */
		V(MSUB, RNE, TWO, 0x4200, ONE, 0x4500, 0),  /*  2*3-1 =  5 */
		V(NMSUB, RNE, TWO, 0x4200, ONE, 0xc500, 0), /* -2*3+1 = -5 */
		V(NMADD, RNE, TWO, 0x4200, ONE, 0xc700, 0), /* -2*3-1 = -7 */
		/* (1+2^-10)^2 - 1 = 2^-9 + 2^-20, a tie at 2^-9: a separate multiply would round
		 * the 2^-20 away before the subtraction. */
		V(MADD, RNE, 0x3c01, 0x3c01, NONE, 0x1800, NX),
		V(MADD, RMM, 0x3c01, 0x3c01, NONE, 0x1801, NX),
		V(MADD, RUP, 0x3c01, 0x3c01, NONE, 0x1801, NX),
		V(MADD, RTZ, 0x3c01, 0x3c01, NONE, 0x1800, NX),
		V(MSUB, RNE, 0x3c01, 0x3c01, ONE, 0x1800, NX),
		V(NMSUB, RMM, 0x3c01, 0x3c01, ONE, 0x9801, NX),
		V(NMADD, RDN, 0x3c01, 0x3c01, NONE, 0x9801, NX),
		/* A 2^-48 product against 65504 spans ~80 bits: the sticky bit must survive. */
		V(MADD, RNE, MINSUB, MINSUB, MAXF, MAXF, NX),
		V(MADD, RUP, MINSUB, MINSUB, MAXF, PINF, OF | NX),
		V(MADD, RTZ, 0x8001, MINSUB, ONE, 0x3bff, NX),
		V(MADD, RNE, 0x8001, MINSUB, ONE, ONE, NX),
		V(MADD, RDN, 0x8001, MINSUB, ONE, 0x3bff, NX),
		V(MADD, RUP, MINSUB, MINSUB, PZERO, MINSUB, UF | NX),
		V(MADD, RNE, MINSUB, MINSUB, PZERO, PZERO, UF | NX),
		/* Exact cancellation: +0, or -0 under RDN. */
		V(MADD, RNE, ONE, ONE, NONE, PZERO, 0),
		V(MADD, RDN, ONE, ONE, NONE, NZERO, 0),
		V(MSUB, RDN, ONE, ONE, ONE, NZERO, 0),
		V(MADD, RNE, PZERO, NONE, PZERO, PZERO, 0),
		V(MADD, RDN, PZERO, NONE, PZERO, NZERO, 0),
		V(MADD, RNE, PZERO, NONE, NZERO, NZERO, 0),
		V(NMADD, RNE, PZERO, ONE, PZERO, NZERO, 0),
		V(MADD, RNE, PZERO, ONE, 0x4500, 0x4500, 0),
		/* inf * 0 is invalid, even with a quiet NaN addend; a NaN factor is not. */
		V(MADD, RNE, PINF, PZERO, ONE, QNAN, NV),
		V(MADD, RNE, NZERO, NINF, QNAN, QNAN, NV),
		V(MADD, RNE, PINF, PZERO, SNAN, QNAN, NV),
		V(MADD, RNE, QNAN, PZERO, PINF, QNAN, 0),
		V(MADD, RNE, PINF, QNAN, ONE, QNAN, 0),
		V(MADD, RNE, SNAN, ONE, ONE, QNAN, NV),
		V(MADD, RNE, ONE, ONE, SNAN, QNAN, NV),
		V(MADD, RNE, QNAN, ONE, SNAN, QNAN, NV),
		V(MADD, RNE, ONE, ONE, NQNAN, QNAN, 0),
		V(MADD, RNE, PINF, ONE, QNAN, QNAN, 0),
		/* inf - inf between product and addend is invalid; same signs are not. */
		V(MADD, RNE, PINF, ONE, NINF, QNAN, NV),
		V(MSUB, RNE, PINF, ONE, PINF, QNAN, NV),
		V(NMSUB, RNE, PINF, ONE, PINF, QNAN, NV),
		V(NMADD, RNE, PINF, ONE, PINF, NINF, 0),
		V(MADD, RNE, PINF, NONE, NINF, NINF, 0),
		V(MADD, RNE, MAXF, ONE, NINF, NINF, 0),
		V(MADD, RNE, MAXF, MAXF, NINF, NINF, 0),
		/* A finite product that overflows is not an infinity yet. */
		V(MADD, RNE, MAXF, MAXF, 0xfbff, PINF, OF | NX),
		V(MADD, RNE, MAXF, TWO, 0xfbff, MAXF, 0),
	};

	(void)state;
	RUN(vs);
}

/* fmin/fmax: minimumNumber/maximumNumber, -0 < +0, NaN operands drop out. */
static void test_min_max(void **state)
{
	static const struct vec vs[] = {
		V(MIN, 0, ONE, TWO, 0, ONE, 0),
		V(MAX, 0, ONE, TWO, 0, TWO, 0),
		V(MIN, 0, NONE, ONE, 0, NONE, 0),
		V(MIN, 0, 0xc000, NONE, 0, 0xc000, 0),
		V(MAX, 0, 0xc000, NONE, 0, NONE, 0),
		V(MIN, 0, PZERO, NZERO, 0, NZERO, 0),
		V(MIN, 0, NZERO, PZERO, 0, NZERO, 0),
		V(MAX, 0, PZERO, NZERO, 0, PZERO, 0),
		V(MAX, 0, NZERO, PZERO, 0, PZERO, 0),
		V(MIN, 0, NINF, MAXF, 0, NINF, 0),
		V(MAX, 0, PINF, MAXF, 0, PINF, 0),
		V(MIN, 0, MINSUB, 0x8001, 0, 0x8001, 0),
		/* One NaN: the other operand, bit for bit. */
		V(MIN, 0, QNAN, ONE, 0, ONE, 0),
		V(MIN, 0, MINSUB, NQNAN, 0, MINSUB, 0),
		V(MAX, 0, NQNAN, NZERO, 0, NZERO, 0),
		V(MIN, 0, SNAN, ONE, 0, ONE, NV),
		V(MAX, 0, NONE, NSNAN, 0, NONE, NV),
		/* Both NaN: the canonical NaN. */
		V(MIN, 0, NQNAN, 0x7fff, 0, QNAN, 0),
		V(MAX, 0, QNAN, QNAN, 0, QNAN, 0),
		V(MAX, 0, SNAN, QNAN, 0, QNAN, NV),
		V(MIN, 0, NSNAN, SNAN, 0, QNAN, NV),
	};

	(void)state;
	RUN(vs);
}

/* feq is quiet (NV for sNaN only); flt/fle signal on any NaN. */
static void test_compare(void **state)
{
	static const struct vec vs[] = {
		V(EQ, 0, ONE, ONE, 0, 1, 0),	  V(EQ, 0, ONE, TWO, 0, 0, 0),
		V(EQ, 0, PZERO, NZERO, 0, 1, 0),  V(EQ, 0, QNAN, QNAN, 0, 0, 0),
		V(EQ, 0, QNAN, ONE, 0, 0, 0),	  V(EQ, 0, ONE, SNAN, 0, 0, NV),
		V(EQ, 0, NSNAN, NSNAN, 0, 0, NV), V(LT, 0, ONE, TWO, 0, 1, 0),
		V(LT, 0, TWO, ONE, 0, 0, 0),	  V(LT, 0, ONE, ONE, 0, 0, 0),
		V(LT, 0, NONE, ONE, 0, 1, 0),	  V(LT, 0, 0xc000, NONE, 0, 1, 0),
		V(LT, 0, NZERO, PZERO, 0, 0, 0),  V(LT, 0, NINF, 0xfbff, 0, 1, 0),
		V(LT, 0, 0x8001, PZERO, 0, 1, 0), V(LT, 0, QNAN, ONE, 0, 0, NV),
		V(LT, 0, ONE, SNAN, 0, 0, NV),	  V(LE, 0, ONE, ONE, 0, 1, 0),
		V(LE, 0, TWO, ONE, 0, 0, 0),	  V(LE, 0, NZERO, PZERO, 0, 1, 0),
		V(LE, 0, PZERO, NZERO, 0, 1, 0),  V(LE, 0, NONE, 0xc000, 0, 0, 0),
		V(LE, 0, ONE, NQNAN, 0, 0, NV),	  V(LE, 0, SNAN, ONE, 0, 0, NV),
	};

	(void)state;
	RUN(vs);
}

static void test_classify(void **state)
{
	static const struct vec vs[] = {
		V(CLASS, 0, NINF, 0, 0, 1 << 0, 0),   V(CLASS, 0, NONE, 0, 0, 1 << 1, 0),
		V(CLASS, 0, 0xfbff, 0, 0, 1 << 1, 0), V(CLASS, 0, 0x8001, 0, 0, 1 << 2, 0),
		V(CLASS, 0, 0x83ff, 0, 0, 1 << 2, 0), V(CLASS, 0, NZERO, 0, 0, 1 << 3, 0),
		V(CLASS, 0, PZERO, 0, 0, 1 << 4, 0),  V(CLASS, 0, MINSUB, 0, 0, 1 << 5, 0),
		V(CLASS, 0, MAXSUB, 0, 0, 1 << 5, 0), V(CLASS, 0, MINNORM, 0, 0, 1 << 6, 0),
		V(CLASS, 0, MAXF, 0, 0, 1 << 6, 0),   V(CLASS, 0, PINF, 0, 0, 1 << 7, 0),
		V(CLASS, 0, SNAN, 0, 0, 1 << 8, 0),   V(CLASS, 0, 0x7dff, 0, 0, 1 << 8, 0),
		V(CLASS, 0, NSNAN, 0, 0, 1 << 8, 0),  V(CLASS, 0, QNAN, 0, 0, 1 << 9, 0),
		V(CLASS, 0, 0xffff, 0, 0, 1 << 9, 0),
	};

	(void)state;
	RUN(vs);
}

#define I64(v) ((uint64_t)(int64_t)(v))

/* Conversions to integers: rounding per rm, NX when inexact, saturation with NV. */
static void test_to_int(void **state)
{
	static const struct vec vs[] = {
		/* 2.5 and -2.5 in each mode. */
		V(TO_W, RNE, 0x4100, 0, 0, 2, NX),
		V(TO_W, RTZ, 0x4100, 0, 0, 2, NX),
		V(TO_W, RDN, 0x4100, 0, 0, 2, NX),
		V(TO_W, RUP, 0x4100, 0, 0, 3, NX),
		V(TO_W, RMM, 0x4100, 0, 0, 3, NX),
		V(TO_W, RNE, 0xc100, 0, 0, I64(-2), NX),
		V(TO_W, RTZ, 0xc100, 0, 0, I64(-2), NX),
		V(TO_W, RDN, 0xc100, 0, 0, I64(-3), NX),
		V(TO_W, RUP, 0xc100, 0, 0, I64(-2), NX),
		V(TO_W, RMM, 0xc100, 0, 0, I64(-3), NX),
		V(TO_L, RNE, 0x3e00, 0, 0, 2, NX), /* 1.5 */
		V(TO_L, RMM, 0xbe00, 0, 0, I64(-2), NX),
		V(TO_L, RUP, MINSUB, 0, 0, 1, NX),
		V(TO_L, RDN, 0x8001, 0, 0, I64(-1), NX),
		V(TO_L, RNE, 0x3800, 0, 0, 0, NX), /* 0.5 ties to even 0 */
		V(TO_LU, RMM, 0x3800, 0, 0, 1, NX),
		/* Exact values, the extremes of the format. */
		V(TO_W, RNE, MAXF, 0, 0, 65504, 0),
		V(TO_W, RNE, 0xfbff, 0, 0, I64(-65504), 0),
		V(TO_WU, RNE, MAXF, 0, 0, 65504, 0),
		V(TO_L, RNE, 0xfbff, 0, 0, I64(-65504), 0),
		V(TO_LU, RTZ, MAXF, 0, 0, 65504, 0),
		V(TO_W, RNE, NZERO, 0, 0, 0, 0),
		V(TO_WU, RNE, NZERO, 0, 0, 0, 0),
		V(TO_LU, RDN, NZERO, 0, 0, 0, 0),
		/* NaN: the largest positive value. */
		V(TO_W, RNE, QNAN, 0, 0, 0x7fffffff, NV),
		V(TO_W, RNE, NQNAN, 0, 0, 0x7fffffff, NV),
		V(TO_WU, RNE, SNAN, 0, 0, I64(-1), NV), /* 0xffffffff sign-extended */
		V(TO_L, RNE, NSNAN, 0, 0, INT64_MAX, NV),
		V(TO_LU, RNE, QNAN, 0, 0, UINT64_MAX, NV),
		/* Infinities saturate. */
		V(TO_W, RNE, PINF, 0, 0, 0x7fffffff, NV),
		V(TO_W, RNE, NINF, 0, 0, I64(INT32_MIN), NV),
		V(TO_WU, RNE, PINF, 0, 0, I64(-1), NV),
		V(TO_WU, RNE, NINF, 0, 0, 0, NV),
		V(TO_L, RNE, PINF, 0, 0, INT64_MAX, NV),
		V(TO_L, RNE, NINF, 0, 0, I64(INT64_MIN), NV),
		V(TO_LU, RNE, PINF, 0, 0, UINT64_MAX, NV),
		V(TO_LU, RNE, NINF, 0, 0, 0, NV),
		/* Unsigned: a negative value is invalid once it rounds to a nonzero magnitude, and
		 * then NX is not raised; one that rounds to 0 is just inexact. */
		V(TO_WU, RNE, NONE, 0, 0, 0, NV),
		V(TO_LU, RTZ, 0xfbff, 0, 0, 0, NV),
		V(TO_WU, RTZ, 0xb800, 0, 0, 0, NX), /* -0.5 */
		V(TO_WU, RNE, 0xb800, 0, 0, 0, NX),
		V(TO_WU, RUP, 0xb800, 0, 0, 0, NX),
		V(TO_WU, RDN, 0xb800, 0, 0, 0, NV),
		V(TO_WU, RMM, 0xb800, 0, 0, 0, NV),
		V(TO_LU, RNE, 0xba00, 0, 0, 0, NV), /* -0.75 */
		V(TO_LU, RTZ, 0xbbff, 0, 0, 0, NX),
		V(TO_LU, RUP, 0x8001, 0, 0, 0, NX),
		V(TO_LU, RDN, 0x8001, 0, 0, 0, NV),
	};

	(void)state;
	RUN(vs);
}

/* Conversions from integers: exact up to 11 bits, then rounded, overflowing past 65504. */
static void test_from_int(void **state)
{
	static const struct vec vs[] = {
		V(FROM_W, RNE, 0, 0, 0, PZERO, 0),
		V(FROM_W, RDN, 0, 0, 0, PZERO, 0),
		V(FROM_W, RNE, I64(-1), 0, 0, NONE, 0),
		V(FROM_W, RNE, 2048, 0, 0, 0x6800, 0),
		/* 2049 is the tie between 2048 (even) and 2050. */
		V(FROM_W, RNE, 2049, 0, 0, 0x6800, NX),
		V(FROM_W, RTZ, 2049, 0, 0, 0x6800, NX),
		V(FROM_W, RDN, 2049, 0, 0, 0x6800, NX),
		V(FROM_W, RUP, 2049, 0, 0, 0x6801, NX),
		V(FROM_W, RMM, 2049, 0, 0, 0x6801, NX),
		V(FROM_W, RNE, 2051, 0, 0, 0x6802, NX),
		V(FROM_W, RDN, I64(-2049), 0, 0, 0xe801, NX),
		V(FROM_W, RUP, I64(-2049), 0, 0, 0xe800, NX),
		V(FROM_W, RNE, 65504, 0, 0, MAXF, 0),
		/* 65520 is the tie between 65504 and 2^16. */
		V(FROM_W, RNE, 65520, 0, 0, PINF, OF | NX),
		V(FROM_W, RTZ, 65520, 0, 0, MAXF, NX),
		V(FROM_W, RMM, 65519, 0, 0, MAXF, NX),
		V(FROM_W, RTZ, 65536, 0, 0, MAXF, OF | NX),
		V(FROM_W, RNE, I64(INT32_MIN), 0, 0, NINF, OF | NX),
		V(FROM_W, RUP, I64(INT32_MIN), 0, 0, 0xfbff, OF | NX),
		V(FROM_WU, RNE, 0xffffffff, 0, 0, PINF, OF | NX),
		V(FROM_WU, RDN, 0xffffffff, 0, 0, MAXF, OF | NX),
		V(FROM_WU, RNE, 1024, 0, 0, 0x6400, 0),
		V(FROM_L, RNE, I64(INT64_MIN), 0, 0, NINF, OF | NX),
		V(FROM_L, RTZ, I64(INT64_MIN), 0, 0, 0xfbff, OF | NX),
		V(FROM_L, RNE, INT64_MAX, 0, 0, PINF, OF | NX),
		V(FROM_L, RNE, I64(-65504), 0, 0, 0xfbff, 0),
		V(FROM_L, RMM, 4097, 0, 0, 0x6c00, NX),
		V(FROM_L, RUP, 4097, 0, 0, 0x6c01, NX),
		V(FROM_LU, RNE, UINT64_MAX, 0, 0, PINF, OF | NX),
		V(FROM_LU, RTZ, UINT64_MAX, 0, 0, MAXF, OF | NX),
		V(FROM_LU, RUP, 1, 0, 0, ONE, 0),
		V(FROM_LU, RDN, 0x8000000000000001ULL, 0, 0, MAXF, OF | NX),
	};

	(void)state;
	RUN(vs);
}

/* Widening to single/double is exact; narrowing rounds like any other result. */
static void test_float_conversions(void **state)
{
	static const struct vec vs[] = {
		V(TO_S, 0, ONE, 0, 0, 0x3f800000, 0),
		V(TO_S, 0, NZERO, 0, 0, 0x80000000, 0),
		V(TO_S, 0, MAXF, 0, 0, 0x477fe000, 0),
		V(TO_S, 0, MINSUB, 0, 0, 0x33800000, 0),
		V(TO_S, 0, 0x83ff, 0, 0, 0xb87fc000, 0),
		V(TO_S, 0, NINF, 0, 0, 0xff800000, 0),
		V(TO_S, 0, NQNAN, 0, 0, 0x7fc00000, 0),
		V(TO_S, 0, SNAN, 0, 0, 0x7fc00000, NV),
		V(TO_D, 0, ONE, 0, 0, 0x3ff0000000000000ULL, 0),
		V(TO_D, 0, MINSUB, 0, 0, 0x3e70000000000000ULL, 0),
		V(TO_D, 0, 0xfbff, 0, 0, 0xc0effc0000000000ULL, 0),
		V(TO_D, 0, PINF, 0, 0, 0x7ff0000000000000ULL, 0),
		V(TO_D, 0, QNAN, 0, 0, 0x7ff8000000000000ULL, 0),
		V(TO_D, 0, NSNAN, 0, 0, 0x7ff8000000000000ULL, NV),

		V(FROM_S, RNE, 0x3f800000, 0, 0, ONE, 0),
		V(FROM_S, RNE, 0x80000000, 0, 0, NZERO, 0),
		V(FROM_S, RNE, 0x7f800000, 0, 0, PINF, 0),
		V(FROM_S, RNE, 0xff800000, 0, 0, NINF, 0),
		V(FROM_S, RNE, 0xffc00000, 0, 0, QNAN, 0),
		V(FROM_S, RNE, 0x7fc12345, 0, 0, QNAN, 0),
		V(FROM_S, RNE, 0x7f800001, 0, 0, QNAN, NV),
		V(FROM_S, RNE, 0xffbfffff, 0, 0, QNAN, NV),
		/* 1 + 2^-11 and 1 + 2^-11 + 2^-23. */
		V(FROM_S, RNE, 0x3f801000, 0, 0, 0x3c00, NX),
		V(FROM_S, RMM, 0x3f801000, 0, 0, 0x3c01, NX),
		V(FROM_S, RNE, 0x3f801001, 0, 0, 0x3c01, NX),
		V(FROM_S, RTZ, 0x3f801fff, 0, 0, 0x3c00, NX),
		V(FROM_S, RDN, 0xbf801001, 0, 0, 0xbc01, NX),
		V(FROM_S, RNE, 0x477ff000, 0, 0, PINF, OF | NX), /* 65520 */
		V(FROM_S, RTZ, 0x477ff000, 0, 0, MAXF, NX),
		V(FROM_S, RDN, 0x477fefff, 0, 0, MAXF, NX),
		V(FROM_S, RNE, 0x7f7fffff, 0, 0, PINF, OF | NX),
		V(FROM_S, RUP, 0xff7fffff, 0, 0, 0xfbff, OF | NX),
		V(FROM_S, RNE, 0x33800000, 0, 0, MINSUB, 0),	  /* 2^-24 */
		V(FROM_S, RNE, 0x33000000, 0, 0, PZERO, UF | NX), /* 2^-25 */
		V(FROM_S, RMM, 0x33000000, 0, 0, MINSUB, UF | NX),
		V(FROM_S, RNE, 0x33000001, 0, 0, MINSUB, UF | NX),
		V(FROM_S, RNE, 0x387fe000, 0, 0, MINNORM, UF | NX), /* 2^-14 - 2^-25 */
		V(FROM_S, RNE, 0x387ff000, 0, 0, MINNORM, NX),	    /* 2^-14 - 2^-26 */
		V(FROM_S, RTZ, 0x387ff000, 0, 0, MAXSUB, UF | NX),
		V(FROM_S, RUP, 0x00000001, 0, 0, MINSUB, UF | NX), /* single subnormal */
		V(FROM_S, RNE, 0x00000001, 0, 0, PZERO, UF | NX),
		V(FROM_S, RDN, 0x80000001, 0, 0, 0x8001, UF | NX),

		V(FROM_D, RNE, 0x3ff0000000000000ULL, 0, 0, ONE, 0),
		V(FROM_D, RNE, 0xfff0000000000000ULL, 0, 0, NINF, 0),
		V(FROM_D, RNE, 0xfff8000000000000ULL, 0, 0, QNAN, 0),
		V(FROM_D, RNE, 0x7ff0000000000001ULL, 0, 0, QNAN, NV),
		V(FROM_D, RNE, 0x3ff0020000000000ULL, 0, 0, 0x3c00, NX), /* 1 + 2^-11 */
		V(FROM_D, RMM, 0x3ff0020000000000ULL, 0, 0, 0x3c01, NX),
		V(FROM_D, RNE, 0x3ff0020000000001ULL, 0, 0, 0x3c01, NX),
		V(FROM_D, RUP, 0x3ff0000000000001ULL, 0, 0, 0x3c01, NX),
		V(FROM_D, RNE, 0x40effe0000000000ULL, 0, 0, PINF, OF | NX), /* 65520 */
		V(FROM_D, RNE, 0x40effdffffffffffULL, 0, 0, MAXF, NX),
		V(FROM_D, RNE, 0x7fefffffffffffffULL, 0, 0, PINF, OF | NX),
		V(FROM_D, RTZ, 0x7fefffffffffffffULL, 0, 0, MAXF, OF | NX),
		V(FROM_D, RNE, 0x3e60000000000000ULL, 0, 0, PZERO, UF | NX), /* 2^-25 */
		V(FROM_D, RNE, 0x3e60000000000001ULL, 0, 0, MINSUB, UF | NX),
		V(FROM_D, RUP, 0x0000000000000001ULL, 0, 0, MINSUB, UF | NX),
		V(FROM_D, RDN, 0x8000000000000001ULL, 0, 0, 0x8001, UF | NX),
		V(FROM_D, RTZ, 0x8000000000000001ULL, 0, 0, NZERO, UF | NX),
	};

	(void)state;
	RUN(vs);
}

/* The exact value of a non-NaN half, computed independently of fpu16.c. */
static double h2d(uint16_t h)
{
	int e = (h >> 10) & 0x1f;
	double m = (h & 0x3ff) | (e ? 0x400 : 0);
	double d = e == 0x1f ? INFINITY : ldexp(m, (e ? e : 1) - 25);

	return h & 0x8000 ? -d : d;
}

static uint16_t d2h(double d, int rm, uint32_t *fl)
{
	uint64_t bits;

	memcpy(&bits, &d, sizeof(bits));
	return f64_to_f16(bits, rm, fl);
}

static int is_nan16(uint16_t h)
{
	return (h & 0x7fff) > 0x7c00;
}

/*
 * Every non-NaN half survives f16 -> f32/f64 -> f16 unchanged and without flags in every
 * mode, and widens to exactly its value.
 */
static void test_roundtrip_all(void **state)
{
	(void)state;
	for (uint32_t a = 0; a < 0x10000; a++) {
		uint16_t h = (uint16_t)a;

		if (is_nan16(h))
			continue;
		for (int rm = RNE; rm <= RMM; rm++) {
			uint32_t fl = 0;

			assert_int_equal(f32_to_f16(f16_to_f32(h, &fl), rm, &fl), h);
			assert_int_equal(f64_to_f16(f16_to_f64(h, &fl), rm, &fl), h);
			assert_int_equal(fl, 0);
		}
		uint32_t fl = 0, fb = f16_to_f32(h, &fl);
		uint64_t db = f16_to_f64(h, &fl);
		float f;
		double d;

		memcpy(&f, &fb, sizeof(f));
		memcpy(&d, &db, sizeof(d));
		assert_true((double)f == h2d(h) && d == h2d(h));
		assert_int_equal(signbit(d) != 0, h >> 15);
		assert_int_equal(fl, 0);
	}
}

/*
 * add, sub and mul of halves are exact in double, so narrowing the host's result with
 * f64_to_f16 must give the same half and the same flags in every mode. Division and square
 * root rounded to double and then to half are correct under RNE (53 >= 2 * 11 + 2).
 */
static void test_consistency_with_double(void **state)
{
	int bad = 0;

	(void)state;
	for (uint32_t i = 0; i < 0x10000; i += 61) {
		uint16_t a = (uint16_t)(i * 0x9e37u);

		if (is_nan16(a) || (a & 0x7fff) == 0x7c00)
			continue;
		for (uint32_t j = 0; j < 0x10000; j += 67) {
			uint16_t b = (uint16_t)(j * 0x7f4bu + 0x1234u);

			if (is_nan16(b) || (b & 0x7fff) == 0x7c00)
				continue;
			double x = h2d(a), y = h2d(b);

			for (int rm = RNE; rm <= RMM; rm++) {
				uint32_t f1 = 0, f2 = 0;
				uint16_t r1 = f16_add(a, b, rm, &f1), r2 = d2h(x + y, rm, &f2);

				/* An exact zero sum's sign depends on rm, not on the host. */
				if (x + y != 0 && (r1 != r2 || f1 != f2))
					bad++;
				f1 = f2 = 0;
				r1 = f16_mul(a, b, rm, &f1);
				r2 = d2h(x * y, rm, &f2);
				if (r1 != r2 || f1 != f2)
					bad++;
			}
			if (y != 0) {
				uint32_t f1 = 0, f2 = 0;
				uint16_t r1 = f16_div(a, b, RNE, &f1), r2 = d2h(x / y, RNE, &f2);

				if (r1 != r2 || f1 != f2)
					bad++;
			}
		}
		if (!(a & 0x8000)) {
			uint32_t f1 = 0, f2 = 0;
			uint16_t r1 = f16_sqrt(a, RNE, &f1), r2 = d2h(sqrt(h2d(a)), RNE, &f2);

			if (r1 != r2 || f1 != f2)
				bad++;
		}
	}
	assert_int_equal(bad, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rounding_modes),
		cmocka_unit_test(test_overflow),
		cmocka_unit_test(test_subnormal_underflow),
		cmocka_unit_test(test_nan),
		cmocka_unit_test(test_div_sqrt_special),
		cmocka_unit_test(test_signed_zero),
		cmocka_unit_test(test_fma),
		cmocka_unit_test(test_min_max),
		cmocka_unit_test(test_compare),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_to_int),
		cmocka_unit_test(test_from_int),
		cmocka_unit_test(test_float_conversions),
		cmocka_unit_test(test_roundtrip_all),
		cmocka_unit_test(test_consistency_with_double),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
