/* libFuzzer target for the split virtqueue (src/virtio/virtqueue.c): the input is a queue
 * configuration plus the whole of a small guest RAM (descriptor table, rings, indirect tables,
 * buffers), i.e. everything a malicious guest controls. The device side then takes chains,
 * reads and writes them, gives them back and decides on notifications, as a device would.
 *
 * Whatever the input, the queue code must not crash, hang or touch memory outside guest RAM
 * (AddressSanitizer watches the RAM buffer's edges), and every chain it hands out must lie
 * wholly in RAM within the limits asked for.
 *
 *   make fuzz && build/fuzz/fuzz_virtqueue -max_total_time=60 build/fuzz/corpus-virtqueue */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/vm.h"
#include "virtio/virtqueue.h"

#define FUZZ_RAM_SIZE 0x8000 /* 32 KiB of guest RAM at RAM_BASE */
#define FUZZ_HEADER 16

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

static int fuzz_errors;

static void fuzz_on_error(void *opaque, const struct virtq *q, const char *why)
{
	(void)opaque;
	(void)q;
	CHECK(why && *why);
	fuzz_errors++;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void check_chain(const struct vm *vm, const struct virtq *q, const struct virtq_chain *c,
			unsigned max_segs)
{
	uint64_t out = 0, in = 0;

	CHECK(c->head < q->size);
	CHECK(c->nsegs <= max_segs);
	CHECK(c->nout <= c->nsegs);
	for (unsigned i = 0; i < c->nsegs; i++) {
		const struct virtq_seg *s = &c->segs[i];
		CHECK(s->write == (i >= c->nout));
		if (s->len)
			CHECK(vm_ram_ptr(vm, s->addr, s->len) != NULL);
		if (s->write)
			in += s->len;
		else
			out += s->len;
	}
	CHECK(out == c->out_len && in == c->in_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct virtq_seg segs[VIRTQ_MAX_SEGS];
	static uint8_t scratch[512];

	if (size < FUZZ_HEADER)
		return 0;
	struct vm vm;
	memset(&vm, 0, sizeof(vm));
	/* Exactly the RAM's size, so ASan flags any access past either end. */
	uint8_t *ram = malloc(FUZZ_RAM_SIZE);
	if (!ram)
		return 0;
	memset(ram, 0, FUZZ_RAM_SIZE);
	memcpy(ram, data + FUZZ_HEADER,
	       size - FUZZ_HEADER < FUZZ_RAM_SIZE ? size - FUZZ_HEADER : FUZZ_RAM_SIZE);
	vm.ram.base = RAM_BASE;
	vm.ram.size = FUZZ_RAM_SIZE;
	vm.ram.host = ram;

	/* Header: size exponent and features, the device's segment limit, the ring placement
	 * (usually the default one; sometimes anywhere, outside RAM included), lengths. */
	uint8_t flags = data[0];
	unsigned max_segs = 1 + (unsigned)data[1] * 4;
	uint32_t read_len = data[2] * 2u, write_len = data[3] * 2u;
	struct virtq q;
	fuzz_errors = 0;
	virtq_init(&q, &vm, 0, fuzz_on_error, NULL);
	q.size = (uint16_t)(1u << (flags & 7)); /* 1 .. 128 */
	if (flags & 0x80)
		q.size = (uint16_t)get32(data + 4) & 0x3ff; /* invalid sizes included */
	if (flags & 0x40) {
		q.desc = RAM_BASE - 0x1000 + get32(data + 4);
		q.avail = RAM_BASE - 0x1000 + get32(data + 8);
		q.used = RAM_BASE - 0x1000 + get32(data + 12);
	} else {
		/* Packed at the start of RAM, so that short inputs reach the avail ring. */
		uint16_t n = q.size ? q.size : 1;
		q.desc = RAM_BASE;
		q.avail = RAM_BASE + VIRTQ_DESC_BYTES(n);
		q.used = (q.avail + VIRTQ_AVAIL_BYTES(n) + 3) & ~3ULL;
	}
	if (virtq_enable(&q, 128, flags & 0x08, flags & 0x10) != 0) {
		CHECK(fuzz_errors == 1 && q.broken && !q.ready);
		goto out;
	}

	/* Take chains until the ring is empty or the queue breaks; bounded, so a guest cannot
	 * keep the device here. */
	for (unsigned iter = 0; iter < 2u * q.size + 8; iter++) {
		struct virtq_chain c;
		if (iter % 5 == 3)
			virtq_disable_notify(&q);
		int r = virtq_pop(&q, segs, max_segs, &c);
		CHECK(r == -EIO || r == 0 || r == 1);
		if (r < 0) {
			CHECK(q.broken && fuzz_errors == 1);
			break;
		}
		if (r == 0) {
			if (!virtq_enable_notify(&q))
				break;
			continue;
		}
		check_chain(&vm, &q, &c, max_segs);
		ssize_t got =
			virtq_chain_read(&q, &c, iter, scratch,
					 read_len < sizeof(scratch) ? read_len : sizeof(scratch));
		CHECK(got >= 0 && (size_t)got <= sizeof(scratch));
		memset(scratch, 0xa5, sizeof(scratch));
		ssize_t put = virtq_chain_write(&q, &c, iter, scratch,
						write_len < sizeof(scratch) ? write_len
									    : sizeof(scratch));
		CHECK(put >= 0 && (uint64_t)put <= c.in_len);
		CHECK(virtq_push(&q, c.head, (uint32_t)put) == 0);
		(void)virtq_should_notify(&q);
	}
	CHECK(fuzz_errors <= 1);
out:
	free(ram);
	return 0;
}
