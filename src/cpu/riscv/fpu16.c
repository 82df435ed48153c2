/* IEEE 754 half precision (Zfh) with RISC-V semantics, bit-identical to Berkeley SoftFloat as
 * spike configures it: tininess detected after rounding, every NaN result is the canonical
 * NaN, NV on any signalling NaN operand.
 *
 * Pure integer code, so it neither depends on nor disturbs the host's floating-point
 * environment. Every finite operand is unpacked to an exact sig * 2^exp; the operation is
 * computed exactly in 64-bit integers (add, mul, fma, conversions), or with the remainder
 * jammed into a sticky bit well below the rounding point (div, sqrt: round-to-odd), and
 * f16_round_pack() rounds once. */
#include <stdbool.h>
#include <stdint.h>

#include "cpu/riscv/fpu.h"
#include "cpu/riscv/fpu16.h"

#define F16_SIGN 0x8000U
#define F16_INF 0x7c00U
#define F16_MAX 0x7bffU

static inline bool f16_is_nan(uint16_t a)
{
	return (a & 0x7fff) > F16_INF;
}

/* RISC-V uses the IEEE 754-2008 convention: the top fraction bit set means quiet. */
static inline bool f16_is_snan(uint16_t a)
{
	return f16_is_nan(a) && !(a & 0x0200);
}

static inline bool f16_is_inf(uint16_t a)
{
	return (a & 0x7fff) == F16_INF;
}

static inline bool f16_is_zero(uint16_t a)
{
	return !(a & 0x7fff);
}

static inline bool f16_sign(uint16_t a)
{
	return a >> 15;
}

/* A finite value, exactly: (-1)^sign * sig * 2^exp. */
struct f16_unpacked {
	bool sign;
	int exp;
	uint64_t sig;
};

static struct f16_unpacked f16_unpack(uint16_t a)
{
	unsigned int e = (a >> 10) & 0x1f;
	struct f16_unpacked u = {
		.sign = f16_sign(a),
		.exp = (e ? (int)e : 1) - 25,
		.sig = (a & 0x3ffU) | (e ? 0x400U : 0),
	};

	return u;
}

/* The result of an operation with a NaN operand: canonical, NV if any operand signals. */
static uint16_t f16_nan2(uint16_t a, uint16_t b, uint32_t *fl)
{
	if (f16_is_snan(a) || f16_is_snan(b))
		*fl |= FFLAG_NV;
	return F16_CANON_NAN;
}

static uint16_t f16_invalid(uint32_t *fl)
{
	*fl |= FFLAG_NV;
	return F16_CANON_NAN;
}

/*
 * sig >> shift (shift >= 1), rounded per rm for a value of the given sign. *inexact tells
 * whether any nonzero bit was shifted out. Works for any shift, including >= 64.
 */
static uint64_t shift_round(uint64_t sig, int shift, bool sign, int rm, bool *inexact)
{
	uint64_t q, rem, half;

	if (shift > 64) {
		/* All of sig lies below half an ulp: only its being nonzero matters. */
		q = 0;
		rem = sig != 0;
		half = 2;
	} else if (shift == 64) {
		q = 0;
		rem = sig;
		half = 1ULL << 63;
	} else {
		q = sig >> shift;
		rem = sig & ((1ULL << shift) - 1);
		half = 1ULL << (shift - 1);
	}
	*inexact = rem != 0;
	if (!rem)
		return q;
	switch (rm) {
	case FRM_RNE: return q + (rem > half || (rem == half && (q & 1)));
	case FRM_RMM: return q + (rem >= half);
	case FRM_RDN: return q + sign;
	case FRM_RUP: return q + !sign;
	default: /* FRM_RTZ */ return q;
	}
}

