/* Long operations on a VM (snapshot, restore): the request answers 202 with the operation,
 * whose progress and outcome GET /v1/operations/ID reports. Kept in memory (the last
 * OPS_KEEP), not across a daemon restart. */
#ifndef MABO_DAEMON_OPS_H
#define MABO_DAEMON_OPS_H

#include <jansson.h>
#include <limits.h>
#include <stdint.h>

#include "daemon/daemon.h"

#define OPS_KEEP 100
/* A snapshot that has not finished by then fails (its VMM is left running). */
#define OPS_SNAPSHOT_TIMEOUT_MS (10 * 60 * 1000)

enum op_state { OP_RUNNING, OP_SUCCEEDED, OP_FAILED };

struct op {
	struct op *next;
	int64_t id;
	char kind[16]; /* "snapshot", "restore" */
	char vm[SPEC_NAME_MAX + 1];
	char path[PATH_MAX];
	enum op_state state;
	char error[512];
	int64_t started_at, finished_at; /* wall clock ms */
	int64_t deadline;		 /* monotonic ms */
	int64_t total;			 /* bytes expected (the guest's memory), for progress */
	int fd;				 /* a snapshot's control socket connection, or -1 */
	char buf[1024];
	size_t len;
};

/* Starts a snapshot of the running or paused VM into path (absolute). Returns the
 * operation, or NULL with an HTTP status (*status) and a message in err. */
struct op *ops_snapshot(struct mabod *d, struct vmrec *vm, const char *path, int *status, char *err,
			size_t len);
/* Starts the stopped VM from the snapshot at path. */
struct op *ops_restore(struct mabod *d, struct vmrec *vm, const char *path, int *status, char *err,
		       size_t len);
struct op *ops_find(struct mabod *d, int64_t id);
/* Whether an operation runs on the VM. */
bool ops_busy(struct mabod *d, const char *vm);
json_t *ops_json(const struct op *op);
/* Descriptors to poll (POLLIN) into fds, at most max; returns how many. */
size_t ops_poll_fds(struct mabod *d, int *fds, size_t max);
/* Reads what the snapshots' sockets have, and times out. */
void ops_run(struct mabod *d);
/* An event of the VM (mabod_event's kind): a restore ends when its VM runs or ends. */
void ops_vm_event(struct mabod *d, const char *vm, const char *kind, const char *reason);
void ops_free_all(struct mabod *d);
/* A restore has succeeded once its VMM has loaded the state (it reports running or paused,
 * no longer incoming). Returns ms until it wants to look again (-1: nothing to do). */
int64_t ops_tick(struct mabod *d);

#endif
