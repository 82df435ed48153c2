/* Live migration and snapshots (see migration.h; the stream is in stream.h and
 * docs/migration.md).
 *
 * Records of a stream, in order:
 *   CONFIG        the VM's shape, checked by the receiver against its own options
 *   PAGES ...     guest pages; a migration sends several passes, each ended by PASS_END
 *   CLOCK         the guest clock and host stamps at the pause
 *   CPU x harts   each hart's state
 *   DEVICES       the machine's devices
 *   END
 * and, for a migration, the destination answers ACK (with the instant its vCPUs run) or
 * NACK (with a message).
 *
 * A PAGES payload is a list of entries, each a u64 (page number << 8 | kind) followed by
 * its data: kind 0 a whole page (4096 bytes), 1 a page of zeros (no data), 2 a page
 * compressed with zstd (u32 length, then the bytes). */
#define _GNU_SOURCE
#include "migration/migration.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "core/vm.h"
#include "cpu/riscv/state.h"
#include "machine/riscv-virt/virt.h"
#include "migration/sbuf.h"
#include "migration/stream.h"

#define CONFIG_VERSION 1
#define PAGES_VERSION 1
#define CLOCK_VERSION 1
#define CPU_VERSION 1
#define DEVICES_VERSION 1

#define PAGE_RAW 0
#define PAGE_ZERO 1
#define PAGE_ZSTD 2

#define PAGES_RECORD_BYTES (1U << 20)
#define DEFAULT_DOWNTIME_MS 300
#define MAX_PASSES 60
#define IO_TIMEOUT_S 10
#define QUIESCE_TIMEOUT_NS (30ULL * 1000000000ULL)
/* After a successful migration, the source waits this long for a client to read the
 * final status before it exits. */
#define DONE_LINGER_NS (5ULL * 1000000000ULL)

struct migration {
	struct vm *vm;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool thread_started;
	bool busy; /* a job runs */
	struct migrate_params params;
	char snapshot_path[4096];
	bool is_snapshot;
	struct migrate_status st; /* under lock */
	uint64_t start_ns;
	bool done_read; /* a client read the final status */
	struct stream *stream; /* the job's, while it runs (for cancel) */
	volatile int cancel;
	bool committing; /* the final state is sent: too late to cancel */
	migration_done_fn done; /* the snapshot's caller, told when it ends */
	void *done_opaque;

	/* Auto-converge: a thread that holds the vCPUs throttle_pct % of the time. */
	pthread_t throttle_thread;
	bool throttle_running;
	volatile unsigned throttle_pct;
	volatile bool throttle_stop;
};

const char *migrate_state_name(enum migrate_state s)
{
	switch (s) {
	case MIGRATE_ACTIVE: return "active";
	case MIGRATE_COMPLETED: return "completed";
	case MIGRATE_FAILED: return "failed";
	case MIGRATE_CANCELLED: return "cancelled";
	default: return "none";
	}
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL),
			       .tv_nsec = (long)(ns % 1000000000ULL) };
	nanosleep(&ts, NULL);
}

/* ---- The VM's shape ---- */

static void config_save(const struct vm *vm, struct sbuf *b)
{
	const struct vm_config *cfg = vm->cfg;

	sbuf_u64(b, vm->ram.base);
	sbuf_u64(b, vm->ram.size);
	sbuf_u32(b, (uint32_t)vm->nharts);
	sbuf_u32(b, (uint32_t)cfg->ndevices);
	for (int i = 0; i < cfg->ndevices; i++)
		sbuf_str(b, cfg->devices[i].type);
}

/* Checks that the stream's VM has this VM's shape; a one-line reason in why. */
static int config_check(const struct vm *vm, const uint8_t *p, uint32_t len, char *why,
			size_t n)
{
	struct sreader r;
	const struct vm_config *cfg = vm->cfg;

	sreader_init(&r, p, len);
	uint64_t base = sreader_u64(&r), size = sreader_u64(&r);
	uint32_t harts = sreader_u32(&r), ndev = sreader_u32(&r);
	if (!sreader_ok(&r)) {
		snprintf(why, n, "malformed VM description");
		return -EPROTO;
	}
	if (base != vm->ram.base || size != vm->ram.size) {
		snprintf(why, n, "the VM has %" PRIu64 " MiB of memory, this one %" PRIu64 " MiB",
			 size >> 20, vm->ram.size >> 20);
		return -EINVAL;
	}
	if (harts != (uint32_t)vm->nharts) {
		snprintf(why, n, "the VM has %u vCPUs, this one %d", harts, vm->nharts);
		return -EINVAL;
	}
	if (ndev != (uint32_t)cfg->ndevices) {
		snprintf(why, n, "the VM has %u devices, this one %d", ndev, cfg->ndevices);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < ndev; i++) {
		char type[64];
		sreader_str(&r, type, sizeof(type));
		if (!sreader_ok(&r)) {
			snprintf(why, n, "malformed VM description");
			return -EPROTO;
		}
		if (strcmp(type, cfg->devices[i].type) != 0) {
			snprintf(why, n, "device %u is a %s there, a %s here", i, type,
				 cfg->devices[i].type);
			return -EINVAL;
		}
	}
	if (r.left) {
		snprintf(why, n, "malformed VM description");
		return -EPROTO;
	}
	return 0;
}

/* ---- Pages ---- */

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	for (size_t i = 0; i < PAGE_SIZE / 8; i += 8)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		    w[i + 7])
			return false;
	return true;
}

struct page_sender {
	struct stream *s;
	struct sbuf rec;
	ZSTD_CCtx *zctx; /* NULL: no compression */
	uint8_t zbuf[PAGE_SIZE + 512];
	uint64_t pages, zero_pages;
};

static int pages_flush(struct page_sender *ps)
{
	if (!ps->rec.len)
		return 0;
	if (ps->rec.oom)
		return -ENOMEM;
	int err = stream_write_record(ps->s, REC_PAGES, PAGES_VERSION, ps->rec.data,
				      (uint32_t)ps->rec.len);
	sbuf_reset(&ps->rec);
	return err;
}