/*
 * Round (-1)^sign * sig * 2^exp to a half per rm, raising flags as SoftFloat's
 * softfloat_roundPackToF16 does. Bit 0 of sig may be a sticky bit standing for nonzero bits
 * that were dropped below it, provided sig then holds at least 13 significant bits (two more
 * than a half keeps, which makes round-to-odd followed by this rounding exact).
 */
static uint16_t f16_round_pack(bool sign, int exp, uint64_t sig, int rm, uint32_t *fl)
{
	uint16_t s = sign ? F16_SIGN : 0;
	bool tiny = false, inexact, to_inf;
	unsigned int bits;
	uint64_t q;
	int lz, e;

	if (!sig)
		return s;
	/* Normalize to sig in [2^62, 2^63), so value = (sig / 2^62) * 2^e. */
	lz = __builtin_clzll(sig);
	if (lz == 0) {
		sig = (sig >> 1) | (sig & 1);
		exp++;
	} else {
		sig <<= lz - 1;
		exp -= lz - 1;
	}
	e = exp + 62;
	if (e > 15)
		goto overflow;

	if (e < -14) {
		/*
		 * Tininess after rounding: tiny unless rounding to 11 bits with an unbounded
		 * exponent range would already reach 2^-14.
		 */
		tiny = e < -15 || shift_round(sig, 52, sign, rm, &inexact) < 0x800;
		/* Subnormal: the ulp is 2^-24 whatever e is. */
		q = shift_round(sig, 38 - e, sign, rm, &inexact);
		/* q == 0x400 after a carry is the smallest normal, encoded just right. */
		bits = (unsigned int)q;
	} else {
		q = shift_round(sig, 52, sign, rm, &inexact);
		/* The implicit bit in q adds one to the biased exponent, a carry to 0x800 another.
		 */
		bits = ((unsigned int)(e + 14) << 10) + (unsigned int)q;
	}
	if (bits >= F16_INF)
		goto overflow;
	if (inexact) {
		*fl |= FFLAG_NX;
		if (tiny)
			*fl |= FFLAG_UF;
	}
	return s | (uint16_t)bits;

overflow:
	*fl |= FFLAG_OF | FFLAG_NX;
	to_inf = rm == FRM_RNE || rm == FRM_RMM || (rm == FRM_RDN && sign) ||
		 (rm == FRM_RUP && !sign);
	return s | (to_inf ? F16_INF : F16_MAX);
}

/*
 * (-1)^sx * x * 2^ex + (-1)^sy * y * 2^ey, computed exactly and rounded once. Exactness
 * fits in 64 bits for the two uses: a sum of halves (exponents -24..5, 11-bit significands:
 * under 2^40), and a product of halves (exponent -48..10, 22 bits) plus a half. There, if the
 * product has the lower exponent the addend is shifted by at most 53 and stays below
 * 2^64 - 2^53, leaving room for the product's 22 bits; otherwise the product is shifted by
 * at most 34 (under 2^56) and the addend is not shifted.
 */
static uint16_t f16_add_exact(bool sx, int ex, uint64_t x, bool sy, int ey, uint64_t y, int rm,
			      uint32_t *fl)
{
	int e = ex < ey ? ex : ey;
	uint64_t mx = x << (ex - e), my = y << (ey - e), m;
	bool s = sx;

	if (sx == sy) {
		m = mx + my;
	} else if (mx >= my) {
		m = mx - my;
	} else {
		m = my - mx;
		s = sy;
	}
	if (!m) {
		/* Exact zero: same-signed zeros keep their sign, otherwise +0 except under RDN. */
		if (sx != sy)
			s = rm == FRM_RDN;
		return s ? F16_SIGN : 0;
	}
	return f16_round_pack(s, e, m, rm, fl);
}

