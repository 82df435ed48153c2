/* The x86-64 code generator. Each translated block is a function jit_fn(h, pc0) with
 *   rbx = h (the guest registers are h->x[], at offset 0), r12 = pc0 (the block's virtual
 *   address: the same physical block may run at several), r13 = h->dtlb,
 * and rax, rcx, rdx, rsi, rdi as scratch. Guest registers stay in memory: a block has no
 * register allocation yet, but no dispatch either. Loads and stores look the software TLB
 * up inline and call the interpreter's slow paths on a miss. */
#include "cpu/riscv/jit.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/vm.h"
#include "cpu/riscv/hart.h"
#include "cpu/riscv/insn.h"

#if defined(__x86_64__)

#include <sys/mman.h>

#define JIT_BLOCK_MAX 16384 /* bytes of host code one block may need at most */

struct jit {
	uint8_t *code;
	size_t size;
	size_t used;
	size_t high; /* the most used since the pages were last released */
};

struct jit *jit_create(size_t size)
{
	if (size < 2 * JIT_BLOCK_MAX)
		return NULL;
	struct jit *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->size = size;
	j->code = mmap(NULL, size, PROT_READ | PROT_WRITE | PROT_EXEC,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (j->code == MAP_FAILED) {
		free(j);
		return NULL;
	}
	return j;
}

void jit_destroy(struct jit *j)
{
	if (!j)
		return;
	munmap(j->code, j->size);
	free(j);
}

void jit_reset(struct jit *j)
{
	if (!j)
		return;
	if (j->used > j->high)
		j->high = j->used;
	j->used = 0;
}

void jit_release(struct jit *j)
{
	if (!j)
		return;
	jit_reset(j);
	/* The pages read back as zeros when code is written there again. */
	size_t len = (j->high + 4095) & ~(size_t)4095;
	if (len && madvise(j->code, len, MADV_DONTNEED) == 0)
		j->high = 0;
}

bool jit_full(const struct jit *j)
{
	return !j || j->used + JIT_BLOCK_MAX > j->size;
}

size_t jit_used(const struct jit *j)
{
	return j ? j->used : 0;
}

/* ---- emitter ---- */

enum { RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7 };

/* Guest registers cached in host registers for the length of a block: loaded at the block's
 * entry, written back (when written) at every exit. rbp, r14 and r15 are callee-saved, so the
 * C helpers the code calls leave them alone. */
#define JIT_NCACHE 3
static const int cache_regs[JIT_NCACHE] = { 5 /* rbp */, 14, 15 };

struct emit {
	uint8_t *p;
	int8_t host[33]; /* guest register -> host register, or -1 */
	bool dirty[33];
	uint8_t *body; /* the block's first instruction, cached registers loaded */
	uint32_t n;    /* the block's instruction count */
};

/* Called once by a chain exit's slow path when it finds its successor translated: from then
 * on the exit jumps straight to the successor's checked entry. */
static void jit_patch_link(uint8_t *site_rel, uint8_t *fast, uint8_t *fast_rel, uint8_t *target)
{
	int32_t rel = (int32_t)(target - (fast_rel + 4));
	memcpy(fast_rel, &rel, 4);
	rel = (int32_t)(fast - (site_rel + 4));
	memcpy(site_rel, &rel, 4);
}

static inline void e8(struct emit *e, unsigned b)
{
	*e->p++ = (uint8_t)b;
}

static inline void e32(struct emit *e, uint32_t v)
{
	memcpy(e->p, &v, 4);
	e->p += 4;
}

static inline void e64(struct emit *e, uint64_t v)
{
	memcpy(e->p, &v, 8);
	e->p += 8;
}

/* [base + disp32] operand for a register below 8 and a base below 8 (not rsp/r12). */
static inline void modrm_mem(struct emit *e, int reg, int base, int32_t disp)
{
	e8(e, 0x80 | (reg & 7) << 3 | (base & 7));
	e32(e, (uint32_t)disp);
}

#define XOFF(r) ((int32_t)(offsetof(struct hart, x) + 8 * (r)))

/* An instruction whose r/m operand is guest register r: [rbx + x[r]], or the host register
 * caching it. opc holds 1 to 2 opcode bytes (0x0f escapes); reg is the ModRM reg field (a
 * register below 8 or an opcode digit). */
static void op_rm_x(struct emit *e, int w, const uint8_t *opc, int nopc, int reg, int r)
{
	int hr = e->host[r];
	unsigned rex = (w ? 8 : 0) | (reg & 8 ? 4 : 0) | (hr >= 8 ? 1 : 0);
	if (rex)
		e8(e, 0x40 | rex);
	for (int k = 0; k < nopc; k++)
		e8(e, opc[k]);
	if (hr >= 0)
		e8(e, 0xc0 | (reg & 7) << 3 | (hr & 7));
	else
		modrm_mem(e, reg, RBX, XOFF(r));
}

/* op reg, x[r] with REX.W (or without, w = 0), for one-byte opcodes. */
static void op_reg_x(struct emit *e, int w, unsigned opcode, int reg, int r)
{
	uint8_t o = (uint8_t)opcode;
	op_rm_x(e, w, &o, 1, reg, r);
}

static void ld_x(struct emit *e, int reg, int r)
{
	if (r == 0) {
		e8(e, 0x31);
		e8(e, 0xc0 | reg << 3 | reg); /* xor reg32, reg32 */
		return;
	}
	op_reg_x(e, 1, 0x8b, reg, r);
}

static void st_x(struct emit *e, int reg, int r)
{
	op_reg_x(e, 1, 0x89, reg, r);
	e->dirty[r] = true;
}

/* Stores the cached registers written so far back to h->x (before leaving the block). */
static void flush_cache(struct emit *e)
{
	for (int r = 1; r < 33; r++) {
		int hr = e->host[r];
		if (hr < 0 || !e->dirty[r])
			continue;
		e8(e, 0x48 | (hr >= 8 ? 4 : 0));
		e8(e, 0x89);
		modrm_mem(e, hr & 7, RBX, XOFF(r));
	}
}

/* Loads the cached registers from h->x (at the block's entries). */
static void load_cache(struct emit *e)
{
	for (int r = 1; r < 33; r++) {
		int hr = e->host[r];
		if (hr < 0)
			continue;
		e8(e, 0x48 | (hr >= 8 ? 4 : 0));
		e8(e, 0x8b);
		modrm_mem(e, hr & 7, RBX, XOFF(r));
	}
}

/* mov qword [rbx + off], reg */
static void st_h(struct emit *e, int reg, int32_t off)
{
	e8(e, 0x48);
	e8(e, 0x89);
	modrm_mem(e, reg, RBX, off);
}

/* REX.W 81 /digit reg, imm32 (add 0, or 1, and 4, sub 5, xor 6, cmp 7) */
static void alu_imm(struct emit *e, int w, int digit, int reg, int32_t imm)
{
	if (w)
		e8(e, 0x48);
	e8(e, 0x81);
	e8(e, 0xc0 | digit << 3 | reg);
	e32(e, (uint32_t)imm);
}

/* shl 4, shr 5, sar 7 by an immediate */
static void shift_imm(struct emit *e, int w, int digit, int reg, int n)
{
	if (w)
		e8(e, 0x48);
	e8(e, 0xc1);
	e8(e, 0xc0 | digit << 3 | reg);
	e8(e, n);
}

/* shl 4, shr 5, sar 7 by cl */
static void shift_cl(struct emit *e, int w, int digit, int reg)
{
	if (w)
		e8(e, 0x48);
	e8(e, 0xd3);
	e8(e, 0xc0 | digit << 3 | reg);
}

/* movsxd rax, eax */
static void sext32(struct emit *e)
{
	e8(e, 0x48);
	e8(e, 0x63);
	e8(e, 0xc0);
}

/* mov reg, r12 (pc0) then add the offset (auipc's can exceed 32 bits with pcoff added) */
static void pc_plus(struct emit *e, int reg, int64_t off)
{
	e8(e, 0x4c);
	e8(e, 0x89);
	e8(e, 0xe0 | reg); /* mov reg, r12 */
	if (off == (int32_t)off) {
		if (off)
			alu_imm(e, 1, 0, reg, (int32_t)off);
		return;
	}
	int tmp = reg == RDX ? RSI : RDX;
	e8(e, 0x48);
	e8(e, 0xb8 | tmp);
	e64(e, (uint64_t)off); /* mov tmp, imm64 */
	e8(e, 0x48);
	e8(e, 0x01);
	e8(e, 0xc0 | tmp << 3 | reg); /* add reg, tmp */
}

static void flush_cache(struct emit *e);

/* Emits "mov eax, code" and a jump to the shared epilogue at epi. The cached registers must
 * have been written back (flush_cache) on this path. */
static void exit_to(struct emit *e, uint32_t code, const uint8_t *epi)
{
	e8(e, 0xb8);
	e32(e, code);
	e8(e, 0xe9);
	e32(e, (uint32_t)(epi - (e->p + 4)));
}

/* jcc rel32 with the displacement patched later; returns where to patch. */
static uint8_t *jcc_fwd(struct emit *e, unsigned cc)
{
	e8(e, 0x0f);
	e8(e, 0x80 | cc);
	e32(e, 0);
	return e->p - 4;
}

static uint8_t *jmp_fwd(struct emit *e)
{
	e8(e, 0xe9);
	e32(e, 0);
	return e->p - 4;
}

static void patch_here(struct emit *e, uint8_t *at)
{
	uint32_t rel = (uint32_t)(e->p - (at + 4));
	memcpy(at, &rel, 4);
}

static void call_abs(struct emit *e, const void *fn)
{
	e8(e, 0x48);
	e8(e, 0xb8);
	e64(e, (uint64_t)(uintptr_t)fn); /* mov rax, imm64 */
	e8(e, 0xff);
	e8(e, 0xd0); /* call rax */
}

/* x86 condition codes */
enum { CC_B = 2, CC_AE = 3, CC_E = 4, CC_NE = 5, CC_L = 0xc, CC_GE = 0xd };

/* ---- helpers called from generated code ---- */

struct jit_ret {
	uint64_t val;
	uint64_t ok;
};

static struct jit_ret jit_load(struct hart *h, uint64_t va, uint64_t kind)
{
	struct jit_ret r = { 0, 0 };
	unsigned size = kind & 15;
	uint64_t v;
	if (!mem_load_slow(h, va, size, &v))
		return r;
	if (kind & 16) /* sign-extend */
		v = (uint64_t)((int64_t)(v << (64 - 8 * size)) >> (64 - 8 * size));
	r.val = v;
	r.ok = 1;
	return r;
}

static uint64_t jit_store(struct hart *h, uint64_t va, uint64_t val, uint64_t size)
{
	return mem_store_slow(h, va, (unsigned)size, val);
}

static uint64_t h_div(uint64_t a, uint64_t b)
{
	int64_t x = (int64_t)a, d = (int64_t)b;
	return d == 0 ? ~0ULL : (x == INT64_MIN && d == -1) ? a : (uint64_t)(x / d);
}

static uint64_t h_divu(uint64_t a, uint64_t b)
{
	return b == 0 ? ~0ULL : a / b;
}

static uint64_t h_rem(uint64_t a, uint64_t b)
{
	int64_t x = (int64_t)a, d = (int64_t)b;
	return d == 0 ? a : (x == INT64_MIN && d == -1) ? 0 : (uint64_t)(x % d);
}

static uint64_t h_remu(uint64_t a, uint64_t b)
{
	return b == 0 ? a : a % b;
}

static uint64_t h_divw(uint64_t a, uint64_t b)
{
	int32_t x = (int32_t)a, d = (int32_t)b;
	int32_t r = d == 0 ? -1 : (x == INT32_MIN && d == -1) ? x : x / d;
	return (uint64_t)(int64_t)r;
}

static uint64_t h_divuw(uint64_t a, uint64_t b)
{
	uint32_t x = (uint32_t)a, d = (uint32_t)b;
	return (uint64_t)(int64_t)(int32_t)(d == 0 ? ~0u : x / d);
}

static uint64_t h_remw(uint64_t a, uint64_t b)
{
	int32_t x = (int32_t)a, d = (int32_t)b;
	int32_t r = d == 0 ? x : (x == INT32_MIN && d == -1) ? 0 : x % d;
	return (uint64_t)(int64_t)r;
}

static uint64_t h_remuw(uint64_t a, uint64_t b)
{
	uint32_t x = (uint32_t)a, d = (uint32_t)b;
	return (uint64_t)(int64_t)(int32_t)(d == 0 ? x : x % d);
}

static uint64_t h_mulhsu(uint64_t a, uint64_t b)
{
	return (uint64_t)(((__int128)(int64_t)a * (__int128)(unsigned __int128)b) >> 64);
}

/* ---- translation ---- */

/* rax = x[rs1] (+ imm): the effective address goes to rdi. */
static void emit_addr(struct emit *e, const struct insn *in)
{
	ld_x(e, RDI, in->rs1);
	if (in->imm)
		alu_imm(e, 1, 0, RDI, (int32_t)in->imm);
}

/* rax = &tlb_array[index(rdi)] (array at offset arr in struct tlb); rcx = masked va;
 * flags = tag compare. */
static void emit_tlb_probe(struct emit *e, int32_t arr, unsigned size)
{
	_Static_assert(TLB_SIZE == 256 && sizeof(struct tlb_entry) == 16, "index arithmetic");
	e8(e, 0x89);
	e8(e, 0xf8);		      /* mov eax, edi */
	shift_imm(e, 0, 5, RAX, 8);   /* shr eax, 8 */
	alu_imm(e, 0, 4, RAX, 0xff0); /* and eax, 0xff0: ((va >> 12) & 255) * 16 */
	e8(e, 0x4c);
	e8(e, 0x01);
	e8(e, 0xe8); /* add rax, r13 */
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xf9); /* mov rcx, rdi */
	alu_imm(e, 1, 4, RCX, (int32_t)(~(PAGE_SIZE - 1) | (size - 1)));
	e8(e, 0x48);
	e8(e, 0x3b);
	modrm_mem(e, RCX, RAX, arr); /* cmp rcx, [rax + arr] */
}