static int pages_add(struct page_sender *ps, uint64_t idx, const uint8_t *page)
{
	if (page_is_zero(page)) {
		sbuf_u64(&ps->rec, idx << 8 | PAGE_ZERO);
		ps->zero_pages++;
	} else {
		size_t z = 0;
		if (ps->zctx) {
			z = ZSTD_compressCCtx(ps->zctx, ps->zbuf, sizeof(ps->zbuf), page, PAGE_SIZE,
					      1);
			if (ZSTD_isError(z) || z >= PAGE_SIZE - 64)
				z = 0;
		}
		if (z) {
			sbuf_u64(&ps->rec, idx << 8 | PAGE_ZSTD);
			sbuf_u32(&ps->rec, (uint32_t)z);
			sbuf_put(&ps->rec, ps->zbuf, z);
		} else {
			sbuf_u64(&ps->rec, idx << 8 | PAGE_RAW);
			sbuf_put(&ps->rec, page, PAGE_SIZE);
		}
	}
	ps->pages++;
	if (ps->rec.len >= PAGES_RECORD_BYTES)
		return pages_flush(ps);
	return 0;
}

/* Pages of guest RAM the host never backed: neither present nor swapped out, so they read
 * as zeros. Found in /proc/self/pagemap (bit 63 present, bit 62 swapped), which saves
 * reading, and so mapping, every untouched page of a large guest. Fills mask (a bit per
 * page of the 64 from page first); 0 when the kernel does not say. */
#define PAGEMAP_CHUNK 4096 /* pages per read */

struct pagemap {
	int fd;
	uint64_t first; /* page number of ent[0] */
	uint64_t count;
	uint64_t ent[PAGEMAP_CHUNK];
};

static uint64_t pagemap_unbacked(struct pagemap *pm, const struct vm *vm, uint64_t first)
{
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	uint64_t mask = 0;

	if (pm->fd < 0)
		return 0;
	if (first < pm->first || first + 64 > pm->first + pm->count) {
		uint64_t n = npages - first < PAGEMAP_CHUNK ? npages - first : PAGEMAP_CHUNK;
		off_t off = (off_t)(((uintptr_t)vm->ram.host >> PAGE_SHIFT) + first) * 8;
		ssize_t r = pread(pm->fd, pm->ent, n * 8, off);
		if (r < 0 || (size_t)r < n * 8 || n < 64) {
			pm->count = 0;
			return 0;
		}
		pm->first = first;
		pm->count = n;
	}
	for (unsigned i = 0; i < 64; i++)
		if (!(pm->ent[first - pm->first + i] >> 62))
			mask |= 1ULL << i;
	return mask;
}

/* Sends every page whose bit is set in bitmap and clears the bits. */
static int pages_send_bitmap(struct migration *m, struct page_sender *ps, uint64_t *bitmap)
{
	struct vm *vm = m->vm;
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	static const uint8_t zero_page[PAGE_SIZE];
	struct pagemap *pm = malloc(sizeof(*pm));
	int err = 0;

	if (pm) {
		pm->fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		pm->first = pm->count = 0;
	}
	for (uint64_t w = 0; w < (npages + 63) / 64 && !err; w++) {
		uint64_t bits = bitmap[w];
		bitmap[w] = 0;
		uint64_t unbacked = bits && pm && (w + 1) * 64 <= npages
					    ? pagemap_unbacked(pm, vm, w * 64) : 0;
		while (bits) {
			if (m->cancel) {
				err = -ECANCELED;
				break;
			}
			unsigned bit = (unsigned)__builtin_ctzll(bits);
			uint64_t idx = w * 64 + bit;
			bits &= bits - 1;
			const uint8_t *page = unbacked >> bit & 1 ? zero_page
								: vm->ram.host + idx * PAGE_SIZE;
			err = pages_add(ps, idx, page);
			if (err)
				break;
		}
	}
	if (pm) {
		if (pm->fd >= 0)
			close(pm->fd);
		free(pm);
	}
	return err ? err : pages_flush(ps);
}

static uint64_t bitmap_count(const uint64_t *bitmap, uint64_t npages)
{
	uint64_t n = 0;
	for (uint64_t w = 0; w < (npages + 63) / 64; w++)
		n += (uint64_t)__builtin_popcountll(bitmap[w]);
	return n;
}

/* Loads a PAGES payload into guest RAM. */
static int pages_load(struct vm *vm, ZSTD_DCtx *dctx, uint64_t *written, const uint8_t *p,
		      uint32_t len, char *why, size_t n)
{
	struct sreader r;
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;

	sreader_init(&r, p, len);
	while (r.left) {
		uint64_t e = sreader_u64(&r);
		uint64_t idx = e >> 8;
		unsigned kind = e & 0xff;
		if (!sreader_ok(&r) || idx >= npages) {
			snprintf(why, n, "page entry out of range");
			return -EPROTO;
		}
		uint8_t *dst = vm->ram.host + idx * PAGE_SIZE;
		bool was_written = !written || (written[idx / 64] >> (idx % 64) & 1);
		if (written && kind != PAGE_ZERO)
			written[idx / 64] |= 1ULL << (idx % 64);
		if (kind == PAGE_ZERO) {
			/* A page never written here is still zero: do not touch it (that would
			 * map it). */
			if (was_written && !page_is_zero(dst))
				memset(dst, 0, PAGE_SIZE);
		} else if (kind == PAGE_RAW) {
			const uint8_t *src = sreader_take(&r, PAGE_SIZE);
			if (!src) {
				snprintf(why, n, "truncated page");
				return -EPROTO;
			}
			memcpy(dst, src, PAGE_SIZE);
		} else if (kind == PAGE_ZSTD) {
			uint32_t z = sreader_len(&r, PAGE_SIZE + 512, "compressed page too long");
			const uint8_t *src = sreader_take(&r, z);
			if (!src) {
				snprintf(why, n, "truncated compressed page");
				return -EPROTO;
			}
			size_t out = ZSTD_decompressDCtx(dctx, dst, PAGE_SIZE, src, z);
			if (ZSTD_isError(out) || out != PAGE_SIZE) {
				snprintf(why, n, "a compressed page does not decompress");
				return -EPROTO;
			}
		} else {
			snprintf(why, n, "unknown page kind %u", kind);
			return -EPROTO;
		}
	}
	return 0;
}

