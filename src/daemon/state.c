/* Names of the VM states and restart policies (the API's and the database's words), and the
 * daemon's clocks. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "daemon/daemon.h"

static const char *const state_names[] = {
	[VM_STOPPED] = "stopped",     [VM_STARTING] = "starting", [VM_RUNNING] = "running",
	[VM_PAUSED] = "paused",	      [VM_STOPPING] = "stopping", [VM_CRASHED] = "crashed",
	[VM_MIGRATING] = "migrating",
};
static const char *const restart_names[] = {
	[RESTART_NEVER] = "never",
	[RESTART_ON_FAILURE] = "on-failure",
	[RESTART_ALWAYS] = "always",
};

const char *vm_state_name(enum vm_state s)
{
	return state_names[s];
}

int vm_state_parse(const char *s, enum vm_state *out)
{
	for (size_t i = 0; s && i < sizeof(state_names) / sizeof(state_names[0]); i++) {
		if (strcmp(s, state_names[i]) == 0) {
			*out = (enum vm_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *vm_restart_name(enum vm_restart r)
{
	return restart_names[r];
}

int vm_restart_parse(const char *s, enum vm_restart *out)
{
	for (size_t i = 0; s && i < sizeof(restart_names) / sizeof(restart_names[0]); i++) {
		if (strcmp(s, restart_names[i]) == 0) {
			*out = (enum vm_restart)i;
			return 0;
		}
	}
	return -EINVAL;
}

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
