/* The saved-state stream: what a snapshot file holds and what a live migration sends.
 *
 * A stream is a header, then records. Everything is little-endian.
 *
 *   header:  "MABOSTRM" (8 bytes), u32 format version, u32 kind (1 snapshot, 2 migration)
 *   record:  u8 type, u8 flags (0), u16 section version, u32 payload length (at most
 *            STREAM_MAX_PAYLOAD), payload, u32 CRC-32C of the 8 header bytes and the payload
 *
 * The reader checks the magic, accepts format versions STREAM_VERSION_MIN ..
 * STREAM_VERSION, bounds every length before reading it and checks every record's CRC
 * before handing out its payload. docs/migration.md describes the records. */
#ifndef MABO_MIGRATION_STREAM_H
#define MABO_MIGRATION_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STREAM_MAGIC "MABOSTRM"
/* 2: the destination waits for GO after ACK (no two copies), post-copy, reconnection.
 * 1: the destination ran at ACK. Both are read. */
#define STREAM_VERSION 3
#define STREAM_VERSION_MIN 1
#define STREAM_MAX_PAYLOAD (8U << 20)

enum stream_kind {
	STREAM_SNAPSHOT = 1,
	STREAM_MIGRATION = 2,
};

enum stream_record {
	REC_CONFIG = 1,	      /* the VM's shape: memory, harts, devices */
	REC_PAGES = 2,	      /* guest pages (see ram.c) */
	REC_PASS_END = 3,     /* the end of a pre-copy pass */
	REC_CLOCK = 4,	      /* guest clock and host stamps at the pause */
	REC_CPU = 5,	      /* one hart */
	REC_DEVICES = 6,      /* the machine's devices */
	REC_END = 7,	      /* the state is complete */
	REC_ACK = 8,	      /* destination to source: loaded (v1: and running now) */
	REC_NACK = 9,	      /* destination to source: refused (payload: a message) */
	REC_PASS_ACK = 10,    /* destination to source: a pass is loaded (it has caught up) */
	REC_PC_START = 11,    /* post-copy: the pages the destination lacks (a bitmap) */
	REC_GO = 12,	      /* source to destination: run (the source has let go) */
	REC_RUNNING = 13,     /* destination to source: running since (u64 instant) */
	REC_PC_REQ = 14,      /* destination to source: pages wanted now (u64 list) */
	REC_PC_DONE = 15,     /* source to destination: nothing more to send */
	REC_PC_COMPLETE = 16, /* destination to source: every page is in, or the VM ended */
	REC_RESUME = 17,      /* source to destination, on a new connection: carry on (u64 id) */
	REC_RESUME_ACK = 18,  /* destination to source: u64 running since, bitmap of lacking */
	REC_SOURCE = 19,      /* v3, first record of a migration: the source's u64 token */
	REC_ABANDON = 20,     /* source, on a new connection: it kept the VM (u64 token) */
};

/* A buffered stream over a file descriptor (a file or a connected socket). */
struct stream {
	int fd;
	uint8_t *buf; /* write buffer, or read buffer */
	size_t len;   /* bytes in buf */
	size_t pos;   /* read position in buf */
	size_t cap;
	uint64_t bytes;	   /* sent or received so far */
	uint64_t rate_bps; /* 0, or a cap on bytes per second for writes */
	uint64_t rate_start_ns, rate_bytes;
	volatile int cancelled; /* set from another thread: the next I/O fails */
	char err[160];		/* the first error, for messages */
};

/* Sets s up on fd (not owned). 0 or -ENOMEM. */
int stream_init(struct stream *s, int fd) __attribute__((warn_unused_result));
void stream_free(struct stream *s);

/* Writing: the header, then records; stream_flush pushes buffered bytes out. Each returns 0
 * or -errno (with s->err set). */
int stream_write_header(struct stream *s, enum stream_kind kind);
int stream_write_record(struct stream *s, uint8_t type, uint16_t version, const void *payload,
			uint32_t len);
int stream_flush(struct stream *s);

/* Reading: the header (kind must match), then records one at a time into *payload (a buffer
 * the stream reuses: valid until the next read). 0 or -errno: -EPROTO for a malformed
 * stream, -ENODATA for an end of file before a record, -EIO/-ETIMEDOUT etc. for I/O. */
int stream_read_header(struct stream *s, enum stream_kind kind, uint32_t *version);
int stream_read_record(struct stream *s, uint8_t *type, uint16_t *version, const uint8_t **payload,
		       uint32_t *len);

#endif