static void emit_load(struct emit *e, const struct insn *in, unsigned size, bool sign,
		      uint32_t trap_code, const uint8_t *epi)
{
	emit_addr(e, in);
	emit_tlb_probe(e, (int32_t)offsetof(struct tlb, r), size);
	uint8_t *miss = jcc_fwd(e, CC_NE);
	/* hit: rdi += addend; load */
	e8(e, 0x48);
	e8(e, 0x03);
	modrm_mem(e, RDI, RAX, (int32_t)offsetof(struct tlb, r) + 8);
	switch (size | (sign ? 16 : 0)) {
	case 1:
		e8(e, 0x0f);
		e8(e, 0xb6);
		e8(e, 0x07);
		break; /* movzx eax, byte [rdi] */
	case 2:
		e8(e, 0x0f);
		e8(e, 0xb7);
		e8(e, 0x07);
		break; /* movzx eax, word [rdi] */
	case 4:
		e8(e, 0x8b);
		e8(e, 0x07);
		break; /* mov eax, [rdi] */
	case 8:
	case 24:
		e8(e, 0x48);
		e8(e, 0x8b);
		e8(e, 0x07);
		break; /* mov rax, [rdi] */
	case 17:
		e8(e, 0x48);
		e8(e, 0x0f);
		e8(e, 0xbe);
		e8(e, 0x07);
		break; /* movsx rax, byte */
	case 18:
		e8(e, 0x48);
		e8(e, 0x0f);
		e8(e, 0xbf);
		e8(e, 0x07);
		break; /* movsx rax, word */
	case 20:
		e8(e, 0x48);
		e8(e, 0x63);
		e8(e, 0x07);
		break; /* movsxd rax, [rdi] */
	}
	uint8_t *done = jmp_fwd(e);
	/* miss: jit_load(h, va, kind) */
	patch_here(e, miss);
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xfe); /* mov rsi, rdi */
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xdf); /* mov rdi, rbx */
	e8(e, 0xba);
	e32(e, size | (sign ? 16 : 0)); /* mov edx, kind */
	call_abs(e, (const void *)jit_load);
	e8(e, 0x48);
	e8(e, 0x85);
	e8(e, 0xd2); /* test rdx, rdx */
	uint8_t *ok = jcc_fwd(e, CC_NE);
	flush_cache(e);
	exit_to(e, trap_code, epi);
	patch_here(e, ok);
	patch_here(e, done);
	st_x(e, RAX, in->rd);
}

