/* Post-copy on the destination: guest RAM under userfaultfd, the fault thread asking the
 * source for pages, and the pages placed as they come. */
#define _GNU_SOURCE
#include "migration/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"

static bool have_page(struct dest *d, uint64_t idx)
{
	return __atomic_load_n(&d->have[idx / 64], __ATOMIC_ACQUIRE) >> (idx % 64) & 1;
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
void dest_rerequest(struct dest *d)
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

void *dest_fault_thread(void *arg)
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

/* A PAGES payload in post-copy: each page goes in place atomically. */
int dest_pages(struct dest *d, uint8_t *buf, const uint8_t *p, uint32_t len)
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
int dest_postcopy_setup(struct dest *d, const uint64_t *need, char *why, size_t n)
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