/* ---- State at the pause ---- */

struct sync_ctx {
	struct vm *vm;
	uint64_t *bitmap;
	unsigned busy;
};

static void run_dirty_sync(void *opaque)
{
	struct sync_ctx *c = opaque;
	vm_dirty_log_sync(c->vm, c->bitmap);
}

static void run_quiesce(void *opaque)
{
	struct sync_ctx *c = opaque;
	c->busy = virt_quiesce(c->vm);
}

static void run_unquiesce(void *opaque)
{
	struct sync_ctx *c = opaque;
	virt_unquiesce(c->vm);
}

/* Harvests the dirty log into bitmap, with the harts held for the instant it takes. */
static int dirty_sync(struct vm *vm, uint64_t *bitmap, bool already_paused)
{
	struct sync_ctx c = { .vm = vm, .bitmap = bitmap };
	if (!already_paused)
		vm_pause(vm);
	int err = event_loop_run(vm->loop, run_dirty_sync, &c);
	if (!already_paused)
		vm_resume(vm);
	return err;
}

/* With the vCPUs paused: waits until every device is quiet and its writes durable. */
static int quiesce_devices(struct migration *m, char *why, size_t n)
{
	struct sync_ctx c = { .vm = m->vm };
	uint64_t deadline = host_now_ns() + QUIESCE_TIMEOUT_NS;

	for (;;) {
		if (event_loop_run(m->vm->loop, run_quiesce, &c)) {
			snprintf(why, n, "out of memory");
			return -ENOMEM;
		}
		if (!c.busy)
			return 0;
		if (m->cancel) {
			snprintf(why, n, "cancelled");
			return -ECANCELED;
		}
		if (host_now_ns() > deadline) {
			snprintf(why, n, "disks did not finish their requests in time");
			return -ETIMEDOUT;
		}
		sleep_ns(200000);
	}
}

static void unquiesce_devices(struct vm *vm)
{
	struct sync_ctx c = { .vm = vm };
	if (event_loop_run(vm->loop, run_unquiesce, &c))
		log_warn("migration: cannot restart the devices' queues");
}

/* Writes CLOCK, CPU x harts, DEVICES and END; the vCPUs are paused and the devices quiet. */
static int write_final_state(struct vm *vm, struct stream *s, uint64_t t_pause)
{
	struct sbuf b;
	int err;

	sbuf_init(&b);
	sbuf_u64(&b, vm_mtime(vm));
	sbuf_u64(&b, realtime_ns());
	sbuf_u64(&b, t_pause);
	err = stream_write_record(s, REC_CLOCK, CLOCK_VERSION, b.data, (uint32_t)b.len);
	for (int i = 0; i < vm->nharts && !err; i++) {
		sbuf_reset(&b);
		sbuf_u32(&b, (uint32_t)i);
		hart_save(vm->harts[i], &b);
		err = b.oom ? -ENOMEM
			    : stream_write_record(s, REC_CPU, CPU_VERSION, b.data, (uint32_t)b.len);
	}
	if (!err) {
		sbuf_reset(&b);
		virt_save_state(vm, &b);
		if (b.oom || b.len > STREAM_MAX_PAYLOAD)
			err = -ENOMEM;
		else
			err = stream_write_record(s, REC_DEVICES, DEVICES_VERSION, b.data,
						  (uint32_t)b.len);
	}
	if (!err)
		err = stream_write_record(s, REC_END, 1, NULL, 0);
	if (!err)
		err = stream_flush(s);
	sbuf_free(&b);
	return err;
}

/* ---- Receiving (destination and restore) ---- */

struct loader {
	struct vm *vm;
	ZSTD_DCtx *dctx;
	bool have_config, have_clock, have_devices;
	uint8_t *cpu[VM_MAX_CPUS];
	uint32_t cpu_len[VM_MAX_CPUS];
	uint8_t *devices;
	uint32_t devices_len;
	uint64_t clock_mtime, clock_realtime, clock_pause_ns;
	unsigned passes;
	struct stream *ack; /* migration: where PASS_ACK goes; NULL for a snapshot */
	uint64_t *written;  /* pages written so far (others are still zero), or NULL */
	char why[200];
};

static void loader_free(struct loader *l)
{
	free(l->written);
	for (int i = 0; i < VM_MAX_CPUS; i++)
		free(l->cpu[i]);
	free(l->devices);
	ZSTD_freeDCtx(l->dctx);
}

static uint8_t *dup_bytes(const uint8_t *p, uint32_t n)
{
	uint8_t *d = malloc(n ? n : 1);
	if (d && n)
		memcpy(d, p, n);
	return d;
}

