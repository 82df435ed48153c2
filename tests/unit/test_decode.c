/* rv_decode: every instruction format, the compressed quadrants, sign extension of the
 * immediates, the x0 sink, reserved encodings, and which ops end a block. The encodings
 * were produced with riscv64-unknown-elf-as (-march=rv64gc_zfh) and are embedded here. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/riscv/insn.h"

#define SINK RV_X0_SINK

/* Decodes raw, checks the op (returned and stored), the length and the raw bits. */
static struct insn dec(uint32_t raw, enum rv_op op)
{
	struct insn in;
	memset(&in, 0xa5, sizeof(in));
	enum rv_op got = rv_decode(raw, &in);
	assert_int_equal(got, op);
	assert_int_equal((uintptr_t)in.op, (uintptr_t)op);
	if ((raw & 3) == 3) {
		assert_int_equal(in.len, 4);
		assert_int_equal(in.raw, raw);
	} else {
		assert_int_equal(in.len, 2);
		assert_int_equal(in.raw, raw & 0xffff);
	}
	return in;
}

static void illegal(uint32_t raw)
{
	struct insn in;
	assert_int_equal(rv_decode(raw, &in), OP_ILLEGAL);
	assert_int_equal((uintptr_t)in.op, (uintptr_t)OP_ILLEGAL);
}

#define REGS(in, d, s1, s2)                                                                        \
	do {                                                                                       \
		assert_int_equal((in).rd, (d));                                                    \
		assert_int_equal((in).rs1, (s1));                                                  \
		assert_int_equal((in).rs2, (s2));                                                  \
	} while (0)

/* rd and rs1 only (I-type forms) */
#define REGS2(in, d, s1)                                                                           \
	do {                                                                                       \
		assert_int_equal((in).rd, (d));                                                    \
		assert_int_equal((in).rs1, (s1));                                                  \
	} while (0)

/* imm is int64_t: compare as signed so a missing sign extension shows clearly. */
#define IMM(in, v) assert_int_equal((int64_t)(in).imm, (int64_t)(v))

static void test_r_type(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x00c58533, OP_ADD); /* add a0, a1, a2 */
	REGS(in, 10, 11, 12);
	in = dec(0x407302b3, OP_SUB); /* sub t0, t1, t2 */
	REGS(in, 5, 6, 7);
	in = dec(0x413954bb, OP_SRAW); /* sraw s1, s2, s3 */
	REGS(in, 9, 18, 19);
	in = dec(0x02f726b3, OP_MULHSU); /* mulhsu a3, a4, a5 */
	REGS(in, 13, 14, 15);
	in = dec(0x02c5f53b, OP_REMUW); /* remuw a0, a1, a2 */
	REGS(in, 10, 11, 12);
}

static void test_i_type(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0xfff58513, OP_ADDI); /* addi a0, a1, -1 */
	assert_int_equal(in.rd, 10);
	assert_int_equal(in.rs1, 11);
	IMM(in, -1);
	in = dec(0x7ff58513, OP_ADDI); /* addi a0, a1, 2047 */
	IMM(in, 2047);
	in = dec(0x80058513, OP_ADDI); /* addi a0, a1, -2048 */
	IMM(in, -2048);
	in = dec(0xfff5b513, OP_SLTIU); /* sltiu a0, a1, -1: the immediate is sign-extended */
	IMM(in, -1);
	in = dec(0xffc12403, OP_LW); /* lw s0, -4(sp) */
	assert_int_equal(in.rd, 8);
	assert_int_equal(in.rs1, 2);
	IMM(in, -4);
	in = dec(0x7f873783, OP_LD); /* ld a5, 2040(a4) */
	assert_int_equal(in.rd, 15);
	assert_int_equal(in.rs1, 14);
	IMM(in, 2040);
	in = dec(0xff8780e7, OP_JALR); /* jalr ra, -8(a5) */
	assert_int_equal(in.rd, 1);
	assert_int_equal(in.rs1, 15);
	IMM(in, -8);

	/* Shifts: the immediate is the shift amount only. */
	in = dec(0x03f51513, OP_SLLI); /* slli a0, a0, 63 */
	IMM(in, 63);
	in = dec(0x42165593, OP_SRAI); /* srai a1, a2, 33 */
	assert_int_equal(in.rd, 11);
	assert_int_equal(in.rs1, 12);
	IMM(in, 33);
	in = dec(0x41f6559b, OP_SRAIW); /* sraiw a1, a2, 31 */
	IMM(in, 31);
}