uint16_t f16_add(uint16_t a, uint16_t b, int rm, uint32_t *fl)
{
	struct f16_unpacked ua, ub;

	if (f16_is_nan(a) || f16_is_nan(b))
		return f16_nan2(a, b, fl);
	if (f16_is_inf(a) || f16_is_inf(b)) {
		if (f16_is_inf(a) && f16_is_inf(b) && f16_sign(a) != f16_sign(b))
			return f16_invalid(fl);
		return f16_is_inf(a) ? a : b;
	}
	ua = f16_unpack(a);
	ub = f16_unpack(b);
	return f16_add_exact(ua.sign, ua.exp, ua.sig, ub.sign, ub.exp, ub.sig, rm, fl);
}

/* Flipping b's sign changes neither NaN-ness nor signalling, so NaN handling carries over. */
uint16_t f16_sub(uint16_t a, uint16_t b, int rm, uint32_t *fl)
{
	return f16_add(a, b ^ F16_SIGN, rm, fl);
}

uint16_t f16_mul(uint16_t a, uint16_t b, int rm, uint32_t *fl)
{
	bool sign = f16_sign(a) ^ f16_sign(b);
	struct f16_unpacked ua, ub;

	if (f16_is_nan(a) || f16_is_nan(b))
		return f16_nan2(a, b, fl);
	if (f16_is_inf(a) || f16_is_inf(b)) {
		if (f16_is_zero(a) || f16_is_zero(b))
			return f16_invalid(fl);
		return (sign ? F16_SIGN : 0) | F16_INF;
	}
	ua = f16_unpack(a);
	ub = f16_unpack(b);
	/* The 22-bit product is exact; a zero operand gives a signed zero. */
	return f16_round_pack(sign, ua.exp + ub.exp, ua.sig * ub.sig, rm, fl);
}

uint16_t f16_div(uint16_t a, uint16_t b, int rm, uint32_t *fl)
{
	bool sign = f16_sign(a) ^ f16_sign(b);
	uint16_t s = sign ? F16_SIGN : 0;
	struct f16_unpacked ua, ub;
	uint64_t n, q;

	if (f16_is_nan(a) || f16_is_nan(b))
		return f16_nan2(a, b, fl);
	if (f16_is_inf(a)) {
		if (f16_is_inf(b))
			return f16_invalid(fl);
		return s | F16_INF;
	}
	if (f16_is_inf(b))
		return s;
	if (f16_is_zero(b)) {
		if (f16_is_zero(a))
			return f16_invalid(fl);
		*fl |= FFLAG_DZ;
		return s | F16_INF;
	}
	if (f16_is_zero(a))
		return s;
	ua = f16_unpack(a);
	ub = f16_unpack(b);
	/* sig_a < 2^11, so n < 2^63; sig_b < 2^11 leaves q at least 41 significant bits. */
	n = ua.sig << 52;
	q = n / ub.sig;
	q |= (n % ub.sig) != 0;
	return f16_round_pack(sign, ua.exp - ub.exp - 52, q, rm, fl);
}

/* floor(sqrt(n)) by the bit-by-bit method; *rem gets n - root^2. */
static uint64_t isqrt64(uint64_t n, uint64_t *rem)
{
	uint64_t r = 0, bit = 1ULL << 62;

	while (bit > n)
		bit >>= 2;
	while (bit) {
		if (n >= r + bit) {
			n -= r + bit;
			r = (r >> 1) + bit;
		} else {
			r >>= 1;
		}
		bit >>= 2;
	}
	*rem = n;
	return r;
}

uint16_t f16_sqrt(uint16_t a, int rm, uint32_t *fl)
{
	struct f16_unpacked u;
	uint64_t r, rem;

	if (f16_is_nan(a))
		return f16_nan2(a, a, fl);
	if (f16_is_zero(a))
		return a; /* sqrt(-0) = -0 */
	if (f16_sign(a))
		return f16_invalid(fl);
	if (f16_is_inf(a))
		return a;
	u = f16_unpack(a);
	/* An even exponent halves exactly. */
	if (u.exp & 1) {
		u.sig <<= 1;
		u.exp--;
	}
	/* sig < 2^12, so sig << 48 < 2^60 and its root has at least 24 significant bits. */
	r = isqrt64(u.sig << 48, &rem);
	return f16_round_pack(false, (u.exp - 48) / 2, r | (rem != 0), rm, fl);
}

