/* The VM spec: validation and mabo-vmm's command line. The daemon checks here what mabo-vmm
 * would refuse at start (bad types, sizes, missing files), so a definition that is stored can
 * be started; mabo-vmm still checks everything again when it runs. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/spec.h"

/* mabo-vmm's limits (src/core/config.c). */
#define SPEC_CPUS_MAX 32
#define SPEC_DEVICES_MAX 8
#define SPEC_MEMORY_MIN (2ULL << 20)
#define SPEC_MEMORY_MAX (256ULL << 30)
#define SPEC_CMDLINE_MAX 4096
#define SPEC_PATH_MAX 4095
#define SPEC_DISK_ID_MAX 20
#define SPEC_IFNAME_MAX 15
#define SPEC_FWD_MAX 16

static void seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

bool spec_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n < 1 || n > SPEC_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Members an object may have: anything else is refused by name, so a typo is not ignored. */
static int check_members(const json_t *obj, const char *what, const char *const *known, char *err,
			 size_t len)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v)
	{
		bool ok = false;
		for (const char *const *k = known; *k; k++)
			ok |= strcmp(*k, key) == 0;
		if (!ok) {
			seterr(err, len, "%s: unknown field '%s'", what, key);
			return -EINVAL;
		}
	}
	return 0;
}

static int get_string(const json_t *obj, const char *what, const char *key, size_t max,
		      const char **out, char *err, size_t len)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v)) {
		seterr(err, len, "%s%s: must be a string", what, key);
		return -EINVAL;
	}
	const char *s = json_string_value(v);
	if (strlen(s) != json_string_length(v)) {
		seterr(err, len, "%s%s: contains a NUL character", what, key);
		return -EINVAL;
	}
	if (strlen(s) > max) {
		seterr(err, len, "%s%s: longer than %zu characters", what, key, max);
		return -EINVAL;
	}
	*out = s;
	return 0;
}

static int get_bool(const json_t *obj, const char *what, const char *key, char *err, size_t len)
{
	json_t *v = json_object_get(obj, key);
	if (v && !json_is_boolean(v)) {
		seterr(err, len, "%s%s: must be true or false", what, key);
		return -EINVAL;
	}
	return 0;
}

/* A file the VMM will open: an absolute path to a readable regular file (or block device). */
static int check_file(const char *field, const char *path, char *err, size_t len)
{
	struct stat st;
	if (path[0] != '/') {
		seterr(err, len, "%s '%s': must be an absolute path", field, path);
		return -EINVAL;
	}
	if (stat(path, &st) < 0) {
		seterr(err, len, "%s '%s': %s", field, path, strerror(errno));
		return -EINVAL;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		seterr(err, len, "%s '%s': not a regular file", field, path);
		return -EINVAL;
	}
	if (access(path, R_OK) < 0) {
		seterr(err, len, "%s '%s': %s", field, path, strerror(errno));
		return -EINVAL;
	}
	return 0;
}

