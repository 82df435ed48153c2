/* REST API handlers. Answers are JSON (but the console log); errors are {"error":{"code",
 * "message"}} with a message naming the field or object at fault. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "core/log.h"
#include "daemon/http.h"
#include "daemon/ops.h"
#include "daemon/share.h"
#include "daemon/store.h"
#include "daemon/supervise.h"

/* A request's body, gathered across the handler's calls. */
struct body {
	char *buf;
	size_t len;
	bool too_big;
};

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *v)
{
	char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
	json_decref(v);
	if (!text)
		return MHD_NO;
	size_t n = strlen(text);
	text[n] = 0;
	/* One line, like the VMM's control socket. */
	char *line = realloc(text, n + 2);
	if (!line) {
		free(text);
		return MHD_NO;
	}
	line[n] = '\n';
	line[n + 1] = 0;
	struct MHD_Response *r =
		MHD_create_response_from_buffer(n + 1, line, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(line);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/json");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
	char msg[1024];
	const char *code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	switch (status) {
	case 400: code = "bad_request"; break;
	case 404: code = "not_found"; break;
	case 405: code = "method_not_allowed"; break;
	case 409: code = "conflict"; break;
	case 413: code = "too_large"; break;
	case 423: code = "disk_in_use"; break;
	default: code = "internal"; break;
	}
	return send_json(c, status,
			 json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

static json_t *vm_json(struct mabod *d, const struct vmrec *vm, bool full)
{
	bool live = sup_watch_fd(vm) >= 0;
	json_t *spec = vm->spec;
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:O, s:O, s:b, s:s, s:i}", "name", vm->name,
			      "uuid", vm->uuid, "state", vm_state_name(vm->state), "desired",
			      vm->want_running ? "running" : "stopped", "cpus",
			      json_object_get(spec, "cpus"), "memory",
			      json_object_get(spec, "memory"), "autostart", vm->autostart,
			      "restart", vm_restart_name(vm->restart), "restarts", vm->restarts);
	if (!o)
		return NULL;
	json_object_set_new(o, "pid", live && vm->pid ? json_integer(vm->pid) : json_null());
	if (live) {
		json_object_set_new(o, "started_at_ms", json_integer(vm->started_at));
		json_object_set_new(o, "uptime_s",
				    json_integer((wall_ms() - vm->started_at) / 1000));
	}
	/* Accounting (its cgroup, else the VMM's /proc figures), as last sampled: null
	 * until the first sample of a run. */
	bool u = live && vm->usage_at;
	json_object_set_new(o, "cpu_seconds",
			    u && vm->usage.cpu_ns >= 0 ? json_real((double)vm->usage.cpu_ns / 1e9)
						       : json_null());
	json_object_set_new(o, "cpu_percent",
			    u && vm->usage.cpu_ns >= 0 ? json_real(vm->cpu_percent) : json_null());
	json_object_set_new(o, "memory_used",
			    u && vm->usage.memory >= 0 ? json_integer(vm->usage.memory)
						       : json_null());
	json_object_set_new(o, "tasks",
			    u && vm->usage.pids >= 0 ? json_integer(vm->usage.pids) : json_null());
	if (vm->reason[0])
		json_object_set_new(o, "reason", json_string(vm->reason));
	if (vm->restart_at)
		json_object_set_new(
			o, "restart_in_ms",
			json_integer(vm->restart_at > now_ms() ? vm->restart_at - now_ms() : 0));
	if (full) {
		char path[PATH_MAX];
		json_object_set(o, "spec", spec);
		if (sup_path(d, vm, NULL, path, sizeof(path)) == 0)
			json_object_set_new(o, "run_dir", json_string(path));
		cg_path(&d->cg, vm->name, path, sizeof(path));
		json_object_set_new(o, "cgroup", live && path[0] ? json_string(path) : json_null());
	}
	return o;
}

static void make_uuid(char out[37])
{
	uint8_t b[16];
	if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
		/* getrandom does not fail for 16 bytes once the pool is up; be safe anyway. */
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (uint8_t)(now_ms() >> (i % 8));
	}
	b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

static enum MHD_Result create_vm(struct mabod *d, struct MHD_Connection *c, struct body *b)
{
	json_error_t jerr;
	char err[SPEC_ERR_MAX] = "";
	if (!b->len)
		return send_error(c, 400, "body: missing (a JSON object with name and spec)");
	json_t *req = json_loadb(b->buf, b->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req)
		return send_error(c, 400, "body: not JSON: %s (line %d, column %d)", jerr.text,
				  jerr.line, jerr.column);
	enum MHD_Result ret;
	const char *key;
	json_t *v, *spec = NULL;
	if (!json_is_object(req)) {
		ret = send_error(c, 400, "body: must be a JSON object");
		goto out;
	}
	json_object_foreach(req, key, v)
	{
		if (strcmp(key, "name") && strcmp(key, "spec") && strcmp(key, "autostart") &&
		    strcmp(key, "restart")) {
			ret = send_error(c, 400, "unknown field '%s'", key);
			goto out;
		}
	}
	json_t *name = json_object_get(req, "name");
	if (!name || !json_is_string(name)) {
		ret = send_error(c, 400, "name: %s", name ? "must be a string" : "missing");
		goto out;
	}
	const char *n = json_string_value(name);
	if (strlen(n) != json_string_length(name) || !spec_name_valid(n)) {
		ret = send_error(c, 400, "name '%.80s': must be 1 to 63 of A-Z a-z 0-9 _ -", n);
		goto out;
	}
	json_t *autostart = json_object_get(req, "autostart");
	if (autostart && !json_is_boolean(autostart)) {
		ret = send_error(c, 400, "autostart: must be true or false");
		goto out;
	}
	enum vm_restart restart = RESTART_NEVER;
	json_t *rs = json_object_get(req, "restart");
	if (rs && (!json_is_string(rs) || vm_restart_parse(json_string_value(rs), &restart) < 0)) {
		ret = send_error(c, 400,
				 "restart: must be \"never\", \"on-failure\" or \"always\"");
		goto out;
	}
	if (!json_object_get(req, "spec")) {
		ret = send_error(c, 400, "spec: missing");
		goto out;
	}
	spec = spec_check(json_object_get(req, "spec"), err, sizeof(err));
	if (!spec) {
		ret = send_error(c, 400, "%s", err);
		goto out;
	}
	if (mabod_find(d, n)) {
		ret = send_error(c, 409, "vm '%s': already exists", n);
		goto out;
	}
	/* Another definition using one of its disks read-write (or using read-write one of
	 * its disks) is refused now rather than at the second start. */
	if (share_conflict(d->vms, NULL, spec, false, err, sizeof(err)) < 0) {
		ret = send_error(c, 423, "%s", err);
		goto out;
	}
	struct vmrec *vm = calloc(1, sizeof(*vm));
	if (!vm) {
		ret = send_error(c, 500, "out of memory");
		goto out;
	}
	snprintf(vm->name, sizeof(vm->name), "%s", n);
	make_uuid(vm->uuid);
	vm->spec = spec;
	spec = NULL;
	vm->autostart = json_is_true(autostart);
	vm->restart = restart;
	vm->shim_fd = vm->vmm_fd = -1;
	int r = store_insert(d, vm);
	if (r < 0) {
		json_decref(vm->spec);
		free(vm);
		ret = r == -EEXIST ? send_error(c, 409, "vm '%s': already exists", n)
				   : send_error(c, 500, "vm '%s': cannot be stored", n);
		goto out;
	}
	/* The list stays sorted by name, as it is loaded. */
	struct vmrec **pp = &d->vms;
	while (*pp && strcmp((*pp)->name, vm->name) < 0)
		pp = &(*pp)->next;
	vm->next = *pp;
	*pp = vm;
	mabod_event(d, vm, "define", "vm '%s': defined (uuid %s)", vm->name, vm->uuid);
	ret = send_json(c, 201, vm_json(d, vm, true));
out:
	json_decref(spec);
	json_decref(req);
	return ret;
}

static void remove_run_dir(struct mabod *d, struct vmrec *vm)
{
	static const char *const files[] = { "console.log", "console.log.1", "vmm.log", "exit",
					     "exit.tmp",    "api.sock",	     NULL };
	char path[PATH_MAX];
	for (const char *const *f = files; *f; f++)
		if (sup_path(d, vm, *f, path, sizeof(path)) == 0)
			unlink(path);
	if (sup_path(d, vm, NULL, path, sizeof(path)) == 0)
		rmdir(path);
}

/* The console output so far (console.log.1 then console.log), its last CONSOLE_SEND_MAX
 * bytes at most. */
#define CONSOLE_SEND_MAX (64u << 20)
static enum MHD_Result send_console(struct mabod *d, struct MHD_Connection *c, struct vmrec *vm)
{
	char path[PATH_MAX];
	int fds[2];
	off_t sizes[2] = { 0, 0 };
	for (int i = 0; i < 2; i++) {
		struct stat st;
		fds[i] = -1;
		if (sup_path(d, vm, i ? "console.log" : "console.log.1", path, sizeof(path)) < 0)
			continue;
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] >= 0 && fstat(fds[i], &st) == 0)
			sizes[i] = st.st_size;
	}
	/* What goes beyond the limit is the oldest part. */
	off_t skip = sizes[0] + sizes[1] > (off_t)CONSOLE_SEND_MAX
			     ? sizes[0] + sizes[1] - (off_t)CONSOLE_SEND_MAX
			     : 0;
	size_t cap = (size_t)(sizes[0] + sizes[1] - skip), len = 0;
	char *buf = malloc(cap + 1);
	for (int i = 0; i < 2; i++) {
		off_t from = skip > sizes[i] ? sizes[i] : skip;
		skip -= from;
		if (fds[i] < 0)
			continue;
		ssize_t n;
		/* The file may grow meanwhile: up to the size seen. */
		while (buf && from < sizes[i] && len < cap &&
		       (n = pread(fds[i], buf + len,
				  (size_t)(sizes[i] - from) < cap - len ? (size_t)(sizes[i] - from)
									: cap - len,
				  from)) > 0) {
			len += (size_t)n;
			from += n;
		}
		close(fds[i]);
	}
	if (!buf)
		return send_error(c, 500, "out of memory");
	struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(buf);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/octet-stream");
	enum MHD_Result ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ret;
}

