/* The control socket: line-delimited JSON over a Unix stream socket, served on the VM's
 * event loop (docs/api.md describes the protocol). The server parses and checks requests and
 * formats responses; what a command does is up to the VMM, through a const table of
 * callbacks. The server knows nothing of vCPUs or devices.
 *
 * Every callback runs on the loop thread, one at a time, and must not block for long: the
 * loop also runs the devices. A callback returns 0 or -errno; on failure it may write a
 * one-line message into err (errlen bytes), which the client gets as "error"; left empty,
 * the server uses strerror. A NULL callback answers "not supported". */
#ifndef MABO_CORE_API_H
#define MABO_CORE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct api;
struct event_loop;
struct json_writer;

/* Longest accepted request line (bytes, without the newline). */
#define API_MAX_LINE 65536
/* Clients served at once; more are turned away with an error. */
#define API_MAX_CLIENTS 16
/* Responses a client has not read yet, in bytes, before it is dropped. */
#define API_MAX_PENDING (1u << 20)
/* How often subscribed clients get a "migration" event while a migration is active. */
#define API_MIGRATION_EVENT_MS 100

#define API_URI_MAX 512

/* The migrate command's parameters, checked by the server. */
struct api_migrate_params {
	char uri[API_URI_MAX];	  /* "tcp:HOST:PORT" (port 1-65535) or "unix:PATH" */
	uint32_t downtime_ms;	  /* the downtime target, 1 to 60000; default 300 */
	uint32_t bandwidth_mibps; /* a cap in MiB/s; 0 = none (the default) */
	bool postcopy;		  /* switch to post-copy (default false) */
	bool compress;		  /* compress pages (default false) */
};

enum api_migrate_state {
	API_MIGRATE_NONE = 0,  /* no migration started in this process */
	API_MIGRATE_ACTIVE,    /* running: the fields below show its progress */
	API_MIGRATE_COMPLETED, /* the VM runs on the destination */
	API_MIGRATE_FAILED,    /* the VM runs here; error says why */
	API_MIGRATE_CANCELLED, /* cancelled; the VM runs here */
};

/* The latest (or the last) migration's progress, filled by the migrate_status callback.
 * The server zeroes it before the call; fields left 0 are still reported. */
struct api_migrate_status {
	enum api_migrate_state state;
	uint32_t pass;		       /* pre-copy pass, 1 = the first full pass */
	bool postcopy_active;	       /* the guest already runs on the destination */
	uint64_t total_pages;	       /* guest RAM in pages */
	uint64_t remaining_pages;      /* dirty pages still to send */
	uint64_t dirty_rate_pps;       /* pages the guest dirties per second */
	double bandwidth_mibps;	       /* measured link throughput */
	uint64_t expected_downtime_ms; /* remaining_pages at bandwidth_mibps, plus the state */
	uint64_t total_ms;	       /* since the migration started (final once over) */
	double downtime_ms;	       /* the outage (to the microsecond); 0 until known */
	uint64_t bytes;		       /* sent so far */
	uint32_t rounds;	       /* passes completed */
	char error[256];	       /* FAILED: why, one line */
};

/* The VMM's side. opaque is api_create's. */
struct api_ops {
	/* Stop the vCPUs / let them run again. */
	int (*pause)(void *opaque, char *err, size_t errlen);
	int (*resume)(void *opaque, char *err, size_t errlen);
	/* Adds members to the response object that w has open ({"ok":true, ...): at least
	 * "state" ("running", "paused", "migrating", ...), "cpus", "memory" (bytes). */
	int (*info)(void *opaque, struct json_writer *w, char *err, size_t errlen);
	/* Saves the VM to the file path; answers once the file is complete (api_defer when
	 * that needs the loop). */
	int (*snapshot)(void *opaque, const char *path, char *err, size_t errlen);
	/* Starts a migration and returns at once (-EBUSY when one is active); its progress
	 * is then read with migrate_status. Call api_migration_notify on state changes so
	 * that clients hear of them without waiting for the next tick. */
	int (*migrate)(void *opaque, const struct api_migrate_params *p, char *err, size_t errlen);
	/* Cancels the active migration (asynchronously: migrate_status says "cancelled"
	 * once the VM runs here again). -ENOENT when none is active. */
	int (*migrate_cancel)(void *opaque, char *err, size_t errlen);
	/* Switches the active migration to post-copy at its next step. -ENOENT when none is
	 * active, -EBUSY when it is handed over already. */
	int (*migrate_postcopy)(void *opaque, char *err, size_t errlen);
	int (*migrate_status)(void *opaque, struct api_migrate_status *st, char *err,
			      size_t errlen);
	/* Presses the guest's power button: the guest is asked to power off (the VMM exits
	 * when it has). Answers once pressed, not once off. */
	int (*powerdown)(void *opaque, char *err, size_t errlen);
	/* Ends the VMM (the response is sent first). */
	int (*quit)(void *opaque, char *err, size_t errlen);
};

/* Listens on the Unix socket path (mode 0600) and serves it on loop. A socket file left by
 * a dead process is replaced; a path where a server answers is -EADDRINUSE; any other
 * existing file is -EEXIST (never removed). Call before event_loop_start or on the loop
 * thread. 0 or -errno, after logging one line. */
int api_create(struct event_loop *loop, const char *path, const struct api_ops *ops, void *opaque,
	       struct api **out) __attribute__((warn_unused_result));

/* Answering later. A pause, resume, snapshot, cancel or quit callback that cannot finish at
 * once (it must wait for the loop itself, e.g. for disk requests to drain) calls api_defer,
 * starts the work, and returns -EINPROGRESS; once done, api_complete(p, 0 or -errno,
 * message or NULL) on the loop thread sends the response. Meanwhile the client's later
 * requests wait, other clients are served. api_defer returns NULL outside a callback, when
 * called twice, or without memory (then return -ENOMEM). Complete only after the callback
 * has returned. Requests not completed when
 * api_destroy runs are answered with an error, and p must not be used after that. */
struct api_pending;

struct api_pending *api_defer(struct api *api);
void api_complete(struct api_pending *p, int ret, const char *msg);

/* Sends every subscribed client a "migration" event now (and the final one if the
 * migration is over). On the loop thread. */
void api_migration_notify(struct api *api);

/* Sends every connected client the line doc (a JSON document, without the newline): an
 * event such as the VMM's "exit". On the loop thread, or once the loop is stopped (then
 * api_destroy gives the clients a short bounded wait to read it). NULL api is fine. */
void api_broadcast(struct api *api, const char *doc);

/* Closes the socket and removes its file. Call once the loop is stopped (or on its
 * thread). Clients still waiting for a migration's outcome get a last "migration" event
 * first, and every client up to a short bounded wait to read its pending responses. NULL is
 * fine. */
void api_destroy(struct api *api);

/* Name of a migration state in the protocol ("none", "active", "completed", ...). */
const char *api_migrate_state_name(enum api_migrate_state s);

#endif
