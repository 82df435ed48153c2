/* RISC-V F and D arithmetic, bit-identical to Berkeley SoftFloat as spike configures it
 * (canonical NaNs, tininess detected after rounding, saturating integer conversions).
 *
 * Where the host computes exactly what RISC-V wants, the host does it: x86-64 SSE is
 * IEEE 754 in the nearest and directed modes and, like RISC-V, detects tininess after
 * rounding, so f32/f64 add, sub, mul, div, sqrt, fma and f64->f32 run on SSE in the
 * guest's mode. Their flags are not read back from MXCSR on the common path (that read
 * stalls the pipeline, see "x86 fast paths"): they follow from the result and an exact
 * inexactness test, and only rare results (NaN, inf, tiny, near overflow) take the path
 * that clears, runs and reads MXCSR. The host has no round-to-nearest-max-magnitude
 * (RMM), so:
 *  - single-precision RMM ops are computed in double with round-to-odd (RTZ, then the
 *    inexact flag jammed into the lowest bit) and rounded to single in software; 53 bits
 *    hold the 24 + 2 needed for double rounding to be exact, and no single-precision
 *    operands can make that double result overflow or become tiny;
 *  - double-precision RMM add/mul/div/fma use the integer implementation below;
 *  - sqrt has no ties (a midpoint squared needs more than p bits) and never a tiny
 *    result, so RMM sqrt is RNE sqrt.
 * Comparisons, min/max, classify and all integer conversions are cheap enough in integer
 * arithmetic and have RISC-V-specific rules, so they never touch the host FPU.
 *
 * Between calls the host must be in its default state: round to nearest, no
 * flush-to-zero or denormals-are-zero (no -ffast-math startup code). Every call that
 * changes the rounding mode sets it back to nearest before returning.
 *
 * On other hosts (or with FPU_FORCE_GENERIC, which the tests use to exercise it) only
 * operations whose result is never tiny go to the host through <fenv.h>; the rest is
 * software, since e.g. AArch64 detects tininess before rounding. */
#include "cpu/riscv/fpu.h"

#include <fenv.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) && !defined(FPU_FORCE_GENERIC)
#define FPU_HOST_SSE 1
#include <immintrin.h>
#else
#define FPU_HOST_SSE 0
#endif

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

typedef unsigned __int128 u128;

#define F32_SIGN 0x80000000U
#define F32_INF 0x7f800000U
#define F32_QUIET 0x00400000U
#define F64_SIGN 0x8000000000000000ULL
#define F64_INF 0x7ff0000000000000ULL
#define F64_QUIET 0x0008000000000000ULL
#define F64_FRAC 0x000fffffffffffffULL

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_SQRT };

/* ---- bit patterns ---- */

static inline float f32_val(uint32_t v)
{
	float f;

	memcpy(&f, &v, sizeof(f));
	return f;
}

static inline uint32_t f32_raw(float f)
{
	uint32_t v;

	memcpy(&v, &f, sizeof(v));
	return v;
}

static inline double f64_val(uint64_t v)
{
	double d;

	memcpy(&d, &v, sizeof(d));
	return d;
}

static inline uint64_t f64_raw(double d)
{
	uint64_t v;

	memcpy(&v, &d, sizeof(v));
	return v;
}

static inline bool f32_isnan(uint32_t a)
{
	return (a & ~F32_SIGN) > F32_INF;
}

static inline bool f32_issnan(uint32_t a)
{
	return f32_isnan(a) && !(a & F32_QUIET);
}

static inline bool f64_isnan(uint64_t a)
{
	return (a & ~F64_SIGN) > F64_INF;
}

static inline bool f64_issnan(uint64_t a)
{
	return f64_isnan(a) && !(a & F64_QUIET);
}

/* NaN, infinity or zero: the operands whose results need no rounding. */
static inline bool f64_special(uint64_t a)
{
	return (a & F64_INF) == F64_INF || !(a << 1);
}

static inline uint32_t f32_canon(uint32_t v)
{
	return f32_isnan(v) ? F32_CANON_NAN : v;
}

static inline uint64_t f64_canon(uint64_t v)
{
	return f64_isnan(v) ? F64_CANON_NAN : v;
}

/* Exact single -> double on the bit patterns; a signalling NaN stays signalling, so a
 * double operation on it still raises invalid. */
static uint64_t f32_widen(uint32_t a)
{
	uint64_t sign = (uint64_t)(a >> 31) << 63;
	uint32_t ex = (a >> 23) & 0xff, fr = a & 0x7fffff;
	int t;

	if (ex == 0xff)
		return sign | F64_INF | (uint64_t)fr << 29;
	if (ex)
		return sign | (uint64_t)(ex - 127 + 1023) << 52 | (uint64_t)fr << 29;
	if (!fr)
		return sign;
	/* subnormal: fr * 2^-149 with its top bit at t becomes a normal double */
	t = 31 - __builtin_clz(fr);
	return sign | (uint64_t)(t - 149 + 1023) << 52 | (((uint64_t)fr << (52 - t)) & F64_FRAC);
}

/* ---- software rounding ---- */

/* Whether to add one ulp to the truncated magnitude q, given the discarded bits r of
 * which `half` is the weight of the first. */
static inline uint64_t round_inc(int rm, int sign, uint64_t q, uint64_t r, uint64_t half)
{
	switch (rm) {
	case FRM_RTZ: return 0;
	case FRM_RDN: return sign && r;
	case FRM_RUP: return !sign && r;
	case FRM_RMM: return r >= half;
	default: return r > half || (r == half && (q & 1));
	}
}

/* Rounds sign * m * 2^(e - 63) (m has bit 63 set; anything below bit 0 already jammed
 * into bit 0) to the format with p significant bits and nexp exponent bits, returning the
 * bit pattern. Tininess is detected after rounding, as on RISC-V: the value is tiny when,
 * rounded to p bits with an unbounded exponent, it is still below 2^emin; underflow is
 * raised only for a tiny inexact result. */