/* Reads records until END; the state is held, not yet loaded. */
static int loader_read(struct loader *l, struct stream *s)
{
	struct vm *vm = l->vm;
	size_t n = sizeof(l->why);

	for (;;) {
		uint8_t type;
		uint16_t ver;
		const uint8_t *p;
		uint32_t len;
		int err = stream_read_record(s, &type, &ver, &p, &len);
		if (err) {
			snprintf(l->why, n, "%s", s->err);
			return err;
		}
		if (type != REC_CONFIG && !l->have_config) {
			snprintf(l->why, n, "the stream does not start with the VM's description");
			return -EPROTO;
		}
		switch (type) {
		case REC_CONFIG:
			if (ver != CONFIG_VERSION || l->have_config) {
				snprintf(l->why, n, "unexpected VM description (version %u)", ver);
				return -EPROTO;
			}
			err = config_check(vm, p, len, l->why, n);
			if (err)
				return err;
			l->have_config = true;
			break;
		case REC_PAGES:
			if (ver != PAGES_VERSION) {
				snprintf(l->why, n, "pages of version %u", ver);
				return -EPROTO;
			}
			err = pages_load(vm, l->dctx, l->written, p, len, l->why, n);
			if (err)
				return err;
			break;
		case REC_PASS_END:
			l->passes++;
			/* Tell the source this pass is in: it measures the link end to end and
			 * never pauses the guest with a backlog still on its way. */
			if (l->ack) {
				err = stream_write_record(l->ack, REC_PASS_ACK, 1, NULL, 0);
				if (!err)
					err = stream_flush(l->ack);
				if (err) {
					snprintf(l->why, n, "%s", l->ack->err);
					return err;
				}
			}
			break;
		case REC_CLOCK: {
			struct sreader r;
			sreader_init(&r, p, len);
			l->clock_mtime = sreader_u64(&r);
			l->clock_realtime = sreader_u64(&r);
			l->clock_pause_ns = sreader_u64(&r);
			if (ver != CLOCK_VERSION || !sreader_ok(&r) || r.left) {
				snprintf(l->why, n, "malformed clock record");
				return -EPROTO;
			}
			l->have_clock = true;
			break;
		}
		case REC_CPU: {
			if (ver != CPU_VERSION || len < 4) {
				snprintf(l->why, n, "malformed CPU record");
				return -EPROTO;
			}
			uint32_t id = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				      (uint32_t)p[3] << 24;
			if (id >= (uint32_t)vm->nharts || l->cpu[id]) {
				snprintf(l->why, n, "CPU record for vCPU %u", id);
				return -EPROTO;
			}
			l->cpu[id] = dup_bytes(p + 4, len - 4);
			l->cpu_len[id] = len - 4;
			if (!l->cpu[id]) {
				snprintf(l->why, n, "out of memory");
				return -ENOMEM;
			}
			break;
		}
		case REC_DEVICES:
			if (ver != DEVICES_VERSION || l->have_devices) {
				snprintf(l->why, n, "unexpected device record");
				return -EPROTO;
			}
			l->devices = dup_bytes(p, len);
			l->devices_len = len;
			if (!l->devices) {
				snprintf(l->why, n, "out of memory");
				return -ENOMEM;
			}
			l->have_devices = true;
			break;
		case REC_END:
			if (!l->have_clock || !l->have_devices) {
				snprintf(l->why, n, "the state ends before the CPU and device state");
				return -EPROTO;
			}
			for (int i = 0; i < vm->nharts; i++)
				if (!l->cpu[i]) {
					snprintf(l->why, n, "no state for vCPU %d", i);
					return -EPROTO;
				}
			return 0;
		default:
			snprintf(l->why, n, "unknown record type %u", type);
			return -EPROTO;
		}
	}
}

/* Loads the held state into the (idle) VM. elapsed_ns: how far the guest clock moves on
 * from the pause (the time the migration's switch-over took; 0 for a snapshot). */
static int loader_apply(struct loader *l, uint64_t elapsed_ns)
{
	struct vm *vm = l->vm;
	size_t n = sizeof(l->why);

	for (int i = 0; i < vm->nharts; i++) {
		struct sreader r;
		sreader_init(&r, l->cpu[i], l->cpu_len[i]);
		if (hart_load(vm->harts[i], &r) || r.left) {
			snprintf(l->why, n, "vCPU %d: %s", i, r.err ? r.err : "trailing bytes");
			return -EPROTO;
		}
	}
	/* The guest clock continues from the pause: never backwards. */
	uint64_t ticks = l->clock_mtime + elapsed_ns / (1000000000ULL / VM_TIMEBASE_HZ);
	vm->clock_base_ns = host_now_ns() - ticks * (1000000000ULL / VM_TIMEBASE_HZ);
	struct sreader r;
	sreader_init(&r, l->devices, l->devices_len);
	if (virt_load_state(vm, &r)) {
		snprintf(l->why, n, "devices: %s", r.err ? r.err : "cannot load");
		return -EPROTO;
	}
	return 0;
}

int migration_restore(struct vm *vm, const char *path)
{
	struct loader l = { .vm = vm };
	struct stream s;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int err;

	if (fd < 0) {
		err = -errno;
		log_error("--restore '%s': %s", path, strerror(errno));
		return err;
	}
	err = stream_init(&s, fd);
	if (err) {
		close(fd);
		log_error("--restore '%s': out of memory", path);
		return err;
	}
	l.dctx = ZSTD_createDCtx();
	err = l.dctx ? stream_read_header(&s, STREAM_SNAPSHOT, NULL) : -ENOMEM;
	if (err)
		snprintf(l.why, sizeof(l.why), "%s", s.err[0] ? s.err : "out of memory");
	if (!err)
		err = loader_read(&l, &s);
	if (!err)
		err = loader_apply(&l, 0);
	if (err)
		log_error("--restore '%s': %s", path, l.why);
	loader_free(&l);
	stream_free(&s);
	close(fd);
	return err;
}

/* ---- Connections ---- */

static void set_timeouts(int fd, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* Splits "HOST:PORT" (HOST may be [v6]). */
static int split_host_port(const char *s, char *host, size_t hn, char *port, size_t pn)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || !colon[1])
		return -EINVAL;
	size_t len = (size_t)(colon - s);
	if (s[0] == '[' && len >= 2 && s[len - 1] == ']') {
		s++;
		len -= 2;
	}
	if (len >= hn || strlen(colon + 1) >= pn)
		return -EINVAL;
	memcpy(host, s, len);
	host[len] = 0;
	strcpy(port, colon + 1);
	return 0;
}

