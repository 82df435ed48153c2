/* The JSON parser and writer (src/core/json.c): values, escapes, strictness, limits, error
 * positions, and writer output that the parser reads back. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/json.h"

static struct json_value *parse_ok(const char *s)
{
	struct json_value *v = NULL;
	struct json_error err;
	int ret = json_parse(s, strlen(s), NULL, &v, &err);
	if (ret)
		print_error("'%s': %s at %zu\n", s, err.msg, err.pos);
	assert_int_equal(ret, 0);
	assert_non_null(v);
	return v;
}

static void test_scalars(void **state)
{
	(void)state;
	struct json_value *v;

	v = parse_ok(" null ");
	assert_int_equal(v->type, JSON_NULL);
	json_free(v);
	v = parse_ok("true");
	assert_int_equal(v->type, JSON_BOOL);
	assert_true(v->boolean);
	json_free(v);
	v = parse_ok("\tfalse\r\n");
	assert_false(v->boolean);
	json_free(v);

	static const struct {
		const char *in;
		double d;
		bool is_int;
		int64_t i;
	} nums[] = {
		{ "0", 0, true, 0 },
		{ "-0", 0, true, 0 },
		{ "42", 42, true, 42 },
		{ "-17", -17, true, -17 },
		{ "1.5", 1.5, false, 0 },
		{ "-2.5e3", -2500, false, 0 },
		{ "1E2", 100, false, 0 },
		{ "1e-2", 0.01, false, 0 },
		{ "9223372036854775807", 9223372036854775807.0, true, INT64_MAX },
		{ "-9223372036854775808", -9223372036854775808.0, true, INT64_MIN },
		{ "9223372036854775808", 9223372036854775808.0, false, 0 },
		{ "1e-400", 0, false, 0 },
	};
	for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++) {
		v = parse_ok(nums[k].in);
		assert_int_equal(v->type, JSON_NUMBER);
		assert_true(v->number.d == nums[k].d);
		assert_int_equal(v->number.is_int, nums[k].is_int);
		if (nums[k].is_int)
			assert_true(v->number.i == nums[k].i);
		json_free(v);
	}
}

static void test_strings(void **state)
{
	(void)state;
	struct json_value *v;

	v = parse_ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"");
	assert_int_equal(v->type, JSON_STRING);
	assert_string_equal(v->string.s, "a\"b\\c/d\b\f\n\r\t");
	json_free(v);

	/* \u escapes become UTF-8, a surrogate pair one 4-byte sequence. */
	v = parse_ok("\"\\u00e9\\u20AC\\ud83d\\ude00x\"");
	assert_string_equal(v->string.s, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80x");
	assert_int_equal(v->string.len, 10);
	json_free(v);

	/* Raw UTF-8 passes through. */
	v = parse_ok("\"h\xc3\xa9llo \xf0\x9f\x98\x80\"");
	assert_string_equal(v->string.s, "h\xc3\xa9llo \xf0\x9f\x98\x80");
	json_free(v);

	/* An embedded NUL is kept (len), but json_get_string refuses it. */
	v = parse_ok("{\"k\":\"a\\u0000b\",\"ok\":\"fine\"}");
	const struct json_value *k = json_get(v, "k");
	assert_non_null(k);
	assert_int_equal(k->string.len, 3);
	assert_memory_equal(k->string.s, "a\0b", 3);
	assert_null(json_get_string(v, "k"));
	assert_string_equal(json_get_string(v, "ok"), "fine");
	json_free(v);

	v = parse_ok("\"\"");
	assert_int_equal(v->string.len, 0);
	json_free(v);
}

