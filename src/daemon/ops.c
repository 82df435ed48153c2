/* Long operations (ops.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "daemon/ops.h"
#include "daemon/store.h"
#include "daemon/supervise.h"

static struct op *op_new(struct mabod *d, const char *kind, const struct vmrec *vm,
			 const char *path)
{
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	op->id = ++d->op_seq;
	snprintf(op->kind, sizeof(op->kind), "%s", kind);
	snprintf(op->vm, sizeof(op->vm), "%s", vm->name);
	snprintf(op->path, sizeof(op->path), "%s", path);
	op->started_at = wall_ms();
	op->fd = -1;
	op->total = (int64_t)json_integer_value(json_object_get(vm->spec, "memory"));
	/* Newest first; the oldest finished ones beyond OPS_KEEP go. */
	op->next = d->ops;
	d->ops = op;
	int n = 0;
	for (struct op **pp = &d->ops; *pp;) {
		if (++n > OPS_KEEP && (*pp)->state != OP_RUNNING) {
			struct op *old = *pp;
			*pp = old->next;
			free(old);
			continue;
		}
		pp = &(*pp)->next;
	}
	return op;
}

static void op_end(struct mabod *d, struct op *op, bool ok, const char *error)
{
	if (op->fd >= 0)
		close(op->fd);
	op->fd = -1;
	op->state = ok ? OP_SUCCEEDED : OP_FAILED;
	op->finished_at = wall_ms();
	snprintf(op->error, sizeof(op->error), "%s", ok ? "" : error);
	struct vmrec *vm = mabod_find(d, op->vm);
	mabod_event(d, vm, op->kind, "vm '%s': %s %s '%s'%s%s (operation %lld)", op->vm, op->kind,
		    ok ? "done:" : "failed:", op->path, ok ? "" : ": ", ok ? "" : error,
		    (long long)op->id);
}

bool ops_busy(struct mabod *d, const char *vm)
{
	for (struct op *op = d->ops; op; op = op->next)
		if (op->state == OP_RUNNING && strcmp(op->vm, vm) == 0)
			return true;
	return false;
}

/* A path the VMM or the daemon may write or read: absolute, no comma (mabo-vmm's option
 * syntax), not too long. */
static int check_path(const char *path, char *err, size_t len)
{
	if (path[0] != '/' || strchr(path, ',') || strlen(path) >= PATH_MAX - 16) {
		snprintf(err, len, "path '%.200s': must be an absolute path without ','", path);
		return -EINVAL;
	}
	return 0;
}

struct op *ops_snapshot(struct mabod *d, struct vmrec *vm, const char *path, int *status, char *err,
			size_t len)
{
	*status = 400;
	if (check_path(path, err, len) < 0)
		return NULL;
	*status = 409;
	if (sup_watch_fd(vm) < 0 || (vm->state != VM_RUNNING && vm->state != VM_PAUSED)) {
		snprintf(err, len, "vm '%s': cannot snapshot: it is %s", vm->name,
			 vm_state_name(vm->state));
		return NULL;
	}
	if (ops_busy(d, vm->name)) {
		snprintf(err, len, "vm '%s': an operation runs on it already", vm->name);
		return NULL;
	}
	*status = 500;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char sock[PATH_MAX];
	if (sup_path(d, vm, "api.sock", sock, sizeof(sock)) < 0 ||
	    strlen(sock) >= sizeof(sa.sun_path)) {
		snprintf(err, len, "vm '%s': control socket path too long", vm->name);
		return NULL;
	}
	strcpy(sa.sun_path, sock);
	json_t *req = json_pack("{s:s, s:s}", "cmd", "snapshot", "path", path);
	char *line = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { .tv_sec = 1 };
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (!line || fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(fd, line, strlen(line), MSG_NOSIGNAL) != (ssize_t)strlen(line) ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		snprintf(err, len, "vm '%s': control socket: %s", vm->name,
			 line ? strerror(errno) : "out of memory");
		free(line);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	free(line);
	struct op *op = op_new(d, "snapshot", vm, path);
	if (!op) {
		close(fd);
		snprintf(err, len, "out of memory");
		return NULL;
	}
	op->fd = fd;
	op->deadline = now_ms() + OPS_SNAPSHOT_TIMEOUT_MS;
	mabod_event(d, vm, "snapshot", "vm '%s': snapshot to '%s' (operation %lld)", vm->name, path,
		    (long long)op->id);
	return op;
}

struct op *ops_restore(struct mabod *d, struct vmrec *vm, const char *path, int *status, char *err,
		       size_t len)
{
	struct stat st;
	*status = 400;
	if (check_path(path, err, len) < 0)
		return NULL;
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, len, "path '%s': %s", path,
			 errno && stat(path, &st) < 0 ? strerror(errno) : "not a regular file");
		return NULL;
	}
	*status = 409;
	if (sup_watch_fd(vm) >= 0) {
		snprintf(err, len, "vm '%s': cannot restore: it is %s (stop it first)", vm->name,
			 vm_state_name(vm->state));
		return NULL;
	}
	if (ops_busy(d, vm->name)) {
		snprintf(err, len, "vm '%s': an operation runs on it already", vm->name);
		return NULL;
	}
	struct op *op = op_new(d, "restore", vm, path);
	if (!op) {
		*status = 500;
		snprintf(err, len, "out of memory");
		return NULL;
	}
	op->total = 0;
	snprintf(vm->restore_from, sizeof(vm->restore_from), "%s", path);
	vm->restarts = 0;
	vm->backoff_ms = 0;
	int r = sup_start(d, vm, err, len);
	vm->restore_from[0] = 0;
	if (r < 0) {
		snprintf(vm->reason, sizeof(vm->reason), "%s", err);
		op_end(d, op, false, err);
		*status = r == -EBUSY ? 409 : 500;
		return NULL;
	}
	return op;
}