/* Opens a socket for uri: connected (listen = false) or listening. -errno with why. */
static int open_uri(const char *uri, bool listening, char *why, size_t n)
{
	int fd = -1, err;

	if (strncmp(uri, "unix:", 5) == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		const char *path = uri + 5;
		if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
			snprintf(why, n, "'%s': bad socket path", uri);
			return -EINVAL;
		}
		strcpy(sa.sun_path, path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto fail_errno;
		if (listening) {
			unlink(path);
			if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0)
				goto fail_errno;
		} else if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			goto fail_errno;
		}
		return fd;
	}
	if (strncmp(uri, "tcp:", 4) != 0) {
		snprintf(why, n, "'%s': must be tcp:HOST:PORT or unix:PATH", uri);
		return -EINVAL;
	}
	char host[256], port[32];
	if (split_host_port(uri + 4, host, sizeof(host), port, sizeof(port))) {
		snprintf(why, n, "'%s': must be tcp:HOST:PORT or unix:PATH", uri);
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = listening ? AI_PASSIVE : 0 };
	struct addrinfo *res = NULL;
	int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (gai) {
		snprintf(why, n, "'%s': %s", uri, gai_strerror(gai));
		return -EINVAL;
	}
	err = -ECONNREFUSED;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (listening) {
			int one = 1;
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1) == 0)
				break;
		} else {
			set_timeouts(fd, IO_TIMEOUT_S);
			if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
				break;
		}
		err = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(why, n, "'%s': %s", uri, strerror(-err));
		return err;
	}
	return fd;

fail_errno:
	err = -errno;
	snprintf(why, n, "'%s': %s", uri, strerror(errno));
	if (fd >= 0)
		close(fd);
	return err;
}

int migration_incoming(struct vm *vm, const char *uri)
{
	char why[200] = "";
	int lfd = open_uri(uri, true, why, sizeof(why));

	if (lfd < 0) {
		log_error("--incoming %s", why);
		return lfd;
	}
	log_info("waiting for a migration on %s", uri);
	int fd;
	do
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	int err = fd < 0 ? -errno : 0;
	if (strncmp(uri, "unix:", 5) == 0)
		unlink(uri + 5);
	close(lfd);
	if (err) {
		log_error("--incoming %s: accept: %s", uri, strerror(-err));
		return err;
	}
	/* From the first byte on, a stalled source is a failed migration, not a hang. */
	set_timeouts(fd, IO_TIMEOUT_S);

	struct loader l = { .vm = vm };
	struct stream s;
	err = stream_init(&s, fd);
	if (err) {
		close(fd);
		log_error("--incoming %s: out of memory", uri);
		return err;
	}
	struct stream ackw;
	bool ack_ok = stream_init(&ackw, fd) == 0;
	l.ack = ack_ok ? &ackw : NULL;
	l.written = calloc((vm->ram.size / PAGE_SIZE + 63) / 64, sizeof(uint64_t));
	l.dctx = ZSTD_createDCtx();
	err = l.dctx && ack_ok && l.written ? stream_read_header(&s, STREAM_MIGRATION, NULL)
					    : -ENOMEM;
	if (err)
		snprintf(l.why, sizeof(l.why), "%s", s.err[0] ? s.err : "out of memory");
	if (!err)
		err = loader_read(&l, &s);
	log_debug("migration: state received at %" PRIu64 " ms", host_now_ns() / 1000000);
	if (!err) {
		/* The guest clock moves on by the time the switch-over took (host clocks agree
		 * on one machine and, with NTP, between hosts); never backwards. */
		uint64_t now = realtime_ns();
		uint64_t elapsed = now > l.clock_realtime ? now - l.clock_realtime : 0;
		if (elapsed > 60ULL * 1000000000ULL)
			elapsed = 0; /* the clocks disagree: do not jump */
		err = loader_apply(&l, elapsed);
	}
	if (err) {
		log_error("incoming migration failed: %s", l.why);
		struct stream w;
		if (stream_init(&w, fd) == 0) {
			if (stream_write_record(&w, REC_NACK, 1, l.why, (uint32_t)strlen(l.why)) ==
			    0)
				(void)stream_flush(&w);
			stream_free(&w);
		}
	} else {
		/* Acknowledge with the instant the vCPUs start (the caller starts them next):
		 * from here on this VM is the one that runs. */
		struct stream w;
		uint8_t ack[8];
		uint64_t t_run = host_now_ns();
		log_debug("migration: state loaded at %" PRIu64 " ms", t_run / 1000000);
		for (int i = 0; i < 8; i++)
			ack[i] = (uint8_t)(t_run >> (8 * i));
		err = stream_init(&w, fd);
		if (!err) {
			err = stream_write_record(&w, REC_ACK, 1, ack, sizeof(ack));
			if (!err)
				err = stream_flush(&w);
			if (err)
				log_error("incoming migration failed: cannot acknowledge: %s",
					  w.err);
			stream_free(&w);
		}
		if (!err)
			log_info("migration received (%u passes, %" PRIu64 " MiB)", l.passes,
				 s.bytes >> 20);
	}
	loader_free(&l);
	if (ack_ok)
		stream_free(&ackw);
	stream_free(&s);
	close(fd);
	return err;
}

/* ---- The source's job ---- */

static void status_update(struct migration *m, void (*fn)(struct migrate_status *, void *),
			  void *arg)
{
	pthread_mutex_lock(&m->lock);
	fn(&m->st, arg);
	m->st.total_ms = (host_now_ns() - m->start_ns) / 1000000ULL;
	pthread_mutex_unlock(&m->lock);
}

static void *throttle_thread(void *arg)
{
	struct migration *m = arg;
	const uint64_t period = 20000000ULL; /* 20 ms */

	while (!m->throttle_stop) {
		unsigned pct = m->throttle_pct;
		if (!pct) {
			sleep_ns(period);
			continue;
		}
		vm_pause(m->vm);
		sleep_ns(period * pct / 100);
		vm_resume(m->vm);
		sleep_ns(period * (100 - pct) / 100);
	}
	return NULL;
}

static void throttle_set(struct migration *m, unsigned pct)
{
	m->throttle_pct = pct;
	if (pct && !m->throttle_running) {
		m->throttle_stop = false;
		if (pthread_create(&m->throttle_thread, NULL, throttle_thread, m) == 0)
			m->throttle_running = true;
	}
}

static void throttle_end(struct migration *m)
{
	if (m->throttle_running) {
		m->throttle_stop = true;
		pthread_join(m->throttle_thread, NULL);
		m->throttle_running = false;
	}
	m->throttle_pct = 0;
}

struct pass_info {
	unsigned pass;
	uint64_t remaining, dirty_rate, bw_mibps, expected_ms, bytes;
	unsigned throttle;
};

