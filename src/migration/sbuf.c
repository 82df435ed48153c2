/* Saved-state buffers (see sbuf.h). */
#include "migration/sbuf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void sbuf_init(struct sbuf *b)
{
	memset(b, 0, sizeof(*b));
}

void sbuf_free(struct sbuf *b)
{
	free(b->data);
	sbuf_init(b);
}

void sbuf_reset(struct sbuf *b)
{
	b->len = 0;
	b->oom = false;
}

uint8_t *sbuf_reserve(struct sbuf *b, size_t n)
{
	if (b->oom)
		return NULL;
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2) {
				b->oom = true;
				return NULL;
			}
			cap *= 2;
		}
		uint8_t *d = realloc(b->data, cap);
		if (!d) {
			b->oom = true;
			return NULL;
		}
		b->data = d;
		b->cap = cap;
	}
	uint8_t *p = b->data + b->len;
	b->len += n;
	return p;
}

void sbuf_put(struct sbuf *b, const void *p, size_t n)
{
	uint8_t *d = sbuf_reserve(b, n);
	if (d && n)
		memcpy(d, p, n);
}

static void sbuf_le(struct sbuf *b, uint64_t v, unsigned n)
{
	uint8_t *d = sbuf_reserve(b, n);
	if (!d)
		return;
	for (unsigned i = 0; i < n; i++)
		d[i] = (uint8_t)(v >> (8 * i));
}

void sbuf_u8(struct sbuf *b, uint8_t v)
{
	sbuf_le(b, v, 1);
}

void sbuf_u16(struct sbuf *b, uint16_t v)
{
	sbuf_le(b, v, 2);
}

void sbuf_u32(struct sbuf *b, uint32_t v)
{
	sbuf_le(b, v, 4);
}

void sbuf_u64(struct sbuf *b, uint64_t v)
{
	sbuf_le(b, v, 8);
}

void sbuf_bool(struct sbuf *b, bool v)
{
	sbuf_le(b, v ? 1 : 0, 1);
}

void sbuf_str(struct sbuf *b, const char *s)
{
	size_t n = strlen(s);
	if (n > UINT16_MAX)
		n = UINT16_MAX;
	sbuf_u16(b, (uint16_t)n);
	sbuf_put(b, s, n);
}

void sreader_init(struct sreader *r, const void *p, size_t len)
{
	r->p = p;
	r->left = len;
	r->err = NULL;
}

void sreader_fail(struct sreader *r, const char *why)
{
	if (!r->err)
		r->err = why;
	r->left = 0;
}

const uint8_t *sreader_take(struct sreader *r, size_t n)
{
	if (r->err || n > r->left) {
		sreader_fail(r, "truncated");
		return NULL;
	}
	const uint8_t *p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

void sreader_get(struct sreader *r, void *p, size_t n)
{
	const uint8_t *s = sreader_take(r, n);
	if (s)
		memcpy(p, s, n);
	else
		memset(p, 0, n);
}

static uint64_t sreader_le(struct sreader *r, unsigned n)
{
	const uint8_t *s = sreader_take(r, n);
	uint64_t v = 0;
	if (!s)
		return 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)s[i] << (8 * i);
	return v;
}

uint8_t sreader_u8(struct sreader *r)
{
	return (uint8_t)sreader_le(r, 1);
}

uint16_t sreader_u16(struct sreader *r)
{
	return (uint16_t)sreader_le(r, 2);
}

uint32_t sreader_u32(struct sreader *r)
{
	return (uint32_t)sreader_le(r, 4);
}

uint64_t sreader_u64(struct sreader *r)
{
	return sreader_le(r, 8);
}

bool sreader_bool(struct sreader *r)
{
	uint8_t v = sreader_u8(r);
	if (v > 1)
		sreader_fail(r, "bad boolean");
	return v == 1;
}

void sreader_str(struct sreader *r, char *buf, size_t size)
{
	uint16_t n = sreader_u16(r);
	const uint8_t *s;

	buf[0] = 0;
	if (n >= size) {
		sreader_fail(r, "string too long");
		return;
	}
	s = sreader_take(r, n);
	if (!s)
		return;
	memcpy(buf, s, n);
	buf[n] = 0;
	if (memchr(buf, 0, n))
		sreader_fail(r, "NUL in a string");
}

void str_escape(char *dst, size_t n, const void *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = src;
	size_t o = 0;

	if (!n)
		return;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = p[i];
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			if (o + 1 >= n)
				break;
			dst[o++] = (char)c;
		} else {
			if (o + 4 >= n)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = 0;
}

uint32_t sreader_len(struct sreader *r, uint32_t max, const char *what)
{
	uint32_t n = sreader_u32(r);
	if (n > max) {
		sreader_fail(r, what);
		return 0;
	}
	return n;
}

/* CRC-32C, slicing by one byte through a table built on first use. */
static uint32_t crc32c_table[256];

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78U : c >> 1;
		crc32c_table[i] = c;
	}
}

static uint32_t crc32c_soft(uint32_t crc, const uint8_t *s, size_t n)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, crc32c_init);
	while (n--)
		crc = crc32c_table[(crc ^ *s++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
/* The SSE4.2 crc32 instruction computes CRC-32C: 8 bytes per instruction. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *s,
							       size_t n)
{
	uint64_t c = crc;
	while (n && ((uintptr_t)s & 7)) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *s++);
		n--;
	}
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, s, 8);
		c = __builtin_ia32_crc32di(c, v);
		s += 8;
		n -= 8;
	}
	while (n--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *s++);
	return (uint32_t)c;
}
#endif

uint32_t crc32c(uint32_t crc, const void *p, size_t n)
{
	crc = ~crc;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc32c_sse42(crc, p, n);
#endif
	return ~crc32c_soft(crc, p, n);
}