static void emit_store(struct emit *e, const struct insn *in, unsigned size, uint32_t trap_code,
		       const uint8_t *epi)
{
	emit_addr(e, in);
	emit_tlb_probe(e, (int32_t)offsetof(struct tlb, w), size);
	uint8_t *miss = jcc_fwd(e, CC_NE);
	e8(e, 0x48);
	e8(e, 0x03);
	modrm_mem(e, RDI, RAX, (int32_t)offsetof(struct tlb, w) + 8); /* rdi += addend */
	int src = e->host[in->rs2] >= 0 ? e->host[in->rs2] : RDX;
	if (src == RDX)
		ld_x(e, RDX, in->rs2);
	unsigned rex = (size == 8 ? 8 : 0) | (src >= 8 ? 4 : 0);
	if (size == 2)
		e8(e, 0x66);
	if (rex || (size == 1 && src >= 4))
		e8(e, 0x40 | rex); /* REX (also makes bpl, not ch, the byte register) */
	e8(e, size == 1 ? 0x88 : 0x89);
	e8(e, (src & 7) << 3 | RDI); /* mov [rdi], src */
	uint8_t *done = jmp_fwd(e);
	patch_here(e, miss);
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xfe); /* mov rsi, rdi */
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xdf); /* mov rdi, rbx */
	ld_x(e, RDX, in->rs2);
	e8(e, 0xb9);
	e32(e, size); /* mov ecx, size */
	call_abs(e, (const void *)jit_store);
	e8(e, 0x48);
	e8(e, 0x85);
	e8(e, 0xc0); /* test rax, rax */
	uint8_t *ok = jcc_fwd(e, CC_NE);
	flush_cache(e);
	exit_to(e, trap_code, epi);
	patch_here(e, ok);
	patch_here(e, done);
}