static bool is_live(const struct vmrec *vm)
{
	return sup_watch_fd(vm) >= 0;
}

static enum MHD_Result vm_action(struct mabod *d, struct MHD_Connection *c, struct vmrec *vm,
				 const char *action)
{
	char err[512] = "";
	int r;
	if (strcmp(action, "start") == 0) {
		if (is_live(vm))
			return send_error(c, 409, "vm '%s': already %s", vm->name,
					  vm_state_name(vm->state));
		/* The definitions were checked when made, but a file may since have been
		 * replaced by a link to another VM's disk. */
		if (share_conflict(d->vms, vm, vm->spec, true, err, sizeof(err)) < 0)
			return send_error(c, 423, "vm '%s': %s", vm->name, err);
		vm->restarts = 0;
		vm->backoff_ms = 0;
		r = sup_start(d, vm, err, sizeof(err));
		if (r < 0) {
			snprintf(vm->reason, sizeof(vm->reason), "%s", err);
			return send_error(c, r == -EBUSY ? 409 : 500, "%s", err);
		}
		return send_json(c, 202, vm_json(d, vm, false));
	}
	if (strcmp(action, "stop") == 0 || strcmp(action, "kill") == 0) {
		if (!is_live(vm)) {
			if (vm->restart_at) {
				/* A restart was pending: stopping cancels it. */
				vm->restart_at = 0;
				vm->want_running = false;
				store_update(d, vm);
				return send_json(c, 200, vm_json(d, vm, false));
			}
			return send_error(c, 409, "vm '%s': not running (%s)", vm->name,
					  vm_state_name(vm->state));
		}
		if (action[1] == 't') {
			int64_t timeout = SUP_STOP_TIMEOUT_MS;
			const char *t =
				MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "timeout");
			if (t) {
				char *end;
				long v = strtol(t, &end, 10);
				if (!*t || *end || v < 0 || v > 3600)
					return send_error(c, 400,
							  "timeout '%s': must be 0 to 3600 seconds",
							  t);
				timeout = v * 1000;
			}
			r = sup_stop(d, vm, timeout, err, sizeof(err));
		} else {
			r = sup_kill(d, vm, err, sizeof(err));
		}
		if (r < 0)
			return send_error(c, 500, "%s", err);
		return send_json(c, 202, vm_json(d, vm, false));
	}
	if (strcmp(action, "pause") == 0 || strcmp(action, "resume") == 0) {
		bool pause = action[0] == 'p';
		if (!is_live(vm) || (vm->state != VM_RUNNING && vm->state != VM_PAUSED))
			return send_error(c, 409, "vm '%s': cannot %s: it is %s", vm->name, action,
					  vm_state_name(vm->state));
		r = sup_vmm_request(d, vm, action, NULL, err, sizeof(err));
		if (r < 0)
			return send_error(c, r == -EINVAL ? 409 : 500, "%s", err);
		vm->state = pause ? VM_PAUSED : VM_RUNNING;
		store_update(d, vm);
		mabod_event(d, vm, action, "vm '%s': %s", vm->name, pause ? "paused" : "resumed");
		return send_json(c, 200, vm_json(d, vm, false));
	}
	return send_error(c, 404, "no action '%s' (start, stop, kill, pause, resume)", action);
}

