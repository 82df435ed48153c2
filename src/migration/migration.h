/* Live migration and snapshots of a VM.
 *
 * Source side: a job on its own thread (migration_start, migration_snapshot_start) that
 * the control socket starts, watches (migration_get_status) and cancels. A migration
 * sends the guest's memory while it runs (pre-copy: a full pass, then passes of the pages
 * dirtied meanwhile), then pauses the vCPUs, drains and flushes the disks, sends the last
 * pages with the CPU and device state, and waits for the destination's acknowledgement.
 * Any failure before it resumes the guest here as if nothing happened; after it the VM
 * ends here (the process exits 0) and runs on the destination, which runs it only once
 * this side has let go (GO). Post-copy hands over at once and sends the pages after.
 *
 * Destination side: migration_incoming (mabo-vmm --incoming) and migration_restore
 * (--restore) fill a VM made with the same options but not started; the caller then starts
 * its vCPUs. See docs/migration.md for the stream. */
#ifndef MABO_MIGRATION_MIGRATION_H
#define MABO_MIGRATION_MIGRATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct migration;

struct migrate_params {
	char uri[256];		  /* tcp:HOST:PORT or unix:PATH */
	uint32_t downtime_ms;	  /* target for the final pause; 0: the default (300) */
	uint32_t bandwidth_mibps; /* cap; 0: none */
	bool compress;		  /* zstd on non-zero pages */
	bool postcopy;		  /* hand the VM over at once; pages follow on demand */
};

enum migrate_state {
	MIGRATE_NONE,
	MIGRATE_ACTIVE,
	MIGRATE_COMPLETED,
	MIGRATE_FAILED,
	MIGRATE_CANCELLED,
};

struct migrate_status {
	enum migrate_state state;
	bool snapshot;		  /* the job is a snapshot, not a migration */
	unsigned pass;		  /* current pre-copy pass (1 = the full pass) */
	uint64_t remaining_pages; /* dirty pages not yet sent at the last count */
	uint64_t dirty_rate_pps;  /* pages dirtied per second in the last pass */
	uint64_t bandwidth_mibps; /* measured in the last pass */
	uint64_t expected_downtime_ms;
	uint64_t total_ms;     /* since the start (to the end once finished) */
	uint64_t downtime_us;  /* vCPUs paused here to running there (when known) */
	uint64_t bytes;	       /* sent */
	unsigned rounds;       /* pre-copy passes done */
	unsigned throttle_pct; /* auto-converge: share of time the vCPUs are held */
	bool postcopy_active;  /* the guest runs on the destination, pages still go */
	char error[200];
};

const char *migrate_state_name(enum migrate_state s);

/* The source side of vm (one per VM), with the migration credentials of vm->cfg
 * (--migration-key, --migration-tls: migration/link.h), which both sides use. 0, or -errno
 * after logging one line (-ENOMEM without). */
int migration_create(struct vm *vm, struct migration **out) __attribute__((warn_unused_result));
/* Ends a job in progress (cancelled, or, past its hand-over, told to stop trying) and
 * waits for it; the status stays readable. NULL is fine. */
void migration_shutdown(struct migration *m);
/* migration_shutdown, then frees m; NULL is fine. */
void migration_destroy(struct migration *m);

/* Starts a migration (returns at once). 0, or -errno with a one-line reason in err. */
int migration_start(struct migration *m, const struct migrate_params *p, char *err, size_t errlen);
/* Starts writing a snapshot to path (the guest pauses while it is written, then runs
 * on). 0, or -errno with a reason in err. When done is not NULL it is called once the
 * snapshot is written or has failed (err 0 or -errno, msg the reason), on the job's thread. */
typedef void (*migration_done_fn)(void *opaque, int err, const char *msg);
int migration_snapshot_start(struct migration *m, const char *path, migration_done_fn done,
			     void *opaque, char *err, size_t errlen);
/* Asks the job to stop; the guest keeps running here. -ENOENT when nothing runs, -EBUSY
 * when the migration is past the point of no return (its state is sent). */
int migration_cancel(struct migration *m);
void migration_get_status(struct migration *m, struct migrate_status *st);
/* Switches the running migration to post-copy: the current pass stops, the guest pauses,
 * and the pages not yet current on the destination follow after it runs there. -ENOENT
 * when no migration runs, -EBUSY when it is past its hand-over. */
int migration_switch_postcopy(struct migration *m);

/* Destination: waits on uri for a migration into vm (made, devices created, vCPUs not
 * started, event loop running) and loads it; peers that fail the TLS handshake or send no
 * valid stream are turned away (one line each) and the wait goes on, for vm->cfg->timeout
 * seconds at most (then -ETIME). 0 when the VM is complete and may run; -errno after
 * logging one line (the VM must not run). */
int migration_incoming(struct vm *vm, const char *uri) __attribute__((warn_unused_result));
/* Destination, post-copy: true while pages are still to come, with how many and whether
 * the link to the source is up. */
bool migration_incoming_status(struct migration *m, uint64_t *missing, bool *link_up);
/* Destination: ends the link to the source (called when the VM ends; a post-copy guest's
 * lacking pages then read as zeros, so that its vCPUs can stop). */
void migration_stop_incoming(struct migration *m);
/* Loads the snapshot at path into vm (as migration_incoming). */
int migration_restore(struct vm *vm, const char *path) __attribute__((warn_unused_result));

#endif
