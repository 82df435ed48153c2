/* IEEE 754 single and double arithmetic with RISC-V semantics: every rounding mode, the
 * five exception flags, canonical NaNs. Values travel as raw bit patterns; NaN-boxing of
 * singles in the 64-bit f registers is the caller's business (fpu_unbox32 / fpu_box32). */
#ifndef MABO_CPU_RISCV_FPU_H
#define MABO_CPU_RISCV_FPU_H

#include <stdint.h>

/* Rounding modes (frm / instruction rm field). The caller resolves DYN (7) from frm and
 * raises illegal-instruction for 5, 6 and an invalid frm before calling in. */
enum { FRM_RNE = 0, FRM_RTZ = 1, FRM_RDN = 2, FRM_RUP = 3, FRM_RMM = 4, FRM_DYN = 7 };

/* fflags bits, ORed into *fl by every operation that raises them. */
enum { FFLAG_NX = 1, FFLAG_UF = 2, FFLAG_OF = 4, FFLAG_DZ = 8, FFLAG_NV = 16 };

#define F32_CANON_NAN 0x7fc00000U
#define F64_CANON_NAN 0x7ff8000000000000ULL

/* A single held in a 64-bit register: valid only when NaN-boxed, else the canonical NaN. */
static inline uint32_t fpu_unbox32(uint64_t r)
{
	return (r >> 32) == 0xffffffffU ? (uint32_t)r : F32_CANON_NAN;
}

static inline uint64_t fpu_box32(uint32_t v)
{
	return 0xffffffff00000000ULL | v;
}

/* Arithmetic. fma variants compute, with one rounding:
 * madd = a*b+c, msub = a*b-c, nmsub = -(a*b)+c, nmadd = -(a*b)-c. */
uint32_t f32_add(uint32_t a, uint32_t b, int rm, uint32_t *fl);
uint32_t f32_sub(uint32_t a, uint32_t b, int rm, uint32_t *fl);
uint32_t f32_mul(uint32_t a, uint32_t b, int rm, uint32_t *fl);
uint32_t f32_div(uint32_t a, uint32_t b, int rm, uint32_t *fl);
uint32_t f32_sqrt(uint32_t a, int rm, uint32_t *fl);
uint32_t f32_madd(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl);
uint32_t f32_msub(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl);
uint32_t f32_nmsub(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl);
uint32_t f32_nmadd(uint32_t a, uint32_t b, uint32_t c, int rm, uint32_t *fl);
/* fmin/fmax (IEEE 754-2019 minimumNumber/maximumNumber; -0 < +0; NV on signalling NaN). */
uint32_t f32_min(uint32_t a, uint32_t b, uint32_t *fl);
uint32_t f32_max(uint32_t a, uint32_t b, uint32_t *fl);
/* Comparisons return 0 or 1. feq: NV only on signalling NaN; flt/fle: NV on any NaN. */
int f32_eq(uint32_t a, uint32_t b, uint32_t *fl);
int f32_lt(uint32_t a, uint32_t b, uint32_t *fl);
int f32_le(uint32_t a, uint32_t b, uint32_t *fl);
/* fclass: the 10-bit mask. */
uint32_t f32_classify(uint32_t a);
/* Conversions to integers saturate as the ISA specifies (NaN -> max positive) and raise NV;
 * results of 32-bit conversions are sign-extended to 64 bits as the register value. */
int64_t f32_to_i32(uint32_t a, int rm, uint32_t *fl);
int64_t f32_to_u32(uint32_t a, int rm, uint32_t *fl);
int64_t f32_to_i64(uint32_t a, int rm, uint32_t *fl);
uint64_t f32_to_u64(uint32_t a, int rm, uint32_t *fl);
uint32_t i32_to_f32(int32_t v, int rm, uint32_t *fl);
uint32_t u32_to_f32(uint32_t v, int rm, uint32_t *fl);
uint32_t i64_to_f32(int64_t v, int rm, uint32_t *fl);
uint32_t u64_to_f32(uint64_t v, int rm, uint32_t *fl);

uint64_t f64_add(uint64_t a, uint64_t b, int rm, uint32_t *fl);
uint64_t f64_sub(uint64_t a, uint64_t b, int rm, uint32_t *fl);
uint64_t f64_mul(uint64_t a, uint64_t b, int rm, uint32_t *fl);
uint64_t f64_div(uint64_t a, uint64_t b, int rm, uint32_t *fl);
uint64_t f64_sqrt(uint64_t a, int rm, uint32_t *fl);
uint64_t f64_madd(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl);
uint64_t f64_msub(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl);
uint64_t f64_nmsub(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl);
uint64_t f64_nmadd(uint64_t a, uint64_t b, uint64_t c, int rm, uint32_t *fl);
uint64_t f64_min(uint64_t a, uint64_t b, uint32_t *fl);
uint64_t f64_max(uint64_t a, uint64_t b, uint32_t *fl);
int f64_eq(uint64_t a, uint64_t b, uint32_t *fl);
int f64_lt(uint64_t a, uint64_t b, uint32_t *fl);
int f64_le(uint64_t a, uint64_t b, uint32_t *fl);
uint32_t f64_classify(uint64_t a);
int64_t f64_to_i32(uint64_t a, int rm, uint32_t *fl);
int64_t f64_to_u32(uint64_t a, int rm, uint32_t *fl);
int64_t f64_to_i64(uint64_t a, int rm, uint32_t *fl);
uint64_t f64_to_u64(uint64_t a, int rm, uint32_t *fl);
uint64_t i32_to_f64(int32_t v, int rm, uint32_t *fl);
uint64_t u32_to_f64(uint32_t v, int rm, uint32_t *fl);
uint64_t i64_to_f64(int64_t v, int rm, uint32_t *fl);
uint64_t u64_to_f64(uint64_t v, int rm, uint32_t *fl);

uint64_t f32_to_f64(uint32_t a, uint32_t *fl);
uint32_t f64_to_f32(uint64_t a, int rm, uint32_t *fl);

#endif
