/* The REST API (docs/mabod.md) on libmicrohttpd, served from the daemon's poll loop. */
#ifndef MABO_DAEMON_HTTP_H
#define MABO_DAEMON_HTTP_H

#include "daemon/daemon.h"

/* Largest request body accepted. */
#define HTTP_BODY_MAX (1u << 20)

/* Serves HTTP on d->listen_fd (a listening socket). Returns 0 or -errno. */
int http_start(struct mabod *d);
/* The descriptor to poll for HTTP work, and how long the server may wait (ms, -1: any). */
int http_poll_fd(struct mabod *d);
int64_t http_timeout(struct mabod *d);
/* Serves what is ready. */
void http_run(struct mabod *d);
void http_stop(struct mabod *d);
/* Sends an event to every client following GET /v1/events as server-sent events. */
void http_broadcast(struct mabod *d, int64_t time_ms, const char *vm, const char *kind,
		    const char *message);

#endif
