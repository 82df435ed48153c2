/* The control socket server (src/core/api.c) on a real event loop and a real Unix socket in
 * a temporary directory, with a fake table of callbacks: requests and responses, argument
 * checks, garbage, over-long lines, many clients, clients that do not read, migration
 * events, and the socket file's lifecycle. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/api.h"
#include "core/event.h"
#include "core/json.h"

/* vm.c's exit path kicks harts; there are none here. */
struct hart;
void hart_kick(struct hart *h)
{
	(void)h;
}

/* The fake VMM. The loop thread writes these; the test reads them after a response. */
struct fake {
	_Atomic int pauses;
	char snapshot_path[256];
	struct api_migrate_params params;
	_Atomic int migrates;
	_Atomic int status_calls;
	_Atomic int cancels;
	int active_polls; /* migrate_status reports active this many times, then the outcome */
	enum api_migrate_state outcome;
	bool cancelled;
	struct api *api;
	bool notify;		     /* cancel tells the server at once, from inside the callback */
	struct api_pending *pending; /* a snapshot of "/defer" answers later */
};

static int fake_pause(void *opaque, char *err, size_t errlen)
{
	struct fake *f = opaque;
	(void)err;
	(void)errlen;
	atomic_fetch_add(&f->pauses, 1);
	return 0;
}

static int fake_resume(void *opaque, char *err, size_t errlen)
{
	(void)opaque;
	snprintf(err, errlen, "the VM is not paused\nsecond line");
	return -EBUSY;
}

static int fake_info(void *opaque, struct json_writer *w, char *err, size_t errlen)
{
	(void)opaque;
	(void)err;
	(void)errlen;
	json_kv_string(w, "state", "running");
	json_kv_int(w, "cpus", 2);
	return 0;
}

static int fake_snapshot(void *opaque, const char *path, char *err, size_t errlen)
{
	struct fake *f = opaque;
	(void)err;
	(void)errlen;
	snprintf(f->snapshot_path, sizeof(f->snapshot_path), "%s", path);
	if (strcmp(path, "/defer") == 0) {
		f->pending = api_defer(f->api);
		assert_non_null(f->pending);
		assert_null(api_defer(f->api)); /* once per request */
		return -EINPROGRESS;
	}
	return -EIO; /* no message: the server uses strerror */
}

static int fake_migrate(void *opaque, const struct api_migrate_params *p, char *err, size_t errlen)
{
	struct fake *f = opaque;
	(void)err;
	(void)errlen;
	f->params = *p;
	atomic_fetch_add(&f->migrates, 1);
	return 0;
}

static int fake_cancel(void *opaque, char *err, size_t errlen)
{
	struct fake *f = opaque;
	(void)err;
	(void)errlen;
	f->cancelled = true;
	atomic_fetch_add(&f->cancels, 1);
	if (f->notify)
		api_migration_notify(f->api);
	return 0;
}

static int fake_status(void *opaque, struct api_migrate_status *st, char *err, size_t errlen)
{
	struct fake *f = opaque;
	(void)err;
	(void)errlen;
	int n = atomic_fetch_add(&f->status_calls, 1);
	if (!atomic_load(&f->migrates)) {
		st->state = API_MIGRATE_NONE;
		return 0;
	}
	st->total_pages = 1000;
	st->pass = (uint32_t)n + 1;
	st->remaining_pages = 1000 - (uint64_t)n * 10;
	st->bandwidth_mibps = 100.5;
	if (f->cancelled) {
		st->state = API_MIGRATE_CANCELLED;
	} else if (n < f->active_polls) {
		st->state = API_MIGRATE_ACTIVE;
	} else {
		st->state = f->outcome;
		st->total_ms = 1234;
		st->downtime_ms = 7;
		st->bytes = 4096000;
		st->rounds = 3;
		if (f->outcome == API_MIGRATE_FAILED)
			snprintf(st->error, sizeof(st->error), "connection reset by peer");
	}
	return 0;
}

static const struct api_ops fake_ops = {
	.pause = fake_pause,
	.resume = fake_resume,
	.info = fake_info,
	.snapshot = fake_snapshot,
	.migrate = fake_migrate,
	.migrate_cancel = fake_cancel,
	.migrate_status = fake_status,
	/* no quit: "not supported" */
};

