/* libFuzzer target for the JSON parser and writer (src/core/json.c): the input is a request
 * line as any local client of the control socket could send it.
 *
 * Whatever the input, the parser must not crash, hang or read outside the input (the
 * buffer libFuzzer passes is exactly its size, so AddressSanitizer catches a read past the
 * end); a failure must name a position inside the input; and a parsed tree written back out
 * must parse again and be written identically.
 *
 *   make fuzz && build/fuzz/fuzz_json -max_total_time=60 build/fuzz/corpus-json */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/json.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The control socket's own limits, and a small depth to reach them often. */
	const struct json_limits lim = {
		.max_depth = size && (data[0] & 1) ? 4 : 16,
		.max_bytes = 65536,
	};
	struct json_value *v;
	struct json_error err;

	int ret = json_parse((const char *)data, size, &lim, &v, &err);
	if (ret) {
		CHECK(ret == -EINVAL || ret == -E2BIG || ret == -ENOMEM);
		CHECK(v == NULL);
		CHECK(err.pos <= size);
		CHECK(err.msg[0] && memchr(err.msg, '\0', sizeof(err.msg)));
		return 0;
	}
	CHECK(v != NULL);
	/* Lookups on whatever came out. */
	(void)json_get(v, "cmd");
	(void)json_get_string(v, "cmd");

	struct json_writer w1, w2;
	json_writer_init(&w1);
	json_value(&w1, v);
	CHECK(json_writer_error(&w1) == 0);
	struct json_value *v2;
	const struct json_limits lim2 = { .max_depth = 16, .max_bytes = 1u << 24 };
	const char *s1 = json_writer_str(&w1);
	CHECK(json_parse(s1, strlen(s1), &lim2, &v2, &err) == 0);
	json_writer_init(&w2);
	json_value(&w2, v2);
	CHECK(strcmp(s1, json_writer_str(&w2)) == 0);
	json_writer_free(&w1);
	json_writer_free(&w2);
	json_free(v2);
	json_free(v);
	return 0;
}
