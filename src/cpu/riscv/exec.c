/* The interpreter: guest code is decoded once into blocks of struct insn, cached by the
 * host address of their first instruction, and run with computed-goto dispatch. Blocks end
 * at control flow, CSR and system instructions and page ends; a block's exits to targets in
 * its own page are chained directly. Interrupts and VM requests are looked at between
 * blocks (h->kick), never per instruction. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <string.h>
#include <sys/mman.h>

#include "core/vm.h"
#include "cpu/riscv/fpu.h"
#include "cpu/riscv/fpu16.h"
#include "cpu/riscv/hart.h"
#include "cpu/riscv/insn.h"
#include "cpu/riscv/jit.h"

#define BLOCK_MAX 64
#define BC_HASH_BITS 16
#define JIT_HOT 32 /* runs of a block before it is translated to host code */
/* A hart is idle when it slept in WFI for most of a window of host time. A hart that goes
 * idle gives the pages its caches filled back to the host, once (the blocks an idle guest
 * runs are soon decoded again, and are then kept); while it stays idle, again only when the
 * caches grow past IDLE_TRIM_AGAIN. */
#define IDLE_WINDOW_NS 2000000000ULL
#define IDLE_ASLEEP_PERMILLE 980
#define IDLE_TRIM_MIN (1u << 20)
#define IDLE_TRIM_AGAIN (8u << 20)

struct block {
	uintptr_t key; /* host address of the first instruction */
	struct block *hnext;
	struct block *succ[2]; /* chained successors in the same page: taken, fall-through */
	uint64_t epoch;	       /* the cache epoch in which the code bytes were last checked */
	jit_fn jit;	       /* translated host code, or NULL */
	void *jit_chain;       /* its entry for chained jumps from other translated blocks */
	void *jit_entry;       /* its entry for patched direct jumps (does the checks itself) */
	uint32_t n;	       /* instructions, not counting the closing END */
	uint32_t hits;	       /* runs so far, until it is hot enough to translate */
	struct insn insns[];
};

struct block_cache {
	struct block *hash[1u << BC_HASH_BITS];
	uint8_t *arena; /* address space: pages cost memory once blocks are decoded in them */
	size_t size;
	size_t used;
	size_t high;	/* the most of the arena used since its pages were last released */
	uint64_t trims; /* times the caches were emptied and their pages released */
	/* fence.i bumps the epoch: a block from an older epoch is used again only after its
	 * code bytes are found unchanged, so fence.i costs no re-decoding of unchanged code. */
	uint64_t epoch;
	uint64_t resets;  /* bumped when the arena is emptied: older block pointers are dead */
	struct jit *jit;  /* host code for hot blocks; NULL when disabled or unavailable */
	uint32_t jit_hot; /* runs of a block before it is translated */
	FILE *perf_map;	  /* MABO_PERF_MAP=1: /tmp/perf-PID.map names each block's code */
	/* One instruction that straddles two pages is decoded here each time, never cached. */
	union {
		struct block b;
		uint8_t space[sizeof(struct block) + 2 * sizeof(struct insn)];
	} scratch;
};

struct block_cache *block_cache_create(size_t size)
{
	if (size < VM_CODE_CACHE_MIN)
		return NULL;
	struct block_cache *bc = calloc(1, sizeof(*bc));
	if (!bc)
		return NULL;
	bc->size = size;
	bc->arena = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (bc->arena == MAP_FAILED) {
		free(bc);
		return NULL;
	}
	/* MABO_JIT=0 turns the code generator off; MABO_JIT_HOT=N translates blocks after N
	 * runs (tests use 1 so every block runs translated). */
	const char *env = getenv("MABO_JIT");
	if (!env || strcmp(env, "0") != 0)
		bc->jit = jit_create(size);
	env = getenv("MABO_JIT_HOT");
	bc->jit_hot = env && atoi(env) > 0 ? (uint32_t)atoi(env) : JIT_HOT;
	env = getenv("MABO_PERF_MAP");
	if (env && strcmp(env, "1") == 0 && bc->jit) {
		char path[64];
		snprintf(path, sizeof(path), "/tmp/perf-%d.map", (int)getpid());
		bc->perf_map = fopen(path, "a");
	}
	return bc;
}

void block_cache_destroy(struct block_cache *bc)
{
	if (!bc)
		return;
	jit_destroy(bc->jit);
	if (bc->perf_map)
		fclose(bc->perf_map);
	munmap(bc->arena, bc->size);
	free(bc);
}

/* Forgets every block (the arena is full, or the hart is reset). */
static void block_cache_reset(struct block_cache *bc)
{
	memset(bc->hash, 0, sizeof(bc->hash));
	if (bc->used > bc->high)
		bc->high = bc->used;
	bc->used = 0;
	bc->epoch++;
	bc->resets++;
	jit_reset(bc->jit);
}

void block_cache_flush(struct hart *h)
{
	h->bc->epoch++;
}

/* Empties the caches and gives their pages back to the host. Only between blocks: no
 * pointer into the arena or the code buffer may be used afterwards. */
static void block_cache_release(struct block_cache *bc)
{
	block_cache_reset(bc);
	jit_release(bc->jit);
	size_t len = (bc->high + 4095) & ~(size_t)4095;
	if (len && madvise(bc->arena, len, MADV_DONTNEED) == 0)
		bc->high = 0;
	bc->trims++;
}

uint64_t hart_cache_trims(const struct hart *h)
{
	return h->bc->trims;
}

size_t hart_cache_used(const struct hart *h)
{
	return h->bc->used + jit_used(h->bc->jit);
}

static inline unsigned bc_hash(uintptr_t key)
{
	return (unsigned)((key >> 1) ^ (key >> (1 + BC_HASH_BITS))) & ((1u << BC_HASH_BITS) - 1);
}

/* Finds the block at key and moves it to the front of its bucket (translated code looks at
 * the first block of a bucket only). */
static inline struct block *bc_lookup(struct block_cache *bc, uintptr_t key)
{
	struct block **head = &bc->hash[bc_hash(key)];
	struct block **pp = head;
	struct block *b;
	while ((b = *pp) && b->key != key)
		pp = &b->hnext;
	if (b && pp != head) {
		*pp = b->hnext;
		b->hnext = *head;
		*head = b;
	}
	return b;
}

static inline uint32_t read16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

/* True when guest memory still holds the instructions the block was decoded from. */
static bool block_unchanged(const struct block *b)
{
	const uint8_t *p = (const uint8_t *)b->key;
	for (uint32_t k = 0; k < b->n; k++) {
		const struct insn *in = &b->insns[k];
		uint32_t raw = read16(p + in->pcoff);
		if (in->len == 4)
			raw |= read16(p + in->pcoff + 2) << 16;
		if (raw != in->raw)
			return false;
	}
	return true;
}