static void test_s_type(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0xfeb50fa3, OP_SB); /* sb a1, -1(a0) */
	assert_int_equal(in.rs1, 10);
	assert_int_equal(in.rs2, 11);
	IMM(in, -1);
	in = dec(0x81bfb023, OP_SD); /* sd s11, -2048(t6) */
	assert_int_equal(in.rs1, 31);
	assert_int_equal(in.rs2, 27);
	IMM(in, -2048);
	in = dec(0x7ec6afa3, OP_SW); /* sw a2, 2047(a3) */
	assert_int_equal(in.rs1, 13);
	assert_int_equal(in.rs2, 12);
	IMM(in, 2047);
	in = dec(0xfeb5bc27, OP_FSD); /* fsd fa1, -8(a1) */
	assert_int_equal(in.rs1, 11);
	assert_int_equal(in.rs2, 11);
	IMM(in, -8);
	in = dec(0xffc52507, OP_FLW); /* flw fa0, -4(a0): rd is an FP register */
	assert_int_equal(in.rd, 10);
	IMM(in, -4);
}

static void test_b_type(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x80b50063, OP_BEQ); /* beq a0, a1, .-4096 */
	assert_int_equal(in.rs1, 10);
	assert_int_equal(in.rs2, 11);
	IMM(in, -4096);
	in = dec(0x7eb51fe3, OP_BNE); /* bne a0, a1, .+4094 */
	IMM(in, 4094);
	in = dec(0xfe62ffe3, OP_BGEU); /* bgeu t0, t1, .-2 */
	assert_int_equal(in.rs1, 5);
	assert_int_equal(in.rs2, 6);
	IMM(in, -2);
	illegal(0x00002063); /* branch funct3 2 */
	illegal(0x00003063); /* branch funct3 3 */
}

static void test_u_j_type(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0xfffff537, OP_LUI); /* lui a0, 0xfffff */
	assert_int_equal(in.rd, 10);
	IMM(in, -4096);
	in = dec(0x12345537, OP_LUI);
	IMM(in, 0x12345000);
	in = dec(0x80000317, OP_AUIPC); /* auipc t1, 0x80000: negative on RV64 */
	assert_int_equal(in.rd, 6);
	IMM(in, (int64_t)0xffffffff80000000ULL);

	in = dec(0x800000ef, OP_JAL); /* jal ra, .-1048576 */
	assert_int_equal(in.rd, 1);
	IMM(in, -1048576);
	in = dec(0x7ffff06f, OP_JAL); /* jal x0, .+1048574 */
	assert_int_equal(in.rd, SINK);
	IMM(in, 1048574);
	in = dec(0xfffff2ef, OP_JAL); /* jal t0, .-2 */
	assert_int_equal(in.rd, 5);
	IMM(in, -2);
}

