/* The NBD block backend against a real nbdkit (file plugin) on a Unix socket, started by
 * the test, with the event loop and the backend's I/O thread real: write / flush / read
 * round trips checked against the server's file, requests larger than the server's
 * maximum block size (which the server refuses whole) split, write-zeroes and discard
 * (and write-zeroes written as zeros where the server has no WRITE_ZEROES), read-only
 * exports, open errors (a server that accepts and never answers included), requests in
 * flight and new ones waiting while the server is killed and restarted on the same file,
 * -EIO once it stays away past the reconnect timeout (and a later request reconnecting),
 * and closing while disconnected not hanging.
 *
 * nbdkit is a test dependency (scripts/install-deps.sh): without it the test fails. */
#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "block/block.h"
#include "core/event.h"

#define IMG_SIZE (64u << 20)
#define MAX_BLOCK (64u << 10) /* what the split test's server accepts per request */

static char dir[40], sock_path[64], img_path[64], pid_path[64], uri[128];
static pid_t server = -1;
static struct event_loop *loop;

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static unsigned ndone;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_done(struct block_request *req)
{
	(void)req;
	pthread_mutex_lock(&done_lock);
	ndone++;
	pthread_cond_broadcast(&done_cond);
	pthread_mutex_unlock(&done_lock);
}

static unsigned done_count(void)
{
	pthread_mutex_lock(&done_lock);
	unsigned n = ndone;
	pthread_mutex_unlock(&done_lock);
	return n;
}

/* Waits until n requests have completed in all; false after ms. */
static bool wait_done(unsigned n, unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&done_lock);
	int r = 0;
	while (ndone < n && r == 0)
		r = pthread_cond_timedwait(&done_cond, &done_lock, &ts);
	bool ok = ndone >= n;
	pthread_mutex_unlock(&done_lock);
	return ok;
}

/* Starts nbdkit serving img_path on sock_path; args are extra arguments before the plugin
 * (filters) and after "file FILE" (their parameters), NULL-terminated in two lists. */
static void server_start(const char *const *pre, const char *const *post)
{
	const char *argv[32];
	int n = 0;

	argv[n++] = "nbdkit";
	argv[n++] = "-f";
	argv[n++] = "--exit-with-parent";
	argv[n++] = "-P"; /* written once it accepts connections */
	argv[n++] = pid_path;
	argv[n++] = "-U";
	argv[n++] = sock_path;
	for (; pre && *pre; pre++)
		argv[n++] = *pre;
	argv[n++] = "file";
	argv[n++] = img_path;
	for (; post && *post; post++)
		argv[n++] = *post;
	argv[n] = NULL;

	unlink(sock_path);
	unlink(pid_path);
	server = fork();
	assert_true(server >= 0);
	if (server == 0) {
		execvp("nbdkit", (char *const *)argv);
		fprintf(stderr,
			"test_nbd: cannot run nbdkit: %s (scripts/install-deps.sh "
			"installs it)\n",
			strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 3000; i++) {
		int status;
		assert_int_equal(waitpid(server, &status, WNOHANG), 0); /* nbdkit still runs */
		if (access(pid_path, F_OK) == 0)
			return;
		usleep(10000);
	}
	fail_msg("nbdkit did not start listening on %s", sock_path);
}

static void server_kill(void)
{
	if (server <= 0)
		return;
	kill(server, SIGKILL);
	waitpid(server, NULL, 0);
	server = -1;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/mabo-test-nbd-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(sock_path, sizeof(sock_path), "%s/sock", dir);
	snprintf(img_path, sizeof(img_path), "%s/disk.img", dir);
	snprintf(pid_path, sizeof(pid_path), "%s/pid", dir);
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", sock_path);
	int fd = open(img_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, IMG_SIZE), 0);
	close(fd);
	ndone = 0;
	assert_int_equal(event_loop_create(&loop), 0);
	assert_int_equal(event_loop_start(loop), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	server_kill();
	event_loop_destroy(loop);
	unlink(sock_path);
	unlink(img_path);
	unlink(pid_path);
	rmdir(dir);
	return 0;
}

static struct block_backend *open_disk(bool readonly, unsigned timeout)
{
	struct block_options opts = { .readonly = readonly, .reconnect_timeout = timeout };
	struct block_backend *bb = NULL;
	assert_int_equal(block_backend_open_opts(uri, &opts, loop, &bb), 0);
	assert_non_null(bb);
	return bb;
}

static void submit(struct block_backend *bb, struct block_request *req, enum block_op op,
		   uint64_t off, uint64_t len, void *buf)
{
	memset(req, 0, sizeof(*req));
	req->op = op;
	req->offset = off;
	req->len = len;
	req->buf = buf;
	req->done = on_done;
	assert_int_equal(block_backend_submit(bb, req), 0);
}

/* One request, waited for; its result. */
static int io(struct block_backend *bb, enum block_op op, uint64_t off, uint64_t len, void *buf,
	      bool unmap)
{
	struct block_request req;
	unsigned target = done_count() + 1;
	memset(&req, 0, sizeof(req));
	req.op = op;
	req.offset = off;
	req.len = len;
	req.buf = buf;
	req.unmap = unmap;
	req.done = on_done;
	assert_int_equal(block_backend_submit(bb, &req), 0);
	assert_true(wait_done(target, 60000));
	return req.result;
}

static void fill(uint8_t *p, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (uint8_t)(x >> 16);
	}
}