/* The cached block at key, checked against memory if a fence.i came since it was. */
static inline struct block *bc_find(struct block_cache *bc, uintptr_t key)
{
	struct block *b = bc_lookup(bc, key);
	if (b && unlikely(b->epoch != bc->epoch)) {
		if (!block_unchanged(b)) {
			/* Stale: off its bucket (it is at the front) and unreachable. */
			bc->hash[bc_hash(key)] = b->hnext;
			b->key = 0;
			return NULL;
		}
		b->epoch = bc->epoch;
	}
	return b;
}

/* Decodes the block at pc, whose page starts at host address page. NULL (with the fault
 * recorded in h) when a page-straddling instruction's second half cannot be fetched. */
static struct block *block_translate(struct hart *h, uint64_t pc, uint8_t *page,
				     const void *const *labels)
{
	struct block_cache *bc = h->bc;
	unsigned off0 = pc & (PAGE_SIZE - 1);
	uint8_t *hp = page + off0;
	unsigned avail = PAGE_SIZE - off0;
	uint32_t lo = read16(hp);

	if ((lo & 3) == 3 && avail < 4) {
		/* A 32-bit instruction across the page end. */
		uint64_t pa2 = 0;
		uint8_t *next = mem_fetch_page(h, pc + 2, &pa2);
		if (!next)
			return NULL;
		uint32_t raw = lo | (read16(next) << 16);
		struct block *b = &bc->scratch.b;
		b->key = 0;
		b->succ[0] = b->succ[1] = NULL;
		b->epoch = bc->epoch;
		b->jit = NULL;
		b->jit_chain = NULL;
		b->jit_entry = NULL;
		b->hits = 0;
		b->n = 1;
		enum rv_op op = rv_decode(raw, &b->insns[0]);
		b->insns[0].op = labels[op];
		b->insns[0].pcoff = 0;
		struct insn *end = &b->insns[1];
		memset(end, 0, sizeof(*end));
		end->op = labels[OP_END];
		end->opc = OP_END;
		end->pcoff = 4;
		return b;
	}

	size_t need = sizeof(struct block) + (BLOCK_MAX + 1) * sizeof(struct insn);
	if (bc->used + need > bc->size || (bc->jit && jit_full(bc->jit)))
		block_cache_reset(bc);
	struct block *b = (struct block *)(bc->arena + bc->used);
	unsigned off = 0, n = 0;
	while (n < BLOCK_MAX && off < avail) {
		uint32_t raw = read16(hp + off);
		if ((raw & 3) == 3) {
			if (off + 4 > avail)
				break; /* straddles: it starts a block of its own */
			raw |= read16(hp + off + 2) << 16;
		}
		struct insn *in = &b->insns[n];
		enum rv_op op = rv_decode(raw, in);
		in->op = labels[op];
		in->pcoff = (uint16_t)off;
		off += in->len;
		n++;
		if (rv_op_ends_block(op))
			break;
	}
	struct insn *end = &b->insns[n];
	memset(end, 0, sizeof(*end));
	end->op = labels[OP_END];
	end->opc = OP_END;
	end->pcoff = (uint16_t)off;
	b->key = (uintptr_t)hp;
	b->epoch = bc->epoch;
	b->jit = NULL;
	b->jit_chain = NULL;
	b->jit_entry = NULL;
	b->hits = 0;
	b->n = n;
	b->succ[0] = b->succ[1] = NULL;
	unsigned hidx = bc_hash(b->key);
	b->hnext = bc->hash[hidx];
	bc->hash[hidx] = b;
	bc->used += sizeof(struct block) + (n + 1) * sizeof(struct insn);
	bc->used = (bc->used + 15) & ~(size_t)15;
	return b;
}

static void block_compile(struct hart *h, struct block *b, uint64_t pc0)
{
	const struct jit_link link = {
		.succ = (void *const *)b->succ,
		.epoch = &h->bc->epoch,
		.off_epoch = offsetof(struct block, epoch),
		.off_chain = offsetof(struct block, jit_chain),
		.off_n = offsetof(struct block, n),
		.hash = (void *const *)h->bc->hash,
		.hash_bits = BC_HASH_BITS,
		.page_off = (uint32_t)(b->key & (PAGE_SIZE - 1)),
		.self = b,
		.off_entry = offsetof(struct block, jit_entry),
	};
	void *chain = NULL, *entry = NULL;
	size_t before = jit_used(h->bc->jit);
	jit_fn fn = jit_compile(h->bc->jit, b->insns, b->n, &link, &chain, &entry);
	if (fn && h->bc->perf_map)
		fprintf(h->bc->perf_map, "%lx %zx guest_%llx_%u\n", (unsigned long)(uintptr_t)fn,
			jit_used(h->bc->jit) - before, (unsigned long long)pc0, b->n);
	b->jit_chain = fn ? chain : NULL;
	b->jit_entry = fn ? entry : NULL;
	b->jit = fn;
}

/* Sleeps until an interrupt is pending or the hart is kicked. Also where an idle hart's
 * caches are released: the caller (L_WFI) leaves its block without looking at it again. */