static void test_r4_fp(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x6ac59543, OP_FMADD_D); /* fmadd.d fa0, fa1, fa2, fa3, rtz */
	assert_int_equal(in.rd, 10);
	assert_int_equal(in.rs1, 11);
	assert_int_equal(in.rs2, 12);
	assert_int_equal(in.rs3, 13);
	assert_int_equal(in.rm, 1);
	in = dec(0x1820f04f, OP_FNMADD_S); /* fnmadd.s ft0, ft1, ft2, ft3, dyn */
	assert_int_equal(in.rd, 0);	   /* FP rd 0 is f0, not the integer sink */
	assert_int_equal(in.rs1, 1);
	assert_int_equal(in.rs2, 2);
	assert_int_equal(in.rs3, 3);
	assert_int_equal(in.rm, 7);
	in = dec(0x9d248447, OP_FMSUB_H); /* fmsub.h fs0, fs1, fs2, fs3, rne */
	assert_int_equal(in.rd, 8);
	assert_int_equal(in.rs1, 9);
	assert_int_equal(in.rs2, 18);
	assert_int_equal(in.rs3, 19);
	assert_int_equal(in.rm, 0);

	in = dec(0x02c5f553, OP_FADD_D); /* fadd.d fa0, fa1, fa2 */
	assert_int_equal(in.rm, 7);
	in = dec(0xc0057553, OP_FCVT_W_S); /* fcvt.w.s a0, fa0: integer rd */
	assert_int_equal(in.rd, 10);
	in = dec(0xe2058053, OP_FMV_X_D); /* fmv.x.d x0, fa1: integer rd 0 is the sink */
	assert_int_equal(in.rd, SINK);
	assert_int_equal(in.rs1, 11);
	dec(0xa2b52553, OP_FEQ_D);
	dec(0x4015f553, OP_FCVT_S_D);
	dec(0x42058553, OP_FCVT_D_S);
}

static void test_csr(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x30059573, OP_CSRRW); /* csrrw a0, mstatus, a1 */
	assert_int_equal(in.rd, 10);
	assert_int_equal(in.rs1, 11);
	IMM(in, 0x300);
	in = dec(0x1802a073, OP_CSRRS); /* csrrs x0, satp, t0 */
	assert_int_equal(in.rd, SINK);
	assert_int_equal(in.rs1, 5);
	IMM(in, 0x180);
	in = dec(0x344ff673, OP_CSRRCI); /* csrrci a2, mip, 31: rs1 holds the uimm */
	assert_int_equal(in.rd, 12);
	assert_int_equal(in.rs1, 31);
	IMM(in, 0x344);
	in = dec(0x001066f3, OP_CSRRSI); /* csrrsi a3, fflags, 0 */
	assert_int_equal(in.rs1, 0);
	IMM(in, 1);
	in = dec(0xc0002573, OP_CSRRS); /* csrr a0, cycle: CSR numbers >= 0x800 stay positive */
	IMM(in, 0xc00);
	in = dec(0x30002073, OP_CSRRS); /* csrr x0, mstatus */
	assert_int_equal(in.rd, SINK);
	assert_int_equal(in.rs1, 0);
}

static void test_amo(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x00b6252f, OP_AMOADD_W); /* amoadd.w a0, a1, (a2) */
	REGS(in, 10, 12, 11);
	in = dec(0xe663b2af, OP_AMOMAXU_D); /* amomaxu.d.aqrl t0, t1, (t2) */
	REGS(in, 5, 7, 6);
	in = dec(0x1005b52f, OP_LR_D); /* lr.d a0, (a1) */
	assert_int_equal(in.rd, 10);
	assert_int_equal(in.rs1, 11);
	in = dec(0x1405a52f, OP_LR_W); /* lr.w.aq a0, (a1) */
	in = dec(0x18e7a6af, OP_SC_W); /* sc.w a3, a4, (a5) */
	REGS(in, 13, 15, 14);
	illegal(0x1065b52f); /* lr.d with rs2 != 0 */
	illegal(0x00b6452f); /* AMO with funct3 4 */
}

static void test_system(void **state)
{
	(void)state;
	dec(0x00000073, OP_ECALL);
	dec(0x00100073, OP_EBREAK);
	dec(0x30200073, OP_MRET);
	dec(0x10200073, OP_SRET);
	dec(0x10500073, OP_WFI);
	struct insn in = dec(0x12b50073, OP_SFENCE_VMA); /* sfence.vma a0, a1 */
	assert_int_equal(in.rs1, 10);
	assert_int_equal(in.rs2, 11);
	dec(0x0330000f, OP_FENCE);
	dec(0x0000100f, OP_FENCE_I);
	illegal(0x00000573); /* ecall with rd != 0 */
	illegal(0x00200073); /* unknown funct12 */
}