static inline uint64_t round_pack(int sign, int e, uint64_t m, int rm, uint32_t *fl, const int p,
				  const int nexp)
{
	const int rbits = 64 - p;
	const uint64_t rmask = (1ULL << rbits) - 1, half = 1ULL << (rbits - 1);
	const int bias = (1 << (nexp - 1)) - 1, emax = (1 << nexp) - 1;
	const uint64_t sbit = (uint64_t)sign << (p - 1 + nexp);
	const uint64_t inf = (uint64_t)emax << (p - 1);
	int be = e + bias;
	uint64_t q, r;

	if (be <= 0) {
		bool tiny = true;
		int s = 1 - be;

		if (be == 0) {
			/* just below 2^emin: not tiny if rounding to p bits carries up to it */
			q = m >> rbits;
			r = m & rmask;
			tiny = !((q + round_inc(rm, sign, q, r, half)) >> p);
		}
		m = s < 64 ? (m >> s) | ((m << (64 - s)) != 0) : 1;
		q = m >> rbits;
		r = m & rmask;
		q += round_inc(rm, sign, q, r, half);
		if (r) {
			*fl |= FFLAG_NX;
			if (tiny)
				*fl |= FFLAG_UF;
		}
		/* a carry into bit p-1 gives exponent field 1: the smallest normal */
		return sbit | q;
	}
	q = m >> rbits;
	r = m & rmask;
	q += round_inc(rm, sign, q, r, half);
	if (q >> p) {
		q >>= 1;
		be++;
	}
	if (be >= emax) {
		bool to_inf;

		*fl |= FFLAG_OF | FFLAG_NX;
		switch (rm) {
		case FRM_RTZ: to_inf = false; break;
		case FRM_RDN: to_inf = sign; break;
		case FRM_RUP: to_inf = !sign; break;
		default: to_inf = true; break;
		}
		return sbit | (to_inf ? inf : inf - 1);
	}
	if (r)
		*fl |= FFLAG_NX;
	return sbit | ((uint64_t)be << (p - 1)) | (q & ((1ULL << (p - 1)) - 1));
}

static inline uint32_t round_pack32(int sign, int e, uint64_t m, int rm, uint32_t *fl)
{
	return (uint32_t)round_pack(sign, e, m, rm, fl, 24, 8);
}

static inline uint64_t round_pack64(int sign, int e, uint64_t m, int rm, uint32_t *fl)
{
	return round_pack(sign, e, m, rm, fl, 53, 11);
}

/* A finite nonzero double as m * 2^(e - 63) with bit 63 of m set. */
static inline void unpack64(uint64_t a, int *e, uint64_t *m)
{
	int ex = (a >> 52) & 0x7ff;
	uint64_t fr = a & F64_FRAC;

	if (ex) {
		*e = ex - 1023;
		*m = (fr | (1ULL << 52)) << 11;
	} else {
		int lz = __builtin_clzll(fr);

		*e = -1074 + 63 - lz;
		*m = fr << lz;
	}
}

/* Double -> single with every rounding mode; NaN becomes the canonical NaN. */
static uint32_t f64_to_f32_soft(uint64_t a, int rm, uint32_t *fl)
{
	int sign = a >> 63, e;
	uint64_t m;

	if ((a & F64_INF) == F64_INF) {
		if (!(a & F64_FRAC))
			return (uint32_t)sign << 31 | F32_INF;
		if (!(a & F64_QUIET))
			*fl |= FFLAG_NV;
		return F32_CANON_NAN;
	}
	if (!(a << 1))
		return (uint32_t)sign << 31;
	unpack64(a, &e, &m);
	return round_pack32(sign, e, m, rm, fl);
}

static inline u128 shr128_jam(u128 x, int d)
{
	if (d == 0)
		return x;
	if (d >= 128)
		return x != 0;
	return (x >> d) | ((x << (128 - d)) != 0);
}

static inline int clz128(u128 x)
{
	uint64_t hi = (uint64_t)(x >> 64);

	return hi ? __builtin_clzll(hi) : 64 + __builtin_clzll((uint64_t)x);
}

/* Rounds sign * S * 2^(e0 - 127) for a nonzero 128-bit S. */
static uint64_t norm_round_pack64(int sign, int e0, u128 s, int rm, uint32_t *fl)
{
	int lz = clz128(s);

	s <<= lz;
	return round_pack64(sign, e0 - lz, (uint64_t)(s >> 64) | ((uint64_t)s != 0), rm, fl);
}

/* The sign of an exact zero sum: -0 only when rounding down (IEEE 754 6.3). */
static inline uint64_t f64_zero_sum(int rm)
{
	return rm == FRM_RDN ? F64_SIGN : 0;
}

/* a + b for finite nonzero a and b. The smaller operand is shifted with its lost bits
 * jammed; in a subtraction that needs them (a shift of more than 73) the result keeps
 * more than 120 bits, far above the jam, so it rounds as the exact value would. */
static uint64_t soft64_add(uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	int sa = a >> 63, sb = b >> 63, ea, eb;
	uint64_t ma, mb;
	u128 x, y, s;

	unpack64(a, &ea, &ma);
	unpack64(b, &eb, &mb);
	if (ea < eb || (ea == eb && ma < mb)) {
		int t = ea;
		uint64_t u = ma;

		ea = eb;
		eb = t;
		ma = mb;
		mb = u;
		t = sa;
		sa = sb;
		sb = t;
	}
	/* top bit at 125: room for the carry */
	x = (u128)ma << 62;
	y = shr128_jam((u128)mb << 62, ea - eb);
	s = sa == sb ? x + y : x - y;
	if (!s)
		return f64_zero_sum(rm);
	return norm_round_pack64(sa, ea + 2, s, rm, fl);
}

static uint64_t soft64_mul(uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	int ea, eb;
	uint64_t ma, mb;

	unpack64(a, &ea, &ma);
	unpack64(b, &eb, &mb);
	/* ma * mb * 2^(ea + eb - 126), exact in 128 bits */
	return norm_round_pack64((a ^ b) >> 63, ea + eb + 1, (u128)ma * mb, rm, fl);
}

static uint64_t soft64_div(uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	int ea, eb, e;
	uint64_t ma, mb, q;
	u128 n;

	unpack64(a, &ea, &ma);
	unpack64(b, &eb, &mb);
	/* a 64-bit quotient in [2^63, 2^64): 53 bits plus 11 to round, the rest sticky */
	e = ea - eb;
	if (ma >= mb) {
		n = (u128)ma << 63;
	} else {
		n = (u128)ma << 64;
		e--;
	}
	q = (uint64_t)(n / mb);
	q |= (uint64_t)(n % mb) != 0;
	return round_pack64((a ^ b) >> 63, e, q, rm, fl);
}

/* a * b + c for finite nonzero a, b, c. The exact product has at most 106 bits; the
 * operand of smaller magnitude is shifted with jamming as in soft64_add (lost bits only
 * when the shift exceeds 21 bits for the product or 74 for c, which leaves the sum at
 * least 53 + 2 bits above the jam). */
static uint64_t soft64_fma(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
	int sp = (a ^ b) >> 63, sc = c >> 63, ea, eb, ec, ep;
	uint64_t ma, mb, mc;
	u128 p, x;

	unpack64(a, &ea, &ma);
	unpack64(b, &eb, &mb);
	unpack64(c, &ec, &mc);
	/* both with the top bit at 126 and its exponent in ep / ec */
	p = (u128)ma * mb;
	ep = ea + eb;
	if (p >> 127)
		ep++;
	else
		p <<= 1;
	p >>= 1;
	x = (u128)mc << 63;
	if (ep < ec || (ep == ec && p < x)) {
		u128 t = p;
		int u = ep;

		p = x;
		x = t;
		ep = ec;
		ec = u;
		u = sp;
		sp = sc;
		sc = u;
	}
	x = shr128_jam(x, ep - ec);
	p = sp == sc ? p + x : p - x;
	if (!p)
		return f64_zero_sum(rm);
	return norm_round_pack64(sp, ep + 1, p, rm, fl);
}