static void test_containers(void **state)
{
	(void)state;
	struct json_value *v =
		parse_ok("{ \"cmd\" : \"migrate\", \"n\": 3, \"list\": [1, [], {}, \"x\", null],"
			 " \"o\": {\"deep\": [true]} }");

	assert_int_equal(v->type, JSON_OBJECT);
	assert_int_equal(v->object.n, 4);
	assert_string_equal(json_get_string(v, "cmd"), "migrate");
	assert_null(json_get_string(v, "n"));
	assert_null(json_get(v, "missing"));
	const struct json_value *list = json_get(v, "list");
	assert_int_equal(list->type, JSON_ARRAY);
	assert_int_equal(list->array.n, 5);
	assert_int_equal(list->array.items[1].type, JSON_ARRAY);
	assert_int_equal(list->array.items[1].array.n, 0);
	assert_int_equal(list->array.items[2].type, JSON_OBJECT);
	assert_int_equal(list->array.items[4].type, JSON_NULL);
	const struct json_value *deep = json_get(json_get(v, "o"), "deep");
	assert_true(deep->array.items[0].boolean);
	assert_null(json_get(list, "x")); /* not an object */
	json_free(v);
}

/* Input need not be NUL-terminated: nothing past len is read. */
static void test_length_bound(void **state)
{
	(void)state;
	struct json_value *v;
	char *buf = malloc(3);
	memcpy(buf, "123", 3);
	assert_int_equal(json_parse(buf, 3, NULL, &v, NULL), 0);
	assert_true(v->number.i == 123);
	json_free(v);
	memcpy(buf, "\"ab", 3);
	assert_int_equal(json_parse(buf, 3, NULL, &v, NULL), -EINVAL);
	assert_null(v);
	memcpy(buf, "tru", 3);
	assert_int_equal(json_parse(buf, 3, NULL, &v, NULL), -EINVAL);
	free(buf);
}

static void test_errors(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		size_t pos;
		const char *msg;
	} bad[] = {
		{ "", 0, "unexpected end" },
		{ "   ", 3, "unexpected end" },
		{ "{", 1, "string key expected" },
		{ "[1,]", 3, "unexpected character ']'" },
		{ "[1 2]", 3, "',' or ']' expected" },
		{ "{\"a\":1,}", 7, "string key expected" },
		{ "{\"a\" 1}", 5, "':' expected" },
		{ "{\"a\":1 \"b\":2}", 7, "',' or '}' expected" },
		{ "{a:1}", 1, "string key expected" },
		{ "[1", 2, "unterminated array" },
		{ "{\"a\":1", 6, "unterminated object" },
		{ "01", 0, "leading zero" },
		{ "1.", 2, "digit expected after '.'" },
		{ ".5", 0, "unexpected character '.'" },
		{ "1e", 2, "digit expected in exponent" },
		{ "1e+", 3, "digit expected in exponent" },
		{ "-", 0, "invalid number" },
		{ "+1", 0, "unexpected character '+'" },
		{ "1e999", 0, "out of range" },
		{ "NaN", 0, "unexpected character 'N'" },
		{ "Infinity", 0, "unexpected character 'I'" },
		{ "tru", 0, "unexpected character 't'" },
		{ "nul", 0, "unexpected character 'n'" },
		{ "'a'", 0, "unexpected character '''" },
		{ "1 2", 2, "trailing data" },
		{ "{} x", 3, "trailing data" },
		{ "\"abc", 0, "unterminated string" },
		{ "\"a\\x\"", 2, "invalid escape" },
		{ "\"\\u12\"", 1, "invalid \\u escape" },
		{ "\"\\u12g4\"", 1, "invalid \\u escape" },
		{ "\"\\ud800\"", 1, "unpaired high surrogate" },
		{ "\"\\ud800\\u0041\"", 1, "unpaired high surrogate" },
		{ "\"\\udc00\"", 1, "unpaired low surrogate" },
		{ "\"a\x01\"", 2, "control character 0x01" },
		{ "\"a\nb\"", 2, "control character 0x0a" },
		{ "\"\xff\"", 1, "invalid UTF-8" },
		{ "\"\xc3\"", 1, "invalid UTF-8" },
		{ "\"\xc0\xaf\"", 1, "invalid UTF-8" },		/* overlong '/' */
		{ "\"\xe0\x80\xaf\"", 1, "invalid UTF-8" },	/* overlong */
		{ "\"\xed\xa0\x80\"", 1, "invalid UTF-8" },	/* surrogate */
		{ "\"\xf4\x90\x80\x80\"", 1, "invalid UTF-8" }, /* above U+10FFFF */
		{ "\x80", 0, "unexpected byte 0x80" },
		{ "{\"a\":1,\"b\":2,\"a\":3}", 0, "duplicate key 'a'" },
		{ "{\"a\":1,\"a\":1}", 0, "duplicate key 'a'" },
		{ "[{\"x\":[1,{\"k\":0,\"k\":0}]}]", 9, "duplicate key 'k'" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct json_value *v = (struct json_value *)1;
		struct json_error err;
		int ret = json_parse(bad[i].in, strlen(bad[i].in), NULL, &v, &err);
		if (ret != -EINVAL || err.pos != bad[i].pos || !strstr(err.msg, bad[i].msg))
			print_error("input %zu '%s': ret %d, '%s' at %zu\n", i, bad[i].in, ret,
				    err.msg, err.pos);
		assert_int_equal(ret, -EINVAL);
		assert_null(v);
		assert_int_equal(err.pos, bad[i].pos);
		assert_non_null(strstr(err.msg, bad[i].msg));
	}
}