static void set_pass(struct migrate_status *st, void *arg)
{
	struct pass_info *p = arg;
	st->pass = p->pass;
	st->rounds = p->pass > 0 ? p->pass - 1 : 0;
	st->remaining_pages = p->remaining;
	st->dirty_rate_pps = p->dirty_rate;
	st->bandwidth_mibps = p->bw_mibps;
	st->expected_downtime_ms = p->expected_ms;
	st->bytes = p->bytes;
	st->throttle_pct = p->throttle;
}

/* Writes a whole snapshot with the guest paused. */
static int do_snapshot(struct migration *m, char *why, size_t n)
{
	struct vm *vm = m->vm;
	char tmp[4200];
	struct stream s;
	struct sbuf b;
	int err;

	snprintf(tmp, sizeof(tmp), "%s.tmp", m->snapshot_path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		snprintf(why, n, "'%.120s': %s", tmp, strerror(errno));
		return err;
	}
	err = stream_init(&s, fd);
	if (err) {
		close(fd);
		unlink(tmp);
		snprintf(why, n, "out of memory");
		return err;
	}
	sbuf_init(&b);
	struct page_sender ps = { .s = &s };
	sbuf_init(&ps.rec);
	if (m->params.compress)
		ps.zctx = ZSTD_createCCtx();

	vm_pause(vm);
	uint64_t t_pause = host_now_ns();
	err = quiesce_devices(m, why, n);
	if (!err) {
		config_save(vm, &b);
		err = stream_write_header(&s, STREAM_SNAPSHOT);
		if (!err)
			err = stream_write_record(&s, REC_CONFIG, CONFIG_VERSION, b.data,
						  (uint32_t)b.len);
		uint64_t npages = vm->ram.size >> PAGE_SHIFT;
		for (uint64_t i = 0; i < npages && !err; i++) {
			const uint8_t *pg = vm->ram.host + i * PAGE_SIZE;
			/* A snapshot leaves zero pages out: the restored VM starts zeroed. */
			if (!page_is_zero(pg))
				err = pages_add(&ps, i, pg);
			if (m->cancel)
				err = -ECANCELED;
		}
		if (!err)
			err = pages_flush(&ps);
		if (!err)
			err = write_final_state(vm, &s, t_pause);
		if (!err && fsync(fd) < 0)
			err = -errno;
		if (err && !why[0])
			snprintf(why, n, "'%.60s': %.120s", tmp, s.err[0] ? s.err : strerror(-err));
		unquiesce_devices(vm);
	}
	vm_resume(vm);
	uint64_t bytes = s.bytes;
	stream_free(&s);
	sbuf_free(&b);
	sbuf_free(&ps.rec);
	ZSTD_freeCCtx(ps.zctx);
	if (close(fd) < 0 && !err) {
		err = -errno;
		snprintf(why, n, "'%.120s': %s", tmp, strerror(errno));
	}
	if (!err && rename(tmp, m->snapshot_path) < 0) {
		err = -errno;
		snprintf(why, n, "'%.120s': %s", m->snapshot_path, strerror(errno));
	}
	if (err)
		unlink(tmp);
	pthread_mutex_lock(&m->lock);
	m->st.bytes = bytes;
	m->st.downtime_us = (host_now_ns() - t_pause) / 1000ULL;
	pthread_mutex_unlock(&m->lock);
	return err;
}

/* Waits for the destination to have loaded the pass just sent. */
static int wait_pass_ack(struct stream *s, char *why, size_t n)
{
	uint8_t type;
	uint16_t ver;
	const uint8_t *p;
	uint32_t len;
	int err = stream_read_record(s, &type, &ver, &p, &len);

	if (err)
		return err;
	if (type == REC_NACK) {
		snprintf(why, n, "the destination refused: %.*s", (int)(len > 150 ? 150 : len), p);
		return -EPROTO;
	}
	if (type != REC_PASS_ACK) {
		snprintf(why, n, "unexpected answer from the destination (record %u)", type);
		return -EPROTO;
	}
	return 0;
}

