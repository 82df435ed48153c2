/* Unit tests for the RISC-V F/D arithmetic (src/cpu/riscv/fpu.c).
 *
 * Expected values are worked out by hand in the comments (ulp = unit in the last place;
 * singles have 24 significant bits, doubles 53; tininess is judged after rounding) and
 * agree with SoftFloat as configured for RISC-V. The last test builds the software
 * implementation of the same file (FPU_FORCE_GENERIC, what non-x86 hosts run) under other
 * names and checks it against the host-FPU paths on random operands in every mode. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fenv.h>
#include <stdio.h>
#include <string.h>

#include "cpu/riscv/fpu.h"

#define RNE FRM_RNE
#define RTZ FRM_RTZ
#define RDN FRM_RDN
#define RUP FRM_RUP
#define RMM FRM_RMM

#define NX FFLAG_NX
#define UF FFLAG_UF
#define OF FFLAG_OF
#define DZ FFLAG_DZ
#define NV FFLAG_NV

/* singles */
#define S_ONE 0x3f800000U
#define S_TWO 0x40000000U
#define S_HALF 0x3f000000U
#define S_MAX 0x7f7fffffU
#define S_MIN_NORM 0x00800000U
#define S_INF 0x7f800000U
#define S_NINF 0xff800000U
#define S_QNAN 0x7fc00000U
#define S_SNAN 0x7f800001U
#define S_NZERO 0x80000000U

/* doubles */
#define D_ONE 0x3ff0000000000000ULL
#define D_TWO 0x4000000000000000ULL
#define D_MAX 0x7fefffffffffffffULL
#define D_MIN_NORM 0x0010000000000000ULL
#define D_INF 0x7ff0000000000000ULL
#define D_NINF 0xfff0000000000000ULL
#define D_QNAN 0x7ff8000000000000ULL
#define D_SNAN 0x7ff0000000000001ULL
#define D_NZERO 0x8000000000000000ULL

#define ALL5(x)                                                                                    \
	{                                                                                          \
		x, x, x, x, x                                                                      \
	}

/* Every operation behind one signature, so that one table runner serves them all. */
typedef uint64_t (*fpu_fn)(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl);

#define WRAP_R3(name, T)                                                                           \
	static uint64_t w_##name(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)         \
	{                                                                                          \
		return (uint64_t)name((T)a, (T)b, (T)c, rm, fl);                                   \
	}
#define WRAP_R2(name, T)                                                                           \
	static uint64_t w_##name(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)         \
	{                                                                                          \
		(void)c;                                                                           \
		return (uint64_t)name((T)a, (T)b, rm, fl);                                         \
	}
#define WRAP_R1(name, T)                                                                           \
	static uint64_t w_##name(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)         \
	{                                                                                          \
		(void)b;                                                                           \
		(void)c;                                                                           \
		return (uint64_t)name((T)a, rm, fl);                                               \
	}
#define WRAP_2(name, T)                                                                            \
	static uint64_t w_##name(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)         \
	{                                                                                          \
		(void)c;                                                                           \
		(void)rm;                                                                          \
		return (uint64_t)name((T)a, (T)b, fl);                                             \
	}
#define WRAP_1F(name, T)                                                                           \
	static uint64_t w_##name(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)         \
	{                                                                                          \
		(void)b;                                                                           \
		(void)c;                                                                           \
		(void)rm;                                                                          \
		return (uint64_t)name((T)a, fl);                                                   \
	}
#define WRAP_1(name, T)                                                                            \
	static uint64_t w_##name(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)         \
	{                                                                                          \
		(void)b;                                                                           \
		(void)c;                                                                           \
		(void)rm;                                                                          \
		(void)fl;                                                                          \
		return (uint64_t)name((T)a);                                                       \
	}

/* All the operations, applied to a wrapper macro W with a prefix P (f32_add -> P##f32_add). */
#define FPU_OPS(W, P)                                                                                                    \
	W##_R2(P##f32_add, uint32_t) W##_R2(P##f32_sub, uint32_t) W##_R2(P##f32_mul, uint32_t) W##_R2(                   \
		P##f32_div,                                                                                              \
		uint32_t) W##_R1(P##f32_sqrt,                                                                            \
				 uint32_t) W##_R3(P##f32_madd,                                                           \
						  uint32_t) W##_R3(P##f32_msub,                                          \
								   uint32_t) W##_R3(P##f32_nmsub,                        \
										    uint32_t)                            \
		W##_R3(P##f32_nmadd, uint32_t) W##_2(P##f32_min, uint32_t) W##_2(P##f32_max, uint32_t) W##_2(            \
			P##f32_eq,                                                                                       \
			uint32_t) W##_2(P##f32_lt,                                                                       \
					uint32_t) W##_2(P##f32_le,                                                       \
							uint32_t) W##_1(P##f32_classify,                                 \
									uint32_t) W##_R1(P##f32_to_i32,                  \
											 uint32_t)                       \
			W##_R1(P##f32_to_u32, uint32_t) W##_R1(P##f32_to_i64, uint32_t) W##_R1(                          \
				P##f32_to_u64,                                                                           \
				uint32_t) W##_R1(P##i32_to_f32,                                                          \
						 int32_t) W##_R1(P##u32_to_f32,                                          \
								 uint32_t) W##_R1(P##i64_to_f32,                         \
										  int64_t)                               \
				W##_R1(P##u64_to_f32, uint64_t) W##_R2(P##f64_add, uint64_t) W##_R2(                     \
					P##f64_sub,                                                                      \
					uint64_t) W##_R2(P##f64_mul,                                                     \
							 uint64_t) W##_R2(P##f64_div,                                    \
									  uint64_t) W##_R1(P##f64_sqrt,                  \
											   uint64_t)                     \
					W##_R3(P##f64_madd, uint64_t) W##_R3(P##f64_msub, uint64_t) W##_R3(              \
						P##f64_nmsub,                                                            \
						uint64_t) W##_R3(P##f64_nmadd,                                           \
								 uint64_t) W##_2(P##f64_min,                             \
										 uint64_t)                               \
						W##_2(P##f64_max, uint64_t) W##_2(                                       \
							P##f64_eq,                                                       \
							uint64_t) W##_2(P##f64_lt,                                       \
									uint64_t) W##_2(P##f64_le,                       \
											uint64_t)                        \
							W##_1(P##f64_classify, uint64_t) W##_R1(                         \
								P##f64_to_i32,                                           \
								uint64_t) W##_R1(P##f64_to_u32,                          \
										 uint64_t)                               \
								W##_R1(P##f64_to_i64, uint64_t) W##_R1(                  \
									P##f64_to_u64,                                   \
									uint64_t) W##_R1(P##i32_to_f64,                  \
											 int32_t)                        \
									W##_R1(P##u32_to_f64, uint32_t) W##_R1(          \
										P##i64_to_f64,                           \
										int64_t) W##_R1(P##u64_to_f64, uint64_t) \
										W##_1F(P##f32_to_f64,                    \
										       uint32_t)                         \
											W##_R1(P##f64_to_f32,            \
											       uint64_t)

FPU_OPS(WRAP, )

/* One operation on fixed operands, with the expected result and flags per rounding mode
 * (operations without a mode use ALL5). */
struct fcase {
	const char *what;
	fpu_fn fn;
	uint64_t a, b, c;
	uint64_t want[5];
	uint32_t fl[5];
};

static const char *const rm_name[5] = { "RNE", "RTZ", "RDN", "RUP", "RMM" };

static void run_cases(const struct fcase *t, size_t n)
{
	int bad = 0;

	for (size_t i = 0; i < n; i++) {
		for (int rm = 0; rm < 5; rm++) {
			uint32_t fl = 0;
			uint64_t got = t[i].fn(t[i].a, t[i].b, t[i].c, rm, &fl);

			if (got != t[i].want[rm] || fl != t[i].fl[rm]) {
				print_error("%s [%s]: got %#llx flags %#x, want %#llx flags %#x\n",
					    t[i].what, rm_name[rm], (unsigned long long)got, fl,
					    (unsigned long long)t[i].want[rm], t[i].fl[rm]);
				bad++;
			}
		}
	}
	assert_int_equal(bad, 0);
}

#define RUN(t) run_cases(t, sizeof(t) / sizeof((t)[0]))

/* ---- NaN-boxing ---- */

static void test_nan_boxing(void **state)
{
	(void)state;
	assert_int_equal(fpu_box32(S_ONE), 0xffffffff3f800000ULL);
	assert_int_equal(fpu_unbox32(0xffffffff3f800000ULL), S_ONE);
	/* a properly boxed NaN stays what it is, payload included */
	assert_int_equal(fpu_unbox32(0xffffffff7f800001ULL), S_SNAN);
	/* anything not boxed reads as the canonical NaN */
	assert_int_equal(fpu_unbox32(0x000000003f800000ULL), F32_CANON_NAN);
	assert_int_equal(fpu_unbox32(0xfffffffe3f800000ULL), F32_CANON_NAN);
	assert_int_equal(fpu_unbox32(D_ONE), F32_CANON_NAN);
	assert_int_equal(fpu_unbox32(fpu_box32(0)), 0);
}

/* ---- add / sub ---- */

