/* Live migration and snapshots (see migration.h; the stream is in stream.h and
 * docs/migration.md).
 *
 * Records of a stream, in order:
 *   CONFIG        the VM's shape, checked by the receiver against its own options
 *   PAGES ...     guest pages; a migration sends several passes, each ended by PASS_END
 *   PC_START      post-copy only: the pages that follow after the hand-over
 *   CLOCK         the guest clock and host stamps at the pause
 *   CPU x harts   each hart's state
 *   DEVICES       the machine's devices
 *   END
 * and, for a migration, the destination answers ACK (loaded, with the migration's id) or
 * NACK (with a message); the source then lets go of the VM and says GO, the destination
 * runs and answers RUNNING; in post-copy PAGES follow (PC_REQ asks for some first) until
 * PC_DONE / PC_COMPLETE. A broken link after ACK is mended by the source connecting again
 * (RESUME / RESUME_ACK). docs/migration.md has the whole protocol.
 *
 * A PAGES payload is a list of entries, each a u64 (page number << 8 | kind) followed by
 * its data: kind 0 a whole page (4096 bytes), 1 a page of zeros (no data), 2 a page
 * compressed with zstd (u32 length, then the bytes). */
#define _GNU_SOURCE
#include "migration/migration.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <linux/userfaultfd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "core/unix_socket.h"
#include "core/vm.h"
#include "cpu/riscv/state.h"
#include "machine/riscv-virt/virt.h"
#include "migration/link.h"
#include "migration/sbuf.h"
#include "migration/stream.h"

#define CONFIG_VERSION 1
#define PAGES_VERSION 1
#define CLOCK_VERSION 1
#define CPU_VERSION HART_STATE_VERSION /* a CPU record is a hart's state */
#define DEVICES_VERSION 1

#define PAGE_RAW 0
#define PAGE_ZERO 1
#define PAGE_ZSTD 2

#define PAGES_RECORD_BYTES (1U << 20)
/* The longest guest uptime a state may carry: 100 years of mtime ticks. */
#define CLOCK_MAX_TICKS (100ULL * 36525 * 864 * VM_TIMEBASE_HZ)
#define DEFAULT_DOWNTIME_MS 300
#define MAX_PASSES 60
#define IO_TIMEOUT_S 10
#define QUIESCE_TIMEOUT_NS (30ULL * 1000000000ULL)
/* After a successful migration, the source waits this long for a client to read the
 * final status before it exits. */
#define DONE_LINGER_NS (5ULL * 1000000000ULL)