static void hart_wfi(struct hart *h)
{
	uint64_t now = host_now_ns();

	if (now - h->idle_window_start >= IDLE_WINDOW_NS) {
		uint64_t window = now - h->idle_window_start;
		bool idle = h->idle_window_asleep >= window / 1000 * IDLE_ASLEEP_PERMILLE;
		size_t used = hart_cache_used(h);
		if (idle && used >= (h->idle_trimmed ? IDLE_TRIM_AGAIN : IDLE_TRIM_MIN)) {
			block_cache_release(h->bc);
			h->idle_trimmed = true;
		} else if (!idle) {
			h->idle_trimmed = false;
		}
		h->idle_window_start = now;
		h->idle_window_asleep = 0;
	}
	/* The hart waits for its own next timer interrupt (a timed wait), so that an idle
	 * guest's tick wakes this thread alone. */
	const struct vm_wfi_ops *ops = h->vm->wfi_ops;
	void *opaque = h->vm->wfi_opaque;
	uint64_t deadline = ops ? ops->sleep(opaque, h->id) : UINT64_MAX;
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / 1000000000ULL),
		.tv_nsec = (long)(deadline % 1000000000ULL),
	};
	pthread_mutex_lock(&h->lock);
	while (!atomic_load(&h->kick) && !(hart_read_mip(h) & h->mie)) {
		if (deadline == UINT64_MAX)
			pthread_cond_wait(&h->cond, &h->lock);
		else if (pthread_cond_timedwait(&h->cond, &h->lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&h->lock);
	if (ops)
		ops->wake(opaque, h->id);
	h->idle_window_asleep += host_now_ns() - now;
}

static inline int32_t sx32(uint64_t v)
{
	return (int32_t)(uint32_t)v;
}

void hart_execute(struct hart *h)
{
	static const void *const labels[OP_COUNT] = {
#define RV_OP_LABEL(name) [OP_##name] = &&L_##name,
		RV_OPS(RV_OP_LABEL)
#undef RV_OP_LABEL
	};
	uint64_t *const x = h->x;
	struct block *b = NULL;
	const struct insn *i = NULL;
	uint64_t pc0 = 0;
	int link_slot = -1;

#define PC (pc0 + i->pcoff)
#define RD x[i->rd]
#define RS1 x[i->rs1]
#define RS2 x[i->rs2]
#define NEXT                                                                                       \
	do {                                                                                       \
		i++;                                                                               \
		goto * i->op;                                                                      \
	} while (0)
	/* Raise an exception at the current instruction: it and the rest of the block did
	 * not retire. */
#define TRAP(cause, tval)                                                                          \
	do {                                                                                       \
		h->pc = PC;                                                                        \
		h->instret -= b->n - (uint32_t)(i - b->insns);                                     \
		hart_trap(h, (cause), (tval));                                                     \
		goto exit_nolink;                                                                  \
	} while (0)
#define JUMP(target, slot)                                                                         \
	do {                                                                                       \
		h->pc = (target);                                                                  \
		link_slot = (slot);                                                                \
		goto exit_chain;                                                                   \
	} while (0)

	for (;;) {
		if (unlikely(atomic_load_explicit(&h->kick, memory_order_relaxed))) {
			atomic_store(&h->kick, 0);
			if (atomic_load(&h->vm->exit_reason))
				return;
			if (atomic_load(&h->vm->pause_req)) {
				/* A block boundary: the state is whole. The TLBs may change
				 * meanwhile (vm_dirty_log_sync); the lookup below reloads. */
				vm_hart_park(h->vm);
				if (atomic_load(&h->vm->exit_reason))
					return;
				link_slot = -1;
			}
			hart_check_interrupts(h);
		}
lookup : {
	uint64_t pc = h->pc;
	uint64_t tag = pc & ~(PAGE_SIZE - 1);
	struct tlb_entry *e = &h->itlb->x[(pc >> PAGE_SHIFT) & (TLB_SIZE - 1)];
	uint8_t *page;
	if (likely(e->tag == tag)) {
		page = (uint8_t *)(tag + e->addend);
	} else {
		uint64_t pa = 0;
		page = mem_fetch_page(h, pc, &pa);
		if (!page) {
			hart_trap(h, h->exc_cause, h->exc_tval);
			link_slot = -1; /* the handler is no successor of the jump */
			continue;
		}
	}
	struct block_cache *bc = h->bc;
	uint64_t resets = bc->resets;
	struct block *nb = bc_find(bc, (uintptr_t)(page + (pc & (PAGE_SIZE - 1))));
	if (!nb) {
		nb = block_translate(h, pc, page, labels);
		if (!nb) {
			hart_trap(h, h->exc_cause, h->exc_tval);
			link_slot = -1;
			continue;
		}
	}
	/* Link the previous block's exit when it stays in the page it came from. */
	if (link_slot >= 0 && bc->resets == resets && b && b->key &&
	    ((pc ^ pc0) >> PAGE_SHIFT) == 0 && nb->key)
		b->succ[link_slot] = nb;
	b = nb;
	pc0 = pc;
}
run:
		link_slot = -1;
		h->instret += b->n;
		if (unlikely(!b->jit) && ++b->hits == h->bc->jit_hot && b->key && h->bc->jit)
			block_compile(h, b, pc0);
		if (b->jit) {
			h->jit_block = b;
			h->jit_pc0 = pc0;
			uint64_t r = b->jit(h, pc0);
			/* Translated code may have chained into other blocks: continue from the
			 * one it left. */
			b = h->jit_block;
			pc0 = h->jit_pc0;
			unsigned kind = r & 0xff;
			if (likely(kind <= JIT_EXIT_FALL)) {
				link_slot = (int)kind;
				goto exit_chain;
			}
			if (kind == JIT_EXIT_NOLINK)
				goto exit_nolink_fast;
			i = &b->insns[r >> 8];
			if (kind == JIT_EXIT_TRAP)
				TRAP(h->exc_cause, h->exc_tval);
			goto * i->op; /* the rest is the interpreter's */
		}
		i = b->insns;
		goto * i->op;

exit_chain:
		if (b->succ[link_slot] && b->succ[link_slot]->epoch == h->bc->epoch &&
		    !atomic_load_explicit(&h->kick, memory_order_relaxed)) {
			b = b->succ[link_slot];
			pc0 = h->pc;
			goto run;
		}
		if (atomic_load_explicit(&h->kick, memory_order_relaxed)) {
			link_slot = -1;
			continue;
		}
		goto lookup;
exit_nolink:
		link_slot = -1;
		continue;

/* ---- RV64I ---- */
L_ILLEGAL:
illegal:
		TRAP(EXC_ILLEGAL, i->raw);
L_END:
		JUMP(PC, 1);
L_LUI:
		RD = (uint64_t)i->imm;
		NEXT;
L_AUIPC:
		RD = PC + i->imm;
		NEXT;
L_JAL : {
	uint64_t t = PC + i->imm;
	RD = PC + i->len;
	JUMP(t, 0);
}
L_JALR : {
	uint64_t t = (RS1 + i->imm) & ~1ULL;
	RD = PC + i->len;
	h->pc = t;
	goto exit_nolink_fast;
}
#define BRANCH(name, cond)                                                                         \
	L_##name : if (cond) JUMP(PC + i->imm, 0);                                                 \
	JUMP(PC + i->len, 1);
		BRANCH(BEQ, RS1 == RS2)
		BRANCH(BNE, RS1 != RS2)
		BRANCH(BLT, (int64_t)RS1 < (int64_t)RS2)
		BRANCH(BGE, (int64_t)RS1 >= (int64_t)RS2)
		BRANCH(BLTU, RS1 < RS2)
		BRANCH(BGEU, RS1 >= RS2)

		/* Loads and stores: a TLB hit is one compare; misaligned addresses miss on purpose.
		 */
#define LOAD(name, type, size)                                                                     \
	L_##name:                                                                                  \
	{                                                                                          \
		uint64_t va = RS1 + i->imm;                                                        \
		struct tlb_entry *e = &h->dtlb->r[(va >> PAGE_SHIFT) & (TLB_SIZE - 1)];            \
		uint64_t v;                                                                        \
		if (likely(e->tag == (va & (~(PAGE_SIZE - 1) | (size - 1))))) {                    \
			type t;                                                                    \
			memcpy(&t, (void *)(uintptr_t)(va + e->addend), size);                     \
			v = (uint64_t)(int64_t)t;                                                  \
		} else {                                                                           \
			if (!mem_load_slow(h, va, size, &v))                                       \
				goto mem_fault;                                                    \
			v = (uint64_t)(int64_t)(type)v;                                            \
		}                                                                                  \
		RD = v;                                                                            \
		NEXT;                                                                              \
	}
		LOAD(LB, int8_t, 1)
		LOAD(LH, int16_t, 2)
		LOAD(LW, int32_t, 4)
		LOAD(LD, int64_t, 8)
		LOAD(LBU, uint8_t, 1)
		LOAD(LHU, uint16_t, 2)
		LOAD(LWU, uint32_t, 4)
#define STORE_VAL(val, size)                                                                       \
	do {                                                                                       \
		uint64_t va = RS1 + i->imm;                                                        \
		struct tlb_entry *e = &h->dtlb->w[(va >> PAGE_SHIFT) & (TLB_SIZE - 1)];            \
		uint64_t sv = (val);                                                               \
		if (likely(e->tag == (va & (~(PAGE_SIZE - 1) | (size - 1)))))                      \
			memcpy((void *)(uintptr_t)(va + e->addend), &sv, size);                    \
		else if (!mem_store_slow(h, va, size, sv))                                         \
			goto mem_fault;                                                            \
	} while (0)
L_SB:
		STORE_VAL(RS2, 1);
		NEXT;
L_SH:
		STORE_VAL(RS2, 2);
		NEXT;
L_SW:
		STORE_VAL(RS2, 4);
		NEXT;
L_SD:
		STORE_VAL(RS2, 8);
		NEXT;
mem_fault:
		TRAP(h->exc_cause, h->exc_tval);

L_ADDI:
		RD = RS1 + i->imm;
		NEXT;
L_SLTI:
		RD = (int64_t)RS1 < i->imm;
		NEXT;
L_SLTIU:
		RD = RS1 < (uint64_t)i->imm;
		NEXT;
L_XORI:
		RD = RS1 ^ i->imm;
		NEXT;
L_ORI:
		RD = RS1 | i->imm;
		NEXT;
L_ANDI:
		RD = RS1 & i->imm;
		NEXT;
L_SLLI:
		RD = RS1 << i->imm;
		NEXT;
L_SRLI:
		RD = RS1 >> i->imm;
		NEXT;
L_SRAI:
		RD = (uint64_t)((int64_t)RS1 >> i->imm);
		NEXT;
L_ADD:
		RD = RS1 + RS2;
		NEXT;
L_SUB:
		RD = RS1 - RS2;
		NEXT;
L_SLL:
		RD = RS1 << (RS2 & 63);
		NEXT;
L_SLT:
		RD = (int64_t)RS1 < (int64_t)RS2;
		NEXT;
L_SLTU:
		RD = RS1 < RS2;
		NEXT;
L_XOR:
		RD = RS1 ^ RS2;
		NEXT;
L_SRL:
		RD = RS1 >> (RS2 & 63);
		NEXT;
L_SRA:
		RD = (uint64_t)((int64_t)RS1 >> (RS2 & 63));
		NEXT;
L_OR:
		RD = RS1 | RS2;
		NEXT;
L_AND:
		RD = RS1 & RS2;
		NEXT;
L_ADDIW:
		RD = (uint64_t)(int64_t)sx32(RS1 + i->imm);
		NEXT;
L_SLLIW:
		RD = (uint64_t)(int64_t)sx32(RS1 << i->imm);
		NEXT;
L_SRLIW:
		RD = (uint64_t)(int64_t)sx32((uint32_t)RS1 >> i->imm);
		NEXT;
L_SRAIW:
		RD = (uint64_t)(int64_t)(sx32(RS1) >> i->imm);
		NEXT;
L_ADDW:
		RD = (uint64_t)(int64_t)sx32(RS1 + RS2);
		NEXT;
L_SUBW:
		RD = (uint64_t)(int64_t)sx32(RS1 - RS2);
		NEXT;
L_SLLW:
		RD = (uint64_t)(int64_t)sx32(RS1 << (RS2 & 31));
		NEXT;
L_SRLW:
		RD = (uint64_t)(int64_t)sx32((uint32_t)RS1 >> (RS2 & 31));
		NEXT;
L_SRAW:
		RD = (uint64_t)(int64_t)(sx32(RS1) >> (RS2 & 31));
		NEXT;

/* ---- M ---- */
L_MUL:
		RD = RS1 * RS2;
		NEXT;
L_MULH:
		RD = (uint64_t)(((__int128)(int64_t)RS1 * (__int128)(int64_t)RS2) >> 64);
		NEXT;
L_MULHSU:
		RD = (uint64_t)(((__int128)(int64_t)RS1 * (__int128)(unsigned __int128)RS2) >> 64);
		NEXT;
L_MULHU:
		RD = (uint64_t)(((unsigned __int128)RS1 * (unsigned __int128)RS2) >> 64);
		NEXT;
L_DIV : {
	int64_t a = (int64_t)RS1, d = (int64_t)RS2;
	RD = d == 0 ? ~0ULL : (a == INT64_MIN && d == -1) ? (uint64_t)a : (uint64_t)(a / d);
	NEXT;
}
L_DIVU:
		RD = RS2 == 0 ? ~0ULL : RS1 / RS2;
		NEXT;
L_REM : {
	int64_t a = (int64_t)RS1, d = (int64_t)RS2;
	RD = d == 0 ? (uint64_t)a : (a == INT64_MIN && d == -1) ? 0 : (uint64_t)(a % d);
	NEXT;
}
L_REMU:
		RD = RS2 == 0 ? RS1 : RS1 % RS2;
		NEXT;
L_MULW:
		RD = (uint64_t)(int64_t)sx32(RS1 * RS2);
		NEXT;
L_DIVW : {
	int32_t a = sx32(RS1), d = sx32(RS2);
	int32_t r = d == 0 ? -1 : (a == INT32_MIN && d == -1) ? a : a / d;
	RD = (uint64_t)(int64_t)r;
	NEXT;
}
L_DIVUW : {
	uint32_t a = (uint32_t)RS1, d = (uint32_t)RS2;
	RD = (uint64_t)(int64_t)(int32_t)(d == 0 ? ~0u : a / d);
	NEXT;
}
L_REMW : {
	int32_t a = sx32(RS1), d = sx32(RS2);
	int32_t r = d == 0 ? a : (a == INT32_MIN && d == -1) ? 0 : a % d;
	RD = (uint64_t)(int64_t)r;
	NEXT;
}
L_REMUW : {
	uint32_t a = (uint32_t)RS1, d = (uint32_t)RS2;
	RD = (uint64_t)(int64_t)(int32_t)(d == 0 ? a : a % d);
	NEXT;
}

/* ---- A: atomics operate on host memory with host atomics, so harts on other
 * threads see them atomically. SC is a compare-and-swap against the value LR saw. */
#define AMO_PTR(ptr, size, acc)                                                                    \
	do {                                                                                       \
		uint64_t va = RS1;                                                                 \
		struct tlb_entry *e = &h->dtlb->w[(va >> PAGE_SHIFT) & (TLB_SIZE - 1)];            \
		if (likely(e->tag == (va & (~(PAGE_SIZE - 1) | (size - 1)))))                      \
			ptr = (void *)(uintptr_t)(va + e->addend);                                 \
		else if (!(ptr = mem_atomic_ptr(h, va, size, acc)))                                \
			goto mem_fault;                                                            \
	} while (0)
L_LR_W : {
	int32_t *p;
	AMO_PTR(p, 4, ACC_R);
	int32_t v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
	h->lr_addr = RS1;
	h->lr_val = (uint32_t)v;
	h->lr_valid = true;
	RD = (uint64_t)(int64_t)v;
	NEXT;
}
L_LR_D : {
	uint64_t *p;
	AMO_PTR(p, 8, ACC_R);
	uint64_t v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
	h->lr_addr = RS1;
	h->lr_val = v;
	h->lr_valid = true;
	RD = v;
	NEXT;
}
L_SC_W : {
	uint32_t *p;
	AMO_PTR(p, 4, ACC_W);
	uint32_t expect = (uint32_t)h->lr_val;
	bool ok = h->lr_valid && h->lr_addr == RS1 &&
		  __atomic_compare_exchange_n(p, &expect, (uint32_t)RS2, false, __ATOMIC_SEQ_CST,
					      __ATOMIC_SEQ_CST);
	h->lr_valid = false;
	RD = !ok;
	NEXT;
}
L_SC_D : {
	uint64_t *p;
	AMO_PTR(p, 8, ACC_W);
	uint64_t expect = h->lr_val;
	bool ok = h->lr_valid && h->lr_addr == RS1 &&
		  __atomic_compare_exchange_n(p, &expect, RS2, false, __ATOMIC_SEQ_CST,
					      __ATOMIC_SEQ_CST);
	h->lr_valid = false;
	RD = !ok;
	NEXT;
}
#define AMO_FETCH(name, type, size, fn)                                                            \
	L_##name:                                                                                  \
	{                                                                                          \
		type *p;                                                                           \
		AMO_PTR(p, size, ACC_W);                                                           \
		type old = fn(p, (type)RS2, __ATOMIC_SEQ_CST);                                     \
		RD = (uint64_t)(int64_t)old;                                                       \
		NEXT;                                                                              \
	}
		AMO_FETCH(AMOSWAP_W, int32_t, 4, __atomic_exchange_n)
		AMO_FETCH(AMOADD_W, int32_t, 4, __atomic_fetch_add)
		AMO_FETCH(AMOXOR_W, int32_t, 4, __atomic_fetch_xor)
		AMO_FETCH(AMOAND_W, int32_t, 4, __atomic_fetch_and)
		AMO_FETCH(AMOOR_W, int32_t, 4, __atomic_fetch_or)
		AMO_FETCH(AMOSWAP_D, int64_t, 8, __atomic_exchange_n)
		AMO_FETCH(AMOADD_D, int64_t, 8, __atomic_fetch_add)
		AMO_FETCH(AMOXOR_D, int64_t, 8, __atomic_fetch_xor)
		AMO_FETCH(AMOAND_D, int64_t, 8, __atomic_fetch_and)
		AMO_FETCH(AMOOR_D, int64_t, 8, __atomic_fetch_or)
#define AMO_CAS(name, type, size, pick)                                                            \
	L_##name:                                                                                  \
	{                                                                                          \
		type *p;                                                                           \
		AMO_PTR(p, size, ACC_W);                                                           \
		type b2 = (type)RS2;                                                               \
		type old = __atomic_load_n(p, __ATOMIC_RELAXED);                                   \
		type nv;                                                                           \
		do {                                                                               \
			nv = (pick) ? old : b2;                                                    \
		} while (!__atomic_compare_exchange_n(p, &old, nv, false, __ATOMIC_SEQ_CST,        \
						      __ATOMIC_SEQ_CST));                          \
		RD = (uint64_t)(int64_t)old;                                                       \
		NEXT;                                                                              \
	}
		AMO_CAS(AMOMIN_W, int32_t, 4, old < b2)
		AMO_CAS(AMOMAX_W, int32_t, 4, old > b2)
		AMO_CAS(AMOMINU_W, int32_t, 4, (uint32_t)old < (uint32_t)b2)
		AMO_CAS(AMOMAXU_W, int32_t, 4, (uint32_t)old > (uint32_t)b2)
		AMO_CAS(AMOMIN_D, int64_t, 8, old < b2)
		AMO_CAS(AMOMAX_D, int64_t, 8, old > b2)
		AMO_CAS(AMOMINU_D, int64_t, 8, (uint64_t)old < (uint64_t)b2)
		AMO_CAS(AMOMAXU_D, int64_t, 8, (uint64_t)old > (uint64_t)b2)

/* ---- System ---- */
L_FENCE:
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		NEXT;
L_FENCE_I:
		/* Code is cached by physical location; fence.i is when stores must show. */
		h->pc = PC + i->len;
		block_cache_flush(h);
		goto exit_nolink;
L_ECALL:
		TRAP(EXC_ECALL_U + h->priv, 0);
L_EBREAK:
		TRAP(EXC_BREAKPOINT, PC);
L_MRET:
		if (h->priv < PRV_M)
			goto illegal;
		hart_do_mret(h);
		goto exit_nolink;
L_SRET:
		if (h->priv < PRV_S || (h->priv == PRV_S && (h->mstatus & MSTATUS_TSR)))
			goto illegal;
		hart_do_sret(h);
		goto exit_nolink;
L_WFI:
		if (h->priv == PRV_U || (h->priv == PRV_S && (h->mstatus & MSTATUS_TW)))
			goto illegal;
		h->pc = PC + i->len;
		hart_wfi(h);
		goto exit_nolink;
L_SFENCE_VMA:
		if (h->priv == PRV_U || (h->priv == PRV_S && (h->mstatus & MSTATUS_TVM)))
			goto illegal;
		if (i->rs1)
			tlb_flush_page(h, RS1);
		else
			tlb_flush(h);
		h->pc = PC + i->len;
		goto exit_nolink;
#define CSR_OP(name, src, is_write, wmask)                                                         \
	L_##name:                                                                                  \
	{                                                                                          \
		uint64_t old, s = (src);                                                           \
		if (!csr_access(h, (uint32_t)i->imm, &old, (is_write), s, (wmask)))                \
			goto illegal;                                                              \
		RD = old;                                                                          \
		h->pc = PC + i->len;                                                               \
		goto exit_nolink;                                                                  \
	}
		CSR_OP(CSRRW, RS1, true, ~0ULL)
		CSR_OP(CSRRS, ~0ULL, i->rs1 != 0, RS1)
		CSR_OP(CSRRC, 0, i->rs1 != 0, RS1)
		CSR_OP(CSRRWI, i->rs1, true, ~0ULL)
		CSR_OP(CSRRSI, ~0ULL, i->rs1 != 0, (uint64_t)i->rs1)
		CSR_OP(CSRRCI, 0, i->rs1 != 0, (uint64_t)i->rs1)

		/* ---- F, D, Zfh ---- */
#define FPCHK()                                                                                    \
	do {                                                                                       \
		if (unlikely(!(h->mstatus & MSTATUS_FS)))                                          \
			goto illegal;                                                              \
	} while (0)
#define FRM(r)                                                                                     \
	do {                                                                                       \
		r = i->rm == 7 ? (int)h->frm : i->rm;                                              \
		if (unlikely(r > 4))                                                               \
			goto illegal;                                                              \
	} while (0)
#define FDONE()                                                                                    \
	do {                                                                                       \
		h->fflags |= fl;                                                                   \
		h->mstatus |= MSTATUS_FS;                                                          \
		NEXT;                                                                              \
	} while (0)
#define F32(r) fpu_unbox32(h->f[r])
#define F64(r) (h->f[r])
#define F16(r) fpu_unbox16(h->f[r])
L_FLH : {
	FPCHK();
	uint64_t va = RS1 + i->imm, v;
	if (!mem_load_slow(h, va, 2, &v))
		goto mem_fault;
	h->f[i->rd] = 0xffffffffffff0000ULL | (uint16_t)v;
	h->mstatus |= MSTATUS_FS;
	NEXT;
}
L_FLW : {
	FPCHK();
	uint64_t va = RS1 + i->imm;
	struct tlb_entry *e = &h->dtlb->r[(va >> PAGE_SHIFT) & (TLB_SIZE - 1)];
	uint32_t v;
	if (likely(e->tag == (va & (~(PAGE_SIZE - 1) | 3)))) {
		memcpy(&v, (void *)(uintptr_t)(va + e->addend), 4);
	} else {
		uint64_t t;
		if (!mem_load_slow(h, va, 4, &t))
			goto mem_fault;
		v = (uint32_t)t;
	}
	h->f[i->rd] = fpu_box32(v);
	h->mstatus |= MSTATUS_FS;
	NEXT;
}
L_FLD : {
	FPCHK();
	uint64_t va = RS1 + i->imm;
	struct tlb_entry *e = &h->dtlb->r[(va >> PAGE_SHIFT) & (TLB_SIZE - 1)];
	uint64_t v;
	if (likely(e->tag == (va & (~(PAGE_SIZE - 1) | 7)))) {
		memcpy(&v, (void *)(uintptr_t)(va + e->addend), 8);
	} else if (!mem_load_slow(h, va, 8, &v)) {
		goto mem_fault;
	}
	h->f[i->rd] = v;
	h->mstatus |= MSTATUS_FS;
	NEXT;
}
L_FSH:
		FPCHK();
		STORE_VAL(h->f[i->rs2], 2);
		NEXT;
L_FSW:
		FPCHK();
		STORE_VAL(h->f[i->rs2], 4);
		NEXT;
L_FSD:
		FPCHK();
		STORE_VAL(h->f[i->rs2], 8);
		NEXT;

#define FOP3(name, W, BOX, fn)                                                                     \
	L_##name:                                                                                  \
	{                                                                                          \
		int rm;                                                                            \
		uint32_t fl = 0;                                                                   \
		FPCHK();                                                                           \
		FRM(rm);                                                                           \
		h->f[i->rd] = BOX(fn(W(i->rs1), W(i->rs2), W(i->rs3), rm, &fl));                   \
		FDONE();                                                                           \
	}
#define FOP2(name, W, BOX, fn)                                                                     \
	L_##name:                                                                                  \
	{                                                                                          \
		int rm;                                                                            \
		uint32_t fl = 0;                                                                   \
		FPCHK();                                                                           \
		FRM(rm);                                                                           \
		h->f[i->rd] = BOX(fn(W(i->rs1), W(i->rs2), rm, &fl));                              \
		FDONE();                                                                           \
	}
#define FOP1(name, W, BOX, fn)                                                                     \
	L_##name:                                                                                  \
	{                                                                                          \
		int rm;                                                                            \
		uint32_t fl = 0;                                                                   \
		FPCHK();                                                                           \
		FRM(rm);                                                                           \
		h->f[i->rd] = BOX(fn(W(i->rs1), rm, &fl));                                         \
		FDONE();                                                                           \
	}
		/* min/max: no rounding mode */
#define FOPMM(name, W, BOX, fn)                                                                    \
	L_##name:                                                                                  \
	{                                                                                          \
		uint32_t fl = 0;                                                                   \
		FPCHK();                                                                           \
		h->f[i->rd] = BOX(fn(W(i->rs1), W(i->rs2), &fl));                                  \
		FDONE();                                                                           \
	}
#define FCMP(name, W, fn)                                                                          \
	L_##name:                                                                                  \
	{                                                                                          \
		uint32_t fl = 0;                                                                   \
		FPCHK();                                                                           \
		RD = (uint64_t)fn(W(i->rs1), W(i->rs2), &fl);                                      \
		FDONE();                                                                           \
	}
#define FTOI(name, W, fn)                                                                          \
	L_##name:                                                                                  \
	{                                                                                          \
		int rm;                                                                            \
		uint32_t fl = 0;                                                                   \
		FPCHK();                                                                           \
		FRM(rm);                                                                           \
		RD = (uint64_t)fn(W(i->rs1), rm, &fl);                                             \
		FDONE();                                                                           \
	}
#define ITOF(name, BOX, fn, cast)                                                                  \
	L_##name:                                                                                  \
	{                                                                                          \
		int rm;                                                                            \
		uint32_t fl = 0;                                                                   \
		FPCHK();                                                                           \
		FRM(rm);                                                                           \
		h->f[i->rd] = BOX(fn((cast)RS1, rm, &fl));                                         \
		FDONE();                                                                           \
	}
#define ID(v) (v)
		FOP3(FMADD_S, F32, fpu_box32, f32_madd)
		FOP3(FMSUB_S, F32, fpu_box32, f32_msub)
		FOP3(FNMSUB_S, F32, fpu_box32, f32_nmsub)
		FOP3(FNMADD_S, F32, fpu_box32, f32_nmadd)
		FOP2(FADD_S, F32, fpu_box32, f32_add)
		FOP2(FSUB_S, F32, fpu_box32, f32_sub)
		FOP2(FMUL_S, F32, fpu_box32, f32_mul)
		FOP2(FDIV_S, F32, fpu_box32, f32_div)
		FOP1(FSQRT_S, F32, fpu_box32, f32_sqrt)
		FOPMM(FMIN_S, F32, fpu_box32, f32_min)
		FOPMM(FMAX_S, F32, fpu_box32, f32_max)
		FCMP(FEQ_S, F32, f32_eq)
		FCMP(FLT_S, F32, f32_lt)
		FCMP(FLE_S, F32, f32_le)
		FTOI(FCVT_W_S, F32, f32_to_i32)
		FTOI(FCVT_WU_S, F32, f32_to_u32)
		FTOI(FCVT_L_S, F32, f32_to_i64)
		FTOI(FCVT_LU_S, F32, f32_to_u64)
		ITOF(FCVT_S_W, fpu_box32, i32_to_f32, int32_t)
		ITOF(FCVT_S_WU, fpu_box32, u32_to_f32, uint32_t)
		ITOF(FCVT_S_L, fpu_box32, i64_to_f32, int64_t)
		ITOF(FCVT_S_LU, fpu_box32, u64_to_f32, uint64_t)
		FOP3(FMADD_D, F64, ID, f64_madd)
		FOP3(FMSUB_D, F64, ID, f64_msub)
		FOP3(FNMSUB_D, F64, ID, f64_nmsub)
		FOP3(FNMADD_D, F64, ID, f64_nmadd)
		FOP2(FADD_D, F64, ID, f64_add)
		FOP2(FSUB_D, F64, ID, f64_sub)
		FOP2(FMUL_D, F64, ID, f64_mul)
		FOP2(FDIV_D, F64, ID, f64_div)
		FOP1(FSQRT_D, F64, ID, f64_sqrt)
		FOPMM(FMIN_D, F64, ID, f64_min)
		FOPMM(FMAX_D, F64, ID, f64_max)
		FCMP(FEQ_D, F64, f64_eq)
		FCMP(FLT_D, F64, f64_lt)
		FCMP(FLE_D, F64, f64_le)
		FTOI(FCVT_W_D, F64, f64_to_i32)
		FTOI(FCVT_WU_D, F64, f64_to_u32)
		FTOI(FCVT_L_D, F64, f64_to_i64)
		FTOI(FCVT_LU_D, F64, f64_to_u64)
		ITOF(FCVT_D_W, ID, i32_to_f64, int32_t)
		ITOF(FCVT_D_WU, ID, u32_to_f64, uint32_t)
		ITOF(FCVT_D_L, ID, i64_to_f64, int64_t)
		ITOF(FCVT_D_LU, ID, u64_to_f64, uint64_t)
		FOP1(FCVT_S_D, F64, fpu_box32, f64_to_f32)
L_FCVT_D_S : {
	uint32_t fl = 0;
	FPCHK();
	h->f[i->rd] = f32_to_f64(F32(i->rs1), &fl);
	FDONE();
}
#define FSGNJ(name, W, BOX, SIGN, expr)                                                            \
	L_##name:                                                                                  \
	{                                                                                          \
		FPCHK();                                                                           \
		uint64_t a = W(i->rs1), c = W(i->rs2);                                             \
		h->f[i->rd] = BOX((a & ~SIGN) | (expr));                                           \
		h->mstatus |= MSTATUS_FS;                                                          \
		NEXT;                                                                              \
	}
		FSGNJ(FSGNJ_S, F32, fpu_box32, 0x80000000ULL, c & 0x80000000ULL)
		FSGNJ(FSGNJN_S, F32, fpu_box32, 0x80000000ULL, ~c & 0x80000000ULL)
		FSGNJ(FSGNJX_S, F32, fpu_box32, 0x80000000ULL, (a ^ c) & 0x80000000ULL)
		FSGNJ(FSGNJ_D, F64, ID, 0x8000000000000000ULL, c & 0x8000000000000000ULL)
		FSGNJ(FSGNJN_D, F64, ID, 0x8000000000000000ULL, ~c & 0x8000000000000000ULL)
		FSGNJ(FSGNJX_D, F64, ID, 0x8000000000000000ULL, (a ^ c) & 0x8000000000000000ULL)
		FSGNJ(FSGNJ_H, F16, fpu_box16, 0x8000ULL, c & 0x8000ULL)
		FSGNJ(FSGNJN_H, F16, fpu_box16, 0x8000ULL, ~c & 0x8000ULL)
		FSGNJ(FSGNJX_H, F16, fpu_box16, 0x8000ULL, (a ^ c) & 0x8000ULL)
L_FMV_X_W:
		FPCHK();
		RD = (uint64_t)(int64_t)(int32_t)(uint32_t)h->f[i->rs1];
		NEXT;
L_FMV_W_X:
		FPCHK();
		h->f[i->rd] = fpu_box32((uint32_t)RS1);
		h->mstatus |= MSTATUS_FS;
		NEXT;
L_FMV_X_D:
		FPCHK();
		RD = h->f[i->rs1];
		NEXT;
L_FMV_D_X:
		FPCHK();
		h->f[i->rd] = RS1;
		h->mstatus |= MSTATUS_FS;
		NEXT;
L_FMV_X_H:
		FPCHK();
		RD = (uint64_t)(int64_t)(int16_t)(uint16_t)h->f[i->rs1];
		NEXT;
L_FMV_H_X:
		FPCHK();
		h->f[i->rd] = fpu_box16((uint16_t)RS1);
		h->mstatus |= MSTATUS_FS;
		NEXT;
L_FCLASS_S:
		FPCHK();
		RD = f32_classify(F32(i->rs1));
		NEXT;
L_FCLASS_D:
		FPCHK();
		RD = f64_classify(F64(i->rs1));
		NEXT;
L_FCLASS_H:
		FPCHK();
		RD = f16_classify(F16(i->rs1));
		NEXT;
		FOP3(FMADD_H, F16, fpu_box16, f16_madd)
		FOP3(FMSUB_H, F16, fpu_box16, f16_msub)
		FOP3(FNMSUB_H, F16, fpu_box16, f16_nmsub)
		FOP3(FNMADD_H, F16, fpu_box16, f16_nmadd)
		FOP2(FADD_H, F16, fpu_box16, f16_add)
		FOP2(FSUB_H, F16, fpu_box16, f16_sub)
		FOP2(FMUL_H, F16, fpu_box16, f16_mul)
		FOP2(FDIV_H, F16, fpu_box16, f16_div)
		FOP1(FSQRT_H, F16, fpu_box16, f16_sqrt)
		FOPMM(FMIN_H, F16, fpu_box16, f16_min)
		FOPMM(FMAX_H, F16, fpu_box16, f16_max)
		FCMP(FEQ_H, F16, f16_eq)
		FCMP(FLT_H, F16, f16_lt)
		FCMP(FLE_H, F16, f16_le)
		FTOI(FCVT_W_H, F16, f16_to_i32)
		FTOI(FCVT_WU_H, F16, f16_to_u32)
		FTOI(FCVT_L_H, F16, f16_to_i64)
		FTOI(FCVT_LU_H, F16, f16_to_u64)
		ITOF(FCVT_H_W, fpu_box16, i32_to_f16, int32_t)
		ITOF(FCVT_H_WU, fpu_box16, u32_to_f16, uint32_t)
		ITOF(FCVT_H_L, fpu_box16, i64_to_f16, int64_t)
		ITOF(FCVT_H_LU, fpu_box16, u64_to_f16, uint64_t)
		FOP1(FCVT_H_S, F32, fpu_box16, f32_to_f16)
		FOP1(FCVT_H_D, F64, fpu_box16, f64_to_f16)
L_FCVT_S_H : {
	uint32_t fl = 0;
	FPCHK();
	h->f[i->rd] = fpu_box32(f16_to_f32(F16(i->rs1), &fl));
	FDONE();
}
L_FCVT_D_H : {
	uint32_t fl = 0;
	FPCHK();
	h->f[i->rd] = f16_to_f64(F16(i->rs1), &fl);
	FDONE();
}

exit_nolink_fast:
		link_slot = -1;
		if (unlikely(atomic_load_explicit(&h->kick, memory_order_relaxed)))
			continue;
		goto lookup;
	}
}

struct hart *hart_create(struct vm *vm, int id)
{
	struct hart *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	size_t size = VM_CODE_CACHE_DEFAULT;
	if (vm->cfg && vm->cfg->code_cache)
		size = (size_t)vm->cfg->code_cache;
	h->bc = block_cache_create(size);
	if (!h->bc) {
		free(h);
		return NULL;
	}
	h->vm = vm;
	h->id = id;
	h->mhartid = (uint64_t)id;
	pthread_mutex_init(&h->lock, NULL);
	/* WFI waits for timer deadlines on CLOCK_MONOTONIC (the guest's clock). */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cond, &ca);
	pthread_condattr_destroy(&ca);
	hart_reset(h, RAM_BASE, 0, 0, 0);
	return h;
}