static const struct fcase add_cases[] = {
	/* 1 + 2^-24 lies exactly halfway between 1 and 1 + 2^-23 (ulp 2^-23): RNE keeps the
	 * even 1, RMM goes away from zero */
	{ "f32 1 + 2^-24",
	  w_f32_add,
	  S_ONE,
	  0x33800000,
	  0,
	  { [RNE] = S_ONE, [RTZ] = S_ONE, [RDN] = S_ONE, [RUP] = 0x3f800001, [RMM] = 0x3f800001 },
	  ALL5(NX) },
	/* the same tie, negative: RDN and RMM go to -(1 + 2^-23) */
	{ "f32 -1 - 2^-24",
	  w_f32_add,
	  0xbf800000,
	  0xb3800000,
	  0,
	  { [RNE] = 0xbf800000,
	    [RTZ] = 0xbf800000,
	    [RDN] = 0xbf800001,
	    [RUP] = 0xbf800000,
	    [RMM] = 0xbf800001 },
	  ALL5(NX) },
	/* (1 + 2^-23) + 2^-24 ties between the odd 1 + 2^-23 and the even 1 + 2^-22 */
	{ "f32 odd tie",
	  w_f32_add,
	  0x3f800001,
	  0x33800000,
	  0,
	  { [RNE] = 0x3f800002,
	    [RTZ] = 0x3f800001,
	    [RDN] = 0x3f800001,
	    [RUP] = 0x3f800002,
	    [RMM] = 0x3f800002 },
	  ALL5(NX) },
	/* 1 + 1.5 * 2^-24 = 1 + 0.75 ulp: not a tie, nearest is up in both RNE and RMM */
	{ "f32 1 + 0.75ulp",
	  w_f32_add,
	  S_ONE,
	  0x33c00000,
	  0,
	  { [RNE] = 0x3f800001,
	    [RTZ] = S_ONE,
	    [RDN] = S_ONE,
	    [RUP] = 0x3f800001,
	    [RMM] = 0x3f800001 },
	  ALL5(NX) },
	/* 1 + 2^-53: the double tie (ulp 2^-52) */
	{ "f64 1 + 2^-53",
	  w_f64_add,
	  D_ONE,
	  0x3ca0000000000000ULL,
	  0,
	  { [RNE] = D_ONE,
	    [RTZ] = D_ONE,
	    [RDN] = D_ONE,
	    [RUP] = 0x3ff0000000000001ULL,
	    [RMM] = 0x3ff0000000000001ULL },
	  ALL5(NX) },
	{ "f64 -1 - 2^-53",
	  w_f64_add,
	  0xbff0000000000000ULL,
	  0xbca0000000000000ULL,
	  0,
	  { [RNE] = 0xbff0000000000000ULL,
	    [RTZ] = 0xbff0000000000000ULL,
	    [RDN] = 0xbff0000000000001ULL,
	    [RUP] = 0xbff0000000000000ULL,
	    [RMM] = 0xbff0000000000001ULL },
	  ALL5(NX) },
	/* exact: no flags in any mode */
	{ "f32 1 + 1", w_f32_add, S_ONE, S_ONE, 0, ALL5(S_TWO), ALL5(0) },
	{ "f64 1 - 0.5", w_f64_sub, D_ONE, 0x3fe0000000000000ULL, 0, ALL5(0x3fe0000000000000ULL),
	  ALL5(0) },
	/* the largest subnormal plus the smallest subnormal is exactly the smallest normal:
	 * sums are exact in the subnormal range, so never an underflow */
	{ "f32 subnormal sum", w_f32_add, 0x007fffff, 0x00000001, 0, ALL5(S_MIN_NORM), ALL5(0) },
	{ "f64 subnormal diff", w_f64_sub, D_MIN_NORM, 1, 0, ALL5(0x000fffffffffffffULL), ALL5(0) },
	/* a huge and a tiny operand: only the rounding direction sees the tiny one */
	{ "f64 1 - 2^-1074",
	  w_f64_sub,
	  D_ONE,
	  1,
	  0,
	  { [RNE] = D_ONE,
	    [RTZ] = 0x3fefffffffffffffULL,
	    [RDN] = 0x3fefffffffffffffULL,
	    [RUP] = D_ONE,
	    [RMM] = D_ONE },
	  ALL5(NX) },
};

/* x + -x is +0 except under RDN, where IEEE 754 makes an exact zero sum -0; two zeros of
 * the same sign keep it. */
static const struct fcase zero_sum_cases[] = {
	{ "f32 1 + -1",
	  w_f32_add,
	  S_ONE,
	  0xbf800000,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = S_NZERO, [RUP] = 0, [RMM] = 0 },
	  ALL5(0) },
	{ "f32 1 - 1",
	  w_f32_sub,
	  S_ONE,
	  S_ONE,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = S_NZERO, [RUP] = 0, [RMM] = 0 },
	  ALL5(0) },
	{ "f32 +0 + -0",
	  w_f32_add,
	  0,
	  S_NZERO,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = S_NZERO, [RUP] = 0, [RMM] = 0 },
	  ALL5(0) },
	{ "f32 -0 + -0", w_f32_add, S_NZERO, S_NZERO, 0, ALL5(S_NZERO), ALL5(0) },
	{ "f32 +0 - -0", w_f32_sub, 0, S_NZERO, 0, ALL5(0), ALL5(0) },
	{ "f64 x + -x",
	  w_f64_add,
	  0x400921fb54442d18ULL,
	  0xc00921fb54442d18ULL,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = D_NZERO, [RUP] = 0, [RMM] = 0 },
	  ALL5(0) },
	{ "f64 +0 + -0",
	  w_f64_add,
	  0,
	  D_NZERO,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = D_NZERO, [RUP] = 0, [RMM] = 0 },
	  ALL5(0) },
	{ "f64 -0 - +0", w_f64_sub, D_NZERO, 0, 0, ALL5(D_NZERO), ALL5(0) },
	/* x + -0 is x exactly, sign and all */
	{ "f64 -1 + -0", w_f64_add, 0xbff0000000000000ULL, D_NZERO, 0, ALL5(0xbff0000000000000ULL),
	  ALL5(0) },
};

/* Overflow rounds to infinity or to the largest finite number depending on the direction:
 * RTZ never reaches inf, RDN only for negatives, RUP only for positives. */
static const struct fcase overflow_cases[] = {
	{ "f32 MAX * 2",
	  w_f32_mul,
	  S_MAX,
	  S_TWO,
	  0,
	  { [RNE] = S_INF, [RTZ] = S_MAX, [RDN] = S_MAX, [RUP] = S_INF, [RMM] = S_INF },
	  ALL5(OF | NX) },
	{ "f32 -MAX * 2",
	  w_f32_mul,
	  0xff7fffff,
	  S_TWO,
	  0,
	  { [RNE] = S_NINF,
	    [RTZ] = 0xff7fffff,
	    [RDN] = S_NINF,
	    [RUP] = 0xff7fffff,
	    [RMM] = S_NINF },
	  ALL5(OF | NX) },
	/* MAX + 2^103 is the tie between MAX (odd) and 2^128: RNE and RMM overflow; rounded
	 * down, the unbounded-exponent result is MAX itself, so no overflow, just NX */
	{ "f32 MAX + half ulp",
	  w_f32_add,
	  S_MAX,
	  0x73000000,
	  0,
	  { [RNE] = S_INF, [RTZ] = S_MAX, [RDN] = S_MAX, [RUP] = S_INF, [RMM] = S_INF },
	  { [RNE] = OF | NX, [RTZ] = NX, [RDN] = NX, [RUP] = OF | NX, [RMM] = OF | NX } },
	/* a quarter ulp above MAX: only RUP overflows */
	{ "f32 MAX + quarter ulp",
	  w_f32_add,
	  S_MAX,
	  0x72800000,
	  0,
	  { [RNE] = S_MAX, [RTZ] = S_MAX, [RDN] = S_MAX, [RUP] = S_INF, [RMM] = S_MAX },
	  { [RNE] = NX, [RTZ] = NX, [RDN] = NX, [RUP] = OF | NX, [RMM] = NX } },
	{ "f64 MAX + MAX",
	  w_f64_add,
	  D_MAX,
	  D_MAX,
	  0,
	  { [RNE] = D_INF, [RTZ] = D_MAX, [RDN] = D_MAX, [RUP] = D_INF, [RMM] = D_INF },
	  ALL5(OF | NX) },
	{ "f64 -MAX - MAX",
	  w_f64_sub,
	  0xffefffffffffffffULL,
	  D_MAX,
	  0,
	  { [RNE] = D_NINF,
	    [RTZ] = 0xffefffffffffffffULL,
	    [RDN] = D_NINF,
	    [RUP] = 0xffefffffffffffffULL,
	    [RMM] = D_NINF },
	  ALL5(OF | NX) },
	{ "f64 MAX / 0.5",
	  w_f64_div,
	  D_MAX,
	  0x3fe0000000000000ULL,
	  0,
	  { [RNE] = D_INF, [RTZ] = D_MAX, [RDN] = D_MAX, [RUP] = D_INF, [RMM] = D_INF },
	  ALL5(OF | NX) },
	/* infinity itself is exact */
	{ "f32 inf + 1", w_f32_add, S_INF, S_ONE, 0, ALL5(S_INF), ALL5(0) },
	{ "f64 -inf * 2", w_f64_mul, D_NINF, D_TWO, 0, ALL5(D_NINF), ALL5(0) },
};

/* RISC-V detects tininess after rounding: a result is tiny when, rounded to full precision
 * with an unbounded exponent, it is below 2^emin; UF needs tiny and inexact. */