struct rig {
	char dir[64];
	char path[128];
	struct event_loop *el;
	struct api *api;
	struct fake fake;
};

static int rig_setup(void **state)
{
	struct rig *r = calloc(1, sizeof(*r));
	snprintf(r->dir, sizeof(r->dir), "/tmp/mabo-api-test.XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	snprintf(r->path, sizeof(r->path), "%s/api.sock", r->dir);
	assert_int_equal(event_loop_create(&r->el), 0);
	assert_int_equal(api_create(r->el, r->path, &fake_ops, &r->fake, &r->api), 0);
	r->fake.api = r->api;
	assert_int_equal(event_loop_start(r->el), 0);
	*state = r;
	return 0;
}

static int rig_teardown(void **state)
{
	struct rig *r = *state;
	event_loop_stop(r->el);
	api_destroy(r->api);
	event_loop_destroy(r->el);
	unlink(r->path);
	rmdir(r->dir);
	free(r);
	return 0;
}

static int client_connect(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	return fd;
}

static void client_send(int fd, const char *s)
{
	size_t n = strlen(s);
	assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads one line (without its newline) into buf within 5 s; returns its length, or -1 at
 * end of stream. */
static ssize_t client_line(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&pfd, 1, 5000), 1);
		ssize_t r = recv(fd, buf + n, 1, 0);
		if (r <= 0)
			return n ? (ssize_t)n : -1;
		if (buf[n] == '\n') {
			buf[n] = '\0';
			return (ssize_t)n;
		}
		n++;
		assert_true(n < cap);
	}
}

/* Sends a request line and checks the response line is exactly want. */
static void expect(int fd, const char *req, const char *want)
{
	char buf[4096];
	client_send(fd, req);
	assert_true(client_line(fd, buf, sizeof(buf)) >= 0);
	if (strcmp(buf, want) != 0)
		print_error("request %s\n   got %s\n  want %s\n", req, buf, want);
	assert_string_equal(buf, want);
}

static void test_requests(void **state)
{
	struct rig *r = *state;
	int fd = client_connect(r->path);

	expect(fd, "{\"cmd\":\"info\"}\n", "{\"ok\":true,\"state\":\"running\",\"cpus\":2}");
	expect(fd, "{\"cmd\":\"pause\"}\n", "{\"ok\":true}");
	assert_int_equal(atomic_load(&r->fake.pauses), 1);
	/* A callback's message, on one line. */
	expect(fd, "{\"cmd\":\"resume\"}\r\n",
	       "{\"ok\":false,\"error\":\"resume: the VM is not paused second line\"}");
	/* No message: strerror. */
	expect(fd, "{\"cmd\":\"snapshot\",\"path\":\"/tmp/x.snap\"}\n",
	       "{\"ok\":false,\"error\":\"snapshot: Input/output error\"}");
	assert_string_equal(r->fake.snapshot_path, "/tmp/x.snap");
	expect(fd, "{\"cmd\":\"quit\"}\n", "{\"ok\":false,\"error\":\"quit: not supported yet\"}");
	expect(fd, "{\"cmd\":\"migrate-status\"}\n",
	       "{\"ok\":true,\"status\":\"none\",\"pass\":0,\"postcopy_active\":false,"
	       "\"total_pages\":0,\"remaining_pages\":0,\"dirty_rate_pps\":0,\"bandwidth_mibps\":0,"
	       "\"expected_downtime_ms\":0,\"total_ms\":0,\"downtime_ms\":0,\"bytes\":0,"
	       "\"rounds\":0}");

	/* Several requests in one write, blank lines between them: answered in order. */
	char buf[4096];
	client_send(fd, "{\"cmd\":\"pause\"}\n\n  \n{\"cmd\":\"info\"}\n{\"cmd\":\"pause\"}\n");
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":true}");
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":true,\"state\":\"running\",\"cpus\":2}");
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":true}");
	assert_int_equal(atomic_load(&r->fake.pauses), 3);

	/* A request split over several writes. */
	client_send(fd, "{\"cmd\":");
	usleep(20000);
	client_send(fd, "\"pau");
	usleep(20000);
	expect(fd, "se\"}\n", "{\"ok\":true}");
	close(fd);
}