/* x[rd] = fn(x[rs1], x[rs2]) through a C helper */
static void emit_call2(struct emit *e, const struct insn *in, uint64_t (*fn)(uint64_t, uint64_t))
{
	ld_x(e, RDI, in->rs1);
	ld_x(e, RSI, in->rs2);
	call_abs(e, (const void *)fn);
	st_x(e, RAX, in->rd);
}

/* rax = x[rs1] OP x[rs2] for the two-operand ALU opcodes (add 03, sub 2b, and 23, or 0b,
 * xor 33), 64- or 32-bit (then sign-extended). */
/* x[rd] = x[src], a move (mv, and addi/add with a zero operand). */
static void emit_mv(struct emit *e, int rd, int src)
{
	int hd = e->host[rd];
	if (hd >= 0 && src != 0) {
		op_reg_x(e, 1, 0x8b, hd, src); /* mov host_rd, x[src] */
		e->dirty[rd] = true;
		return;
	}
	ld_x(e, RAX, src);
	st_x(e, RAX, rd);
}

/* In-place forms when rd == rs1 lives in a host register: one host instruction. */
static bool emit_inplace(struct emit *e, const struct insn *in)
{
	return in->rd == in->rs1 && e->host[in->rd] >= 0;
}

static void emit_rr(struct emit *e, const struct insn *in, unsigned opcode, int w)
{
	if (w && opcode == 0x03 && (in->rs1 == 0 || in->rs2 == 0)) {
		emit_mv(e, in->rd, in->rs1 ? in->rs1 : in->rs2);
		return;
	}
	if (w && emit_inplace(e, in) && in->rs2 != in->rd) {
		op_reg_x(e, 1, opcode, e->host[in->rd], in->rs2); /* op host_rd, x[rs2] */
		e->dirty[in->rd] = true;
		return;
	}
	ld_x(e, RAX, in->rs1);
	op_reg_x(e, w, opcode, RAX, in->rs2);
	if (!w)
		sext32(e);
	st_x(e, RAX, in->rd);
}

static void emit_ri(struct emit *e, const struct insn *in, int digit, int w)
{
	if (w && digit == 0 && in->imm == 0) {
		emit_mv(e, in->rd, in->rs1);
		return;
	}
	if (w && emit_inplace(e, in)) {
		int hr = e->host[in->rd];
		e8(e, 0x48 | (hr >= 8 ? 1 : 0));
		e8(e, 0x81);
		e8(e, 0xc0 | digit << 3 | (hr & 7)); /* op host_rd, imm32 */
		e32(e, (uint32_t)(int32_t)in->imm);
		e->dirty[in->rd] = true;
		return;
	}
	ld_x(e, RAX, in->rs1);
	alu_imm(e, w, digit, RAX, (int32_t)in->imm);
	if (!w)
		sext32(e);
	st_x(e, RAX, in->rd);
}

static void emit_shift_imm(struct emit *e, const struct insn *in, int digit, int w)
{
	ld_x(e, RAX, in->rs1);
	shift_imm(e, w, digit, RAX, (int)in->imm);
	if (!w)
		sext32(e);
	st_x(e, RAX, in->rd);
}

static void emit_shift_reg(struct emit *e, const struct insn *in, int digit, int w)
{
	ld_x(e, RCX, in->rs2);
	ld_x(e, RAX, in->rs1);
	shift_cl(e, w, digit, RAX);
	if (!w)
		sext32(e);
	st_x(e, RAX, in->rd);
}

/* x[rd] = (x[rs1] cmp operand) as 0/1 with setcc */
static void emit_set(struct emit *e, const struct insn *in, unsigned cc, bool imm)
{
	ld_x(e, RAX, in->rs1);
	if (imm)
		alu_imm(e, 1, 7, RAX, (int32_t)in->imm);
	else
		op_reg_x(e, 1, 0x3b, RAX, in->rs2);
	e8(e, 0x0f);
	e8(e, 0x90 | cc);
	e8(e, 0xc0); /* setcc al */
	e8(e, 0x0f);
	e8(e, 0xb6);
	e8(e, 0xc0); /* movzx eax, al */
	st_x(e, RAX, in->rd);
}

/* With rax = a candidate block whose code should run next (h->pc already holds its pc):
 * when it is current (its epoch), translated, and no kick is pending, account for it and
 * jump into its code. Failure jumps are added to fails[] for the caller to patch. */
