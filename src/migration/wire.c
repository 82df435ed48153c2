/* The records of migrations and snapshots: their writing and the loader that reads them
 * back (the framing is stream.h's; docs/migration.md has the protocol).
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
#include "migration/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

/* ---- The VM's shape ---- */

void config_save(const struct vm *vm, struct sbuf *b)
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

bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	for (size_t i = 0; i < PAGE_SIZE / 8; i += 8)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		    w[i + 7])
			return false;
	return true;
}
int pages_flush(struct page_sender *ps)
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

int pages_add(struct page_sender *ps, uint64_t idx, const uint8_t *page)
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
uint64_t pagemap_unbacked(struct pagemap *pm, const struct vm *vm, uint64_t first)
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
int pages_send_bitmap(struct migration *m, struct page_sender *ps, uint64_t *bitmap)
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

uint64_t bitmap_count(const uint64_t *bitmap, uint64_t npages)
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

/* Writes CLOCK, CPU x harts, DEVICES and END; the vCPUs are paused and the devices quiet. */
int write_final_state(struct vm *vm, struct stream *s, uint64_t t_pause)
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
		vm->state_ops->save_cpu(vm->harts[i], &b);
		err = b.oom ? -ENOMEM
			    : stream_write_record(s, REC_CPU, vm->state_ops->cpu_version, b.data,
						  (uint32_t)b.len);
	}
	if (!err) {
		sbuf_reset(&b);
		vm->state_ops->save_devices(vm, &b);
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
void loader_free(struct loader *l)
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
int loader_read(struct loader *l, struct stream *s)
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
			if (ver < 1 || ver > vm->state_ops->cpu_version || len < 4) {
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
int loader_apply(struct loader *l, uint64_t elapsed_ns)
{
	struct vm *vm = l->vm;
	size_t n = sizeof(l->why);

	for (int i = 0; i < vm->nharts; i++) {
		struct sreader r;
		sreader_init(&r, l->cpu[i], l->cpu_len[i]);
		if (vm->state_ops->load_cpu(vm->harts[i], &r, l->cpu_ver[i]) || r.left) {
			snprintf(l->why, n, "vCPU %d: %s", i, r.err ? r.err : "trailing bytes");
			return -EPROTO;
		}
	}
	/* The guest clock continues from the pause: never backwards. */
	uint64_t ticks = l->clock_mtime + elapsed_ns / (1000000000ULL / VM_TIMEBASE_HZ);
	vm->clock_base_ns = host_now_ns() - ticks * (1000000000ULL / VM_TIMEBASE_HZ);
	struct sreader r;
	sreader_init(&r, l->devices, l->devices_len);
	if (vm->state_ops->load_devices(vm, &r)) {
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
	if (!vm->state_ops) {
		log_error("--restore '%s': this machine cannot load a saved state", path);
		return -ENOTSUP;
	}
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