/* The server's file holds buf at off. */
static void assert_file(uint64_t off, const void *buf, size_t len)
{
	uint8_t *got = malloc(len);
	int fd = open(img_path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, got, len, (off_t)off), (ssize_t)len);
	close(fd);
	assert_memory_equal(got, buf, len);
	free(got);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static void test_round_trip(void **state)
{
	(void)state;
	enum { N = 32, LEN = 256 << 10 };
	static struct block_request reqs[N];
	uint8_t *data = malloc((size_t)N * LEN), *back = calloc(N, LEN);

	server_start(NULL, NULL);
	struct block_backend *bb = open_disk(false, 30);
	assert_int_equal(bb->size, IMG_SIZE);
	assert_false(bb->readonly);

	/* Many writes in flight at once, scattered over the disk. */
	fill(data, (size_t)N * LEN, 1);
	for (unsigned i = 0; i < N; i++)
		submit(bb, &reqs[i], BLOCK_OP_WRITE, (uint64_t)i * (IMG_SIZE / N), LEN,
		       data + (size_t)i * LEN);
	assert_true(wait_done(N, 60000));
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(reqs[i].result, 0);
	assert_int_equal(io(bb, BLOCK_OP_FLUSH, 0, 0, NULL, false), 0);
	for (unsigned i = 0; i < N; i++)
		submit(bb, &reqs[i], BLOCK_OP_READ, (uint64_t)i * (IMG_SIZE / N), LEN,
		       back + (size_t)i * LEN);
	assert_true(wait_done(2 * N + 1, 60000));
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(reqs[i].result, 0);
		assert_file((uint64_t)i * (IMG_SIZE / N), data + (size_t)i * LEN, LEN);
	}
	assert_memory_equal(back, data, (size_t)N * LEN);
	/* The last sector of the disk. */
	assert_int_equal(io(bb, BLOCK_OP_WRITE, IMG_SIZE - 512, 512, data, false), 0);
	assert_int_equal(io(bb, BLOCK_OP_READ, IMG_SIZE - 512, 512, back, false), 0);
	assert_memory_equal(back, data, 512);
	/* Beyond the end: refused before the server. */
	struct block_request r = {
		.op = BLOCK_OP_READ, .offset = IMG_SIZE, .len = 512, .buf = back, .done = on_done
	};
	assert_int_equal(block_backend_submit(bb, &r), -EINVAL);
	block_backend_close(bb);
	free(data);
	free(back);
}

static void test_split(void **state)
{
	(void)state;
	static const char *const pre[] = { "--filter=blocksize-policy", NULL };
	static const char *const post[] = { "blocksize-maximum=64K", "blocksize-error-policy=error",
					    NULL };
	enum { LEN = 4 << 20 };
	uint8_t *data = malloc(LEN), *back = calloc(1, LEN);

	server_start(pre, post);
	/* The server refuses a read above its maximum: requests must be split. */
	struct nbd_handle *h = nbd_create();
	assert_non_null(h);
	assert_int_equal(nbd_connect_uri(h, uri), 0);
	assert_int_equal(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM), MAX_BLOCK);
	assert_int_equal(nbd_pread(h, back, 2 * MAX_BLOCK, 0, 0), -1);
	nbd_close(h);

	struct block_backend *bb = open_disk(false, 30);
	fill(data, LEN, 2);
	/* One request of 64 server blocks each way, unaligned to the block size. */
	assert_int_equal(io(bb, BLOCK_OP_WRITE, 3 * 512, LEN, data, false), 0);
	assert_int_equal(io(bb, BLOCK_OP_FLUSH, 0, 0, NULL, false), 0);
	assert_int_equal(io(bb, BLOCK_OP_READ, 3 * 512, LEN, back, false), 0);
	assert_memory_equal(back, data, LEN);
	assert_file(3 * 512, data, LEN);
	/* Write-zeroes beyond the maximum too. */
	assert_int_equal(io(bb, BLOCK_OP_WRITE_ZEROES, 3 * 512, 1 << 20, NULL, false), 0);
	assert_int_equal(io(bb, BLOCK_OP_READ, 3 * 512, LEN, back, false), 0);
	assert_true(all_zero(back, 1 << 20));
	assert_memory_equal(back + (1 << 20), data + (1 << 20), LEN - (1 << 20));
	block_backend_close(bb);
	free(data);
	free(back);
}

