/* Per-VM cgroups (cgroup.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "daemon/cgroup.h"

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, text, strlen(text));
	int ret = n == (ssize_t)strlen(text) ? 0 : n < 0 ? -errno : -EIO;
	close(fd);
	return ret;
}

/* The first number in the file, or after `key ` on a line of it; -1 if none. */
static int64_t read_num(const char *path, const char *key)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	const char *p = buf;
	if (key) {
		size_t k = strlen(key);
		for (p = buf; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
			if (strncmp(p, key, k) == 0 && p[k] == ' ')
				break;
		if (!p)
			return -1;
		p += k + 1;
	}
	char *end;
	long long v = strtoll(p, &end, 10);
	return end == p ? -1 : (int64_t)v;
}

static int mkdirs(const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return mkdir(buf, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

static int vm_dir(const struct cgroups *cg, int i, const char *vm, const char *file, char *buf,
		  size_t len)
{
	int n = snprintf(buf, len, "%s/%s%s%s", cg->dir[i], vm, file ? "/" : "", file ? file : "");
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ---- Both layouts: a directory per hierarchy, a pid into cgroup.procs. ---- */

static int any_create(const struct cgroups *cg, const char *vm)
{
	char path[PATH_MAX];
	for (int i = 0; i < cg->n; i++) {
		if (vm_dir(cg, i, vm, NULL, path, sizeof(path)) < 0)
			return -ENAMETOOLONG;
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -errno;
	}
	return 0;
}

static int any_attach(const struct cgroups *cg, const char *vm, pid_t pid)
{
	char path[PATH_MAX], text[32];
	snprintf(text, sizeof(text), "%d", (int)pid);
	for (int i = 0; i < cg->n; i++) {
		int ret = vm_dir(cg, i, vm, "cgroup.procs", path, sizeof(path));
		if (ret == 0)
			ret = write_file(path, text);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int any_remove(const struct cgroups *cg, const char *vm)
{
	char path[PATH_MAX];
	int ret = 0;
	for (int i = 0; i < cg->n; i++)
		if (vm_dir(cg, i, vm, NULL, path, sizeof(path)) == 0 && rmdir(path) < 0 &&
		    errno != ENOENT)
			ret = -errno;
	return ret;
}

/* ---- v1: a hierarchy per controller. ---- */

static void v1_stats(const struct cgroups *cg, const char *vm, struct cg_stats *out)
{
	char path[PATH_MAX];
	for (int i = 0; i < cg->n; i++) {
		const char *c = cg->ctrl[i];
		if (strcmp(c, "cpuacct") == 0 &&
		    vm_dir(cg, i, vm, "cpuacct.usage", path, sizeof(path)) == 0)
			out->cpu_ns = read_num(path, NULL);
		else if (strcmp(c, "memory") == 0 &&
			 vm_dir(cg, i, vm, "memory.usage_in_bytes", path, sizeof(path)) == 0)
			out->memory = read_num(path, NULL);
		else if (strcmp(c, "pids") == 0 &&
			 vm_dir(cg, i, vm, "pids.current", path, sizeof(path)) == 0)
			out->pids = read_num(path, NULL);
	}
}

static const struct cg_ops v1_ops = {
	.name = "v1",
	.create = any_create,
	.attach = any_attach,
	.stats = v1_stats,
	.remove = any_remove,
};

/* ---- v2: one hierarchy; cpu.stat is there without the cpu controller. ---- */

static void v2_stats(const struct cgroups *cg, const char *vm, struct cg_stats *out)
{
	char path[PATH_MAX];
	if (vm_dir(cg, 0, vm, "cpu.stat", path, sizeof(path)) == 0) {
		int64_t us = read_num(path, "usage_usec");
		out->cpu_ns = us < 0 ? -1 : us * 1000;
	}
	if (vm_dir(cg, 0, vm, "memory.current", path, sizeof(path)) == 0)
		out->memory = read_num(path, NULL);
	if (vm_dir(cg, 0, vm, "pids.current", path, sizeof(path)) == 0)
		out->pids = read_num(path, NULL);
}

static const struct cg_ops v2_ops = {
	.name = "v2",
	.create = any_create,
	.attach = any_attach,
	.stats = v2_stats,
	.remove = any_remove,
};

/* The daemon's own cgroup in the hierarchy with controller ctrl (v1), or in the unified
 * one (ctrl NULL), from /proc/self/cgroup. */
static int own_cgroup(const char *ctrl, char *out, size_t len)
{
	char line[4096];
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return -errno;
	int ret = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		char *c = strchr(line, ':'), *p = c ? strchr(c + 1, ':') : NULL;
		if (!p)
			continue;
		*p++ = 0;
		c++;
		bool match = false;
		if (!ctrl) {
			match = *c == 0;
		} else {
			for (char *save, *t = strtok_r(c, ",", &save); t;
			     t = strtok_r(NULL, ",", &save))
				match |= strcmp(t, ctrl) == 0;
		}
		if (match) {
			snprintf(out, len, "%s", strcmp(p, "/") == 0 ? "" : p);
			ret = 0;
			break;
		}
	}
	fclose(f);
	return ret;
}

static bool add_dir(struct cgroups *cg, const char *ctrl, const char *base, const char *parent)
{
	char own[PATH_MAX / 2], dir[PATH_MAX];
	if (own_cgroup(ctrl[0] ? ctrl : NULL, own, sizeof(own)) < 0)
		return false;
	int n = snprintf(dir, sizeof(dir), "%s%s/%s", base, own, parent);
	if (n < 0 || (size_t)n >= sizeof(dir) - 80)
		return false;
	int ret = mkdirs(dir);
	if (ret < 0) {
		log_warn("cgroup '%s': %s", dir, strerror(-ret));
		return false;
	}
	snprintf(cg->ctrl[cg->n], sizeof(cg->ctrl[0]), "%s", ctrl);
	snprintf(cg->dir[cg->n], sizeof(cg->dir[0]), "%s", dir);
	cg->n++;
	return true;
}

int cg_init(struct cgroups *cg, const char *root, const char *parent)
{
	char path[PATH_MAX];
	memset(cg, 0, sizeof(*cg));
	if (strcmp(parent, "none") == 0)
		return 0;
	if (!*parent || strlen(parent) > 63 || strchr(parent, '/') || parent[0] == '.')
		return -EINVAL;
	snprintf(path, sizeof(path), "%s/cgroup.controllers", root);
	if (access(path, F_OK) == 0) {
		char own[PATH_MAX / 2], base[PATH_MAX];
		if (own_cgroup(NULL, own, sizeof(own)) < 0)
			own[0] = 0;
		/* Memory and task accounting need their controllers enabled in every level
		 * above the VM's group. The daemon's own group may hold processes, which v2
		 * forbids for a group that hands controllers down; then only cpu.stat counts. */
		snprintf(base, sizeof(base), "%s%s/cgroup.subtree_control", root, own);
		write_file(base, "+memory");
		write_file(base, "+pids");
		if (add_dir(cg, "", root, parent)) {
			snprintf(base, sizeof(base), "%s/cgroup.subtree_control", cg->dir[0]);
			write_file(base, "+memory");
			write_file(base, "+pids");
			cg->ops = &v2_ops;
		}
	} else {
		static const char *const ctrls[] = { "cpu", "cpuacct", "memory", "pids" };
		char real[CG_DIRS_MAX][PATH_MAX];
		for (size_t i = 0; i < sizeof(ctrls) / sizeof(ctrls[0]); i++) {
			char base[PATH_MAX / 2];
			snprintf(base, sizeof(base), "%s/%s", root, ctrls[i]);
			snprintf(path, sizeof(path), "%s/cgroup.procs", base);
			if (access(path, W_OK) < 0 || !realpath(base, real[cg->n]))
				continue;
			/* cpu and cpuacct are often one hierarchy (cpu,cpuacct): one group. */
			bool seen = false;
			for (int j = 0; j < cg->n; j++)
				seen |= strcmp(real[j], real[cg->n]) == 0;
			if (seen) {
				if (strcmp(ctrls[i], "cpuacct") == 0)
					for (int j = 0; j < cg->n; j++)
						if (strcmp(real[j], real[cg->n]) == 0)
							snprintf(cg->ctrl[j], sizeof(cg->ctrl[j]),
								 "cpuacct");
				continue;
			}
			add_dir(cg, ctrls[i], base, parent);
		}
		if (cg->n)
			cg->ops = &v1_ops;
	}
	if (cg->ops)
		log_info("cgroups %s: %s/VM%s", cg->ops->name, cg->dir[0],
			 cg->n > 1 ? " (and the other controllers)" : "");
	else
		log_warn("no writable cgroup hierarchy under '%s': VMs run without cgroups", root);
	return 0;
}

int cg_attach(const struct cgroups *cg, const char *vm, pid_t pid)
{
	if (!cg->ops)
		return 0;
	int ret = cg->ops->create(cg, vm);
	return ret < 0 ? ret : cg->ops->attach(cg, vm, pid);
}

/* Without cgroups: the VMM's own figures (utime + stime, and its resident set). */
static void proc_stats(pid_t pid, struct cg_stats *out)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	unsigned long long utime, stime, threads, rss;
	/* Fields 14, 15, 20 and 24, counted from field 3 after the command name. */
	if (!p || sscanf(p + 2,
			 "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
			 "%llu %*d %*u %*u %llu",
			 &utime, &stime, &threads, &rss) != 4)
		return;
	long hz = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	out->cpu_ns = (int64_t)((utime + stime) * (1000000000ULL / (unsigned long long)hz));
	out->memory = (int64_t)rss * page;
	out->pids = (int64_t)threads;
}

void cg_stats(const struct cgroups *cg, const char *vm, pid_t pid, struct cg_stats *out)
{
	out->cpu_ns = out->memory = out->pids = -1;
	if (cg->ops)
		cg->ops->stats(cg, vm, out);
	else if (pid > 0)
		proc_stats(pid, out);
}

void cg_remove(const struct cgroups *cg, const char *vm)
{
	if (!cg->ops)
		return;
	int ret = cg->ops->remove(cg, vm);
	if (ret < 0)
		log_warn("vm '%s': its cgroup cannot be removed: %s", vm, strerror(-ret));
}

void cg_path(const struct cgroups *cg, const char *vm, char *buf, size_t len)
{
	buf[0] = 0;
	if (cg->ops)
		vm_dir(cg, 0, vm, NULL, buf, len);
}
