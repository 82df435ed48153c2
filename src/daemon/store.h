/* The daemon's state in SQLite (STATE_DIR/mabod.db): VM definitions, desired and observed
 * state, the processes to re-adopt, and a bounded event log. Every change is one
 * transaction, durable when the call returns (WAL, synchronous=FULL). */
#ifndef MABO_DAEMON_STORE_H
#define MABO_DAEMON_STORE_H

#include "daemon/daemon.h"

/* Events kept in the log; older ones are dropped. */
#define STORE_EVENTS_MAX 1000

/* Opens (creating or upgrading) the database. Returns 0 or -errno, with a logged line. */
int store_open(struct mabod *d, const char *path);
void store_close(struct mabod *d);
/* Loads every VM into d->vms. */
int store_load(struct mabod *d);
/* Inserts a new VM (its id is set). -EEXIST when the name is taken. */
int store_insert(struct mabod *d, struct vmrec *vm);
/* Saves the VM's state members (desired, observed, processes, reason). */
int store_update(struct mabod *d, const struct vmrec *vm);
int store_delete(struct mabod *d, const struct vmrec *vm);
int store_event(struct mabod *d, int64_t time_ms, const char *vm, const char *kind,
		const char *message);
/* The last `limit` events, oldest first, as a JSON array. */
json_t *store_events(struct mabod *d, int limit);

#endif
