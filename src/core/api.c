/* The control socket server (see api.h and docs/api.md).
 *
 * Everything runs on the event loop: the listening socket and every client are non-blocking
 * fds with a handler. A client's input is collected until a newline (at most API_MAX_LINE
 * bytes, else it is told so and dropped); each line is one request, answered in order with
 * one line. Responses go to a per-client output buffer written as the socket accepts them;
 * while a client has unread responses, its further requests wait in the kernel (backpressure),
 * and a client whose unread output passes API_MAX_PENDING is dropped. So a slow or hostile
 * client costs bounded memory and never blocks the loop.
 *
 * Migration events: a client that asks for them (migrate or migrate-status with
 * "events":true) gets a {"event":"migration",...} line every API_MIGRATION_EVENT_MS while the
 * migration is active, and a last one with its outcome. One timer serves all of them; it
 * runs only while someone listens (or while accepting is paused for lack of fds). */
#define _GNU_SOURCE /* accept4 */
#include "core/api.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/event.h"
#include "core/json.h"
#include "core/log.h"
#include "core/unix_socket.h"

#define API_ERR_MAX 256
/* Output above this stops reading further requests until the client catches up. */
#define API_READ_PAUSE (64u << 10)
/* api_destroy's wait for clients to read what is left for them. */
#define API_FLUSH_MS 1000

struct api_client {
	struct api *api;
	int fd;
	char *in; /* API_MAX_LINE + 1 bytes: a line and its newline */
	size_t in_len;
	char *out;
	size_t out_len, out_off, out_cap;
	uint32_t events; /* what the loop waits for on fd */
	bool closing;	 /* end of input seen: flush, then close */
	bool rejecting;	 /* a fatal error queued: flush, end output, drain input, close */
	bool shut;	 /* our side of the connection ended (rejecting) */
	size_t drained;	 /* bytes thrown away while rejecting */
	bool dead;	 /* drop at the end of the current callback */
	bool subscribed; /* wants migration events */
	struct api_pending *waiting; /* a request answered later: read no further until then */
	bool resume; /* lines wait in the input buffer since a deferred request ended */
	struct api_client *next;
};

/* A request whose callback finishes later (api_defer). */
struct api_pending {
	struct api *api;
	struct api_client *client; /* NULL once the client is gone */
	char cmd[32];
	struct api_pending *next;
};

struct api {
	struct event_loop *loop;
	const struct api_ops *ops;
	void *opaque;
	int fd;
	char *path;
	dev_t dev;
	ino_t ino;
	struct api_client *clients;
	int nclients;
	struct event_timer *timer;
	bool accept_paused;
	struct api_client *current;    /* whose handler is running (it updates itself at the end) */
	struct api_pending *pending;   /* deferred requests not yet completed */
	struct api_pending *deferring; /* made by api_defer in the running callback */
	bool in_callback;
	struct json_writer w; /* the response being built */
};

static uint64_t api_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *api_migrate_state_name(enum api_migrate_state s)
{
	switch (s) {
	case API_MIGRATE_NONE: return "none";
	case API_MIGRATE_ACTIVE: return "active";
	case API_MIGRATE_COMPLETED: return "completed";
	case API_MIGRATE_FAILED: return "failed";
	case API_MIGRATE_CANCELLED: return "cancelled";
	}
	return "unknown";
}

static void api_tick_arm(struct api *api)
{
	event_timer_arm(api->timer, (api_now_ms() + API_MIGRATION_EVENT_MS) * 1000000ULL);
}

/* Client output. */