static const struct fcase underflow_cases[] = {
	/* (2 - 2^-23) * 2^-127 = 2^-126 - 2^-150 exactly. With 24 bits and an unbounded
	 * exponent that is representable (1.11...1 * 2^-127), so tiny. In the subnormal grid
	 * (2^-149) it ties between 0x007fffff (odd) and 2^-126 (even): RNE and RMM give the
	 * smallest normal, yet with UF. */
	{ "f32 tiny to min normal",
	  w_f32_mul,
	  0x3fffffff,
	  0x00400000,
	  0,
	  { [RNE] = S_MIN_NORM,
	    [RTZ] = 0x007fffff,
	    [RDN] = 0x007fffff,
	    [RUP] = S_MIN_NORM,
	    [RMM] = S_MIN_NORM },
	  ALL5(UF | NX) },
	/* 2^-126 - 2^-151 (= -2^-75 * 2^-76 + 2^-126, fused): with 24 bits it ties between
	 * 2^-126 - 2^-150 and 2^-126, so RNE/RMM/RUP round to 2^-126 (not tiny, only NX);
	 * RTZ/RDN stay below (tiny, and inexact in the subnormal grid: UF) */
	{ "f32 not tiny after rounding",
	  w_f32_madd,
	  0x9a000000,
	  0x19800000,
	  S_MIN_NORM,
	  { [RNE] = S_MIN_NORM,
	    [RTZ] = 0x007fffff,
	    [RDN] = 0x007fffff,
	    [RUP] = S_MIN_NORM,
	    [RMM] = S_MIN_NORM },
	  { [RNE] = NX, [RTZ] = UF | NX, [RDN] = UF | NX, [RUP] = NX, [RMM] = NX } },
	/* 2^-126 - 2^-150 by fma: the same as the product case */
	{ "f32 fma tiny to min normal",
	  w_f32_madd,
	  0x9a000000,
	  0x1a000000,
	  S_MIN_NORM,
	  { [RNE] = S_MIN_NORM,
	    [RTZ] = 0x007fffff,
	    [RDN] = 0x007fffff,
	    [RUP] = S_MIN_NORM,
	    [RMM] = S_MIN_NORM },
	  ALL5(UF | NX) },
	/* the double versions: (2 - 2^-52) * 2^-1023 and -2^-538 * 2^-538 + 2^-1022 */
	{ "f64 tiny to min normal",
	  w_f64_mul,
	  0x3fffffffffffffffULL,
	  0x0008000000000000ULL,
	  0,
	  { [RNE] = D_MIN_NORM,
	    [RTZ] = 0x000fffffffffffffULL,
	    [RDN] = 0x000fffffffffffffULL,
	    [RUP] = D_MIN_NORM,
	    [RMM] = D_MIN_NORM },
	  ALL5(UF | NX) },
	{ "f64 not tiny after rounding",
	  w_f64_madd,
	  0x9e50000000000000ULL,
	  0x1e50000000000000ULL,
	  D_MIN_NORM,
	  { [RNE] = D_MIN_NORM,
	    [RTZ] = 0x000fffffffffffffULL,
	    [RDN] = 0x000fffffffffffffULL,
	    [RUP] = D_MIN_NORM,
	    [RMM] = D_MIN_NORM },
	  { [RNE] = NX, [RTZ] = UF | NX, [RDN] = UF | NX, [RUP] = NX, [RMM] = NX } },
	/* exact tiny results raise nothing: 2^-126 * 0.5 = 2^-127 */
	{ "f32 exact subnormal", w_f32_mul, S_MIN_NORM, S_HALF, 0, ALL5(0x00400000), ALL5(0) },
	{ "f64 exact subnormal", w_f64_div, D_MIN_NORM, D_TWO, 0, ALL5(0x0008000000000000ULL),
	  ALL5(0) },
	/* 2^-149 * 0.5 = 2^-150 ties between 0 (even) and 2^-149 */
	{ "f32 min subnormal / 2",
	  w_f32_mul,
	  0x00000001,
	  S_HALF,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = 0, [RUP] = 1, [RMM] = 1 },
	  ALL5(UF | NX) },
	{ "f32 -min subnormal / 2",
	  w_f32_mul,
	  0x80000001,
	  S_HALF,
	  0,
	  { [RNE] = S_NZERO,
	    [RTZ] = S_NZERO,
	    [RDN] = 0x80000001,
	    [RUP] = S_NZERO,
	    [RMM] = 0x80000001 },
	  ALL5(UF | NX) },
	{ "f64 min subnormal * 0.25",
	  w_f64_mul,
	  1,
	  0x3fd0000000000000ULL,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = 0, [RUP] = 1, [RMM] = 0 },
	  ALL5(UF | NX) },
};

/* Any NaN result is the canonical NaN; signalling inputs and invalid operations raise NV,
 * quiet NaN inputs nothing. */
static const struct fcase nan_cases[] = {
	{ "f32 sNaN + 1", w_f32_add, S_SNAN, S_ONE, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 1 - sNaN", w_f32_sub, S_ONE, 0xff800001, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 qNaN payload + 1", w_f32_add, 0x7fc00001, S_ONE, 0, ALL5(F32_CANON_NAN), ALL5(0) },
	{ "f32 -qNaN * 1", w_f32_mul, 0xffc00000, S_ONE, 0, ALL5(F32_CANON_NAN), ALL5(0) },
	{ "f32 qNaN * sNaN", w_f32_mul, S_QNAN, 0x7fa00000, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 inf - inf", w_f32_add, S_INF, S_NINF, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 0 * inf", w_f32_mul, 0, S_INF, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 sNaN / 0", w_f32_div, S_SNAN, 0, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 qNaN / 0", w_f32_div, S_QNAN, 0, 0, ALL5(F32_CANON_NAN), ALL5(0) },
	{ "f64 sNaN + 1", w_f64_add, D_SNAN, D_ONE, 0, ALL5(F64_CANON_NAN), ALL5(NV) },
	{ "f64 qNaN payload - 1", w_f64_sub, 0xfff8000000000123ULL, D_ONE, 0, ALL5(F64_CANON_NAN),
	  ALL5(0) },
	{ "f64 inf * 0", w_f64_mul, D_INF, D_NZERO, 0, ALL5(F64_CANON_NAN), ALL5(NV) },
	{ "f64 -inf + inf", w_f64_add, D_NINF, D_INF, 0, ALL5(F64_CANON_NAN), ALL5(NV) },
	{ "f64 1 * sNaN", w_f64_mul, D_ONE, 0xfff4000000000000ULL, 0, ALL5(F64_CANON_NAN),
	  ALL5(NV) },
};

/* ---- div / sqrt ---- */