struct op *ops_find(struct mabod *d, int64_t id)
{
	for (struct op *op = d->ops; op; op = op->next)
		if (op->id == id)
			return op;
	return NULL;
}

json_t *ops_json(const struct op *op)
{
	static const char *const states[] = { "running", "succeeded", "failed" };
	int64_t end = op->state == OP_RUNNING ? wall_ms() : op->finished_at;
	int64_t elapsed = end - op->started_at;
	json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:I}", "id", (json_int_t)op->id,
			      "kind", op->kind, "vm", op->vm, "path", op->path, "state",
			      states[op->state], "started_at_ms", (json_int_t)op->started_at,
			      "elapsed_ms", (json_int_t)elapsed);
	if (!o)
		return NULL;
	/* A snapshot's progress: the file's size against the guest's memory (most of a
	 * snapshot), capped below 1 until the VMM answers. */
	double progress = op->state == OP_SUCCEEDED ? 1.0 : 0.0;
	struct stat st;
	if (op->state == OP_RUNNING && op->total > 0 && stat(op->path, &st) == 0) {
		progress = (double)st.st_size / (double)op->total;
		progress = progress > 0.99 ? 0.99 : progress;
		json_object_set_new(o, "bytes", json_integer(st.st_size));
	}
	json_object_set_new(o, "progress",
			    op->state == OP_RUNNING && op->total <= 0 ? json_null()
								      : json_real(progress));
	if (op->state == OP_RUNNING && progress > 0.01)
		json_object_set_new(
			o, "eta_ms",
			json_integer((json_int_t)((double)elapsed * (1 - progress) / progress)));
	if (op->state != OP_RUNNING)
		json_object_set_new(o, "finished_at_ms", json_integer(op->finished_at));
	if (op->state == OP_FAILED)
		json_object_set_new(o, "error", json_string(op->error));
	return o;
}

size_t ops_poll_fds(struct mabod *d, int *fds, size_t max)
{
	size_t n = 0;
	for (struct op *op = d->ops; op && n < max; op = op->next)
		if (op->fd >= 0)
			fds[n++] = op->fd;
	return n;
}

void ops_run(struct mabod *d)
{
	int64_t now = now_ms();
	for (struct op *op = d->ops; op; op = op->next) {
		if (op->fd < 0)
			continue;
		ssize_t r = 1;
		while (op->len < sizeof(op->buf) - 1 &&
		       (r = recv(op->fd, op->buf + op->len, sizeof(op->buf) - 1 - op->len, 0)) > 0)
			op->len += (size_t)r;
		op->buf[op->len] = 0;
		char *nl = strchr(op->buf, '\n');
		if (nl) {
			json_t *v = json_loadb(op->buf, (size_t)(nl - op->buf), 0, NULL);
			const char *e = json_string_value(json_object_get(v, "error"));
			bool ok = json_is_true(json_object_get(v, "ok"));
			char msg[600];
			snprintf(msg, sizeof(msg), "%s", e ? e : "bad answer from the VMM");
			json_decref(v);
			op_end(d, op, ok, msg);
		} else if (op->len == sizeof(op->buf) - 1) {
			op_end(d, op, false, "answer from the VMM too long");
		} else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
			op_end(d, op, false, "the VMM closed its control socket without answering");
		} else if (now >= op->deadline) {
			op_end(d, op, false, "no answer from the VMM in time");
		}
	}
}

void ops_vm_event(struct mabod *d, const char *vm, const char *kind, const char *reason)
{
	for (struct op *op = d->ops; op; op = op->next) {
		if (op->state != OP_RUNNING || strcmp(op->vm, vm) != 0)
			continue;
		if (strcmp(kind, "crash") == 0 || strcmp(kind, "exit") == 0)
			op_end(d, op, false, reason && *reason ? reason : "the VMM ended");
	}
}

int64_t ops_tick(struct mabod *d)
{
	int64_t next = -1;
	for (struct op *op = d->ops; op; op = op->next) {
		if (op->state != OP_RUNNING || strcmp(op->kind, "restore") != 0)
			continue;
		struct vmrec *vm = mabod_find(d, op->vm);
		if (!vm || sup_watch_fd(vm) < 0) {
			op_end(d, op, false, vm && vm->reason[0] ? vm->reason : "the VMM ended");
			continue;
		}
		next = 50;
		if (vm->state == VM_STARTING)
			continue; /* its control socket has not answered yet */
		json_t *info;
		char err[256];
		if (sup_vmm_request(d, vm, "info", &info, err, sizeof(err)) < 0)
			continue;
		const char *s = json_string_value(json_object_get(info, "state"));
		enum vm_state st = s && strcmp(s, "paused") == 0    ? VM_PAUSED
				   : s && strcmp(s, "running") == 0 ? VM_RUNNING
								    : VM_MIGRATING;
		json_decref(info);
		if (st == VM_MIGRATING)
			continue;
		vm->state = st;
		store_update(d, vm);
		op_end(d, op, true, NULL);
	}
	return next;
}

void ops_free_all(struct mabod *d)
{
	for (struct op *op = d->ops, *next; op; op = next) {
		next = op->next;
		if (op->fd >= 0)
			close(op->fd);
		free(op);
	}
	d->ops = NULL;
}