void hart_destroy(struct hart *h)
{
	if (!h)
		return;
	block_cache_destroy(h->bc);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	free(h);
}

void hart_reset(struct hart *h, uint64_t pc, uint64_t a0, uint64_t a1, uint64_t a2)
{
	memset(h->x, 0, sizeof(h->x));
	memset(h->f, 0, sizeof(h->f));
	h->x[10] = a0;
	h->x[11] = a1;
	h->x[12] = a2;
	h->pc = pc;
	h->fflags = h->frm = 0;
	h->lr_valid = false;
	/* RV64 (MXL=2) IMAFDC with S and U modes. */
	h->misa = (2ULL << 62) | (1 << ('I' - 'A')) | (1 << ('M' - 'A')) | (1 << ('A' - 'A')) |
		  (1 << ('F' - 'A')) | (1 << ('D' - 'A')) | (1 << ('C' - 'A')) |
		  (1 << ('S' - 'A')) | (1 << ('U' - 'A'));
	h->mstatus = (2ULL << 32) | (2ULL << 34);
	h->medeleg = h->mideleg = h->mie = h->mip_sw = 0;
	h->mtvec = h->stvec = h->mscratch = h->sscratch = 0;
	h->mepc = h->sepc = h->mcause = h->scause = h->mtval = h->stval = 0;
	h->satp = h->mcounteren = h->scounteren = h->menvcfg = h->senvcfg = 0;
	h->mcountinhibit = 0;
	h->stimecmp = UINT64_MAX;
	hart_stimer_update(h); /* STCE is off */
	h->instret = 0;
	h->cycle_delta = 0;
	memset(h->pmpcfg, 0, sizeof(h->pmpcfg));
	memset(h->pmpaddr, 0, sizeof(h->pmpaddr));
	memset(h->tlbs, 0xff, sizeof(h->tlbs));
	memset(h->tlb_super, 0, sizeof(h->tlb_super));
	h->minstret_frozen = h->mcycle_frozen = 0;
	h->priv = PRV_M;
	hart_update_tlb_ptrs(h);
	block_cache_reset(h->bc);
	atomic_store(&h->kick, 1);
}

void hart_kick(struct hart *h)
{
	/* Set under the lock, so a hart about to sleep sees it; woken after the unlock, so the
	 * hart does not wake only to wait for the lock the kicker still holds. */
	pthread_mutex_lock(&h->lock);
	atomic_store(&h->kick, 1);
	pthread_mutex_unlock(&h->lock);
	pthread_cond_broadcast(&h->cond);
}

void hart_set_irq(struct hart *h, uint64_t mask, bool level)
{
	uint64_t old;
	if (level) {
		old = atomic_fetch_or(&h->mip_hw, mask);
		if ((old & mask) != mask)
			hart_kick(h);
	} else {
		atomic_fetch_and(&h->mip_hw, ~mask);
	}
}

void hart_run(struct hart *h)
{
	hart_execute(h);
	vm_hart_leave(h->vm);
}