static void emit_try_enter(struct emit *e, const struct jit_link *link, uint8_t **fails,
			   int *nfails, uint8_t *site_rel, uint8_t *fast, uint8_t *fast_rel)
{
	e8(e, 0x48);
	e8(e, 0xba);
	e64(e, (uint64_t)(uintptr_t)link->epoch); /* mov rdx, &epoch */
	e8(e, 0x48);
	e8(e, 0x8b);
	e8(e, 0x12); /* mov rdx, [rdx] */
	e8(e, 0x48);
	e8(e, 0x3b);
	modrm_mem(e, RDX, RAX, (int32_t)link->off_epoch); /* cmp rdx, [rax + epoch] */
	fails[(*nfails)++] = jcc_fwd(e, CC_NE);
	e8(e, 0x48);
	e8(e, 0x8b);
	modrm_mem(e, RCX, RAX, (int32_t)link->off_chain); /* mov rcx, [rax + chain] */
	e8(e, 0x48);
	e8(e, 0x85);
	e8(e, 0xc9); /* test rcx, rcx */
	fails[(*nfails)++] = jcc_fwd(e, CC_E);
	e8(e, 0x83);
	modrm_mem(e, 7, RBX, (int32_t)offsetof(struct hart, kick));
	e8(e, 0); /* cmp dword [rbx + kick], 0 */
	fails[(*nfails)++] = jcc_fwd(e, CC_NE);
	e8(e, 0x8b);
	modrm_mem(e, RDX, RAX, (int32_t)link->off_n); /* mov edx, [rax + n] */
	e8(e, 0x48);
	e8(e, 0x01);
	modrm_mem(e, RDX, RBX, (int32_t)offsetof(struct hart, instret)); /* add [instret], rdx */
	st_h(e, RAX, (int32_t)offsetof(struct hart, jit_block));
	e8(e, 0x4c);
	e8(e, 0x8b);
	modrm_mem(e, 4, RBX, (int32_t)offsetof(struct hart, pc)); /* mov r12, [rbx + pc] */
	e8(e, 0x4c);
	e8(e, 0x89);
	modrm_mem(e, 4, RBX, (int32_t)offsetof(struct hart, jit_pc0)); /* mov [jit_pc0], r12 */
	if (site_rel) {
		e8(e, 0x50); /* push rax */
		e8(e, 0x51); /* push rcx */
		e8(e, 0x48);
		e8(e, 0xbf);
		e64(e, (uint64_t)(uintptr_t)site_rel); /* mov rdi, site_rel */
		e8(e, 0x48);
		e8(e, 0xbe);
		e64(e, (uint64_t)(uintptr_t)fast); /* mov rsi, fast */
		e8(e, 0x48);
		e8(e, 0xba);
		e64(e, (uint64_t)(uintptr_t)fast_rel); /* mov rdx, fast_rel */
		e8(e, 0x48);
		e8(e, 0x8b);
		modrm_mem(e, RCX, RAX, (int32_t)link->off_entry); /* mov rcx, [rax + entry] */
		call_abs(e, (const void *)jit_patch_link);
		e8(e, 0x59); /* pop rcx */
		e8(e, 0x58); /* pop rax */
	}
	e8(e, 0xff);
	e8(e, 0xe1); /* jmp rcx */
}

/* Leaves through successor slot `slot` (h->pc is set): straight into the linked
 * successor's code when it can, else back to the dispatcher with `slot`. */
static void emit_chain_exit(struct emit *e, int slot, int64_t off, const struct jit_link *link,
			    const uint8_t *epi)
{
	uint8_t *fails[4];
	int nfails = 0;
	flush_cache(e);
	/* A patchable direct jump: to the slow path below until the successor is known, then
	 * to `fast`, which moves pc0 on and jumps into the successor's checked entry. */
	uint8_t *site_rel = jmp_fwd(e);
	uint8_t *fast = e->p;
	e8(e, 0x49);
	e8(e, 0x81);
	e8(e, 0xc4);
	e32(e, (uint32_t)(int32_t)off); /* add r12, off */
	uint8_t *fast_rel = jmp_fwd(e);
	patch_here(e, site_rel);
	patch_here(e, fast_rel); /* harmless until patched: never reached before */
	e8(e, 0x48);
	e8(e, 0xb8);
	e64(e, (uint64_t)(uintptr_t)&link->succ[slot]); /* mov rax, &succ[slot] */
	e8(e, 0x48);
	e8(e, 0x8b);
	e8(e, 0x00); /* mov rax, [rax] */
	e8(e, 0x48);
	e8(e, 0x85);
	e8(e, 0xc0); /* test rax, rax */
	fails[nfails++] = jcc_fwd(e, CC_E);
	emit_try_enter(e, link, fails, &nfails, site_rel, fast, fast_rel);
	for (int k = 0; k < nfails; k++)
		patch_here(e, fails[k]);
	exit_to(e, (uint32_t)slot, epi);
}

/* An indirect jump to rcx (already stored in h->pc): find the target block the way the
 * dispatcher does (fetch TLB, then the first block of its hash bucket) and enter it, or
 * return to the dispatcher. */
static void emit_indirect_exit(struct emit *e, const struct jit_link *link, const uint8_t *epi)
{
	uint8_t *fails[8];
	int nfails = 0;
	flush_cache(e);
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xc8); /* mov rax, rcx */
	shift_imm(e, 1, 5, RAX, PAGE_SHIFT);
	alu_imm(e, 0, 4, RAX, TLB_SIZE - 1);
	shift_imm(e, 0, 4, RAX, 4);
	e8(e, 0x48);
	e8(e, 0x03);
	modrm_mem(e, RAX, RBX, (int32_t)offsetof(struct hart, itlb)); /* add rax, h->itlb */
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xca); /* mov rdx, rcx */
	alu_imm(e, 1, 4, RDX, (int32_t) ~(PAGE_SIZE - 1));
	e8(e, 0x48);
	e8(e, 0x3b);
	modrm_mem(e, RDX, RAX, (int32_t)offsetof(struct tlb, x)); /* cmp rdx, tag */
	fails[nfails++] = jcc_fwd(e, CC_NE);
	e8(e, 0x48);
	e8(e, 0x8b);
	modrm_mem(e, RDX, RAX, (int32_t)offsetof(struct tlb, x) + 8); /* mov rdx, addend */
	e8(e, 0x48);
	e8(e, 0x01);
	e8(e, 0xca); /* add rdx, rcx: the key */
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xd0); /* mov rax, rdx */
	shift_imm(e, 1, 5, RAX, 1);
	e8(e, 0x48);
	e8(e, 0x89);
	e8(e, 0xd6); /* mov rsi, rdx */
	shift_imm(e, 1, 5, RSI, (int)(1 + link->hash_bits));
	e8(e, 0x48);
	e8(e, 0x31);
	e8(e, 0xf0); /* xor rax, rsi */
	alu_imm(e, 0, 4, RAX, (int32_t)((1u << link->hash_bits) - 1));
	e8(e, 0x48);
	e8(e, 0xbe);
	e64(e, (uint64_t)(uintptr_t)link->hash); /* mov rsi, hash */
	e8(e, 0x48);
	e8(e, 0x8b);
	e8(e, 0x04);
	e8(e, 0xc6); /* mov rax, [rsi + rax*8] */
	e8(e, 0x48);
	e8(e, 0x85);
	e8(e, 0xc0); /* test rax, rax */
	fails[nfails++] = jcc_fwd(e, CC_E);
	e8(e, 0x48);
	e8(e, 0x3b);
	e8(e, 0x10); /* cmp rdx, [rax]: the block's key */
	fails[nfails++] = jcc_fwd(e, CC_NE);
	emit_try_enter(e, link, fails, &nfails, NULL, NULL, NULL);
	for (int k = 0; k < nfails; k++)
		patch_here(e, fails[k]);
	exit_to(e, JIT_EXIT_NOLINK, epi);
}

