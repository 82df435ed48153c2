/* diskio: disk throughput measured inside the guest, for bench/disk.sh.
 *
 *   diskio DEVICE MIB OPS
 *
 * On DEVICE, opened with O_DIRECT (so the guest's page cache is out of the way and every
 * request reaches the virtual disk), one after the other:
 *   seq-write   MIB MiB in 1 MiB requests, then fsync (counted in the time);
 *   seq-read    the same MiB MiB back in 1 MiB requests, checking what was written;
 *   rand-read   OPS requests of 4 KiB at random 4 KiB-aligned offsets within the first MIB MiB;
 *   rand-write  OPS such writes, then fsync.
 * One request at a time (queue depth 1). Times come from CLOCK_MONOTONIC (the guest's clock).
 * Prints one line per test:
 *   diskio: seq-write bytes=134217728 ops=128 secs=2.345678 MBps=57.220 IOPS=54.57
 * (MB = 10^6 bytes) and exits 0, or prints what failed and exits 1.
 *
 * Built static by bench/disk.sh with riscv64-linux-gnu-gcc, so it needs nothing from the
 * guest. The random offsets come from a fixed-seed generator: every run does the same I/O. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEQ_BLOCK (1u << 20)
#define RAND_BLOCK 4096u

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *name, uint64_t bytes, uint64_t ops, double secs)
{
	printf("diskio: %s bytes=%llu ops=%llu secs=%.6f MBps=%.3f IOPS=%.2f\n", name,
	       (unsigned long long)bytes, (unsigned long long)ops, secs,
	       secs > 0 ? (double)bytes / secs / 1e6 : 0.0, secs > 0 ? (double)ops / secs : 0.0);
	fflush(stdout);
}

/* A block's contents: its index and a simple pattern, so a read can check it. */
static void fill(uint8_t *buf, size_t len, uint64_t index)
{
	uint64_t x = index * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(buf + i, &x, 8);
	}
}

static uint64_t rng_state = 0x6d61626f726f7368ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static int io_all(int fd, uint8_t *buf, size_t len, uint64_t off, int write)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write ? pwrite(fd, buf + done, len - done, (off_t)(off + done))
				  : pread(fd, buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "diskio: %s at byte %llu: %s\n", write ? "write" : "read",
				(unsigned long long)(off + done),
				n < 0 ? strerror(errno) : "end of device");
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: diskio DEVICE MIB OPS\n");
		return 2;
	}
	const char *dev = argv[1];
	uint64_t mib = strtoull(argv[2], NULL, 10);
	uint64_t ops = strtoull(argv[3], NULL, 10);
	if (mib == 0 || ops == 0) {
		fprintf(stderr, "diskio: MIB and OPS must be positive\n");
		return 2;
	}
	int fd = open(dev, O_RDWR | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "diskio: cannot open %s with O_DIRECT: %s\n", dev, strerror(errno));
		return 1;
	}
	uint8_t *buf;
	if (posix_memalign((void **)&buf, 4096, SEQ_BLOCK)) {
		fprintf(stderr, "diskio: out of memory\n");
		return 1;
	}

	/* Sequential write: the blocks are made before the clock starts. */
	uint8_t *blocks = malloc(SEQ_BLOCK * 4);
	if (!blocks) {
		fprintf(stderr, "diskio: out of memory\n");
		return 1;
	}
	for (unsigned i = 0; i < 4; i++)
		fill(blocks + (size_t)i * SEQ_BLOCK, SEQ_BLOCK, i);
	double t0 = now();
	for (uint64_t i = 0; i < mib; i++) {
		memcpy(buf, blocks + (i % 4) * SEQ_BLOCK, SEQ_BLOCK);
		if (io_all(fd, buf, SEQ_BLOCK, i * SEQ_BLOCK, 1))
			return 1;
	}
	if (fsync(fd)) {
		fprintf(stderr, "diskio: fsync: %s\n", strerror(errno));
		return 1;
	}
	report("seq-write", mib * SEQ_BLOCK, mib, now() - t0);

	/* Sequential read, checked after the clock stops for each block. */
	double busy = 0;
	for (uint64_t i = 0; i < mib; i++) {
		double a = now();
		if (io_all(fd, buf, SEQ_BLOCK, i * SEQ_BLOCK, 0))
			return 1;
		busy += now() - a;
		if (memcmp(buf, blocks + (i % 4) * SEQ_BLOCK, SEQ_BLOCK) != 0) {
			fprintf(stderr, "diskio: block %llu reads back different data\n",
				(unsigned long long)i);
			return 1;
		}
	}
	report("seq-read", mib * SEQ_BLOCK, mib, busy);

	uint64_t slots = mib * (SEQ_BLOCK / RAND_BLOCK);
	t0 = now();
	for (uint64_t i = 0; i < ops; i++)
		if (io_all(fd, buf, RAND_BLOCK, (rng() % slots) * RAND_BLOCK, 0))
			return 1;
	report("rand-read", ops * RAND_BLOCK, ops, now() - t0);

	t0 = now();
	for (uint64_t i = 0; i < ops; i++)
		if (io_all(fd, buf, RAND_BLOCK, (rng() % slots) * RAND_BLOCK, 1))
			return 1;
	if (fsync(fd)) {
		fprintf(stderr, "diskio: fsync: %s\n", strerror(errno));
		return 1;
	}
	report("rand-write", ops * RAND_BLOCK, ops, now() - t0);
	close(fd);
	return 0;
}