static const struct fcase div_cases[] = {
	/* finite / 0: DZ and a signed infinity */
	{ "f32 1 / 0", w_f32_div, S_ONE, 0, 0, ALL5(S_INF), ALL5(DZ) },
	{ "f32 -1 / 0", w_f32_div, 0xbf800000, 0, 0, ALL5(S_NINF), ALL5(DZ) },
	{ "f32 1 / -0", w_f32_div, S_ONE, S_NZERO, 0, ALL5(S_NINF), ALL5(DZ) },
	{ "f64 -2 / -0", w_f64_div, 0xc000000000000000ULL, D_NZERO, 0, ALL5(D_INF), ALL5(DZ) },
	/* 0/0 and inf/inf are invalid; inf/0 is an exact infinity, no DZ */
	{ "f32 0 / 0", w_f32_div, 0, 0, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f64 inf / inf", w_f64_div, D_INF, D_NINF, 0, ALL5(F64_CANON_NAN), ALL5(NV) },
	{ "f32 inf / 0", w_f32_div, S_INF, 0, 0, ALL5(S_INF), ALL5(0) },
	{ "f64 1 / inf", w_f64_div, D_ONE, D_INF, 0, ALL5(0), ALL5(0) },
	/* 1/3 = 1.0101...b * 2^-2: as a single the discarded bits are 0.101..b = 2/3 ulp
	 * (round up), as a double 0.0101..b = 1/3 ulp (round down) */
	{ "f32 1 / 3",
	  w_f32_div,
	  S_ONE,
	  0x40400000,
	  0,
	  { [RNE] = 0x3eaaaaab,
	    [RTZ] = 0x3eaaaaaa,
	    [RDN] = 0x3eaaaaaa,
	    [RUP] = 0x3eaaaaab,
	    [RMM] = 0x3eaaaaab },
	  ALL5(NX) },
	{ "f64 1 / 3",
	  w_f64_div,
	  D_ONE,
	  0x4008000000000000ULL,
	  0,
	  { [RNE] = 0x3fd5555555555555ULL,
	    [RTZ] = 0x3fd5555555555555ULL,
	    [RDN] = 0x3fd5555555555555ULL,
	    [RUP] = 0x3fd5555555555556ULL,
	    [RMM] = 0x3fd5555555555555ULL },
	  ALL5(NX) },
	{ "f64 -1 / 3",
	  w_f64_div,
	  0xbff0000000000000ULL,
	  0x4008000000000000ULL,
	  0,
	  { [RNE] = 0xbfd5555555555555ULL,
	    [RTZ] = 0xbfd5555555555555ULL,
	    [RDN] = 0xbfd5555555555556ULL,
	    [RUP] = 0xbfd5555555555555ULL,
	    [RMM] = 0xbfd5555555555555ULL },
	  ALL5(NX) },
	/* 5 * 2^-149 / 2 = 2.5 subnormal units: a tie only a subnormal quotient can have */
	{ "f32 subnormal tie",
	  w_f32_div,
	  0x00000005,
	  S_TWO,
	  0,
	  { [RNE] = 2, [RTZ] = 2, [RDN] = 2, [RUP] = 3, [RMM] = 3 },
	  ALL5(UF | NX) },
	{ "f64 subnormal tie",
	  w_f64_div,
	  5,
	  D_TWO,
	  0,
	  { [RNE] = 2, [RTZ] = 2, [RDN] = 2, [RUP] = 3, [RMM] = 3 },
	  ALL5(UF | NX) },
	{ "f64 6 / 3", w_f64_div, 0x4018000000000000ULL, 0x4008000000000000ULL, 0, ALL5(D_TWO),
	  ALL5(0) },
};

static const struct fcase sqrt_cases[] = {
	{ "f32 sqrt(-1)", w_f32_sqrt, 0xbf800000, 0, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 sqrt(-0)", w_f32_sqrt, S_NZERO, 0, 0, ALL5(S_NZERO), ALL5(0) },
	{ "f32 sqrt(inf)", w_f32_sqrt, S_INF, 0, 0, ALL5(S_INF), ALL5(0) },
	{ "f32 sqrt(-inf)", w_f32_sqrt, S_NINF, 0, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 sqrt(sNaN)", w_f32_sqrt, S_SNAN, 0, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 sqrt(qNaN)", w_f32_sqrt, 0x7fc12345, 0, 0, ALL5(F32_CANON_NAN), ALL5(0) },
	{ "f32 sqrt(4)", w_f32_sqrt, 0x40800000, 0, 0, ALL5(S_TWO), ALL5(0) },
	/* the smallest subnormal has an exact root, 2^-74.5 does not exist: 2^-148 -> 2^-74 */
	{ "f32 sqrt(2^-148)", w_f32_sqrt, 0x00000002, 0, 0, ALL5(0x1a800000), ALL5(0) },
	/* sqrt(2) = 1.41421356237..; the single 0x3fb504f3 = 1.41421353816.. is below it,
	 * the double 0x3ff6a09e667f3bcd = 1.41421356237309514.. above. Roots never tie, so
	 * RMM equals RNE. */
	{ "f32 sqrt(2)",
	  w_f32_sqrt,
	  S_TWO,
	  0,
	  0,
	  { [RNE] = 0x3fb504f3,
	    [RTZ] = 0x3fb504f3,
	    [RDN] = 0x3fb504f3,
	    [RUP] = 0x3fb504f4,
	    [RMM] = 0x3fb504f3 },
	  ALL5(NX) },
	{ "f64 sqrt(2)",
	  w_f64_sqrt,
	  D_TWO,
	  0,
	  0,
	  { [RNE] = 0x3ff6a09e667f3bcdULL,
	    [RTZ] = 0x3ff6a09e667f3bccULL,
	    [RDN] = 0x3ff6a09e667f3bccULL,
	    [RUP] = 0x3ff6a09e667f3bcdULL,
	    [RMM] = 0x3ff6a09e667f3bcdULL },
	  ALL5(NX) },
	{ "f64 sqrt(-tiny)", w_f64_sqrt, 0x8000000000000001ULL, 0, 0, ALL5(F64_CANON_NAN),
	  ALL5(NV) },
	{ "f64 sqrt(-0)", w_f64_sqrt, D_NZERO, 0, 0, ALL5(D_NZERO), ALL5(0) },
	{ "f64 sqrt(2^-1074)", w_f64_sqrt, 1, 0, 0, ALL5(0x1e60000000000000ULL), ALL5(0) },
};

/* ---- fused multiply-add ---- */

static const struct fcase fma_cases[] = {
	/* the four sign variants: madd = a*b+c, msub = a*b-c, nmsub = -(a*b)+c,
	 * nmadd = -(a*b)-c */
	{ "f32 madd 2*3+1", w_f32_madd, S_TWO, 0x40400000, S_ONE, ALL5(0x40e00000), ALL5(0) },
	{ "f32 msub 2*3-1", w_f32_msub, S_TWO, 0x40400000, S_ONE, ALL5(0x40a00000), ALL5(0) },
	{ "f32 nmsub -(2*3)+1", w_f32_nmsub, S_TWO, 0x40400000, S_ONE, ALL5(0xc0a00000), ALL5(0) },
	{ "f32 nmadd -(2*3)-1", w_f32_nmadd, S_TWO, 0x40400000, S_ONE, ALL5(0xc0e00000), ALL5(0) },
	{ "f64 nmadd -(2*3)-1", w_f64_nmadd, D_TWO, 0x4008000000000000ULL, D_ONE,
	  ALL5(0xc01c000000000000ULL), ALL5(0) },
	{ "f64 nmsub -(2*3)+1", w_f64_nmsub, D_TWO, 0x4008000000000000ULL, D_ONE,
	  ALL5(0xc014000000000000ULL), ALL5(0) },
	/* one rounding: (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24, minus (1 + 2^-11) is exactly
	 * 2^-24; a separate multiply would have rounded the 2^-24 away (it is a tie) */
	{ "f32 fused", w_f32_madd, 0x3f800800, 0x3f800800, 0xbf801000, ALL5(0x33800000), ALL5(0) },
	{ "f32 unfused product",
	  w_f32_mul,
	  0x3f800800,
	  0x3f800800,
	  0,
	  { [RNE] = 0x3f801000,
	    [RTZ] = 0x3f801000,
	    [RDN] = 0x3f801000,
	    [RUP] = 0x3f801001,
	    [RMM] = 0x3f801001 },
	  ALL5(NX) },
	/* (1 + 2^-27)^2 - (1 + 2^-26) = 2^-54 exactly */
	{ "f64 fused", w_f64_msub, 0x3ff0000002000000ULL, 0x3ff0000002000000ULL,
	  0x3ff0000004000000ULL, ALL5(0x3c90000000000000ULL), ALL5(0) },
	/* 1*1 + 2^-24 is the single tie again, now through fma */
	{ "f32 fma tie",
	  w_f32_madd,
	  S_ONE,
	  S_ONE,
	  0x33800000,
	  { [RNE] = S_ONE, [RTZ] = S_ONE, [RDN] = S_ONE, [RUP] = 0x3f800001, [RMM] = 0x3f800001 },
	  ALL5(NX) },
	{ "f64 fma tie",
	  w_f64_madd,
	  D_ONE,
	  D_ONE,
	  0x3ca0000000000000ULL,
	  { [RNE] = D_ONE,
	    [RTZ] = D_ONE,
	    [RDN] = D_ONE,
	    [RUP] = 0x3ff0000000000001ULL,
	    [RMM] = 0x3ff0000000000001ULL },
	  ALL5(NX) },
	/* SoftFloat raises NV for inf * 0 even when c is a quiet NaN */
	{ "f32 inf*0+qNaN", w_f32_madd, S_INF, 0, S_QNAN, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f32 0*inf+qNaN", w_f32_madd, 0, S_NINF, 0x7fc00001, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f64 inf*0+qNaN", w_f64_madd, D_INF, 0, D_QNAN, ALL5(F64_CANON_NAN), ALL5(NV) },
	{ "f64 0*inf-qNaN", w_f64_msub, D_NZERO, D_INF, D_QNAN, ALL5(F64_CANON_NAN), ALL5(NV) },
	{ "f32 inf*0+1", w_f32_madd, S_INF, 0, S_ONE, ALL5(F32_CANON_NAN), ALL5(NV) },
	/* a quiet NaN operand without inf * 0: no NV */
	{ "f32 qNaN*0+1", w_f32_madd, S_QNAN, 0, S_ONE, ALL5(F32_CANON_NAN), ALL5(0) },
	{ "f64 1*1+qNaN", w_f64_madd, D_ONE, D_ONE, 0x7ff8000000000042ULL, ALL5(F64_CANON_NAN),
	  ALL5(0) },
	{ "f64 1*1+sNaN", w_f64_madd, D_ONE, D_ONE, D_SNAN, ALL5(F64_CANON_NAN), ALL5(NV) },
	/* inf * 2 - inf is inf - inf */
	{ "f32 inf*2-inf", w_f32_msub, S_INF, S_TWO, S_INF, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f64 inf*2+inf", w_f64_madd, D_INF, D_TWO, D_INF, ALL5(D_INF), ALL5(0) },
	{ "f64 2*3+inf", w_f64_madd, D_TWO, 0x4008000000000000ULL, D_NINF, ALL5(D_NINF), ALL5(0) },
	/* signed zeros: -(0*1) - 0 = -0 + -0 = -0 everywhere; 0*1 - 0 and 1*1 - 1 are
	 * exact zero sums, -0 only under RDN */
	{ "f32 nmadd zeros", w_f32_nmadd, 0, S_ONE, 0, ALL5(S_NZERO), ALL5(0) },
	{ "f32 msub zeros",
	  w_f32_msub,
	  0,
	  S_ONE,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = S_NZERO, [RUP] = 0, [RMM] = 0 },
	  ALL5(0) },
	{ "f64 1*1-1",
	  w_f64_msub,
	  D_ONE,
	  D_ONE,
	  D_ONE,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = D_NZERO, [RUP] = 0, [RMM] = 0 },
	  ALL5(0) },
	/* a product that underflows, plus zero: the rounded product keeps its sign */
	{ "f64 -tiny*tiny+0",
	  w_f64_madd,
	  0x8000000000000001ULL,
	  0x3fe0000000000000ULL,
	  0,
	  { [RNE] = D_NZERO,
	    [RTZ] = D_NZERO,
	    [RDN] = 0x8000000000000001ULL,
	    [RUP] = D_NZERO,
	    [RMM] = 0x8000000000000001ULL },
	  ALL5(UF | NX) },
	/* overflow of the fused result */
	{ "f64 MAX*2-MAX", w_f64_msub, D_MAX, D_TWO, D_MAX, ALL5(D_MAX), ALL5(0) },
	{ "f32 MAX*2+0",
	  w_f32_madd,
	  S_MAX,
	  S_TWO,
	  0,
	  { [RNE] = S_INF, [RTZ] = S_MAX, [RDN] = S_MAX, [RUP] = S_INF, [RMM] = S_INF },
	  ALL5(OF | NX) },
};

/* ---- min / max, comparisons, classify ---- */

static const struct fcase minmax_cases[] = {
	/* -0 is less than +0, in either order */
	{ "f32 min(+0,-0)", w_f32_min, 0, S_NZERO, 0, ALL5(S_NZERO), ALL5(0) },
	{ "f32 min(-0,+0)", w_f32_min, S_NZERO, 0, 0, ALL5(S_NZERO), ALL5(0) },
	{ "f32 max(-0,+0)", w_f32_max, S_NZERO, 0, 0, ALL5(0), ALL5(0) },
	{ "f32 max(+0,-0)", w_f32_max, 0, S_NZERO, 0, ALL5(0), ALL5(0) },
	{ "f64 min(+0,-0)", w_f64_min, 0, D_NZERO, 0, ALL5(D_NZERO), ALL5(0) },
	{ "f64 max(-0,+0)", w_f64_max, D_NZERO, 0, 0, ALL5(0), ALL5(0) },
	/* one NaN: the other operand, NV only if the NaN signals */
	{ "f32 min(qNaN,1)", w_f32_min, S_QNAN, S_ONE, 0, ALL5(S_ONE), ALL5(0) },
	{ "f32 max(1,qNaN)", w_f32_max, S_ONE, 0xffc00001, 0, ALL5(S_ONE), ALL5(0) },
	{ "f32 min(sNaN,-1)", w_f32_min, S_SNAN, 0xbf800000, 0, ALL5(0xbf800000), ALL5(NV) },
	{ "f64 max(-inf,sNaN)", w_f64_max, D_NINF, D_SNAN, 0, ALL5(D_NINF), ALL5(NV) },
	{ "f64 min(qNaN,-0)", w_f64_min, D_QNAN, D_NZERO, 0, ALL5(D_NZERO), ALL5(0) },
	/* both NaN: the canonical NaN, whatever the payloads */
	{ "f32 min(qNaN,qNaN)", w_f32_min, 0x7fc00001, 0xffc00002, 0, ALL5(F32_CANON_NAN),
	  ALL5(0) },
	{ "f32 max(sNaN,qNaN)", w_f32_max, S_SNAN, S_QNAN, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f64 min(qNaN,sNaN)", w_f64_min, D_QNAN, D_SNAN, 0, ALL5(F64_CANON_NAN), ALL5(NV) },
	/* ordinary values, negatives and infinities */
	{ "f32 min(1,2)", w_f32_min, S_ONE, S_TWO, 0, ALL5(S_ONE), ALL5(0) },
	{ "f32 max(-1,-2)", w_f32_max, 0xbf800000, 0xc0000000, 0, ALL5(0xbf800000), ALL5(0) },
	{ "f32 min(-1,-2)", w_f32_min, 0xbf800000, 0xc0000000, 0, ALL5(0xc0000000), ALL5(0) },
	{ "f64 max(MAX,inf)", w_f64_max, D_MAX, D_INF, 0, ALL5(D_INF), ALL5(0) },
	{ "f64 min(-inf,-MAX)", w_f64_min, 0xffefffffffffffffULL, D_NINF, 0, ALL5(D_NINF),
	  ALL5(0) },
	{ "f64 min(tiny,-tiny)", w_f64_min, 1, 0x8000000000000001ULL, 0,
	  ALL5(0x8000000000000001ULL), ALL5(0) },
};

static const struct fcase compare_cases[] = {
	/* feq is quiet: NV only for signalling NaNs */
	{ "f32 eq(qNaN,qNaN)", w_f32_eq, S_QNAN, S_QNAN, 0, ALL5(0), ALL5(0) },
	{ "f32 eq(sNaN,1)", w_f32_eq, S_SNAN, S_ONE, 0, ALL5(0), ALL5(NV) },
	{ "f64 eq(1,qNaN)", w_f64_eq, D_ONE, D_QNAN, 0, ALL5(0), ALL5(0) },
	{ "f64 eq(sNaN,sNaN)", w_f64_eq, D_SNAN, D_SNAN, 0, ALL5(0), ALL5(NV) },
	/* flt / fle signal on any NaN */
	{ "f32 lt(qNaN,1)", w_f32_lt, S_QNAN, S_ONE, 0, ALL5(0), ALL5(NV) },
	{ "f32 le(1,qNaN)", w_f32_le, S_ONE, S_QNAN, 0, ALL5(0), ALL5(NV) },
	{ "f64 lt(1,qNaN)", w_f64_lt, D_ONE, D_QNAN, 0, ALL5(0), ALL5(NV) },
	{ "f64 le(qNaN,qNaN)", w_f64_le, D_QNAN, D_QNAN, 0, ALL5(0), ALL5(NV) },
	/* zeros compare equal whatever their signs */
	{ "f32 eq(+0,-0)", w_f32_eq, 0, S_NZERO, 0, ALL5(1), ALL5(0) },
	{ "f32 lt(-0,+0)", w_f32_lt, S_NZERO, 0, 0, ALL5(0), ALL5(0) },
	{ "f32 le(+0,-0)", w_f32_le, 0, S_NZERO, 0, ALL5(1), ALL5(0) },
	{ "f64 eq(-0,+0)", w_f64_eq, D_NZERO, 0, 0, ALL5(1), ALL5(0) },
	{ "f64 lt(+0,-0)", w_f64_lt, 0, D_NZERO, 0, ALL5(0), ALL5(0) },
	{ "f64 le(-0,+0)", w_f64_le, D_NZERO, 0, 0, ALL5(1), ALL5(0) },
	/* ordering across signs and among negatives */
	{ "f32 lt(-1,1)", w_f32_lt, 0xbf800000, S_ONE, 0, ALL5(1), ALL5(0) },
	{ "f32 lt(-2,-1)", w_f32_lt, 0xc0000000, 0xbf800000, 0, ALL5(1), ALL5(0) },
	{ "f32 lt(-1,-2)", w_f32_lt, 0xbf800000, 0xc0000000, 0, ALL5(0), ALL5(0) },
	{ "f32 le(1,1)", w_f32_le, S_ONE, S_ONE, 0, ALL5(1), ALL5(0) },
	{ "f32 lt(1,1)", w_f32_lt, S_ONE, S_ONE, 0, ALL5(0), ALL5(0) },
	{ "f64 lt(-inf,-MAX)", w_f64_lt, D_NINF, 0xffefffffffffffffULL, 0, ALL5(1), ALL5(0) },
	{ "f64 le(inf,inf)", w_f64_le, D_INF, D_INF, 0, ALL5(1), ALL5(0) },
	{ "f64 lt(tiny,0)", w_f64_lt, 1, 0, 0, ALL5(0), ALL5(0) },
	{ "f64 le(-tiny,-0)", w_f64_le, 0x8000000000000001ULL, D_NZERO, 0, ALL5(1), ALL5(0) },
};

/* fclass: bit 0 -inf, 1 -normal, 2 -subnormal, 3 -0, 4 +0, 5 +subnormal, 6 +normal,
 * 7 +inf, 8 signalling NaN, 9 quiet NaN */
static const struct fcase classify_cases[] = {
	{ "f32 -inf", w_f32_classify, S_NINF, 0, 0, ALL5(1 << 0), ALL5(0) },
	{ "f32 -1", w_f32_classify, 0xbf800000, 0, 0, ALL5(1 << 1), ALL5(0) },
	{ "f32 -subnormal", w_f32_classify, 0x807fffff, 0, 0, ALL5(1 << 2), ALL5(0) },
	{ "f32 -0", w_f32_classify, S_NZERO, 0, 0, ALL5(1 << 3), ALL5(0) },
	{ "f32 +0", w_f32_classify, 0, 0, 0, ALL5(1 << 4), ALL5(0) },
	{ "f32 +subnormal", w_f32_classify, 1, 0, 0, ALL5(1 << 5), ALL5(0) },
	{ "f32 +min normal", w_f32_classify, S_MIN_NORM, 0, 0, ALL5(1 << 6), ALL5(0) },
	{ "f32 +inf", w_f32_classify, S_INF, 0, 0, ALL5(1 << 7), ALL5(0) },
	{ "f32 sNaN", w_f32_classify, S_SNAN, 0, 0, ALL5(1 << 8), ALL5(0) },
	{ "f32 -sNaN", w_f32_classify, 0xffbfffff, 0, 0, ALL5(1 << 8), ALL5(0) },
	{ "f32 qNaN", w_f32_classify, S_QNAN, 0, 0, ALL5(1 << 9), ALL5(0) },
	{ "f64 -inf", w_f64_classify, D_NINF, 0, 0, ALL5(1 << 0), ALL5(0) },
	{ "f64 -MAX", w_f64_classify, 0xffefffffffffffffULL, 0, 0, ALL5(1 << 1), ALL5(0) },
	{ "f64 -subnormal", w_f64_classify, 0x8000000000000001ULL, 0, 0, ALL5(1 << 2), ALL5(0) },
	{ "f64 -0", w_f64_classify, D_NZERO, 0, 0, ALL5(1 << 3), ALL5(0) },
	{ "f64 +0", w_f64_classify, 0, 0, 0, ALL5(1 << 4), ALL5(0) },
	{ "f64 +subnormal", w_f64_classify, 0x000fffffffffffffULL, 0, 0, ALL5(1 << 5), ALL5(0) },
	{ "f64 +1", w_f64_classify, D_ONE, 0, 0, ALL5(1 << 6), ALL5(0) },
	{ "f64 +inf", w_f64_classify, D_INF, 0, 0, ALL5(1 << 7), ALL5(0) },
	{ "f64 sNaN", w_f64_classify, D_SNAN, 0, 0, ALL5(1 << 8), ALL5(0) },
	{ "f64 -qNaN", w_f64_classify, 0xfff8000000000000ULL, 0, 0, ALL5(1 << 9), ALL5(0) },
};

/* ---- conversions ---- */

#define I32_MIN_X ((uint64_t)(int64_t)INT32_MIN)
#define I32_MAX_X ((uint64_t)INT32_MAX)
#define U32_MAX_X ((uint64_t)-1) /* 0xffffffff sign-extended, as in the register */

static const struct fcase to_int_cases[] = {
	/* 2.5 and -2.5: RNE to even, RMM away from zero */
	{ "f32 2.5 -> i32",
	  w_f32_to_i32,
	  0x40200000,
	  0,
	  0,
	  { [RNE] = 2, [RTZ] = 2, [RDN] = 2, [RUP] = 3, [RMM] = 3 },
	  ALL5(NX) },
	{ "f32 -2.5 -> i32",
	  w_f32_to_i32,
	  0xc0200000,
	  0,
	  0,
	  { [RNE] = (uint64_t)-2,
	    [RTZ] = (uint64_t)-2,
	    [RDN] = (uint64_t)-3,
	    [RUP] = (uint64_t)-2,
	    [RMM] = (uint64_t)-3 },
	  ALL5(NX) },
	{ "f32 3.5 -> i64",
	  w_f32_to_i64,
	  0x40600000,
	  0,
	  0,
	  { [RNE] = 4, [RTZ] = 3, [RDN] = 3, [RUP] = 4, [RMM] = 4 },
	  ALL5(NX) },
	{ "f64 0.5 -> i64",
	  w_f64_to_i64,
	  0x3fe0000000000000ULL,
	  0,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = 0, [RUP] = 1, [RMM] = 1 },
	  ALL5(NX) },
	{ "f64 -0.5 -> i64",
	  w_f64_to_i64,
	  0xbfe0000000000000ULL,
	  0,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = (uint64_t)-1, [RUP] = 0, [RMM] = (uint64_t)-1 },
	  ALL5(NX) },
	/* NaN of either sign saturates to the maximum; infinities by sign; NV, never NX */
	{ "f32 qNaN -> i32", w_f32_to_i32, S_QNAN, 0, 0, ALL5(I32_MAX_X), ALL5(NV) },
	{ "f32 -qNaN -> i32", w_f32_to_i32, 0xffc00000, 0, 0, ALL5(I32_MAX_X), ALL5(NV) },
	{ "f32 sNaN -> i64", w_f32_to_i64, S_SNAN, 0, 0, ALL5((uint64_t)INT64_MAX), ALL5(NV) },
	{ "f32 inf -> i32", w_f32_to_i32, S_INF, 0, 0, ALL5(I32_MAX_X), ALL5(NV) },
	{ "f32 -inf -> i32", w_f32_to_i32, S_NINF, 0, 0, ALL5(I32_MIN_X), ALL5(NV) },
	/* 2^31 is just out of range, -2^31 just in */
	{ "f32 2^31 -> i32", w_f32_to_i32, 0x4f000000, 0, 0, ALL5(I32_MAX_X), ALL5(NV) },
	{ "f32 -2^31 -> i32", w_f32_to_i32, 0xcf000000, 0, 0, ALL5(I32_MIN_X), ALL5(0) },
	{ "f32 2^31-128 -> i32", w_f32_to_i32, 0x4effffff, 0, 0, ALL5(2147483520), ALL5(0) },
	/* 2^31 - 0.5: RNE ties to the even 2^31, out of range (NV, not NX) */
	{ "f64 2^31-0.5 -> i32",
	  w_f64_to_i32,
	  0x41dfffffffe00000ULL,
	  0,
	  0,
	  { [RNE] = I32_MAX_X,
	    [RTZ] = I32_MAX_X,
	    [RDN] = I32_MAX_X,
	    [RUP] = I32_MAX_X,
	    [RMM] = I32_MAX_X },
	  { [RNE] = NV, [RTZ] = NX, [RDN] = NX, [RUP] = NV, [RMM] = NV } },
	/* -(2^31 + 0.5): RTZ/RUP/RNE (even) give -2^31, RDN/RMM -2^31 - 1 (NV) */
	{ "f64 -2^31-0.5 -> i32",
	  w_f64_to_i32,
	  0xc1e0000000100000ULL,
	  0,
	  0,
	  ALL5(I32_MIN_X),
	  { [RNE] = NX, [RTZ] = NX, [RDN] = NV, [RUP] = NX, [RMM] = NV } },
	/* the unsigned conversions: a negative value is fine if it rounds to zero */
	{ "f32 -0.3 -> u32",
	  w_f32_to_u32,
	  0xbe99999a,
	  0,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = 0, [RUP] = 0, [RMM] = 0 },
	  { [RNE] = NX, [RTZ] = NX, [RDN] = NV, [RUP] = NX, [RMM] = NX } },
	{ "f32 -0.5 -> u32",
	  w_f32_to_u32,
	  0xbf000000,
	  0,
	  0,
	  ALL5(0),
	  { [RNE] = NX, [RTZ] = NX, [RDN] = NV, [RUP] = NX, [RMM] = NV } },
	{ "f32 -1 -> u32", w_f32_to_u32, 0xbf800000, 0, 0, ALL5(0), ALL5(NV) },
	{ "f32 -0 -> u32", w_f32_to_u32, S_NZERO, 0, 0, ALL5(0), ALL5(0) },
	/* u32 results are sign-extended: 0xffffff00 reads as -256, 3e9 as 3e9 - 2^32 */
	{ "f32 2^32-256 -> u32", w_f32_to_u32, 0x4f7fffff, 0, 0, ALL5((uint64_t)-256), ALL5(0) },
	{ "f32 3e9 -> u32", w_f32_to_u32, 0x4f32d05e, 0, 0, ALL5((uint64_t)(int64_t)-1294967296),
	  ALL5(0) },
	{ "f32 2^32 -> u32", w_f32_to_u32, 0x4f800000, 0, 0, ALL5(U32_MAX_X), ALL5(NV) },
	{ "f32 NaN -> u32", w_f32_to_u32, S_QNAN, 0, 0, ALL5(U32_MAX_X), ALL5(NV) },
	{ "f32 -inf -> u32", w_f32_to_u32, S_NINF, 0, 0, ALL5(0), ALL5(NV) },
	/* 2^32 - 0.5: RNE rounds up to 2^32 (NV), RTZ down to 0xffffffff (NX): the same
	 * register value, told apart by the flags */
	{ "f64 2^32-0.5 -> u32",
	  w_f64_to_u32,
	  0x41efffffffff0000ULL,
	  0,
	  0,
	  ALL5(U32_MAX_X),
	  { [RNE] = NV, [RTZ] = NX, [RDN] = NX, [RUP] = NV, [RMM] = NV } },
	{ "f64 -2^63 -> i64", w_f64_to_i64, 0xc3e0000000000000ULL, 0, 0, ALL5((uint64_t)INT64_MIN),
	  ALL5(0) },
	{ "f64 2^63 -> i64", w_f64_to_i64, 0x43e0000000000000ULL, 0, 0, ALL5((uint64_t)INT64_MAX),
	  ALL5(NV) },
	{ "f64 2^63-1024 -> i64", w_f64_to_i64, 0x43dfffffffffffffULL, 0, 0,
	  ALL5(0x7ffffffffffffc00ULL), ALL5(0) },
	{ "f64 -inf -> i64", w_f64_to_i64, D_NINF, 0, 0, ALL5((uint64_t)INT64_MIN), ALL5(NV) },
	{ "f64 NaN -> i64", w_f64_to_i64, 0xfff8000000000000ULL, 0, 0, ALL5((uint64_t)INT64_MAX),
	  ALL5(NV) },
	{ "f64 2^64-2048 -> u64", w_f64_to_u64, 0x43efffffffffffffULL, 0, 0,
	  ALL5(0xfffffffffffff800ULL), ALL5(0) },
	{ "f64 2^64 -> u64", w_f64_to_u64, 0x43f0000000000000ULL, 0, 0, ALL5(UINT64_MAX),
	  ALL5(NV) },
	{ "f64 NaN -> u64", w_f64_to_u64, D_SNAN, 0, 0, ALL5(UINT64_MAX), ALL5(NV) },
	{ "f64 -0 -> u64", w_f64_to_u64, D_NZERO, 0, 0, ALL5(0), ALL5(0) },
	/* -2^-1074 rounds to -0 except downwards, where it is -1: NV */
	{ "f64 -tiny -> u64",
	  w_f64_to_u64,
	  0x8000000000000001ULL,
	  0,
	  0,
	  ALL5(0),
	  { [RNE] = NX, [RTZ] = NX, [RDN] = NV, [RUP] = NX, [RMM] = NX } },
	{ "f64 tiny -> i32",
	  w_f64_to_i32,
	  1,
	  0,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = 0, [RUP] = 1, [RMM] = 0 },
	  ALL5(NX) },
	{ "f32 2^63 -> u64", w_f32_to_u64, 0x5f000000, 0, 0, ALL5(0x8000000000000000ULL), ALL5(0) },
	{ "f32 2^64-2^40 -> u64", w_f32_to_u64, 0x5f7fffff, 0, 0, ALL5(0xffffff0000000000ULL),
	  ALL5(0) },
	{ "f32 2^64 -> u64", w_f32_to_u64, 0x5f800000, 0, 0, ALL5(UINT64_MAX), ALL5(NV) },
	{ "f32 -1.5 -> u64", w_f32_to_u64, 0xbfc00000, 0, 0, ALL5(0), ALL5(NV) },
};