/* Leaves to pc0 + off through successor slot `slot`: a target in the block's own page is
 * chained through the link; one in another page is looked up like an indirect jump, as its
 * page's mapping must be checked. */
static void emit_direct_exit(struct emit *e, int64_t off, int slot, const struct jit_link *link,
			     const uint8_t *epi)
{
	if (off == 0) {
		/* A loop back to the block's own start: stay in this code, registers cached,
		 * unless a kick is pending. */
		e8(e, 0x83);
		modrm_mem(e, 7, RBX, (int32_t)offsetof(struct hart, kick));
		e8(e, 0); /* cmp dword [rbx + kick], 0 */
		uint8_t *leave = jcc_fwd(e, CC_NE);
		e8(e, 0x48);
		e8(e, 0x81);
		modrm_mem(e, 0, RBX, (int32_t)offsetof(struct hart, instret));
		e32(e, e->n); /* add qword [instret], n */
		e8(e, 0xe9);
		e32(e, (uint32_t)(e->body - (e->p + 4))); /* jmp body */
		patch_here(e, leave);
	}
	pc_plus(e, RCX, off);
	st_h(e, RCX, (int32_t)offsetof(struct hart, pc));
	if ((((int64_t)link->page_off + off) >> PAGE_SHIFT) == 0)
		emit_chain_exit(e, slot, off, link, epi);
	else
		emit_indirect_exit(e, link, epi);
}

static void emit_branch(struct emit *e, const struct insn *in, unsigned cc_taken,
			const struct jit_link *link, const uint8_t *epi)
{
	if (e->host[in->rs1] >= 0) {
		op_reg_x(e, 1, 0x3b, e->host[in->rs1], in->rs2); /* cmp host_rs1, x[rs2] */
	} else {
		ld_x(e, RAX, in->rs1);
		op_reg_x(e, 1, 0x3b, RAX, in->rs2); /* cmp rax, x[rs2] */
	}
	uint8_t *taken = jcc_fwd(e, cc_taken);
	emit_direct_exit(e, in->pcoff + in->len, JIT_EXIT_FALL, link, epi);
	patch_here(e, taken);
	emit_direct_exit(e, in->pcoff + in->imm, JIT_EXIT_TAKEN, link, epi);
}