static void test_x0_sink(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x00c58033, OP_ADD); /* add x0, a1, a2 */
	assert_int_equal(in.rd, SINK);
	in = dec(0x00000013, OP_ADDI); /* nop */
	assert_int_equal(in.rd, SINK);
	assert_int_equal(in.rs1, 0);
	in = dec(0x00001037, OP_LUI); /* lui x0, 1 */
	assert_int_equal(in.rd, SINK);
	in = dec(0x00050003, OP_LB); /* lb x0, 0(a0): still a load (it may fault) */
	assert_int_equal(in.rd, SINK);
	in = dec(0x0000006f, OP_JAL); /* j . */
	assert_int_equal(in.rd, SINK);
	IMM(in, 0);
	/* Source registers are never remapped. */
	in = dec(0x00000533, OP_ADD); /* add a0, x0, x0 */
	assert_int_equal(in.rs1, 0);
	assert_int_equal(in.rs2, 0);
}

static void test_compressed_q0(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x1fe8, OP_ADDI); /* c.addi4spn a0, sp, 1020 */
	REGS2(in, 10, 2);
	IMM(in, 1020);
	in = dec(0x0044, OP_ADDI); /* c.addi4spn s1, sp, 4 */
	assert_int_equal(in.rd, 9);
	assert_int_equal(in.rs1, 2);
	IMM(in, 4);
	in = dec(0x5ef0, OP_LW); /* c.lw a2, 124(a3) */
	assert_int_equal(in.rd, 12);
	assert_int_equal(in.rs1, 13);
	IMM(in, 124);
	in = dec(0x7ff8, OP_LD); /* c.ld a4, 248(a5) */
	assert_int_equal(in.rd, 14);
	assert_int_equal(in.rs1, 15);
	IMM(in, 248);
	in = dec(0xc0a0, OP_SW); /* c.sw s0, 64(s1) */
	assert_int_equal(in.rs1, 9);
	assert_int_equal(in.rs2, 8);
	IMM(in, 64);
	in = dec(0xe588, OP_SD); /* c.sd a0, 8(a1) */
	assert_int_equal(in.rs1, 11);
	assert_int_equal(in.rs2, 10);
	IMM(in, 8);
	in = dec(0x2908, OP_FLD); /* c.fld fa0, 16(a0) */
	assert_int_equal(in.rd, 10);
	assert_int_equal(in.rs1, 10);
	IMM(in, 16);
	in = dec(0xbe7c, OP_FSD); /* c.fsd fa5, 248(a2) */
	assert_int_equal(in.rs1, 12);
	assert_int_equal(in.rs2, 15);
	IMM(in, 248);
}