#define NEG(x) ((uint64_t)(int64_t)(x))

static const struct fcase from_int_cases[] = {
	/* 2^24 + 1 ties between 2^24 (even) and 2^24 + 2 */
	{ "i32 2^24+1 -> f32",
	  w_i32_to_f32,
	  16777217,
	  0,
	  0,
	  { [RNE] = 0x4b800000,
	    [RTZ] = 0x4b800000,
	    [RDN] = 0x4b800000,
	    [RUP] = 0x4b800001,
	    [RMM] = 0x4b800001 },
	  ALL5(NX) },
	/* 2^24 + 3 ties between 2^24 + 2 (odd significand) and 2^24 + 4 (even) */
	{ "i32 2^24+3 -> f32",
	  w_i32_to_f32,
	  16777219,
	  0,
	  0,
	  { [RNE] = 0x4b800002,
	    [RTZ] = 0x4b800001,
	    [RDN] = 0x4b800001,
	    [RUP] = 0x4b800002,
	    [RMM] = 0x4b800002 },
	  ALL5(NX) },
	{ "i32 -(2^24+1) -> f32",
	  w_i32_to_f32,
	  NEG(-16777217),
	  0,
	  0,
	  { [RNE] = 0xcb800000,
	    [RTZ] = 0xcb800000,
	    [RDN] = 0xcb800001,
	    [RUP] = 0xcb800000,
	    [RMM] = 0xcb800001 },
	  ALL5(NX) },
	{ "i32 MIN -> f32", w_i32_to_f32, NEG(INT32_MIN), 0, 0, ALL5(0xcf000000), ALL5(0) },
	/* zero converts to +0 in every mode */
	{ "i32 0 -> f32", w_i32_to_f32, 0, 0, 0, ALL5(0), ALL5(0) },
	{ "i64 0 -> f64", w_i64_to_f64, 0, 0, 0, ALL5(0), ALL5(0) },
	/* only the low 32 bits of the source count for the 32-bit conversions */
	{ "u32 0xffffffff -> f32",
	  w_u32_to_f32,
	  0x12345678ffffffffULL,
	  0,
	  0,
	  { [RNE] = 0x4f800000,
	    [RTZ] = 0x4f7fffff,
	    [RDN] = 0x4f7fffff,
	    [RUP] = 0x4f800000,
	    [RMM] = 0x4f800000 },
	  ALL5(NX) },
	{ "u64 MAX -> f32",
	  w_u64_to_f32,
	  UINT64_MAX,
	  0,
	  0,
	  { [RNE] = 0x5f800000,
	    [RTZ] = 0x5f7fffff,
	    [RDN] = 0x5f7fffff,
	    [RUP] = 0x5f800000,
	    [RMM] = 0x5f800000 },
	  ALL5(NX) },
	{ "i64 MIN -> f32", w_i64_to_f32, NEG(INT64_MIN), 0, 0, ALL5(0xdf000000), ALL5(0) },
	{ "i64 -(2^40+1) -> f32",
	  w_i64_to_f32,
	  NEG(-1099511627777LL),
	  0,
	  0,
	  { [RNE] = 0xd3800000,
	    [RTZ] = 0xd3800000,
	    [RDN] = 0xd3800001,
	    [RUP] = 0xd3800000,
	    [RMM] = 0xd3800000 },
	  ALL5(NX) },
	/* every 32-bit integer is exact as a double */
	{ "i32 MIN -> f64", w_i32_to_f64, NEG(INT32_MIN), 0, 0, ALL5(0xc1e0000000000000ULL),
	  ALL5(0) },
	{ "u32 MAX -> f64", w_u32_to_f64, 0xffffffff, 0, 0, ALL5(0x41efffffffe00000ULL), ALL5(0) },
	/* 2^53 + 1 ties between 2^53 (even) and 2^53 + 2 */
	{ "i64 2^53+1 -> f64",
	  w_i64_to_f64,
	  9007199254740993ULL,
	  0,
	  0,
	  { [RNE] = 0x4340000000000000ULL,
	    [RTZ] = 0x4340000000000000ULL,
	    [RDN] = 0x4340000000000000ULL,
	    [RUP] = 0x4340000000000001ULL,
	    [RMM] = 0x4340000000000001ULL },
	  ALL5(NX) },
	{ "i64 -(2^53+1) -> f64",
	  w_i64_to_f64,
	  NEG(-9007199254740993LL),
	  0,
	  0,
	  { [RNE] = 0xc340000000000000ULL,
	    [RTZ] = 0xc340000000000000ULL,
	    [RDN] = 0xc340000000000001ULL,
	    [RUP] = 0xc340000000000000ULL,
	    [RMM] = 0xc340000000000001ULL },
	  ALL5(NX) },
	{ "i64 MIN -> f64", w_i64_to_f64, NEG(INT64_MIN), 0, 0, ALL5(0xc3e0000000000000ULL),
	  ALL5(0) },
	{ "u64 MAX -> f64",
	  w_u64_to_f64,
	  UINT64_MAX,
	  0,
	  0,
	  { [RNE] = 0x43f0000000000000ULL,
	    [RTZ] = 0x43efffffffffffffULL,
	    [RDN] = 0x43efffffffffffffULL,
	    [RUP] = 0x43f0000000000000ULL,
	    [RMM] = 0x43f0000000000000ULL },
	  ALL5(NX) },
};