/*
 * Fused (-1)^neg_prod * a * b + (-1)^neg_c * c, one rounding. The negations act on the
 * operands' signs as spike does (it flips operand sign bits before f16_mulAdd), so NaN
 * handling is unaffected. Special cases follow softfloat_mulAddF16: inf * 0 is invalid even
 * when c is a quiet NaN, but not when a or b is itself a NaN.
 */
static uint16_t f16_muladd(uint16_t a, uint16_t b, uint16_t c, bool neg_prod, bool neg_c, int rm,
			   uint32_t *fl)
{
	bool prod_inf = f16_is_inf(a) || f16_is_inf(b);
	bool prod_zero = f16_is_zero(a) || f16_is_zero(b);
	bool sp = f16_sign(a) ^ f16_sign(b) ^ neg_prod;
	bool sc = f16_sign(c) ^ neg_c;
	struct f16_unpacked ua, ub, uc;

	if (f16_is_nan(a) || f16_is_nan(b)) {
		if (f16_is_snan(a) || f16_is_snan(b) || f16_is_snan(c))
			*fl |= FFLAG_NV;
		return F16_CANON_NAN;
	}
	if (prod_inf && prod_zero) {
		*fl |= FFLAG_NV;
		return F16_CANON_NAN;
	}
	if (f16_is_nan(c))
		return f16_nan2(c, c, fl);
	if (prod_inf) {
		if (f16_is_inf(c) && sc != sp)
			return f16_invalid(fl);
		return (sp ? F16_SIGN : 0) | F16_INF;
	}
	if (f16_is_inf(c))
		return (sc ? F16_SIGN : 0) | F16_INF;
	ua = f16_unpack(a);
	ub = f16_unpack(b);
	uc = f16_unpack(c);
	return f16_add_exact(sp, ua.exp + ub.exp, ua.sig * ub.sig, sc, uc.exp, uc.sig, rm, fl);
}

uint16_t f16_madd(uint16_t a, uint16_t b, uint16_t c, int rm, uint32_t *fl)
{
	return f16_muladd(a, b, c, false, false, rm, fl);
}

uint16_t f16_msub(uint16_t a, uint16_t b, uint16_t c, int rm, uint32_t *fl)
{
	return f16_muladd(a, b, c, false, true, rm, fl);
}

uint16_t f16_nmsub(uint16_t a, uint16_t b, uint16_t c, int rm, uint32_t *fl)
{
	return f16_muladd(a, b, c, true, false, rm, fl);
}

uint16_t f16_nmadd(uint16_t a, uint16_t b, uint16_t c, int rm, uint32_t *fl)
{
	return f16_muladd(a, b, c, true, true, rm, fl);
}

/* a < b for non-NaN halves, with -0 < +0 (fmin/fmax order). */
static bool f16_lt_total(uint16_t a, uint16_t b)
{
	if (f16_sign(a) != f16_sign(b))
		return f16_sign(a);
	return f16_sign(a) ? a > b : a < b;
}

uint16_t f16_min(uint16_t a, uint16_t b, uint32_t *fl)
{
	if (f16_is_snan(a) || f16_is_snan(b))
		*fl |= FFLAG_NV;
	if (f16_is_nan(a) && f16_is_nan(b))
		return F16_CANON_NAN;
	if (f16_is_nan(a))
		return b;
	if (f16_is_nan(b))
		return a;
	return f16_lt_total(b, a) ? b : a;
}