/* Translates one instruction; false when the op is left to the interpreter. */
static bool emit_insn(struct emit *e, const struct insn *in, uint32_t k,
		      const struct jit_link *link, const uint8_t *epi)
{
	uint32_t trap = JIT_EXIT_TRAP | k << 8;
	switch (in->opc) {
	case OP_LUI: {
		static const uint8_t mov_imm[] = { 0xc7 };
		op_rm_x(e, 1, mov_imm, 1, 0, in->rd);
		e32(e, (uint32_t)(int32_t)in->imm); /* mov qword x[rd], simm32 */
		e->dirty[in->rd] = true;
		return true;
	}
	case OP_AUIPC:
		pc_plus(e, RAX, in->pcoff + in->imm);
		st_x(e, RAX, in->rd);
		return true;
	case OP_JAL:
		pc_plus(e, RAX, in->pcoff + in->len);
		st_x(e, RAX, in->rd);
		emit_direct_exit(e, in->pcoff + in->imm, JIT_EXIT_TAKEN, link, epi);
		return true;
	case OP_JALR:
		ld_x(e, RCX, in->rs1);
		if (in->imm)
			alu_imm(e, 1, 0, RCX, (int32_t)in->imm);
		alu_imm(e, 1, 4, RCX, -2);
		pc_plus(e, RAX, in->pcoff + in->len);
		st_x(e, RAX, in->rd);
		st_h(e, RCX, (int32_t)offsetof(struct hart, pc));
		emit_indirect_exit(e, link, epi);
		return true;
	case OP_BEQ: emit_branch(e, in, CC_E, link, epi); return true;
	case OP_BNE: emit_branch(e, in, CC_NE, link, epi); return true;
	case OP_BLT: emit_branch(e, in, CC_L, link, epi); return true;
	case OP_BGE: emit_branch(e, in, CC_GE, link, epi); return true;
	case OP_BLTU: emit_branch(e, in, CC_B, link, epi); return true;
	case OP_BGEU: emit_branch(e, in, CC_AE, link, epi); return true;
	case OP_END: emit_direct_exit(e, in->pcoff, JIT_EXIT_FALL, link, epi); return true;
	case OP_LB: emit_load(e, in, 1, true, trap, epi); return true;
	case OP_LH: emit_load(e, in, 2, true, trap, epi); return true;
	case OP_LW: emit_load(e, in, 4, true, trap, epi); return true;
	case OP_LD: emit_load(e, in, 8, false, trap, epi); return true;
	case OP_LBU: emit_load(e, in, 1, false, trap, epi); return true;
	case OP_LHU: emit_load(e, in, 2, false, trap, epi); return true;
	case OP_LWU: emit_load(e, in, 4, false, trap, epi); return true;
	case OP_SB: emit_store(e, in, 1, trap, epi); return true;
	case OP_SH: emit_store(e, in, 2, trap, epi); return true;
	case OP_SW: emit_store(e, in, 4, trap, epi); return true;
	case OP_SD: emit_store(e, in, 8, trap, epi); return true;
	case OP_ADDI: emit_ri(e, in, 0, 1); return true;
	case OP_XORI: emit_ri(e, in, 6, 1); return true;
	case OP_ORI: emit_ri(e, in, 1, 1); return true;
	case OP_ANDI: emit_ri(e, in, 4, 1); return true;
	case OP_ADDIW: emit_ri(e, in, 0, 0); return true;
	case OP_SLTI: emit_set(e, in, CC_L, true); return true;
	case OP_SLTIU: emit_set(e, in, CC_B, true); return true;
	case OP_SLT: emit_set(e, in, CC_L, false); return true;
	case OP_SLTU: emit_set(e, in, CC_B, false); return true;
	case OP_SLLI: emit_shift_imm(e, in, 4, 1); return true;
	case OP_SRLI: emit_shift_imm(e, in, 5, 1); return true;
	case OP_SRAI: emit_shift_imm(e, in, 7, 1); return true;
	case OP_SLLIW: emit_shift_imm(e, in, 4, 0); return true;
	case OP_SRLIW: emit_shift_imm(e, in, 5, 0); return true;
	case OP_SRAIW: emit_shift_imm(e, in, 7, 0); return true;
	case OP_SLL: emit_shift_reg(e, in, 4, 1); return true;
	case OP_SRL: emit_shift_reg(e, in, 5, 1); return true;
	case OP_SRA: emit_shift_reg(e, in, 7, 1); return true;
	case OP_SLLW: emit_shift_reg(e, in, 4, 0); return true;
	case OP_SRLW: emit_shift_reg(e, in, 5, 0); return true;
	case OP_SRAW: emit_shift_reg(e, in, 7, 0); return true;
	case OP_ADD: emit_rr(e, in, 0x03, 1); return true;
	case OP_SUB: emit_rr(e, in, 0x2b, 1); return true;
	case OP_AND: emit_rr(e, in, 0x23, 1); return true;
	case OP_OR: emit_rr(e, in, 0x0b, 1); return true;
	case OP_XOR: emit_rr(e, in, 0x33, 1); return true;
	case OP_ADDW: emit_rr(e, in, 0x03, 0); return true;
	case OP_SUBW: emit_rr(e, in, 0x2b, 0); return true;
	case OP_MUL:
	case OP_MULW: {
		static const uint8_t imul[] = { 0x0f, 0xaf };
		ld_x(e, RAX, in->rs1);
		op_rm_x(e, in->opc == OP_MUL, imul, 2, RAX, in->rs2); /* imul rax, x[rs2] */
		if (in->opc == OP_MULW)
			sext32(e);
		st_x(e, RAX, in->rd);
		return true;
	}
	case OP_MULH:
	case OP_MULHU: {
		static const uint8_t mul1[] = { 0xf7 };
		ld_x(e, RAX, in->rs1);
		op_rm_x(e, 1, mul1, 1, in->opc == OP_MULH ? 5 : 4, in->rs2); /* (i)mul x[rs2] */
		st_x(e, RDX, in->rd);
		return true;
	}
	case OP_MULHSU: emit_call2(e, in, h_mulhsu); return true;
	case OP_DIV: emit_call2(e, in, h_div); return true;
	case OP_DIVU: emit_call2(e, in, h_divu); return true;
	case OP_REM: emit_call2(e, in, h_rem); return true;
	case OP_REMU: emit_call2(e, in, h_remu); return true;
	case OP_DIVW: emit_call2(e, in, h_divw); return true;
	case OP_DIVUW: emit_call2(e, in, h_divuw); return true;
	case OP_REMW: emit_call2(e, in, h_remw); return true;
	case OP_REMUW: emit_call2(e, in, h_remuw); return true;
	case OP_FENCE:
		e8(e, 0x0f);
		e8(e, 0xae);
		e8(e, 0xf0); /* mfence */
		return true;
	default: return false;
	}
}

