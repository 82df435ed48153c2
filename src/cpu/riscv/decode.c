/* RV64GC (+ Zfh) decoder: 32-bit and compressed forms into struct insn. */
#include <string.h>

#include "cpu/riscv/insn.h"

static inline uint32_t bits(uint32_t v, int hi, int lo)
{
	return (v >> lo) & ((1u << (hi - lo + 1)) - 1);
}

static inline int64_t sext(uint64_t v, int width)
{
	return (int64_t)(v << (64 - width)) >> (64 - width);
}

static inline uint8_t xrd(uint32_t r)
{
	return r ? (uint8_t)r : RV_X0_SINK;
}

int rv_op_ends_block(enum rv_op op)
{
	switch (op) {
	case OP_ILLEGAL:
	case OP_END:
	case OP_JAL:
	case OP_JALR:
	case OP_BEQ:
	case OP_BNE:
	case OP_BLT:
	case OP_BGE:
	case OP_BLTU:
	case OP_BGEU:
	case OP_FENCE_I:
	case OP_ECALL:
	case OP_EBREAK:
	case OP_MRET:
	case OP_SRET:
	case OP_WFI:
	case OP_SFENCE_VMA:
	case OP_CSRRW:
	case OP_CSRRS:
	case OP_CSRRC:
	case OP_CSRRWI:
	case OP_CSRRSI:
	case OP_CSRRCI: return 1;
	default: return 0;
	}
}

static enum rv_op decode_op_fp(uint32_t raw, struct insn *in)
{
	uint32_t f7 = bits(raw, 31, 25), rm = bits(raw, 14, 12), rs2 = bits(raw, 24, 20);
	int fmt = f7 & 3; /* 0 S, 1 D, 2 H */
	if (fmt == 3)
		return OP_ILLEGAL;
#define PICK(s, d, h) (fmt == 0 ? OP_##s : fmt == 1 ? OP_##d : OP_##h)
	switch (f7 >> 2) {
	case 0x00: return PICK(FADD_S, FADD_D, FADD_H);
	case 0x01: return PICK(FSUB_S, FSUB_D, FSUB_H);
	case 0x02: return PICK(FMUL_S, FMUL_D, FMUL_H);
	case 0x03: return PICK(FDIV_S, FDIV_D, FDIV_H);
	case 0x0b:
		if (rs2)
			return OP_ILLEGAL;
		return PICK(FSQRT_S, FSQRT_D, FSQRT_H);
	case 0x04:
		if (rm == 0)
			return PICK(FSGNJ_S, FSGNJ_D, FSGNJ_H);
		if (rm == 1)
			return PICK(FSGNJN_S, FSGNJN_D, FSGNJN_H);
		if (rm == 2)
			return PICK(FSGNJX_S, FSGNJX_D, FSGNJX_H);
		return OP_ILLEGAL;
	case 0x05:
		if (rm == 0)
			return PICK(FMIN_S, FMIN_D, FMIN_H);
		if (rm == 1)
			return PICK(FMAX_S, FMAX_D, FMAX_H);
		return OP_ILLEGAL;
	case 0x08: /* fcvt between float formats: rs2 is the source format */
		if (fmt == 0 && rs2 == 1)
			return OP_FCVT_S_D;
		if (fmt == 1 && rs2 == 0)
			return OP_FCVT_D_S;
		if (fmt == 0 && rs2 == 2)
			return OP_FCVT_S_H;
		if (fmt == 2 && rs2 == 0)
			return OP_FCVT_H_S;
		if (fmt == 1 && rs2 == 2)
			return OP_FCVT_D_H;
		if (fmt == 2 && rs2 == 1)
			return OP_FCVT_H_D;
		return OP_ILLEGAL;
	case 0x14:
		in->rd = xrd(in->rd);
		if (rm == 2)
			return PICK(FEQ_S, FEQ_D, FEQ_H);
		if (rm == 1)
			return PICK(FLT_S, FLT_D, FLT_H);
		if (rm == 0)
			return PICK(FLE_S, FLE_D, FLE_H);
		return OP_ILLEGAL;
	case 0x18: /* fcvt to integer */
		in->rd = xrd(in->rd);
		switch (rs2) {
		case 0: return PICK(FCVT_W_S, FCVT_W_D, FCVT_W_H);
		case 1: return PICK(FCVT_WU_S, FCVT_WU_D, FCVT_WU_H);
		case 2: return PICK(FCVT_L_S, FCVT_L_D, FCVT_L_H);
		case 3: return PICK(FCVT_LU_S, FCVT_LU_D, FCVT_LU_H);
		}
		return OP_ILLEGAL;
	case 0x1a: /* fcvt from integer */
		switch (rs2) {
		case 0: return PICK(FCVT_S_W, FCVT_D_W, FCVT_H_W);
		case 1: return PICK(FCVT_S_WU, FCVT_D_WU, FCVT_H_WU);
		case 2: return PICK(FCVT_S_L, FCVT_D_L, FCVT_H_L);
		case 3: return PICK(FCVT_S_LU, FCVT_D_LU, FCVT_H_LU);
		}
		return OP_ILLEGAL;
	case 0x1c:
		if (rs2)
			return OP_ILLEGAL;
		in->rd = xrd(in->rd);
		if (rm == 0)
			return PICK(FMV_X_W, FMV_X_D, FMV_X_H);
		if (rm == 1)
			return PICK(FCLASS_S, FCLASS_D, FCLASS_H);
		return OP_ILLEGAL;
	case 0x1e:
		if (rs2 || rm)
			return OP_ILLEGAL;
		return PICK(FMV_W_X, FMV_D_X, FMV_H_X);
	}
#undef PICK
	return OP_ILLEGAL;
}