static void api_client_free(struct api_client *c)
{
	struct api *api = c->api;
	for (struct api_client **pp = &api->clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	api->nclients--;
	if (c->waiting)
		c->waiting->client = NULL;
	event_loop_remove_fd(api->loop, c->fd);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

/* Writes what the socket takes now; marks the client dead on a write error. */
static void api_client_flush(struct api_client *c)
{
	while (c->out_off < c->out_len && !c->dead) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->dead = true;
			break;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
}

/* Queues one line (a NUL-terminated JSON document; the newline is added). */
static void api_client_send(struct api_client *c, const char *doc)
{
	size_t n = strlen(doc);

	if (c->dead)
		return;
	if (c->out_len - c->out_off + n + 1 > API_MAX_PENDING) {
		log_warn("api: dropping a client that does not read its responses");
		c->dead = true;
		return;
	}
	if (c->out_off && c->out_len + n + 1 > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + n + 1 > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n + 1)
			cap *= 2;
		char *p = realloc(c->out, cap);
		if (!p) {
			c->dead = true;
			return;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, doc, n);
	c->out[c->out_len + n] = '\n';
	c->out_len += n + 1;
	api_client_flush(c);
}

/* After a callback: drops a dead or finished client, else waits for what it needs. */
static void api_client_update(struct api_client *c)
{
	bool pending = c->out_len > c->out_off;

	if (c->dead || (c->closing && !pending && !c->waiting)) {
		api_client_free(c);
		return;
	}
	/* A rejected client's error is out: end our side, and read (and discard) what it
	 * still sends until it closes, since closing with unread input would reset the
	 * connection and could lose the error on its way. */
	if (c->rejecting && !pending && !c->shut) {
		shutdown(c->fd, SHUT_WR);
		c->shut = true;
	}
	uint32_t events = 0;
	if (c->rejecting ? !pending
			 : !c->closing && !c->waiting && c->out_len - c->out_off < API_READ_PAUSE)
		events |= EPOLLIN;
	if (pending)
		events |= EPOLLOUT;
	if (events != c->events) {
		if (event_loop_modify_fd(c->api->loop, c->fd, events) < 0) {
			api_client_free(c);
			return;
		}
		c->events = events;
	}
}

static void api_send_error(struct api *api, struct api_client *c, const char *msg)
{
	struct json_writer *w = &api->w;
	json_writer_reset(w);
	json_begin_object(w);
	json_kv_bool(w, "ok", false);
	json_kv_string(w, "error", msg);
	json_end_object(w);
	if (json_writer_error(w))
		c->dead = true;
	else
		api_client_send(c, json_writer_str(w));
}

/* Requests. */

static void api_write_status(struct json_writer *w, const struct api_migrate_status *st)
{
	json_kv_string(w, "status", api_migrate_state_name(st->state));
	json_kv_uint(w, "pass", st->pass);
	json_kv_bool(w, "postcopy_active", st->postcopy_active);
	json_kv_uint(w, "total_pages", st->total_pages);
	json_kv_uint(w, "remaining_pages", st->remaining_pages);
	json_kv_uint(w, "dirty_rate_pps", st->dirty_rate_pps);
	json_kv_double(w, "bandwidth_mibps", st->bandwidth_mibps);
	json_kv_uint(w, "expected_downtime_ms", st->expected_downtime_ms);
	json_kv_uint(w, "total_ms", st->total_ms);
	json_kv_double(w, "downtime_ms", st->downtime_ms);
	json_kv_uint(w, "bytes", st->bytes);
	json_kv_uint(w, "rounds", st->rounds);
	if (st->error[0] || st->state == API_MIGRATE_FAILED)
		json_kv_string(w, "error", st->error[0] ? st->error : "unknown error");
}

static int api_get_status(struct api *api, struct api_migrate_status *st, char *err, size_t errlen)
{
	memset(st, 0, sizeof(*st));
	if (!api->ops->migrate_status)
		return -ENOTSUP;
	int ret = api->ops->migrate_status(api->opaque, st, err, errlen);
	st->error[sizeof(st->error) - 1] = '\0';
	return ret;
}

/* A request's optional members: checked against what the command takes. */
static int api_get_bool(const struct json_value *req, const char *key, bool *out, char *err,
			size_t errlen)
{
	const struct json_value *v = json_get(req, key);
	if (!v)
		return 0;
	if (v->type != JSON_BOOL) {
		snprintf(err, errlen, "'%s' must be true or false", key);
		return -EINVAL;
	}
	*out = v->boolean;
	return 0;
}

static int api_get_u32(const struct json_value *req, const char *key, uint32_t min, uint32_t max,
		       uint32_t *out, char *err, size_t errlen)
{
	const struct json_value *v = json_get(req, key);
	if (!v)
		return 0;
	if (v->type != JSON_NUMBER || !v->number.is_int || v->number.i < min || v->number.i > max) {
		snprintf(err, errlen, "'%s' must be an integer from %u to %u", key, min, max);
		return -EINVAL;
	}
	*out = (uint32_t)v->number.i;
	return 0;
}

static int api_get_path(const struct json_value *req, const char *key, size_t max, const char **out,
			char *err, size_t errlen)
{
	const struct json_value *v = json_get(req, key);
	if (!v) {
		snprintf(err, errlen, "'%s' is required", key);
		return -EINVAL;
	}
	const char *s = json_get_string(req, key);
	if (!s || !*s || v->string.len >= max) {
		snprintf(err, errlen, "'%s' must be a non-empty string shorter than %zu bytes", key,
			 max);
		return -EINVAL;
	}
	*out = s;
	return 0;
}

/* "tcp:HOST:PORT" (HOST may be [v6]) or "unix:PATH". */
static int api_check_uri(const char *uri, char *err, size_t errlen)
{
	if (strncmp(uri, "unix:", 5) == 0) {
		if (!uri[5] || strlen(uri + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			snprintf(err, errlen,
				 "uri '%s': unix: needs a socket path (at most %zu bytes)", uri,
				 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return -EINVAL;
		}
		/* Relative to the VMM's working directory, which the client does not know. */
		if (uri[5] != '/') {
			snprintf(err, errlen, "uri '%.200s': the socket path is not absolute", uri);
			return -EINVAL;
		}
		return 0;
	}
	if (strncmp(uri, "tcp:", 4) == 0) {
		const char *colon = strrchr(uri + 4, ':');
		char *end;
		if (colon && colon > uri + 4) {
			errno = 0;
			long port = strtol(colon + 1, &end, 10);
			if (!errno && end != colon + 1 && !*end && port >= 1 && port <= 65535 &&
			    colon[1] != '+' && colon[1] != '-')
				return 0;
		}
		snprintf(err, errlen, "uri '%.200s': expected tcp:HOST:PORT (port 1-65535)", uri);
		return -EINVAL;
	}
	snprintf(err, errlen, "uri '%.200s': expected tcp:HOST:PORT or unix:PATH", uri);
	return -EINVAL;
}

typedef int (*api_cmd_fn)(struct api *api, struct api_client *c, const struct json_value *req,
			  char *err, size_t errlen);

#define API_SIMPLE(name, op)                                                                       \
	static int api_cmd_##name(struct api *api, struct api_client *c,                           \
				  const struct json_value *req, char *err, size_t errlen)          \
	{                                                                                          \
		(void)c;                                                                           \
		(void)req;                                                                         \
		if (!api->ops->op)                                                                 \
			return -ENOTSUP;                                                           \
		return api->ops->op(api->opaque, err, errlen);                                     \
	}

API_SIMPLE(pause, pause)
API_SIMPLE(resume, resume)
API_SIMPLE(cancel, migrate_cancel)
API_SIMPLE(postcopy, migrate_postcopy)
API_SIMPLE(quit, quit)
API_SIMPLE(powerdown, powerdown)

static int api_cmd_info(struct api *api, struct api_client *c, const struct json_value *req,
			char *err, size_t errlen)
{
	(void)c;
	(void)req;
	if (!api->ops->info)
		return -ENOTSUP;
	return api->ops->info(api->opaque, &api->w, err, errlen);
}

static int api_cmd_snapshot(struct api *api, struct api_client *c, const struct json_value *req,
			    char *err, size_t errlen)
{
	const char *path;
	(void)c;
	int ret = api_get_path(req, "path", PATH_MAX, &path, err, errlen);
	if (ret)
		return ret;
	/* Relative to the VMM's working directory, which the client does not know. */
	if (path[0] != '/') {
		snprintf(err, errlen, "path '%s' is not absolute", path);
		return -EINVAL;
	}
	if (!api->ops->snapshot)
		return -ENOTSUP;
	return api->ops->snapshot(api->opaque, path, err, errlen);
}

static int api_cmd_migrate(struct api *api, struct api_client *c, const struct json_value *req,
			   char *err, size_t errlen)
{
	struct api_migrate_params p = { .downtime_ms = 300 };
	const char *uri;
	bool events = false;

	int ret = api_get_path(req, "uri", sizeof(p.uri), &uri, err, errlen);
	if (!ret)
		ret = api_check_uri(uri, err, errlen);
	if (!ret)
		ret = api_get_u32(req, "downtime_ms", 1, 60000, &p.downtime_ms, err, errlen);
	if (!ret)
		ret = api_get_u32(req, "bandwidth_mibps", 0, 1000000, &p.bandwidth_mibps, err,
				  errlen);
	if (!ret)
		ret = api_get_bool(req, "postcopy", &p.postcopy, err, errlen);
	if (!ret)
		ret = api_get_bool(req, "compress", &p.compress, err, errlen);
	if (!ret)
		ret = api_get_bool(req, "events", &events, err, errlen);
	if (ret)
		return ret;
	snprintf(p.uri, sizeof(p.uri), "%s", uri);
	if (!api->ops->migrate)
		return -ENOTSUP;
	ret = api->ops->migrate(api->opaque, &p, err, errlen);
	if (!ret && events) {
		c->subscribed = true;
		api_tick_arm(api);
	}
	return ret;
}

static int api_cmd_migrate_status(struct api *api, struct api_client *c,
				  const struct json_value *req, char *err, size_t errlen)
{
	struct api_migrate_status st;
	bool events = false;

	int ret = api_get_bool(req, "events", &events, err, errlen);
	if (ret)
		return ret;
	ret = api_get_status(api, &st, err, errlen);
	if (ret)
		return ret;
	api_write_status(&api->w, &st);
	if (events && st.state == API_MIGRATE_ACTIVE) {
		c->subscribed = true;
		api_tick_arm(api);
	}
	return 0;
}

static const char *const api_no_fields[] = { NULL };
static const char *const api_snapshot_fields[] = { "path", NULL };
static const char *const api_migrate_fields[] = {
	"uri", "downtime_ms", "bandwidth_mibps", "postcopy", "compress", "events", NULL,
};
static const char *const api_status_fields[] = { "events", NULL };

static const struct api_command {
	const char *name;
	api_cmd_fn fn;
	const char *const *fields; /* members the request may have besides "cmd" */
	bool can_defer;		   /* its callback may answer later (api_defer) */
} api_commands[] = {
	{ "info", api_cmd_info, api_no_fields, false },
	{ "pause", api_cmd_pause, api_no_fields, true },
	{ "resume", api_cmd_resume, api_no_fields, true },
	{ "snapshot", api_cmd_snapshot, api_snapshot_fields, true },
	{ "migrate", api_cmd_migrate, api_migrate_fields, false },
	{ "migrate-status", api_cmd_migrate_status, api_status_fields, false },
	{ "cancel", api_cmd_cancel, api_no_fields, true },
	{ "migrate-cancel", api_cmd_cancel, api_no_fields, true },
	{ "postcopy", api_cmd_postcopy, api_no_fields, true },
	{ "migrate-postcopy", api_cmd_postcopy, api_no_fields, true },
	{ "quit", api_cmd_quit, api_no_fields, true },
	{ "powerdown", api_cmd_powerdown, api_no_fields, false },
};

/* Runs one request line and queues its response. */
static void api_handle_line(struct api *api, struct api_client *c, const char *line, size_t len)
{
	static const struct json_limits limits = { .max_depth = 16, .max_bytes = API_MAX_LINE };
	struct json_value *req;
	struct json_error jerr;
	char err[API_ERR_MAX] = "";
	char msg[API_ERR_MAX + 64];

	int ret = json_parse(line, len, &limits, &req, &jerr);
	if (ret) {
		snprintf(msg, sizeof(msg), "bad request: %s at byte %zu", jerr.msg, jerr.pos);
		api_send_error(api, c, msg);
		return;
	}
	const char *cmd = json_get_string(req, "cmd");
	if (req->type != JSON_OBJECT || !cmd) {
		api_send_error(api, c, "bad request: expected an object with a \"cmd\" string");
		goto out;
	}
	const struct api_command *command = NULL;
	for (size_t i = 0; i < sizeof(api_commands) / sizeof(api_commands[0]); i++) {
		if (strcmp(api_commands[i].name, cmd) == 0)
			command = &api_commands[i];
	}
	if (!command) {
		snprintf(msg, sizeof(msg),
			 "unknown command '%.64s' (commands: info, pause, resume, "
			 "snapshot, migrate, migrate-status, cancel, quit)",
			 cmd);
		api_send_error(api, c, msg);
		goto out;
	}
	for (size_t i = 0; i < req->object.n; i++) {
		const char *key = req->object.members[i].key;
		bool known = strcmp(key, "cmd") == 0;
		for (const char *const *f = command->fields; *f && !known; f++)
			known = strcmp(key, *f) == 0;
		if (!known) {
			snprintf(msg, sizeof(msg), "%s: unknown member '%.64s'", cmd, key);
			api_send_error(api, c, msg);
			goto out;
		}
	}

	struct json_writer *w = &api->w;
	json_writer_reset(w);
	json_begin_object(w);
	json_kv_bool(w, "ok", true);
	api->deferring = NULL;
	api->in_callback = true;
	ret = command->fn(api, c, req, err, sizeof(err));
	api->in_callback = false;
	struct api_pending *p = api->deferring;
	api->deferring = NULL;
	if (p && ret == -EINPROGRESS && command->can_defer) {
		/* Answered by api_complete; later requests wait in the buffer. */
		p->client = c;
		snprintf(p->cmd, sizeof(p->cmd), "%s", cmd);
		p->next = api->pending;
		api->pending = p;
		c->waiting = p;
		goto out;
	}
	free(p);
	if (ret == -EINPROGRESS) {
		log_error("api: %s: the callback returned -EINPROGRESS without api_defer", cmd);
		ret = -EIO;
		snprintf(err, sizeof(err), "internal error");
	}
	json_end_object(w);
	if (!ret && json_writer_error(w)) {
		ret = json_writer_error(w) == -ENOMEM ? -ENOMEM : -EIO;
		snprintf(err, sizeof(err), "internal error: the response could not be built");
	}
	if (ret) {
		err[sizeof(err) - 1] = '\0';
		if (!err[0])
			snprintf(err, sizeof(err), "%s",
				 ret == -ENOTSUP ? "not supported yet" : strerror(-ret));
		/* One line: a callback's message must not break the framing (the writer
		 * escapes newlines anyway, but a message is meant to be one line). */
		for (char *p = err; *p; p++) {
			if (*p == '\n' || *p == '\r')
				*p = ' ';
		}
		snprintf(msg, sizeof(msg), "%s: %s", cmd, err);
		api_send_error(api, c, msg);
	} else {
		api_client_send(c, json_writer_str(w));
	}
out:
	json_free(req);
}

/* Takes every complete line out of the input buffer. */
static void api_client_lines(struct api_client *c)
{
	size_t start = 0;

	while (!c->dead && !c->waiting) {
		char *nl = memchr(c->in + start, '\n', c->in_len - start);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (c->in + start));
		if (len && c->in[start + len - 1] == '\r')
			len--;
		/* Blank lines (keep-alives, a trailing newline) are ignored. */
		size_t i = 0;
		while (i < len && (c->in[start + i] == ' ' || c->in[start + i] == '\t'))
			i++;
		if (i < len)
			api_handle_line(c->api, c, c->in + start, len);
		start = (size_t)(nl - c->in) + 1;
	}
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
}

/* Reads and throws away input from a rejected client, up to a bound. */
static void api_client_drain(struct api_client *c)
{
	ssize_t n = recv(c->fd, c->in, API_MAX_LINE + 1, MSG_DONTWAIT);

	if (n == 0)
		c->closing = true;
	else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
		c->dead = true;
	else if (n > 0 && (c->drained += (size_t)n) > 4 * (API_MAX_LINE + 1))
		c->dead = true;
}

static void api_client_read(struct api_client *c)
{
	ssize_t n = recv(c->fd, c->in + c->in_len, API_MAX_LINE + 1 - c->in_len, MSG_DONTWAIT);

	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			c->dead = true;
		return;
	}
	if (n == 0) {
		/* End of input: a last request without its newline still counts. */
		c->closing = true;
		if (c->in_len) {
			c->in[c->in_len++] = '\n';
			api_client_lines(c);
		}
		return;
	}
	c->in_len += (size_t)n;
	api_client_lines(c);
	if (c->in_len > API_MAX_LINE) {
		char msg[96];
		snprintf(msg, sizeof(msg), "bad request: line longer than %d bytes", API_MAX_LINE);
		api_send_error(c->api, c, msg);
		c->rejecting = true;
		c->in_len = 0;
	}
}

static void api_client_event(void *opaque, uint32_t events)
{
	struct api_client *c = opaque;

	c->api->current = c;
	if ((events & EPOLLIN) && c->rejecting)
		api_client_drain(c);
	else if ((events & EPOLLIN) && !c->closing && !c->waiting)
		api_client_read(c);
	if (events & EPOLLOUT)
		api_client_flush(c);
	/* Requests that came in while a deferred one ran. */
	if (c->resume && !c->waiting && !c->dead) {
		c->resume = false;
		api_client_lines(c);
	}
	if (events & EPOLLERR)
		c->dead = true;
	/* Both directions closed: nothing more can be read or sent. */
	if ((events & EPOLLHUP) && !(events & EPOLLIN))
		c->dead = true;
	c->api->current = NULL;
	api_client_update(c);
}

struct api_pending *api_defer(struct api *api)
{
	if (!api->in_callback || api->deferring)
		return NULL;
	api->deferring = calloc(1, sizeof(*api->deferring));
	if (api->deferring)
		api->deferring->api = api;
	return api->deferring;
}

/* Sends a deferred request's response (when its client is still there) and frees p. */
static void api_pending_answer(struct api_pending *p, int ret, const char *msg)
{
	struct api_client *c = p->client;
	struct json_writer w;

	if (p == p->api->deferring) {
		/* Completed inside the very callback that deferred it: that callback's
		 * request gets an internal error rather than a dangling pointer. */
		log_error("api: %s completed before its callback returned", p->cmd);
		p->api->deferring = NULL;
	}
	if (c) {
		/* A writer of its own: this may run inside another request's callback. */
		json_writer_init(&w);
		json_begin_object(&w);
		json_kv_bool(&w, "ok", ret == 0);
		if (ret) {
			char line[API_ERR_MAX + 64];
			snprintf(line, sizeof(line), "%s: %s", p->cmd,
				 msg && *msg ? msg : strerror(ret < 0 ? -ret : ret));
			for (char *q = line; *q; q++) {
				if (*q == '\n' || *q == '\r')
					*q = ' ';
			}
			json_kv_string(&w, "error", line);
		}
		json_end_object(&w);
		c->waiting = NULL;
		if (json_writer_error(&w))
			c->dead = true;
		else
			api_client_send(c, json_writer_str(&w));
		json_writer_free(&w);
		/* Wake the client's handler rather than running its buffered requests (or
		 * dropping it) from here: a writable socket reports EPOLLOUT at once. */
		c->resume = c->in_len > 0;
		if (event_loop_modify_fd(p->api->loop, c->fd, c->events | EPOLLOUT) == 0)
			c->events |= EPOLLOUT;
	}
	for (struct api_pending **pp = &p->api->pending; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	free(p);
}

void api_complete(struct api_pending *p, int ret, const char *msg)
{
	api_pending_answer(p, ret, msg);
}

/* The listening socket. */

static void api_accept_one(struct api *api, int fd)
{
	struct api_client *c = NULL;

	if (api->nclients >= API_MAX_CLIENTS) {
		static const char busy[] = "{\"ok\":false,\"error\":\"too many clients\"}\n";
		ssize_t n = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)n;
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->in = malloc(API_MAX_LINE + 1);
	if (!c || !c->in)
		goto err;
	c->api = api;
	c->fd = fd;
	c->events = EPOLLIN;
	if (event_loop_add_fd(api->loop, fd, EPOLLIN, api_client_event, c) < 0)
		goto err;
	c->next = api->clients;
	api->clients = c;
	api->nclients++;
	return;
err:
	log_warn("api: cannot take a client: out of memory");
	if (c)
		free(c->in);
	free(c);
	close(fd);
}

static void api_listen_event(void *opaque, uint32_t events)
{
	struct api *api = opaque;
	(void)events;

	for (int i = 0; i < API_MAX_CLIENTS; i++) {
		int fd = accept4(api->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			api_accept_one(api, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* Level-triggered: waiting again at once would spin. Try again at the
			 * next tick. */
			log_warn("api '%s': cannot accept a client: %s", api->path,
				 strerror(errno));
			if (event_loop_modify_fd(api->loop, api->fd, 0) == 0) {
				api->accept_paused = true;
				api_tick_arm(api);
			}
		}
		break;
	}
}

/* Migration events. */

/* Sends each subscriber the status; after an outcome, they are unsubscribed. Returns true
 * when someone still listens. */
static bool api_push_status(struct api *api)
{
	struct api_migrate_status st;
	char err[API_ERR_MAX] = "";
	bool any = false;

	for (struct api_client *c = api->clients; c; c = c->next)
		any |= c->subscribed;
	if (!any)
		return false;
	if (api_get_status(api, &st, err, sizeof(err)) < 0) {
		log_debug("api: migration status: %s", err[0] ? err : "failed");
		return true;
	}
	/* A writer of its own: a callback may notify while api->w holds its response. */
	struct json_writer w;
	json_writer_init(&w);
	json_begin_object(&w);
	json_kv_string(&w, "event", "migration");
	api_write_status(&w, &st);
	json_end_object(&w);
	if (json_writer_error(&w)) {
		json_writer_free(&w);
		return true;
	}
	bool over = st.state != API_MIGRATE_ACTIVE;
	any = false;
	for (struct api_client *c = api->clients, *next; c; c = next) {
		next = c->next;
		if (!c->subscribed)
			continue;
		api_client_send(c, json_writer_str(&w));
		if (over)
			c->subscribed = false;
		any |= c->subscribed;
		/* From inside a client's own handler (a callback notifying at once), that
		 * client is updated when its handler ends; freeing it here would pull it
		 * from under the handler. */
		if (c != api->current)
			api_client_update(c);
	}
	json_writer_free(&w);
	return any;
}

void api_migration_notify(struct api *api)
{
	if (api_push_status(api))
		api_tick_arm(api);
}

static void api_tick(void *opaque)
{
	struct api *api = opaque;
	bool again = api_push_status(api);

	if (api->accept_paused) {
		if (event_loop_modify_fd(api->loop, api->fd, EPOLLIN) == 0)
			api->accept_paused = false;
		else
			again = true;
	}
	if (again)
		api_tick_arm(api);
}

/* Setup and teardown. */

/* Creates, binds and listens on path. */
static int api_listen(const char *path, int *out)
{
	char why[160];
	int fd = unix_socket_listen(path, SOCK_NONBLOCK, API_MAX_CLIENTS, why, sizeof(why));

	if (fd < 0) {
		log_error("api socket '%s': %s", path, why);
		return fd;
	}
	*out = fd;
	return 0;
}

int api_create(struct event_loop *loop, const char *path, const struct api_ops *ops, void *opaque,
	       struct api **out)
{
	struct stat st;
	int err;

	struct api *api = calloc(1, sizeof(*api));
	if (!api) {
		log_error("api socket '%s': out of memory", path);
		return -ENOMEM;
	}
	api->loop = loop;
	api->ops = ops;
	api->opaque = opaque;
	api->fd = -1;
	json_writer_init(&api->w);
	api->path = strdup(path);
	if (!api->path) {
		err = -ENOMEM;
		log_error("api socket '%s': out of memory", path);
		goto err_free;
	}
	err = event_timer_create(loop, api_tick, api, &api->timer);
	if (err) {
		log_error("api socket '%s': %s", path, strerror(-err));
		goto err_free;
	}
	err = api_listen(path, &api->fd);
	if (err)
		goto err_timer;
	if (stat(path, &st) == 0) {
		api->dev = st.st_dev;
		api->ino = st.st_ino;
	}
	err = event_loop_add_fd(loop, api->fd, EPOLLIN, api_listen_event, api);
	if (err) {
		log_error("api socket '%s': %s", path, strerror(-err));
		goto err_listen;
	}
	*out = api;
	return 0;

err_listen:
	close(api->fd);
	unlink(path);
err_timer:
	event_timer_destroy(api->timer);
err_free:
	free(api->path);
	free(api);
	return err;
}

void api_broadcast(struct api *api, const char *doc)
{
	if (!api)
		return;
	for (struct api_client *c = api->clients, *next; c; c = next) {
		next = c->next;
		/* A client still being turned away is told nothing more. */
		if (c->rejecting)
			continue;
		api_client_send(c, doc);
		if (c != api->current)
			api_client_update(c);
	}
}

/* Gives each client up to API_FLUSH_MS (in all) to take what is queued for it. */
static void api_flush_all(struct api *api)
{
	uint64_t deadline = api_now_ms() + API_FLUSH_MS;

	for (struct api_client *c = api->clients; c; c = c->next) {
		api_client_flush(c);
		while (!c->dead && c->out_len > c->out_off) {
			uint64_t now = api_now_ms();
			if (now >= deadline)
				return;
			struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
			if (poll(&pfd, 1, (int)(deadline - now)) <= 0 ||
			    (pfd.revents & (POLLERR | POLLHUP)))
				break;
			api_client_flush(c);
		}
	}
}

void api_destroy(struct api *api)
{
	struct stat st;

	if (!api)
		return;
	event_timer_destroy(api->timer);
	api->timer = NULL;
	/* Whoever waits for a migration's outcome hears the last word; requests still
	 * deferred end with an error. */
	api_push_status(api);
	while (api->pending)
		api_pending_answer(api->pending, -ECANCELED, "the VMM is exiting");
	api_flush_all(api);
	while (api->clients)
		api_client_free(api->clients);
	event_loop_remove_fd(api->loop, api->fd);
	close(api->fd);
	/* Remove the socket file only if it is still ours. */
	if (stat(api->path, &st) == 0 && st.st_dev == api->dev && st.st_ino == api->ino)
		unlink(api->path);
	json_writer_free(&api->w);
	free(api->path);
	free(api);
}