jit_fn jit_compile(struct jit *j, const struct insn *insns, uint32_t n, const struct jit_link *link,
		   void **chain_entry, void **checked_entry)
{
	if (jit_full(j))
		return NULL;
	uint8_t *start = j->code + j->used;
	struct emit e = { .p = start };

	/* Pick the guest registers the block uses most for the host registers. */
	int uses[33] = { 0 };
	for (uint32_t k = 0; k <= n; k++) {
		uses[insns[k].rd]++;
		uses[insns[k].rs1]++;
		uses[insns[k].rs2]++;
	}
	uses[0] = uses[RV_X0_SINK] = 0;
	memset(e.host, -1, sizeof(e.host));
	memset(e.dirty, 0, sizeof(e.dirty));
	for (int c = 0; c < JIT_NCACHE; c++) {
		int best = 0;
		for (int r = 1; r < 32; r++)
			if (e.host[r] < 0 && uses[r] > uses[best])
				best = r;
		if (uses[best] < 2)
			break;
		e.host[best] = (int8_t)cache_regs[c];
	}
	/* Every exit writes back each cached register the block writes anywhere, written yet
	 * or not (the host register always holds the current value): so a loop back to the
	 * body needs no write-back, whatever the iteration. */
	for (uint32_t k = 0; k <= n; k++)
		if (e.host[insns[k].rd] >= 0)
			e.dirty[insns[k].rd] = true;

	/* Prologue: save rbx, r12, r13 and the cache registers, keep the stack 16-byte aligned
	 * for calls. */
	e8(&e, 0x53); /* push rbx */
	e8(&e, 0x41);
	e8(&e, 0x54); /* push r12 */
	e8(&e, 0x41);
	e8(&e, 0x55); /* push r13 */
	e8(&e, 0x55); /* push rbp */
	e8(&e, 0x41);
	e8(&e, 0x56); /* push r14 */
	e8(&e, 0x41);
	e8(&e, 0x57); /* push r15 */
	e8(&e, 0x48);
	e8(&e, 0x83);
	e8(&e, 0xec);
	e8(&e, 0x08); /* sub rsp, 8 */
	e8(&e, 0x48);
	e8(&e, 0x89);
	e8(&e, 0xfb); /* mov rbx, rdi */
	e8(&e, 0x49);
	e8(&e, 0x89);
	e8(&e, 0xf4); /* mov r12, rsi */
	e8(&e, 0x4c);
	e8(&e, 0x8b);
	modrm_mem(&e, 5, RBX, (int32_t)offsetof(struct hart, dtlb)); /* mov r13, h->dtlb */
	uint8_t *skip = jmp_fwd(&e);
	/* Epilogue, placed up front so every exit jumps backwards to a known address. */
	uint8_t *epi = e.p;
	e8(&e, 0x48);
	e8(&e, 0x83);
	e8(&e, 0xc4);
	e8(&e, 0x08); /* add rsp, 8 */
	e8(&e, 0x41);
	e8(&e, 0x5f); /* pop r15 */
	e8(&e, 0x41);
	e8(&e, 0x5e); /* pop r14 */
	e8(&e, 0x5d); /* pop rbp */
	e8(&e, 0x41);
	e8(&e, 0x5d); /* pop r13 */
	e8(&e, 0x41);
	e8(&e, 0x5c); /* pop r12 */
	e8(&e, 0x5b); /* pop rbx */
	e8(&e, 0xc3);
	/* Checked entry, for patched direct jumps from linked predecessors (r12 = this block's
	 * pc0, their registers written back): what the dispatcher and the slow chain path
	 * check before entering, done here. */
	*checked_entry = e.p;
	e8(&e, 0x83);
	modrm_mem(&e, 7, RBX, (int32_t)offsetof(struct hart, kick));
	e8(&e, 0); /* cmp dword [rbx + kick], 0 */
	uint8_t *bail1 = jcc_fwd(&e, CC_NE);
	e8(&e, 0x48);
	e8(&e, 0xb8);
	e64(&e, (uint64_t)(uintptr_t)link->epoch); /* mov rax, &epoch */
	e8(&e, 0x48);
	e8(&e, 0x8b);
	e8(&e, 0x00); /* mov rax, [rax] */
	e8(&e, 0x48);
	e8(&e, 0xba);
	e64(&e, (uint64_t)(uintptr_t)link->self); /* mov rdx, self */
	e8(&e, 0x48);
	e8(&e, 0x3b);
	modrm_mem(&e, RAX, RDX, (int32_t)link->off_epoch); /* cmp rax, [rdx + epoch] */
	uint8_t *bail2 = jcc_fwd(&e, CC_NE);
	e8(&e, 0x48);
	e8(&e, 0x81);
	modrm_mem(&e, 0, RBX, (int32_t)offsetof(struct hart, instret));
	e32(&e, n); /* add qword [instret], n */
	st_h(&e, RDX, (int32_t)offsetof(struct hart, jit_block));
	e8(&e, 0x4c);
	e8(&e, 0x89);
	modrm_mem(&e, 4, RBX, (int32_t)offsetof(struct hart, jit_pc0)); /* mov [jit_pc0], r12 */
	uint8_t *go = jmp_fwd(&e);
	/* Bail out: the dispatcher looks this pc up again, as after an indirect jump. */
	patch_here(&e, bail1);
	patch_here(&e, bail2);
	e8(&e, 0x4c);
	e8(&e, 0x89);
	modrm_mem(&e, 4, RBX, (int32_t)offsetof(struct hart, pc)); /* mov [pc], r12 */
	exit_to(&e, JIT_EXIT_NOLINK, epi);
	patch_here(&e, go);
	patch_here(&e, skip);
	/* Chained blocks enter here with rbx, r12, r13 and the stack frame already set. */
	*chain_entry = e.p;
	load_cache(&e);
	e.body = e.p;
	e.n = n;

	uint32_t k;
	bool ended = false;
	for (k = 0; k <= n; k++) {
		if (!emit_insn(&e, &insns[k], k, link, epi))
			break;
		if (rv_op_ends_block((enum rv_op)insns[k].opc)) {
			ended = true; /* the op wrote its own exits */
			break;
		}
	}
	if (k == 0 && !ended) {
		*chain_entry = NULL;
		*checked_entry = NULL;
		return NULL; /* nothing to gain: the block starts with an untranslated op */
	}
	if (!ended) {
		flush_cache(&e);
		exit_to(&e, JIT_EXIT_INTERP | k << 8, epi);
	}
	j->used += (size_t)(e.p - start);
	j->used = (j->used + 15) & ~(size_t)15;
	return (jit_fn)(void *)start;
}

#else /* no code generator for this host */

struct jit *jit_create(size_t size)
{
	(void)size;
	return NULL;
}

void jit_destroy(struct jit *j)
{
	(void)j;
}

void jit_reset(struct jit *j)
{
	(void)j;
}

void jit_release(struct jit *j)
{
	(void)j;
}

bool jit_full(const struct jit *j)
{
	(void)j;
	return true;
}

size_t jit_used(const struct jit *j)
{
	(void)j;
	return 0;
}

jit_fn jit_compile(struct jit *j, const struct insn *insns, uint32_t n, const struct jit_link *link,
		   void **chain_entry, void **checked_entry)
{
	(void)j;
	(void)insns;
	(void)n;
	(void)link;
	*chain_entry = NULL;
	*checked_entry = NULL;
	return NULL;
}

#endif
