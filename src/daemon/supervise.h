/* Supervision: each VM runs as a mabo-vmm process under a small monitor process (forked from
 * the daemon, in its own session) that is the VMM's parent, writes its console output to a
 * size-capped log and its exit status to a file. Neither depends on the daemon: a daemon
 * killed with SIGKILL leaves them running, and the next one re-adopts them. */
#ifndef MABO_DAEMON_SUPERVISE_H
#define MABO_DAEMON_SUPERVISE_H

#include <stddef.h>

#include "daemon/daemon.h"

/* Time the VMM's control socket gets to answer once started before the VMM is killed. */
#define SUP_START_TIMEOUT_MS 30000
/* Default time a guest gets to stop before it is killed. */
#define SUP_STOP_TIMEOUT_MS 60000
/* While stopping, how often the power button is pressed again. */
#define SUP_REPRESS_MS 5000
/* Restart back-off: doubles from the first to the last; reset after a run this long. */
#define SUP_BACKOFF_FIRST_MS 1000
#define SUP_BACKOFF_MAX_MS 60000
#define SUP_BACKOFF_RESET_MS 60000
/* mabo-vmm's exit status when its VM migrated away (README, "Exit status"). */
#define SUP_STATUS_MIGRATED 4

/* RUN_DIR/vms/NAME/FILE into buf. */
int sup_path(const struct mabod *d, const struct vmrec *vm, const char *file, char *buf,
	     size_t len);
/* Starts the VM's VMM. Returns 0 (state starting) or -errno with a message in err. */
int sup_start(struct mabod *d, struct vmrec *vm, char *err, size_t len);
/* Asks the guest to power off (the VMM's "powerdown": its power button), resuming a paused
 * guest first; the VMM is killed after timeout_ms if it has not ended by then. */
int sup_stop(struct mabod *d, struct vmrec *vm, int64_t timeout_ms, char *err, size_t len);
/* SIGKILL to the VMM. */
int sup_kill(struct mabod *d, struct vmrec *vm, char *err, size_t len);
/* Sends {"cmd":cmd} on the VMM's control socket; *reply (may be NULL) gets the response. */
int sup_vmm_request(struct mabod *d, struct vmrec *vm, const char *cmd, json_t **reply, char *err,
		    size_t len);
/* At daemon start: re-adopts the VM's processes if they still run (pid and start time
 * match), or records how it ended while no daemon watched. */
void sup_adopt(struct mabod *d, struct vmrec *vm);
/* The descriptor to poll for the VM's end (-1: nothing runs). */
int sup_watch_fd(const struct vmrec *vm);
/* The watched process ended. */
void sup_on_exit(struct mabod *d, struct vmrec *vm);
/* Timers: start probes, stop deadlines, restarts. Returns ms until it wants to run again. */
int64_t sup_tick(struct mabod *d);
/* The monitor process's main (mabod --monitor ...). */
int sup_monitor_main(int argc, char **argv);
/* Closes the VM's descriptors (the processes go on). */
void sup_release(struct vmrec *vm);

#endif
