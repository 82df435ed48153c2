/* The saved-state stream (see stream.h). */
#include "migration/stream.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/vm.h"
#include "migration/sbuf.h"

#define STREAM_BUF (1U << 20)

static int stream_fail(struct stream *s, int err, const char *fmt, ...)
{
	if (!s->err[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(s->err, sizeof(s->err), fmt, ap);
		va_end(ap);
	}
	return err;
}

int stream_init(struct stream *s, int fd)
{
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	s->cap = STREAM_BUF + 64; /* reads grow it to the largest record seen */
	s->buf = malloc(s->cap);
	return s->buf ? 0 : -ENOMEM;
}

void stream_free(struct stream *s)
{
	free(s->buf);
	s->buf = NULL;
}

/* Sleeps as long as needed to keep writes under the rate cap. */
static void stream_throttle(struct stream *s, size_t n)
{
	if (!s->rate_bps)
		return;
	uint64_t now = host_now_ns();
	if (!s->rate_start_ns || now - s->rate_start_ns > 1000000000ULL) {
		s->rate_start_ns = now;
		s->rate_bytes = 0;
	}
	s->rate_bytes += n;
	uint64_t due = s->rate_start_ns + s->rate_bytes * 1000000000ULL / s->rate_bps;
	while (!s->cancelled && (now = host_now_ns()) < due) {
		uint64_t ns = due - now > 50000000ULL ? 50000000ULL : due - now;
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)ns };
		nanosleep(&ts, NULL);
	}
}

static int stream_write_all(struct stream *s, const uint8_t *p, size_t n)
{
	stream_throttle(s, n);
	while (n) {
		if (s->cancelled)
			return stream_fail(s, -ECANCELED, "cancelled");
		ssize_t w = write(s->fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return stream_fail(s, -ETIMEDOUT, "write timed out");
			return stream_fail(s, -errno, "write: %s", strerror(errno));
		}
		p += w;
		n -= (size_t)w;
		s->bytes += (uint64_t)w;
	}
	return 0;
}

int stream_flush(struct stream *s)
{
	if (s->err[0])
		return -EIO;
	int err = stream_write_all(s, s->buf, s->len);
	s->len = 0;
	return err;
}

static int stream_put(struct stream *s, const void *p, size_t n)
{
	if (s->err[0])
		return -EIO;
	if (s->len + n > s->cap) {
		int err = stream_flush(s);
		if (err)
			return err;
	}
	if (n > s->cap)
		return stream_write_all(s, p, n);
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	if (s->len >= STREAM_BUF)
		return stream_flush(s);
	return 0;
}

static void le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int stream_write_header(struct stream *s, enum stream_kind kind)
{
	uint8_t h[16];

	memcpy(h, STREAM_MAGIC, 8);
	le32(h + 8, STREAM_VERSION);
	le32(h + 12, (uint32_t)kind);
	return stream_put(s, h, sizeof(h));
}

int stream_write_record(struct stream *s, uint8_t type, uint16_t version, const void *payload,
			uint32_t len)
{
	uint8_t h[8], c[4];

	if (len > STREAM_MAX_PAYLOAD)
		return stream_fail(s, -EMSGSIZE, "record of %u bytes is too long", len);
	h[0] = type;
	h[1] = 0;
	h[2] = (uint8_t)version;
	h[3] = (uint8_t)(version >> 8);
	le32(h + 4, len);
	le32(c, crc32c(crc32c(0, h, sizeof(h)), payload, len));
	int err = stream_put(s, h, sizeof(h));
	if (!err && len)
		err = stream_put(s, payload, len);
	if (!err)
		err = stream_put(s, c, sizeof(c));
	return err;
}

/* Reads exactly n bytes into p. */
static int stream_read_all(struct stream *s, uint8_t *p, size_t n, bool at_record_start)
{
	size_t got = 0;

	while (got < n) {
		if (s->cancelled)
			return stream_fail(s, -ECANCELED, "cancelled");
		ssize_t r = read(s->fd, p + got, n - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return stream_fail(s, -ETIMEDOUT, "read timed out");
			return stream_fail(s, -errno, "read: %s", strerror(errno));
		}
		if (r == 0) {
			if (got == 0 && at_record_start)
				return stream_fail(s, -ENODATA, "the stream ends early");
			return stream_fail(s, -EPROTO, "the stream is truncated");
		}
		got += (size_t)r;
		s->bytes += (uint64_t)r;
	}
	return 0;
}

int stream_read_header(struct stream *s, enum stream_kind kind, uint32_t *version)
{
	uint8_t h[16];
	int err = stream_read_all(s, h, sizeof(h), true);

	if (err)
		return err == -ENODATA ? stream_fail(s, -EPROTO, "empty stream") : err;
	if (memcmp(h, STREAM_MAGIC, 8) != 0)
		return stream_fail(s, -EPROTO, "not a saved VM state (bad magic)");
	uint32_t v = rd32(h + 8);
	if (v < STREAM_VERSION_MIN || v > STREAM_VERSION)
		return stream_fail(s, -EPROTO, "format version %u (this build reads %u to %u)", v,
				   STREAM_VERSION_MIN, STREAM_VERSION);
	if (rd32(h + 12) != (uint32_t)kind)
		return stream_fail(s, -EPROTO, "a %s stream where a %s was expected",
				   rd32(h + 12) == STREAM_SNAPSHOT ? "snapshot" : "migration",
				   kind == STREAM_SNAPSHOT ? "snapshot" : "migration");
	if (version)
		*version = v;
	return 0;
}

int stream_read_record(struct stream *s, uint8_t *type, uint16_t *version, const uint8_t **payload,
		       uint32_t *len)
{
	uint8_t h[8], c[4];
	int err = stream_read_all(s, h, sizeof(h), true);

	if (err)
		return err;
	uint32_t n = rd32(h + 4);
	if (h[1] != 0 || n > STREAM_MAX_PAYLOAD)
		return stream_fail(s, -EPROTO, "malformed record header (type %u, %u bytes)", h[0],
				   n);
	if (n > s->cap) {
		uint8_t *nb = realloc(s->buf, n);
		if (!nb)
			return stream_fail(s, -ENOMEM, "out of memory for a record of %u bytes", n);
		s->buf = nb;
		s->cap = n;
	}
	err = stream_read_all(s, s->buf, n, false);
	if (!err)
		err = stream_read_all(s, c, sizeof(c), false);
	if (err)
		return err;
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
	if (rd32(c) != crc32c(crc32c(0, h, sizeof(h)), s->buf, n))
		return stream_fail(s, -EPROTO, "checksum mismatch in a record of type %u", h[0]);
#endif
	*type = h[0];
	*version = (uint16_t)(h[2] | h[3] << 8);
	*payload = s->buf;
	*len = n;
	return 0;
}
