/* mabo vm ...: mabod's REST API (docs/mabod.md) from the command line.
 *
 *   mabo [--connect unix:PATH] vm create NAME [--autostart] [--restart POLICY] VMM-OPTIONS...
 *   mabo [--connect unix:PATH] vm list [--json] | info NAME [--json] | log NAME
 *   mabo [--connect unix:PATH] vm start|stop|kill|pause|resume|delete NAME
 *   mabo [--connect unix:PATH] host | events [--limit N] | events --follow
 *
 * HTTP/1.1 over the daemon's Unix socket, one request per connection. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli/vm.h"
#include "core/json.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define DEFAULT_CONNECT "unix:/run/maboroshi/mabod.sock"
/* Largest answer read from the daemon (console logs are the big ones). */
#define RESPONSE_MAX (64u << 20)

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;
	fputs("mabo: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

struct reply {
	int status;
	char *body;
	size_t len;
};

/* One request; returns 0 with the reply, or -1 after printing why. */
static int http(const char *sock, const char *method, const char *path, const char *body,
		struct reply *r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memset(r, 0, sizeof(*r));
	if (strlen(sock) >= sizeof(sa.sun_path)) {
		fail("'%s': socket path too long", sock);
		return -1;
	}
	strcpy(sa.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fail("cannot connect to mabod at '%s': %s", sock, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	struct timeval tv = { .tv_sec = 60 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char *req = NULL;
	size_t blen = body ? strlen(body) : 0;
	int n = asprintf(&req,
			 "%s %s HTTP/1.1\r\nHost: mabod\r\nConnection: close\r\n"
			 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
			 method, path, blen, body ? body : "");
	if (n < 0) {
		close(fd);
		fail("out of memory");
		return -1;
	}
	for (size_t off = 0; off < (size_t)n;) {
		ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
		if (w <= 0) {
			fail("mabod at '%s': %s", sock, strerror(errno));
			free(req);
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	free(req);
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap + 1);
	for (;;) {
		if (!buf) {
			fail("out of memory");
			close(fd);
			return -1;
		}
		if (len == cap) {
			if (cap >= RESPONSE_MAX) {
				fail("mabod: answer larger than %u bytes", RESPONSE_MAX);
				free(buf);
				close(fd);
				return -1;
			}
			cap *= 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb)
				free(buf);
			buf = nb;
			continue;
		}
		ssize_t got = recv(fd, buf + len, cap - len, 0);
		if (got < 0) {
			fail("mabod at '%s': %s", sock, strerror(errno));
			free(buf);
			close(fd);
			return -1;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	close(fd);
	buf[len] = 0;
	char *hdr_end = strstr(buf, "\r\n\r\n");
	if (!hdr_end || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
		fail("mabod at '%s': not an HTTP answer", sock);
		free(buf);
		return -1;
	}
	*hdr_end = 0;
	size_t off = (size_t)(hdr_end + 4 - buf);
	r->len = len - off;
	/* Content-Length bounds the body; what follows it is not ours. */
	for (char *h = strstr(buf, "\r\n"); h; h = strstr(h + 2, "\r\n")) {
		unsigned long cl;
		if (strncasecmp(h + 2, "content-length:", 15) == 0 &&
		    sscanf(h + 17, "%lu", &cl) == 1 && cl < r->len)
			r->len = cl;
	}
	memmove(buf, buf + off, r->len);
	buf[r->len] = 0;
	r->body = buf;
	return 0;
}

/* The reply's JSON, or NULL after printing the daemon's error (or why it is not JSON). */
static struct json_value *reply_json(struct reply *r)
{
	struct json_limits lim = { .max_bytes = RESPONSE_MAX };
	struct json_error jerr;
	struct json_value *v = NULL;
	int e = json_parse(r->body, r->len, &lim, &v, &jerr);
	if (r->status >= 300) {
		const char *msg = e ? NULL : json_get_string(json_get(v, "error"), "message");
		if (msg)
			fail("%s", msg);
		else
			fail("mabod: HTTP %d", r->status);
		json_free(v);
		return NULL;
	}
	if (e)
		fail("mabod: answer is not JSON: %s", jerr.msg);
	return v;
}

static struct json_value *call(const char *sock, const char *method, const char *path,
			       const char *body)
{
	struct reply r;
	if (http(sock, method, path, body, &r) < 0)
		return NULL;
	struct json_value *v = reply_json(&r);
	free(r.body);
	return v;
}

static const char *str(const struct json_value *o, const char *key)
{
	const char *s = json_get_string(o, key);
	return s ? s : "";
}

static bool get_int(const struct json_value *o, const char *key, long long *out)
{
	const struct json_value *v = json_get(o, key);
	if (!v || v->type != JSON_NUMBER || !v->number.is_int)
		return false;
	*out = v->number.i;
	return true;
}

/* ---- vm create: mabo-vmm's options into a spec ---- */

/* in as an absolute path (the daemon runs elsewhere), with "." and ".." folded lexically:
 * symbolic links are kept as given (a /dev/disk/by-id/ name should stay that name). */
static int absolute(const char *in, char *out, size_t len)
{
	char buf[2 * PATH_MAX], cwd[PATH_MAX];
	if (in[0] == '/')
		snprintf(buf, sizeof(buf), "%s", in);
	else if (getcwd(cwd, sizeof(cwd)))
		snprintf(buf, sizeof(buf), "%s/%s", cwd, in);
	else
		return -1;
	size_t o = 0;
	char *save = NULL;
	for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (strcmp(c, ".") == 0)
			continue;
		if (strcmp(c, "..") == 0) {
			while (o > 0 && out[--o] != '/')
				;
			continue;
		}
		size_t n = strlen(c);
		if (o + 1 + n + 1 > len)
			return -1;
		out[o++] = '/';
		memcpy(out + o, c, n);
		o += n;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = 0;
	return 0;
}

static int kv_path(struct json_writer *w, const char *key, const char *opt, const char *v)
{
	char abs[PATH_MAX];
	if (absolute(v, abs, sizeof(abs)) < 0) {
		fail("%s '%s': path too long", opt, v);
		return -1;
	}
	json_kv_string(w, key, abs);
	return 0;
}

static bool is_nbd(const char *v)
{
	return strncmp(v, "nbd://", 6) == 0 || strncmp(v, "nbd+unix://", 11) == 0;
}

/* --disk path=FILE|URI[,readonly=on|off][,id=SERIAL] as an object of the spec's disks. */
static int write_disk(struct json_writer *w, const char *arg)
{
	char *copy = strdup(arg), *save = NULL;
	const char *path = NULL, *id = NULL;
	int ro = -1, ret = 0;
	if (!copy)
		return -1;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		const char *k = eq ? tok : "path", *v = eq ? eq + 1 : tok;
		if (eq)
			*eq = 0;
		if (strcmp(k, "path") == 0) {
			path = v;
		} else if (strcmp(k, "readonly") == 0 &&
			   (strcmp(v, "on") == 0 || strcmp(v, "off") == 0)) {
			ro = strcmp(v, "on") == 0;
		} else if (strcmp(k, "id") == 0) {
			id = v;
		} else {
			fail("--disk '%s': unknown option '%s' (path=, readonly=on|off, id=)", arg,
			     k);
			ret = -1;
		}
	}
	if (ret == 0 && !path) {
		fail("--disk '%s': no path=", arg);
		ret = -1;
	}
	if (ret == 0) {
		json_begin_object(w);
		if (is_nbd(path))
			json_kv_string(w, "path", path);
		else
			ret = kv_path(w, "path", "--disk", path);
		if (ro >= 0)
			json_kv_bool(w, "readonly", ro);
		if (id)
			json_kv_string(w, "id", id);
		json_end_object(w);
	}
	free(copy);
	return ret;
}

/* --net user[,hostfwd=RULE]...[,mac=MAC] | tap=IFNAME[,mac=MAC] as an object of nets. */
static int write_net(struct json_writer *w, const char *arg)
{
	char *copy = strdup(arg), *save = NULL;
	int ret = 0, i = 0, nfwd = 0;
	if (!copy)
		return -1;
	for (char *tok = strtok_r(copy, ",", &save); tok && ret == 0;
	     tok = strtok_r(NULL, ",", &save), i++) {
		if (i == 0 && strcmp(tok, "user") == 0) {
			json_begin_object(w);
			json_kv_string(w, "type", "user");
		} else if (i == 0 && strncmp(tok, "tap=", 4) == 0) {
			json_begin_object(w);
			json_kv_string(w, "type", "tap");
			json_kv_string(w, "ifname", tok + 4);
		} else if (i > 0 && strncmp(tok, "hostfwd=", 8) == 0) {
			if (!nfwd++) {
				json_key(w, "hostfwd");
				json_begin_array(w);
			}
			json_string(w, tok + 8);
		} else if (i > 0 && strncmp(tok, "mac=", 4) == 0) {
			if (nfwd) {
				json_end_array(w);
				nfwd = 0;
			}
			json_kv_string(w, "mac", tok + 4);
		} else {
			fail("--net '%s': '%s' not understood (user[,hostfwd=RULE]...[,mac=MAC] or "
			     "tap=IFNAME[,mac=MAC])",
			     arg, tok);
			ret = -1;
		}
	}
	if (ret == 0 && i == 0) {
		fail("--net '%s': user or tap=IFNAME first", arg);
		ret = -1;
	}
	if (ret == 0) {
		if (nfwd)
			json_end_array(w);
		json_end_object(w);
	}
	free(copy);
	return ret;
}

static int cmd_create(const char *sock, int argc, char **argv)
{
	if (argc < 1 || argv[0][0] == '-') {
		fail("vm create: expected NAME then mabo-vmm options (see mabo --help)");
		return EXIT_USAGE;
	}
	struct json_writer w, disks, nets;
	json_writer_init(&w);
	json_writer_init(&disks);
	json_writer_init(&nets);
	int ret = EXIT_USAGE, ndisks = 0, nnets = 0;
	bool autostart = false;
	const char *restart = NULL;
	json_begin_object(&w);
	json_kv_string(&w, "name", argv[0]);
	json_key(&w, "spec");
	json_begin_object(&w);
	json_begin_array(&disks);
	json_begin_array(&nets);
	for (int i = 1; i < argc; i++) {
		char *opt = argv[i], *val = NULL, *eq = NULL;
		if (strncmp(opt, "--", 2) != 0) {
			fail("vm create: unexpected argument '%s'", opt);
			goto out;
		}
		eq = strchr(opt, '=');
		char key[64];
		snprintf(key, sizeof(key), "%.*s", eq ? (int)(eq - opt) : (int)strlen(opt), opt);
		bool flag = strcmp(key, "--rng") == 0 || strcmp(key, "--no-reboot") == 0 ||
			    strcmp(key, "--autostart") == 0;
		if (flag) {
			if (eq) {
				fail("vm create: %s takes no value", key);
				goto out;
			}
		} else if (eq) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			fail("vm create: option '%s' needs a value", key);
			goto out;
		}
		if (strcmp(key, "--kernel") == 0 || strcmp(key, "--initramfs") == 0) {
			if (kv_path(&w, key + 2, key, val) < 0)
				goto out;
		} else if (strcmp(key, "--firmware") == 0) {
			if (strcmp(val, "none") == 0)
				json_kv_string(&w, "firmware", "none");
			else if (kv_path(&w, "firmware", key, val) < 0)
				goto out;
		} else if (strcmp(key, "--cmdline") == 0 || strcmp(key, "--console") == 0 ||
			   strcmp(key, "--memory") == 0) {
			json_kv_string(&w, key + 2, val);
		} else if (strcmp(key, "--cpus") == 0) {
			char *end;
			long n = strtol(val, &end, 10);
			if (!*val || *end) {
				fail("--cpus '%s': not a number", val);
				goto out;
			}
			json_kv_int(&w, "cpus", n);
		} else if (strcmp(key, "--disk") == 0) {
			if (write_disk(&disks, val) < 0)
				goto out;
			ndisks++;
		} else if (strcmp(key, "--net") == 0) {
			if (write_net(&nets, val) < 0)
				goto out;
			nnets++;
		} else if (strcmp(key, "--rng") == 0) {
			json_kv_bool(&w, "rng", true);
		} else if (strcmp(key, "--no-reboot") == 0) {
			json_kv_bool(&w, "no_reboot", true);
		} else if (strcmp(key, "--autostart") == 0) {
			autostart = true;
		} else if (strcmp(key, "--restart") == 0) {
			restart = val;
		} else {
			fail("vm create: option '%s' is not one a defined VM takes (see mabo "
			     "--help)",
			     key);
			goto out;
		}
	}
	json_end_array(&disks);
	json_end_array(&nets);
	struct json_value *dv = NULL, *nv = NULL;
	if (json_writer_error(&disks) || json_writer_error(&nets) ||
	    json_parse(json_writer_str(&disks), disks.len, NULL, &dv, NULL) ||
	    json_parse(json_writer_str(&nets), nets.len, NULL, &nv, NULL)) {
		fail("out of memory");
		json_free(dv);
		ret = EXIT_FAILED;
		goto out;
	}
	if (ndisks) {
		json_key(&w, "disks");
		json_value(&w, dv);
	}
	if (nnets) {
		json_key(&w, "nets");
		json_value(&w, nv);
	}
	json_free(dv);
	json_free(nv);
	json_end_object(&w);
	if (autostart)
		json_kv_bool(&w, "autostart", true);
	if (restart)
		json_kv_string(&w, "restart", restart);
	json_end_object(&w);
	ret = EXIT_FAILED;
	if (json_writer_error(&w)) {
		fail("out of memory");
		goto out;
	}
	struct json_value *v = call(sock, "POST", "/v1/vms", json_writer_str(&w));
	if (v) {
		printf("%s %s\n", str(v, "name"), str(v, "uuid"));
		json_free(v);
		ret = 0;
	}
out:
	json_writer_free(&w);
	json_writer_free(&disks);
	json_writer_free(&nets);
	return ret;
}

/* ---- the others ---- */

static void fmt_mem(const struct json_value *vm, char *buf, size_t len)
{
	long long b = 0;
	get_int(vm, "memory", &b);
	if (b >= (1LL << 30) && b % (1LL << 30) == 0)
		snprintf(buf, len, "%lldG", b >> 30);
	else
		snprintf(buf, len, "%lldM", b >> 20);
}

static void fmt_uptime(const struct json_value *vm, char *buf, size_t len)
{
	long long s;
	if (!get_int(vm, "uptime_s", &s))
		snprintf(buf, len, "-");
	else if (s < 60)
		snprintf(buf, len, "%llds", s);
	else if (s < 3600)
		snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lldh%02lldm", s / 3600, s / 60 % 60);
	else
		snprintf(buf, len, "%lldd%02lldh", s / 86400, s / 3600 % 24);
}

/* A byte count in the table's short form (1023K, 12.5M, 3.2G). */
static void fmt_bytes(long long b, char *buf, size_t len)
{
	if (b < (1LL << 20))
		snprintf(buf, len, "%lldK", (b + 1023) >> 10);
	else if (b < (1LL << 30))
		snprintf(buf, len, "%.1fM", (double)b / (1 << 20));
	else
		snprintf(buf, len, "%.1fG", (double)b / (1 << 30));
}

/* One JSON document on one line. */
static int print_json(const struct json_value *v)
{
	struct json_writer w;
	json_writer_init(&w);
	json_value(&w, v);
	int ret = json_writer_error(&w) ? EXIT_FAILED : 0;
	if (!ret)
		puts(json_writer_str(&w));
	json_writer_free(&w);
	return ret;
}

static int cmd_list(const char *sock, bool as_json)
{
	struct json_value *v = call(sock, "GET", "/v1/vms", NULL);
	if (!v)
		return EXIT_FAILED;
	if (as_json || v->type != JSON_ARRAY) {
		int r = print_json(v);
		json_free(v);
		return r;
	}
	/* CPU: the share of one host CPU over the last second; RSS: the memory its cgroup is
	 * charged (or the VMM's resident set without cgroups). */
	printf("%-24s %-10s %5s %7s %6s %8s %8s %9s\n", "NAME", "STATE", "CPUS", "MEMORY", "CPU%",
	       "RSS", "PID", "UPTIME");
	for (size_t i = 0; i < v->array.n; i++) {
		const struct json_value *vm = &v->array.items[i];
		char mem[32], up[32], pid[24] = "-", cpu[24] = "-", rss[24] = "-";
		long long n = 0, cpus = 0;
		fmt_mem(vm, mem, sizeof(mem));
		fmt_uptime(vm, up, sizeof(up));
		if (get_int(vm, "pid", &n))
			snprintf(pid, sizeof(pid), "%lld", n);
		if (get_int(vm, "memory_used", &n))
			fmt_bytes(n, rss, sizeof(rss));
		const struct json_value *pc = json_get(vm, "cpu_percent");
		if (pc && pc->type == JSON_NUMBER)
			snprintf(cpu, sizeof(cpu), "%.1f", pc->number.d);
		get_int(vm, "cpus", &cpus);
		printf("%-24s %-10s %5lld %7s %6s %8s %8s %9s\n", str(vm, "name"), str(vm, "state"),
		       cpus, mem, cpu, rss, pid, up);
	}
	json_free(v);
	return 0;
}

static int cmd_info(const char *sock, const char *name, bool as_json)
{
	char path[160];
	snprintf(path, sizeof(path), "/v1/vms/%s", name);
	struct json_value *v = call(sock, "GET", path, NULL);
	if (!v)
		return EXIT_FAILED;
	if (as_json || v->type != JSON_OBJECT) {
		int r = print_json(v);
		json_free(v);
		return r;
	}
	for (size_t i = 0; i < v->object.n; i++) {
		const struct json_member *m = &v->object.members[i];
		if (m->value.type == JSON_STRING) {
			printf("%-14s %s\n", m->key, m->value.string.s);
			continue;
		}
		struct json_writer w;
		json_writer_init(&w);
		json_value(&w, &m->value);
		printf("%-14s %s\n", m->key, json_writer_error(&w) ? "?" : json_writer_str(&w));
		json_writer_free(&w);
	}
	json_free(v);
	return 0;
}

/* Waits until the VM leaves the transient states; 0 if it ends in one of `good`. */
static int wait_state(const char *sock, const char *name, const char *const *good, int timeout_s)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/vms/%s", name);
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct json_value *v = call(sock, "GET", path, NULL);
		if (!v)
			return EXIT_FAILED;
		char st[32];
		snprintf(st, sizeof(st), "%s", str(v, "state"));
		bool transient = strcmp(st, "starting") == 0 || strcmp(st, "stopping") == 0;
		if (!transient) {
			for (const char *const *g = good; *g; g++) {
				if (strcmp(st, *g) == 0) {
					json_free(v);
					return 0;
				}
			}
			fail("vm '%s': %s%s%s", name, st, *str(v, "reason") ? ": " : "",
			     str(v, "reason"));
			json_free(v);
			return EXIT_FAILED;
		}
		json_free(v);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec > timeout_s) {
			fail("vm '%s': still %s after %d s", name, st, timeout_s);
			return EXIT_FAILED;
		}
		usleep(100 * 1000);
	}
}

static int cmd_action(const char *sock, const char *action, const char *name, long timeout)
{
	char path[160];
	static const char *const up[] = { "running", "paused", "migrating", NULL };
	static const char *const down[] = { "stopped", NULL };
	if (strcmp(action, "stop") == 0 && timeout >= 0)
		snprintf(path, sizeof(path), "/v1/vms/%s/stop?timeout=%ld", name, timeout);
	else
		snprintf(path, sizeof(path), "/v1/vms/%s/%s", name, action);
	struct json_value *v = call(sock, "POST", path, "");
	if (!v)
		return EXIT_FAILED;
	json_free(v);
	if (strcmp(action, "start") == 0)
		return wait_state(sock, name, up, 60);
	if (strcmp(action, "stop") == 0 || strcmp(action, "kill") == 0)
		return wait_state(sock, name, down, (timeout >= 0 ? (int)timeout : 60) + 10);
	return 0;
}

/* vm snapshot|restore NAME FILE: starts the operation and waits for its outcome, with a
 * progress line on standard error when it is a terminal. */
static int cmd_op(const char *sock, const char *cmd, const char *name, const char *file,
		  bool as_json)
{
	char abs[PATH_MAX], path[192];
	if (absolute(file, abs, sizeof(abs)) < 0) {
		fail("vm %s: '%s': path too long", cmd, file);
		return EXIT_USAGE;
	}
	struct json_writer w;
	json_writer_init(&w);
	json_begin_object(&w);
	json_kv_string(&w, "path", abs);
	json_end_object(&w);
	if (json_writer_error(&w)) {
		json_writer_free(&w);
		fail("out of memory");
		return EXIT_FAILED;
	}
	snprintf(path, sizeof(path), "/v1/vms/%s/%s", name, cmd);
	struct json_value *v = call(sock, "POST", path, json_writer_str(&w));
	json_writer_free(&w);
	long long id;
	if (!v)
		return EXIT_FAILED;
	if (!get_int(v, "id", &id)) {
		json_free(v);
		fail("mabod: %s: no operation id in the answer", cmd);
		return EXIT_FAILED;
	}
	json_free(v);
	bool tty = isatty(2);
	snprintf(path, sizeof(path), "/v1/operations/%lld", id);
	for (;;) {
		v = call(sock, "GET", path, NULL);
		if (!v)
			return EXIT_FAILED;
		const char *st = str(v, "state");
		if (strcmp(st, "running") != 0) {
			if (tty)
				fputs("\r\033[K", stderr);
			bool ok = strcmp(st, "succeeded") == 0;
			int ret = as_json ? print_json(v) : 0;
			if (!ok)
				fail("vm '%s': %s failed: %s", name, cmd, str(v, "error"));
			json_free(v);
			return ok ? ret : EXIT_FAILED;
		}
		const struct json_value *p = json_get(v, "progress");
		if (tty && p && p->type == JSON_NUMBER) {
			int pct = (int)(p->number.d * 100), bar = pct * 30 / 100;
			long long eta = -1;
			get_int(v, "eta_ms", &eta);
			fprintf(stderr, "\r%s %s: [%.*s%*s] %3d%%", cmd, name, bar,
				"##############################", 30 - bar, "", pct);
			if (eta >= 0)
				fprintf(stderr, " %llds left", (eta + 999) / 1000);
			fputs("\033[K", stderr);
		} else if (tty) {
			long long ms = 0;
			get_int(v, "elapsed_ms", &ms);
			fprintf(stderr, "\r%s %s: %.1f s\033[K", cmd, name, (double)ms / 1000);
		}
		json_free(v);
		usleep(100 * 1000);
	}
}

static int cmd_log(const char *sock, const char *name)
{
	char path[160];
	struct reply r;
	snprintf(path, sizeof(path), "/v1/vms/%s/console", name);
	if (http(sock, "GET", path, NULL, &r) < 0)
		return EXIT_FAILED;
	if (r.status >= 300) {
		json_free(reply_json(&r));
		free(r.body);
		return EXIT_FAILED;
	}
	fwrite(r.body, 1, r.len, stdout);
	free(r.body);
	return fflush(stdout) == 0 ? 0 : EXIT_FAILED;
}

/* mabo events --follow: GET /v1/events as server-sent events, each event's data (a JSON
 * object) printed on a line as it comes, until the daemon ends the stream. HTTP/1.0, so the
 * body is not chunked and ends with the connection. */
static int follow_events(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(sock) >= sizeof(sa.sun_path)) {
		fail("'%s': socket path too long", sock);
		return EXIT_FAILED;
	}
	strcpy(sa.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fail("cannot connect to mabod at '%s': %s", sock, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EXIT_FAILED;
	}
	static const char req[] = "GET /v1/events?follow=1 HTTP/1.0\r\nHost: mabod\r\n"
				  "Accept: text/event-stream\r\n\r\n";
	if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(req) - 1) {
		fail("mabod at '%s': %s", sock, strerror(errno));
		close(fd);
		return EXIT_FAILED;
	}
	char buf[65536];
	size_t len = 0;
	bool header = true;
	int status = 0;
	for (;;) {
		ssize_t got = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
		buf[len] = 0;
		if (header) {
			char *end = strstr(buf, "\r\n\r\n");
			if (!end) {
				if (len == sizeof(buf) - 1)
					break;
				continue;
			}
			if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || status != 200) {
				close(fd);
				fail("mabod: events: HTTP %d", status);
				return EXIT_FAILED;
			}
			header = false;
			len -= (size_t)(end + 4 - buf);
			memmove(buf, end + 4, len + 1);
		}
		/* Whole lines: "data: {...}" is an event's object; the rest (id, event, comments,
		 * blank separators) is framing. */
		char *line = buf, *nl;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			if (strncmp(line, "data: ", 6) == 0) {
				puts(line + 6);
				fflush(stdout);
			}
			line = nl + 1;
		}
		len -= (size_t)(line - buf);
		memmove(buf, line, len + 1);
		if (len == sizeof(buf) - 1)
			len = 0; /* a line longer than the buffer: dropped */
	}
	close(fd);
	if (header) {
		fail("mabod at '%s': no answer to events", sock);
		return EXIT_FAILED;
	}
	return 0;
}