/* The migration proper; on failure before the acknowledgement the guest runs on here. */
static int do_migrate(struct migration *m, char *why, size_t n)
{
	struct vm *vm = m->vm;
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	size_t words = (size_t)((npages + 63) / 64);
	uint64_t *bitmap = calloc(words, sizeof(uint64_t));
	struct stream s;
	struct sbuf b;
	bool paused = false, quiesced = false;
	int err;

	if (!bitmap) {
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	int fd = open_uri(m->params.uri, false, why, n);
	if (fd < 0) {
		free(bitmap);
		return fd;
	}
	err = stream_init(&s, fd);
	if (err) {
		close(fd);
		free(bitmap);
		snprintf(why, n, "out of memory");
		return err;
	}
	s.rate_bps = (uint64_t)m->params.bandwidth_mibps << 20;
	pthread_mutex_lock(&m->lock);
	m->stream = &s;
	pthread_mutex_unlock(&m->lock);

	sbuf_init(&b);
	struct page_sender ps = { .s = &s };
	sbuf_init(&ps.rec);
	if (m->params.compress)
		ps.zctx = ZSTD_createCCtx();

	config_save(vm, &b);
	err = stream_write_header(&s, STREAM_MIGRATION);
	if (!err)
		err = stream_write_record(&s, REC_CONFIG, CONFIG_VERSION, b.data, (uint32_t)b.len);
	if (!err)
		err = vm_dirty_log_start(vm);

	uint64_t target_ns = (uint64_t)(m->params.downtime_ms ? m->params.downtime_ms
							      : DEFAULT_DOWNTIME_MS) *
			     1000000ULL;
	double bw = 0; /* bytes per second, measured */
	uint64_t last_sync = host_now_ns();
	unsigned pass = 0, no_progress = 0;
	uint64_t prev_dirty = UINT64_MAX;
	struct pass_info pi = { 0 };

	while (!err) {
		pass++;
		/* Harvest; from the second pass on, stop here when the rest fits the target. */
		vm_pause(vm);
		paused = true;
		err = dirty_sync(vm, bitmap, true);
		if (err)
			break;
		uint64_t now = host_now_ns();
		uint64_t dirty = bitmap_count(bitmap, npages);
		double dt = (double)(now - last_sync) / 1e9;
		last_sync = now;
		pi.pass = pass;
		pi.remaining = dirty;
		pi.dirty_rate = pass > 1 && dt > 0 ? (uint64_t)((double)dirty / dt) : 0;
		pi.bw_mibps = (uint64_t)(bw / (1 << 20));
		/* Zero pages cost little to send; count what was seen so far. */
		double cost = bw > 0 ? (double)dirty * PAGE_SIZE / bw : 1e9;
		pi.expected_ms = (uint64_t)(cost * 1000);
		pi.bytes = s.bytes;
		pi.throttle = m->throttle_pct;
		status_update(m, set_pass, &pi);
		if (pass > 1 && (cost * 1e9 <= (double)target_ns || pass >= MAX_PASSES))
			break; /* switch over, still paused */
		vm_resume(vm);
		paused = false;
		if (m->cancel) {
			err = -ECANCELED;
			break;
		}

		/* Auto-converge: when a pass does not shrink what is dirty, hold the vCPUs a
		 * growing share of the time. */
		if (pass > 2) {
			if (dirty >= prev_dirty * 9 / 10)
				no_progress++;
			else
				no_progress = 0;
			if (no_progress >= 2) {
				unsigned t = m->throttle_pct ? m->throttle_pct + 10 : 20;
				throttle_set(m, t > 99 ? 99 : t);
				no_progress = 0;
			}
		}
		prev_dirty = dirty;

		uint64_t t0 = host_now_ns(), b0 = s.bytes;
		err = pages_send_bitmap(m, &ps, bitmap);
		if (!err)
			err = stream_write_record(&s, REC_PASS_END, 1, NULL, 0);
		if (!err)
			err = stream_flush(&s);
		if (!err)
			err = wait_pass_ack(&s, why, n);
		uint64_t t1 = host_now_ns();
		if (!err && t1 > t0 && s.bytes > b0) {
			double sample = (double)(s.bytes - b0) / ((double)(t1 - t0) / 1e9);
			/* Short passes say little about the link: weigh by duration. */
			bw = bw > 0 && t1 - t0 < 50000000ULL ? (bw + sample) / 2 : sample;
		}
	}
	throttle_end(m);
	uint64_t t_pause = host_now_ns();
	if (!err) {
		/* Switch-over: paused here. Devices quiet and durable, the last pages, the
		 * state, then the destination's word. */
		quiesced = true;
		/* The guest waits now: the last pages go raw, and the bandwidth cap starts a
		 * fresh window instead of charging the passes' debt to the downtime. */
		ZSTD_freeCCtx(ps.zctx);
		ps.zctx = NULL;
		s.rate_start_ns = 0;
		err = quiesce_devices(m, why, n);
		uint64_t t_q = host_now_ns();
		if (!err)
			err = dirty_sync(vm, bitmap, true);
		uint64_t last = bitmap_count(bitmap, npages);
		uint64_t t_s = host_now_ns();
		if (!err)
			err = pages_send_bitmap(m, &ps, bitmap);
		uint64_t t_p = host_now_ns();
		if (!err)
			err = write_final_state(vm, &s, t_pause);
		log_debug("migration: switch-over: quiesce %" PRIu64 " us, sync %" PRIu64
			  " us, %" PRIu64 " pages in %" PRIu64 " us, state %" PRIu64 " us",
			  (t_q - t_pause) / 1000, (t_s - t_q) / 1000, last, (t_p - t_s) / 1000,
			  (host_now_ns() - t_p) / 1000);
		if (!err) {
			/* The state is out: from here a cancel could leave the guest running
			 * on both sides, so it is refused; only the answer decides. */
			pthread_mutex_lock(&m->lock);
			m->committing = true;
			pthread_mutex_unlock(&m->lock);
		}
		if (!err) {
			uint8_t type;
			uint16_t ver;
			const uint8_t *p;
			uint32_t len;
			err = stream_read_record(&s, &type, &ver, &p, &len);
			if (!err && type == REC_NACK) {
				snprintf(why, n, "the destination refused: %.*s", (int)len, p);
				err = -EPROTO;
			} else if (!err && (type != REC_ACK || len != 8)) {
				snprintf(why, n, "unexpected answer from the destination");
				err = -EPROTO;
			} else if (!err) {
				uint64_t t_run = 0;
				for (int i = 0; i < 8; i++)
					t_run |= (uint64_t)p[i] << (8 * i);
				/* Both stamps are CLOCK_MONOTONIC: one machine shares it. */
				uint64_t down = t_run > t_pause ? t_run - t_pause
								: host_now_ns() - t_pause;
				pthread_mutex_lock(&m->lock);
				m->st.downtime_us = down / 1000ULL;
				m->st.bytes = s.bytes;
				m->st.rounds = pass;
				m->st.remaining_pages = 0;
				pthread_mutex_unlock(&m->lock);
			}
		}
	}
	if (err && !why[0])
		snprintf(why, n, "%s", s.err[0] ? s.err : strerror(-err));
	if (err == -ECANCELED)
		snprintf(why, n, "cancelled");

	pthread_mutex_lock(&m->lock);
	m->stream = NULL;
	pthread_mutex_unlock(&m->lock);
	vm_dirty_log_stop(vm);
	if (err) {
		/* Nothing was acknowledged: the guest goes on here as if nothing happened. */
		if (quiesced || paused)
			unquiesce_devices(vm);
		if (paused)
			vm_resume(vm);
	}
	/* On success the vCPUs stay paused: the VM now lives on the destination. */
	stream_free(&s);
	shutdown(fd, SHUT_RDWR);
	close(fd);
	sbuf_free(&b);
	sbuf_free(&ps.rec);
	ZSTD_freeCCtx(ps.zctx);
	free(bitmap);
	return err;
}

static void *job_thread(void *arg)
{
	struct migration *m = arg;
	char why[200] = "";
	int err = m->is_snapshot ? do_snapshot(m, why, sizeof(why)) : do_migrate(m, why, sizeof(why));

	pthread_mutex_lock(&m->lock);
	m->st.total_ms = (host_now_ns() - m->start_ns) / 1000000ULL;
	if (!err) {
		m->st.state = MIGRATE_COMPLETED;
	} else {
		m->st.state = err == -ECANCELED ? MIGRATE_CANCELLED : MIGRATE_FAILED;
		snprintf(m->st.error, sizeof(m->st.error), "%s", why);
	}
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);

	if (err) {
		log_warn("%s %s: %s; the guest runs on here", m->is_snapshot ? "snapshot" : "migration",
			 err == -ECANCELED ? "cancelled" : "failed", why);
	} else if (m->is_snapshot) {
		log_info("snapshot written to %s", m->snapshot_path);
	}
	if (m->is_snapshot && m->done)
		m->done(m->done_opaque, err, why);
	if (!err && !m->is_snapshot) {
		log_info("migration completed: the VM runs on the destination");
		/* Let a client read the final status, then end this process. */
		uint64_t deadline = host_now_ns() + DONE_LINGER_NS;
		struct timespec ts = { .tv_sec = (time_t)(deadline / 1000000000ULL),
				       .tv_nsec = (long)(deadline % 1000000000ULL) };
		pthread_mutex_lock(&m->lock);
		while (!m->done_read && host_now_ns() < deadline)
			if (pthread_cond_timedwait(&m->cond, &m->lock, &ts) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&m->lock);
		vm_request_exit(m->vm, VM_EXIT_MIGRATED, 0);
	}
	pthread_mutex_lock(&m->lock);
	m->busy = false;
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

int migration_create(struct vm *vm, struct migration **out)
{
	struct migration *m = calloc(1, sizeof(*m));
	pthread_condattr_t ca;

	if (!m)
		return -ENOMEM;
	m->vm = vm;
	pthread_mutex_init(&m->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cond, &ca);
	pthread_condattr_destroy(&ca);
	*out = m;
	return 0;
}

static void join_job(struct migration *m)
{
	if (m->thread_started) {
		pthread_join(m->thread, NULL);
		m->thread_started = false;
	}
}

void migration_destroy(struct migration *m)
{
	if (!m)
		return;
	migration_cancel(m);
	pthread_mutex_lock(&m->lock);
	m->done_read = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	join_job(m);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static int job_start(struct migration *m, bool snapshot, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	if (m->busy) {
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "a %s is in progress",
			 m->is_snapshot ? "snapshot" : "migration");
		return -EBUSY;
	}
	if (m->st.state == MIGRATE_COMPLETED && !m->is_snapshot) {
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "the VM has migrated away");
		return -EINVAL;
	}
	pthread_mutex_unlock(&m->lock);
	join_job(m);
	pthread_mutex_lock(&m->lock);
	memset(&m->st, 0, sizeof(m->st));
	m->st.state = MIGRATE_ACTIVE;
	m->st.snapshot = snapshot;
	m->is_snapshot = snapshot;
	m->cancel = 0;
	m->committing = false;
	m->done_read = false;
	m->start_ns = host_now_ns();
	m->busy = true;
	int e = pthread_create(&m->thread, NULL, job_thread, m);
	if (e) {
		m->busy = false;
		m->st.state = MIGRATE_FAILED;
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "cannot start a thread: %s", strerror(e));
		return -e;
	}
	m->thread_started = true;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int migration_start(struct migration *m, const struct migrate_params *p, char *err,
		    size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	if (!m->busy)
		m->done = NULL;
	pthread_mutex_unlock(&m->lock);
	if (p->postcopy) {
		snprintf(err, errlen, "post-copy is not supported yet");
		return -ENOTSUP;
	}
	if (strncmp(p->uri, "tcp:", 4) != 0 && strncmp(p->uri, "unix:", 5) != 0) {
		snprintf(err, errlen, "'%s': must be tcp:HOST:PORT or unix:PATH", p->uri);
		return -EINVAL;
	}
	pthread_mutex_lock(&m->lock);
	bool busy = m->busy;
	if (!busy)
		m->params = *p;
	pthread_mutex_unlock(&m->lock);
	if (busy) {
		snprintf(err, errlen, "a job is in progress");
		return -EBUSY;
	}
	return job_start(m, false, err, errlen);
}