static void test_migrate_params(void **state)
{
	struct rig *r = *state;
	int fd = client_connect(r->path);

	expect(fd, "{\"cmd\":\"migrate\",\"uri\":\"tcp:10.0.0.2:4444\"}\n", "{\"ok\":true}");
	assert_string_equal(r->fake.params.uri, "tcp:10.0.0.2:4444");
	assert_int_equal(r->fake.params.downtime_ms, 300);
	assert_int_equal(r->fake.params.bandwidth_mibps, 0);
	assert_false(r->fake.params.postcopy);
	assert_false(r->fake.params.compress);

	expect(fd,
	       "{\"cmd\":\"migrate\",\"uri\":\"unix:/run/m.sock\",\"downtime_ms\":5,"
	       "\"bandwidth_mibps\":100,\"postcopy\":true,\"compress\":true}\n",
	       "{\"ok\":true}");
	assert_string_equal(r->fake.params.uri, "unix:/run/m.sock");
	assert_int_equal(r->fake.params.downtime_ms, 5);
	assert_int_equal(r->fake.params.bandwidth_mibps, 100);
	assert_true(r->fake.params.postcopy);
	assert_true(r->fake.params.compress);
	expect(fd, "{\"cmd\":\"migrate\",\"uri\":\"tcp:[::1]:80\"}\n", "{\"ok\":true}");
	assert_int_equal(atomic_load(&r->fake.migrates), 3);

	static const struct {
		const char *req, *err;
	} bad[] = {
		{ "{\"cmd\":\"migrate\"}", "migrate: 'uri' is required" },
		{ "{\"cmd\":\"migrate\",\"uri\":5}", "migrate: 'uri' must be a non-empty string" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"\"}",
		  "migrate: 'uri' must be a non-empty string" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"ftp:x\"}",
		  "migrate: uri 'ftp:x': expected tcp:HOST:PORT or unix:PATH" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:host\"}", "expected tcp:HOST:PORT" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp::80\"}", "expected tcp:HOST:PORT" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:0\"}", "expected tcp:HOST:PORT" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:65536\"}", "expected tcp:HOST:PORT" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:8x\"}", "expected tcp:HOST:PORT" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"unix:\"}", "unix: needs a socket path" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:1\",\"downtime_ms\":0}",
		  "'downtime_ms' must be an integer from 1 to 60000" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:1\",\"downtime_ms\":1.5}",
		  "'downtime_ms' must be an integer" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:1\",\"downtime_ms\":\"5\"}",
		  "'downtime_ms' must be an integer" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:1\",\"bandwidth_mibps\":-1}",
		  "'bandwidth_mibps' must be an integer from 0 to 1000000" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:1\",\"postcopy\":1}",
		  "'postcopy' must be true or false" },
		{ "{\"cmd\":\"migrate\",\"uri\":\"tcp:h:1\",\"downtime\":5}",
		  "migrate: unknown member 'downtime'" },
		{ "{\"cmd\":\"snapshot\"}", "snapshot: 'path' is required" },
		{ "{\"cmd\":\"snapshot\",\"path\":\"a\\u0000b\"}",
		  "'path' must be a non-empty string" },
		{ "{\"cmd\":\"pause\",\"now\":true}", "pause: unknown member 'now'" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char buf[4096], line[1024];
		snprintf(line, sizeof(line), "%s\n", bad[i].req);
		client_send(fd, line);
		assert_true(client_line(fd, buf, sizeof(buf)) > 0);
		if (!strstr(buf, bad[i].err) || strncmp(buf, "{\"ok\":false,\"error\":\"", 21))
			print_error("%s\n  got %s\n", bad[i].req, buf);
		assert_non_null(strstr(buf, bad[i].err));
		assert_int_equal(strncmp(buf, "{\"ok\":false,\"error\":\"", 21), 0);
	}
	assert_int_equal(atomic_load(&r->fake.migrates), 3);
	close(fd);
}

static void test_garbage(void **state)
{
	struct rig *r = *state;
	int fd = client_connect(r->path);
	char buf[4096];

	expect(fd, "hello\n",
	       "{\"ok\":false,\"error\":\"bad request: unexpected character 'h' at byte 0\"}");
	expect(fd, "{\"cmd\":\"info\"\n",
	       "{\"ok\":false,\"error\":\"bad request: unterminated object at byte 13\"}");
	expect(fd, "[1,2]\n",
	       "{\"ok\":false,\"error\":\"bad request: expected an object with a \\\"cmd\\\" "
	       "string\"}");
	expect(fd, "{\"cmd\":42}\n",
	       "{\"ok\":false,\"error\":\"bad request: expected an object with a \\\"cmd\\\" "
	       "string\"}");
	expect(fd, "{\"cmd\":\"info\",\"cmd\":\"pause\"}\n",
	       "{\"ok\":false,\"error\":\"bad request: duplicate key 'cmd' at byte 0\"}");
	client_send(fd, "{\"cmd\":\"reboot\"}\n");
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "unknown command 'reboot'"));
	/* Binary junk, NUL bytes, deep nesting: each line answered, the client kept. */
	static const char junk[] = "\x00\xff\xfe{\"\x01\n";
	assert_int_equal(send(fd, junk, sizeof(junk) - 1, 0), (ssize_t)sizeof(junk) - 1);
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "\"ok\":false"));
	char deep[300];
	memset(deep, '[', 200);
	deep[200] = '\n';
	deep[201] = '\0';
	client_send(fd, deep);
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "nested deeper than 16"));
	expect(fd, "{\"cmd\":\"pause\"}\n", "{\"ok\":true}");

	/* A last request without its newline is answered at end of input. */
	client_send(fd, "{\"cmd\":\"pause\"}");
	shutdown(fd, SHUT_WR);
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":true}");
	assert_int_equal(client_line(fd, buf, sizeof(buf)), -1);
	close(fd);
}