uint16_t f16_max(uint16_t a, uint16_t b, uint32_t *fl)
{
	if (f16_is_snan(a) || f16_is_snan(b))
		*fl |= FFLAG_NV;
	if (f16_is_nan(a) && f16_is_nan(b))
		return F16_CANON_NAN;
	if (f16_is_nan(a))
		return b;
	if (f16_is_nan(b))
		return a;
	return f16_lt_total(a, b) ? b : a;
}

int f16_eq(uint16_t a, uint16_t b, uint32_t *fl)
{
	if (f16_is_nan(a) || f16_is_nan(b)) {
		if (f16_is_snan(a) || f16_is_snan(b))
			*fl |= FFLAG_NV;
		return 0;
	}
	return a == b || !((a | b) & 0x7fff);
}

int f16_lt(uint16_t a, uint16_t b, uint32_t *fl)
{
	if (f16_is_nan(a) || f16_is_nan(b)) {
		*fl |= FFLAG_NV;
		return 0;
	}
	if (f16_sign(a) != f16_sign(b))
		return f16_sign(a) && ((a | b) & 0x7fff);
	return a != b && (f16_sign(a) ^ (a < b));
}

int f16_le(uint16_t a, uint16_t b, uint32_t *fl)
{
	if (f16_is_nan(a) || f16_is_nan(b)) {
		*fl |= FFLAG_NV;
		return 0;
	}
	if (f16_sign(a) != f16_sign(b))
		return f16_sign(a) || !((a | b) & 0x7fff);
	return a == b || (f16_sign(a) ^ (a < b));
}

uint32_t f16_classify(uint16_t a)
{
	bool sign = f16_sign(a);
	unsigned int e = (a >> 10) & 0x1f;

	if (f16_is_nan(a))
		return f16_is_snan(a) ? 1U << 8 : 1U << 9;
	if (f16_is_inf(a))
		return sign ? 1U << 0 : 1U << 7;
	if (f16_is_zero(a))
		return sign ? 1U << 3 : 1U << 4;
	if (!e)
		return sign ? 1U << 2 : 1U << 5;
	return sign ? 1U << 1 : 1U << 6;
}

/*
 * The four conversions to integers, as softfloat_roundToUI32/I32 do them: NaN and +inf give
 * pos_max, -inf neg_min, all with NV. Every finite half (|a| <= 65504) fits every signed
 * type; for unsigned ones a negative value that does not round to 0 is invalid, and then
 * NX is not raised.
 */
static uint64_t f16_to_int(uint16_t a, int rm, uint32_t *fl, bool uns, uint64_t pos_max,
			   uint64_t neg_min)
{
	struct f16_unpacked u;
	bool inexact = false;
	uint64_t m;

	if (f16_is_nan(a)) {
		*fl |= FFLAG_NV;
		return pos_max;
	}
	if (f16_is_inf(a)) {
		*fl |= FFLAG_NV;
		return f16_sign(a) ? neg_min : pos_max;
	}
	u = f16_unpack(a);
	if (u.exp >= 0)
		m = u.sig << u.exp;
	else
		m = shift_round(u.sig, -u.exp, u.sign, rm, &inexact);
	if (uns && u.sign && m) {
		*fl |= FFLAG_NV;
		return neg_min;
	}
	if (inexact)
		*fl |= FFLAG_NX;
	return u.sign ? -m : m;
}

int64_t f16_to_i32(uint16_t a, int rm, uint32_t *fl)
{
	return (int32_t)f16_to_int(a, rm, fl, false, INT32_MAX, (uint64_t)(int64_t)INT32_MIN);
}

/* The 32-bit result is sign-extended into the register, as fcvt.wu.h writes it. */
int64_t f16_to_u32(uint16_t a, int rm, uint32_t *fl)
{
	return (int32_t)(uint32_t)f16_to_int(a, rm, fl, true, UINT32_MAX, 0);
}

int64_t f16_to_i64(uint16_t a, int rm, uint32_t *fl)
{
	return (int64_t)f16_to_int(a, rm, fl, false, INT64_MAX, (uint64_t)INT64_MIN);
}