static void test_zero_discard(void **state)
{
	(void)state;
	enum { LEN = 1 << 20, Q = LEN / 4 };
	uint8_t *data = malloc(LEN), *back = malloc(LEN);

	server_start(NULL, NULL);
	struct block_backend *bb = open_disk(false, 30);
	fill(data, LEN, 3);
	assert_int_equal(io(bb, BLOCK_OP_WRITE, 0, LEN, data, false), 0);
	assert_int_equal(io(bb, BLOCK_OP_WRITE_ZEROES, 0, Q, NULL, false), 0);
	assert_int_equal(io(bb, BLOCK_OP_WRITE_ZEROES, Q, Q, NULL, true), 0);
	assert_int_equal(io(bb, BLOCK_OP_DISCARD, 2 * Q, Q, NULL, false), 0);
	assert_int_equal(io(bb, BLOCK_OP_FLUSH, 0, 0, NULL, false), 0);
	memset(back, 0xaa, LEN);
	assert_int_equal(io(bb, BLOCK_OP_READ, 0, LEN, back, false), 0);
	assert_true(all_zero(back, 2 * Q));
	/* After a discard the contents are the server's choice; the rest is untouched. */
	assert_memory_equal(back + 3 * Q, data + 3 * Q, Q);
	assert_file(0, back, 2 * Q);
	assert_file(3 * Q, data + 3 * Q, Q);
	block_backend_close(bb);
	free(data);
	free(back);
}

/* A server without WRITE_ZEROES: the backend writes zeros itself, in pieces. */
static void test_zero_emulated(void **state)
{
	(void)state;
	static const char *const pre[] = { "--filter=nozero", NULL };
	enum { LEN = 3 << 20 };
	uint8_t *data = malloc(LEN), *back = malloc(LEN);

	server_start(pre, NULL);
	struct block_backend *bb = open_disk(false, 30);
	fill(data, LEN, 6);
	assert_int_equal(io(bb, BLOCK_OP_WRITE, 0, LEN, data, false), 0);
	assert_int_equal(io(bb, BLOCK_OP_WRITE_ZEROES, 512, LEN - 1024, NULL, true), 0);
	assert_int_equal(io(bb, BLOCK_OP_READ, 0, LEN, back, false), 0);
	assert_memory_equal(back, data, 512);
	assert_true(all_zero(back + 512, LEN - 1024));
	assert_memory_equal(back + LEN - 512, data + LEN - 512, 512);
	assert_file(0, back, LEN);
	block_backend_close(bb);
	free(data);
	free(back);
}

static void test_read_only(void **state)
{
	(void)state;
	static const char *const pre[] = { "-r", NULL };
	uint8_t buf[512];

	server_start(pre, NULL);
	struct block_backend *bb = open_disk(false, 30);
	assert_true(bb->readonly); /* the server said so */
	struct block_request r = { .op = BLOCK_OP_WRITE, .len = 512, .buf = buf, .done = on_done };
	assert_int_equal(block_backend_submit(bb, &r), -EROFS);
	assert_int_equal(io(bb, BLOCK_OP_READ, 0, 512, buf, false), 0);
	block_backend_close(bb);
	server_kill();

	server_start(NULL, NULL);
	bb = open_disk(true, 30); /* readonly=on */
	assert_true(bb->readonly);
	assert_int_equal(block_backend_submit(bb, &r), -EROFS);
	block_backend_close(bb);
}

