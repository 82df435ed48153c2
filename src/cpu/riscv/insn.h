/* Decoded instructions: each guest instruction is decoded once into a struct insn, and
 * blocks of them are cached by the interpreter. */
#ifndef MABO_CPU_RISCV_INSN_H
#define MABO_CPU_RISCV_INSN_H

#include <stdint.h>

/* Every operation the interpreter knows. The interpreter has one label per entry. */
/* clang-format off */
#define RV_OPS(X)                                                                              \
	X(ILLEGAL) X(END)                                                                      \
	X(LUI) X(AUIPC) X(JAL) X(JALR)                                                         \
	X(BEQ) X(BNE) X(BLT) X(BGE) X(BLTU) X(BGEU)                                            \
	X(LB) X(LH) X(LW) X(LD) X(LBU) X(LHU) X(LWU)                                           \
	X(SB) X(SH) X(SW) X(SD)                                                                \
	X(ADDI) X(SLTI) X(SLTIU) X(XORI) X(ORI) X(ANDI) X(SLLI) X(SRLI) X(SRAI)                \
	X(ADD) X(SUB) X(SLL) X(SLT) X(SLTU) X(XOR) X(SRL) X(SRA) X(OR) X(AND)                  \
	X(ADDIW) X(SLLIW) X(SRLIW) X(SRAIW) X(ADDW) X(SUBW) X(SLLW) X(SRLW) X(SRAW)            \
	X(FENCE) X(FENCE_I) X(ECALL) X(EBREAK) X(MRET) X(SRET) X(WFI) X(SFENCE_VMA)            \
	X(CSRRW) X(CSRRS) X(CSRRC) X(CSRRWI) X(CSRRSI) X(CSRRCI)                               \
	X(MUL) X(MULH) X(MULHSU) X(MULHU) X(DIV) X(DIVU) X(REM) X(REMU)                        \
	X(MULW) X(DIVW) X(DIVUW) X(REMW) X(REMUW)                                              \
	X(LR_W) X(SC_W) X(AMOSWAP_W) X(AMOADD_W) X(AMOXOR_W) X(AMOAND_W) X(AMOOR_W)            \
	X(AMOMIN_W) X(AMOMAX_W) X(AMOMINU_W) X(AMOMAXU_W)                                      \
	X(LR_D) X(SC_D) X(AMOSWAP_D) X(AMOADD_D) X(AMOXOR_D) X(AMOAND_D) X(AMOOR_D)            \
	X(AMOMIN_D) X(AMOMAX_D) X(AMOMINU_D) X(AMOMAXU_D)                                      \
	X(FLH) X(FLW) X(FLD) X(FSH) X(FSW) X(FSD)                                              \
	X(FMADD_S) X(FMSUB_S) X(FNMSUB_S) X(FNMADD_S)                                          \
	X(FADD_S) X(FSUB_S) X(FMUL_S) X(FDIV_S) X(FSQRT_S)                                     \
	X(FSGNJ_S) X(FSGNJN_S) X(FSGNJX_S) X(FMIN_S) X(FMAX_S)                                 \
	X(FCVT_W_S) X(FCVT_WU_S) X(FCVT_L_S) X(FCVT_LU_S) X(FMV_X_W)                           \
	X(FEQ_S) X(FLT_S) X(FLE_S) X(FCLASS_S)                                                 \
	X(FCVT_S_W) X(FCVT_S_WU) X(FCVT_S_L) X(FCVT_S_LU) X(FMV_W_X)                           \
	X(FMADD_D) X(FMSUB_D) X(FNMSUB_D) X(FNMADD_D)                                          \
	X(FADD_D) X(FSUB_D) X(FMUL_D) X(FDIV_D) X(FSQRT_D)                                     \
	X(FSGNJ_D) X(FSGNJN_D) X(FSGNJX_D) X(FMIN_D) X(FMAX_D)                                 \
	X(FCVT_W_D) X(FCVT_WU_D) X(FCVT_L_D) X(FCVT_LU_D) X(FMV_X_D)                           \
	X(FEQ_D) X(FLT_D) X(FLE_D) X(FCLASS_D)                                                 \
	X(FCVT_D_W) X(FCVT_D_WU) X(FCVT_D_L) X(FCVT_D_LU) X(FMV_D_X)                           \
	X(FCVT_S_D) X(FCVT_D_S)                                                                \
	X(FMADD_H) X(FMSUB_H) X(FNMSUB_H) X(FNMADD_H)                                          \
	X(FADD_H) X(FSUB_H) X(FMUL_H) X(FDIV_H) X(FSQRT_H)                                     \
	X(FSGNJ_H) X(FSGNJN_H) X(FSGNJX_H) X(FMIN_H) X(FMAX_H)                                 \
	X(FCVT_W_H) X(FCVT_WU_H) X(FCVT_L_H) X(FCVT_LU_H) X(FMV_X_H)                           \
	X(FEQ_H) X(FLT_H) X(FLE_H) X(FCLASS_H)                                                 \
	X(FCVT_H_W) X(FCVT_H_WU) X(FCVT_H_L) X(FCVT_H_LU) X(FMV_H_X)                           \
	X(FCVT_S_H) X(FCVT_H_S) X(FCVT_D_H) X(FCVT_H_D)
/* clang-format on */

enum rv_op {
#define RV_OP_ENUM(name) OP_##name,
	RV_OPS(RV_OP_ENUM)
#undef RV_OP_ENUM
		OP_COUNT
};

struct insn {
	const void *op;		   /* the interpreter's label for this operation */
	uint8_t rd, rs1, rs2, rs3; /* integer rd 0 is stored as 32, a sink */
	uint16_t pcoff;		   /* offset of this instruction from the block's start */
	uint8_t len;		   /* 2 or 4 */
	uint8_t rm;		   /* rounding mode field */
	int64_t imm;		   /* immediate, or the CSR number */
	uint32_t raw;		   /* the instruction bits (illegal-instruction tval) */
	uint16_t opc;		   /* the enum rv_op value, for the code generator */
};

/* Decodes one instruction (16-bit forms when (raw & 3) != 3) into *in (op as an enum
 * value cast to a pointer, pcoff and op label left to the caller). Returns the op. */
enum rv_op rv_decode(uint32_t raw, struct insn *in);

/* True when the op must end a block (control flow, CSR and system instructions). */
int rv_op_ends_block(enum rv_op op);

/* Integer destination x0 lives in this sink slot so writes to it are harmless. */
#define RV_X0_SINK 32

#endif
