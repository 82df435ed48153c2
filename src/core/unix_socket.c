/* Listening Unix sockets at a path (see unix_socket.h). */
#include "core/unix_socket.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* 0 when path is free (nothing there, or a stale socket now removed), else -errno. */
static int unix_socket_clear(const char *path, const struct sockaddr_un *addr, char *why, size_t n)
{
	struct stat st;

	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		int err = -errno;
		snprintf(why, n, "%s", strerror(-err));
		return err;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(why, n, "exists and is not a socket (not removed)");
		return -EEXIST;
	}
	/* A server answering there is alive; a refused connection means a socket file left
	 * behind by a process that is gone. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int err = -errno;
		snprintf(why, n, "%s", strerror(-err));
		return err;
	}
	int r = connect(fd, (const struct sockaddr *)addr, sizeof(*addr));
	int e = errno;
	close(fd);
	if (r == 0) {
		snprintf(why, n, "in use by a running server");
		return -EADDRINUSE;
	}
	if (e != ECONNREFUSED) {
		snprintf(why, n, "%s", strerror(e));
		return -e;
	}
	if (unlink(path) != 0 && errno != ENOENT) {
		int err = -errno;
		snprintf(why, n, "cannot remove the stale socket: %s", strerror(-err));
		return err;
	}
	return 0;
}

int unix_socket_listen(const char *path, int flags, int backlog, char *why, size_t n)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, err;

	if (!*path || strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(why, n, "the path must be 1 to %zu bytes", sizeof(addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	err = unix_socket_clear(path, &addr, why, n);
	if (err)
		return err;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	if (fd < 0) {
		err = -errno;
		snprintf(why, n, "%s", strerror(-err));
		return err;
	}
	/* Created 0600 from the start: there is no instant where others could connect. */
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	err = errno;
	umask(old);
	if (r != 0) {
		snprintf(why, n, "%s", strerror(err));
		close(fd);
		return -err;
	}
	if (chmod(path, 0600) != 0 || listen(fd, backlog) != 0) {
		err = errno;
		snprintf(why, n, "%s", strerror(err));
		unlink(path);
		close(fd);
		return -err;
	}
	return fd;
}