/* fma when some operand is NaN, infinite or zero, or a*b is zero: no rounding needed
 * except for a nonzero finite a*b with c = 0. Invalid exactly as SoftFloat: any
 * signalling NaN, inf * 0 (even when c is a quiet NaN), inf - inf. */
static uint64_t soft64_fma_special(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
	bool ainf = (a << 1) == F64_INF << 1, binf = (b << 1) == F64_INF << 1;
	bool azero = !(a << 1), bzero = !(b << 1);
	int sp = (a ^ b) >> 63;

	if (f64_issnan(a) || f64_issnan(b) || f64_issnan(c))
		*fl |= FFLAG_NV;
	if ((ainf && bzero) || (azero && binf)) {
		*fl |= FFLAG_NV;
		return F64_CANON_NAN;
	}
	if (f64_isnan(a) || f64_isnan(b) || f64_isnan(c))
		return F64_CANON_NAN;
	if (ainf || binf) {
		if ((c << 1) == F64_INF << 1 && (c >> 63) != (uint64_t)sp) {
			*fl |= FFLAG_NV;
			return F64_CANON_NAN;
		}
		return (uint64_t)sp << 63 | F64_INF;
	}
	if ((c << 1) == F64_INF << 1)
		return c;
	if (azero || bzero) {
		/* exact signed zero product plus c */
		if (c << 1)
			return c;
		return (c >> 63) == (uint64_t)sp ? c : f64_zero_sum(rm);
	}
	/* c is zero and a * b nonzero: the rounded product (its sign, even if it underflows) */
	return soft64_mul(a, b, rm, fl);
}

static uint64_t soft64_fma_any(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
	if (f64_special(a) || f64_special(b) || f64_special(c))
		return soft64_fma_special(a, b, c, rm, fl);
	return soft64_fma(a, b, c, rm, fl);
}

/* ---- the host floating-point environment ---- */

#if FPU_HOST_SSE
/* All exceptions masked, round to nearest, no flush-to-zero or denormals-are-zero: the
 * state the host code runs in, which every operation leaves behind. */
#define MXCSR_DEFAULT 0x1f80U

/* RISC-V rm -> MXCSR rounding control (bits 13-14: 0 nearest, 1 down, 2 up, 3 zero). */
static const uint32_t mxcsr_rc[8] = { 0 << 13, 3 << 13, 1 << 13, 2 << 13 };

static inline void host_begin(int rm)
{
	uint32_t v = MXCSR_DEFAULT | mxcsr_rc[rm & 7];

	asm volatile("ldmxcsr %0" : : "m"(v) : "memory");
}

/* The flags raised since host_begin, as fflags bits; rounding back to nearest. */
static inline uint32_t host_end(int rm)
{
	uint32_t v;

	asm volatile("stmxcsr %0" : "=m"(v) : : "memory");
	if (rm != FRM_RNE) {
		uint32_t d = MXCSR_DEFAULT;

		asm volatile("ldmxcsr %0" : : "m"(d) : "memory");
	}
	/* IE(0)->NV, ZE(2)->DZ, OE(3)->OF, UE(4)->UF, PE(5)->NX; DE(1) has no RISC-V twin */
	return ((v & 1) << 4) | ((v & 4) << 1) | ((v >> 1) & 4) | ((v >> 3) & 2) | ((v >> 5) & 1);
}

/* Pins a value to a register at this point, so the compiler can neither fold an
 * operation nor move it across the MXCSR accesses (which -frounding-math alone does not
 * promise). */
#define HOST_PIN(x) asm volatile("" : "+x"(x) : : "memory")

static inline float host_sqrtf(float x)
{
	float r;

	asm volatile("sqrtss %1, %0" : "=x"(r) : "x"(x));
	return r;
}

static inline double host_sqrt(double x)
{
	double r;

	asm volatile("sqrtsd %1, %0" : "=x"(r) : "x"(x));
	return r;
}
#else
static const int fenv_rc[8] = { FE_TONEAREST, FE_TOWARDZERO, FE_DOWNWARD,  FE_UPWARD,
				FE_TONEAREST, FE_TONEAREST,  FE_TONEAREST, FE_TONEAREST };

static inline void host_begin(int rm)
{
	feclearexcept(FE_ALL_EXCEPT);
	if (rm != FRM_RNE)
		fesetround(fenv_rc[rm & 7]);
}

static inline uint32_t host_end(int rm)
{
	int x = fetestexcept(FE_ALL_EXCEPT);

	if (rm != FRM_RNE)
		fesetround(FE_TONEAREST);
	return (x & FE_INVALID ? FFLAG_NV : 0) | (x & FE_DIVBYZERO ? FFLAG_DZ : 0) |
	       (x & FE_OVERFLOW ? FFLAG_OF : 0) | (x & FE_UNDERFLOW ? FFLAG_UF : 0) |
	       (x & FE_INEXACT ? FFLAG_NX : 0);
}

/* Through memory, with a memory clobber: ordered against the fenv calls. */
#define HOST_PIN(x) asm volatile("" : "+m"(x) : : "memory")

static inline float host_sqrtf(float x)
{
	return sqrtf(x);
}

static inline double host_sqrt(double x)
{
	return sqrt(x);
}
#endif

