/* JSON parser and writer (see json.h).
 *
 * The parser is recursive descent; recursion depth is bounded by max_depth, so a hostile
 * input cannot exhaust the stack. Strings are scanned twice: once to find the closing quote
 * (so the decoded string gets an allocation no larger than its own source bytes), then to
 * validate and decode. Duplicate keys are refused (RFC 8259 leaves their meaning open, and a
 * command with two different "cmd" members must not mean either): the check sorts the keys,
 * so a large object costs n log n, not n^2. */
#include "core/json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct json_parser {
	const unsigned char *start, *p, *end;
	unsigned max_depth;
	struct json_error *err;
};

static int json_fail(struct json_parser *ps, const unsigned char *at, int code, const char *fmt,
		     ...) __attribute__((format(printf, 4, 5)));

static int json_fail(struct json_parser *ps, const unsigned char *at, int code, const char *fmt,
		     ...)
{
	if (ps->err) {
		va_list ap;
		ps->err->pos = (size_t)(at - ps->start);
		va_start(ap, fmt);
		vsnprintf(ps->err->msg, sizeof(ps->err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

static int json_fail_oom(struct json_parser *ps)
{
	return json_fail(ps, ps->p, -ENOMEM, "out of memory");
}

static void json_skip_ws(struct json_parser *ps)
{
	while (ps->p < ps->end &&
	       (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

/* Length of the well-formed UTF-8 sequence at p (1 to 4), or 0 when it is not one
 * (overlong forms, surrogates and code points above U+10FFFF are not). */
static size_t utf8_seq_len(const unsigned char *p, const unsigned char *end)
{
	size_t avail = (size_t)(end - p);
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return avail >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if (avail < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if (c == 0xe0 && p[1] < 0xa0)
			return 0; /* overlong */
		if (c == 0xed && p[1] > 0x9f)
			return 0; /* surrogate */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (avail < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		if (c == 0xf0 && p[1] < 0x90)
			return 0; /* overlong */
		if (c == 0xf4 && p[1] > 0x8f)
			return 0; /* above U+10FFFF */
		return 4;
	}
	return 0;
}

static size_t utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Four hex digits at p (which has at least 4 bytes); -1 when one is not a hex digit. */
static int32_t json_hex4(const unsigned char *p)
{
	int32_t v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/* Parses a string; ps->p is at the opening quote. */
static int json_parse_string(struct json_parser *ps, char **out, size_t *out_len)
{
	const unsigned char *open = ps->p, *q = ps->p + 1;

	/* Find the closing quote; the decoded string is never longer than its source. */
	while (q < ps->end && *q != '"')
		q += *q == '\\' ? 2 : 1;
	if (q >= ps->end)
		return json_fail(ps, open, -EINVAL, "unterminated string");
	char *s = malloc((size_t)(q - open));
	if (!s)
		return json_fail_oom(ps);

	size_t n = 0;
	const unsigned char *p = open + 1;
	while (p < q) {
		unsigned char c = *p;
		if (c < 0x20) {
			free(s);
			return json_fail(ps, p, -EINVAL, "control character 0x%02x in string", c);
		}
		if (c != '\\') {
			size_t l = utf8_seq_len(p, q);
			if (!l) {
				free(s);
				return json_fail(ps, p, -EINVAL, "invalid UTF-8 in string");
			}
			memcpy(s + n, p, l);
			n += l;
			p += l;
			continue;
		}
		/* q is a quote, so p + 1 < q + 1 is readable. */
		const unsigned char *esc = p;
		switch (p[1]) {
		case '"':
			s[n++] = '"';
			p += 2;
			continue;
		case '\\':
			s[n++] = '\\';
			p += 2;
			continue;
		case '/':
			s[n++] = '/';
			p += 2;
			continue;
		case 'b':
			s[n++] = '\b';
			p += 2;
			continue;
		case 'f':
			s[n++] = '\f';
			p += 2;
			continue;
		case 'n':
			s[n++] = '\n';
			p += 2;
			continue;
		case 'r':
			s[n++] = '\r';
			p += 2;
			continue;
		case 't':
			s[n++] = '\t';
			p += 2;
			continue;
		case 'u': break;
		default: free(s); return json_fail(ps, esc, -EINVAL, "invalid escape in string");
		}
		int32_t cp = q - p >= 6 ? json_hex4(p + 2) : -1;
		if (cp < 0) {
			free(s);
			return json_fail(ps, esc, -EINVAL, "invalid \\u escape in string");
		}
		p += 6;
		if (cp >= 0xdc00 && cp <= 0xdfff) {
			free(s);
			return json_fail(ps, esc, -EINVAL, "unpaired low surrogate in string");
		}
		if (cp >= 0xd800 && cp <= 0xdbff) {
			int32_t lo =
				q - p >= 6 && p[0] == '\\' && p[1] == 'u' ? json_hex4(p + 2) : -1;
			if (lo < 0xdc00 || lo > 0xdfff) {
				free(s);
				return json_fail(ps, esc, -EINVAL,
						 "unpaired high surrogate in string");
			}
			p += 6;
			cp = 0x10000 + (((cp - 0xd800) << 10) | (lo - 0xdc00));
		}
		n += utf8_put(s + n, (uint32_t)cp);
	}
	s[n] = '\0';
	ps->p = q + 1;
	*out = s;
	*out_len = n;
	return 0;
}

static int json_parse_number(struct json_parser *ps, struct json_value *v)
{
	const unsigned char *start = ps->p, *p = ps->p, *end = ps->end;
	bool integer = true;

	if (p < end && *p == '-')
		p++;
	if (p >= end || *p < '0' || *p > '9')
		return json_fail(ps, start, -EINVAL, "invalid number");
	if (*p == '0') {
		p++;
		if (p < end && *p >= '0' && *p <= '9')
			return json_fail(ps, start, -EINVAL, "leading zero in number");
	} else {
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && *p == '.') {
		integer = false;
		p++;
		if (p >= end || *p < '0' || *p > '9')
			return json_fail(ps, p, -EINVAL, "digit expected after '.'");
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		integer = false;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || *p < '0' || *p > '9')
			return json_fail(ps, p, -EINVAL, "digit expected in exponent");
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}

	size_t len = (size_t)(p - start);
	char small[64];
	char *buf = len < sizeof(small) ? small : malloc(len + 1);
	if (!buf)
		return json_fail_oom(ps);
	memcpy(buf, start, len);
	buf[len] = '\0';
	double d = strtod(buf, NULL);
	v->number.is_int = false;
	v->number.i = 0;
	if (integer) {
		errno = 0;
		long long i = strtoll(buf, NULL, 10);
		if (errno == 0) {
			v->number.is_int = true;
			v->number.i = i;
		}
	}
	if (buf != small)
		free(buf);
	if (!isfinite(d))
		return json_fail(ps, start, -EINVAL, "number out of range");
	v->type = JSON_NUMBER;
	v->number.d = d;
	ps->p = p;
	return 0;
}

static void json_value_clear(struct json_value *v);
static int json_parse_value(struct json_parser *ps, struct json_value *v, unsigned depth);

static int json_key_cmp(const void *a, const void *b)
{
	const struct json_member *x = *(const struct json_member *const *)a;
	const struct json_member *y = *(const struct json_member *const *)b;
	size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
	int c = memcmp(x->key, y->key, n);
	if (c)
		return c;
	return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* -EINVAL (naming the key) when two members of the object share a key. */
static int json_check_duplicates(struct json_parser *ps, const unsigned char *at,
				 struct json_value *v)
{
	size_t n = v->object.n;
	if (n < 2)
		return 0;
	if (n == 2) {
		const struct json_member *m = v->object.members;
		if (m[0].key_len == m[1].key_len && !memcmp(m[0].key, m[1].key, m[0].key_len))
			return json_fail(ps, at, -EINVAL, "duplicate key '%.40s'", m[0].key);
		return 0;
	}
	struct json_member **sorted = malloc(n * sizeof(*sorted));
	if (!sorted)
		return json_fail_oom(ps);
	for (size_t i = 0; i < n; i++)
		sorted[i] = &v->object.members[i];
	qsort(sorted, n, sizeof(*sorted), json_key_cmp);
	int ret = 0;
	for (size_t i = 1; i < n && !ret; i++) {
		if (json_key_cmp(&sorted[i - 1], &sorted[i]) == 0)
			ret = json_fail(ps, at, -EINVAL, "duplicate key '%.40s'", sorted[i]->key);
	}
	free(sorted);
	return ret;
}

/* Grows *items (of size elem) so that one more fits. */
static int json_grow(void **items, size_t n, size_t *cap, size_t elem)
{
	if (n < *cap)
		return 0;
	size_t ncap = *cap ? *cap * 2 : 4;
	void *p = realloc(*items, ncap * elem);
	if (!p)
		return -ENOMEM;
	*items = p;
	*cap = ncap;
	return 0;
}

static int json_parse_array(struct json_parser *ps, struct json_value *v, unsigned depth)
{
	size_t cap = 0;
	int ret;

	v->type = JSON_ARRAY;
	v->array.items = NULL;
	v->array.n = 0;
	ps->p++;
	json_skip_ws(ps);
	if (ps->p < ps->end && *ps->p == ']') {
		ps->p++;
		return 0;
	}
	for (;;) {
		if (json_grow((void **)&v->array.items, v->array.n, &cap,
			      sizeof(struct json_value)))
			return json_fail_oom(ps);
		/* Counted before parsing, so that a partly built item is freed with the rest. */
		v->array.n++;
		ret = json_parse_value(ps, &v->array.items[v->array.n - 1], depth + 1);
		if (ret)
			return ret;
		json_skip_ws(ps);
		if (ps->p >= ps->end)
			return json_fail(ps, ps->p, -EINVAL, "unterminated array");
		if (*ps->p == ']') {
			ps->p++;
			return 0;
		}
		if (*ps->p != ',')
			return json_fail(ps, ps->p, -EINVAL, "',' or ']' expected");
		ps->p++;
	}
}

static int json_parse_object(struct json_parser *ps, struct json_value *v, unsigned depth)
{
	const unsigned char *open = ps->p;
	size_t cap = 0;
	int ret;

	v->type = JSON_OBJECT;
	v->object.members = NULL;
	v->object.n = 0;
	ps->p++;
	json_skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}') {
		ps->p++;
		return 0;
	}
	for (;;) {
		json_skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != '"')
			return json_fail(ps, ps->p, -EINVAL, "string key expected");
		if (json_grow((void **)&v->object.members, v->object.n, &cap,
			      sizeof(struct json_member)))
			return json_fail_oom(ps);
		struct json_member *m = &v->object.members[v->object.n];
		ret = json_parse_string(ps, &m->key, &m->key_len);
		if (ret)
			return ret;
		m->value.type = JSON_NULL;
		v->object.n++; /* the key is owned by the object from here on */
		json_skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != ':')
			return json_fail(ps, ps->p, -EINVAL, "':' expected");
		ps->p++;
		ret = json_parse_value(ps, &m->value, depth + 1);
		if (ret)
			return ret;
		json_skip_ws(ps);
		if (ps->p >= ps->end)
			return json_fail(ps, ps->p, -EINVAL, "unterminated object");
		if (*ps->p == '}') {
			ps->p++;
			return json_check_duplicates(ps, open, v);
		}
		if (*ps->p != ',')
			return json_fail(ps, ps->p, -EINVAL, "',' or '}' expected");
		ps->p++;
	}
}

static bool json_match(struct json_parser *ps, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return false;
	ps->p += n;
	return true;
}

/* Parses one value into v. On failure v holds whatever was built so far, for the caller to
 * clear. */
static int json_parse_value(struct json_parser *ps, struct json_value *v, unsigned depth)
{
	v->type = JSON_NULL;
	json_skip_ws(ps);
	if (ps->p >= ps->end)
		return json_fail(ps, ps->p, -EINVAL, "unexpected end of input");
	switch (*ps->p) {
	case '{':
	case '[':
		if (depth >= ps->max_depth)
			return json_fail(ps, ps->p, -E2BIG, "nested deeper than %u levels",
					 ps->max_depth);
		return *ps->p == '{' ? json_parse_object(ps, v, depth)
				     : json_parse_array(ps, v, depth);
	case '"':
		v->type = JSON_STRING;
		v->string.s = NULL;
		return json_parse_string(ps, &v->string.s, &v->string.len);
	case 't':
		if (!json_match(ps, "true"))
			break;
		v->type = JSON_BOOL;
		v->boolean = true;
		return 0;
	case 'f':
		if (!json_match(ps, "false"))
			break;
		v->type = JSON_BOOL;
		v->boolean = false;
		return 0;
	case 'n':
		if (!json_match(ps, "null"))
			break;
		return 0;
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
			return json_parse_number(ps, v);
		break;
	}
	if (*ps->p >= 0x21 && *ps->p < 0x7f)
		return json_fail(ps, ps->p, -EINVAL, "unexpected character '%c'", *ps->p);
	return json_fail(ps, ps->p, -EINVAL, "unexpected byte 0x%02x", *ps->p);
}

int json_parse(const char *text, size_t len, const struct json_limits *lim, struct json_value **out,
	       struct json_error *err)
{
	struct json_parser ps = {
		.start = (const unsigned char *)text,
		.p = (const unsigned char *)text,
		.end = (const unsigned char *)text + len,
		.max_depth = lim && lim->max_depth ? lim->max_depth : JSON_DEFAULT_MAX_DEPTH,
		.err = err,
	};
	size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : JSON_DEFAULT_MAX_BYTES;

	*out = NULL;
	if (err) {
		err->pos = 0;
		err->msg[0] = '\0';
	}
	if (len > max_bytes)
		return json_fail(&ps, ps.start, -E2BIG, "input longer than %zu bytes", max_bytes);
	struct json_value *v = malloc(sizeof(*v));
	if (!v)
		return json_fail_oom(&ps);
	int ret = json_parse_value(&ps, v, 0);
	if (!ret) {
		json_skip_ws(&ps);
		if (ps.p < ps.end)
			ret = json_fail(&ps, ps.p, -EINVAL, "trailing data after the value");
	}
	if (ret) {
		json_free(v);
		return ret;
	}
	*out = v;
	return 0;
}

static void json_value_clear(struct json_value *v)
{
	switch (v->type) {
	case JSON_STRING: free(v->string.s); break;
	case JSON_ARRAY:
		for (size_t i = 0; i < v->array.n; i++)
			json_value_clear(&v->array.items[i]);
		free(v->array.items);
		break;
	case JSON_OBJECT:
		for (size_t i = 0; i < v->object.n; i++) {
			free(v->object.members[i].key);
			json_value_clear(&v->object.members[i].value);
		}
		free(v->object.members);
		break;
	default: break;
	}
	v->type = JSON_NULL;
}

void json_free(struct json_value *v)
{
	if (!v)
		return;
	json_value_clear(v);
	free(v);
}

const struct json_value *json_get(const struct json_value *v, const char *key)
{
	if (!v || v->type != JSON_OBJECT)
		return NULL;
	size_t n = strlen(key);
	for (size_t i = 0; i < v->object.n; i++) {
		const struct json_member *m = &v->object.members[i];
		if (m->key_len == n && memcmp(m->key, key, n) == 0)
			return &m->value;
	}
	return NULL;
}

const char *json_get_string(const struct json_value *v, const char *key)
{
	const struct json_value *s = json_get(v, key);
	if (!s || s->type != JSON_STRING || strlen(s->string.s) != s->string.len)
		return NULL;
	return s->string.s;
}

const char *json_type_name(enum json_type t)
{
	switch (t) {
	case JSON_NULL: return "null";
	case JSON_BOOL: return "boolean";
	case JSON_NUMBER: return "number";
	case JSON_STRING: return "string";
	case JSON_ARRAY: return "array";
	case JSON_OBJECT: return "object";
	}
	return "?";
}

/* The writer. */

void json_writer_init(struct json_writer *w)
{
	memset(w, 0, sizeof(*w));
}

void json_writer_free(struct json_writer *w)
{
	free(w->buf);
	json_writer_init(w);
}

void json_writer_reset(struct json_writer *w)
{
	char *buf = w->buf;
	size_t cap = w->cap;
	json_writer_init(w);
	w->buf = buf;
	w->cap = cap;
	if (buf)
		buf[0] = '\0';
}

int json_writer_error(const struct json_writer *w)
{
	return w->err;
}

const char *json_writer_str(const struct json_writer *w)
{
	return w->buf && !w->err ? w->buf : "";
}

static bool json_reserve(struct json_writer *w, size_t n)
{
	if (w->err)
		return false;
	if (w->len + n + 1 <= w->cap)
		return true;
	size_t cap = w->cap ? w->cap : 256;
	while (cap < w->len + n + 1) {
		if (cap > SIZE_MAX / 2) {
			w->err = -ENOMEM;
			return false;
		}
		cap *= 2;
	}
	char *p = realloc(w->buf, cap);
	if (!p) {
		w->err = -ENOMEM;
		return false;
	}
	w->buf = p;
	w->cap = cap;
	return true;
}

static void json_put(struct json_writer *w, const char *s, size_t n)
{
	if (!json_reserve(w, n))
		return;
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

/* Marks misuse (a value in an object without a key, a key outside an object, unbalanced
 * containers): the document is then invalid and json_writer_error says so. */
static void json_misuse(struct json_writer *w)
{
	if (!w->err)
		w->err = -EINVAL;
}

/* The separator before a value or a key: a comma unless first in its container. */
static void json_before(struct json_writer *w, bool is_key)
{
	bool in_object = w->depth && w->is_object[w->depth];

	if (w->after_key) {
		w->after_key = false;
		if (is_key)
			json_misuse(w);
		return;
	}
	if (in_object != is_key) {
		json_misuse(w);
		return;
	}
	if (w->depth) {
		if (!w->first[w->depth])
			json_put(w, ",", 1);
		w->first[w->depth] = false;
	}
}

static void json_open(struct json_writer *w, bool object)
{
	json_before(w, false);
	if (w->depth >= JSON_WRITER_MAX_DEPTH) {
		json_misuse(w);
		return;
	}
	json_put(w, object ? "{" : "[", 1);
	w->depth++;
	w->first[w->depth] = true;
	w->is_object[w->depth] = object;
}

static void json_close(struct json_writer *w, bool object)
{
	if (!w->depth || w->is_object[w->depth] != object || w->after_key) {
		json_misuse(w);
		return;
	}
	w->depth--;
	json_put(w, object ? "}" : "]", 1);
}

void json_begin_object(struct json_writer *w)
{
	json_open(w, true);
}

void json_end_object(struct json_writer *w)
{
	json_close(w, true);
}

void json_begin_array(struct json_writer *w)
{
	json_open(w, false);
}

void json_end_array(struct json_writer *w)
{
	json_close(w, false);
}

/* Appends s as a quoted JSON string. Bytes that are not valid UTF-8 become U+FFFD, so the
 * output is always valid JSON whatever a file name or message holds. */
static void json_put_string(struct json_writer *w, const char *str, size_t len)
{
	const unsigned char *p = (const unsigned char *)str, *end = p + len;

	json_put(w, "\"", 1);
	while (p < end && !w->err) {
		const unsigned char *run = p;
		/* Copy plain ASCII in runs. */
		while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
			p++;
		json_put(w, (const char *)run, (size_t)(p - run));
		if (p >= end)
			break;
		unsigned char c = *p;
		char esc[8];
		switch (c) {
		case '"':
			json_put(w, "\\\"", 2);
			p++;
			continue;
		case '\\':
			json_put(w, "\\\\", 2);
			p++;
			continue;
		case '\b':
			json_put(w, "\\b", 2);
			p++;
			continue;
		case '\f':
			json_put(w, "\\f", 2);
			p++;
			continue;
		case '\n':
			json_put(w, "\\n", 2);
			p++;
			continue;
		case '\r':
			json_put(w, "\\r", 2);
			p++;
			continue;
		case '\t':
			json_put(w, "\\t", 2);
			p++;
			continue;
		default: break;
		}
		if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			json_put(w, esc, 6);
			p++;
			continue;
		}
		size_t l = utf8_seq_len(p, end);
		if (l) {
			json_put(w, (const char *)p, l);
			p += l;
		} else {
			json_put(w, "\xef\xbf\xbd", 3);
			p++;
		}
	}
	json_put(w, "\"", 1);
}

void json_key(struct json_writer *w, const char *key)
{
	json_before(w, true);
	json_put_string(w, key, strlen(key));
	json_put(w, ":", 1);
	w->after_key = true;
}

void json_string_len(struct json_writer *w, const char *s, size_t len)
{
	json_before(w, false);
	json_put_string(w, s, len);
}

void json_string(struct json_writer *w, const char *s)
{
	json_string_len(w, s, strlen(s));
}

void json_int(struct json_writer *w, int64_t v)
{
	char buf[32];
	json_before(w, false);
	json_put(w, buf, (size_t)snprintf(buf, sizeof(buf), "%lld", (long long)v));
}

void json_uint(struct json_writer *w, uint64_t v)
{
	char buf[32];
	json_before(w, false);
	json_put(w, buf, (size_t)snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v));
}

void json_double(struct json_writer *w, double v)
{
	char buf[40];
	if (!isfinite(v)) {
		json_null(w);
		return;
	}
	json_before(w, false);
	int n = snprintf(buf, sizeof(buf), "%.15g", v);
	if (strtod(buf, NULL) != v)
		n = snprintf(buf, sizeof(buf), "%.17g", v);
	json_put(w, buf, (size_t)n);
}

void json_bool(struct json_writer *w, bool v)
{
	json_before(w, false);
	json_put(w, v ? "true" : "false", v ? 4 : 5);
}

void json_null(struct json_writer *w)
{
	json_before(w, false);
	json_put(w, "null", 4);
}

void json_value(struct json_writer *w, const struct json_value *v)
{
	switch (v->type) {
	case JSON_NULL: json_null(w); break;
	case JSON_BOOL: json_bool(w, v->boolean); break;
	case JSON_NUMBER:
		/* -0 parses as an integer 0; keep its sign. */
		if (v->number.is_int && !signbit(v->number.d))
			json_int(w, v->number.i);
		else
			json_double(w, v->number.d);
		break;
	case JSON_STRING: json_string_len(w, v->string.s, v->string.len); break;
	case JSON_ARRAY:
		json_begin_array(w);
		for (size_t i = 0; i < v->array.n; i++)
			json_value(w, &v->array.items[i]);
		json_end_array(w);
		break;
	case JSON_OBJECT:
		json_begin_object(w);
		for (size_t i = 0; i < v->object.n; i++) {
			const struct json_member *m = &v->object.members[i];
			json_before(w, true);
			json_put_string(w, m->key, m->key_len);
			json_put(w, ":", 1);
			w->after_key = true;
			json_value(w, &m->value);
		}
		json_end_object(w);
		break;
	}
}