static void test_compressed_q1(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x0001, OP_ADDI); /* c.nop */
	assert_int_equal(in.rd, SINK);
	IMM(in, 0);
	in = dec(0x1501, OP_ADDI); /* c.addi a0, -32 */
	REGS2(in, 10, 10);
	IMM(in, -32);
	in = dec(0x017d, OP_ADDI); /* c.addi sp, 31 */
	assert_int_equal(in.rd, 2);
	IMM(in, 31);
	in = dec(0x35fd, OP_ADDIW); /* c.addiw a1, -1 */
	assert_int_equal(in.rd, 11);
	assert_int_equal(in.rs1, 11);
	IMM(in, -1);
	in = dec(0x52bd, OP_ADDI); /* c.li t0, -17 */
	assert_int_equal(in.rd, 5);
	assert_int_equal(in.rs1, 0);
	IMM(in, -17);
	in = dec(0x457d, OP_ADDI); /* c.li a0, 31 */
	IMM(in, 31);

	in = dec(0x7101, OP_ADDI); /* c.addi16sp sp, -512 */
	assert_int_equal(in.rd, 2);
	assert_int_equal(in.rs1, 2);
	IMM(in, -512);
	in = dec(0x617d, OP_ADDI); /* c.addi16sp sp, 496 */
	IMM(in, 496);
	in = dec(0x7501, OP_LUI); /* c.lui a0, 0xfffe0 */
	assert_int_equal(in.rd, 10);
	IMM(in, -0x20000);
	in = dec(0x64fd, OP_LUI); /* c.lui s1, 0x1f */
	assert_int_equal(in.rd, 9);
	IMM(in, 0x1f000);

	in = dec(0x917d, OP_SRLI); /* c.srli a0, 63 */
	REGS2(in, 10, 10);
	IMM(in, 63);
	in = dec(0x8585, OP_SRAI); /* c.srai a1, 1 */
	REGS2(in, 11, 11);
	IMM(in, 1);
	in = dec(0x9a7d, OP_ANDI); /* c.andi a2, -1 */
	REGS2(in, 12, 12);
	IMM(in, -1);

	in = dec(0x8c05, OP_SUB); /* c.sub s0, s1 */
	REGS(in, 8, 8, 9);
	in = dec(0x8eb9, OP_XOR); /* c.xor a3, a4 */
	REGS(in, 13, 13, 14);
	in = dec(0x8fc1, OP_OR); /* c.or a5, s0 */
	REGS(in, 15, 15, 8);
	in = dec(0x8ce9, OP_AND); /* c.and s1, a0 */
	REGS(in, 9, 9, 10);
	in = dec(0x9d0d, OP_SUBW); /* c.subw a0, a1 */
	REGS(in, 10, 10, 11);
	in = dec(0x9e35, OP_ADDW); /* c.addw a2, a3 */
	REGS(in, 12, 12, 13);

	in = dec(0xb001, OP_JAL); /* c.j .-2048 */
	assert_int_equal(in.rd, SINK);
	IMM(in, -2048);
	in = dec(0xaffd, OP_JAL); /* c.j .+2046 */
	IMM(in, 2046);
	in = dec(0xd101, OP_BEQ); /* c.beqz a0, .-256 */
	assert_int_equal(in.rs1, 10);
	assert_int_equal(in.rs2, 0);
	IMM(in, -256);
	in = dec(0xecfd, OP_BNE); /* c.bnez s1, .+254 */
	assert_int_equal(in.rs1, 9);
	assert_int_equal(in.rs2, 0);
	IMM(in, 254);
}

static void test_compressed_q2(void **state)
{
	(void)state;
	struct insn in;

	in = dec(0x12fe, OP_SLLI); /* c.slli t0, 63 */
	REGS2(in, 5, 5);
	IMM(in, 63);
	in = dec(0x70fe, OP_LD); /* c.ldsp ra, 504(sp) */
	assert_int_equal(in.rd, 1);
	assert_int_equal(in.rs1, 2);
	IMM(in, 504);
	in = dec(0x557e, OP_LW); /* c.lwsp a0, 252(sp) */
	assert_int_equal(in.rd, 10);
	assert_int_equal(in.rs1, 2);
	IMM(in, 252);
	in = dec(0x2422, OP_FLD); /* c.fldsp fs0, 8(sp) */
	assert_int_equal(in.rd, 8);
	assert_int_equal(in.rs1, 2);
	IMM(in, 8);
	in = dec(0xff86, OP_SD); /* c.sdsp ra, 504(sp) */
	assert_int_equal(in.rs1, 2);
	assert_int_equal(in.rs2, 1);
	IMM(in, 504);
	in = dec(0xdffe, OP_SW); /* c.swsp t6, 252(sp) */
	assert_int_equal(in.rs1, 2);
	assert_int_equal(in.rs2, 31);
	IMM(in, 252);
	in = dec(0xa02a, OP_FSD); /* c.fsdsp fa0, 0(sp) */
	assert_int_equal(in.rs2, 10);
	IMM(in, 0);

	in = dec(0x8082, OP_JALR); /* c.jr ra */
	assert_int_equal(in.rd, SINK);
	assert_int_equal(in.rs1, 1);
	IMM(in, 0);
	in = dec(0x9282, OP_JALR); /* c.jalr t0 */
	assert_int_equal(in.rd, 1);
	assert_int_equal(in.rs1, 5);
	IMM(in, 0);
	in = dec(0x9082, OP_JALR); /* c.jalr ra */
	assert_int_equal(in.rd, 1);
	assert_int_equal(in.rs1, 1);
	in = dec(0x852e, OP_ADD); /* c.mv a0, a1 */
	REGS(in, 10, 0, 11);
	in = dec(0x947e, OP_ADD); /* c.add s0, t6 */
	REGS(in, 8, 8, 31);
	dec(0x9002, OP_EBREAK); /* c.ebreak */
}