static void test_open_errors(void **state)
{
	(void)state;
	struct block_options opts = { .reconnect_timeout = 1 };
	struct block_backend *bb = NULL;

	/* Nobody listens. */
	assert_true(block_backend_open_opts(uri, &opts, loop, &bb) < 0);
	assert_null(bb);
	assert_true(block_backend_open_opts("nbd://[nowhere", &opts, loop, &bb) < 0);
	assert_true(block_backend_open_opts("nbd+unix:///x", &opts, loop, &bb) < 0);
	assert_true(block_backend_open_opts("nbdx://host/x", &opts, loop, &bb) < 0);
	assert_null(bb);

	/* A server that accepts the connection and never answers: open gives up after its
	 * timeout (5 s at least) rather than hanging. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	uint64_t t0 = now_ms();
	assert_int_equal(block_backend_open_opts(uri, &opts, loop, &bb), -ETIMEDOUT);
	uint64_t took = now_ms() - t0;
	assert_true(took >= 4000 && took < 15000);
	assert_null(bb);
	close(fd);
}

/* Writes in flight when the server dies (nbdkit's delay filter holds them) and a read
 * submitted while it is away wait; after the restart on the same file they all complete,
 * and the data is there. */
static void test_reconnect(void **state)
{
	(void)state;
	enum { N = 8, LEN = 64 << 10 };
	static const char *const pre[] = { "--filter=delay", NULL };
	static const char *const post[] = { "wdelay=3", NULL };
	static struct block_request reqs[N + 1];
	uint8_t *data = malloc((size_t)N * LEN), *back = calloc(N, LEN);

	server_start(pre, post);
	struct block_backend *bb = open_disk(false, 30);
	fill(data, (size_t)N * LEN, 4);
	/* What the read after the restart must see at the end of the range. */
	int fd = open(img_path, O_WRONLY);
	assert_int_equal(pwrite(fd, data, LEN, (off_t)N * LEN), LEN);
	close(fd);
	for (unsigned i = 0; i < N; i++)
		submit(bb, &reqs[i], BLOCK_OP_WRITE, (uint64_t)i * LEN, LEN,
		       data + (size_t)i * LEN);
	usleep(300000);
	server_kill();
	submit(bb, &reqs[N], BLOCK_OP_READ, (uint64_t)N * LEN, LEN, back);
	/* Nothing completes, with or without an error, while the server is away. */
	usleep(1500000);
	assert_int_equal(done_count(), 0);

	server_start(NULL, NULL);
	uint64_t t0 = now_ms();
	assert_true(wait_done(N + 1, 30000));
	/* Back-off at most 2 s between attempts. */
	assert_true(now_ms() - t0 < 5000);
	for (unsigned i = 0; i <= N; i++)
		assert_int_equal(reqs[i].result, 0);
	assert_memory_equal(back, data, LEN);
	assert_int_equal(io(bb, BLOCK_OP_FLUSH, 0, 0, NULL, false), 0);
	assert_file(0, data, (size_t)N * LEN);
	assert_int_equal(io(bb, BLOCK_OP_READ, 0, (size_t)N * LEN, back, false), 0);
	assert_memory_equal(back, data, (size_t)N * LEN);

	/* Killed again while idle: the next request reconnects too. */
	server_kill();
	server_start(NULL, NULL);
	assert_int_equal(io(bb, BLOCK_OP_READ, 0, LEN, back, false), 0);
	assert_memory_equal(back, data, LEN);
	block_backend_close(bb);
	free(data);
	free(back);
}

/* A server away past the reconnect timeout: waiting requests fail with -EIO, and a request
 * after it is back reconnects. */
static void test_timeout(void **state)
{
	(void)state;
	uint8_t buf[4096];
	struct block_request r;

	server_start(NULL, NULL);
	struct block_backend *bb = open_disk(false, 1);
	fill(buf, sizeof(buf), 5);
	assert_int_equal(io(bb, BLOCK_OP_WRITE, 0, sizeof(buf), buf, false), 0);
	server_kill();
	uint64_t t0 = now_ms();
	submit(bb, &r, BLOCK_OP_READ, 0, sizeof(buf), buf);
	assert_true(wait_done(2, 15000));
	uint64_t took = now_ms() - t0;
	assert_int_equal(r.result, -EIO);
	assert_true(took >= 500 && took < 10000);
	/* While the server stays away, later requests fail again after the timeout. */
	assert_int_equal(io(bb, BLOCK_OP_WRITE, 0, sizeof(buf), buf, false), -EIO);

	server_start(NULL, NULL);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(io(bb, BLOCK_OP_READ, 0, sizeof(buf), buf, false), 0);
	uint8_t want[4096];
	fill(want, sizeof(want), 5);
	assert_memory_equal(buf, want, sizeof(buf));
	block_backend_close(bb);
}

/* Closing with the server away and a request waiting returns at once (the request's done
 * is not called). */
static void test_close_disconnected(void **state)
{
	(void)state;
	uint8_t buf[512];
	struct block_request r;

	server_start(NULL, NULL);
	struct block_backend *bb = open_disk(false, 30);
	server_kill();
	submit(bb, &r, BLOCK_OP_READ, 0, sizeof(buf), buf);
	usleep(300000);
	uint64_t t0 = now_ms();
	block_backend_close(bb);
	assert_true(now_ms() - t0 < 3000);
	assert_int_equal(done_count(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_split, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_discard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_emulated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_disconnected, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