static enum MHD_Result host_info(struct mabod *d, struct MHD_Connection *c)
{
	struct utsname u;
	int n = 0, running = 0;
	uname(&u);
	for (struct vmrec *vm = d->vms; vm; vm = vm->next) {
		n++;
		running += is_live(vm);
	}
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:I, s:i, s:i, s:I, s:s, s:s}", "hostname",
			      u.nodename, "kernel", u.release, "arch", u.machine, "cpus",
			      (int)sysconf(_SC_NPROCESSORS_ONLN), "memory",
			      (json_int_t)pages * (json_int_t)psize, "vms", n, "vms_running",
			      running, "uptime_s", (json_int_t)((wall_ms() - d->started_at) / 1000),
			      "state_dir", d->state_dir, "run_dir", d->run_dir);
	double load[3] = { 0, 0, 0 };
	getloadavg(load, 3);
	json_object_set_new(o, "load", json_pack("[f, f, f]", load[0], load[1], load[2]));
	json_object_set_new(o, "cgroups", json_string(d->cg.ops ? d->cg.ops->name : "none"));
	json_object_set_new(o, "versions",
			    json_pack("{s:s, s:s, s:s}", "sqlite", sqlite3_libversion(),
				      "microhttpd", MHD_get_version(), "jansson", JANSSON_VERSION));
	return o ? send_json(c, 200, o) : send_error(c, 500, "out of memory");
}

