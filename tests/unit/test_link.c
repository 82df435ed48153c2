/* The migration link's TLS (migration/link.c): key files refused when short or readable by
 * others; two ends with the same key shake hands and carry bytes both ways, half-closes
 * included, while the bytes on the wire are not the plaintext; a wrong key fails the
 * handshake on both sides; a peer sending garbage is refused. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "migration/link.h"

static void write_key(const char *path, const void *p, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static struct mig_link *link_with(const char *dir, const char *name, uint8_t fill)
{
	char path[256], why[300] = "";
	uint8_t key[32];
	struct mig_link *l = NULL;

	memset(key, fill, sizeof(key));
	key[0] ^= 0x5a;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	write_key(path, key, sizeof(key), 0600);
	assert_int_equal(mig_link_create(path, NULL, &l, why, sizeof(why)), 0);
	assert_non_null(l);
	return l;
}

static char tmpdir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/mabo-test-link-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_key_refused(void **state)
{
	char path[256], why[300] = "";
	uint8_t key[64] = { 1 };
	struct mig_link *l = (struct mig_link *)1;
	(void)state;

	snprintf(path, sizeof(path), "%s/short", tmpdir);
	write_key(path, key, 31, 0600);
	assert_int_equal(mig_link_create(path, NULL, &l, why, sizeof(why)), -EINVAL);
	assert_null(l);
	assert_non_null(strstr(why, "at least 32"));

	snprintf(path, sizeof(path), "%s/loose", tmpdir);
	write_key(path, key, 32, 0644);
	assert_int_equal(mig_link_create(path, NULL, &l, why, sizeof(why)), -EPERM);
	assert_non_null(strstr(why, "readable by others"));

	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	assert_int_equal(mig_link_create(path, NULL, &l, why, sizeof(why)), -ENOENT);

	/* A certificate directory whose private key others can read. */
	static const char *const files[] = { "ca.crt", "cert.pem", "key.pem" };
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
		write_key(path, "x", 1, 0644);
	}
	assert_int_equal(mig_link_create(NULL, tmpdir, &l, why, sizeof(why)), -EPERM);
	assert_non_null(strstr(why, "key.pem"));
	/* Both at once. */
	assert_int_equal(mig_link_create(path, tmpdir, &l, why, sizeof(why)), -EINVAL);

	/* Neither: no TLS, and mig_link_secure passes the descriptor through. */
	assert_int_equal(mig_link_create(NULL, NULL, &l, why, sizeof(why)), 0);
	assert_null(l);
	assert_int_equal(mig_link_secure(NULL, 42, true, why, sizeof(why)), 42);
}

struct side {
	struct mig_link *l;
	int fd;
	int ret;
	char why[160];
};

static void *server_side(void *arg)
{
	struct side *s = arg;
	s->ret = mig_link_secure(s->l, s->fd, true, s->why, sizeof(s->why));
	return NULL;
}

/* A wire between the two ends that copies what the client sends into seen. */
struct tap {
	int a, b; /* a: the client's wire end's peer; b: the server's */
	uint8_t seen[1 << 16];
	size_t n;
};

static void *tap_thread(void *arg)
{
	struct tap *t = arg;
	uint8_t buf[4096];
	ssize_t r;
	while ((r = read(t->a, buf, sizeof(buf))) > 0) {
		size_t k = (size_t)r;
		if (t->n + k <= sizeof(t->seen)) {
			memcpy(t->seen + t->n, buf, k);
			t->n += k;
		}
		if (write(t->b, buf, k) != r)
			break;
	}
	shutdown(t->b, SHUT_WR);
	return NULL;
}

static void *tap_back(void *arg)
{
	struct tap *t = arg;
	uint8_t buf[4096];
	ssize_t r;
	while ((r = read(t->b, buf, sizeof(buf))) > 0)
		if (write(t->a, buf, (size_t)r) != r)
			break;
	shutdown(t->a, SHUT_WR);
	return NULL;
}

static void test_roundtrip(void **state)
{
	struct mig_link *l = link_with(tmpdir, "k1", 7);
	int c[2], s[2];
	struct tap t = { 0 };
	pthread_t th, tt, tb;
	char why[160] = "";
	static const char msg[] = "MABOSTRM secret guest text";
	(void)state;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, c), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, s), 0);
	t.a = c[1];
	t.b = s[1];
	pthread_create(&tt, NULL, tap_thread, &t);
	pthread_create(&tb, NULL, tap_back, &t);
	struct side srv = { .l = l, .fd = s[0] };
	pthread_create(&th, NULL, server_side, &srv);
	int cfd = mig_link_secure(l, c[0], false, why, sizeof(why));
	pthread_join(th, NULL);
	assert_true(cfd >= 0);
	assert_true(srv.ret >= 0);

	char buf[64] = "";
	assert_int_equal(write(cfd, msg, sizeof(msg)), (ssize_t)sizeof(msg));
	size_t got = 0;
	while (got < sizeof(msg)) {
		ssize_t r = read(srv.ret, buf + got, sizeof(buf) - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
	assert_memory_equal(buf, msg, sizeof(msg));
	/* And back; then the server's end shut: the client reads the end. */
	assert_int_equal(write(srv.ret, "ok", 2), 2);
	assert_int_equal(read(cfd, buf, 2), 2);
	assert_memory_equal(buf, "ok", 2);
	shutdown(srv.ret, SHUT_WR);
	assert_int_equal(read(cfd, buf, 1), 0);
	close(cfd);
	close(srv.ret);
	pthread_join(tt, NULL);
	pthread_join(tb, NULL);
	/* On the wire: neither the magic nor the text. */
	assert_true(t.n > sizeof(msg));
	assert_null(memmem(t.seen, t.n, "MABOSTRM", 8));
	assert_null(memmem(t.seen, t.n, "secret", 6));
	close(c[1]);
	close(s[1]);
	mig_link_unref(l);
}

static void test_wrong_key(void **state)
{
	struct mig_link *a = link_with(tmpdir, "ka", 1), *b = link_with(tmpdir, "kb", 2);
	int sv[2];
	pthread_t th;
	char why[160] = "";
	(void)state;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct side srv = { .l = b, .fd = sv[1] };
	pthread_create(&th, NULL, server_side, &srv);
	int cfd = mig_link_secure(a, sv[0], false, why, sizeof(why));
	pthread_join(th, NULL);
	assert_true(cfd < 0);
	assert_true(srv.ret < 0);
	assert_non_null(strstr(srv.why, "TLS handshake"));
	mig_link_unref(a);
	mig_link_unref(b);
}

static void test_garbage_refused(void **state)
{
	struct mig_link *l = link_with(tmpdir, "kg", 3);
	int sv[2];
	char why[160] = "";
	static const char junk[] = "MABOSTRM\3\0\0\0\2\0\0\0 not a handshake at all";
	(void)state;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(write(sv[0], junk, sizeof(junk)), (ssize_t)sizeof(junk));
	shutdown(sv[0], SHUT_WR);
	assert_true(mig_link_secure(l, sv[1], true, why, sizeof(why)) < 0);
	assert_non_null(strstr(why, "TLS handshake"));
	close(sv[0]);
	mig_link_unref(l);
}

int main(void)
{
	/* As mabo-vmm does: a peer gone shows as EPIPE, not as a signal. */
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_refused),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_garbage_refused),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