struct migration {
	struct vm *vm;
	struct mig_link *link; /* TLS on migration connections; NULL: none */
	bool insecure;	       /* --migration-insecure: TCP in clear is allowed */
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
	bool done_read;	       /* a client read the final status */
	struct stream *stream; /* the job's, while it runs (for cancel) */
	volatile int cancel;
	volatile int quit; /* this VMM ends: a committed job stops trying to reach the peer */
	volatile int to_postcopy; /* the user asked to switch to post-copy */
	bool committing;	  /* the destination has the VM: too late to cancel */
	struct dest *dest;	  /* the destination side, once its VM runs (migration_incoming) */
	migration_done_fn done;	  /* the snapshot's caller, told when it ends */
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

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static int send_record(struct stream *s, uint8_t type, const void *p, uint32_t len)
{
	int err = stream_write_record(s, type, 1, p, len);
	return err ? err : stream_flush(s);
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
static int config_check(const struct vm *vm, const uint8_t *p, uint32_t len, char *why, size_t n)
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
			char esc[100];
			str_escape(esc, sizeof(esc), type, strlen(type));
			snprintf(why, n, "device %u is a %s there, a %s here", i, esc,
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
	for (uint64_t w = 0; w < (npages + 63) / 64 && !err && !m->to_postcopy; w++) {
		uint64_t bits = bitmap[w];
		bitmap[w] = 0;
		uint64_t unbacked =
			bits && pm && (w + 1) * 64 <= npages ? pagemap_unbacked(pm, vm, w * 64) : 0;
		while (bits) {
			if (m->cancel) {
				err = -ECANCELED;
				break;
			}
			if (m->to_postcopy) {
				/* Stop the pass here: what is left goes after the hand-over. */
				bitmap[w] |= bits;
				break;
			}
			unsigned bit = (unsigned)__builtin_ctzll(bits);
			uint64_t idx = w * 64 + bit;
			bits &= bits - 1;
			const uint8_t *page =
				unbacked >> bit & 1 ? zero_page : vm->ram.host + idx * PAGE_SIZE;
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
	uint32_t cpu_ver[VM_MAX_CPUS];
	uint8_t *devices;
	uint32_t devices_len;
	uint64_t clock_mtime, clock_realtime, clock_pause_ns;
	unsigned passes;
	struct stream *ack; /* migration: where PASS_ACK goes; NULL for a snapshot */
	uint64_t *written;  /* pages written so far (others are still zero), or NULL */
	uint64_t *need;	    /* post-copy: the pages still to come (PC_START), or NULL */
	char why[200];
};

static void loader_free(struct loader *l)
{
	free(l->written);
	free(l->need);
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
		case REC_PC_START: {
			uint64_t words = ((vm->ram.size >> PAGE_SHIFT) + 63) / 64;
			if (!l->ack || l->need || len != words * 8) {
				snprintf(l->why, n, "malformed post-copy record");
				return -EPROTO;
			}
			l->need = malloc(len);
			if (!l->need) {
				snprintf(l->why, n, "out of memory");
				return -ENOMEM;
			}
			for (uint64_t w = 0; w < words; w++)
				l->need[w] = get_u64(p + w * 8);
			break;
		}
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
			/* A guest up for centuries is no guest: its clock origin would fall
			 * beyond what the host's clock arithmetic holds. */
			if (l->clock_mtime > CLOCK_MAX_TICKS) {
				snprintf(l->why, n,
					 "the guest clock reads %" PRIu64
					 " days of uptime (at most %" PRIu64 ")",
					 (uint64_t)(l->clock_mtime / VM_TIMEBASE_HZ / 86400),
					 (uint64_t)(CLOCK_MAX_TICKS / VM_TIMEBASE_HZ / 86400));
				return -EPROTO;
			}
			l->have_clock = true;
			break;
		}
		case REC_CPU: {
			/* Older layouts still load (hart_load knows each). */
			if (ver < 1 || ver > CPU_VERSION || len < 4) {
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
			l->cpu_ver[id] = ver;
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
				snprintf(l->why, n,
					 "the state ends before the CPU and device state");
				return -EPROTO;
			}
			for (int i = 0; i < vm->nharts; i++)
				if (!l->cpu[i]) {
					snprintf(l->why, n, "no state for vCPU %d", i);
					return -EPROTO;
				}
			return 0;
		default: snprintf(l->why, n, "unknown record type %u", type); return -EPROTO;
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
		if (hart_load(vm->harts[i], &r, l->cpu_ver[i]) || r.left) {
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

/* A snapshot ends with its END record: anything after it (an appended or a spliced file) is
 * not state this VMM wrote, and the file is refused. */
static int restore_check_end(struct stream *s, char *why, size_t n)
{
	uint8_t type;
	uint16_t ver;
	const uint8_t *p;
	uint32_t len;
	int err = stream_read_record(s, &type, &ver, &p, &len);

	if (err == -ENODATA)
		return 0;
	snprintf(why, n, "bytes after the end of the snapshot");
	return -EPROTO;
}

int migration_restore(struct vm *vm, const char *path)
{
	struct loader l = { .vm = vm };
	struct stream s;
	vm_set_phase(vm, "reading the snapshot");
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
		err = restore_check_end(&s, l.why, sizeof(l.why));
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
	/* TCP: data unacknowledged that long ends the connection. Without it a write that
	 * gets part of its bytes out restarts SO_SNDTIMEO, and a dead link took up to twice
	 * the timeout to notice. (Fails harmlessly on Unix sockets.) */
	int ms = seconds * 1000;
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
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
		if (listening) {
			/* The --api-socket rule: a stale socket is replaced, anything else
			 * there is an error and stays. */
			char w[160];
			fd = unix_socket_listen(path, 0, 1, w, sizeof(w));
			if (fd < 0)
				snprintf(why, n, "'%s': %s", uri, w);
			return fd;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto fail_errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
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

/* Connects to uri and, with credentials, secures the connection (TLS). -errno with why. */
static int connect_uri(struct mig_link *link, const char *uri, char *why, size_t n)
{
	int fd = open_uri(uri, false, why, n);
	if (fd < 0 || !link)
		return fd;
	char tw[160] = "";
	fd = mig_link_secure(link, fd, false, tw, sizeof(tw));
	if (fd < 0)
		snprintf(why, n, "'%s': %s", uri, tw);
	else
		set_timeouts(fd, IO_TIMEOUT_S);
	return fd;
}

/* "ADDR:PORT" of a connection's peer, for messages. */
static void peer_name(int fd, char *buf, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN], port[8];

	snprintf(buf, n, "a peer");
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family != AF_UNIX &&
	    getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(buf, n, "%s%.46s%s:%.7s", ss.ss_family == AF_INET6 ? "[" : "", host,
			 ss.ss_family == AF_INET6 ? "]" : "", port);
}

/* Accepted fd: the TLS handshake (with credentials) within its timeout. The secured
 * descriptor, or -errno after one line naming the rejected peer (fd closed). */
static int accept_secure(struct mig_link *link, int fd, const char *who)
{
	char why[160] = "";
	fd = mig_link_secure(link, fd, true, why, sizeof(why));
	if (fd < 0)
		log_warn("migration: rejected %s: %s", who, why);
	return fd;
}

/* ---- The destination once its vCPUs run ----
 *
 * The connection stays up until the source has nothing more to say: at once after a
 * pre-copy, once every page is in after a post-copy. While the link is down the source
 * reconnects to the listening socket (RESUME with the migration's id); a post-copy guest
 * waits meanwhile on the pages it lacks, and nothing else.
 *
 * Post-copy: guest RAM is registered with userfaultfd. A vCPU, an I/O thread or the event
 * loop touching a page that is not in yet sleeps in the kernel; the fault thread asks the
 * source for it (PC_REQ) and the connection thread places pages as they come (UFFDIO_COPY,
 * which wakes the sleepers). have[] has a bit per page that is current here; a current
 * page that was never written (the source said zero) is mapped as zeros on its fault. */

/* Pre-copy: how long a source that lost the link may come back for its answer. */
#define RECONNECT_WINDOW_NS (60ULL * 1000000000ULL)
#define REQ_BATCH 64

struct dest {
	struct vm *vm;
	struct mig_link *link; /* the VMM's (struct migration owns it) */
	uint64_t id;
	uint64_t token; /* the source's (REC_SOURCE; 0 before version 3): proves an ABANDON */
	uint64_t t_run;
	bool postcopy;
	int lfd; /* listening, for the source to reconnect */
	char unix_path[108];
	int stop_efd;
	pthread_mutex_t lock; /* fd and writes on it (w); requested[] */
	int fd;		      /* -1 while the link is down */
	struct stream w;      /* writes on fd */
	int uffd;
	uint64_t *have;	     /* atomic bit operations */
	uint64_t *requested; /* faulted on (asked for, again after a reconnection) */
	uint64_t npages, words;
	_Atomic uint64_t missing;
	_Atomic bool link_up;
	_Atomic bool finished;
	ZSTD_DCtx *dctx;
	pthread_t conn_thread, fault_thread;
	bool conn_started, fault_started;
};

static bool have_page(struct dest *d, uint64_t idx)
{
	return __atomic_load_n(&d->have[idx / 64], __ATOMIC_ACQUIRE) >> (idx % 64) & 1;
}

/* Points the write stream at fd, forgetting an error on an earlier connection (a stream
 * refuses to write after its first error). Under d->lock. */
static struct stream *dest_writer(struct dest *d, int fd)
{
	d->w.fd = fd;
	d->w.len = 0;
	d->w.err[0] = 0;
	return &d->w;
}

/* Sends one record on the current connection (if any). */
static int dest_send(struct dest *d, uint8_t type, const void *p, uint32_t len)
{
	int err = -ENOTCONN;
	pthread_mutex_lock(&d->lock);
	if (d->fd >= 0) {
		err = send_record(dest_writer(d, d->fd), type, p, len);
		/* A record half sent leaves the connection useless: end it, and the
		 * connection thread waits for the source to come back. */
		if (err)
			shutdown(d->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&d->lock);
	return err;
}

static void wake_page(struct dest *d, uint64_t addr)
{
	struct uffdio_range r = { .start = addr, .len = PAGE_SIZE };
	ioctl(d->uffd, UFFDIO_WAKE, &r);
}

/* Puts a page in place (src NULL: zeros) unless it is there; wakes whoever waits on it. */
static int dest_place(struct dest *d, uint64_t idx, const uint8_t *src)
{
	uint64_t addr = (uintptr_t)d->vm->ram.host + idx * PAGE_SIZE;
	int r;

	if (have_page(d, idx))
		return 0;
	do {
		if (src) {
			struct uffdio_copy c = { .dst = addr,
						 .src = (uintptr_t)src,
						 .len = PAGE_SIZE };
			r = ioctl(d->uffd, UFFDIO_COPY, &c);
		} else {
			struct uffdio_zeropage z = { .range = { .start = addr, .len = PAGE_SIZE } };
			r = ioctl(d->uffd, UFFDIO_ZEROPAGE, &z);
		}
	} while (r < 0 && errno == EAGAIN);
	if (r < 0 && errno != EEXIST)
		return -errno;
	if (r < 0)
		wake_page(d, addr);
	uint64_t bit = 1ULL << (idx % 64);
	if (!(__atomic_fetch_or(&d->have[idx / 64], bit, __ATOMIC_ACQ_REL) & bit))
		atomic_fetch_sub(&d->missing, 1);
	return 0;
}

/* A zero page that nobody waits for is only marked current: its first touch maps zeros
 * (the fault thread; plain anonymous memory once unregistered), which spares an ioctl per
 * page. True if so; false if someone waits (it must be placed and they woken). Paired with
 * the fault thread's check under d->lock: a fault either sees the page current or is seen
 * waiting here. */
static bool dest_zero_later(struct dest *d, uint64_t idx)
{
	uint64_t bit = 1ULL << (idx % 64);
	pthread_mutex_lock(&d->lock);
	bool waited = d->requested[idx / 64] & bit;
	if (!waited && !(__atomic_fetch_or(&d->have[idx / 64], bit, __ATOMIC_ACQ_REL) & bit))
		atomic_fetch_sub(&d->missing, 1);
	pthread_mutex_unlock(&d->lock);
	return !waited;
}

/* Asks the source for every page still lacking that someone waits for. */
static void dest_rerequest(struct dest *d)
{
	uint64_t req[REQ_BATCH];
	unsigned n = 0;

	for (uint64_t w = 0; w < d->words; w++) {
		pthread_mutex_lock(&d->lock);
		uint64_t bits = d->requested[w] & ~__atomic_load_n(&d->have[w], __ATOMIC_ACQUIRE);
		pthread_mutex_unlock(&d->lock);
		while (bits) {
			req[n++] = w * 64 + (uint64_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			if (n == REQ_BATCH) {
				(void)dest_send(d, REC_PC_REQ, req, n * 8);
				n = 0;
			}
		}
	}
	if (n)
		(void)dest_send(d, REC_PC_REQ, req, n * 8);
}

static void *dest_fault_thread(void *arg)
{
	struct dest *d = arg;
	struct uffd_msg msg[32];
	uint64_t req[REQ_BATCH];
	uint64_t base = (uintptr_t)d->vm->ram.host;

	/* Until stopped (dest_free): after the end no fault comes once unregistered. */
	for (;;) {
		struct pollfd p[2] = { { .fd = d->uffd, .events = POLLIN },
				       { .fd = d->stop_efd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		ssize_t r = read(d->uffd, msg, sizeof(msg));
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			log_error("migration: userfaultfd: %s", strerror(errno));
			break;
		}
		unsigned nreq = 0;
		for (size_t i = 0; i < (size_t)r / sizeof(msg[0]); i++) {
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t addr = msg[i].arg.pagefault.address & ~(uint64_t)(PAGE_SIZE - 1);
			uint64_t idx = (addr - base) / PAGE_SIZE;
			if (addr < base || idx >= d->npages)
				continue;
			uint64_t bit = 1ULL << (idx % 64);
			pthread_mutex_lock(&d->lock);
			bool have = have_page(d, idx);
			bool ask = !have && !(d->requested[idx / 64] & bit);
			if (!have)
				d->requested[idx / 64] |= bit;
			pthread_mutex_unlock(&d->lock);
			if (have) {
				/* Current and never written here: zeros (EEXIST: it is mapped by
				 * now; wake whoever waits all the same). */
				struct uffdio_zeropage z = { .range = { .start = addr,
									.len = PAGE_SIZE } };
				while (ioctl(d->uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno == EAGAIN)
					;
				wake_page(d, addr);
				continue;
			}
			if (ask && nreq < REQ_BATCH)
				req[nreq++] = idx;
		}
		/* With the link down the request waits for the reconnection (dest_rerequest). */
		if (nreq)
			(void)dest_send(d, REC_PC_REQ, req, nreq * 8);
	}
	return NULL;
}

/* The lacking pages as a RESUME_ACK payload: u64 running since, then the bitmap. Under
 * d->lock. */
static int dest_resume_ack(struct dest *d, int fd)
{
	struct sbuf b;
	int err;

	sbuf_init(&b);
	sbuf_u64(&b, d->t_run);
	if (d->postcopy)
		for (uint64_t i = 0; i < d->words; i++)
			sbuf_u64(&b, ~__atomic_load_n(&d->have[i], __ATOMIC_ACQUIRE) &
					     (i == d->words - 1 && d->npages % 64
						      ? (1ULL << (d->npages % 64)) - 1
						      : ~0ULL));
	err = b.oom ? -ENOMEM
		    : send_record(dest_writer(d, fd), REC_RESUME_ACK, b.data, (uint32_t)b.len);
	sbuf_free(&b);
	return err;
}

/* Waits up to timeout_ms on the listening socket for the source to come back; returns the
 * new connection once it has said RESUME with our id (the caller answers), -ETIMEDOUT,
 * -ECANCELED when stopped, -ECONNABORTED when before_go and the source says with its token
 * that it kept the VM (ABANDON), or another -errno. */
static int dest_accept_resume(struct dest *d, int timeout_ms, bool before_go)
{
	struct pollfd p[2] = { { .fd = d->lfd, .events = POLLIN },
			       { .fd = d->stop_efd, .events = POLLIN } };
	int r = poll(p, 2, timeout_ms);
	if (r < 0)
		return errno == EINTR ? -ETIMEDOUT : -errno;
	if (p[1].revents)
		return -ECANCELED;
	if (!r)
		return -ETIMEDOUT;
	int fd = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return -ETIMEDOUT;
	char who[80];
	peer_name(fd, who, sizeof(who));
	fd = accept_secure(d->link, fd, who);
	if (fd < 0)
		return -ETIMEDOUT;
	set_timeouts(fd, IO_TIMEOUT_S);
	struct stream s;
	if (stream_init(&s, fd)) {
		close(fd);
		return -ENOMEM;
	}
	uint8_t type;
	uint16_t ver;
	const uint8_t *p0;
	uint32_t len;
	int err = stream_read_header(&s, STREAM_MIGRATION, NULL);
	if (!err)
		err = stream_read_record(&s, &type, &ver, &p0, &len);
	if (!err && ((type != REC_RESUME && type != REC_ABANDON) || len != 8))
		err = -EPROTO;
	uint64_t id = err ? 0 : get_u64(p0);
	if (!err && type == REC_ABANDON && before_go && d->token && id == d->token) {
		stream_free(&s);
		close(fd);
		return -ECONNABORTED;
	}
	if (!err && (type == REC_ABANDON || id != d->id)) {
		static const char msg[] = "no such migration here";
		struct stream w;
		if (stream_init(&w, fd) == 0) {
			if (stream_write_record(&w, REC_NACK, 1, msg, sizeof(msg) - 1) == 0)
				(void)stream_flush(&w);
			stream_free(&w);
		}
		err = -EPROTO;
	}
	stream_free(&s);
	if (err) {
		close(fd);
		return -ETIMEDOUT; /* not our source: keep waiting */
	}
	return fd;
}

/* Makes fd the connection: answers RESUME, asks again for what is waited on. */
static int dest_reconnected(struct dest *d, int fd)
{
	pthread_mutex_lock(&d->lock);
	int err = dest_resume_ack(d, fd);
	if (!err)
		d->fd = fd;
	pthread_mutex_unlock(&d->lock);
	if (err) {
		close(fd);
		return err;
	}
	atomic_store(&d->link_up, true);
	return 0;
}

static void dest_link_down(struct dest *d)
{
	pthread_mutex_lock(&d->lock);
	if (d->fd >= 0) {
		shutdown(d->fd, SHUT_RDWR);
		close(d->fd);
		d->fd = -1;
	}
	pthread_mutex_unlock(&d->lock);
	atomic_store(&d->link_up, false);
}

/* A PAGES payload in post-copy: each page goes in place atomically. */
static int dest_pages(struct dest *d, uint8_t *buf, const uint8_t *p, uint32_t len)
{
	struct sreader r;
	sreader_init(&r, p, len);
	while (r.left) {
		uint64_t e = sreader_u64(&r);
		uint64_t idx = e >> 8;
		unsigned kind = e & 0xff;
		const uint8_t *src = NULL;
		if (!sreader_ok(&r) || idx >= d->npages)
			return -EPROTO;
		if (kind == PAGE_RAW) {
			src = sreader_take(&r, PAGE_SIZE);
			if (!src)
				return -EPROTO;
			if (!have_page(d, idx)) {
				memcpy(buf, src, PAGE_SIZE);
				src = buf;
			}
		} else if (kind == PAGE_ZSTD) {
			uint32_t z = sreader_len(&r, PAGE_SIZE + 512, "compressed page too long");
			const uint8_t *zp = sreader_take(&r, z);
			if (!zp)
				return -EPROTO;
			size_t out = ZSTD_decompressDCtx(d->dctx, buf, PAGE_SIZE, zp, z);
			if (ZSTD_isError(out) || out != PAGE_SIZE)
				return -EPROTO;
			src = buf;
		} else if (kind != PAGE_ZERO) {
			return -EPROTO;
		} else if (dest_zero_later(d, idx)) {
			continue;
		}
		int err = dest_place(d, idx, src);
		if (err) {
			log_error("migration: cannot place a page: %s", strerror(-err));
			return err;
		}
	}
	return 0;
}

static void *dest_conn_thread(void *arg)
{
	struct dest *d = arg;
	uint8_t *buf = aligned_alloc(PAGE_SIZE, PAGE_SIZE);
	uint64_t down_since = 0;
	struct stream s;
	bool have_stream = false;
	int sfd = -1;

	while (buf && !atomic_load(&d->finished)) {
		pthread_mutex_lock(&d->lock);
		int fd = d->fd;
		pthread_mutex_unlock(&d->lock);
		if (fd < 0) {
			if (have_stream) {
				stream_free(&s);
				have_stream = false;
			}
			if (!down_since) {
				down_since = host_now_ns();
				log_warn("migration: the link to the source is down; %s",
					 d->postcopy ? "the guest waits for the pages it lacks"
						     : "waiting for it to come back");
			}
			if (!d->postcopy && host_now_ns() - down_since > RECONNECT_WINDOW_NS)
				break;
			int nfd = dest_accept_resume(d, 1000, false);
			if (nfd == -ECANCELED)
				break;
			if (nfd >= 0 && dest_reconnected(d, nfd) == 0) {
				log_info("migration: the source is back after %" PRIu64 " ms",
					 (host_now_ns() - down_since) / 1000000);
				down_since = 0;
				if (d->postcopy)
					dest_rerequest(d);
			}
			continue;
		}
		if (!have_stream || sfd != fd) {
			if (have_stream)
				stream_free(&s);
			if (stream_init(&s, fd))
				break;
			have_stream = true;
			sfd = fd;
		}
		uint8_t type;
		uint16_t ver;
		const uint8_t *p;
		uint32_t len;
		int err = stream_read_record(&s, &type, &ver, &p, &len);
		if (!err && type == REC_PAGES && d->postcopy)
			err = dest_pages(d, buf, p, len);
		else if (!err && type == REC_PC_DONE) {
			if (atomic_load(&d->missing) == 0) {
				/* Every page is current: those never mapped are zeros, which
				 * plain anonymous memory gives on its own. */
				struct uffdio_range r = { .start = (uintptr_t)d->vm->ram.host,
							  .len = d->vm->ram.size };
				/* Only post-copy registered guest RAM: a pre-copy arrival ends
				 * here too, with no userfaultfd at all. */
				if (d->uffd >= 0 && ioctl(d->uffd, UFFDIO_UNREGISTER, &r) < 0)
					log_warn("migration: userfaultfd: unregister: %s",
						 strerror(errno));
				(void)dest_send(d, REC_PC_COMPLETE, NULL, 0);
				atomic_store(&d->finished, true);
				break;
			}
			dest_rerequest(d); /* should not happen: ask for the rest */
		} else if (!err) {
			err = -EPROTO;
		}
		if (err) {
			if (err == -EPROTO)
				log_warn("migration: unexpected data from the source (record %u)",
					 type);
			dest_link_down(d);
		}
	}
	if (have_stream)
		stream_free(&s);
	free(buf);
	return NULL;
}

/* Frees what dest_create made (not lfd, which the caller still owns if it fails). */
static void dest_release(struct dest *d)
{
	if (d->stop_efd >= 0)
		close(d->stop_efd);
	pthread_mutex_destroy(&d->lock);
	ZSTD_freeDCtx(d->dctx);
	stream_free(&d->w);
	free(d->have);
	free(d->requested);
	free(d);
}

/* Ends the destination's side: the threads stop, and a post-copy guest's memory becomes
 * ordinary memory (pages still lacking read as zeros: only when the VM ends before the
 * migration does). */
static void dest_free(struct dest *d)
{
	if (!d)
		return;
	uint64_t one = 1;
	if (write(d->stop_efd, &one, sizeof(one)) < 0)
		log_debug("migration: stop: %s", strerror(errno));
	pthread_mutex_lock(&d->lock);
	if (d->fd >= 0) {
		if (d->postcopy && !atomic_load(&d->finished)) {
			/* The VM ended here first: the source need not wait for us. */
			(void)send_record(dest_writer(d, d->fd), REC_PC_COMPLETE, NULL, 0);
		}
		shutdown(d->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&d->lock);
	if (d->uffd >= 0) {
		struct uffdio_range r = { .start = (uintptr_t)d->vm->ram.host,
					  .len = d->vm->ram.size };
		ioctl(d->uffd, UFFDIO_UNREGISTER, &r);
	}
	if (d->conn_started)
		pthread_join(d->conn_thread, NULL);
	if (d->fault_started)
		pthread_join(d->fault_thread, NULL);
	if (d->fd >= 0)
		close(d->fd);
	if (d->uffd >= 0)
		close(d->uffd);
	if (d->lfd >= 0)
		close(d->lfd);
	if (d->unix_path[0])
		unlink(d->unix_path);
	dest_release(d);
}

static int uffd_open(char *why, size_t n)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int e = errno; /* the reason to give: the system call's */
#ifdef USERFAULTFD_IOC_NEW
	if (fd < 0) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			close(dev);
		}
	}
#endif
	if (fd < 0) {
		snprintf(why, n, "post-copy needs userfaultfd: %s", strerror(e));
		return -e;
	}
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		e = errno;
		snprintf(why, n, "userfaultfd: %s", strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

/* Post-copy, before the vCPUs run: the pages in need are dropped (an earlier pass may have
 * left them stale) and guest RAM is registered, so that touching one waits for it. */
static int dest_postcopy_setup(struct dest *d, const uint64_t *need, char *why, size_t n)
{
	struct vm *vm = d->vm;
	int fd = uffd_open(why, n);
	if (fd < 0)
		return fd;
	d->uffd = fd;
	uint64_t missing = 0;
	for (uint64_t i = 0; i < d->npages;) {
		if (!(need[i / 64] >> (i % 64) & 1)) {
			d->have[i / 64] |= 1ULL << (i % 64);
			i++;
			continue;
		}
		uint64_t j = i;
		while (j < d->npages && need[j / 64] >> (j % 64) & 1)
			j++;
		missing += j - i;
		madvise(vm->ram.host + i * PAGE_SIZE, (j - i) * PAGE_SIZE, MADV_DONTNEED);
		i = j;
	}
	atomic_store(&d->missing, missing);
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)vm->ram.host, .len = vm->ram.size },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
		int e = errno;
		snprintf(why, n, "userfaultfd: cannot register guest memory: %s", strerror(e));
		return -e;
	}
	const uint64_t want =
		1ULL << _UFFDIO_COPY | 1ULL << _UFFDIO_ZEROPAGE | 1ULL << _UFFDIO_WAKE;
	if ((reg.ioctls & want) != want) {
		snprintf(why, n, "userfaultfd: this kernel cannot place pages");
		return -ENOTSUP;
	}
	d->postcopy = true;
	return 0;
}

static struct dest *dest_create(struct vm *vm, int lfd, const char *uri)
{
	struct dest *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->vm = vm;
	d->link = vm->migration ? vm->migration->link : NULL;
	d->lfd = lfd;
	d->fd = -1;
	d->uffd = -1;
	d->npages = vm->ram.size >> PAGE_SHIFT;
	d->words = (d->npages + 63) / 64;
	if (strncmp(uri, "unix:", 5) == 0)
		snprintf(d->unix_path, sizeof(d->unix_path), "%s", uri + 5);
	pthread_mutex_init(&d->lock, NULL);
	d->stop_efd = eventfd(0, EFD_CLOEXEC);
	d->have = calloc(d->words, 8);
	d->requested = calloc(d->words, 8);
	d->dctx = ZSTD_createDCtx();
	if (getrandom(&d->id, sizeof(d->id), 0) != sizeof(d->id))
		d->id = host_now_ns() ^ (uint64_t)getpid() << 32;
	if (d->stop_efd < 0 || !d->have || !d->requested || !d->dctx || stream_init(&d->w, -1)) {
		dest_release(d);
		return NULL;
	}
	return d;
}

/* Answers NACK with why (best effort). */
static void send_nack(int fd, const char *why)
{
	struct stream w;
	if (stream_init(&w, fd) == 0) {
		(void)send_record(&w, REC_NACK, why, (uint32_t)strlen(why));
		stream_free(&w);
	}
}

/* The hand-over: the VM is ours, its disks' locks with it (the source dropped them before
 * GO). Someone else may have taken one in between, or the source be a VMM that keeps them:
 * the guest cannot go back, so it runs here all the same, after a while and with a warning
 * (the failure is logged naming the disk). */
static void dest_claim(struct vm *vm)
{
	for (int i = 0; virt_claim(vm, true) != 0; i++) {
		if (i == 1) {
			log_warn("migration: the guest runs without its disk's lock");
			return;
		}
		sleep_ns(500 * 1000000ULL);
	}
}

/* After ACK: GO, or a source that comes back with RESUME (the link broke in between),
 * or its NACK or end of stream (it kept the VM). 0 with d->fd the live connection. */
static int dest_wait_go(struct dest *d, struct stream *s, int fd, char *why, size_t n)
{
	uint8_t type;
	uint16_t ver;
	const uint8_t *p;
	uint32_t len;
	int err = stream_read_record(s, &type, &ver, &p, &len);

	if (!err && type == REC_GO) {
		d->t_run = host_now_ns();
		pthread_mutex_lock(&d->lock);
		d->fd = fd;
		pthread_mutex_unlock(&d->lock);
		uint8_t t[8];
		put_u64(t, d->t_run);
		/* Lost, it is asked for again on a new connection (RESUME). */
		(void)dest_send(d, REC_RUNNING, t, sizeof(t));
		atomic_store(&d->link_up, true);
		return 0;
	}
	if ((!err && type == REC_NACK) || err == -ENODATA) {
		snprintf(why, n, "the source kept the VM");
		close(fd);
		return -ECANCELED;
	}
	if (!err) {
		snprintf(why, n, "unexpected record %u instead of the source's word", type);
		send_nack(fd, why);
		close(fd);
		return -EPROTO;
	}
	close(fd);
	/* The link broke: the source has either kept the VM or let go of it; only it knows.
	 * Nothing runs here until it comes back and says which. */
	log_warn("migration: the link to the source broke before its word (%s); waiting for "
		 "it to come back (the guest does not run meanwhile)",
		 s->err);
	for (;;) {
		int nfd = dest_accept_resume(d, 1000, true);
		if (nfd == -ETIMEDOUT && atomic_load(&d->vm->exit_reason))
			nfd = -ECANCELED; /* the VMM is ending */
		if (nfd == -ECANCELED) {
			snprintf(why, n, "stopped");
			return nfd;
		}
		if (nfd == -ECONNABORTED) {
			snprintf(why, n, "the source kept the VM (it came back to say so)");
			return -ECANCELED;
		}
		if (nfd < 0)
			continue;
		d->t_run = host_now_ns();
		if (dest_reconnected(d, nfd) == 0)
			return 0;
	}
}

/* Reads a migration stream's header and, from version 3 on, its first record: the source's
 * token (SOURCE). -ECONNABORTED for a connection that carries an ABANDON instead (a source
 * whose destination is gone); else 0 or an error, with s->err saying why. */
static int incoming_first(struct stream *s, uint32_t *version, uint64_t *token)
{
	uint8_t type;
	uint16_t ver;
	const uint8_t *p;
	uint32_t len;
	int err = stream_read_header(s, STREAM_MIGRATION, version);

	if (err || *version < 3)
		return err;
	err = stream_read_record(s, &type, &ver, &p, &len);
	if (err)
		return err;
	if (type == REC_ABANDON)
		return -ECONNABORTED;
	if (type != REC_SOURCE || len != 8) {
		snprintf(s->err, sizeof(s->err),
			 "the stream does not start with the source's token");
		return -EPROTO;
	}
	*token = get_u64(p);
	return 0;
}

int migration_incoming(struct vm *vm, const char *uri)
{
	struct mig_link *link = vm->migration ? vm->migration->link : NULL;
	char why[200] = "";
	int lfd = open_uri(uri, true, why, sizeof(why));

	if (lfd < 0) {
		log_error("--incoming %s", why);
		return lfd;
	}
	log_info("waiting for a migration on %s", uri);
	vm_set_phase(vm, "waiting for an incoming migration");
	int fd, first;
	struct stream s;
	uint32_t version = 0;
	uint64_t token = 0;
	/* --timeout bounds the wait too: rejected peers must not keep it up forever. */
	double limit = vm->cfg ? vm->cfg->timeout : 0;
	uint64_t deadline = limit > 0 ? host_now_ns() + (uint64_t)(limit * 1e9) : 0;
	for (;;) {
		/* Looks up now and then: the VMM may be told to end (a signal) meanwhile, and
		 * --timeout may run out. */
		struct pollfd pl = { .fd = lfd, .events = POLLIN };
		int r;
		bool late = false;
		for (;;) {
			int slice = 200;
			if (deadline) {
				uint64_t now = host_now_ns();
				if (now >= deadline) {
					late = true;
					r = 0;
					break;
				}
				if ((deadline - now) / 1000000 + 1 < (uint64_t)slice)
					slice = (int)((deadline - now) / 1000000 + 1);
			}
			r = poll(&pl, 1, slice);
			if (r > 0 || atomic_load(&vm->exit_reason))
				break;
			if (r < 0 && errno != EINTR)
				break;
		}
		if (late) {
			log_error("--incoming %s: no migration came within %g s", uri, limit);
			close(lfd);
			if (strncmp(uri, "unix:", 5) == 0)
				unlink(uri + 5);
			return -ETIME;
		}
		if (r <= 0 && atomic_load(&vm->exit_reason)) {
			log_info("--incoming %s: no longer waiting (the VMM is ending)", uri);
			close(lfd);
			if (strncmp(uri, "unix:", 5) == 0)
				unlink(uri + 5);
			return -ECANCELED;
		}
		do
			fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		while (fd < 0 && errno == EINTR);
		if (fd < 0) {
			int err = -errno;
			log_error("--incoming %s: accept: %s", uri, strerror(-err));
			close(lfd);
			if (strncmp(uri, "unix:", 5) == 0)
				unlink(uri + 5);
			return err;
		}
		/* Anyone may connect: a peer that fails the handshake, says nothing valid or
		 * goes away is dropped, and the VM waits on for its source. */
		char who[80];
		peer_name(fd, who, sizeof(who));
		fd = accept_secure(link, fd, who);
		if (fd < 0)
			continue;
		/* From the first byte on, a stalled source is a failed migration, not a hang. */
		set_timeouts(fd, IO_TIMEOUT_S);
		vm_set_phase(vm, "receiving the migration");
		if (stream_init(&s, fd)) {
			close(fd);
			close(lfd);
			log_error("--incoming %s: out of memory", uri);
			return -ENOMEM;
		}
		first = incoming_first(&s, &version, &token);
		if (!first)
			break;
		if (first == -ECONNABORTED) {
			/* The source of an earlier migration telling its destination it kept
			 * the VM. */
			log_info("migration: a source's word for an earlier destination: ignored");
		} else {
			log_warn("migration: rejected %s: %s", who,
				 s.err[0] ? s.err : strerror(-first));
			send_nack(fd, s.err[0] ? s.err : "not a migration stream");
		}
		stream_free(&s);
		close(fd);
	}

	struct loader l = { .vm = vm };
	struct dest *d = dest_create(vm, lfd, uri);
	if (!d) {
		stream_free(&s);
		close(fd);
		close(lfd);
		log_error("--incoming %s: out of memory", uri);
		return -ENOMEM;
	}
	d->token = token;
	struct stream ackw;
	bool ack_ok = stream_init(&ackw, fd) == 0;
	l.ack = ack_ok ? &ackw : NULL;
	l.written = calloc((vm->ram.size / PAGE_SIZE + 63) / 64, sizeof(uint64_t));
	l.dctx = ZSTD_createDCtx();
	int err = l.dctx && ack_ok && l.written ? first : -ENOMEM;
	if (err)
		snprintf(l.why, sizeof(l.why), "%s", s.err[0] ? s.err : "out of memory");
	if (!err)
		err = loader_read(&l, &s);
	log_debug("migration: state received at %" PRIu64 " ms", host_now_ns() / 1000000);
	if (!err && l.need && version < 2) {
		snprintf(l.why, sizeof(l.why), "post-copy in a version 1 stream");
		err = -EPROTO;
	}
	if (!err) {
		/* The guest clock moves on by the time the switch-over took (host clocks agree
		 * on one machine and, with NTP, between hosts); never backwards. */
		uint64_t now = realtime_ns();
		uint64_t elapsed = now > l.clock_realtime ? now - l.clock_realtime : 0;
		if (elapsed > 60ULL * 1000000000ULL)
			elapsed = 0; /* the clocks disagree: do not jump */
		err = loader_apply(&l, elapsed);
	}
	if (!err && l.need)
		err = dest_postcopy_setup(d, l.need, l.why, sizeof(l.why));
	if (err) {
		log_error("incoming migration failed: %s", l.why);
		send_nack(fd, l.why);
		close(fd);
	} else {
		/* Loaded. Version 1: the source's ACK means run. Version 2: ACK says loaded,
		 * with this migration's id, and the guest runs on GO only (the source has let
		 * go then), so that it never runs on both sides. */
		uint8_t ack[16];
		uint64_t t = host_now_ns();
		log_debug("migration: state loaded at %" PRIu64 " ms", t / 1000000);
		put_u64(ack, t);
		put_u64(ack + 8, d->id);
		err = send_record(&ackw, REC_ACK, ack, version < 2 ? 8 : 16);
		if (err) {
			snprintf(l.why, sizeof(l.why), "cannot acknowledge: %s", ackw.err);
			close(fd);
		} else if (version < 2) {
			close(fd);
		} else {
			vm_set_phase(vm, "waiting for the source's go-ahead");
			err = dest_wait_go(d, &s, fd, l.why, sizeof(l.why));
		}
		if (err)
			log_error("incoming migration failed: %s", l.why);
	}
	if (!err)
		dest_claim(vm);
	if (!err) {
		log_info("migration received (%u passes, %" PRIu64 " MiB%s)", l.passes,
			 s.bytes >> 20,
			 d->postcopy ? "; post-copy: the rest comes while it runs" : "");
		/* Stay reachable until the source is done with us. */
		if (version >= 2) {
			d->conn_started =
				pthread_create(&d->conn_thread, NULL, dest_conn_thread, d) == 0;
			if (d->postcopy)
				d->fault_started = pthread_create(&d->fault_thread, NULL,
								  dest_fault_thread, d) == 0;
			if (!d->conn_started || (d->postcopy && !d->fault_started)) {
				log_error("incoming migration: cannot start a thread");
				err = -EAGAIN; /* too late for the source: it let go */
			}
		}
	}
	loader_free(&l);
	if (ack_ok)
		stream_free(&ackw);
	stream_free(&s);
	if (!err && version >= 2 && vm->migration)
		vm->migration->dest = d;
	else
		dest_free(d);
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

/* ---- The source after the state is out ---- */

/* Reads the destination's next record, which must be want with at least min bytes. */
static int read_answer(struct stream *s, uint8_t want, uint32_t min, const uint8_t **p,
		       uint32_t *len, char *why, size_t n)
{
	uint8_t type;
	uint16_t ver;
	int err = stream_read_record(s, &type, &ver, p, len);

	if (err)
		return err;
	if (type == REC_NACK) {
		char msg[160];
		str_escape(msg, sizeof(msg), *p, *len);
		snprintf(why, n, "the destination refused: %s", msg);
		return -EPROTO;
	}
	if (type != want || *len < min) {
		snprintf(why, n, "unexpected answer from the destination (record %u)", type);
		return -EPROTO;
	}
	return 0;
}

/* Once committed, the link to the destination is lost: connects again until the
 * destination answers RESUME (need, when not NULL, becomes the pages it lacks). Returns 0,
 * or -ESHUTDOWN when this VMM is ending. The guest stays paused here all along. */
static int src_resume(struct migration *m, uint64_t id, struct stream *s, uint64_t *t_run,
		      uint64_t *need, size_t words)
{
	uint64_t t0 = host_now_ns(), next_log = t0 + 30000000000ULL;
	bool told_unknown = false;

	log_warn("migration: the link to the destination is lost after the hand-over; "
		 "reconnecting (the VM stays paused here, it now belongs to the destination)");
	for (;;) {
		pthread_mutex_lock(&m->lock);
		if (s->fd >= 0) {
			shutdown(s->fd, SHUT_RDWR);
			close(s->fd);
			s->fd = -1;
		}
		bool quit = m->quit;
		pthread_mutex_unlock(&m->lock);
		if (quit)
			return -ESHUTDOWN;
		char why[200] = "";
		int fd = connect_uri(m->link, m->params.uri, why, sizeof(why));
		if (fd >= 0) {
			const uint8_t *p;
			uint32_t len;
			uint8_t idb[8];
			put_u64(idb, id);
			pthread_mutex_lock(&m->lock);
			s->fd = fd;
			s->len = s->pos = 0;
			s->err[0] = 0;
			pthread_mutex_unlock(&m->lock);
			int err = stream_write_header(s, STREAM_MIGRATION);
			if (!err)
				err = send_record(s, REC_RESUME, idb, sizeof(idb));
			if (!err)
				err = read_answer(s, REC_RESUME_ACK, 8, &p, &len, why, sizeof(why));
			if (!err && need && len != 8 + words * 8)
				err = -EPROTO;
			if (!err) {
				*t_run = get_u64(p);
				for (size_t w = 0; need && w < words; w++)
					need[w] = get_u64(p + 8 + w * 8);
				log_info("migration: the destination is back after %" PRIu64 " ms",
					 (host_now_ns() - t0) / 1000000);
				return 0;
			}
			if (err == -EPROTO && !told_unknown) {
				log_error("migration: reconnecting: %s", why[0] ? why : s->err);
				told_unknown = true;
			}
		}
		if (host_now_ns() > next_log) {
			log_warn("migration: still no link to the destination (%" PRIu64 " s)",
				 (uint64_t)((host_now_ns() - t0) / 1000000000ULL));
			next_log += 30000000000ULL;
		}
		sleep_ns(500000000ULL);
	}
}

/* Post-copy on the source: the destination's requests first, the rest in order from the
 * last one asked for. */
/* Post-copy from the start: how long to watch which pages the guest uses before pausing
 * it, to send those first. */
#define POSTCOPY_WATCH_MS 100
#define PC_BACKLOG_MAX (256U << 10) /* bytes queued in the socket before pushing more */

/* With TLS, fd is the socket pair to the relay: SIOCOUTQ counts what the relay has not
 * taken yet, and the relay keeps little unsent in TCP (link.c: TCP_NOTSENT_LOWAT). */
static unsigned socket_backlog(int fd)
{
	int n = 0;
	return ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0 ? (unsigned)n : 0;
}

struct pc_src {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int fd;
	uint64_t q[4096];
	unsigned qn;
	bool complete, broken;
	pthread_t reader;
	bool reader_started;
};

static void *src_reader_thread(void *arg)
{
	struct pc_src *p = arg;
	struct stream r;
	bool ok = stream_init(&r, p->fd) == 0;

	while (ok) {
		uint8_t type;
		uint16_t ver;
		const uint8_t *pl;
		uint32_t len;
		int err = stream_read_record(&r, &type, &ver, &pl, &len);
		pthread_mutex_lock(&p->lock);
		if (!err && type == REC_PC_REQ && len % 8 == 0) {
			for (uint32_t i = 0; i < len / 8 && p->qn < 4096; i++)
				p->q[p->qn++] = get_u64(pl + i * 8);
		} else if (!err && type == REC_PC_COMPLETE) {
			p->complete = true;
			ok = false;
		} else {
			p->broken = true;
			ok = false;
		}
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
	if (r.buf)
		stream_free(&r);
	else {
		pthread_mutex_lock(&p->lock);
		p->broken = true;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

static void pc_reader_start(struct pc_src *p, int fd)
{
	struct timeval none = { 0 };
	p->fd = fd;
	p->qn = 0;
	p->broken = false;
	/* The destination may say nothing for long: only writes time out here. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
	p->reader_started = pthread_create(&p->reader, NULL, src_reader_thread, p) == 0;
	if (!p->reader_started)
		p->broken = true;
}

static void pc_reader_stop(struct pc_src *p)
{
	if (p->reader_started) {
		shutdown(p->fd, SHUT_RDWR);
		pthread_join(p->reader, NULL);
		p->reader_started = false;
	}
}

static void set_postcopy(struct migrate_status *st, void *arg)
{
	const uint64_t *v = arg;
	st->postcopy_active = true;
	st->remaining_pages = v[0];
	st->bytes = v[1];
}

/* Sends the pages in need until the destination has them all. 0, or -ESHUTDOWN. */
static int src_postcopy(struct migration *m, struct page_sender *ps, struct stream *s, uint64_t id,
			uint64_t *need, uint64_t *hot)
{
	struct vm *vm = m->vm;
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	size_t words = (size_t)((npages + 63) / 64);
	static const uint8_t zero_page[PAGE_SIZE];
	struct pc_src *p = calloc(1, sizeof(*p));
	struct pagemap *pm = malloc(sizeof(*pm));
	uint64_t left = bitmap_count(need, npages), cursor = 0, hot_w = 0, t_run, backlog_since = 0;
	unsigned last_backlog = 0;
	bool done_sent = false;
	int ret = 0;

	if (!p || !pm) {
		free(p);
		free(pm);
		return -ENOMEM;
	}
	pm->fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	pm->first = pm->count = 0;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	pc_reader_start(p, s->fd);
	uint64_t nhot = 0;
	for (size_t w = 0; hot && w < words; w++)
		nhot += (uint64_t)__builtin_popcountll(hot[w] & need[w]);
	log_info("migration: post-copy: %" PRIu64 " pages to send while the guest runs there, "
		 "first the %" PRIu64 " it used last",
		 left, nhot);
	for (;;) {
		uint64_t q[256];
		unsigned nq = 0;
		pthread_mutex_lock(&p->lock);
		if (done_sent && !p->complete && !p->broken && !p->qn) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += IO_TIMEOUT_S;
			if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT &&
			    !p->complete && !p->qn)
				p->broken = true; /* no word from the destination */
		}
		bool complete = p->complete, broken = p->broken;
		/* First asked, first served: a fault's page before those asked after it. */
		nq = p->qn < 256 ? p->qn : 256;
		memcpy(q, p->q, nq * sizeof(q[0]));
		memmove(p->q, p->q + nq, (p->qn - nq) * sizeof(q[0]));
		p->qn -= nq;
		pthread_mutex_unlock(&p->lock);
		if (complete)
			break;
		if (broken || m->quit) {
			pc_reader_stop(p);
			if (m->quit) {
				ret = -ESHUTDOWN;
				break;
			}
			ret = src_resume(m, id, s, &t_run, need, words);
			if (ret)
				break;
			s->rate_bps = (uint64_t)m->params.bandwidth_mibps << 20;
			s->rate_start_ns = 0;
			sbuf_reset(&ps->rec);
			left = bitmap_count(need, npages);
			done_sent = false;
			pc_reader_start(p, s->fd);
			continue;
		}
		int err = 0;
		unsigned backlog = !nq && left ? socket_backlog(s->fd) : 0;
		if (backlog > PC_BACKLOG_MAX) {
			/* Keep the queue to the destination short, so that a page it asks for
			 * does not wait behind megabytes of others. A queue that does not move
			 * for the I/O timeout is a dead link. */
			uint64_t now = host_now_ns();
			if (backlog != last_backlog) {
				last_backlog = backlog;
				backlog_since = now;
			}
			pthread_mutex_lock(&p->lock);
			if (now - backlog_since > IO_TIMEOUT_S * 1000000000ULL)
				p->broken = true;
			if (!p->qn && !p->complete && !p->broken) {
				struct timespec ts;
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += 500000;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&p->cond, &p->lock, &ts);
			}
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		for (unsigned i = 0; i < nq && !err; i++) {
			uint64_t idx = q[i];
			if (idx >= npages)
				continue;
			/* The guest touches memory in runs: the rest follows from here. */
			cursor = idx / 64;
			err = pages_add(ps, idx, vm->ram.host + idx * PAGE_SIZE);
			if (need[idx / 64] >> (idx % 64) & 1) {
				need[idx / 64] &= ~(1ULL << (idx % 64));
				left--;
			}
		}
		if (!nq && left) {
			/* Up to 64 pages in need (a quarter MiB), then requests again: first
			 * those the vCPUs used last (hot), then in address order from the last
			 * page asked for. */
			uint64_t bits = 0, w;
			while (hot && hot_w < words && !(bits = hot[hot_w] & need[hot_w]))
				hot_w++;
			if (bits) {
				w = hot_w;
				hot[w] = 0;
				need[w] &= ~bits;
			} else {
				while (!need[cursor])
					cursor = (cursor + 1) % words;
				w = cursor;
				bits = need[w];
				need[w] = 0;
			}
			uint64_t unbacked =
				(w + 1) * 64 <= npages ? pagemap_unbacked(pm, vm, w * 64) : 0;
			while (bits && !err) {
				unsigned bit = (unsigned)__builtin_ctzll(bits);
				bits &= bits - 1;
				uint64_t idx = w * 64 + bit;
				err = pages_add(ps, idx,
						unbacked >> bit & 1
							? zero_page
							: vm->ram.host + idx * PAGE_SIZE);
				left--;
			}
		} else if (!nq && !done_sent) {
			err = pages_flush(ps);
			if (!err)
				err = stream_write_record(s, REC_PC_DONE, 1, NULL, 0);
			done_sent = true;
		}
		if (!err)
			err = pages_flush(ps);
		if (!err)
			err = stream_flush(s);
		if (err) {
			pthread_mutex_lock(&p->lock);
			p->broken = true;
			pthread_mutex_unlock(&p->lock);
		}
		uint64_t v[2] = { left, s->bytes };
		status_update(m, set_postcopy, v);
	}
	pc_reader_stop(p);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	if (pm->fd >= 0)
		close(pm->fd);
	free(pm);
	free(p);
	return ret;
}

/* The hand-over, with the state out and the guest paused here: the destination says it
 * has loaded it (ACK); until then any failure leaves the VM here. Then GO: from that
 * instant the VM belongs to the destination and this side never resumes it, whatever
 * happens to the link (it reconnects instead). *committed says which side of the line a
 * failure fell on. Fills *t_run with the instant the destination's vCPUs ran. */
static int src_handover(struct migration *m, struct stream *s, struct page_sender *ps,
			uint64_t *need, uint64_t *hot, bool *committed, uint64_t *t_run, char *why,
			size_t n)
{
	const uint8_t *p;
	uint32_t len;
	int err = read_answer(s, REC_ACK, 16, &p, &len, why, n);
	uint64_t id = err ? 0 : get_u64(p + 8);

	if (!err) {
		pthread_mutex_lock(&m->lock);
		if (m->cancel) {
			err = -ECANCELED;
		} else {
			m->committing = true;
			*committed = true;
		}
		pthread_mutex_unlock(&m->lock);
	}
	if (err) {
		/* Tell the destination to drop what it holds (it may not hear it). */
		static const char msg[] = "the source keeps the VM";
		s->cancelled = 0;
		s->err[0] = 0; /* a failed read must not stop this write */
		(void)send_record(s, REC_NACK, msg, sizeof(msg) - 1);
		return err;
	}
	/* The disks' locks go with the VM: the destination takes them when it hears GO. From
	 * here on this side never resumes the guest (committed), so nothing takes them back. */
	(void)virt_claim(m->vm, false);
	err = send_record(s, REC_GO, NULL, 0);
	if (!err)
		err = read_answer(s, REC_RUNNING, 8, &p, &len, why, n);
	if (!err)
		*t_run = get_u64(p);
	if (err) {
		size_t words = (size_t)(((m->vm->ram.size >> PAGE_SHIFT) + 63) / 64);
		err = src_resume(m, id, s, t_run, m->params.postcopy ? need : NULL, words);
		if (err)
			return err;
	}
	if (m->params.postcopy)
		return src_postcopy(m, ps, s, id, need, hot);
	/* Nothing more: the destination may let go of its listening socket. */
	(void)send_record(s, REC_PC_DONE, NULL, 0);
	return 0;
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

/* Makes the file a snapshot is written to before it is renamed to path: a new one, in
 * path's directory (a rename stays within one file system), made exclusively under a name
 * nobody can have planted a link or a FIFO at (O_EXCL never follows a link). A path that
 * exists and is not a regular file (a symlink, a device, a FIFO, a directory) is refused:
 * the snapshot would replace it. The descriptor with tmp (n bytes) its name, or -errno with
 * why. */
static int snapshot_create(const char *path, char *tmp, size_t tn, char *why, size_t n)
{
	struct stat st;

	if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		snprintf(why, n, "'%.120s': exists and is not a regular file (not replaced)", path);
		return -EEXIST;
	}
	const char *slash = strrchr(path, '/');
	int dirlen = slash ? (int)(slash - path) + 1 : 0;
	if ((size_t)snprintf(tmp, tn, "%.*s.%s.XXXXXX", dirlen, path, slash ? slash + 1 : path) >=
	    tn) {
		snprintf(why, n, "'%.120s': path too long", path);
		return -ENAMETOOLONG;
	}
	int fd = mkostemp(tmp, O_CLOEXEC); /* O_CREAT | O_EXCL, mode 0600 */
	if (fd < 0) {
		int err = -errno;
		snprintf(why, n, "'%.120s': %s", path, strerror(-err));
		return err;
	}
	return fd;
}

/* Writes a whole snapshot with the guest paused. */
static int do_snapshot(struct migration *m, char *why, size_t n)
{
	struct vm *vm = m->vm;
	char tmp[4200];
	struct stream s;
	struct sbuf b;
	int err;

	int fd = snapshot_create(m->snapshot_path, tmp, sizeof(tmp), why, n);
	if (fd < 0)
		return fd;
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
/* After a failed hand-over: tells the destination, on new connections, that this side kept
 * the VM (ABANDON with the stream's token), so that it ends instead of waiting for the source
 * forever; tried for the reconnect window, until one is delivered. */
struct abandon {
	char uri[sizeof(((struct migrate_params *)0)->uri)];
	uint64_t token;
	struct mig_link *link; /* a reference */
};

static void *abandon_thread(void *arg)
{
	struct abandon *a = arg;
	uint64_t end = host_now_ns() + RECONNECT_WINDOW_NS;
	char why[200];
	uint8_t tb[8];

	put_u64(tb, a->token);
	while (host_now_ns() < end) {
		int fd = connect_uri(a->link, a->uri, why, sizeof(why));
		struct stream w;
		if (fd >= 0 && stream_init(&w, fd) == 0) {
			set_timeouts(fd, 2);
			int err = stream_write_header(&w, STREAM_MIGRATION);
			if (!err)
				err = stream_write_record(&w, REC_ABANDON, 1, tb, sizeof(tb));
			if (!err)
				err = stream_flush(&w);
			/* Delivered once the other side has read it and closed. */
			char c;
			if (!err) {
				shutdown(fd, SHUT_WR);
				while (read(fd, &c, 1) > 0)
					;
			}
			stream_free(&w);
			close(fd);
			if (!err) {
				log_info("migration: told %s that this side kept the VM", a->uri);
				break;
			}
		} else if (fd >= 0) {
			close(fd);
		}
		sleep_ns(500000000);
	}
	mig_link_unref(a->link);
	free(a);
	return NULL;
}

static void abandon_start(struct mig_link *link, const char *uri, uint64_t token)
{
	struct abandon *a = calloc(1, sizeof(*a));
	pthread_t t;
	pthread_attr_t attr;

	if (!a)
		return;
	snprintf(a->uri, sizeof(a->uri), "%s", uri);
	a->token = token;
	a->link = mig_link_ref(link);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, abandon_thread, a)) {
		mig_link_unref(a->link);
		free(a);
	}
	pthread_attr_destroy(&attr);
}

static int do_migrate(struct migration *m, char *why, size_t n)
{
	struct vm *vm = m->vm;
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	size_t words = (size_t)((npages + 63) / 64);
	uint64_t *bitmap = calloc(words, sizeof(uint64_t));
	uint64_t *hot = NULL; /* post-copy: the pages the guest used just before the pause */
	struct stream s;
	struct sbuf b;
	bool paused = false, quiesced = false, committed = false, state_sent = false;
	int err;

	if (!bitmap) {
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	int fd = connect_uri(m->link, m->params.uri, why, n);
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

	/* The token proves an ABANDON to be ours, should we keep the VM after the
	 * destination has loaded it without hearing so. */
	uint64_t token = 0;
	uint8_t tb[8];
	if (getrandom(&token, sizeof(token), 0) != sizeof(token))
		token = host_now_ns() ^ (uint64_t)getpid() << 32;
	token |= 1; /* never 0, which means none */
	put_u64(tb, token);
	config_save(vm, &b);
	err = stream_write_header(&s, STREAM_MIGRATION);
	if (!err)
		err = stream_write_record(&s, REC_SOURCE, 1, tb, sizeof(tb));
	if (!err)
		err = stream_write_record(&s, REC_CONFIG, CONFIG_VERSION, b.data, (uint32_t)b.len);
	if (!err)
		err = vm_dirty_log_start(vm);
	bool logging_access = false;
	if (!err && m->params.postcopy) {
		/* Post-copy from the start: watch for a moment which pages the guest uses,
		 * to send those first after the hand-over (fewer faults as it starts there). */
		vm_pause(vm);
		logging_access = vm_access_log_start(vm) == 0;
		vm_resume(vm);
		for (int i = 0; i < POSTCOPY_WATCH_MS / 10 && !m->cancel; i++)
			sleep_ns(10000000);
	}

	uint64_t target_ns =
		(uint64_t)(m->params.downtime_ms ? m->params.downtime_ms : DEFAULT_DOWNTIME_MS) *
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
		/* Post-copy hands over at once: the outage is the state's, not the pages'. */
		pi.expected_ms = m->params.postcopy ? 0 : (uint64_t)(cost * 1000);
		pi.bytes = s.bytes;
		pi.throttle = m->throttle_pct;
		status_update(m, set_pass, &pi);
		if (m->to_postcopy)
			m->params.postcopy = true;
		if (m->params.postcopy ||
		    (pass > 1 && (cost * 1e9 <= (double)target_ns || pass >= MAX_PASSES)))
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
	if (logging_access) {
		/* The harts must be held while the log goes (they write to it). */
		if (!paused)
			vm_pause(vm);
		hot = vm_access_log_stop(vm);
		if (!paused)
			vm_resume(vm);
	}
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
		if (!err && m->params.postcopy) {
			/* Post-copy: the destination runs without these pages and fetches them
			 * (bitmap keeps them: src_postcopy sends them). */
			sbuf_reset(&b);
			for (size_t w = 0; w < words; w++)
				sbuf_u64(&b, bitmap[w]);
			err = b.oom ? -ENOMEM
				    : stream_write_record(&s, REC_PC_START, 1, b.data,
							  (uint32_t)b.len);
		} else if (!err) {
			err = pages_send_bitmap(m, &ps, bitmap);
		}
		uint64_t t_p = host_now_ns();
		if (!err) {
			err = write_final_state(vm, &s, t_pause);
			state_sent = !err;
		}
		log_debug("migration: switch-over: quiesce %" PRIu64 " us, sync %" PRIu64
			  " us, %" PRIu64 " pages in %" PRIu64 " us, state %" PRIu64 " us",
			  (t_q - t_pause) / 1000, (t_s - t_q) / 1000, last, (t_p - t_s) / 1000,
			  (host_now_ns() - t_p) / 1000);
		uint64_t t_run = 0;
		if (!err)
			err = src_handover(m, &s, &ps, bitmap, hot, &committed, &t_run, why, n);
		if (committed) {
			/* Both stamps are CLOCK_MONOTONIC: one machine shares it. */
			uint64_t down = t_run > t_pause ? t_run - t_pause : host_now_ns() - t_pause;
			pthread_mutex_lock(&m->lock);
			m->st.downtime_us = down / 1000ULL;
			m->st.bytes = s.bytes;
			m->st.rounds = pass;
			m->st.remaining_pages = 0;
			pthread_mutex_unlock(&m->lock);
		}
	}
	if (err && !why[0])
		snprintf(why, n, "%s", s.err[0] ? s.err : strerror(-err));
	if (err == -ECANCELED)
		snprintf(why, n, "cancelled");
	if (err) {
		pthread_mutex_lock(&m->lock);
		m->st.bytes = s.bytes;
		pthread_mutex_unlock(&m->lock);
	}

	pthread_mutex_lock(&m->lock);
	m->stream = NULL;
	pthread_mutex_unlock(&m->lock);
	vm_dirty_log_stop(vm);
	if (err && committed) {
		/* The destination has the VM; this side never resumes it. */
		snprintf(why, n, "this VMM is ending while the destination %s",
			 m->params.postcopy ? "still lacks pages" : "may not have heard the end");
	} else if (err) {
		/* Nothing was acknowledged: the guest goes on here as if nothing happened. */
		if (quiesced || paused)
			unquiesce_devices(vm);
		if (paused)
			vm_resume(vm);
		/* The destination may have it all and wait for a word it will not get. */
		if (state_sent)
			abandon_start(m->link, m->params.uri, token);
	}
	/* On success the vCPUs stay paused: the VM now lives on the destination. The
	 * connection may be another than the first (src_resume). */
	if (s.fd >= 0) {
		shutdown(s.fd, SHUT_RDWR);
		close(s.fd);
	}
	stream_free(&s);
	sbuf_free(&b);
	sbuf_free(&ps.rec);
	ZSTD_freeCCtx(ps.zctx);
	free(hot);
	free(bitmap);
	return err;
}

static void *job_thread(void *arg)
{
	struct migration *m = arg;
	char why[200] = "";
	bool snapshot = m->is_snapshot; /* the job's fields are the next job's once busy ends */
	int err = snapshot ? do_snapshot(m, why, sizeof(why)) : do_migrate(m, why, sizeof(why));

	if (err == -ESHUTDOWN) {
		log_warn("migration: %s", why);
	} else if (err) {
		log_warn("%s %s: %s; the guest runs on here", snapshot ? "snapshot" : "migration",
			 err == -ECANCELED ? "cancelled" : "failed", why);
	} else if (snapshot) {
		log_info("snapshot written to %s", m->snapshot_path);
	} else {
		log_info("migration completed: the VM runs on the destination");
	}
	pthread_mutex_lock(&m->lock);
	m->st.total_ms = (host_now_ns() - m->start_ns) / 1000000ULL;
	if (!err) {
		m->st.state = MIGRATE_COMPLETED;
	} else {
		m->st.state = err == -ECANCELED ? MIGRATE_CANCELLED : MIGRATE_FAILED;
		snprintf(m->st.error, sizeof(m->st.error), "%s", why);
	}
	/* The job is over before anyone hears so: a client told "done" (the snapshot's
	 * answer, a final status) may start the next job at once (job_start joins this
	 * thread). A migration that completed lingers below, but job_start refuses a VM
	 * that has migrated away. */
	m->busy = false;
	migration_done_fn done = snapshot ? m->done : NULL;
	void *done_opaque = m->done_opaque;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);

	if (done)
		done(done_opaque, err, why);
	if (!err && !snapshot) {
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
	return NULL;
}

int migration_create(struct vm *vm, struct migration **out)
{
	struct migration *m = calloc(1, sizeof(*m));
	pthread_condattr_t ca;

	if (!m)
		return -ENOMEM;
	m->vm = vm;
	if (vm->cfg) {
		char why[300] = "";
		int err = mig_link_create(vm->cfg->migration_key, vm->cfg->migration_tls, &m->link,
					  why, sizeof(why));
		if (err) {
			log_error("%s", why);
			free(m);
			return err;
		}
		m->insecure = vm->cfg->migration_insecure;
	}
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

void migration_stop_incoming(struct migration *m)
{
	if (m && m->dest) {
		dest_free(m->dest);
		m->dest = NULL;
	}
}

bool migration_incoming_status(struct migration *m, uint64_t *missing, bool *link_up)
{
	struct dest *d = m ? m->dest : NULL;
	if (!d || !d->postcopy || atomic_load(&d->finished))
		return false;
	*missing = atomic_load(&d->missing);
	*link_up = atomic_load(&d->link_up);
	return true;
}

void migration_shutdown(struct migration *m)
{
	if (!m)
		return;
	migration_stop_incoming(m);
	migration_cancel(m);
	pthread_mutex_lock(&m->lock);
	m->quit = 1;
	if (m->stream && m->stream->fd >= 0)
		shutdown(m->stream->fd, SHUT_RDWR);
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_lock(&m->lock);
	m->done_read = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	join_job(m);
}

void migration_destroy(struct migration *m)
{
	if (!m)
		return;
	migration_shutdown(m);
	mig_link_unref(m->link);
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
	m->to_postcopy = 0;
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

int migration_start(struct migration *m, const struct migrate_params *p, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	if (!m->busy)
		m->done = NULL;
	pthread_mutex_unlock(&m->lock);
	if (strncmp(p->uri, "tcp:", 4) != 0 && strncmp(p->uri, "unix:", 5) != 0) {
		snprintf(err, errlen, "'%s': must be tcp:HOST:PORT or unix:PATH", p->uri);
		return -EINVAL;
	}
	if (strncmp(p->uri, "tcp:", 4) == 0 && !m->link && !m->insecure) {
		snprintf(err, errlen,
			 "'%s': TCP migration needs this VMM started with --migration-key or "
			 "--migration-tls (or --migration-insecure)",
			 p->uri);
		return -EPERM;
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

int migration_switch_postcopy(struct migration *m)
{
	pthread_mutex_lock(&m->lock);
	int ret = !m->busy || m->is_snapshot || m->st.state != MIGRATE_ACTIVE ? -ENOENT
		  : m->committing || m->params.postcopy			      ? -EBUSY
									      : 0;
	if (!ret)
		m->to_postcopy = 1;
	pthread_mutex_unlock(&m->lock);
	return ret;
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