/* One single-precision operation on the host in mode rm (not RMM). */
static inline uint32_t host32_op(int op, uint32_t a, uint32_t b, int rm, uint32_t *fl)
{
	float x = f32_val(a), y = f32_val(b), r;

	host_begin(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	switch (op) {
	case OP_ADD: r = x + y; break;
	case OP_SUB: r = x - y; break;
	case OP_MUL: r = x * y; break;
	case OP_DIV: r = x / y; break;
	default: r = host_sqrtf(x); break;
	}
	HOST_PIN(r);
	*fl |= host_end(rm);
	return f32_canon(f32_raw(r));
}

/* One double-precision operation on the host in mode rm (not RMM). */
static inline uint64_t host64_op(int op, uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	double x = f64_val(a), y = f64_val(b), r;

	host_begin(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	switch (op) {
	case OP_ADD: r = x + y; break;
	case OP_SUB: r = x - y; break;
	case OP_MUL: r = x * y; break;
	case OP_DIV: r = x / y; break;
	default: r = host_sqrt(x); break;
	}
	HOST_PIN(r);
	*fl |= host_end(rm);
	return f64_canon(f64_raw(r));
}

/* A single-precision operation (OP_* or fma when op < 0) computed in double rounded to
 * odd, then rounded to single in software: exact in every mode (see the top). Invalid
 * and divide-by-zero come from the host; the double result is never tiny nor overflows,
 * so the other flags come from the final rounding. */
static uint32_t f32_via_f64(int op, uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl)
{
	double x = f64_val(f32_widen(a)), y = f64_val(f32_widen(b));
	double z = f64_val(f32_widen(c)), r;
	uint32_t f;
	uint64_t v;

	host_begin(FRM_RTZ);
	HOST_PIN(x);
	HOST_PIN(y);
	HOST_PIN(z);
	switch (op) {
	case OP_ADD: r = x + y; break;
	case OP_SUB: r = x - y; break;
	case OP_MUL: r = x * y; break;
	case OP_DIV: r = x / y; break;
	case OP_SQRT: r = host_sqrt(x); break;
	default:
		/* the product of two singles is exact in double */
		r = x * y;
		HOST_PIN(r);
		r = r + z;
		break;
	}
	HOST_PIN(r);
	f = host_end(FRM_RTZ);
	v = f64_raw(r);
	if (f & FFLAG_NX)
		v |= 1;
	if (unlikely(v == 0 && rm == FRM_RDN && op != OP_MUL && op != OP_DIV && op != OP_SQRT)) {
		/* an exact zero sum: RTZ made it +0, RDN wants -0 unless both addends are +0 */
		uint64_t ra = f64_raw(x), rb = f64_raw(y) ^ (op == OP_SUB ? F64_SIGN : 0);

		if (op < 0) {
			/* the product is a zero of sign a^b when a or b is zero (no underflow) */
			ra = !(ra << 1) || !(rb << 1) ? (ra ^ rb) & F64_SIGN : F64_SIGN;
			rb = f64_raw(z);
		}
		v = ra || rb ? F64_SIGN : 0;
	}
	*fl |= f & (FFLAG_NV | FFLAG_DZ);
	return f64_to_f32_soft(v, rm, fl);
}

/* ---- fused multiply-add ---- */

#if FPU_HOST_SSE
static bool host_has_fma, host_has_avx512;

/* FPU_NO_HOST_FMA / FPU_NO_HOST_AVX512 let the tests exercise the fallbacks. */
__attribute__((constructor)) static void fpu_detect(void)
{
	__builtin_cpu_init();
#ifndef FPU_NO_HOST_FMA
	host_has_fma = __builtin_cpu_supports("fma");
#ifndef FPU_NO_HOST_AVX512
	host_has_avx512 = host_has_fma && __builtin_cpu_supports("avx512f");
#endif
#endif
}

/* vfmadd in the given mode; rounds once and raises the flags as IEEE 754 says. */
__attribute__((target("fma"))) static uint32_t host32_fma(uint32_t a, uint32_t b, uint32_t c,
							  int rm, uint32_t *fl)
{
	float x = f32_val(a), y = f32_val(b), z = f32_val(c), r;

	host_begin(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	HOST_PIN(z);
	r = __builtin_fmaf(x, y, z);
	HOST_PIN(r);
	*fl |= host_end(rm);
	return f32_raw(r);
}

__attribute__((target("fma"))) static uint64_t host64_fma(uint64_t a, uint64_t b, uint64_t c,
							  int rm, uint32_t *fl)
{
	double x = f64_val(a), y = f64_val(b), z = f64_val(c), r;

	host_begin(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	HOST_PIN(z);
	r = __builtin_fma(x, y, z);
	HOST_PIN(r);
	*fl |= host_end(rm);
	return f64_raw(r);
}
#endif

/* SoftFloat raises invalid for inf * 0 even when c is a quiet NaN, where IEEE 754 leaves
 * it to the implementation; the host's answer is replaced whenever the result is NaN. */
static inline bool inf_times_zero32(uint32_t a, uint32_t b)
{
	return ((a << 1) == F32_INF << 1 && !(b << 1)) || (!(a << 1) && (b << 1) == F32_INF << 1);
}

/* fma with the flags read from the host (or computed in software): exact in all cases. */
static uint32_t fma32_exact(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (host_has_fma && rm != FRM_RMM) {
		uint32_t r = host32_fma(a, b, c, rm, fl);

		if (unlikely(f32_isnan(r))) {
			if (inf_times_zero32(a, b))
				*fl |= FFLAG_NV;
			return F32_CANON_NAN;
		}
		return r;
	}
#endif
	/* the double product never rounds, so inf * 0 raises invalid there whatever c is */
	return f32_via_f64(-1, a, b, c, rm, fl);
}

static uint64_t fma64_exact(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (host_has_fma && rm != FRM_RMM) {
		uint64_t r = host64_fma(a, b, c, rm, fl);

		if (unlikely(f64_isnan(r))) {
			if (((a << 1) == F64_INF << 1 && !(b << 1)) ||
			    (!(a << 1) && (b << 1) == F64_INF << 1))
				*fl |= FFLAG_NV;
			return F64_CANON_NAN;
		}
		return r;
	}
#endif
	return soft64_fma_any(a, b, c, rm, fl);
}

/* ---- x86 fast paths ----
 *
 * Reading MXCSR right after an operation that newly set a flag stalls for about a hundred
 * cycles, more than a software implementation costs, so the common cases never read it.
 * The operation runs in the guest's mode (MXCSR is written only for a directed mode and
 * set back to nearest right after), and the flags follow from the operands, the result
 * and an exact test of inexactness:
 *  - a finite result strictly between the smallest normal and the largest finite number
 *    can carry nothing but NX: an overflow gives inf or (rounding inwards) MAX, a result
 *    above 2^emin was not tiny (rounding is monotone), invalid gives NaN, and /0 gives inf;
 *  - exact results, zeros from 0 * x, 0 / x, x / inf and any sum raise nothing (sums of
 *    floats are multiples of the subnormal spacing, so a tiny sum is exact);
 *  - inexactness is the nonzero error of the sum by Fast2Sum in nearest mode, of the
 *    product / quotient / root by one fma (exact while the exponent conditions keep the
 *    error above the subnormal grid), in double for singles (whose products are exact
 *    there), and for fma the RDN and RUP results differing.
 * Everything else (NaN, infinities, tiny or huge results) takes the exact path above. */
#if FPU_HOST_SSE
#define F32_MIN_NORM 0x00800000U
#define F32_MAX 0x7f7fffffU
#define F64_MIN_NORM 0x0010000000000000ULL
#define F64_MAX 0x7fefffffffffffffULL

/* |v| strictly between the smallest normal and the largest finite value */
static inline bool mid32(uint32_t v)
{
	return (v & ~F32_SIGN) - F32_MIN_NORM - 1 < F32_MAX - F32_MIN_NORM - 1;
}

static inline bool mid64(uint64_t v)
{
	return (v & ~F64_SIGN) - F64_MIN_NORM - 1 < F64_MAX - F64_MIN_NORM - 1;
}

/* Sets only the rounding mode that matters here; the flags are not read on these paths. */
static inline void host_round(int rm)
{
	uint32_t v = MXCSR_DEFAULT | mxcsr_rc[rm & 7];

	asm volatile("ldmxcsr %0" : : "m"(v) : "memory");
}

static uint32_t fast32_add(uint32_t a, uint32_t b, int rm, uint32_t *fl)
{
	float x = f32_val(a), y = f32_val(b), r, s, big, small;
	uint32_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	r = x + y;
	HOST_PIN(r);
	s = r;
	if (rm != FRM_RNE) {
		host_round(FRM_RNE);
		HOST_PIN(x);
		HOST_PIN(y);
		s = x + y;
	}
	v = f32_raw(r);
	if (unlikely((v & ~F32_SIGN) >= F32_MAX))
		return host32_op(OP_ADD, a, b, rm, fl);
	if ((a & ~F32_SIGN) >= (b & ~F32_SIGN)) {
		big = x;
		small = y;
	} else {
		big = y;
		small = x;
	}
	/* Fast2Sum: the nearest sum s misses exactly small - (s - big) */
	if (small - (s - big) != 0)
		*fl |= FFLAG_NX;
	return v;
}

static uint32_t fast32_mul(uint32_t a, uint32_t b, int rm, uint32_t *fl)
{
	float x = f32_val(a), y = f32_val(b), r;
	uint32_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	r = x * y;
	HOST_PIN(r);
	if (rm != FRM_RNE)
		host_round(FRM_RNE);
	v = f32_raw(r);
	if (likely(mid32(v))) {
		if ((double)r != (double)x * (double)y)
			*fl |= FFLAG_NX;
		return v;
	}
	if (!(v << 1) && (!(a << 1) || !(b << 1)))
		return v;
	return host32_op(OP_MUL, a, b, rm, fl);
}

static uint32_t fast32_div(uint32_t a, uint32_t b, int rm, uint32_t *fl)
{
	float x = f32_val(a), y = f32_val(b), r;
	uint32_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	r = x / y;
	HOST_PIN(r);
	if (rm != FRM_RNE)
		host_round(FRM_RNE);
	v = f32_raw(r);
	if (likely(mid32(v))) {
		if ((double)r * (double)y != (double)x)
			*fl |= FFLAG_NX;
		return v;
	}
	if (!(v << 1) && (!(a << 1) || (b & ~F32_SIGN) == F32_INF))
		return v;
	return host32_op(OP_DIV, a, b, rm, fl);
}

static uint32_t fast32_sqrt(uint32_t a, int rm, uint32_t *fl)
{
	float x = f32_val(a), r;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	r = host_sqrtf(x);
	HOST_PIN(r);
	if (rm != FRM_RNE)
		host_round(FRM_RNE);
	if (likely(a - 1 < F32_INF - 1)) {
		/* positive finite: the root is normal */
		if ((double)r * (double)r != (double)x)
			*fl |= FFLAG_NX;
		return f32_raw(r);
	}
	if (!(a << 1) || a == F32_INF)
		return a;
	return host32_op(OP_SQRT, a, 0, rm, fl);
}

__attribute__((target("fma"))) static uint32_t fast32_fma(uint32_t a, uint32_t b, uint32_t c,
							  int rm, uint32_t *fl)
{
	float x = f32_val(a), y = f32_val(b), z = f32_val(c), r;
	double p, t, u, e;
	uint32_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	HOST_PIN(z);
	r = __builtin_fmaf(x, y, z);
	HOST_PIN(r);
	if (rm != FRM_RNE) {
		host_round(FRM_RNE);
		HOST_PIN(x);
		HOST_PIN(y);
		HOST_PIN(z);
	}
	v = f32_raw(r);
	/* a * b + c = t + e exactly: the product is exact in double, then TwoSum */
	p = (double)x * (double)y;
	t = p + (double)z;
	u = t - p;
	e = (p - (t - u)) + ((double)z - u);
	if (t == (double)r && e == 0)
		return v;
	if (likely(mid32(v))) {
		*fl |= FFLAG_NX;
		return v;
	}
	return fma32_exact(a, b, c, rm, fl);
}

static uint64_t fast64_add(uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	double x = f64_val(a), y = f64_val(b), r, s, big, small;
	uint64_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	r = x + y;
	HOST_PIN(r);
	s = r;
	if (rm != FRM_RNE) {
		host_round(FRM_RNE);
		HOST_PIN(x);
		HOST_PIN(y);
		s = x + y;
	}
	v = f64_raw(r);
	if (unlikely((v & ~F64_SIGN) >= F64_MAX))
		return host64_op(OP_ADD, a, b, rm, fl);
	if ((a & ~F64_SIGN) >= (b & ~F64_SIGN)) {
		big = x;
		small = y;
	} else {
		big = y;
		small = x;
	}
	if (small - (s - big) != 0)
		*fl |= FFLAG_NX;
	return v;
}

/* The fma-based tests below hold when the result's exponent field is at least 55
 * (= 53 + 2): then x*y - r and x - r*y are multiples of a power of two at or above the
 * subnormal spacing and below 2^53 of it, so representable, and fma returns them. */
#define F64_CHECK_EXP (55ULL << 52)

__attribute__((target("fma"))) static uint64_t fast64_mul(uint64_t a, uint64_t b, int rm,
							  uint32_t *fl)
{
	double x = f64_val(a), y = f64_val(b), r;
	uint64_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	r = x * y;
	HOST_PIN(r);
	if (rm != FRM_RNE)
		host_round(FRM_RNE);
	v = f64_raw(r);
	if (likely((v & ~F64_SIGN) >= F64_CHECK_EXP && (v & ~F64_SIGN) < F64_MAX)) {
		if (__builtin_fma(x, y, -r) != 0)
			*fl |= FFLAG_NX;
		return v;
	}
	if (!(v << 1) && (!(a << 1) || !(b << 1)))
		return v;
	return host64_op(OP_MUL, a, b, rm, fl);
}

__attribute__((target("fma"))) static uint64_t fast64_div(uint64_t a, uint64_t b, int rm,
							  uint32_t *fl)
{
	double x = f64_val(a), y = f64_val(b), r;
	uint64_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	r = x / y;
	HOST_PIN(r);
	if (rm != FRM_RNE)
		host_round(FRM_RNE);
	v = f64_raw(r);
	/* the remainder x - r*y: here the dividend's exponent carries the condition */
	if (likely(mid64(v) && (a & ~F64_SIGN) >= F64_CHECK_EXP)) {
		if (__builtin_fma(-r, y, x) != 0)
			*fl |= FFLAG_NX;
		return v;
	}
	if (!(v << 1) && (!(a << 1) || (b & ~F64_SIGN) == F64_INF))
		return v;
	return host64_op(OP_DIV, a, b, rm, fl);
}

__attribute__((target("fma"))) static uint64_t fast64_sqrt(uint64_t a, int rm, uint32_t *fl)
{
	double x = f64_val(a), r;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	r = host_sqrt(x);
	HOST_PIN(r);
	if (rm != FRM_RNE)
		host_round(FRM_RNE);
	/* positive finite with an exponent field of at least 2 * 53 + 2: r*r - x is then a
	 * nonzero multiple of at least 2^(emin+2) unless it is zero */
	if (likely(a >= (108ULL << 52) && a < F64_INF)) {
		if (__builtin_fma(r, r, -x) != 0)
			*fl |= FFLAG_NX;
		return f64_raw(r);
	}
	if (!(a << 1) || a == F64_INF)
		return a;
	return host64_op(OP_SQRT, a, 0, rm, fl);
}

__attribute__((target("fma"))) static uint64_t fast64_fma(uint64_t a, uint64_t b, uint64_t c,
							  int rm, uint32_t *fl)
{
	double x = f64_val(a), y = f64_val(b), z = f64_val(c), r, rd, ru;
	uint64_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	HOST_PIN(y);
	HOST_PIN(z);
	r = __builtin_fma(x, y, z);
	HOST_PIN(r);
	/* exact iff rounding down and up agree */
	host_round(FRM_RDN);
	HOST_PIN(x);
	HOST_PIN(y);
	HOST_PIN(z);
	rd = __builtin_fma(x, y, z);
	HOST_PIN(rd);
	host_round(FRM_RUP);
	HOST_PIN(x);
	HOST_PIN(y);
	HOST_PIN(z);
	ru = __builtin_fma(x, y, z);
	HOST_PIN(ru);
	host_round(FRM_RNE);
	v = f64_raw(r);
	if (rd == ru)
		return v;
	if (likely(mid64(v))) {
		*fl |= FFLAG_NX;
		return v;
	}
	return fma64_exact(a, b, c, rm, fl);
}

/* The same with AVX-512's per-instruction rounding, which neither reads nor writes MXCSR
 * (SAE: no flags either), so it needs no ordering against it. */
#define FMA_SD(x, y, z, mode) _mm_cvtsd_f64(_mm_fmadd_round_sd(x, y, z, (mode) | _MM_FROUND_NO_EXC))

__attribute__((target("avx512f,fma"))) static uint64_t
fast64_fma_avx512(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
	__m128d x = _mm_set_sd(f64_val(a)), y = _mm_set_sd(f64_val(b)), z = _mm_set_sd(f64_val(c));
	double r;
	uint64_t v;

	switch (rm) {
	case FRM_RTZ: r = FMA_SD(x, y, z, _MM_FROUND_TO_ZERO); break;
	case FRM_RDN: r = FMA_SD(x, y, z, _MM_FROUND_TO_NEG_INF); break;
	case FRM_RUP: r = FMA_SD(x, y, z, _MM_FROUND_TO_POS_INF); break;
	default: r = FMA_SD(x, y, z, _MM_FROUND_TO_NEAREST_INT); break;
	}
	v = f64_raw(r);
	if (FMA_SD(x, y, z, _MM_FROUND_TO_NEG_INF) == FMA_SD(x, y, z, _MM_FROUND_TO_POS_INF))
		return v;
	if (likely(mid64(v))) {
		*fl |= FFLAG_NX;
		return v;
	}
	return fma64_exact(a, b, c, rm, fl);
}

static uint32_t fast_f64_to_f32(uint64_t a, int rm, uint32_t *fl)
{
	double x = f64_val(a);
	float r;
	uint32_t v;

	if (rm != FRM_RNE)
		host_round(rm);
	HOST_PIN(x);
	r = (float)x;
	HOST_PIN(r);
	if (rm != FRM_RNE)
		host_round(FRM_RNE);
	v = f32_raw(r);
	if (likely(mid32(v))) {
		if ((double)r != x)
			*fl |= FFLAG_NX;
		return v;
	}
	if (!(v << 1) && !(a << 1))
		return v;
	x = f64_val(a);
	host_begin(rm);
	HOST_PIN(x);
	r = (float)x;
	HOST_PIN(r);
	*fl |= host_end(rm);
	return f32_canon(f32_raw(r));
}
#endif

static uint32_t fma32(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (host_has_fma && rm != FRM_RMM)
		return fast32_fma(a, b, c, rm, fl);
#endif
	return fma32_exact(a, b, c, rm, fl);
}

static uint64_t fma64(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (likely(host_has_avx512 && rm != FRM_RMM))
		return fast64_fma_avx512(a, b, c, rm, fl);
	if (host_has_fma && rm != FRM_RMM)
		return fast64_fma(a, b, c, rm, fl);
#endif
	return fma64_exact(a, b, c, rm, fl);
}

/* ---- single precision ---- */

uint32_t f32_add(uint32_t a, uint32_t b, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (likely(rm != FRM_RMM))
		return fast32_add(a, b, rm, fl);
#endif
	return f32_via_f64(OP_ADD, a, b, 0, rm, fl);
}

uint32_t f32_sub(uint32_t a, uint32_t b, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (likely(rm != FRM_RMM))
		return fast32_add(a, b ^ F32_SIGN, rm, fl);
#endif
	return f32_via_f64(OP_SUB, a, b, 0, rm, fl);
}

uint32_t f32_mul(uint32_t a, uint32_t b, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (likely(rm != FRM_RMM))
		return fast32_mul(a, b, rm, fl);
#endif
	return f32_via_f64(OP_MUL, a, b, 0, rm, fl);
}

uint32_t f32_div(uint32_t a, uint32_t b, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (likely(rm != FRM_RMM))
		return fast32_div(a, b, rm, fl);
#endif
	return f32_via_f64(OP_DIV, a, b, 0, rm, fl);
}

uint32_t f32_sqrt(uint32_t a, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	/* no ties in sqrt: RMM is RNE */
	return fast32_sqrt(a, rm == FRM_RMM ? FRM_RNE : rm, fl);
#else
	return f32_via_f64(OP_SQRT, a, 0, 0, rm, fl);
#endif
}

uint32_t f32_madd(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl)
{
	return fma32(a, b, c, rm, fl);
}

uint32_t f32_msub(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl)
{
	return fma32(a, b, c ^ F32_SIGN, rm, fl);
}

uint32_t f32_nmsub(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl)
{
	return fma32(a ^ F32_SIGN, b, c, rm, fl);
}

uint32_t f32_nmadd(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl)
{
	return fma32(a ^ F32_SIGN, b, c ^ F32_SIGN, rm, fl);
}

/* Total order of non-NaN values with -0 < +0, on the bit patterns. */
static inline bool f32_before(uint32_t a, uint32_t b)
{
	if ((a ^ b) >> 31)
		return a >> 31;
	return a != b && ((a < b) ^ (a >> 31));
}

uint32_t f32_min(uint32_t a, uint32_t b, uint32_t *fl)
{
	if (unlikely(f32_isnan(a) || f32_isnan(b))) {
		if (f32_issnan(a) || f32_issnan(b))
			*fl |= FFLAG_NV;
		if (f32_isnan(a) && f32_isnan(b))
			return F32_CANON_NAN;
		return f32_isnan(a) ? b : a;
	}
	return f32_before(b, a) ? b : a;
}

uint32_t f32_max(uint32_t a, uint32_t b, uint32_t *fl)
{
	if (unlikely(f32_isnan(a) || f32_isnan(b))) {
		if (f32_issnan(a) || f32_issnan(b))
			*fl |= FFLAG_NV;
		if (f32_isnan(a) && f32_isnan(b))
			return F32_CANON_NAN;
		return f32_isnan(a) ? b : a;
	}
	return f32_before(a, b) ? b : a;
}

int f32_eq(uint32_t a, uint32_t b, uint32_t *fl)
{
	if (unlikely(f32_isnan(a) || f32_isnan(b))) {
		if (f32_issnan(a) || f32_issnan(b))
			*fl |= FFLAG_NV;
		return 0;
	}
	return a == b || !((a | b) << 1);
}

int f32_lt(uint32_t a, uint32_t b, uint32_t *fl)
{
	if (unlikely(f32_isnan(a) || f32_isnan(b))) {
		*fl |= FFLAG_NV;
		return 0;
	}
	if ((a ^ b) >> 31)
		return (a >> 31) && ((a | b) << 1);
	return a != b && ((a < b) ^ (a >> 31));
}

int f32_le(uint32_t a, uint32_t b, uint32_t *fl)
{
	if (unlikely(f32_isnan(a) || f32_isnan(b))) {
		*fl |= FFLAG_NV;
		return 0;
	}
	if ((a ^ b) >> 31)
		return (a >> 31) || !((a | b) << 1);
	return a == b || ((a < b) ^ (a >> 31));
}

uint32_t f32_classify(uint32_t a)
{
	uint32_t sign = a >> 31, ex = (a >> 23) & 0xff, fr = a & 0x7fffff;

	if (ex == 0xff) {
		if (fr)
			return fr & F32_QUIET ? 1U << 9 : 1U << 8;
		return sign ? 1U << 0 : 1U << 7;
	}
	if (!ex) {
		if (!fr)
			return sign ? 1U << 3 : 1U << 4;
		return sign ? 1U << 2 : 1U << 5;
	}
	return sign ? 1U << 1 : 1U << 6;
}

/* ---- conversions to and from integers ---- */

/* Double (any single widens exactly) to an integer of `bits` bits, rounded per rm. Out
 * of range or NaN raises invalid only and saturates: NaN and too large to the maximum,
 * too small to the minimum (0 unsigned). A negative value that rounds to zero is fine
 * for the unsigned types. Returns the two's complement bits of the result. */
static uint64_t f64_to_int(uint64_t a, int rm, uint32_t *fl, int bits, bool is_signed)
{
	int sign = a >> 63, ex = (a >> 52) & 0x7ff, sh;
	uint64_t sig = a & F64_FRAC, mag, r = 0;
	uint64_t max = is_signed ? (1ULL << (bits - 1)) - 1 : ~0ULL >> (64 - bits);

	if (ex == 0x7ff) {
		if (sig) {
			*fl |= FFLAG_NV;
			return max;
		}
		goto invalid;
	}
	if (ex)
		sig |= 1ULL << 52;
	/* value = sig * 2^sh */
	sh = (ex ? ex : 1) - 1075;
	if (sh >= 0) {
		if (sh > 11)
			goto invalid; /* >= 2^64 */
		mag = sig << sh;
	} else if (sh > -64) {
		mag = sig >> -sh;
		r = sig << (64 + sh);
	} else {
		mag = 0;
		r = sig != 0; /* below 2^-11: nonzero, less than half */
	}
	mag += round_inc(rm, sign, mag, r, 1ULL << 63);
	if (is_signed) {
		if (mag > max + sign)
			goto invalid;
	} else if (sign ? mag != 0 : mag > max) {
		goto invalid;
	}
	if (r)
		*fl |= FFLAG_NX;
	return sign ? -mag : mag;
invalid:
	*fl |= FFLAG_NV;
	if (!sign)
		return max;
	return is_signed ? -max - 1 : 0;
}

/* 32-bit results live sign-extended in the 64-bit register */
static inline int64_t sext32(uint64_t v)
{
	return (int32_t)(uint32_t)v;
}

int64_t f32_to_i32(uint32_t a, int rm, uint32_t *fl)
{
	return sext32(f64_to_int(f32_widen(a), rm, fl, 32, true));
}

int64_t f32_to_u32(uint32_t a, int rm, uint32_t *fl)
{
	return sext32(f64_to_int(f32_widen(a), rm, fl, 32, false));
}

int64_t f32_to_i64(uint32_t a, int rm, uint32_t *fl)
{
	return (int64_t)f64_to_int(f32_widen(a), rm, fl, 64, true);
}

uint64_t f32_to_u64(uint32_t a, int rm, uint32_t *fl)
{
	return f64_to_int(f32_widen(a), rm, fl, 64, false);
}

int64_t f64_to_i32(uint64_t a, int rm, uint32_t *fl)
{
	return sext32(f64_to_int(a, rm, fl, 32, true));
}

int64_t f64_to_u32(uint64_t a, int rm, uint32_t *fl)
{
	return sext32(f64_to_int(a, rm, fl, 32, false));
}

int64_t f64_to_i64(uint64_t a, int rm, uint32_t *fl)
{
	return (int64_t)f64_to_int(a, rm, fl, 64, true);
}

uint64_t f64_to_u64(uint64_t a, int rm, uint32_t *fl)
{
	return f64_to_int(a, rm, fl, 64, false);
}

/* An integer of magnitude mag to single or double; zero is +0 in every mode. */
static inline uint64_t int_to_fp(int sign, uint64_t mag, int rm, uint32_t *fl, int p, int nexp)
{
	int lz;

	if (!mag)
		return 0;
	lz = __builtin_clzll(mag);
	return round_pack(sign, 63 - lz, mag << lz, rm, fl, p, nexp);
}

static inline uint64_t abs64(int64_t v)
{
	return v < 0 ? -(uint64_t)v : (uint64_t)v;
}

uint32_t i32_to_f32(int32_t v, int rm, uint32_t *fl)
{
	return (uint32_t)int_to_fp(v < 0, abs64(v), rm, fl, 24, 8);
}

uint32_t u32_to_f32(uint32_t v, int rm, uint32_t *fl)
{
	return (uint32_t)int_to_fp(0, v, rm, fl, 24, 8);
}

uint32_t i64_to_f32(int64_t v, int rm, uint32_t *fl)
{
	return (uint32_t)int_to_fp(v < 0, abs64(v), rm, fl, 24, 8);
}

uint32_t u64_to_f32(uint64_t v, int rm, uint32_t *fl)
{
	return (uint32_t)int_to_fp(0, v, rm, fl, 24, 8);
}

uint64_t i32_to_f64(int32_t v, int rm, uint32_t *fl)
{
	return int_to_fp(v < 0, abs64(v), rm, fl, 53, 11);
}

uint64_t u32_to_f64(uint32_t v, int rm, uint32_t *fl)
{
	return int_to_fp(0, v, rm, fl, 53, 11);
}

uint64_t i64_to_f64(int64_t v, int rm, uint32_t *fl)
{
	return int_to_fp(v < 0, abs64(v), rm, fl, 53, 11);
}

uint64_t u64_to_f64(uint64_t v, int rm, uint32_t *fl)
{
	return int_to_fp(0, v, rm, fl, 53, 11);
}

/* ---- double precision ---- */

/* add, sub, mul, div: the host where it is exact; otherwise software for finite nonzero
 * operands and the host for the rest, whose results are exact (RMM behaves as RNE). */
static inline uint64_t f64_arith(int op, uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (likely(rm != FRM_RMM)) {
		switch (op) {
		case OP_ADD: return fast64_add(a, b, rm, fl);
		case OP_SUB: return fast64_add(a, b ^ F64_SIGN, rm, fl);
		case OP_MUL:
			return host_has_fma ? fast64_mul(a, b, rm, fl)
					    : host64_op(op, a, b, rm, fl);
		default:
			return host_has_fma ? fast64_div(a, b, rm, fl)
					    : host64_op(op, a, b, rm, fl);
		}
	}
#endif
	if (f64_special(a) || f64_special(b))
		return host64_op(op, a, b, rm == FRM_RMM ? FRM_RNE : rm, fl);
	switch (op) {
	case OP_ADD: return soft64_add(a, b, rm, fl);
	case OP_SUB: return soft64_add(a, b ^ F64_SIGN, rm, fl);
	case OP_MUL: return soft64_mul(a, b, rm, fl);
	default: return soft64_div(a, b, rm, fl);
	}
}

uint64_t f64_add(uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	return f64_arith(OP_ADD, a, b, rm, fl);
}

uint64_t f64_sub(uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	return f64_arith(OP_SUB, a, b, rm, fl);
}

uint64_t f64_mul(uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	return f64_arith(OP_MUL, a, b, rm, fl);
}

uint64_t f64_div(uint64_t a, uint64_t b, int rm, uint32_t *fl)
{
	return f64_arith(OP_DIV, a, b, rm, fl);
}

uint64_t f64_sqrt(uint64_t a, int rm, uint32_t *fl)
{
	/* never tiny, so fine on any IEEE host; no ties, so RMM is RNE */
	if (rm == FRM_RMM)
		rm = FRM_RNE;
#if FPU_HOST_SSE
	if (host_has_fma)
		return fast64_sqrt(a, rm, fl);
#endif
	return host64_op(OP_SQRT, a, 0, rm, fl);
}

uint64_t f64_madd(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
	return fma64(a, b, c, rm, fl);
}

uint64_t f64_msub(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
	return fma64(a, b, c ^ F64_SIGN, rm, fl);
}

uint64_t f64_nmsub(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
	return fma64(a ^ F64_SIGN, b, c, rm, fl);
}

uint64_t f64_nmadd(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl)
{
	return fma64(a ^ F64_SIGN, b, c ^ F64_SIGN, rm, fl);
}

static inline bool f64_before(uint64_t a, uint64_t b)
{
	if ((a ^ b) >> 63)
		return a >> 63;
	return a != b && ((a < b) ^ (a >> 63));
}

uint64_t f64_min(uint64_t a, uint64_t b, uint32_t *fl)
{
	if (unlikely(f64_isnan(a) || f64_isnan(b))) {
		if (f64_issnan(a) || f64_issnan(b))
			*fl |= FFLAG_NV;
		if (f64_isnan(a) && f64_isnan(b))
			return F64_CANON_NAN;
		return f64_isnan(a) ? b : a;
	}
	return f64_before(b, a) ? b : a;
}

uint64_t f64_max(uint64_t a, uint64_t b, uint32_t *fl)
{
	if (unlikely(f64_isnan(a) || f64_isnan(b))) {
		if (f64_issnan(a) || f64_issnan(b))
			*fl |= FFLAG_NV;
		if (f64_isnan(a) && f64_isnan(b))
			return F64_CANON_NAN;
		return f64_isnan(a) ? b : a;
	}
	return f64_before(a, b) ? b : a;
}

int f64_eq(uint64_t a, uint64_t b, uint32_t *fl)
{
	if (unlikely(f64_isnan(a) || f64_isnan(b))) {
		if (f64_issnan(a) || f64_issnan(b))
			*fl |= FFLAG_NV;
		return 0;
	}
	return a == b || !((a | b) << 1);
}

int f64_lt(uint64_t a, uint64_t b, uint32_t *fl)
{
	if (unlikely(f64_isnan(a) || f64_isnan(b))) {
		*fl |= FFLAG_NV;
		return 0;
	}
	if ((a ^ b) >> 63)
		return (a >> 63) && ((a | b) << 1);
	return a != b && ((a < b) ^ (a >> 63));
}

int f64_le(uint64_t a, uint64_t b, uint32_t *fl)
{
	if (unlikely(f64_isnan(a) || f64_isnan(b))) {
		*fl |= FFLAG_NV;
		return 0;
	}
	if ((a ^ b) >> 63)
		return (a >> 63) || !((a | b) << 1);
	return a == b || ((a < b) ^ (a >> 63));
}

uint32_t f64_classify(uint64_t a)
{
	uint64_t sign = a >> 63, ex = (a >> 52) & 0x7ff, fr = a & F64_FRAC;

	if (ex == 0x7ff) {
		if (fr)
			return fr & F64_QUIET ? 1U << 9 : 1U << 8;
		return sign ? 1U << 0 : 1U << 7;
	}
	if (!ex) {
		if (!fr)
			return sign ? 1U << 3 : 1U << 4;
		return sign ? 1U << 2 : 1U << 5;
	}
	return sign ? 1U << 1 : 1U << 6;
}

/* ---- between single and double ---- */

uint64_t f32_to_f64(uint32_t a, uint32_t *fl)
{
	if (unlikely(f32_isnan(a))) {
		if (f32_issnan(a))
			*fl |= FFLAG_NV;
		return F64_CANON_NAN;
	}
	return f32_widen(a);
}

uint32_t f64_to_f32(uint64_t a, int rm, uint32_t *fl)
{
#if FPU_HOST_SSE
	if (likely(rm != FRM_RMM))
		return fast_f64_to_f32(a, rm, fl);
#endif
	return f64_to_f32_soft(a, rm, fl);
}