/* Text appended to a growing buffer; on failure the buffer is freed and stays NULL. */
struct text {
	char *buf;
	size_t len, cap;
};

static void text_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	if (!t->buf && t->cap)
		return;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0,
				  fmt, ap);
		va_end(ap);
		if (n < 0) {
			free(t->buf);
			t->buf = NULL;
			t->cap = 1;
			return;
		}
		if (t->buf && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = (t->cap ? t->cap * 2 : 4096) + (size_t)n;
		char *b = realloc(t->buf, cap);
		if (!b) {
			free(t->buf);
			t->buf = NULL;
			t->cap = 1;
			return;
		}
		t->buf = b;
		t->cap = cap;
	}
}

/* GET /metrics: the Prometheus text format (version 0.0.4). The VMs' figures are those of
 * the last sample (about once a second). */
static enum MHD_Result send_metrics(struct mabod *d, struct MHD_Connection *c)
{
	static const enum vm_state states[] = { VM_STOPPED,  VM_STARTING, VM_RUNNING,  VM_PAUSED,
						VM_STOPPING, VM_CRASHED,  VM_MIGRATING };
	struct text t = { 0 };
	int n = 0, running = 0;
	double cpu = 0, mem = 0;
	text_add(&t, "# HELP mabo_vm_state Whether the VM is in this state (1) or not (0).\n"
		     "# TYPE mabo_vm_state gauge\n");
	for (struct vmrec *vm = d->vms; vm; vm = vm->next)
		for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
			text_add(&t, "mabo_vm_state{vm=\"%s\",state=\"%s\"} %d\n", vm->name,
				 vm_state_name(states[i]), vm->state == states[i]);
	text_add(&t, "# HELP mabo_vm_cpu_seconds_total CPU time the VM's processes used.\n"
		     "# TYPE mabo_vm_cpu_seconds_total counter\n");
	for (struct vmrec *vm = d->vms; vm; vm = vm->next) {
		n++;
		if (!is_live(vm))
			continue;
		running++;
		if (vm->usage_at && vm->usage.cpu_ns >= 0) {
			text_add(&t, "mabo_vm_cpu_seconds_total{vm=\"%s\"} %.9f\n", vm->name,
				 (double)vm->usage.cpu_ns / 1e9);
			cpu += (double)vm->usage.cpu_ns / 1e9;
		}
	}
	text_add(&t, "# HELP mabo_vm_memory_bytes Memory charged to the VM's cgroup (or the "
		     "VMM's resident set).\n# TYPE mabo_vm_memory_bytes gauge\n");
	for (struct vmrec *vm = d->vms; vm; vm = vm->next)
		if (is_live(vm) && vm->usage_at && vm->usage.memory >= 0) {
			text_add(&t, "mabo_vm_memory_bytes{vm=\"%s\"} %lld\n", vm->name,
				 (long long)vm->usage.memory);
			mem += (double)vm->usage.memory;
		}
	text_add(&t, "# HELP mabo_vm_tasks Threads of the VM's processes.\n"
		     "# TYPE mabo_vm_tasks gauge\n");
	for (struct vmrec *vm = d->vms; vm; vm = vm->next)
		if (is_live(vm) && vm->usage_at && vm->usage.pids >= 0)
			text_add(&t, "mabo_vm_tasks{vm=\"%s\"} %lld\n", vm->name,
				 (long long)vm->usage.pids);
	text_add(&t, "# HELP mabo_vm_memory_configured_bytes The guest's memory.\n"
		     "# TYPE mabo_vm_memory_configured_bytes gauge\n");
	for (struct vmrec *vm = d->vms; vm; vm = vm->next)
		text_add(&t, "mabo_vm_memory_configured_bytes{vm=\"%s\"} %lld\n", vm->name,
			 (long long)json_integer_value(json_object_get(vm->spec, "memory")));
	text_add(&t, "# HELP mabo_vm_restarts_total Restarts by policy since the last start.\n"
		     "# TYPE mabo_vm_restarts_total counter\n");
	for (struct vmrec *vm = d->vms; vm; vm = vm->next)
		text_add(&t, "mabo_vm_restarts_total{vm=\"%s\"} %d\n", vm->name, vm->restarts);
	double load[3] = { 0, 0, 0 };
	getloadavg(load, 3);
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	text_add(&t,
		 "# HELP mabo_host_vms VMs defined.\n# TYPE mabo_host_vms gauge\nmabo_host_vms %d\n"
		 "# HELP mabo_host_vms_running VMs with a process.\n# TYPE mabo_host_vms_running "
		 "gauge\nmabo_host_vms_running %d\n"
		 "# HELP mabo_host_vm_cpu_seconds_total CPU time of all running VMs.\n# TYPE "
		 "mabo_host_vm_cpu_seconds_total counter\nmabo_host_vm_cpu_seconds_total %.9f\n"
		 "# HELP mabo_host_vm_memory_bytes Memory charged to all running VMs.\n# TYPE "
		 "mabo_host_vm_memory_bytes gauge\nmabo_host_vm_memory_bytes %.0f\n"
		 "# HELP mabo_host_cpus Online CPUs.\n# TYPE mabo_host_cpus gauge\nmabo_host_cpus "
		 "%ld\n"
		 "# HELP mabo_host_memory_bytes Physical memory.\n# TYPE mabo_host_memory_bytes "
		 "gauge\nmabo_host_memory_bytes %lld\n"
		 "# HELP mabo_host_load1 Load average over a minute.\n# TYPE mabo_host_load1 "
		 "gauge\nmabo_host_load1 %.2f\n",
		 n, running, cpu, mem, sysconf(_SC_NPROCESSORS_ONLN),
		 (long long)pages * (long long)psize, load[0]);
	if (!t.buf)
		return send_error(c, 500, "out of memory");
	struct MHD_Response *r =
		MHD_create_response_from_buffer(t.len, t.buf, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(t.buf);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	enum MHD_Result ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ret;
}

/* A client following GET /v1/events (server-sent events). Its connection is suspended
 * while nothing is pending and resumed by http_broadcast. */
struct sse_client {
	struct sse_client *next;
	struct mabod *d;
	struct MHD_Connection *conn;
	char *buf; /* pending bytes */
	size_t len, off;
	bool suspended, closed;
};

/* Pending bytes a slow client may have before it is dropped. */
#define SSE_PENDING_MAX (1u << 20)

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct sse_client *s = cls;
	(void)pos;
	if (s->off < s->len) {
		size_t n = s->len - s->off < max ? s->len - s->off : max;
		memcpy(out, s->buf + s->off, n);
		s->off += n;
		if (s->off == s->len)
			s->off = s->len = 0;
		return (ssize_t)n;
	}
	if (s->closed)
		return MHD_CONTENT_READER_END_OF_STREAM;
	MHD_suspend_connection(s->conn);
	s->suspended = true;
	return 0;
}