static enum rv_op decode32(uint32_t raw, struct insn *in)
{
	uint32_t opc = bits(raw, 6, 0), f3 = bits(raw, 14, 12), f7 = bits(raw, 31, 25);
	uint32_t rd = bits(raw, 11, 7);
	in->rd = (uint8_t)rd;
	in->rs1 = (uint8_t)bits(raw, 19, 15);
	in->rs2 = (uint8_t)bits(raw, 24, 20);
	in->rs3 = (uint8_t)bits(raw, 31, 27);
	in->rm = (uint8_t)f3;
	int64_t imm_i = (int32_t)raw >> 20;
	int64_t imm_s = (int64_t)((int32_t)raw >> 25) * 32 + bits(raw, 11, 7);
	int64_t imm_b = sext((bits(raw, 31, 31) << 12) | (bits(raw, 7, 7) << 11) |
				     (bits(raw, 30, 25) << 5) | (bits(raw, 11, 8) << 1),
			     13);
	int64_t imm_u = (int32_t)(raw & 0xfffff000u);
	int64_t imm_j = sext((bits(raw, 31, 31) << 20) | (bits(raw, 19, 12) << 12) |
				     (bits(raw, 20, 20) << 11) | (bits(raw, 30, 21) << 1),
			     21);

	switch (opc) {
	case 0x37:
		in->rd = xrd(rd);
		in->imm = imm_u;
		return OP_LUI;
	case 0x17:
		in->rd = xrd(rd);
		in->imm = imm_u;
		return OP_AUIPC;
	case 0x6f:
		in->rd = xrd(rd);
		in->imm = imm_j;
		return OP_JAL;
	case 0x67:
		if (f3)
			return OP_ILLEGAL;
		in->rd = xrd(rd);
		in->imm = imm_i;
		return OP_JALR;
	case 0x63: {
		static const enum rv_op br[8] = { OP_BEQ, OP_BNE, OP_ILLEGAL, OP_ILLEGAL,
						  OP_BLT, OP_BGE, OP_BLTU,    OP_BGEU };
		in->imm = imm_b;
		return br[f3];
	}
	case 0x03: {
		static const enum rv_op ld[8] = { OP_LB,  OP_LH,  OP_LW,  OP_LD,
						  OP_LBU, OP_LHU, OP_LWU, OP_ILLEGAL };
		in->rd = xrd(rd);
		in->imm = imm_i;
		return ld[f3];
	}
	case 0x23: {
		static const enum rv_op st[8] = { OP_SB,      OP_SH,	  OP_SW,      OP_SD,
						  OP_ILLEGAL, OP_ILLEGAL, OP_ILLEGAL, OP_ILLEGAL };
		in->imm = imm_s;
		return st[f3];
	}
	case 0x13:
		in->rd = xrd(rd);
		in->imm = imm_i;
		switch (f3) {
		case 0: return OP_ADDI;
		case 2: return OP_SLTI;
		case 3: return OP_SLTIU;
		case 4: return OP_XORI;
		case 6: return OP_ORI;
		case 7: return OP_ANDI;
		case 1:
			if (bits(raw, 31, 26))
				return OP_ILLEGAL;
			in->imm = bits(raw, 25, 20);
			return OP_SLLI;
		case 5:
			in->imm = bits(raw, 25, 20);
			if (bits(raw, 31, 26) == 0)
				return OP_SRLI;
			if (bits(raw, 31, 26) == 0x10)
				return OP_SRAI;
			return OP_ILLEGAL;
		}
		return OP_ILLEGAL;
	case 0x1b:
		in->rd = xrd(rd);
		in->imm = imm_i;
		switch (f3) {
		case 0: return OP_ADDIW;
		case 1: in->imm = bits(raw, 24, 20); return f7 == 0 ? OP_SLLIW : OP_ILLEGAL;
		case 5:
			in->imm = bits(raw, 24, 20);
			if (f7 == 0)
				return OP_SRLIW;
			if (f7 == 0x20)
				return OP_SRAIW;
			return OP_ILLEGAL;
		}
		return OP_ILLEGAL;
	case 0x33:
		in->rd = xrd(rd);
		if (f7 == 0) {
			static const enum rv_op r[8] = { OP_ADD, OP_SLL, OP_SLT, OP_SLTU,
							 OP_XOR, OP_SRL, OP_OR,	 OP_AND };
			return r[f3];
		}
		if (f7 == 0x20) {
			if (f3 == 0)
				return OP_SUB;
			if (f3 == 5)
				return OP_SRA;
			return OP_ILLEGAL;
		}
		if (f7 == 1) {
			static const enum rv_op m[8] = { OP_MUL, OP_MULH, OP_MULHSU, OP_MULHU,
							 OP_DIV, OP_DIVU, OP_REM,    OP_REMU };
			return m[f3];
		}
		return OP_ILLEGAL;
	case 0x3b:
		in->rd = xrd(rd);
		if (f7 == 0) {
			if (f3 == 0)
				return OP_ADDW;
			if (f3 == 1)
				return OP_SLLW;
			if (f3 == 5)
				return OP_SRLW;
			return OP_ILLEGAL;
		}
		if (f7 == 0x20) {
			if (f3 == 0)
				return OP_SUBW;
			if (f3 == 5)
				return OP_SRAW;
			return OP_ILLEGAL;
		}
		if (f7 == 1) {
			switch (f3) {
			case 0: return OP_MULW;
			case 4: return OP_DIVW;
			case 5: return OP_DIVUW;
			case 6: return OP_REMW;
			case 7: return OP_REMUW;
			}
		}
		return OP_ILLEGAL;
	case 0x0f:
		if (f3 == 0)
			return OP_FENCE;
		if (f3 == 1)
			return OP_FENCE_I;
		return OP_ILLEGAL;
	case 0x73:
		in->imm = bits(raw, 31, 20);
		if (f3 == 0) {
			if (rd != 0)
				return OP_ILLEGAL;
			if (f7 == 0x09)
				return OP_SFENCE_VMA;
			if (in->rs1 != 0)
				return OP_ILLEGAL;
			switch (bits(raw, 31, 20)) {
			case 0x000: return OP_ECALL;
			case 0x001: return OP_EBREAK;
			case 0x302: return OP_MRET;
			case 0x102: return OP_SRET;
			case 0x105: return OP_WFI;
			}
			return OP_ILLEGAL;
		}
		in->rd = xrd(rd);
		switch (f3) {
		case 1: return OP_CSRRW;
		case 2: return OP_CSRRS;
		case 3: return OP_CSRRC;
		case 5: return OP_CSRRWI;
		case 6: return OP_CSRRSI;
		case 7: return OP_CSRRCI;
		}
		return OP_ILLEGAL;
	case 0x2f: {
		uint32_t f5 = bits(raw, 31, 27);
		in->rd = xrd(rd);
		if (f3 != 2 && f3 != 3)
			return OP_ILLEGAL;
		int d = f3 == 3;
		switch (f5) {
		case 0x02:
			if (in->rs2)
				return OP_ILLEGAL;
			return d ? OP_LR_D : OP_LR_W;
		case 0x03: return d ? OP_SC_D : OP_SC_W;
		case 0x01: return d ? OP_AMOSWAP_D : OP_AMOSWAP_W;
		case 0x00: return d ? OP_AMOADD_D : OP_AMOADD_W;
		case 0x04: return d ? OP_AMOXOR_D : OP_AMOXOR_W;
		case 0x0c: return d ? OP_AMOAND_D : OP_AMOAND_W;
		case 0x08: return d ? OP_AMOOR_D : OP_AMOOR_W;
		case 0x10: return d ? OP_AMOMIN_D : OP_AMOMIN_W;
		case 0x14: return d ? OP_AMOMAX_D : OP_AMOMAX_W;
		case 0x18: return d ? OP_AMOMINU_D : OP_AMOMINU_W;
		case 0x1c: return d ? OP_AMOMAXU_D : OP_AMOMAXU_W;
		}
		return OP_ILLEGAL;
	}
	case 0x07:
		in->imm = imm_i;
		if (f3 == 1)
			return OP_FLH;
		if (f3 == 2)
			return OP_FLW;
		if (f3 == 3)
			return OP_FLD;
		return OP_ILLEGAL;
	case 0x27:
		in->imm = imm_s;
		if (f3 == 1)
			return OP_FSH;
		if (f3 == 2)
			return OP_FSW;
		if (f3 == 3)
			return OP_FSD;
		return OP_ILLEGAL;
	case 0x43:
	case 0x47:
	case 0x4b:
	case 0x4f: {
		int fmt = f7 & 3;
		int k = (opc >> 2) & 3; /* 0 madd, 1 msub, 2 nmsub, 3 nmadd */
		static const enum rv_op fm[3][4] = {
			{ OP_FMADD_S, OP_FMSUB_S, OP_FNMSUB_S, OP_FNMADD_S },
			{ OP_FMADD_D, OP_FMSUB_D, OP_FNMSUB_D, OP_FNMADD_D },
			{ OP_FMADD_H, OP_FMSUB_H, OP_FNMSUB_H, OP_FNMADD_H },
		};
		if (fmt == 3)
			return OP_ILLEGAL;
		return fm[fmt][k];
	}
	case 0x53: return decode_op_fp(raw, in);
	}
	return OP_ILLEGAL;
}

