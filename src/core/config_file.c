/* --config FILE: a JSON object with the fields of the flags (README, "Configuration file"),
 * read with jansson. It is turned into flags (--kernel=..., --disk=path=...,...) placed before
 * the command line's, so that one parser checks both the same way, with the same messages;
 * flags given too come later, so they override the file's values (or, --disk and --net, add
 * devices after the file's). */
#define _GNU_SOURCE /* vasprintf */
#include "core/config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

/* A config file larger than this is not a VM description. */
#define CONFIG_FILE_MAX (1 << 20)

struct flags {
	const char *file;
	char **v;
	int n, cap;
};

static int flags_add(struct flags *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int flags_add(struct flags *f, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (f->n == f->cap) {
		int cap = f->cap ? f->cap * 2 : 32;
		char **v = realloc(f->v, sizeof(*v) * (size_t)cap);
		if (!v)
			goto oom;
		f->v = v;
		f->cap = cap;
	}
	va_start(ap, fmt);
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		goto oom;
	f->v[f->n++] = s;
	return 0;
oom:
	log_error("--config '%s': out of memory", f->file);
	return -ENOMEM;
}

static int bad_type(struct flags *f, const char *field, const char *what)
{
	log_error("--config '%s': field '%s' must be %s", f->file, field, what);
	return -EINVAL;
}

/* A string, or (integer_ok) a non-negative integer, as the flag's text. */
static int field_text(struct flags *f, const char *field, json_t *v, bool integer_ok,
		      const char **s, char *num, size_t numlen)
{
	if (json_is_string(v)) {
		*s = json_string_value(v);
		if (strlen(*s) != json_string_length(v)) {
			log_error("--config '%s': field '%s' contains a NUL character", f->file,
				  field);
			return -EINVAL;
		}
		return 0;
	}
	if (integer_ok && json_is_integer(v)) {
		snprintf(num, numlen, "%lld", (long long)json_integer_value(v));
		*s = num;
		return 0;
	}
	return bad_type(f, field, integer_ok ? "a string or an integer" : "a string");
}

/* A disk: {"path": ..., "readonly": bool, "locking": bool, "id": ..., "reconnect_timeout": N}
 * or the --disk text. */
static int add_disk(struct flags *f, size_t i, json_t *d)
{
	char field[64], num[32];
	const char *key;
	json_t *v;
	char *text = NULL;
	size_t len = 0;
	FILE *m;
	int ret = 0;

	snprintf(field, sizeof(field), "disks[%zu]", i);
	if (json_is_string(d)) {
		const char *s;
		if (field_text(f, field, d, false, &s, num, sizeof(num)))
			return -EINVAL;
		return flags_add(f, "--disk=%s", s);
	}
	if (!json_is_object(d))
		return bad_type(f, field, "an object or a string");
	m = open_memstream(&text, &len);
	if (!m) {
		log_error("--config '%s': out of memory", f->file);
		return -ENOMEM;
	}
	json_object_foreach(d, key, v)
	{
		const char *s = NULL;
		snprintf(field, sizeof(field), "disks[%zu].%s", i, key);
		if (strcmp(key, "readonly") == 0 || strcmp(key, "locking") == 0) {
			if (!json_is_boolean(v)) {
				ret = bad_type(f, field, "true or false");
				break;
			}
			fprintf(m, ",%s=%s", key, json_is_true(v) ? "on" : "off");
			continue;
		}
		bool is_rt = strcmp(key, "reconnect_timeout") == 0;
		if (!is_rt && strcmp(key, "path") != 0 && strcmp(key, "id") != 0) {
			log_error("--config '%s': unknown field '%s' (fields: path, readonly, "
				  "locking, id, reconnect_timeout)",
				  f->file, field);
			ret = -EINVAL;
			break;
		}
		if (is_rt && !json_is_integer(v)) {
			ret = bad_type(f, field, "an integer");
			break;
		}
		if ((ret = field_text(f, field, v, is_rt, &s, num, sizeof(num))))
			break;
		/* The --disk text separates its options with commas. */
		if (strchr(s, ',')) {
			log_error("--config '%s': field '%s' contains a ','", f->file, field);
			ret = -EINVAL;
			break;
		}
		fprintf(m, ",%s=%s", is_rt ? "reconnect-timeout" : key, s);
	}
	if (fclose(m) != 0 && !ret)
		ret = -ENOMEM;
	if (!ret)
		ret = flags_add(f, "--disk=%s", len ? text + 1 : "");
	free(text);
	return ret;
}

/* A NIC: {"mode": "user"|"tap", "ifname": ..., "mac": ..., "hostfwd": [RULE, ...]} or the
 * --net text. */
static int add_net(struct flags *f, size_t i, json_t *n)
{
	char field[64], num[32];
	const char *key, *mode = NULL, *ifname = NULL, *mac = NULL;
	json_t *v, *fwd = NULL;
	char *text = NULL;
	size_t len = 0;
	int ret = 0;

	snprintf(field, sizeof(field), "nets[%zu]", i);
	if (json_is_string(n)) {
		const char *s;
		if (field_text(f, field, n, false, &s, num, sizeof(num)))
			return -EINVAL;
		return flags_add(f, "--net=%s", s);
	}
	if (!json_is_object(n))
		return bad_type(f, field, "an object or a string");
	json_object_foreach(n, key, v)
	{
		snprintf(field, sizeof(field), "nets[%zu].%s", i, key);
		const char **dst = strcmp(key, "mode") == 0	? &mode
				   : strcmp(key, "ifname") == 0 ? &ifname
				   : strcmp(key, "mac") == 0	? &mac
								: NULL;
		if (dst) {
			if (field_text(f, field, v, false, dst, num, sizeof(num)))
				return -EINVAL;
			if (strchr(*dst, ',')) {
				log_error("--config '%s': field '%s' contains a ','", f->file,
					  field);
				return -EINVAL;
			}
		} else if (strcmp(key, "hostfwd") == 0) {
			if (!json_is_array(v))
				return bad_type(f, field, "an array of strings");
			fwd = v;
		} else {
			log_error("--config '%s': unknown field '%s' (fields: mode, ifname, mac, "
				  "hostfwd)",
				  f->file, field);
			return -EINVAL;
		}
	}
	snprintf(field, sizeof(field), "nets[%zu].mode", i);
	if (!mode) {
		log_error("--config '%s': field '%s' is missing ('user' or 'tap')", f->file, field);
		return -EINVAL;
	}
	FILE *m = open_memstream(&text, &len);
	if (!m) {
		log_error("--config '%s': out of memory", f->file);
		return -ENOMEM;
	}
	if (strcmp(mode, "tap") == 0)
		fprintf(m, "tap=%s", ifname ? ifname : "");
	else
		fprintf(m, "%s", mode); /* "user", or a wrong mode --net names */
	if (ifname && strcmp(mode, "tap") != 0) {
		log_error("--config '%s': field 'nets[%zu].ifname' is for mode 'tap' only", f->file,
			  i);
		ret = -EINVAL;
	}
	if (mac)
		fprintf(m, ",mac=%s", mac);
	for (size_t k = 0; fwd && k < json_array_size(fwd) && !ret; k++) {
		const char *s;
		snprintf(field, sizeof(field), "nets[%zu].hostfwd[%zu]", i, k);
		ret = field_text(f, field, json_array_get(fwd, k), false, &s, num, sizeof(num));
		if (!ret && strchr(s, ',')) {
			log_error("--config '%s': field '%s' contains a ','", f->file, field);
			ret = -EINVAL;
		}
		if (!ret)
			fprintf(m, ",hostfwd=%s", s);
	}
	if (fclose(m) != 0 && !ret)
		ret = -ENOMEM;
	if (!ret)
		ret = flags_add(f, "--net=%s", text);
	free(text);
	return ret;
}

/* The top-level fields: the flags' names with '_' for '-'. */
enum field_kind { F_STRING, F_SIZE, F_INT, F_NUMBER, F_BOOL, F_VERBOSE };
static const struct {
	const char *name, *flag;
	enum field_kind kind;
} fields[] = {
	{ "kernel", "kernel", F_STRING },
	{ "initramfs", "initramfs", F_STRING },
	{ "firmware", "firmware", F_STRING },
	{ "cmdline", "cmdline", F_STRING },
	{ "memory", "memory", F_SIZE },
	{ "cpus", "cpus", F_INT },
	{ "code_cache", "code-cache", F_SIZE },
	{ "no_reboot", "no-reboot", F_BOOL },
	{ "timeout", "timeout", F_NUMBER },
	{ "dump_dtb", "dump-dtb", F_STRING },
	{ "rng", "rng", F_BOOL },
	{ "console", "console", F_STRING },
	{ "incoming", "incoming", F_STRING },
	{ "restore", "restore", F_STRING },
	{ "api_socket", "api-socket", F_STRING },
	{ "migration_key", "migration-key", F_STRING },
	{ "migration_tls", "migration-tls", F_STRING },
	{ "migration_insecure", "migration-insecure", F_BOOL },
	{ "sandbox", "sandbox", F_BOOL },
	{ "sandbox_user", "sandbox-user", F_STRING },
	{ "verbose", "verbose", F_VERBOSE },
};

static int add_field(struct flags *f, const char *key, json_t *v)
{
	char num[64];
	const char *s;

	if (strcmp(key, "disks") == 0 || strcmp(key, "nets") == 0) {
		bool disks = key[0] == 'd';
		if (!json_is_array(v))
			return bad_type(f, key, "an array");
		for (size_t i = 0; i < json_array_size(v); i++) {
			int ret = disks ? add_disk(f, i, json_array_get(v, i))
					: add_net(f, i, json_array_get(v, i));
			if (ret)
				return ret;
		}
		return 0;
	}
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (strcmp(key, fields[i].name) != 0)
			continue;
		switch (fields[i].kind) {
		case F_STRING:
		case F_SIZE:
			if (field_text(f, key, v, fields[i].kind == F_SIZE, &s, num, sizeof(num)))
				return -EINVAL;
			return flags_add(f, "--%s=%s", fields[i].flag, s);
		case F_INT:
			if (!json_is_integer(v))
				return bad_type(f, key, "an integer");
			return flags_add(f, "--%s=%lld", fields[i].flag,
					 (long long)json_integer_value(v));
		case F_NUMBER:
			if (!json_is_number(v))
				return bad_type(f, key, "a number");
			return flags_add(f, "--%s=%.17g", fields[i].flag, json_number_value(v));
		case F_BOOL:
			if (!json_is_boolean(v))
				return bad_type(f, key, "true or false");
			return json_is_true(v) ? flags_add(f, "--%s", fields[i].flag) : 0;
		case F_VERBOSE:
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 3)
				return bad_type(f, key, "an integer from 0 to 3");
			for (json_int_t k = 0; k < json_integer_value(v); k++)
				if (flags_add(f, "--verbose"))
					return -ENOMEM;
			return 0;
		}
	}
	log_error("--config '%s': unknown field '%s' (the fields are the flags' names, "
		  "with '_' for '-', and disks, nets)",
		  f->file, key);
	return -EINVAL;
}

int config_file_flags(const char *path, char ***argv_out, int *argc_out)
{
	struct flags f = { .file = path };
	json_error_t jerr;
	struct stat st;
	const char *key;
	json_t *root, *v;
	int ret = 0;

	/* Not a FIFO or device: opening one could wait for ever. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0) {
		log_error("--config '%s': %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > CONFIG_FILE_MAX) {
		log_error("--config '%s': %s", path,
			  S_ISREG(st.st_mode) ? "larger than 1 MiB" : "not a regular file");
		close(fd);
		return -EINVAL;
	}
	root = json_loadfd(fd, JSON_REJECT_DUPLICATES, &jerr);
	close(fd);
	if (!root) {
		log_error("--config '%s': line %d column %d: %s", path, jerr.line, jerr.column,
			  jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(root)) {
		log_error("--config '%s': not a JSON object", path);
		json_decref(root);
		return -EINVAL;
	}
	json_object_foreach(root, key, v)
	{
		if ((ret = add_field(&f, key, v)))
			break;
	}
	json_decref(root);
	if (ret) {
		config_free_flags(f.v, f.n);
		return -EINVAL;
	}
	*argv_out = f.v;
	*argc_out = f.n;
	return 0;
}

void config_free_flags(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}