static const struct fcase f32_f64_cases[] = {
	/* widening is exact; NaNs become the canonical double NaN, NV if signalling */
	{ "f32->f64 sNaN", w_f32_to_f64, S_SNAN, 0, 0, ALL5(F64_CANON_NAN), ALL5(NV) },
	{ "f32->f64 -qNaN payload", w_f32_to_f64, 0xffc00001, 0, 0, ALL5(F64_CANON_NAN), ALL5(0) },
	{ "f32->f64 2^-149", w_f32_to_f64, 1, 0, 0, ALL5(0x36a0000000000000ULL), ALL5(0) },
	{ "f32->f64 -0", w_f32_to_f64, S_NZERO, 0, 0, ALL5(D_NZERO), ALL5(0) },
	{ "f32->f64 -inf", w_f32_to_f64, S_NINF, 0, 0, ALL5(D_NINF), ALL5(0) },
	{ "f32->f64 MAX", w_f32_to_f64, S_MAX, 0, 0, ALL5(0x47efffffe0000000ULL), ALL5(0) },
	/* narrowing rounds */
	{ "f64->f32 sNaN", w_f64_to_f32, D_SNAN, 0, 0, ALL5(F32_CANON_NAN), ALL5(NV) },
	{ "f64->f32 qNaN payload", w_f64_to_f32, 0x7ff800000000abcdULL, 0, 0, ALL5(F32_CANON_NAN),
	  ALL5(0) },
	{ "f64->f32 1e300",
	  w_f64_to_f32,
	  0x7e37e43c8800759cULL,
	  0,
	  0,
	  { [RNE] = S_INF, [RTZ] = S_MAX, [RDN] = S_MAX, [RUP] = S_INF, [RMM] = S_INF },
	  ALL5(OF | NX) },
	{ "f64->f32 -1e300",
	  w_f64_to_f32,
	  0xfe37e43c8800759cULL,
	  0,
	  0,
	  { [RNE] = S_NINF,
	    [RTZ] = 0xff7fffff,
	    [RDN] = S_NINF,
	    [RUP] = 0xff7fffff,
	    [RMM] = S_NINF },
	  ALL5(OF | NX) },
	/* single MAX + half its ulp (2^103): the overflow tie, as for the add above */
	{ "f64->f32 MAX + half ulp",
	  w_f64_to_f32,
	  0x47effffff0000000ULL,
	  0,
	  0,
	  { [RNE] = S_INF, [RTZ] = S_MAX, [RDN] = S_MAX, [RUP] = S_INF, [RMM] = S_INF },
	  { [RNE] = OF | NX, [RTZ] = NX, [RDN] = NX, [RUP] = OF | NX, [RMM] = OF | NX } },
	{ "f64->f32 1 + 2^-24",
	  w_f64_to_f32,
	  0x3ff0000010000000ULL,
	  0,
	  0,
	  { [RNE] = S_ONE, [RTZ] = S_ONE, [RDN] = S_ONE, [RUP] = 0x3f800001, [RMM] = 0x3f800001 },
	  ALL5(NX) },
	/* 2^-150: half the smallest subnormal */
	{ "f64->f32 2^-150",
	  w_f64_to_f32,
	  0x3690000000000000ULL,
	  0,
	  0,
	  { [RNE] = 0, [RTZ] = 0, [RDN] = 0, [RUP] = 1, [RMM] = 1 },
	  ALL5(UF | NX) },
	{ "f64->f32 2^-149", w_f64_to_f32, 0x36a0000000000000ULL, 0, 0, ALL5(1), ALL5(0) },
	/* a double subnormal is far below the single range */
	{ "f64->f32 -2^-1074",
	  w_f64_to_f32,
	  0x8000000000000001ULL,
	  0,
	  0,
	  { [RNE] = S_NZERO,
	    [RTZ] = S_NZERO,
	    [RDN] = 0x80000001,
	    [RUP] = S_NZERO,
	    [RMM] = S_NZERO },
	  ALL5(UF | NX) },
	/* the tininess boundary again: 2^-126 - 2^-150 is tiny (UF even where it rounds to
	 * 2^-126), 2^-126 - 2^-151 is not tiny where it rounds to 2^-126 */
	{ "f64->f32 2^-126 - 2^-150",
	  w_f64_to_f32,
	  0x380fffffe0000000ULL,
	  0,
	  0,
	  { [RNE] = S_MIN_NORM,
	    [RTZ] = 0x007fffff,
	    [RDN] = 0x007fffff,
	    [RUP] = S_MIN_NORM,
	    [RMM] = S_MIN_NORM },
	  ALL5(UF | NX) },
	{ "f64->f32 2^-126 - 2^-151",
	  w_f64_to_f32,
	  0x380ffffff0000000ULL,
	  0,
	  0,
	  { [RNE] = S_MIN_NORM,
	    [RTZ] = 0x007fffff,
	    [RDN] = 0x007fffff,
	    [RUP] = S_MIN_NORM,
	    [RMM] = S_MIN_NORM },
	  { [RNE] = NX, [RTZ] = UF | NX, [RDN] = UF | NX, [RUP] = NX, [RMM] = NX } },
	{ "f64->f32 exact", w_f64_to_f32, 0xc00c000000000000ULL, 0, 0, ALL5(0xc0600000), ALL5(0) },
};

