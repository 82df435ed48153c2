/* Byte buffers for saved state: a growable writer and a bounded reader, little-endian.
 *
 * Device and CPU state is written field by field (never as raw structs: a struct's layout
 * is the compiler's, a stream's is ours). The reader never reads past its end: a short or
 * malformed section sets rd->err and every later get returns zeros, so a loader checks once
 * at the end (sreader_ok) and bounds every length it reads with sreader_len. */
#ifndef MABO_MIGRATION_SBUF_H
#define MABO_MIGRATION_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sbuf {
	uint8_t *data;
	size_t len;
	size_t cap;
	bool oom; /* an allocation failed: the buffer is incomplete */
};

void sbuf_init(struct sbuf *b);
void sbuf_free(struct sbuf *b);
void sbuf_reset(struct sbuf *b); /* len = 0, keeps the memory */
void sbuf_put(struct sbuf *b, const void *p, size_t n);
void sbuf_u8(struct sbuf *b, uint8_t v);
void sbuf_u16(struct sbuf *b, uint16_t v);
void sbuf_u32(struct sbuf *b, uint32_t v);
void sbuf_u64(struct sbuf *b, uint64_t v);
void sbuf_bool(struct sbuf *b, bool v);
/* A string: u16 length, then the bytes (no NUL). */
void sbuf_str(struct sbuf *b, const char *s);
/* Reserves n bytes and returns where they start (NULL after an allocation failure). */
uint8_t *sbuf_reserve(struct sbuf *b, size_t n);

struct sreader {
	const uint8_t *p;
	size_t left;
	const char *err; /* the first problem, or NULL */
};

void sreader_init(struct sreader *r, const void *p, size_t len);
void sreader_get(struct sreader *r, void *p, size_t n);
uint8_t sreader_u8(struct sreader *r);
uint16_t sreader_u16(struct sreader *r);
uint32_t sreader_u32(struct sreader *r);
uint64_t sreader_u64(struct sreader *r);
bool sreader_bool(struct sreader *r);
/* A string written by sbuf_str into buf (size bytes, NUL-terminated); too long is an
 * error. */
void sreader_str(struct sreader *r, char *buf, size_t size);
/* src (len bytes read from a stream or a file, for a message) made printable into dst (n
 * bytes, always terminated): backslash, control characters (a newline, a terminal escape)
 * and non-ASCII bytes become \xNN, so one line stays one line. */
void str_escape(char *dst, size_t n, const void *src, size_t len);
/* A u32 count that must not exceed max ("what" names it in the error). */
uint32_t sreader_len(struct sreader *r, uint32_t max, const char *what);
/* Points at the next n bytes and skips them; NULL (and an error) when fewer are left. */
const uint8_t *sreader_take(struct sreader *r, size_t n);
/* Records an error (the first one is kept). */
void sreader_fail(struct sreader *r, const char *why);
/* True when everything read so far was there and well-formed. */
static inline bool sreader_ok(const struct sreader *r)
{
	return !r->err;
}

/* CRC-32C (Castagnoli) of p, continuing from crc (0 to start). */
uint32_t crc32c(uint32_t crc, const void *p, size_t n);

#endif
