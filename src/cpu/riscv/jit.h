/* The code generator: hot blocks of decoded instructions are translated to host code.
 * A translated block is a function that runs a prefix of the block (possibly all of it) and
 * returns how it left, so the interpreter stays the reference for everything it does not
 * translate (FP, atomics, CSRs and system instructions). */
#ifndef MABO_CPU_RISCV_JIT_H
#define MABO_CPU_RISCV_JIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hart;
struct insn;

/* How a translated block returned: the low byte is the kind, the rest an insn index. */
enum {
	JIT_EXIT_TAKEN = 0,  /* h->pc set: the taken/jump exit (chainable) */
	JIT_EXIT_FALL = 1,   /* h->pc set: the fall-through exit (chainable) */
	JIT_EXIT_NOLINK = 2, /* h->pc set: an indirect jump */
	JIT_EXIT_TRAP = 3,   /* instruction (code >> 8) faulted: h->exc_cause/exc_tval set */
	JIT_EXIT_INTERP = 4, /* interpret from instruction (code >> 8) on */
};

/* Runs a translated block whose first instruction is at virtual address pc0. */
typedef uint64_t (*jit_fn)(struct hart *h, uint64_t pc0);

struct jit;

/* Where translated code finds a block's chained successors, so that it can jump straight
 * into the next block's code without returning (see exec.c's struct block). */
struct jit_link {
	void *const *succ;     /* the block's two successor pointers (taken, fall-through) */
	const uint64_t *epoch; /* the cache's current epoch */
	uint32_t off_epoch;    /* offsets in a block: its epoch (uint64_t), */
	uint32_t off_chain;    /* its chained entry point (void *), */
	uint32_t off_n;	       /* and its instruction count (uint32_t); a block starts with its
				* key, the host address of its first instruction (uintptr_t) */
	void *const *hash;     /* the block cache's hash table, for indirect jumps: */
	uint32_t hash_bits;    /* bucket = ((key >> 1) ^ (key >> (1 + hash_bits))) & mask */
	uint32_t page_off;     /* the block's offset in its page: which exits leave the page */
	void *self;	       /* the block itself */
	uint32_t off_entry;    /* offset in a block of its checked entry point (void *): what a
				* patched direct jump from a linked predecessor enters */
};

/* A code buffer of size bytes (address space: pages cost memory only once code is written
 * in them) for one hart; NULL when the host has no code generator or no memory. */
struct jit *jit_create(size_t size);
void jit_destroy(struct jit *j);
/* Forgets all code (the block cache was emptied). */
void jit_reset(struct jit *j);
/* Forgets all code and gives the pages it filled back to the host. */
void jit_release(struct jit *j);
/* Translates the block's n instructions (and its closing END); NULL when the first one
 * cannot be translated or the buffer is full (the caller then resets the cache).
 * *chain_entry receives the entry that chained blocks jump to once they have done the
 * checks; *checked_entry the entry that does them (kick, epoch, instruction count). */
jit_fn jit_compile(struct jit *j, const struct insn *insns, uint32_t n, const struct jit_link *link,
		   void **chain_entry, void **checked_entry);
/* Bytes of code generated so far (to describe a block's code to a profiler). */
size_t jit_used(const struct jit *j);
/* True when the buffer has no room left. */
bool jit_full(const struct jit *j);

#endif
