/* Structure-aware libFuzzer target for the meaning of a saved state (src/migration,
 * src/cpu/riscv/state.c, the devices' load functions): where fuzz_stream throws bytes at the
 * reader, this one keeps a snapshot well-formed and changes values inside its records (a
 * hart's registers and CSRs, the clock, the devices' state), recomputing each record's
 * CRC, so that every input reaches the checks on what the values mean. A state that loads
 * must be one this VMM can run: the harts then run a few thousand instructions (a small
 * loop of loads, stores, CSR reads and ecall in the seed), and what they and the devices
 * leave must still be a state the reader accepts (a privilege mode, paging scheme or
 * mstatus the hart cannot have would show up there, or as a crash under the sanitizers).
 *
 *   make fuzz && build/fuzz/fuzz_state -max_total_time=60 build/fuzz/corpus-state
 *
 * At start-up the target writes a snapshot of its machine (two harts, a virtio-blk disk,
 * a virtio-rng) into the corpus directory (the first directory argument) as the seed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/event.h"
#include "core/vm.h"
#include "cpu/riscv/hart.h"
#include "cpu/riscv/state.h"
#include "machine/riscv-virt/virt.h"
#include "migration/migration.h"
#include "migration/sbuf.h"
#include "migration/stream.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

/* The CPU record's payload: u32 hart id, then hart_save's fields. */
#define CPU_X 4
#define CPU_PC 260
#define CPU_PRIV 276
#define CPU_FFLAGS 533
#define CPU_FRM 537
#define CPU_LR_VALID 557
#define CPU_CSRS 558
#define CPU_PMPADDR 814
#define CPU_LEN 942
/* How long a loaded state runs: this many instructions on hart 0, or this long. */
#define RUN_INSNS 3000
#define RUN_NS 5000000ULL

static struct vm_config cfg;
static struct vm vm;
static int data_fd = -1;
static char data_path[64];
static uint64_t misa; /* what every hart of this machine has */
/* How much of the input reached the harts, reported at exit: a target whose inputs all
 * get refused would test nothing. */
static uint64_t n_inputs, n_loaded, n_insns;

static void report(void)
{
	fprintf(stderr, "fuzz_state: %llu inputs, %llu loaded and run, %llu instructions\n",
		(unsigned long long)n_inputs, (unsigned long long)n_loaded,
		(unsigned long long)n_insns);
}

struct quiesce_ctx {
	unsigned busy;
};

static void run_quiesce(void *opaque)
{
	struct quiesce_ctx *c = opaque;
	c->busy = virt_quiesce(&vm);
}

static void run_unquiesce(void *opaque)
{
	(void)opaque;
	virt_unquiesce(&vm);
}

/* Devices stop taking requests and finish theirs, as before a migration's final state. */
static void quiesce(void)
{
	struct quiesce_ctx c;
	for (int k = 0; k < 10000; k++) { /* 5 s: a disk request takes far less */
		if (event_loop_run(vm.loop, run_quiesce, &c))
			abort();
		if (!c.busy)
			return;
		usleep(500);
	}
	fprintf(stderr, "fuzz_state: the devices do not go quiet\n");
	abort();
}

static void setup(void)
{
	char disk[] = "/tmp/mabo-fuzz-disk-XXXXXX";
	int fd = mkstemp(disk);

	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		abort();
	close(fd);
	cfg.memory = 2ULL << 20;
	cfg.cpus = 2;
	cfg.kernel = cfg.firmware = "none";
	cfg.ndevices = 2;
	cfg.devices[0].type = "virtio-blk";
	snprintf(cfg.devices[0].disk.path, sizeof(cfg.devices[0].disk.path), "%s", disk);
	cfg.devices[1].type = "virtio-rng";
	if (vm_init(&vm, &cfg) || virt_create(&vm) || event_loop_start(vm.loop))
		abort();
	unlink(disk); /* the open disk stays usable */
	misa = vm.harts[0]->misa;
	data_fd = memfd_create("fuzz-state", 0);
	if (data_fd < 0)
		abort();
	snprintf(data_path, sizeof(data_path), "/proc/self/fd/%d", data_fd);
	quiesce();
}

/* Writes a snapshot of the machine running a small loop to dir/seed-state. */
static void write_seed(const char *dir)
{
	/* auipc t0, 0; addi t1, t1, 1; sd t1, 256(t0); csrr t2, mstatus; lw t3, 0(t0);
	 * ecall (to mtvec, the loop's start). */
	static const uint32_t prog[] = { 0x00000297, 0x00130313, 0x1062b023,
					 0x300023f3, 0x0002ae03, 0x00000073 };
	char path[4096], err[200];
	struct migration *mig;
	struct migrate_status st;

	snprintf(path, sizeof(path), "%s/seed-state", dir);
	if (access(path, F_OK) == 0 || migration_create(&vm, &mig))
		return;
	memcpy(vm.ram.host, prog, sizeof(prog));
	for (int h = 0; h < vm.nharts; h++) {
		vm.harts[h]->pc = vm.ram.base;
		vm.harts[h]->mtvec = vm.ram.base;
	}
	if (migration_snapshot_start(mig, path, NULL, NULL, err, sizeof(err)) == 0) {
		do {
			usleep(10000);
			migration_get_status(mig, &st);
		} while (st.state == MIGRATE_ACTIVE);
	}
	migration_destroy(mig);
	quiesce();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	setup();
	atexit(report);
	for (int i = 1; i < *argc; i++) {
		const char *a = (*argv)[i];
		if (a[0] != '-' && access(a, W_OK) == 0) {
			write_seed(a);
			break;
		}
	}
	return 0;
}