static void sse_free(void *cls)
{
	struct sse_client *s = cls;
	for (struct sse_client **pp = &s->d->sse; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	free(s->buf);
	free(s);
}

static void sse_wake(struct sse_client *s)
{
	if (s->suspended) {
		s->suspended = false;
		MHD_resume_connection(s->conn);
		s->d->http_wake = true;
	}
}

void http_broadcast(struct mabod *d, int64_t time_ms, const char *vm, const char *kind,
		    const char *message)
{
	d->event_seq++;
	if (!d->sse)
		return;
	json_t *o = json_pack("{s:I, s:s?, s:s, s:s}", "time_ms", (json_int_t)time_ms, "vm", vm,
			      "kind", kind, "message", message);
	char *data = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!data)
		return;
	char *msg = NULL;
	int n = asprintf(&msg, "id: %lld\nevent: %s\ndata: %s\n\n", (long long)d->event_seq, kind,
			 data);
	free(data);
	if (n < 0)
		return;
	for (struct sse_client *s = d->sse; s; s = s->next) {
		if (s->closed)
			continue;
		char *b = s->len + (size_t)n <= SSE_PENDING_MAX
				  ? realloc(s->buf, s->len + (size_t)n)
				  : NULL;
		if (!b) {
			/* A client that does not read: its stream ends (it may reconnect). */
			s->closed = true;
		} else {
			s->buf = b;
			memcpy(s->buf + s->len, msg, (size_t)n);
			s->len += (size_t)n;
		}
		sse_wake(s);
	}
	free(msg);
}

