/* JSON (RFC 8259) for the control socket: a strict parser into a tree and a writer into a
 * growable buffer. The parser reads untrusted bytes (anything a client of the socket sends):
 * it bounds nesting depth and input size, validates UTF-8, and reports the first error with
 * its byte offset; it never reads past the given length. */
#ifndef MABO_CORE_JSON_H
#define MABO_CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum json_type {
	JSON_NULL = 0,
	JSON_BOOL,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
};

struct json_member;

struct json_value {
	enum json_type type;
	union {
		bool boolean;
		struct {
			double d;    /* always set */
			int64_t i;   /* set when is_int */
			bool is_int; /* an integer (no fraction or exponent) that fits int64 */
		} number;
		struct {
			char *s;    /* UTF-8, NUL-terminated; may hold "\u0000" escapes */
			size_t len; /* bytes, without the terminator */
		} string;
		struct {
			struct json_value *items;
			size_t n;
		} array;
		struct {
			struct json_member *members; /* in document order, keys unique */
			size_t n;
		} object;
	};
};

struct json_member {
	char *key; /* NUL-terminated */
	size_t key_len;
	struct json_value value;
};

/* Limits on what json_parse accepts; zero fields take the defaults below. */
struct json_limits {
	unsigned max_depth; /* nested arrays and objects */
	size_t max_bytes;   /* input length */
};

#define JSON_DEFAULT_MAX_DEPTH 64
#define JSON_DEFAULT_MAX_BYTES (1u << 20)

/* Where and why parsing stopped. */
struct json_error {
	size_t pos; /* byte offset of the offending input */
	char msg[96];
};

/* Parses exactly one JSON value (surrounded by optional whitespace) from the len bytes at
 * text, which need not be NUL-terminated. lim may be NULL. On success *out is a tree to free
 * with json_free; on failure returns -EINVAL (bad input, err says where), -E2BIG (too long or
 * too deep) or -ENOMEM, and *out is NULL. err may be NULL. */
int json_parse(const char *text, size_t len, const struct json_limits *lim, struct json_value **out,
	       struct json_error *err) __attribute__((warn_unused_result));

/* Frees a tree from json_parse. NULL is fine. */
void json_free(struct json_value *v);

/* The member key of object v, or NULL (v not an object, or no such key). */
const struct json_value *json_get(const struct json_value *v, const char *key);

/* The string member key of object v when it is a string without NUL bytes, else NULL. */
const char *json_get_string(const struct json_value *v, const char *key);

/* The JSON type's name ("string", "object", ...), for messages. */
const char *json_type_name(enum json_type t);

/* The writer: builds one document into a growable buffer. Calls after an allocation
 * failure do nothing; json_writer_error tells at the end. Values inside an object must each
 * be preceded by json_key (or use the json_kv_* shorthands); commas are placed for you. */
#define JSON_WRITER_MAX_DEPTH 64

struct json_writer {
	char *buf;
	size_t len, cap;
	int err; /* 0, -ENOMEM, or -EINVAL (misuse: too deep, unbalanced) */
	unsigned depth;
	bool after_key;
	bool first[JSON_WRITER_MAX_DEPTH + 1];	   /* nothing written yet at this depth */
	bool is_object[JSON_WRITER_MAX_DEPTH + 1]; /* the container at this depth */
};

void json_writer_init(struct json_writer *w);
void json_writer_free(struct json_writer *w);
/* Empties the buffer for a new document, keeping its memory. */
void json_writer_reset(struct json_writer *w);
/* 0, or the first error met. */
int json_writer_error(const struct json_writer *w);
/* The document so far, NUL-terminated ("" when empty or after an error). */
const char *json_writer_str(const struct json_writer *w);

void json_begin_object(struct json_writer *w);
void json_end_object(struct json_writer *w);
void json_begin_array(struct json_writer *w);
void json_end_array(struct json_writer *w);
void json_key(struct json_writer *w, const char *key);
void json_string(struct json_writer *w, const char *s);
void json_string_len(struct json_writer *w, const char *s, size_t len);
void json_int(struct json_writer *w, int64_t v);
void json_uint(struct json_writer *w, uint64_t v);
/* Shortest form that reads back as the same double; NaN and infinities become null. */
void json_double(struct json_writer *w, double v);
void json_bool(struct json_writer *w, bool v);
void json_null(struct json_writer *w);
/* Appends v (any parsed value) as JSON. */
void json_value(struct json_writer *w, const struct json_value *v);

static inline void json_kv_string(struct json_writer *w, const char *k, const char *v)
{
	json_key(w, k);
	json_string(w, v);
}

static inline void json_kv_int(struct json_writer *w, const char *k, int64_t v)
{
	json_key(w, k);
	json_int(w, v);
}

static inline void json_kv_uint(struct json_writer *w, const char *k, uint64_t v)
{
	json_key(w, k);
	json_uint(w, v);
}

static inline void json_kv_double(struct json_writer *w, const char *k, double v)
{
	json_key(w, k);
	json_double(w, v);
}

static inline void json_kv_bool(struct json_writer *w, const char *k, bool v)
{
	json_key(w, k);
	json_bool(w, v);
}

#endif
