/* mabod: the host daemon. One thread runs everything (the HTTP server, supervision, timers)
 * from one poll loop, so the VM records need no locks. */
#ifndef MABO_DAEMON_DAEMON_H
#define MABO_DAEMON_DAEMON_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/cgroup.h"
#include "daemon/spec.h"

struct sqlite3;
struct sse_client;
struct op;
struct MHD_Daemon;

/* What the daemon sees of a VM. Stored as text: the names are the API's. */
enum vm_state {
	VM_STOPPED,
	VM_STARTING, /* the VMM runs, its control socket has not answered yet */
	VM_RUNNING,
	VM_PAUSED,
	VM_STOPPING, /* asked to quit; killed at its deadline */
	VM_CRASHED,  /* the VMM ended with a status other than 0, or by a signal */
	VM_MIGRATING,
};

enum vm_restart {
	RESTART_NEVER,
	RESTART_ON_FAILURE, /* after a crash, with a back-off */
	RESTART_ALWAYS,	    /* after any end the daemon did not ask for */
};

struct vmrec {
	struct vmrec *next;
	int64_t id;
	char name[SPEC_NAME_MAX + 1];
	char uuid[37];
	json_t *spec; /* checked (spec_check) */
	bool autostart;
	enum vm_restart restart;
	bool want_running; /* the desired state */
	enum vm_state state;
	char reason[256]; /* how the last run ended, or why it could not start */
	/* The process: the monitor (a small process of the daemon's that is the VMM's parent,
	 * keeps its console log and writes its exit status) and the VMM. Start times
	 * (/proc/PID/stat, clock ticks since boot) make a recycled pid harmless. */
	pid_t shim_pid, pid;
	uint64_t shim_start, pid_start;
	int shim_fd, vmm_fd; /* pidfds, -1 when not watched */
	int64_t started_at;  /* wall clock, ms */
	/* Timers (monotonic ms, 0 = none). */
	int64_t stop_deadline;
	int64_t pressed_at; /* stopping: when the power button was last pressed, 0 = not yet */
	int64_t restart_at;
	int64_t backoff_ms;
	int64_t starting_deadline;
	int restarts;
	/* The last figures of its cgroup (mabod_sample, about once a second), and the share
	 * of one host CPU it used between the last two. */
	struct cg_stats usage;
	int64_t usage_at; /* monotonic ms, 0 = none yet */
	double cpu_percent;
	/* The next start restores this snapshot (set by a restore operation for its start). */
	char restore_from[PATH_MAX];
};

struct mabod {
	char state_dir[1024];
	char run_dir[128];  /* short: sockets live under it */
	char vmm[PATH_MAX]; /* the mabo-vmm binary */
	struct sqlite3 *db;
	struct MHD_Daemon *http;
	int listen_fd;
	int lock_fd;
	int signal_fd;
	bool quit;
	struct vmrec *vms;
	int64_t started_at;  /* wall clock, ms */
	int64_t console_cap; /* bytes per console log file */
	struct cgroups cg;
	int64_t sampled_at; /* monotonic ms of the last mabod_sample */
	/* Clients following the events (http.c); http_wake: one was resumed and the HTTP
	 * server must run before the next wait. */
	struct sse_client *sse;
	bool http_wake;
	int64_t event_seq;
	struct op *ops; /* long operations, newest first (ops.h) */
	int64_t op_seq;
};

const char *vm_state_name(enum vm_state s);
int vm_state_parse(const char *s, enum vm_state *out);
const char *vm_restart_name(enum vm_restart r);
int vm_restart_parse(const char *s, enum vm_restart *out);

int64_t now_ms(void);  /* monotonic */
int64_t wall_ms(void); /* realtime */

/* Appends to the event log (bounded) and logs the line on stderr. */
void mabod_event(struct mabod *d, const struct vmrec *vm, const char *kind, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Reads every running VM's cgroup figures (CPU time, memory, tasks) and its CPU share. */
void mabod_sample(struct mabod *d);

struct vmrec *mabod_find(struct mabod *d, const char *name);

#endif