static void test_limits(void **state)
{
	(void)state;
	struct json_value *v;
	struct json_error err;
	char deep[200];

	/* max_depth nested containers parse; one more does not. */
	struct json_limits lim = { .max_depth = 10 };
	memset(deep, '[', 10);
	memset(deep + 10, ']', 10);
	assert_int_equal(json_parse(deep, 20, &lim, &v, &err), 0);
	json_free(v);
	memset(deep, '[', 11);
	memset(deep + 11, ']', 11);
	assert_int_equal(json_parse(deep, 22, &lim, &v, &err), -E2BIG);
	assert_int_equal(err.pos, 10);
	assert_non_null(strstr(err.msg, "deeper than 10"));

	/* The default depth bounds recursion on huge nesting, without reading it all. */
	size_t n = 1 << 20;
	char *big = malloc(n);
	memset(big, '[', n);
	assert_int_equal(json_parse(big, n, NULL, &v, &err), -E2BIG);
	assert_int_equal(err.pos, JSON_DEFAULT_MAX_DEPTH);
	free(big);

	lim = (struct json_limits){ .max_bytes = 8 };
	assert_int_equal(json_parse("[1,2,3]", 7, &lim, &v, &err), 0);
	json_free(v);
	assert_int_equal(json_parse("[1,2,3,4]", 9, &lim, &v, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "longer than 8"));

	/* A large object with distinct keys parses (the duplicate check is not quadratic). */
	size_t keys = 100000, cap = keys * 16 + 2, len = 0;
	char *obj = malloc(cap);
	obj[len++] = '{';
	for (size_t i = 0; i < keys; i++)
		len += (size_t)snprintf(obj + len, cap - len, "%s\"k%zu\":%zu", i ? "," : "", i, i);
	obj[len++] = '}';
	lim = (struct json_limits){ .max_bytes = cap };
	assert_int_equal(json_parse(obj, len, &lim, &v, &err), 0);
	assert_int_equal(v->object.n, keys);
	assert_true(json_get(v, "k99999")->number.i == 99999);
	json_free(v);
	free(obj);
}