static enum MHD_Result follow_events(struct mabod *d, struct MHD_Connection *c)
{
	struct sse_client *s = calloc(1, sizeof(*s));
	if (!s)
		return send_error(c, 500, "out of memory");
	s->d = d;
	s->conn = c;
	/* A comment first, so the client sees the stream open at once. */
	s->buf = strdup(": mabod events\n\n");
	s->len = s->buf ? strlen(s->buf) : 0;
	struct MHD_Response *r =
		MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, s, sse_free);
	if (!r) {
		free(s->buf);
		free(s);
		return send_error(c, 500, "out of memory");
	}
	s->next = d->sse;
	d->sse = s;
	MHD_add_response_header(r, "Content-Type", "text/event-stream");
	MHD_add_response_header(r, "Cache-Control", "no-cache");
	enum MHD_Result ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ret;
}

/* POST /v1/vms/NAME/snapshot or /restore, body {"path": "/abs/file"}: 202 with the
 * operation and its Location. */
static enum MHD_Result start_op(struct mabod *d, struct MHD_Connection *c, struct vmrec *vm,
				const char *action, struct body *b)
{
	json_error_t jerr;
	char err[600] = "";
	if (!b->len)
		return send_error(c, 400, "body: missing (a JSON object with path)");
	json_t *req = json_loadb(b->buf, b->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req)
		return send_error(c, 400, "body: not JSON: %s", jerr.text);
	const char *key;
	json_t *v;
	json_object_foreach(req, key, v)
	{
		if (strcmp(key, "path") != 0) {
			json_decref(req);
			return send_error(c, 400, "unknown field '%s'", key);
		}
	}
	json_t *p = json_object_get(req, "path");
	if (!json_is_string(p) || strlen(json_string_value(p)) != json_string_length(p)) {
		json_decref(req);
		return send_error(c, 400, "path: %s", p ? "must be a string" : "missing");
	}
	int status = 500;
	struct op *op =
		action[0] == 's'
			? ops_snapshot(d, vm, json_string_value(p), &status, err, sizeof(err))
			: ops_restore(d, vm, json_string_value(p), &status, err, sizeof(err));
	json_decref(req);
	if (!op)
		return send_error(c, (unsigned)status, "%s", err);
	char loc[64];
	snprintf(loc, sizeof(loc), "/v1/operations/%lld", (long long)op->id);
	json_t *o = ops_json(op);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!text)
		return send_error(c, 500, "out of memory");
	struct MHD_Response *r =
		MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "Location", loc);
	enum MHD_Result ret = MHD_queue_response(c, 202, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result route(struct mabod *d, struct MHD_Connection *c, const char *url,
			     const char *method, struct body *b)
{
	bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0,
	     del = strcmp(method, "DELETE") == 0;
	if (b->too_big)
		return send_error(c, 413, "body: larger than %u bytes", HTTP_BODY_MAX);
	if (strcmp(url, "/metrics") == 0)
		return get ? send_metrics(d, c) : send_error(c, 405, "%s %s: use GET", method, url);
	if (strcmp(url, "/v1/host") == 0)
		return get ? host_info(d, c) : send_error(c, 405, "%s %s: use GET", method, url);
	if (strcmp(url, "/v1/events") == 0) {
		if (!get)
			return send_error(c, 405, "%s %s: use GET", method, url);
		const char *acc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
		const char *fol = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "follow");
		if ((acc && strstr(acc, "text/event-stream")) || (fol && strcmp(fol, "0") != 0))
			return follow_events(d, c);
		int limit = 100;
		const char *l = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
		if (l) {
			char *end;
			long v = strtol(l, &end, 10);
			if (!*l || *end || v < 1 || v > STORE_EVENTS_MAX)
				return send_error(c, 400, "limit '%s': must be 1 to %d", l,
						  STORE_EVENTS_MAX);
			limit = (int)v;
		}
		json_t *ev = store_events(d, limit);
		return ev ? send_json(c, 200, ev) : send_error(c, 500, "events: database error");
	}
	if (strncmp(url, "/v1/operations/", 15) == 0) {
		if (!get)
			return send_error(c, 405, "%s %s: use GET", method, url);
		char *end;
		long long id = strtoll(url + 15, &end, 10);
		struct op *op = url[15] && !*end && id > 0 ? ops_find(d, id) : NULL;
		if (!op)
			return send_error(c, 404, "operation '%s': no such operation", url + 15);
		json_t *o = ops_json(op);
		return o ? send_json(c, 200, o) : send_error(c, 500, "out of memory");
	}
	if (strcmp(url, "/v1/vms") == 0) {
		if (post)
			return create_vm(d, c, b);
		if (!get)
			return send_error(c, 405, "%s %s: use GET or POST", method, url);
		json_t *arr = json_array();
		for (struct vmrec *vm = d->vms; vm; vm = vm->next)
			json_array_append_new(arr, vm_json(d, vm, false));
		return send_json(c, 200, arr);
	}
	if (strncmp(url, "/v1/vms/", 8) != 0)
		return send_error(c, 404, "no such resource: %s", url);
	char name[128];
	const char *p = url + 8, *slash = strchr(p, '/');
	size_t len = slash ? (size_t)(slash - p) : strlen(p);
	if (len >= sizeof(name))
		return send_error(c, 400, "vm name: longer than %d characters", SPEC_NAME_MAX);
	memcpy(name, p, len);
	name[len] = 0;
	if (!spec_name_valid(name))
		return send_error(c, 400, "vm name '%s': must be 1 to 63 of A-Z a-z 0-9 _ -", name);
	struct vmrec *vm = mabod_find(d, name);
	if (!vm)
		return send_error(c, 404, "vm '%s': no such vm", name);
	if (!slash) {
		if (get) {
			/* The VMM is asked, so a pause made on its own socket shows. */
			if (vm->state == VM_RUNNING || vm->state == VM_PAUSED) {
				json_t *info;
				char err[256];
				if (sup_vmm_request(d, vm, "info", &info, err, sizeof(err)) == 0) {
					const char *s =
						json_string_value(json_object_get(info, "state"));
					if (s && strcmp(s, "paused") == 0)
						vm->state = VM_PAUSED;
					else if (s && strcmp(s, "running") == 0)
						vm->state = VM_RUNNING;
					else if (s && strcmp(s, "migrating") == 0)
						vm->state = VM_MIGRATING;
					json_decref(info);
				}
			}
			return send_json(c, 200, vm_json(d, vm, true));
		}
		if (!del)
			return send_error(c, 405, "%s %s: use GET or DELETE", method, url);
		if (is_live(vm))
			return send_error(c, 409, "vm '%s': is %s: stop it first", name,
					  vm_state_name(vm->state));
		if (store_delete(d, vm) < 0)
			return send_error(c, 500, "vm '%s': cannot be deleted from the database",
					  name);
		for (struct vmrec **pp = &d->vms; *pp; pp = &(*pp)->next) {
			if (*pp == vm) {
				*pp = vm->next;
				break;
			}
		}
		mabod_event(d, vm, "delete", "vm '%s': deleted", name);
		remove_run_dir(d, vm);
		json_decref(vm->spec);
		free(vm);
		return send_json(c, 200, json_pack("{s:s}", "deleted", name));
	}
	const char *action = slash + 1;
	if (strcmp(action, "console") == 0)
		return get ? send_console(d, c, vm)
			   : send_error(c, 405, "%s %s: use GET", method, url);
	if (!post)
		return send_error(c, 405, "%s %s: use POST", method, url);
	if (strcmp(action, "snapshot") == 0 || strcmp(action, "restore") == 0)
		return start_op(d, c, vm, action, b);
	return vm_action(d, c, vm, action);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *size, void **con_cls)
{
	struct mabod *d = cls;
	struct body *b = *con_cls;
	(void)version;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return MHD_NO;
		*con_cls = b;
		return MHD_YES;
	}
	if (*size) {
		if (!b->too_big && b->len + *size <= HTTP_BODY_MAX) {
			char *n = realloc(b->buf, b->len + *size);
			if (!n)
				return MHD_NO;
			memcpy(n + b->len, data, *size);
			b->buf = n;
			b->len += *size;
		} else {
			b->too_big = true;
			free(b->buf);
			b->buf = NULL;
			b->len = 0;
		}
		*size = 0;
		return MHD_YES;
	}
	log_debug("%s %s", method, url);
	return route(d, c, url, method, b);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct body *b = *con_cls;
	(void)cls;
	(void)c;
	(void)toe;
	if (b) {
		free(b->buf);
		free(b);
	}
	*con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];
	(void)cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = 0;
	log_warn("http: %s", buf);
}

