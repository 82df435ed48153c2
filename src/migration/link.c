/* TLS 1.3 on migration connections (see link.h). */
#define _GNU_SOURCE
#include "migration/link.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "core/vm.h"

/* TLS 1.3 only. With a key, ECDHE-PSK: the key proves who is at the other end and an
 * ephemeral exchange keys the session (a key taken later does not open old captures).
 * AES-GCM first: with the CPU's AES instructions it runs at gigabytes per second, where
 * GnuTLS's default pick, ChaCha20-Poly1305, made a migration several times slower. */
#define PRIO_CIPHERS "-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
#define PRIO_PSK "NORMAL:-VERS-ALL:+VERS-TLS1.3:" PRIO_CIPHERS ":+ECDHE-PSK:+DHE-PSK"
#define PRIO_CERT "NORMAL:-VERS-ALL:+VERS-TLS1.3:" PRIO_CIPHERS
#define PSK_USER "mabo-migration"
#define KEY_MAX 4096
#define RELAY_BUF (256U << 10)
#define RELAY_RECORD (16U << 10) /* the most plaintext a TLS record holds */
/* The relay keeps at most this much unsent in the TCP queue: the rest waits in the socket
 * pair, where the migration code's SIOCOUTQ sees it (post-copy bounds its backlog so that
 * a requested page does not queue behind megabytes). */
#define RELAY_NOTSENT_LOWAT (128U << 10)

struct mig_link {
	atomic_int refs;
	bool psk;
	gnutls_datum_t key; /* psk */
	gnutls_psk_client_credentials_t psk_client;
	gnutls_psk_server_credentials_t psk_server;
	gnutls_certificate_credentials_t cert; /* !psk: both roles */
};

struct relay {
	atomic_int refs;
	struct mig_link *link;
	gnutls_session_t s;
	int net;   /* the TCP (or Unix) connection, TLS records */
	int local; /* the relay's end of the pair, plaintext */
};

struct mig_link *mig_link_ref(struct mig_link *l)
{
	if (l)
		atomic_fetch_add(&l->refs, 1);
	return l;
}

void mig_link_unref(struct mig_link *l)
{
	if (!l || atomic_fetch_sub(&l->refs, 1) != 1)
		return;
	if (l->psk_client)
		gnutls_psk_free_client_credentials(l->psk_client);
	if (l->psk_server)
		gnutls_psk_free_server_credentials(l->psk_server);
	if (l->cert)
		gnutls_certificate_free_credentials(l->cert);
	if (l->key.data) {
		explicit_bzero(l->key.data, l->key.size);
		free(l->key.data);
	}
	free(l);
}

/* The server's key for any name: there is one key. */
static int psk_lookup(gnutls_session_t s, const char *user, gnutls_datum_t *key)
{
	const struct mig_link *l = gnutls_session_get_ptr(s);
	(void)user;
	key->data = gnutls_malloc(l->key.size);
	if (!key->data)
		return -1;
	memcpy(key->data, l->key.data, l->key.size);
	key->size = l->key.size;
	return 0;
}