int migration_snapshot_start(struct migration *m, const char *path, migration_done_fn done,
			     void *opaque, char *err, size_t errlen)
{
	if (!path[0] || strlen(path) >= sizeof(m->snapshot_path) - 8) {
		snprintf(err, errlen, "bad snapshot path");
		return -EINVAL;
	}
	pthread_mutex_lock(&m->lock);
	bool busy = m->busy;
	if (!busy) {
		snprintf(m->snapshot_path, sizeof(m->snapshot_path), "%s", path);
		memset(&m->params, 0, sizeof(m->params));
		m->done = done;
		m->done_opaque = opaque;
	}
	pthread_mutex_unlock(&m->lock);
	if (busy) {
		snprintf(err, errlen, "a job is in progress");
		return -EBUSY;
	}
	return job_start(m, true, err, errlen);
}

int migration_cancel(struct migration *m)
{
	pthread_mutex_lock(&m->lock);
	if (!m->busy || m->st.state != MIGRATE_ACTIVE) {
		pthread_mutex_unlock(&m->lock);
		return -ENOENT;
	}
	if (m->committing) {
		pthread_mutex_unlock(&m->lock);
		return -EBUSY;
	}
	m->cancel = 1;
	if (m->stream) {
		m->stream->cancelled = 1;
		/* Wake a blocked send or receive. */
		shutdown(m->stream->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void migration_get_status(struct migration *m, struct migrate_status *st)
{
	pthread_mutex_lock(&m->lock);
	if (m->st.state == MIGRATE_ACTIVE)
		m->st.total_ms = (host_now_ns() - m->start_ns) / 1000000ULL;
	*st = m->st;
	if (m->st.state != MIGRATE_ACTIVE && m->st.state != MIGRATE_NONE) {
		m->done_read = true;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
}
