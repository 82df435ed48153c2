/* IEEE 754 half precision (Zfh) with RISC-V semantics, same conventions as fpu.h: raw bit
 * patterns, resolved rounding mode, flags ORed into *fl, canonical NaN 0x7e00. */
#ifndef MABO_CPU_RISCV_FPU16_H
#define MABO_CPU_RISCV_FPU16_H

#include <stdint.h>

#define F16_CANON_NAN 0x7e00U

/* A half held in a 64-bit register: valid only when NaN-boxed (upper 48 bits all ones). */
static inline uint16_t fpu_unbox16(uint64_t r)
{
	return (r >> 16) == 0xffffffffffffULL ? (uint16_t)r : F16_CANON_NAN;
}

static inline uint64_t fpu_box16(uint16_t v)
{
	return 0xffffffffffff0000ULL | v;
}

uint16_t f16_add(uint16_t a, uint16_t b, int rm, uint32_t *fl);
uint16_t f16_sub(uint16_t a, uint16_t b, int rm, uint32_t *fl);
uint16_t f16_mul(uint16_t a, uint16_t b, int rm, uint32_t *fl);
uint16_t f16_div(uint16_t a, uint16_t b, int rm, uint32_t *fl);
uint16_t f16_sqrt(uint16_t a, int rm, uint32_t *fl);
uint16_t f16_madd(uint16_t a, uint16_t b, uint16_t c, int rm, uint32_t *fl);
uint16_t f16_msub(uint16_t a, uint16_t b, uint16_t c, int rm, uint32_t *fl);
uint16_t f16_nmsub(uint16_t a, uint16_t b, uint16_t c, int rm, uint32_t *fl);
uint16_t f16_nmadd(uint16_t a, uint16_t b, uint16_t c, int rm, uint32_t *fl);
uint16_t f16_min(uint16_t a, uint16_t b, uint32_t *fl);
uint16_t f16_max(uint16_t a, uint16_t b, uint32_t *fl);
int f16_eq(uint16_t a, uint16_t b, uint32_t *fl);
int f16_lt(uint16_t a, uint16_t b, uint32_t *fl);
int f16_le(uint16_t a, uint16_t b, uint32_t *fl);
uint32_t f16_classify(uint16_t a);
int64_t f16_to_i32(uint16_t a, int rm, uint32_t *fl);
int64_t f16_to_u32(uint16_t a, int rm, uint32_t *fl);
int64_t f16_to_i64(uint16_t a, int rm, uint32_t *fl);
uint64_t f16_to_u64(uint16_t a, int rm, uint32_t *fl);
uint16_t i32_to_f16(int32_t v, int rm, uint32_t *fl);
uint16_t u32_to_f16(uint32_t v, int rm, uint32_t *fl);
uint16_t i64_to_f16(int64_t v, int rm, uint32_t *fl);
uint16_t u64_to_f16(uint64_t v, int rm, uint32_t *fl);
uint32_t f16_to_f32(uint16_t a, uint32_t *fl);
uint64_t f16_to_f64(uint16_t a, uint32_t *fl);
uint16_t f32_to_f16(uint32_t a, int rm, uint32_t *fl);
uint16_t f64_to_f16(uint64_t a, int rm, uint32_t *fl);

#endif