static enum rv_op decode16(uint32_t raw, struct insn *in)
{
	uint32_t q = raw & 3, f3 = bits(raw, 15, 13);
	uint32_t rd = bits(raw, 11, 7), rs2 = bits(raw, 6, 2);
	uint32_t rdp = 8 + bits(raw, 4, 2), rs1p = 8 + bits(raw, 9, 7);
	int64_t imm6 = sext((bits(raw, 12, 12) << 5) | bits(raw, 6, 2), 6);

	if (raw == 0)
		return OP_ILLEGAL;
	switch (q) {
	case 0:
		switch (f3) {
		case 0: /* c.addi4spn */
			in->imm = (bits(raw, 12, 11) << 4) | (bits(raw, 10, 7) << 6) |
				  (bits(raw, 6, 6) << 2) | (bits(raw, 5, 5) << 3);
			if (!in->imm)
				return OP_ILLEGAL;
			in->rd = (uint8_t)rdp;
			in->rs1 = 2;
			return OP_ADDI;
		case 1:
		case 3:
		case 5:
		case 7: /* c.fld c.ld c.fsd c.sd */
			in->imm = (bits(raw, 12, 10) << 3) | (bits(raw, 6, 5) << 6);
			in->rs1 = (uint8_t)rs1p;
			in->rd = (uint8_t)rdp;
			in->rs2 = (uint8_t)rdp;
			return f3 == 1 ? OP_FLD : f3 == 3 ? OP_LD : f3 == 5 ? OP_FSD : OP_SD;
		case 2:
		case 6: /* c.lw c.sw */
			in->imm = (bits(raw, 12, 10) << 3) | (bits(raw, 6, 6) << 2) |
				  (bits(raw, 5, 5) << 6);
			in->rs1 = (uint8_t)rs1p;
			in->rd = (uint8_t)rdp;
			in->rs2 = (uint8_t)rdp;
			return f3 == 2 ? OP_LW : OP_SW;
		}
		return OP_ILLEGAL;
	case 1:
		switch (f3) {
		case 0: /* c.addi, c.nop */
			in->rd = xrd(rd);
			in->rs1 = (uint8_t)rd;
			in->imm = imm6;
			return OP_ADDI;
		case 1: /* c.addiw */
			if (!rd)
				return OP_ILLEGAL;
			in->rd = (uint8_t)rd;
			in->rs1 = (uint8_t)rd;
			in->imm = imm6;
			return OP_ADDIW;
		case 2: /* c.li */
			in->rd = xrd(rd);
			in->rs1 = 0;
			in->imm = imm6;
			return OP_ADDI;
		case 3:
			if (rd == 2) { /* c.addi16sp */
				in->imm = sext((bits(raw, 12, 12) << 9) | (bits(raw, 6, 6) << 4) |
						       (bits(raw, 5, 5) << 6) |
						       (bits(raw, 4, 3) << 7) |
						       (bits(raw, 2, 2) << 5),
					       10);
				if (!in->imm)
					return OP_ILLEGAL;
				in->rd = 2;
				in->rs1 = 2;
				return OP_ADDI;
			}
			/* c.lui */
			in->imm = (int64_t)((uint64_t)imm6 << 12);
			if (!in->imm)
				return OP_ILLEGAL;
			in->rd = xrd(rd);
			return OP_LUI;
		case 4: {
			uint32_t f2 = bits(raw, 11, 10);
			in->rd = (uint8_t)rs1p;
			in->rs1 = (uint8_t)rs1p;
			in->rs2 = (uint8_t)rdp;
			if (f2 == 0 || f2 == 1) {
				in->imm = (bits(raw, 12, 12) << 5) | bits(raw, 6, 2);
				return f2 == 0 ? OP_SRLI : OP_SRAI;
			}
			if (f2 == 2) {
				in->imm = imm6;
				return OP_ANDI;
			}
			uint32_t f = bits(raw, 6, 5);
			if (!bits(raw, 12, 12)) {
				static const enum rv_op a[4] = { OP_SUB, OP_XOR, OP_OR, OP_AND };
				return a[f];
			}
			if (f == 0)
				return OP_SUBW;
			if (f == 1)
				return OP_ADDW;
			return OP_ILLEGAL;
		}
		case 5: /* c.j */
			in->imm = sext((bits(raw, 12, 12) << 11) | (bits(raw, 11, 11) << 4) |
					       (bits(raw, 10, 9) << 8) | (bits(raw, 8, 8) << 10) |
					       (bits(raw, 7, 7) << 6) | (bits(raw, 6, 6) << 7) |
					       (bits(raw, 5, 3) << 1) | (bits(raw, 2, 2) << 5),
				       12);
			in->rd = RV_X0_SINK;
			return OP_JAL;
		case 6:
		case 7: /* c.beqz c.bnez */
			in->imm = sext((bits(raw, 12, 12) << 8) | (bits(raw, 11, 10) << 3) |
					       (bits(raw, 6, 5) << 6) | (bits(raw, 4, 3) << 1) |
					       (bits(raw, 2, 2) << 5),
				       9);
			in->rs1 = (uint8_t)rs1p;
			in->rs2 = 0;
			return f3 == 6 ? OP_BEQ : OP_BNE;
		}
		return OP_ILLEGAL;
	case 2:
		switch (f3) {
		case 0: /* c.slli */
			in->rd = xrd(rd);
			in->rs1 = (uint8_t)rd;
			in->imm = (bits(raw, 12, 12) << 5) | bits(raw, 6, 2);
			return OP_SLLI;
		case 1:
		case 3: /* c.fldsp c.ldsp */
			in->imm = (bits(raw, 12, 12) << 5) | (bits(raw, 6, 5) << 3) |
				  (bits(raw, 4, 2) << 6);
			in->rs1 = 2;
			if (f3 == 1) {
				in->rd = (uint8_t)rd;
				return OP_FLD;
			}
			if (!rd)
				return OP_ILLEGAL;
			in->rd = (uint8_t)rd;
			return OP_LD;
		case 2: /* c.lwsp */
			in->imm = (bits(raw, 12, 12) << 5) | (bits(raw, 6, 4) << 2) |
				  (bits(raw, 3, 2) << 6);
			if (!rd)
				return OP_ILLEGAL;
			in->rs1 = 2;
			in->rd = (uint8_t)rd;
			return OP_LW;
		case 4:
			if (!bits(raw, 12, 12)) {
				if (!rs2) { /* c.jr */
					if (!rd)
						return OP_ILLEGAL;
					in->rs1 = (uint8_t)rd;
					in->rd = RV_X0_SINK;
					in->imm = 0;
					return OP_JALR;
				}
				/* c.mv */
				in->rd = xrd(rd);
				in->rs1 = 0;
				in->rs2 = (uint8_t)rs2;
				return OP_ADD;
			}
			if (!rs2) {
				if (!rd)
					return OP_EBREAK;
				in->rs1 = (uint8_t)rd; /* c.jalr */
				in->rd = 1;
				in->imm = 0;
				return OP_JALR;
			}
			in->rd = xrd(rd); /* c.add */
			in->rs1 = (uint8_t)rd;
			in->rs2 = (uint8_t)rs2;
			return OP_ADD;
		case 5:
		case 7: /* c.fsdsp c.sdsp */
			in->imm = (bits(raw, 12, 10) << 3) | (bits(raw, 9, 7) << 6);
			in->rs1 = 2;
			in->rs2 = (uint8_t)rs2;
			return f3 == 5 ? OP_FSD : OP_SD;
		case 6: /* c.swsp */
			in->imm = (bits(raw, 12, 9) << 2) | (bits(raw, 8, 7) << 6);
			in->rs1 = 2;
			in->rs2 = (uint8_t)rs2;
			return OP_SW;
		}
		return OP_ILLEGAL;
	}
	return OP_ILLEGAL;
}

enum rv_op rv_decode(uint32_t raw, struct insn *in)
{
	enum rv_op op;
	memset(in, 0, sizeof(*in));
	if ((raw & 3) == 3) {
		in->len = 4;
		in->raw = raw;
		op = decode32(raw, in);
	} else {
		in->len = 2;
		in->raw = raw & 0xffff;
		op = decode16(raw & 0xffff, in);
	}
	in->op = (const void *)(uintptr_t)op;
	in->opc = (uint16_t)op;
	return op;
}