/* ---- The mutator ---- */

static uint64_t rnd_state;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_n(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_n(uint8_t *p, unsigned n, uint64_t v)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A value for a field that held old: the edges and the shapes these fields take. */
static uint64_t interesting(uint64_t old)
{
	switch (rnd() % 14) {
	case 0: return 0;
	case 1: return 1;
	case 2: return rnd() % 4; /* privilege modes, small enums */
	case 3: return ~0ULL;
	case 4: return 1ULL << 63;
	case 5: return 1ULL << (rnd() % 64);
	case 6: return old ^ 1ULL << (rnd() % 64);
	case 7: return old + (rnd() % 33) - 16;
	case 8: return (uint64_t)(8 + rnd() % 4) << 60 | (rnd() & 0xfffff); /* satp modes */
	case 9: return vm.ram.base + rnd() % (vm.ram.size + 8192) - 4096;   /* near RAM */
	case 10: return old | (uint64_t)(rnd() % 4) << 11;		    /* MPP */
	case 11: return old * 2;
	case 12: return old >> (rnd() % 64);
	default: return rnd();
	}
}

/* Changes one field of the payload p[0, len) of a record of type. */
static void mutate_payload(uint8_t type, uint8_t *p, uint32_t len)
{
	unsigned off, width;

	if (!len)
		return;
	if (type == REC_CPU && len == CPU_LEN && rnd() % 2) {
		/* A field where hart_save put one. */
		switch (rnd() % 8) {
		case 0: off = CPU_PRIV, width = 1; break;
		case 1: off = CPU_PC, width = 8; break;
		case 2: off = CPU_FFLAGS + 4 * (unsigned)(rnd() % 2), width = 4; break;
		case 3: off = CPU_LR_VALID, width = 1; break;
		case 4: off = CPU_X + 8 * (unsigned)(rnd() % 32), width = 8; break;
		case 5: off = CPU_PMPADDR + 8 * (unsigned)(rnd() % 16), width = 8; break;
		default: off = CPU_CSRS + 8 * (unsigned)(rnd() % 32), width = 8; break;
		}
	} else {
		static const unsigned widths[] = { 1, 2, 4, 8 };
		width = widths[rnd() % 4];
		if (width > len)
			width = 1;
		off = (unsigned)(rnd() % (len - width + 1));
		if (rnd() % 2)
			off &= ~(width - 1); /* most fields sit at multiples of their size */
	}
	put_n(p + off, width, interesting(get_n(p + off, width)));
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
	struct {
		size_t off;
		uint32_t len;
		uint8_t type;
	} recs[512];
	size_t nrec = 0, state_recs = 0;

	rnd_state = (uint64_t)seed * 0x9e3779b97f4a7c15ULL + 1;
	if (size < 16 || memcmp(data, STREAM_MAGIC, 8) != 0 || rnd() % 32 == 0)
		return LLVMFuzzerMutate(data, size, max_size);
	for (size_t off = 16; off + 12 <= size && nrec < 512;) {
		uint32_t len = rd32(data + off + 4);
		if (len > size - off - 12)
			break;
		recs[nrec].off = off;
		recs[nrec].len = len;
		recs[nrec].type = data[off];
		if (data[off] == REC_CPU || data[off] == REC_CLOCK || data[off] == REC_DEVICES)
			state_recs++;
		nrec++;
		off += 12 + (size_t)len;
	}
	if (!nrec)
		return LLVMFuzzerMutate(data, size, max_size);
	/* Mostly the records that carry meaning; now and then any (config, pages). */
	size_t k;
	do
		k = rnd() % nrec;
	while (state_recs && rnd() % 8 && recs[k].type != REC_CPU && recs[k].type != REC_CLOCK &&
	       recs[k].type != REC_DEVICES);
	uint8_t *p = data + recs[k].off + 8;
	uint32_t len = recs[k].len;
	if (rnd() % 4) {
		unsigned n = 1 + (unsigned)(rnd() % 3);
		for (unsigned i = 0; i < n; i++)
			mutate_payload(recs[k].type, p, len);
	} else {
		/* libFuzzer's own byte mutations, inside the payload and of the same length
		 * (lengths inside a record are the framing fuzz_stream explores). */
		uint8_t *tmp = malloc(len ? len : 1);
		if (!tmp)
			return size;
		memcpy(tmp, p, len);
		size_t n = LLVMFuzzerMutate(tmp, len, len);
		memcpy(p, tmp, n);
		free(tmp);
	}
	/* The record stays well-formed: its CRC is made good again. */
	wr32(p + len, crc32c(crc32c(0, p - 8, 8), p, len));
	return size;
}

/* ---- Running what loaded ---- */

static void *hart_thread(void *arg)
{
	hart_run(arg);
	return NULL;
}

/* Checks what a hart holds now against what the hart can be in; aborts with the reason. */
static void check_hart(struct hart *h, const char *when)
{
	const char *bad = NULL;
	unsigned mode = (unsigned)(h->satp >> 60);

	if (h->priv != PRV_U && h->priv != PRV_S && h->priv != PRV_M)
		bad = "privilege mode";
	else if (h->pc & 1)
		bad = "odd pc";
	else if (mode != 0 && mode != 8 && mode != 9)
		bad = "satp mode";
	else if (((h->mstatus & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT) == 2)
		bad = "mstatus.MPP";
	else if (h->misa != misa)
		bad = "misa";
	else if (h->x[0] != 0)
		bad = "x0";
	if (bad) {
		fprintf(stderr, "fuzz_state: hart %d %s: bad %s (pc 0x%llx priv %u satp 0x%llx)\n",
			(int)h->mhartid, when, bad, (unsigned long long)h->pc, (unsigned)h->priv,
			(unsigned long long)h->satp);
		abort();
	}
	/* And the reader takes back what the hart left. */
	struct sbuf b;
	struct sreader r;
	sbuf_init(&b);
	hart_save(h, &b);
	sreader_init(&r, b.data, b.len);
	if (b.oom || hart_load(h, &r, HART_STATE_VERSION) || r.left) {
		fprintf(stderr, "fuzz_state: hart %d %s: its own state is refused: %s\n",
			(int)h->mhartid, when, r.err ? r.err : "trailing bytes");
		abort();
	}
	sbuf_free(&b);
}

/* What the devices hold after the guest ran (and they went quiet, as for a migration) must
 * load again: else the next migration of such a guest would fail. */
static void check_devices(void)
{
	struct sbuf b;
	struct sreader r;

	sbuf_init(&b);
	virt_save_state(&vm, &b);
	sreader_init(&r, b.data, b.len);
	if (b.oom || virt_load_state(&vm, &r)) {
		fprintf(stderr, "fuzz_state: the devices' own state is refused: %s\n",
			r.err ? r.err : "out of memory");
		abort();
	}
	sbuf_free(&b);
}

static void run_briefly(void)
{
	pthread_t threads[VM_MAX_CPUS];
	int started = 0;
	uint64_t instret0 = vm.harts[0]->instret;

	if (event_loop_run(vm.loop, run_unquiesce, NULL))
		abort();
	atomic_store(&vm.exit_reason, VM_EXIT_NONE);
	vm.running_harts = vm.nharts;
	for (int i = 0; i < vm.nharts; i++) {
		if (pthread_create(&threads[i], NULL, hart_thread, vm.harts[i]))
			abort();
		started++;
	}
	uint64_t t0 = host_now_ns();
	while (host_now_ns() - t0 < RUN_NS && !atomic_load(&vm.exit_reason) &&
	       __atomic_load_n(&vm.harts[0]->instret, __ATOMIC_RELAXED) - instret0 < RUN_INSNS)
		usleep(100);
	vm_request_exit(&vm, VM_EXIT_TIMEOUT, 0);
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	n_insns += vm.harts[0]->instret - instret0;
	atomic_store(&vm.exit_reason, VM_EXIT_NONE);
	quiesce();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (data_fd < 0)
		setup();
	n_inputs++;
	if (ftruncate(data_fd, 0) < 0 || pwrite(data_fd, data, size, 0) != (ssize_t)size)
		abort();
	/* The reader's lines go to the quiet log (quiet_log.c); stderr stays open for a crash's
	 * report. */
	int err = migration_restore(&vm, data_path);
	if (err > 0)
		__builtin_trap();
	if (err)
		return 0;
	n_loaded++;
	for (int i = 0; i < vm.nharts; i++)
		check_hart(vm.harts[i], "as loaded");
	/* The guest clock: never beyond what the reader allows (100 years). */
	if (vm_mtime(&vm) > 100ULL * 36525 * 864 * VM_TIMEBASE_HZ + 3600 * VM_TIMEBASE_HZ) {
		fprintf(stderr, "fuzz_state: the guest clock reads %llu ticks\n",
			(unsigned long long)vm_mtime(&vm));
		abort();
	}
	run_briefly();
	for (int i = 0; i < vm.nharts; i++)
		check_hart(vm.harts[i], "after running");
	check_devices();
	return 0;
}