static void test_add(void **state)
{
	(void)state;
	RUN(add_cases);
	RUN(zero_sum_cases);
}

static void test_overflow(void **state)
{
	(void)state;
	RUN(overflow_cases);
}

static void test_underflow(void **state)
{
	(void)state;
	RUN(underflow_cases);
}

static void test_nan(void **state)
{
	(void)state;
	RUN(nan_cases);
}

static void test_div(void **state)
{
	(void)state;
	RUN(div_cases);
}

static void test_sqrt(void **state)
{
	(void)state;
	RUN(sqrt_cases);
}

static void test_fma(void **state)
{
	(void)state;
	RUN(fma_cases);
}

static void test_minmax(void **state)
{
	(void)state;
	RUN(minmax_cases);
}

static void test_compare(void **state)
{
	(void)state;
	RUN(compare_cases);
}

static void test_classify(void **state)
{
	(void)state;
	RUN(classify_cases);
}

static void test_to_int(void **state)
{
	(void)state;
	RUN(to_int_cases);
}

static void test_from_int(void **state)
{
	(void)state;
	RUN(from_int_cases);
}

static void test_f32_f64(void **state)
{
	(void)state;
	RUN(f32_f64_cases);
}

/* Flags accumulate: an operation ORs its own in and never clears others. */
static void test_flags_accumulate(void **state)
{
	uint32_t fl = DZ;

	(void)state;
	f64_add(D_ONE, 0x3ca0000000000000ULL, RNE, &fl);
	assert_int_equal(fl, DZ | NX);
	f32_add(S_ONE, S_ONE, RUP, &fl);
	assert_int_equal(fl, DZ | NX);
	f32_eq(S_SNAN, 0, &fl);
	assert_int_equal(fl, DZ | NX | NV);
}

/* Whatever mode an operation used, the host is back to round-to-nearest afterwards. */
static void test_host_mode_restored(void **state)
{
	volatile double one = 1.0, three = 3.0;
	uint32_t fl = 0;

	(void)state;
	for (int rm = 0; rm < 5; rm++) {
		f64_div(D_ONE, 0x4008000000000000ULL, rm, &fl);
		f32_madd(S_ONE, S_TWO, 0x33800000, rm, &fl);
		f64_madd(D_ONE, D_ONE, 0x3ca0000000000000ULL, rm, &fl);
		f64_to_f32(0x3ff0000010000000ULL, rm, &fl);
		/* a slow path as well: a NaN result */
		f64_mul(D_INF, 0, rm, &fl);
		assert_int_equal(fegetround(), FE_TONEAREST);
		/* 1/3 rounds down to ...555 only in nearest (RUP would give ...556) */
		double q = one / three;
		uint64_t qb;

		memcpy(&qb, &q, sizeof(qb));
		assert_int_equal(qb, 0x3fd5555555555555ULL);
	}
}

/* ---- the software implementation against the host paths ----
 *
 * fpu.c built with FPU_FORCE_GENERIC is what a non-x86 host runs, and the same integer
 * code serves RMM on x86; under gen_ names it sits beside the library's copy. */