/* Only the low half matters for a 16-bit instruction. */
static void test_compressed_ignores_high_half(void **state)
{
	(void)state;
	struct insn in = dec(0xdead1501, OP_ADDI); /* c.addi a0, -32 */
	assert_int_equal(in.raw, 0x1501);
	IMM(in, -32);
}

static void test_reserved(void **state)
{
	(void)state;
	illegal(0x00000000);
	illegal(0xffffffff);
	illegal(0x0000);		  /* all-zero 16-bit */
	illegal(0x0008);		  /* c.addi4spn a0, sp, 0 */
	illegal(0x6501);		  /* c.lui a0, 0 */
	illegal(0x6101);		  /* c.addi16sp sp, 0 */
	illegal(0x8002);		  /* c.jr x0 */
	illegal(0x4002);		  /* c.lwsp x0 */
	illegal(0x6002);		  /* c.ldsp x0 */
	illegal(0x2001);		  /* c.addiw x0 */
	illegal(0x8000);		  /* quadrant 0, funct3 4 */
	illegal(0x9c41);		  /* c.subw-space funct 2 (reserved) */
	illegal(0x06c5f553);		  /* fadd with fmt 3 */
	illegal(0x6ec59543);		  /* fmadd with fmt 3 */
	illegal(0x0330200f);		  /* fence with funct3 2 */
	illegal(0x30054573);		  /* CSR funct3 4 */
	illegal(0x04051513);		  /* slli with imm[11:6] != 0 */
	illegal(0x40b50533 | (1u << 12)); /* sub-space funct3 1 */
}

static void test_ends_block(void **state)
{
	(void)state;
	static const enum rv_op ends[] = {
		OP_ILLEGAL, OP_JAL,    OP_JALR,	  OP_BEQ,	 OP_BNE,   OP_BLT,
		OP_BGE,	    OP_BLTU,   OP_BGEU,	  OP_FENCE_I,	 OP_ECALL, OP_EBREAK,
		OP_MRET,    OP_SRET,   OP_WFI,	  OP_SFENCE_VMA, OP_CSRRW, OP_CSRRS,
		OP_CSRRC,   OP_CSRRWI, OP_CSRRSI, OP_CSRRCI,
	};
	static const enum rv_op flows[] = {
		OP_ADD, OP_ADDI,     OP_LUI,  OP_AUIPC, OP_LD,	  OP_LW,     OP_SB,  OP_SD,  OP_MUL,
		OP_DIV, OP_AMOADD_W, OP_LR_D, OP_SC_D,	OP_FENCE, OP_FADD_D, OP_FLD, OP_FSD,
	};
	for (size_t k = 0; k < sizeof(ends) / sizeof(ends[0]); k++)
		assert_true(rv_op_ends_block(ends[k]));
	for (size_t k = 0; k < sizeof(flows) / sizeof(flows[0]); k++)
		assert_false(rv_op_ends_block(flows[k]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_r_type),
		cmocka_unit_test(test_i_type),
		cmocka_unit_test(test_s_type),
		cmocka_unit_test(test_b_type),
		cmocka_unit_test(test_u_j_type),
		cmocka_unit_test(test_r4_fp),
		cmocka_unit_test(test_csr),
		cmocka_unit_test(test_amo),
		cmocka_unit_test(test_system),
		cmocka_unit_test(test_x0_sink),
		cmocka_unit_test(test_compressed_q0),
		cmocka_unit_test(test_compressed_q1),
		cmocka_unit_test(test_compressed_q2),
		cmocka_unit_test(test_compressed_ignores_high_half),
		cmocka_unit_test(test_reserved),
		cmocka_unit_test(test_ends_block),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