bool mabo_daemon_command(int argc, char **argv)
{
	int i = 1;
	if (i < argc && strcmp(argv[i], "--connect") == 0)
		i += 2;
	else if (i < argc && strncmp(argv[i], "--connect=", 10) == 0)
		i++;
	return i < argc && (strcmp(argv[i], "vm") == 0 || strcmp(argv[i], "host") == 0 ||
			    strcmp(argv[i], "events") == 0);
}

int mabo_daemon_main(int argc, char **argv)
{
	const char *connect = getenv("MABO_CONNECT");
	int i = 1;
	if (strcmp(argv[i], "--connect") == 0) {
		if (i + 1 >= argc) {
			fail("--connect needs unix:PATH");
			return EXIT_USAGE;
		}
		connect = argv[i + 1];
		i += 2;
	} else if (strncmp(argv[i], "--connect=", 10) == 0) {
		connect = argv[i++] + 10;
	}
	if (!connect || !*connect)
		connect = DEFAULT_CONNECT;
	if (strncmp(connect, "unix:", 5) != 0 || !connect[5]) {
		fail("--connect '%s': expected unix:PATH", connect);
		return EXIT_USAGE;
	}
	const char *sock = connect + 5;
	const char *group = argv[i++];
	signal(SIGPIPE, SIG_IGN);

	if (strcmp(group, "host") == 0 || strcmp(group, "events") == 0) {
		char path[64] = "/v1/host";
		if (group[0] == 'e') {
			long limit = 100;
			if (i + 1 < argc && strcmp(argv[i], "--limit") == 0) {
				char *end;
				limit = strtol(argv[i + 1], &end, 10);
				if (!argv[i + 1][0] || *end) {
					fail("events: --limit '%s': not a number", argv[i + 1]);
					return EXIT_USAGE;
				}
				i += 2;
			}
			snprintf(path, sizeof(path), "/v1/events?limit=%ld", limit);
			if (i < argc && strcmp(argv[i], "--follow") == 0) {
				if (i + 1 < argc) {
					fail("events: unexpected argument '%s'", argv[i + 1]);
					return EXIT_USAGE;
				}
				return follow_events(sock);
			}
		}
		if (i < argc) {
			fail("%s: unexpected argument '%s'", group, argv[i]);
			return EXIT_USAGE;
		}
		struct json_value *v = call(sock, "GET", path, NULL);
		if (!v)
			return EXIT_FAILED;
		int r = print_json(v);
		json_free(v);
		return r;
	}
	if (i >= argc) {
		fail("vm: expected a command: create, list, info, start, stop, kill, pause, "
		     "resume, snapshot, restore, delete, log (see mabo --help)");
		return EXIT_USAGE;
	}
	const char *cmd = argv[i++];
	int nargs = argc - i;
	char **args = argv + i;
	if (strcmp(cmd, "create") == 0)
		return cmd_create(sock, nargs, args);
	bool as_json = false;
	long timeout = -1;
	const char *name = NULL, *file = NULL;
	bool op = strcmp(cmd, "snapshot") == 0 || strcmp(cmd, "restore") == 0;
	for (int k = 0; k < nargs; k++) {
		if (strcmp(args[k], "--json") == 0 &&
		    (strcmp(cmd, "list") == 0 || strcmp(cmd, "info") == 0 || op)) {
			as_json = true;
		} else if (strcmp(args[k], "--timeout") == 0 && strcmp(cmd, "stop") == 0 &&
			   k + 1 < nargs) {
			char *end;
			timeout = strtol(args[++k], &end, 10);
			if (!*args[k] || *end || timeout < 0 || timeout > 3600) {
				fail("--timeout '%s': 0 to 3600 seconds", args[k]);
				return EXIT_USAGE;
			}
		} else if (args[k][0] != '-' && !name && strcmp(cmd, "list") != 0) {
			name = args[k];
		} else if (op && name && !file) {
			file = args[k];
		} else {
			fail("vm %s: unexpected argument '%s'", cmd, args[k]);
			return EXIT_USAGE;
		}
	}
	if (strcmp(cmd, "list") == 0)
		return cmd_list(sock, as_json);
	static const char *const with_name[] = {
		"info",	  "start",  "stop", "kill",	"pause",
		"resume", "delete", "log",  "snapshot", "restore"
	};
	bool known = false;
	for (size_t k = 0; k < sizeof(with_name) / sizeof(with_name[0]); k++)
		known |= strcmp(cmd, with_name[k]) == 0;
	if (!known) {
		fail("vm: unknown command '%s'", cmd);
		return EXIT_USAGE;
	}
	if (!name) {
		fail("vm %s: expected NAME", cmd);
		return EXIT_USAGE;
	}
	if (strlen(name) > 100) {
		fail("vm %s: name too long", cmd);
		return EXIT_USAGE;
	}
	if (strcmp(cmd, "info") == 0)
		return cmd_info(sock, name, as_json);
	if (strcmp(cmd, "log") == 0)
		return cmd_log(sock, name);
	if (op) {
		if (!file) {
			fail("vm %s: expected NAME FILE", cmd);
			return EXIT_USAGE;
		}
		return cmd_op(sock, cmd, name, file, as_json);
	}
	if (strcmp(cmd, "delete") == 0) {
		char path[160];
		snprintf(path, sizeof(path), "/v1/vms/%s", name);
		struct json_value *v = call(sock, "DELETE", path, NULL);
		json_free(v);
		return v ? 0 : EXIT_FAILED;
	}
	return cmd_action(sock, cmd, name, timeout);
}
