/* libFuzzer target for the code generator (src/cpu/riscv/jit_x86.c): the input's bytes drive
 * the random program generator of tests/unit/test_jit.c (included below, without its cmocka
 * tests), and the program runs interpreted (MABO_JIT=0) and translated (MABO_JIT_HOT=1, then
 * 2); any difference in registers, pc, minstret, trap CSRs, the trap log or guest RAM
 * aborts, after printing the differences and a listing of the program.
 *
 * Build and run (from the repository root, with clang):
 *   mkdir -p build/fuzz && clang -std=gnu11 -g -O1 -Wall -Wextra -Isrc \
 *     -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -o build/fuzz/fuzz_jit tests/fuzz/fuzz_jit.c \
 *     $(find src -name '*.c' ! -name main.c | sort) -lfdt -lm -pthread
 *   mkdir -p build/fuzz/corpus-jit
 *   build/fuzz/fuzz_jit -max_total_time=60 -max_len=2048 -artifact_prefix=build/fuzz/ \
 *     build/fuzz/corpus-jit
 * (every 4 input bytes make one of the generator's choices, so longer inputs steer more of
 * the program; about 20 inputs a second under the sanitizers, each run three times.)
 * For a `make fuzz` rule: FUZZ_jit_SRCS would be every src/ file but src/main.c, and -lfdt
 * -lm -pthread must be linked. A crash input replays with build/fuzz/fuzz_jit <file>. */
#define JITDIFF_FUZZ 1
#include "../unit/test_jit.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool have_handler;
	static struct prog p;
	static struct gen g;
	if (!have_handler) {
		char err[512];
		if (!build_handler(err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			abort();
		}
		have_handler = true;
	}
	/* The bytes are consumed by the generator's choices; after them, a PRNG seeded with
	 * their hash takes over, so short inputs still make whole programs. */
	uint64_t seed = 0xcbf29ce484222325ULL;
	for (size_t k = 0; k < size; k++)
		seed = (seed ^ data[k]) * 0x100000001b3ULL;
	gen_init(&g, &p, seed);
	g.in = data;
	g.inlen = size;
	p.seed = seed;
	p.index = 0;
	bool ok = gen_random(&g, &p);
	if (g.err[0]) {
		fprintf(stderr, "%s\n", g.err);
		abort();
	}
	if (!ok)
		return 0; /* could not be laid out: not a program */
	static const int hots[] = { 1, 2, 0 };
	if (run_diff(&p, hots, NULL, true))
		abort();
	return 0;
}