static int load_key(struct mig_link *l, const char *path, char *why, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		snprintf(why, n, "--migration-key '%s': %s", path, strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		snprintf(why, n, "--migration-key '%s': not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		close(fd);
		snprintf(why, n, "--migration-key '%s': readable by others (chmod 600 it)", path);
		return -EPERM;
	}
	l->key.data = malloc(KEY_MAX);
	if (!l->key.data) {
		close(fd);
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, l->key.data + got, KEY_MAX - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			snprintf(why, n, "--migration-key '%s': %s", path, strerror(e));
			return -e;
		}
		if (r == 0 || got + (size_t)r == KEY_MAX) {
			got += (size_t)r;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	if (got < MIG_LINK_MIN_KEY) {
		snprintf(why, n,
			 "--migration-key '%s': %zu bytes, at least %d random bytes are needed "
			 "(head -c 32 /dev/urandom > FILE)",
			 path, got, MIG_LINK_MIN_KEY);
		return -EINVAL;
	}
	if (got == KEY_MAX) {
		snprintf(why, n, "--migration-key '%s': longer than %d bytes", path, KEY_MAX - 1);
		return -EINVAL;
	}
	l->key.size = (unsigned)got;
	if (gnutls_psk_allocate_client_credentials(&l->psk_client) < 0 ||
	    gnutls_psk_allocate_server_credentials(&l->psk_server) < 0) {
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	int r = gnutls_psk_set_client_credentials(l->psk_client, PSK_USER, &l->key,
						  GNUTLS_PSK_KEY_RAW);
	if (r < 0) {
		snprintf(why, n, "--migration-key '%s': %s", path, gnutls_strerror(r));
		return -EINVAL;
	}
	gnutls_psk_set_server_credentials_function(l->psk_server, psk_lookup);
	return 0;
}

static int load_certs(struct mig_link *l, const char *dir, char *why, size_t n)
{
	char ca[4200], cert[4200], key[4200];
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	const char *files[] = { ca, cert, key };
	for (int i = 0; i < 3; i++) {
		if (access(files[i], R_OK) < 0) {
			snprintf(why, n, "--migration-tls '%.150s': %s", files[i], strerror(errno));
			return -errno;
		}
	}
	struct stat st;
	if (stat(key, &st) == 0 && (st.st_mode & 077)) {
		snprintf(why, n, "--migration-tls '%.150s': readable by others (chmod 600 it)",
			 key);
		return -EPERM;
	}
	if (gnutls_certificate_allocate_credentials(&l->cert) < 0) {
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	int r = gnutls_certificate_set_x509_trust_file(l->cert, ca, GNUTLS_X509_FMT_PEM);
	if (r <= 0) {
		snprintf(why, n, "--migration-tls '%.150s': %s", ca,
			 r < 0 ? gnutls_strerror(r) : "no certificate in it");
		return -EINVAL;
	}
	r = gnutls_certificate_set_x509_key_file(l->cert, cert, key, GNUTLS_X509_FMT_PEM);
	if (r < 0) {
		snprintf(why, n, "--migration-tls '%.150s': cert.pem and key.pem: %s", dir,
			 gnutls_strerror(r));
		return -EINVAL;
	}
	return 0;
}

int mig_link_create(const char *key_file, const char *tls_dir, struct mig_link **out, char *why,
		    size_t n)
{
	*out = NULL;
	if (!key_file && !tls_dir)
		return 0;
	if (key_file && tls_dir) {
		snprintf(why, n, "--migration-key and --migration-tls: choose one");
		return -EINVAL;
	}
	struct mig_link *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&l->refs, 1);
	l->psk = key_file != NULL;
	int err = key_file ? load_key(l, key_file, why, n) : load_certs(l, tls_dir, why, n);
	if (err) {
		mig_link_unref(l);
		return err;
	}
	*out = l;
	return 0;
}

/* ---- The relay ---- */

static void relay_put(struct relay *r)
{
	if (atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	gnutls_deinit(r->s);
	close(r->net);
	close(r->local);
	mig_link_unref(r->link);
	free(r);
}

/* Plaintext from the migration code out as records. */
static void *relay_up(void *arg)
{
	struct relay *r = arg;
	uint8_t *buf = malloc(RELAY_BUF);
	bool clean = false;

	while (buf) {
		ssize_t got = read(r->local, buf, RELAY_BUF);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			clean = got == 0;
			break;
		}
		/* What the code wrote at once leaves in one system call (the records of a
		 * chunk corked together), and at once (TCP_NODELAY). */
		size_t off = 0;
		gnutls_record_cork(r->s);
		while (off < (size_t)got) {
			ssize_t w = gnutls_record_send(r->s, buf + off, (size_t)got - off);
			if (w == GNUTLS_E_INTERRUPTED)
				continue;
			if (w < 0)
				goto out; /* includes a send timeout: the link is dead */
			off += (size_t)w;
		}
		/* It retries on a send timeout; TCP_USER_TIMEOUT ends a dead link. */
		if (gnutls_record_uncork(r->s, GNUTLS_RECORD_WAIT) < 0)
			goto out;
	}
out:
	if (clean) {
		/* The code shut its side: say so (close_notify), and the peer reads the end. */
		gnutls_bye(r->s, GNUTLS_SHUT_WR);
		shutdown(r->net, SHUT_WR);
	} else {
		/* The link failed: the code's next read or write fails too. */
		shutdown(r->net, SHUT_RDWR);
		shutdown(r->local, SHUT_RDWR);
	}
	free(buf);
	relay_put(r);
	return NULL;
}

/* Records from the peer in as plaintext. */
static void *relay_down(void *arg)
{
	struct relay *r = arg;
	uint8_t *buf = malloc(RELAY_BUF);
	bool end = false;

	while (buf && !end) {
		if (!gnutls_record_check_pending(r->s)) {
			/* The code's end closed (or shut both ways) ends the relay even when the
			 * peer says nothing more. */
			struct pollfd p[2] = { { .fd = r->net, .events = POLLIN },
					       { .fd = r->local, .events = 0 } };
			if (poll(p, 2, -1) < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			if (p[1].revents & (POLLHUP | POLLERR | POLLNVAL))
				break;
			if (!p[0].revents)
				continue;
		}
		/* The records already here go to the code in one write: a record is 16 KiB at
		 * most, and a write each woke the code's reader that often. */
		size_t have = 0;
		for (;;) {
			ssize_t got = gnutls_record_recv(r->s, buf + have, RELAY_BUF - have);
			/* A receive timeout mid-record: look at the code's end again. */
			if (got == GNUTLS_E_AGAIN || got == GNUTLS_E_INTERRUPTED)
				break;
			/* The end (close_notify), or an error: the code reads the end. */
			if (got <= 0) {
				end = true;
				break;
			}
			have += (size_t)got;
			int avail = 0;
			if (RELAY_BUF - have < RELAY_RECORD ||
			    (!gnutls_record_check_pending(r->s) &&
			     (ioctl(r->net, FIONREAD, &avail) < 0 || avail <= 0)))
				break;
		}
		size_t off = 0;
		while (off < have) {
			/* The code's end may be gone: no SIGPIPE for that. */
			ssize_t w = send(r->local, buf + off, have - off, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				goto out;
			off += (size_t)w;
		}
	}
out:
	shutdown(r->local, SHUT_WR);
	free(buf);
	relay_put(r);
	return NULL;
}

static void set_io_timeouts(int fd, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int handshake(struct mig_link *l, gnutls_session_t s, int fd, bool server, char *why,
		     size_t n)
{
	const char *errpos = NULL;
	int r = gnutls_priority_set_direct(s, l->psk ? PRIO_PSK : PRIO_CERT, &errpos);
	if (r >= 0) {
		if (l->psk)
			r = server ? gnutls_credentials_set(s, GNUTLS_CRD_PSK, l->psk_server)
				   : gnutls_credentials_set(s, GNUTLS_CRD_PSK, l->psk_client);
		else
			r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, l->cert);
	}
	if (r < 0) {
		snprintf(why, n, "TLS setup: %s", gnutls_strerror(r));
		return -EINVAL;
	}
	gnutls_session_set_ptr(s, l);
	if (!l->psk) {
		/* Mutual: the client shows a certificate from the same authority too. */
		if (server)
			gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
		gnutls_session_set_verify_cert(s, NULL, 0);
	}
	gnutls_transport_set_int(s, fd);
	gnutls_handshake_set_timeout(s, MIG_LINK_HANDSHAKE_TIMEOUT_S * 1000);
	set_io_timeouts(fd, MIG_LINK_HANDSHAKE_TIMEOUT_S);
	uint64_t deadline = host_now_ns() + MIG_LINK_HANDSHAKE_TIMEOUT_S * 1000000000ULL;
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r) && host_now_ns() < deadline);
	if (r < 0) {
		snprintf(why, n, "TLS handshake: %s",
			 r == GNUTLS_E_AGAIN ? "timed out" : gnutls_strerror(r));
		return r == GNUTLS_E_AGAIN || r == GNUTLS_E_TIMEDOUT ? -ETIMEDOUT : -EACCES;
	}
	if (gnutls_protocol_get_version(s) != GNUTLS_TLS1_3) {
		snprintf(why, n, "TLS handshake: not TLS 1.3");
		return -EACCES;
	}
	if (!l->psk) {
		unsigned status = 0;
		r = gnutls_certificate_verify_peers2(s, &status);
		if (r < 0 || status) {
			snprintf(why, n, "TLS: the peer's certificate is not trusted");
			return -EACCES;
		}
	}
	return 0;
}

int mig_link_secure(struct mig_link *l, int fd, bool server, char *why, size_t n)
{
	if (!l)
		return fd;
	struct relay *r = calloc(1, sizeof(*r));
	int sv[2] = { -1, -1 };
	int err;

	if (!r) {
		close(fd);
		snprintf(why, n, "out of memory");
		return -ENOMEM;
	}
	r->net = fd;
	err = gnutls_init(&r->s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_TICKETS);
	if (err < 0) {
		r->s = NULL;
		snprintf(why, n, "TLS: %s", gnutls_strerror(err));
		err = -ENOMEM;
		goto fail;
	}
	err = handshake(l, r->s, fd, server, why, n);
	if (err)
		goto fail;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		err = -errno;
		snprintf(why, n, "socketpair: %s", strerror(errno));
		goto fail;
	}
	/* Past the handshake the relay waits on the peer as long as the code does (the code
	 * times out on its own end); a receive timeout only lets it look at that end again.
	 * Sends keep their timeout: a link that takes nothing is dead. */
	set_io_timeouts(fd, MIG_LINK_HANDSHAKE_TIMEOUT_S);
	unsigned lowat = RELAY_NOTSENT_LOWAT;
	setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
	/* The relay turns one write of the code into several records, sent as they come:
	 * Nagle would hold the last small one back for the peer's delayed acknowledgement
	 * (40 ms at each ACK and GO of the switch-over). */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Data unacknowledged that long ends the connection (as set_timeouts does for the
	 * migration code's own sockets): the relay never waits on a dead link forever. */
	int ms = MIG_LINK_HANDSHAKE_TIMEOUT_S * 1000;
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
	r->local = sv[1];
	r->link = mig_link_ref(l);
	atomic_init(&r->refs, 2);
	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, relay_up, r)) {
		pthread_attr_destroy(&attr);
		mig_link_unref(r->link);
		close(sv[0]);
		close(sv[1]);
		snprintf(why, n, "cannot start a thread");
		err = -EAGAIN;
		goto fail;
	}
	if (pthread_create(&t, &attr, relay_down, r)) {
		/* The sender alone: it sees the end of the pair and finishes the relay. */
		shutdown(sv[1], SHUT_RDWR);
		relay_put(r);
		close(sv[0]);
		pthread_attr_destroy(&attr);
		snprintf(why, n, "cannot start a thread");
		return -EAGAIN;
	}
	pthread_attr_destroy(&attr);
	return sv[0];

fail:
	if (r->s)
		gnutls_deinit(r->s);
	close(fd);
	free(r);
	return err;
}
