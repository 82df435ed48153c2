/* Each VM's VMM in a cgroup of its own, PARENT/NAME under the daemon's own cgroup, for its
 * accounting (CPU time, memory, tasks); limits are set through the same table later. Both
 * layouts: cgroup v2 (one unified hierarchy) and v1 (one hierarchy per controller, as on
 * hybrid hosts, where the v2 hierarchy holds no controller). */
#ifndef MABO_DAEMON_CGROUP_H
#define MABO_DAEMON_CGROUP_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

/* v1 hierarchies used: cpu, cpuacct, memory, pids. */
#define CG_DIRS_MAX 4

/* A VM's figures; -1 when not known. */
struct cg_stats {
	int64_t cpu_ns; /* CPU time used, all threads, user and system */
	int64_t memory; /* bytes charged (v1 memory.usage_in_bytes, v2 memory.current) */
	int64_t pids;	/* tasks (threads) */
};

struct cgroups;

/* What differs between the layouts. The paths are the parent directories (cg->dir[i]). */
struct cg_ops {
	const char *name; /* "v1", "v2" */
	/* Creates the VM's group(s); 0 or -errno. */
	int (*create)(const struct cgroups *cg, const char *vm);
	/* Moves the process (all its threads) into the VM's group(s). */
	int (*attach)(const struct cgroups *cg, const char *vm, pid_t pid);
	void (*stats)(const struct cgroups *cg, const char *vm, struct cg_stats *out);
	/* Removes the VM's group(s) (empty: its processes have ended). */
	int (*remove)(const struct cgroups *cg, const char *vm);
};

struct cgroups {
	const struct cg_ops *ops; /* NULL: no cgroups (none mounted or writable, or disabled) */
	int n;
	char ctrl[CG_DIRS_MAX][16]; /* v1: the controller of dir[i]; v2: "" */
	char dir[CG_DIRS_MAX][PATH_MAX];
};

/* Finds the layout under root (/sys/fs/cgroup) and creates PARENT in the daemon's own
 * cgroup of each hierarchy. parent "none": no cgroups. Returns 0 (cg->ops may be NULL when
 * there is no usable hierarchy, with a logged line) or -errno for a bad parent name. */
int cg_init(struct cgroups *cg, const char *root, const char *parent);

/* Creates the VM's group and moves pid into it. 0 or -errno. */
int cg_attach(const struct cgroups *cg, const char *vm, pid_t pid);
/* The VM's figures: from its cgroup, else (no cgroups) from /proc/PID of the VMM. */
void cg_stats(const struct cgroups *cg, const char *vm, pid_t pid, struct cg_stats *out);
void cg_remove(const struct cgroups *cg, const char *vm);
/* The VM's group in the first hierarchy, for the API (empty without cgroups). */
void cg_path(const struct cgroups *cg, const char *vm, char *buf, size_t len);

#endif