int http_start(struct mabod *d)
{
	d->http = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME, 0,
				   NULL, NULL, on_request, d, MHD_OPTION_EXTERNAL_LOGGER,
				   on_mhd_log, d, MHD_OPTION_LISTEN_SOCKET, d->listen_fd,
				   MHD_OPTION_NOTIFY_COMPLETED, on_completed, d,
				   MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
	if (!d->http) {
		log_error("http server on '%s/mabod.sock': cannot start", d->run_dir);
		return -EIO;
	}
	return 0;
}

int http_poll_fd(struct mabod *d)
{
	const union MHD_DaemonInfo *i = MHD_get_daemon_info(d->http, MHD_DAEMON_INFO_EPOLL_FD);
	return i ? i->epoll_fd : -1;
}

int64_t http_timeout(struct mabod *d)
{
	MHD_UNSIGNED_LONG_LONG t;
	return MHD_get_timeout(d->http, &t) == MHD_YES ? (int64_t)t : -1;
}

void http_run(struct mabod *d)
{
	MHD_run(d->http);
}

void http_stop(struct mabod *d)
{
	/* No connection may stay suspended when the server stops: the streams end. */
	for (struct sse_client *s = d->sse; s; s = s->next) {
		s->closed = true;
		sse_wake(s);
	}
	if (d->http && d->sse)
		MHD_run(d->http);
	if (d->http)
		MHD_stop_daemon(d->http);
	d->http = NULL;
}