#define FPU_FORCE_GENERIC
#define f32_add gen_f32_add
#define f32_sub gen_f32_sub
#define f32_mul gen_f32_mul
#define f32_div gen_f32_div
#define f32_sqrt gen_f32_sqrt
#define f32_madd gen_f32_madd
#define f32_msub gen_f32_msub
#define f32_nmsub gen_f32_nmsub
#define f32_nmadd gen_f32_nmadd
#define f32_min gen_f32_min
#define f32_max gen_f32_max
#define f32_eq gen_f32_eq
#define f32_lt gen_f32_lt
#define f32_le gen_f32_le
#define f32_classify gen_f32_classify
#define f32_to_i32 gen_f32_to_i32
#define f32_to_u32 gen_f32_to_u32
#define f32_to_i64 gen_f32_to_i64
#define f32_to_u64 gen_f32_to_u64
#define i32_to_f32 gen_i32_to_f32
#define u32_to_f32 gen_u32_to_f32
#define i64_to_f32 gen_i64_to_f32
#define u64_to_f32 gen_u64_to_f32
#define f64_add gen_f64_add
#define f64_sub gen_f64_sub
#define f64_mul gen_f64_mul
#define f64_div gen_f64_div
#define f64_sqrt gen_f64_sqrt
#define f64_madd gen_f64_madd
#define f64_msub gen_f64_msub
#define f64_nmsub gen_f64_nmsub
#define f64_nmadd gen_f64_nmadd
#define f64_min gen_f64_min
#define f64_max gen_f64_max
#define f64_eq gen_f64_eq
#define f64_lt gen_f64_lt
#define f64_le gen_f64_le
#define f64_classify gen_f64_classify
#define f64_to_i32 gen_f64_to_i32
#define f64_to_u32 gen_f64_to_u32
#define f64_to_i64 gen_f64_to_i64
#define f64_to_u64 gen_f64_to_u64
#define i32_to_f64 gen_i32_to_f64
#define u32_to_f64 gen_u32_to_f64
#define i64_to_f64 gen_i64_to_f64
#define u64_to_f64 gen_u64_to_f64
#define f32_to_f64 gen_f32_to_f64
#define f64_to_f32 gen_f64_to_f32
#include "cpu/riscv/fpu.c"

#undef f32_add
#undef f32_sub
#undef f32_mul
#undef f32_div
#undef f32_sqrt
#undef f32_madd
#undef f32_msub
#undef f32_nmsub
#undef f32_nmadd
#undef f32_min
#undef f32_max
#undef f32_eq
#undef f32_lt
#undef f32_le
#undef f32_classify
#undef f32_to_i32
#undef f32_to_u32
#undef f32_to_i64
#undef f32_to_u64
#undef i32_to_f32
#undef u32_to_f32
#undef i64_to_f32
#undef u64_to_f32
#undef f64_add
#undef f64_sub
#undef f64_mul
#undef f64_div
#undef f64_sqrt
#undef f64_madd
#undef f64_msub
#undef f64_nmsub
#undef f64_nmadd
#undef f64_min
#undef f64_max
#undef f64_eq
#undef f64_lt
#undef f64_le
#undef f64_classify
#undef f64_to_i32
#undef f64_to_u32
#undef f64_to_i64
#undef f64_to_u64
#undef i32_to_f64
#undef u32_to_f64
#undef i64_to_f64
#undef u64_to_f64
#undef f32_to_f64
#undef f64_to_f32

FPU_OPS(WRAP, gen_)

/* operand kinds for the random cross-check */
enum { K_F32, K_F64, K_INT };

struct pair {
	const char *name;
	fpu_fn host, soft;
	int kind;
};

#define PAIR(n, k)                                                                                 \
	{                                                                                          \
#n, w_##n, w_gen_##n, k                                                            \
	}

static const struct pair pairs[] = {
	PAIR(f32_add, K_F32),	 PAIR(f32_sub, K_F32),	    PAIR(f32_mul, K_F32),
	PAIR(f32_div, K_F32),	 PAIR(f32_sqrt, K_F32),	    PAIR(f32_madd, K_F32),
	PAIR(f32_msub, K_F32),	 PAIR(f32_nmsub, K_F32),    PAIR(f32_nmadd, K_F32),
	PAIR(f32_min, K_F32),	 PAIR(f32_max, K_F32),	    PAIR(f32_eq, K_F32),
	PAIR(f32_lt, K_F32),	 PAIR(f32_le, K_F32),	    PAIR(f32_classify, K_F32),
	PAIR(f32_to_i32, K_F32), PAIR(f32_to_u32, K_F32),   PAIR(f32_to_i64, K_F32),
	PAIR(f32_to_u64, K_F32), PAIR(i32_to_f32, K_INT),   PAIR(u32_to_f32, K_INT),
	PAIR(i64_to_f32, K_INT), PAIR(u64_to_f32, K_INT),   PAIR(f64_add, K_F64),
	PAIR(f64_sub, K_F64),	 PAIR(f64_mul, K_F64),	    PAIR(f64_div, K_F64),
	PAIR(f64_sqrt, K_F64),	 PAIR(f64_madd, K_F64),	    PAIR(f64_msub, K_F64),
	PAIR(f64_nmsub, K_F64),	 PAIR(f64_nmadd, K_F64),    PAIR(f64_min, K_F64),
	PAIR(f64_max, K_F64),	 PAIR(f64_eq, K_F64),	    PAIR(f64_lt, K_F64),
	PAIR(f64_le, K_F64),	 PAIR(f64_classify, K_F64), PAIR(f64_to_i32, K_F64),
	PAIR(f64_to_u32, K_F64), PAIR(f64_to_i64, K_F64),   PAIR(f64_to_u64, K_F64),
	PAIR(i32_to_f64, K_INT), PAIR(u32_to_f64, K_INT),   PAIR(i64_to_f64, K_INT),
	PAIR(u64_to_f64, K_INT), PAIR(f32_to_f64, K_F32),   PAIR(f64_to_f32, K_F64),
};

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Operands biased towards what breaks implementations: specials, subnormals, the ends
 * of the exponent range, few significant bits (ties, exact results) and all-ones. */
static uint32_t rnd_f32(void)
{
	static const uint32_t special[] = { 0, S_NZERO,	   S_INF,      S_NINF, S_QNAN, S_SNAN,
					    1, 0x807fffff, S_MIN_NORM, S_MAX,  S_ONE,  0xbf000000 };
	uint32_t sign = (uint32_t)(rnd() & 1) << 31, frac = (uint32_t)rnd() & 0x7fffff;

	switch (rnd() % 8) {
	case 0: return special[rnd() % (sizeof(special) / sizeof(special[0]))];
	case 1: return (uint32_t)rnd();
	case 2: return sign | (uint32_t)(rnd() % 3) << 23 | frac;
	case 3: return sign | (uint32_t)(0xfe - rnd() % 3) << 23 | frac;
	case 4: return sign | (uint32_t)(97 + rnd() % 60) << 23 | (frac & 0x7f0000);
	case 5: return sign | (uint32_t)(rnd() % 255) << 23 | (0x7fffff ^ (frac & 3));
	default: return sign | (uint32_t)(117 + rnd() % 70) << 23 | frac;
	}
}

static uint64_t rnd_f64(void)
{
	static const uint64_t special[] = { 0,		D_NZERO, D_INF, D_NINF,
					    D_QNAN,	D_SNAN,	 1,	0x800fffffffffffffULL,
					    D_MIN_NORM, D_MAX,	 D_ONE, 0x43e0000000000000ULL };
	uint64_t sign = (rnd() & 1) << 63, frac = rnd() & 0xfffffffffffffULL;

	switch (rnd() % 8) {
	case 0: return special[rnd() % (sizeof(special) / sizeof(special[0]))];
	case 1: return rnd();
	case 2: return sign | (rnd() % 3) << 52 | frac;
	case 3: return sign | (0x7fe - rnd() % 3) << 52 | frac;
	case 4: return sign | (963 + rnd() % 120) << 52 | (frac & 0xff00000000000ULL);
	case 5: return sign | (rnd() % 2047) << 52 | (0xfffffffffffffULL ^ (frac & 3));
	case 6:
		/* near the exponents where the fast paths switch checks */
		return sign | (40 + rnd() % 80) << 52 | frac;
	default: return sign | (1013 + rnd() % 70) << 52 | frac;
	}
}

static uint64_t rnd_int(void)
{
	uint64_t v = rnd();

	switch (rnd() % 4) {
	case 0: return v >> (rnd() % 64);
	case 1: return -(v >> (rnd() % 64));
	case 2: return (1ULL << (rnd() % 64)) + rnd() % 5 - 2;
	default: return v;
	}
}

static void test_soft_matches_host(void **state)
{
	int bad = 0;

	(void)state;
	for (size_t p = 0; p < sizeof(pairs) / sizeof(pairs[0]); p++) {
		for (int i = 0; i < 20000; i++) {
			uint64_t a, b, c;

			switch (pairs[p].kind) {
			case K_F32:
				a = rnd_f32();
				b = rnd_f32();
				c = rnd_f32();
				break;
			case K_F64:
				a = rnd_f64();
				b = rnd_f64();
				c = rnd_f64();
				break;
			default:
				a = rnd_int();
				b = c = 0;
				break;
			}
			for (int rm = 0; rm < 5; rm++) {
				uint32_t fh = 0, fs = 0;
				uint64_t h = pairs[p].host(a, b, c, rm, &fh);
				uint64_t s = pairs[p].soft(a, b, c, rm, &fs);

				if ((h != s || fh != fs) && bad++ < 20)
					print_error("%s(%#llx, %#llx, %#llx) [%s]: host %#llx/%#x, "
						    "soft %#llx/%#x\n",
						    pairs[p].name, (unsigned long long)a,
						    (unsigned long long)b, (unsigned long long)c,
						    rm_name[rm], (unsigned long long)h, fh,
						    (unsigned long long)s, fs);
			}
		}
	}
	assert_int_equal(bad, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nan_boxing),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_overflow),
		cmocka_unit_test(test_underflow),
		cmocka_unit_test(test_nan),
		cmocka_unit_test(test_div),
		cmocka_unit_test(test_sqrt),
		cmocka_unit_test(test_fma),
		cmocka_unit_test(test_minmax),
		cmocka_unit_test(test_compare),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_to_int),
		cmocka_unit_test(test_from_int),
		cmocka_unit_test(test_f32_f64),
		cmocka_unit_test(test_flags_accumulate),
		cmocka_unit_test(test_host_mode_restored),
		cmocka_unit_test(test_soft_matches_host),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