static void test_long_line(void **state)
{
	struct rig *r = *state;
	int fd = client_connect(r->path);
	size_t n = API_MAX_LINE + 100;
	char *big = malloc(n + 1);
	char buf[4096];

	/* The longest line accepted: a request padded with spaces. */
	memset(big, ' ', API_MAX_LINE);
	memcpy(big, "{\"cmd\":\"pause\"}", 15);
	big[API_MAX_LINE] = '\n';
	assert_int_equal(send(fd, big, API_MAX_LINE + 1, 0), API_MAX_LINE + 1);
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":true}");

	/* One byte more: an error, then the server hangs up. */
	memset(big, 'x', n);
	assert_int_equal(send(fd, big, n, MSG_NOSIGNAL), (ssize_t)n);
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(
		buf, "{\"ok\":false,\"error\":\"bad request: line longer than 65536 bytes\"}");
	assert_int_equal(client_line(fd, buf, sizeof(buf)), -1);
	close(fd);
	free(big);

	/* The server still serves others. */
	fd = client_connect(r->path);
	expect(fd, "{\"cmd\":\"pause\"}\n", "{\"ok\":true}");
	close(fd);
}

static void test_many_clients(void **state)
{
	struct rig *r = *state;
	int fds[API_MAX_CLIENTS];
	char buf[4096];

	for (int i = 0; i < API_MAX_CLIENTS; i++)
		fds[i] = client_connect(r->path);
	/* Interleaved requests, each answered on its own connection. */
	for (int i = 0; i < API_MAX_CLIENTS; i++)
		client_send(fds[i], "{\"cmd\":\"pause\"}\n");
	for (int i = API_MAX_CLIENTS - 1; i >= 0; i--) {
		assert_true(client_line(fds[i], buf, sizeof(buf)) > 0);
		assert_string_equal(buf, "{\"ok\":true}");
	}
	/* One too many: told so and closed. */
	int extra = client_connect(r->path);
	assert_true(client_line(extra, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":false,\"error\":\"too many clients\"}");
	assert_int_equal(client_line(extra, buf, sizeof(buf)), -1);
	close(extra);
	/* A slot freed is a slot taken. */
	close(fds[0]);
	usleep(50000);
	fds[0] = client_connect(r->path);
	expect(fds[0], "{\"cmd\":\"info\"}\n", "{\"ok\":true,\"state\":\"running\",\"cpus\":2}");
	for (int i = 0; i < API_MAX_CLIENTS; i++)
		close(fds[i]);
}

/* A client that sends and never reads: the loop keeps serving others, and the server stops
 * reading from it (its socket fills) rather than buffering without bound. */
static void test_client_not_reading(void **state)
{
	struct rig *r = *state;
	int hog = client_connect(r->path);
	static const char req[] = "{\"cmd\":\"info\"}\n";
	size_t sent = 0;

	fcntl(hog, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 1000000; i++) {
		ssize_t n = send(hog, req, sizeof(req) - 1, MSG_NOSIGNAL);
		if (n < 0) {
			assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
			/* Give the server a moment; if its side is full too, it has stopped. */
			usleep(20000);
			n = send(hog, req, sizeof(req) - 1, MSG_NOSIGNAL);
			if (n < 0)
				break;
		}
		sent += (size_t)n;
	}
	assert_true(sent < 64u << 20);
	int fd = client_connect(r->path);
	expect(fd, "{\"cmd\":\"pause\"}\n", "{\"ok\":true}");
	close(fd);
	close(hog);
}

static void test_migration_events(void **state)
{
	struct rig *r = *state;
	int fd = client_connect(r->path);
	int watcher = client_connect(r->path);
	char buf[4096];

	r->fake.active_polls = 5;
	r->fake.outcome = API_MIGRATE_COMPLETED;
	expect(fd, "{\"cmd\":\"migrate\",\"uri\":\"tcp:127.0.0.1:4444\",\"events\":true}\n",
	       "{\"ok\":true}");
	/* A second client watches the same migration. */
	client_send(watcher, "{\"cmd\":\"migrate-status\",\"events\":true}\n");
	assert_true(client_line(watcher, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "{\"ok\":true,\"status\":\"active\",\"pass\":"));

	int active = 0;
	for (;;) {
		assert_true(client_line(fd, buf, sizeof(buf)) > 0);
		struct json_value *v;
		assert_int_equal(json_parse(buf, strlen(buf), NULL, &v, NULL), 0);
		assert_string_equal(json_get_string(v, "event"), "migration");
		const char *status = json_get_string(v, "status");
		assert_non_null(status);
		if (strcmp(status, "active") == 0) {
			active++;
			assert_true(json_get(v, "remaining_pages")->number.i > 0);
			assert_true(json_get(v, "bandwidth_mibps")->number.d == 100.5);
			json_free(v);
			continue;
		}
		assert_string_equal(status, "completed");
		assert_true(json_get(v, "total_ms")->number.i == 1234);
		assert_true(json_get(v, "downtime_ms")->number.i == 7);
		assert_true(json_get(v, "bytes")->number.i == 4096000);
		assert_true(json_get(v, "rounds")->number.i == 3);
		assert_null(json_get(v, "error"));
		json_free(v);
		break;
	}
	assert_true(active >= 1);
	/* The watcher heard the outcome too. */
	for (;;) {
		assert_true(client_line(watcher, buf, sizeof(buf)) > 0);
		if (strstr(buf, "\"status\":\"completed\""))
			break;
		assert_non_null(strstr(buf, "\"status\":\"active\""));
	}
	/* After the outcome, no more events: the next line answers the next request. */
	usleep(250000);
	expect(fd, "{\"cmd\":\"pause\"}\n", "{\"ok\":true}");
	close(fd);
	close(watcher);
}

static void test_migration_failed_and_cancel(void **state)
{
	struct rig *r = *state;
	int fd = client_connect(r->path);
	char buf[4096];

	r->fake.active_polls = 1000;
	expect(fd, "{\"cmd\":\"migrate\",\"uri\":\"unix:/x\",\"events\":true}\n", "{\"ok\":true}");
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "\"event\":\"migration\",\"status\":\"active\""));
	/* cancel on the same connection: its answer comes among the events. */
	client_send(fd, "{\"cmd\":\"cancel\"}\n");
	bool answered = false;
	for (;;) {
		assert_true(client_line(fd, buf, sizeof(buf)) > 0);
		if (strcmp(buf, "{\"ok\":true}") == 0) {
			answered = true;
			continue;
		}
		if (strstr(buf, "\"status\":\"cancelled\""))
			break;
		assert_non_null(strstr(buf, "\"status\":\"active\""));
	}
	assert_true(answered);
	assert_int_equal(atomic_load(&r->fake.cancels), 1);
	close(fd);

	/* The callback notifies at once, while the server builds cancel's response: the
	 * outcome comes first, then the intact response. */
	r->fake.cancelled = false;
	r->fake.notify = true;
	fd = client_connect(r->path);
	expect(fd, "{\"cmd\":\"migrate\",\"uri\":\"unix:/x\",\"events\":true}\n", "{\"ok\":true}");
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "\"status\":\"active\""));
	client_send(fd, "{\"cmd\":\"cancel\"}\n");
	for (;;) {
		assert_true(client_line(fd, buf, sizeof(buf)) > 0);
		if (strstr(buf, "\"status\":\"cancelled\""))
			break;
		assert_non_null(strstr(buf, "\"status\":\"active\""));
	}
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":true}");
	r->fake.notify = false;
	close(fd);

	/* A failure carries its error. */
	r->fake.cancelled = false;
	atomic_store(&r->fake.status_calls, 0);
	r->fake.active_polls = 1;
	r->fake.outcome = API_MIGRATE_FAILED;
	fd = client_connect(r->path);
	expect(fd, "{\"cmd\":\"migrate\",\"uri\":\"unix:/x\",\"events\":true}\n", "{\"ok\":true}");
	for (;;) {
		assert_true(client_line(fd, buf, sizeof(buf)) > 0);
		if (strstr(buf, "\"status\":\"failed\""))
			break;
	}
	assert_non_null(strstr(buf, "\"error\":\"connection reset by peer\""));
	close(fd);
}