int spec_parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!*s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k':
	case 'K': shift = 10; break;
	case 'm':
	case 'M': shift = 20; break;
	case 'g':
	case 'G': shift = 30; break;
	case 't':
	case 'T': shift = 40; break;
	case 0: break;
	default: return -EINVAL;
	}
	if (shift && end[1])
		return -EINVAL;
	if (v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

static int check_memory(json_t *out, const json_t *v, char *err, size_t len)
{
	uint64_t bytes = 512ULL << 20;
	if (v) {
		if (json_is_integer(v)) {
			json_int_t i = json_integer_value(v);
			if (i < 0) {
				seterr(err, len, "memory: must be between 2M and 256G");
				return -EINVAL;
			}
			bytes = (uint64_t)i;
		} else if (json_is_string(v)) {
			if (spec_parse_size(json_string_value(v), &bytes) < 0) {
				seterr(err, len, "memory '%s': not a size (examples: 512M, 2G)",
				       json_string_value(v));
				return -EINVAL;
			}
		} else {
			seterr(err, len,
			       "memory: must be a size in bytes or a string like \"512M\"");
			return -EINVAL;
		}
	}
	if (bytes < SPEC_MEMORY_MIN || bytes > SPEC_MEMORY_MAX) {
		seterr(err, len, "memory: must be between 2M and 256G");
		return -EINVAL;
	}
	if (bytes & 0xfffff) {
		seterr(err, len, "memory: must be a whole number of MiB");
		return -EINVAL;
	}
	return json_object_set_new(out, "memory", json_integer((json_int_t)bytes)) ? -ENOMEM : 0;
}

static bool is_nbd(const char *path)
{
	return strncmp(path, "nbd://", 6) == 0 || strncmp(path, "nbd+unix://", 11) == 0;
}

static int check_disks(const json_t *v, int *ndev, char *err, size_t len)
{
	static const char *const known[] = { "path", "readonly", "id", NULL };
	if (!json_is_array(v)) {
		seterr(err, len, "disks: must be an array of objects");
		return -EINVAL;
	}
	if (json_array_size(v) > SPEC_DEVICES_MAX) {
		seterr(err, len, "disks: at most %d", SPEC_DEVICES_MAX);
		return -EINVAL;
	}
	size_t i;
	json_t *d;
	json_array_foreach(v, i, d)
	{
		char what[32];
		const char *path, *id;
		snprintf(what, sizeof(what), "disks[%zu]", i);
		if (!json_is_object(d)) {
			seterr(err, len, "%s: must be an object", what);
			return -EINVAL;
		}
		if (check_members(d, what, known, err, len) < 0)
			return -EINVAL;
		strcat(what, ".");
		if (get_string(d, what, "path", SPEC_PATH_MAX, &path, err, len) < 0 ||
		    get_string(d, what, "id", SPEC_DISK_ID_MAX, &id, err, len) < 0 ||
		    get_bool(d, what, "readonly", err, len) < 0)
			return -EINVAL;
		if (!path) {
			seterr(err, len, "%spath: missing", what);
			return -EINVAL;
		}
		/* mabo-vmm's --disk takes comma-separated options. */
		if (strchr(path, ',') || (id && strchr(id, ','))) {
			seterr(err, len, "%s '%s': must not contain a comma", what, path);
			return -EINVAL;
		}
		what[strlen(what) - 1] = 0;
		strcat(what, ".path");
		if (!is_nbd(path) && check_file(what, path, err, len) < 0)
			return -EINVAL;
		(*ndev)++;
	}
	return 0;
}

static int check_nets(const json_t *v, int *ndev, char *err, size_t len)
{
	static const char *const known[] = { "type", "hostfwd", "ifname", "mac", NULL };
	if (!json_is_array(v)) {
		seterr(err, len, "nets: must be an array of objects");
		return -EINVAL;
	}
	if (json_array_size(v) > SPEC_DEVICES_MAX) {
		seterr(err, len, "nets: at most %d", SPEC_DEVICES_MAX);
		return -EINVAL;
	}
	size_t i;
	json_t *n;
	json_array_foreach(v, i, n)
	{
		char what[32];
		const char *type, *ifname, *mac;
		snprintf(what, sizeof(what), "nets[%zu].", i);
		if (!json_is_object(n)) {
			seterr(err, len, "nets[%zu]: must be an object", i);
			return -EINVAL;
		}
		char obj[32];
		snprintf(obj, sizeof(obj), "nets[%zu]", i);
		if (check_members(n, obj, known, err, len) < 0 ||
		    get_string(n, what, "type", 8, &type, err, len) < 0 ||
		    get_string(n, what, "ifname", SPEC_IFNAME_MAX, &ifname, err, len) < 0 ||
		    get_string(n, what, "mac", 17, &mac, err, len) < 0)
			return -EINVAL;
		if (!type || (strcmp(type, "user") != 0 && strcmp(type, "tap") != 0)) {
			seterr(err, len, "%stype: must be \"user\" or \"tap\"", what);
			return -EINVAL;
		}
		bool tap = strcmp(type, "tap") == 0;
		if (tap != !!ifname) {
			seterr(err, len, "%sifname: %s", what,
			       tap ? "missing (a TAP interface name)" : "only for type \"tap\"");
			return -EINVAL;
		}
		if ((ifname && strchr(ifname, ',')) || (mac && strchr(mac, ','))) {
			seterr(err, len, "%s: must not contain a comma", what);
			return -EINVAL;
		}
		json_t *fwd = json_object_get(n, "hostfwd");
		if (fwd) {
			if (tap || !json_is_array(fwd) || json_array_size(fwd) > SPEC_FWD_MAX) {
				seterr(err, len,
				       "%shostfwd: must be an array of at most %d strings (type "
				       "\"user\")",
				       what, SPEC_FWD_MAX);
				return -EINVAL;
			}
			size_t k;
			json_t *r;
			json_array_foreach(fwd, k, r)
			{
				if (!json_is_string(r) || json_string_length(r) > 63 ||
				    strchr(json_string_value(r), ',') ||
				    strlen(json_string_value(r)) != json_string_length(r)) {
					seterr(err, len,
					       "%shostfwd[%zu]: must be a rule like "
					       "\"tcp:127.0.0.1:2222-:22\"",
					       what, k);
					return -EINVAL;
				}
			}
		}
		(*ndev)++;
	}
	return 0;
}

json_t *spec_check(const json_t *spec, char *err, size_t len)
{
	static const char *const known[] = {
		"kernel", "initramfs", "firmware", "cmdline", "memory",	   "cpus",
		"disks",  "nets",      "rng",	   "console", "no_reboot", NULL,
	};
	const char *kernel, *initramfs, *firmware, *cmdline, *console;
	int ndev = 0;

	if (!json_is_object(spec)) {
		seterr(err, len, "spec: must be an object");
		return NULL;
	}
	if (check_members(spec, "spec", known, err, len) < 0 ||
	    get_string(spec, "", "kernel", SPEC_PATH_MAX, &kernel, err, len) < 0 ||
	    get_string(spec, "", "initramfs", SPEC_PATH_MAX, &initramfs, err, len) < 0 ||
	    get_string(spec, "", "firmware", SPEC_PATH_MAX, &firmware, err, len) < 0 ||
	    get_string(spec, "", "cmdline", SPEC_CMDLINE_MAX, &cmdline, err, len) < 0 ||
	    get_string(spec, "", "console", 8, &console, err, len) < 0 ||
	    get_bool(spec, "", "rng", err, len) < 0 ||
	    get_bool(spec, "", "no_reboot", err, len) < 0)
		return NULL;
	if (!kernel) {
		seterr(err, len, "kernel: missing (the guest's kernel Image)");
		return NULL;
	}
	if (check_file("kernel", kernel, err, len) < 0 ||
	    (initramfs && check_file("initramfs", initramfs, err, len) < 0) ||
	    (firmware && strcmp(firmware, "none") != 0 &&
	     check_file("firmware", firmware, err, len) < 0))
		return NULL;
	if (console && strcmp(console, "serial") != 0 && strcmp(console, "virtio") != 0) {
		seterr(err, len, "console '%s': must be \"serial\" or \"virtio\"", console);
		return NULL;
	}
	json_t *cpus = json_object_get(spec, "cpus");
	if (cpus && (!json_is_integer(cpus) || json_integer_value(cpus) < 1 ||
		     json_integer_value(cpus) > SPEC_CPUS_MAX)) {
		seterr(err, len, "cpus: must be an integer from 1 to %d", SPEC_CPUS_MAX);
		return NULL;
	}
	json_t *disks = json_object_get(spec, "disks");
	json_t *nets = json_object_get(spec, "nets");
	if ((disks && check_disks(disks, &ndev, err, len) < 0) ||
	    (nets && check_nets(nets, &ndev, err, len) < 0))
		return NULL;
	ndev += json_is_true(json_object_get(spec, "rng"));
	ndev += console && strcmp(console, "virtio") == 0;
	if (ndev > SPEC_DEVICES_MAX) {
		seterr(err, len, "spec: %d devices, the machine has %d slots", ndev,
		       SPEC_DEVICES_MAX);
		return NULL;
	}

	json_t *out = json_deep_copy(spec);
	if (!out || check_memory(out, json_object_get(spec, "memory"), err, len) < 0 ||
	    (!cpus && json_object_set_new(out, "cpus", json_integer(1)))) {
		if (out && !*err)
			seterr(err, len, "out of memory");
		json_decref(out);
		return NULL;
	}
	return out;
}

/* A growing argv. */
struct args {
	char **v;
	size_t n, cap;
	bool oom;
};

static void add(struct args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct args *a, const char *fmt, ...)
{
	if (a->oom)
		return;
	if (a->n + 2 > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 32;
		char **v = realloc(a->v, cap * sizeof(*v));
		if (!v) {
			a->oom = true;
			return;
		}
		a->v = v;
		a->cap = cap;
	}
	va_list ap;
	va_start(ap, fmt);
	int r = vasprintf(&a->v[a->n], fmt, ap);
	va_end(ap);
	if (r < 0) {
		a->oom = true;
		return;
	}
	a->v[++a->n] = NULL;
}

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

char **spec_argv(const json_t *spec, const char *vmm, const char *api_socket)
{
	struct args a = { 0 };
	add(&a, "%s", vmm);
	add(&a, "--kernel");
	add(&a, "%s", str(spec, "kernel"));
	if (str(spec, "initramfs")) {
		add(&a, "--initramfs");
		add(&a, "%s", str(spec, "initramfs"));
	}
	if (str(spec, "firmware")) {
		add(&a, "--firmware");
		add(&a, "%s", str(spec, "firmware"));
	}
	if (str(spec, "cmdline")) {
		add(&a, "--cmdline");
		add(&a, "%s", str(spec, "cmdline"));
	}
	add(&a, "--memory");
	add(&a, "%" PRIu64 "M",
	    (uint64_t)json_integer_value(json_object_get(spec, "memory")) >> 20);
	add(&a, "--cpus");
	add(&a, "%d", (int)json_integer_value(json_object_get(spec, "cpus")));
	if (json_is_true(json_object_get(spec, "no_reboot")))
		add(&a, "--no-reboot");
	/* Devices take their slots in this order (rng, console, disks, nets), always the same. */
	if (json_is_true(json_object_get(spec, "rng")))
		add(&a, "--rng");
	if (str(spec, "console")) {
		add(&a, "--console");
		add(&a, "%s", str(spec, "console"));
	}
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(spec, "disks"), i, d)
	{
		add(&a, "--disk");
		add(&a, "path=%s%s%s%s", str(d, "path"),
		    json_is_true(json_object_get(d, "readonly")) ? ",readonly=on" : "",
		    str(d, "id") ? ",id=" : "", str(d, "id") ? str(d, "id") : "");
	}
	json_array_foreach(json_object_get(spec, "nets"), i, d)
	{
		char buf[1400];
		size_t off = 0;
		bool tap = strcmp(str(d, "type"), "tap") == 0;
		off += snprintf(buf + off, sizeof(buf) - off, "%s%s", tap ? "tap=" : "user",
				tap ? str(d, "ifname") : "");
		size_t k;
		json_t *r;
		json_array_foreach(json_object_get(d, "hostfwd"), k, r) off +=
			snprintf(buf + off, sizeof(buf) - off, ",hostfwd=%s", json_string_value(r));
		if (str(d, "mac"))
			snprintf(buf + off, sizeof(buf) - off, ",mac=%s", str(d, "mac"));
		add(&a, "--net");
		add(&a, "%s", buf);
	}
	add(&a, "--api-socket");
	add(&a, "%s", api_socket);
	/* Least privilege: the VMM makes only the system calls it needs; any other kills it
	 * (SIGSYS), and the VM is reported crashed, killed by signal 31. */
	add(&a, "--sandbox");
	if (a.oom) {
		spec_argv_free(a.v);
		return NULL;
	}
	return a.v;
}

char **spec_argv_add(char **argv, const char *a, const char *b)
{
	size_t n = 0;
	while (argv && argv[n])
		n++;
	char **v = argv ? realloc(argv, (n + 3) * sizeof(*v)) : NULL;
	if (!v) {
		spec_argv_free(argv);
		return NULL;
	}
	v[n] = strdup(a);
	v[n + 1] = strdup(b);
	v[n + 2] = NULL;
	if (!v[n] || !v[n + 1]) {
		spec_argv_free(v);
		return NULL;
	}
	return v;
}

void spec_argv_free(char **argv)
{
	if (!argv)
		return;
	for (char **p = argv; *p; p++)
		free(*p);
	free(argv);
}
