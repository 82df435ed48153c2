/* Listening Unix sockets at a path in the file system (the control socket, --incoming
 * unix:PATH), made the same careful way. */
#ifndef MABO_CORE_UNIX_SOCKET_H
#define MABO_CORE_UNIX_SOCKET_H

#include <stddef.h>

/* Binds and listens (backlog) on a new Unix stream socket at path, created with mode 0600
 * whatever the umask; flags are added to socket()'s type (SOCK_NONBLOCK...; SOCK_CLOEXEC is
 * always set). A socket file left at path by a process that is gone (nobody answers there)
 * is replaced; a live one, and anything that is not a socket, are errors, and such a file is
 * never removed. The descriptor, or -errno with why (n bytes) saying what went wrong,
 * without the path. */
int unix_socket_listen(const char *path, int flags, int backlog, char *why, size_t n)
	__attribute__((warn_unused_result));

#endif