static void test_writer(void **state)
{
	(void)state;
	struct json_writer w;

	json_writer_init(&w);
	assert_string_equal(json_writer_str(&w), "");
	json_begin_object(&w);
	json_kv_bool(&w, "ok", true);
	json_kv_string(&w, "s", "q\"b\\n\n\t\x01\x7f");
	json_kv_int(&w, "neg", -5);
	json_kv_uint(&w, "big", UINT64_MAX);
	json_kv_double(&w, "d", 0.1);
	json_kv_double(&w, "nan", NAN);
	json_key(&w, "list");
	json_begin_array(&w);
	json_int(&w, 1);
	json_null(&w);
	json_begin_object(&w);
	json_end_object(&w);
	json_begin_array(&w);
	json_end_array(&w);
	json_end_array(&w);
	json_end_object(&w);
	assert_int_equal(json_writer_error(&w), 0);
	assert_string_equal(json_writer_str(&w),
			    "{\"ok\":true,\"s\":\"q\\\"b\\\\n\\n\\t\\u0001\x7f\",\"neg\":-5,"
			    "\"big\":18446744073709551615,\"d\":0.1,\"nan\":null,"
			    "\"list\":[1,null,{},[]]}");

	/* Bytes that are not UTF-8 become U+FFFD: the output always parses. */
	json_writer_reset(&w);
	json_string(&w, "a\xff"
			"b\xc3");
	assert_string_equal(json_writer_str(&w), "\"a\xef\xbf\xbd"
						 "b\xef\xbf\xbd\"");

	/* Doubles read back exactly. */
	static const double ds[] = { 0.1, 1.0 / 3, 1e300, -2.5e-308, 123456789.125, 5e-324 };
	for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
		json_writer_reset(&w);
		json_double(&w, ds[i]);
		struct json_value *v = parse_ok(json_writer_str(&w));
		assert_true(v->number.d == ds[i]);
		json_free(v);
	}

	/* Misuse makes the document an error, never invalid output. */
	json_writer_reset(&w);
	json_begin_object(&w);
	json_int(&w, 1); /* a value without a key */
	assert_int_equal(json_writer_error(&w), -EINVAL);
	assert_string_equal(json_writer_str(&w), "");
	json_writer_reset(&w);
	json_begin_array(&w);
	json_key(&w, "k"); /* a key in an array */
	assert_int_equal(json_writer_error(&w), -EINVAL);
	json_writer_reset(&w);
	json_end_object(&w);
	assert_int_equal(json_writer_error(&w), -EINVAL);
	json_writer_reset(&w);
	json_begin_array(&w);
	json_end_object(&w);
	assert_int_equal(json_writer_error(&w), -EINVAL);
	json_writer_reset(&w);
	for (int i = 0; i < JSON_WRITER_MAX_DEPTH; i++)
		json_begin_array(&w);
	assert_int_equal(json_writer_error(&w), 0);
	json_begin_array(&w);
	assert_int_equal(json_writer_error(&w), -EINVAL);
	json_writer_free(&w);
}

/* parse(write(parse(x))) == parse(x), and the written form is stable. */
static void test_roundtrip(void **state)
{
	(void)state;
	static const char *const docs[] = {
		"{\"a\":[1,2.5,-3e-7,\"\\u00e9\\ud83d\\ude00\"],\"b\":{\"c\":null,\"d\":false}}",
		"[\"\\u0000\\u001f\\\"\\\\/\",9223372036854775807,-9223372036854775808,1e308]",
		"\"\"",
		"[]",
	};
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		struct json_writer w1, w2;
		struct json_value *v1 = parse_ok(docs[i]);
		json_writer_init(&w1);
		json_value(&w1, v1);
		assert_int_equal(json_writer_error(&w1), 0);
		struct json_value *v2 = parse_ok(json_writer_str(&w1));
		json_writer_init(&w2);
		json_value(&w2, v2);
		assert_string_equal(json_writer_str(&w1), json_writer_str(&w2));
		json_free(v1);
		json_free(v2);
		json_writer_free(&w1);
		json_writer_free(&w2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scalars),	   cmocka_unit_test(test_strings),
		cmocka_unit_test(test_containers), cmocka_unit_test(test_length_bound),
		cmocka_unit_test(test_errors),	   cmocka_unit_test(test_limits),
		cmocka_unit_test(test_writer),	   cmocka_unit_test(test_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