static int complete_ret;

static void complete_on_loop(void *opaque)
{
	struct fake *f = opaque;
	api_complete(f->pending, complete_ret, complete_ret ? "disk full" : NULL);
	f->pending = NULL;
}

/* A callback that answers later: the client's next requests wait, others are served. */
static void test_deferred(void **state)
{
	struct rig *r = *state;
	int fd = client_connect(r->path);
	int other = client_connect(r->path);
	char buf[4096];

	/* Outside a callback there is nothing to defer. */
	assert_null(api_defer(r->api));
	client_send(fd, "{\"cmd\":\"snapshot\",\"path\":\"/defer\"}\n{\"cmd\":\"pause\"}\n");
	usleep(100000);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 100), 0);
	assert_int_equal(atomic_load(&r->fake.pauses), 0);
	expect(other, "{\"cmd\":\"info\"}\n", "{\"ok\":true,\"state\":\"running\",\"cpus\":2}");
	complete_ret = 0;
	assert_int_equal(event_loop_run(r->el, complete_on_loop, &r->fake), 0);
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":true}");
	/* The request that waited runs now. */
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":true}");
	assert_int_equal(atomic_load(&r->fake.pauses), 1);

	/* A failure, with the callback's message. */
	client_send(fd, "{\"cmd\":\"snapshot\",\"path\":\"/defer\"}\n");
	usleep(50000);
	complete_ret = -ENOSPC;
	assert_int_equal(event_loop_run(r->el, complete_on_loop, &r->fake), 0);
	assert_true(client_line(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":false,\"error\":\"snapshot: disk full\"}");
	expect(fd, "{\"cmd\":\"pause\"}\n", "{\"ok\":true}");

	/* The client leaves before the answer: completing is still fine. */
	client_send(fd, "{\"cmd\":\"snapshot\",\"path\":\"/defer\"}\n");
	usleep(50000);
	close(fd);
	usleep(50000);
	complete_ret = 0;
	assert_int_equal(event_loop_run(r->el, complete_on_loop, &r->fake), 0);
	expect(other, "{\"cmd\":\"pause\"}\n", "{\"ok\":true}");

	/* Still pending at teardown: answered with an error. */
	client_send(other, "{\"cmd\":\"snapshot\",\"path\":\"/defer\"}\n");
	usleep(50000);
	event_loop_stop(r->el);
	api_destroy(r->api);
	r->api = NULL;
	assert_true(client_line(other, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"ok\":false,\"error\":\"snapshot: the VMM is exiting\"}");
	close(other);
}

/* At teardown, a client waiting for a migration gets its last event before the socket
 * closes (the source VMM exits right after a migration completes). */
static void test_destroy_sends_outcome(void **state)
{
	struct rig *r = *state;
	int fd = client_connect(r->path);
	char buf[4096];

	r->fake.active_polls = 1000000;
	expect(fd, "{\"cmd\":\"migrate\",\"uri\":\"unix:/x\",\"events\":true}\n", "{\"ok\":true}");
	event_loop_stop(r->el);
	r->fake.active_polls = 0;
	r->fake.outcome = API_MIGRATE_COMPLETED;
	api_destroy(r->api);
	r->api = NULL;
	for (;;) {
		ssize_t n = client_line(fd, buf, sizeof(buf));
		assert_true(n > 0);
		if (strstr(buf, "\"status\":\"completed\""))
			break;
	}
	assert_int_equal(client_line(fd, buf, sizeof(buf)), -1);
	close(fd);
	/* The socket file is gone. */
	struct stat st;
	assert_int_equal(stat(r->path, &st), -1);
}

/* The socket file: 0600; a live server's path refused; a stale one replaced; another kind
 * of file left alone. */
static void test_socket_file(void **state)
{
	(void)state;
	char dir[64], path[96];
	struct event_loop *el;
	struct api *a, *b;
	struct stat st;
	struct fake f = { 0 };

	snprintf(dir, sizeof(dir), "/tmp/mabo-api-test.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/s", dir);
	assert_int_equal(event_loop_create(&el), 0);

	assert_int_equal(api_create(el, path, &fake_ops, &f, &a), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(api_create(el, path, &fake_ops, &f, &b), -EADDRINUSE);
	api_destroy(a);
	assert_int_equal(stat(path, &st), -1);

	/* A socket file whose server is gone. */
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(s, (struct sockaddr *)&addr, sizeof(addr)), 0);
	close(s);
	assert_int_equal(api_create(el, path, &fake_ops, &f, &a), 0);
	api_destroy(a);

	/* A regular file: refused and kept. */
	int fd = open(path, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(api_create(el, path, &fake_ops, &f, &a), -EEXIST);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	unlink(path);

	/* A path too long for a socket address. */
	char longpath[200];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(api_create(el, longpath, &fake_ops, &f, &a), -ENAMETOOLONG);
	/* A directory that does not exist. */
	assert_int_equal(api_create(el, "/nonexistent-dir/s", &fake_ops, &f, &a), -ENOENT);

	/* A server that is destroyed does not remove a socket file that is no longer its. */
	assert_int_equal(api_create(el, path, &fake_ops, &f, &a), 0);
	unlink(path);
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(s, (struct sockaddr *)&addr, sizeof(addr)), 0);
	api_destroy(a);
	assert_int_equal(stat(path, &st), 0);
	close(s);
	unlink(path);

	event_loop_destroy(el);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_requests, rig_setup, rig_teardown),
		cmocka_unit_test_setup_teardown(test_migrate_params, rig_setup, rig_teardown),
		cmocka_unit_test_setup_teardown(test_garbage, rig_setup, rig_teardown),
		cmocka_unit_test_setup_teardown(test_long_line, rig_setup, rig_teardown),
		cmocka_unit_test_setup_teardown(test_many_clients, rig_setup, rig_teardown),
		cmocka_unit_test_setup_teardown(test_client_not_reading, rig_setup, rig_teardown),
		cmocka_unit_test_setup_teardown(test_migration_events, rig_setup, rig_teardown),
		cmocka_unit_test_setup_teardown(test_migration_failed_and_cancel, rig_setup,
						rig_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_sends_outcome, rig_setup,
						rig_teardown),
		cmocka_unit_test_setup_teardown(test_deferred, rig_setup, rig_teardown),
		cmocka_unit_test(test_socket_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