uint64_t f16_to_u64(uint16_t a, int rm, uint32_t *fl)
{
	return f16_to_int(a, rm, fl, true, UINT64_MAX, 0);
}

uint16_t i64_to_f16(int64_t v, int rm, uint32_t *fl)
{
	bool sign = v < 0;

	return f16_round_pack(sign, 0, sign ? -(uint64_t)v : (uint64_t)v, rm, fl);
}

uint16_t u64_to_f16(uint64_t v, int rm, uint32_t *fl)
{
	return f16_round_pack(false, 0, v, rm, fl);
}

/* Rounding the same exact value, a 32-bit source behaves as its 64-bit widening. */
uint16_t i32_to_f16(int32_t v, int rm, uint32_t *fl)
{
	return i64_to_f16(v, rm, fl);
}

uint16_t u32_to_f16(uint32_t v, int rm, uint32_t *fl)
{
	return u64_to_f16(v, rm, fl);
}

/* A finite nonzero half as a significand in [1, 2) with 10 fraction bits and exponent. */
static void f16_normalize(uint16_t a, int *exp, uint32_t *frac)
{
	struct f16_unpacked u = f16_unpack(a);
	int msb = 63 - __builtin_clzll(u.sig);

	*exp = u.exp + msb;
	*frac = (uint32_t)(u.sig << (10 - msb)) & 0x3ff;
}

/* Widening is exact: only NaNs need care (canonical, NV if signalling). */
uint32_t f16_to_f32(uint16_t a, uint32_t *fl)
{
	uint32_t s = (uint32_t)f16_sign(a) << 31;
	uint32_t frac;
	int exp;

	if (f16_is_nan(a)) {
		f16_nan2(a, a, fl);
		return F32_CANON_NAN;
	}
	if (f16_is_inf(a))
		return s | 0x7f800000U;
	if (f16_is_zero(a))
		return s;
	f16_normalize(a, &exp, &frac);
	return s | (uint32_t)(exp + 127) << 23 | frac << 13;
}

uint64_t f16_to_f64(uint16_t a, uint32_t *fl)
{
	uint64_t s = (uint64_t)f16_sign(a) << 63;
	uint32_t frac;
	int exp;

	if (f16_is_nan(a)) {
		f16_nan2(a, a, fl);
		return F64_CANON_NAN;
	}
	if (f16_is_inf(a))
		return s | 0x7ff0000000000000ULL;
	if (f16_is_zero(a))
		return s;
	f16_normalize(a, &exp, &frac);
	return s | (uint64_t)(exp + 1023) << 52 | (uint64_t)frac << 42;
}

uint16_t f32_to_f16(uint32_t a, int rm, uint32_t *fl)
{
	bool sign = a >> 31;
	unsigned int e = (a >> 23) & 0xff;
	uint32_t frac = a & 0x7fffff;

	if (e == 0xff) {
		if (!frac)
			return (sign ? F16_SIGN : 0) | F16_INF;
		if (!(frac & 0x400000))
			*fl |= FFLAG_NV;
		return F16_CANON_NAN;
	}
	return f16_round_pack(sign, (e ? (int)e : 1) - 150, frac | (e ? 0x800000U : 0), rm, fl);
}

uint16_t f64_to_f16(uint64_t a, int rm, uint32_t *fl)
{
	bool sign = a >> 63;
	unsigned int e = (a >> 52) & 0x7ff;
	uint64_t frac = a & 0xfffffffffffffULL;

	if (e == 0x7ff) {
		if (!frac)
			return (sign ? F16_SIGN : 0) | F16_INF;
		if (!(frac & 0x8000000000000ULL))
			*fl |= FFLAG_NV;
		return F16_CANON_NAN;
	}
	return f16_round_pack(sign, (e ? (int)e : 1) - 1075, frac | (e ? 1ULL << 52 : 0), rm, fl);
}
