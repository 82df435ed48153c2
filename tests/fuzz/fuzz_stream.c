/* libFuzzer target for the saved-state reader (src/migration): the input is a snapshot file,
 * loaded into a real machine (two harts, a virtio-blk disk, a virtio-rng) as
 * `mabo-vmm --restore` would. Whatever the bytes, the reader must refuse or load them
 * without crashing, hanging or touching memory it should not (AddressSanitizer), and a
 * refused input must leave a reason.
 *
 *   make fuzz && build/fuzz/fuzz_stream -max_total_time=60 build/fuzz/corpus-stream
 *
 * At start-up the target writes a real snapshot of its machine into the corpus directory
 * (the first directory argument) as a seed. Built with FUZZING_BUILD_MODE_UNSAFE_FOR_
 * PRODUCTION, the reader does not reject records on their checksum, so mutations reach the
 * parsers behind it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "core/vm.h"
#include "machine/riscv-virt/virt.h"
#include "migration/migration.h"

static struct vm_config cfg;
static struct vm vm;
static int data_fd = -1;
static char data_path[64];

/* The log (core/log.c is not linked): the reader logs one line per refused input, so the
 * lines are formatted (format bugs still show) and dropped. Standard error itself stays
 * open: a crash's report (sanitizers, libFuzzer) must reach the fuzzer's log. */
static void fuzz_log(const char *fmt, va_list ap)
{
	char buf[1024];
	vsnprintf(buf, sizeof(buf), fmt, ap);
}
#define FUZZ_LOG_FN(name)                                                                          \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		fuzz_log(fmt, ap);                                                                 \
		va_end(ap);                                                                        \
	}
FUZZ_LOG_FN(log_error)
FUZZ_LOG_FN(log_warn)
FUZZ_LOG_FN(log_info)
FUZZ_LOG_FN(log_debug)
void log_set_verbose(int level)
{
	(void)level;
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
	data_fd = memfd_create("fuzz-stream", 0);
	if (data_fd < 0)
		abort();
	snprintf(data_path, sizeof(data_path), "/proc/self/fd/%d", data_fd);
}

/* Writes a snapshot of the machine (with a little state in it) to dir/seed-snapshot. */
static void write_seed(const char *dir)
{
	char path[4096], err[200];
	struct migration *mig;
	struct migrate_status st;

	snprintf(path, sizeof(path), "%s/seed-snapshot", dir);
	if (access(path, F_OK) == 0 || migration_create(&vm, &mig))
		return;
	memset(vm.ram.host + 4096, 0x5a, 64);
	if (migration_snapshot_start(mig, path, NULL, NULL, err, sizeof(err)) == 0) {
		do {
			usleep(10000);
			migration_get_status(mig, &st);
		} while (st.state == MIGRATE_ACTIVE);
	}
	migration_destroy(mig);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	setup();
	for (int i = 1; i < *argc; i++) {
		const char *a = (*argv)[i];
		if (a[0] != '-' && access(a, W_OK) == 0) {
			write_seed(a);
			break;
		}
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (data_fd < 0)
		setup();
	if (ftruncate(data_fd, 0) < 0 || pwrite(data_fd, data, size, 0) != (ssize_t)size)
		abort();
	int err = migration_restore(&vm, data_path);
	if (err > 0)
		__builtin_trap();
	return 0;
}
