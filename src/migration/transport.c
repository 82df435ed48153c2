/* Migration connections: the URI (unix:PATH, tcp:HOST:PORT), socket timeouts, the peer's
 * name, and the TLS hand-off to link.c. */
#define _GNU_SOURCE
#include "migration/internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "core/unix_socket.h"
#include "migration/link.h"

/* ---- Connections ---- */

void set_timeouts(int fd, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* TCP: data unacknowledged that long ends the connection. Without it a write that
	 * gets part of its bytes out restarts SO_SNDTIMEO, and a dead link took up to twice
	 * the timeout to notice. (Fails harmlessly on Unix sockets.) */
	int ms = seconds * 1000;
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
}

/* Splits "HOST:PORT" (HOST may be [v6]). */
static int split_host_port(const char *s, char *host, size_t hn, char *port, size_t pn)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || !colon[1])
		return -EINVAL;
	size_t len = (size_t)(colon - s);
	if (s[0] == '[' && len >= 2 && s[len - 1] == ']') {
		s++;
		len -= 2;
	}
	if (len >= hn || strlen(colon + 1) >= pn)
		return -EINVAL;
	memcpy(host, s, len);
	host[len] = 0;
	strcpy(port, colon + 1);
	return 0;
}

/* Opens a socket for uri: connected (listen = false) or listening. -errno with why. */
int open_uri(const char *uri, bool listening, char *why, size_t n)
{
	int fd = -1, err;

	if (strncmp(uri, "unix:", 5) == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		const char *path = uri + 5;
		if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
			snprintf(why, n, "'%s': bad socket path", uri);
			return -EINVAL;
		}
		strcpy(sa.sun_path, path);
		if (listening) {
			/* The --api-socket rule: a stale socket is replaced, anything else
			 * there is an error and stays. */
			char w[160];
			fd = unix_socket_listen(path, 0, 1, w, sizeof(w));
			if (fd < 0)
				snprintf(why, n, "'%s': %s", uri, w);
			return fd;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto fail_errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			goto fail_errno;
		}
		return fd;
	}
	if (strncmp(uri, "tcp:", 4) != 0) {
		snprintf(why, n, "'%s': must be tcp:HOST:PORT or unix:PATH", uri);
		return -EINVAL;
	}
	char host[256], port[32];
	if (split_host_port(uri + 4, host, sizeof(host), port, sizeof(port))) {
		snprintf(why, n, "'%s': must be tcp:HOST:PORT or unix:PATH", uri);
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = listening ? AI_PASSIVE : 0 };
	struct addrinfo *res = NULL;
	int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (gai) {
		snprintf(why, n, "'%s': %s", uri, gai_strerror(gai));
		return -EINVAL;
	}
	err = -ECONNREFUSED;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (listening) {
			int one = 1;
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1) == 0)
				break;
		} else {
			set_timeouts(fd, IO_TIMEOUT_S);
			if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
				break;
		}
		err = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(why, n, "'%s': %s", uri, strerror(-err));
		return err;
	}
	return fd;

fail_errno:
	err = -errno;
	snprintf(why, n, "'%s': %s", uri, strerror(errno));
	if (fd >= 0)
		close(fd);
	return err;
}

/* Connects to uri and, with credentials, secures the connection (TLS). -errno with why. */
int connect_uri(struct mig_link *link, const char *uri, char *why, size_t n)
{
	int fd = open_uri(uri, false, why, n);
	if (fd < 0 || !link)
		return fd;
	char tw[160] = "";
	fd = mig_link_secure(link, fd, false, tw, sizeof(tw));
	if (fd < 0)
		snprintf(why, n, "'%s': %s", uri, tw);
	else
		set_timeouts(fd, IO_TIMEOUT_S);
	return fd;
}

/* "ADDR:PORT" of a connection's peer, for messages. */
void peer_name(int fd, char *buf, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN], port[8];

	snprintf(buf, n, "a peer");
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family != AF_UNIX &&
	    getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(buf, n, "%s%.46s%s:%.7s", ss.ss_family == AF_INET6 ? "[" : "", host,
			 ss.ss_family == AF_INET6 ? "]" : "", port);
}

/* Accepted fd: the TLS handshake (with credentials) within its timeout. The secured
 * descriptor, or -errno after one line naming the rejected peer (fd closed). */
int accept_secure(struct mig_link *link, int fd, const char *who)
{
	char why[160] = "";
	fd = mig_link_secure(link, fd, true, why, sizeof(why));
	if (fd < 0)
		log_warn("migration: rejected %s: %s", who, why);
	return fd;
}
