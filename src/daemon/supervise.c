/* Supervision of the VMM processes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "daemon/store.h"
#include "daemon/supervise.h"

static void seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

static int pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_kill(int fd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

/* A numeric field of /proc/PID/stat (4: the parent, 22: the start time in clock ticks since
 * boot); 0 if the process is gone. */
static uint64_t proc_stat(pid_t pid, int want)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* The command name (field 2) may hold spaces and parentheses: skip to the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return 0;
	p++;
	for (int field = 3; field < want; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return 0;
	}
	return strtoull(p + 1, NULL, 10);
}

static uint64_t proc_start(pid_t pid)
{
	return proc_stat(pid, 22);
}

/* Whether pid is a monitor (mabod --monitor DIR ...) of the VM directory dir. */
static bool proc_is_monitor(pid_t pid, const char *dir)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	size_t a = strlen(buf) + 1;
	if ((size_t)n <= a || strcmp(buf + a, "--monitor") != 0)
		return false;
	a += strlen("--monitor") + 1;
	return (size_t)n > a && strcmp(buf + a, dir) == 0;
}

/* A pidfd for pid if it is still the process that started at `start`. Checked after the
 * pidfd is open, so a pid recycled meanwhile is not taken for ours. */
static int proc_claim(pid_t pid, uint64_t start)
{
	if (pid <= 0 || !start || proc_start(pid) != start)
		return -1;
	int fd = pidfd_open(pid);
	if (fd < 0)
		return -1;
	if (proc_start(pid) != start) {
		close(fd);
		return -1;
	}
	return fd;
}

int sup_path(const struct mabod *d, const struct vmrec *vm, const char *file, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/vms/%s%s%s", d->run_dir, vm->name, file ? "/" : "",
			 file ? file : "");
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int sup_watch_fd(const struct vmrec *vm)
{
	return vm->shim_fd >= 0 ? vm->shim_fd : vm->vmm_fd;
}

void sup_release(struct vmrec *vm)
{
	if (vm->shim_fd >= 0)
		close(vm->shim_fd);
	if (vm->vmm_fd >= 0)
		close(vm->vmm_fd);
	vm->shim_fd = vm->vmm_fd = -1;
}

static void save(struct mabod *d, struct vmrec *vm)
{
	if (store_update(d, vm) < 0)
		log_error("vm '%s': its state could not be saved", vm->name);
}

/* ---- The monitor: runs in a child of the daemon, never returns. ---- */

static int open_log(const char *path)
{
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Console output into console.log; past `cap` bytes it becomes console.log.1 (replacing the
 * previous one) and a new console.log starts, so at most twice cap is kept. */
struct console_log {
	const char *dir;
	int fd;
	int64_t size, cap;
};

static void console_write(struct console_log *c, const char *p, size_t n)
{
	char cur[PATH_MAX], old[PATH_MAX];
	if (c->size + (int64_t)n > c->cap && c->size > 0) {
		snprintf(cur, sizeof(cur), "%s/console.log", c->dir);
		snprintf(old, sizeof(old), "%s/console.log.1", c->dir);
		if (rename(cur, old) == 0) {
			close(c->fd);
			c->fd = open_log(cur);
			c->size = 0;
		}
	}
	if (c->fd >= 0)
		write_all(c->fd, p, n);
	c->size += (int64_t)n;
}

static void shim_write_exit(const char *dir, int status)
{
	char tmp[PATH_MAX], path[PATH_MAX], line[64];
	snprintf(tmp, sizeof(tmp), "%s/exit.tmp", dir);
	snprintf(path, sizeof(path), "%s/exit", dir);
	int n = WIFEXITED(status) ? snprintf(line, sizeof(line), "exited %d\n", WEXITSTATUS(status))
				  : snprintf(line, sizeof(line), "signal %d\n", WTERMSIG(status));
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return;
	write_all(fd, line, (size_t)n);
	fsync(fd);
	close(fd);
	rename(tmp, path);
}

/* In the child of fork: detaches from the daemon and executes `mabod --monitor`, so the
 * monitor holds nothing of the daemon's (its database, its listening socket, its memory)
 * and shows as what it is in ps. */
static __attribute__((noreturn)) void shim_exec(const char *dir, char **argv, int report,
						int64_t cap)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	/* Its own session: no terminal signal, no signal to the daemon's group reaches it. */
	setsid();
	int null = open("/dev/null", O_RDWR);
	if (null < 0)
		_exit(127);
	dup2(null, 0);
	dup2(null, 1);
	dup2(null, 2);
	/* The report pipe becomes descriptor 3, kept across exec. */
	if (report != 3)
		dup2(report, 3);
	else
		fcntl(3, F_SETFD, 0);
	close_range(4, ~0U, 0);
	size_t n = 0;
	while (argv[n])
		n++;
	char **args = calloc(n + 5, sizeof(*args));
	char capstr[32];
	if (!args)
		_exit(127);
	snprintf(capstr, sizeof(capstr), "%lld", (long long)cap);
	args[0] = "mabod";
	args[1] = "--monitor";
	args[2] = (char *)dir;
	args[3] = capstr;
	memcpy(args + 4, argv, (n + 1) * sizeof(*args));
	execv("/proc/self/exe", args);
	_exit(127);
}

int sup_monitor_main(int argc, char **argv)
{
	/* mabod --monitor DIR CAP VMM [ARG...], with the report pipe on descriptor 3. */
	if (argc < 5 || strcmp(argv[1], "--monitor") != 0)
		return 2;
	const char *dir = argv[2];
	int64_t cap = strtoll(argv[3], NULL, 10);
	argv += 4;
	int report = 3;
	fcntl(report, F_SETFD, FD_CLOEXEC);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	char path[PATH_MAX];
	int out[2];
	snprintf(path, sizeof(path), "%s/vmm.log", dir);
	int errlog = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	snprintf(path, sizeof(path), "%s/console.log", dir);
	struct console_log con = { .dir = dir, .fd = open_log(path), .cap = cap };
	struct stat st;
	if (con.fd >= 0 && fstat(con.fd, &st) == 0)
		con.size = st.st_size;
	if (null < 0 || errlog < 0 || pipe2(out, O_CLOEXEC) < 0)
		return 127;

	pid_t vmm = fork();
	if (vmm < 0)
		return 127;
	if (vmm == 0) {
		dup2(null, 0);
		dup2(out[1], 1);
		dup2(errlog, 2);
		execv(argv[0], argv);
		dprintf(2, "mabod: cannot run '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(out[1]);
	write_all(report, (const char *)&vmm, sizeof(vmm));
	close(report);

	int vfd = pidfd_open(vmm);
	bool open_out = true;
	char buf[16384];
	for (;;) {
		struct pollfd p[2] = { { .fd = open_out ? out[0] : -1, .events = POLLIN },
				       { .fd = vfd, .events = POLLIN } };
		if (poll(p, 2, vfd < 0 ? 200 : -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents) {
			ssize_t n = read(out[0], buf, sizeof(buf));
			if (n > 0)
				console_write(&con, buf, (size_t)n);
			else if (n == 0 || errno != EINTR)
				open_out = false;
		}
		/* The VMM ended: what it wrote last is in the pipe still. Without a pidfd, the
		 * VMM is looked at every 200 ms (and not reaped yet). */
		siginfo_t si = { .si_pid = 0 };
		if (p[1].revents ||
		    (vfd < 0 && waitid(P_PID, (id_t)vmm, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		     si.si_pid == vmm))
			break;
	}
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	for (ssize_t n; open_out && (n = read(out[0], buf, sizeof(buf))) > 0;)
		console_write(&con, buf, (size_t)n);
	int status = 0;
	while (waitpid(vmm, &status, 0) < 0 && errno == EINTR)
		;
	shim_write_exit(dir, status);
	return 0;
}

/* ---- The daemon's side. ---- */

static int mkdirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return mkdir(buf, mode) < 0 && errno != EEXIST ? -errno : 0;
}

/* Whether a server accepts connections on the Unix socket at path (even one too busy or
 * stopped to answer). */
static bool listening(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	/* A full backlog (EAGAIN) is a listener too. */
	bool yes = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN;
	close(fd);
	return yes;
}

int sup_start(struct mabod *d, struct vmrec *vm, char *err, size_t len)
{
	char dir[PATH_MAX], sock[PATH_MAX], path[PATH_MAX];
	if (sup_path(d, vm, NULL, dir, sizeof(dir)) < 0 ||
	    sup_path(d, vm, "api.sock", sock, sizeof(sock)) < 0) {
		seterr(err, len, "vm '%s': run directory path too long", vm->name);
		return -ENAMETOOLONG;
	}
	int ret = mkdirs(dir, 0750);
	if (ret < 0) {
		seterr(err, len, "vm '%s': cannot create '%s': %s", vm->name, dir, strerror(-ret));
		return ret;
	}
	/* A VMM that answers on the VM's control socket though the daemon knows of none (one
	 * started by hand, or left by a daemon killed before it recorded it) would be a second
	 * copy of the VM: refuse. */
	if (listening(sock)) {
		json_t *info;
		char e2[256];
		long long pid = 0;
		if (sup_vmm_request(d, vm, "info", &info, e2, sizeof(e2)) == 0) {
			pid = json_integer_value(json_object_get(info, "pid"));
			json_decref(info);
		}
		if (pid > 0)
			seterr(err, len, "vm '%s': a VMM (pid %lld) already answers on '%s'",
			       vm->name, pid, sock);
		else
			seterr(err, len, "vm '%s': a process already listens on '%s'", vm->name,
			       sock);
		return -EBUSY;
	}
	/* What a previous run left: its status and its control socket (no VMM answers it). */
	sup_path(d, vm, "exit", path, sizeof(path));
	unlink(path);
	unlink(sock);

	char **argv = spec_argv(vm->spec, d->vmm, sock);
	if (argv && vm->restore_from[0])
		argv = spec_argv_add(argv, "--restore", vm->restore_from);
	int rep[2];
	if (!argv || pipe2(rep, O_CLOEXEC) < 0) {
		ret = argv ? -errno : -ENOMEM;
		spec_argv_free(argv);
		seterr(err, len, "vm '%s': cannot start: %s", vm->name, strerror(-ret));
		return ret;
	}
	/* The daemon is single-threaded: the child may go on running the daemon's code. */
	pid_t shim = fork();
	if (shim < 0) {
		ret = -errno;
		close(rep[0]);
		close(rep[1]);
		spec_argv_free(argv);
		seterr(err, len, "vm '%s': cannot fork: %s", vm->name, strerror(-ret));
		return ret;
	}
	if (shim == 0) {
		close(rep[0]);
		shim_exec(dir, argv, rep[1], d->console_cap);
	}
	close(rep[1]);
	spec_argv_free(argv);
	pid_t vmm = 0;
	ssize_t n;
	while ((n = read(rep[0], &vmm, sizeof(vmm))) < 0 && errno == EINTR)
		;
	close(rep[0]);
	if (n != sizeof(vmm)) {
		waitpid(shim, NULL, 0);
		seterr(err, len, "vm '%s': the VMM's monitor failed to start it", vm->name);
		return -EIO;
	}
	vm->shim_pid = shim;
	vm->shim_start = proc_start(shim);
	vm->shim_fd = pidfd_open(shim);
	vm->pid = vmm;
	vm->pid_start = proc_start(vmm);
	vm->vmm_fd = pidfd_open(vmm);
	/* Into its cgroup as soon as its pid is known: cgroup.procs moves every thread it has
	 * made so far, those made later are born there. Accounting only: a VM runs without. */
	ret = cg_attach(&d->cg, vm->name, vmm);
	if (ret < 0)
		log_warn("vm '%s': not in a cgroup: %s", vm->name, strerror(-ret));
	vm->usage_at = 0;
	vm->state = VM_STARTING;
	vm->want_running = true;
	vm->started_at = wall_ms();
	vm->starting_deadline = now_ms() + SUP_START_TIMEOUT_MS;
	vm->stop_deadline = 0;
	vm->restart_at = 0;
	vm->reason[0] = 0;
	save(d, vm);
	mabod_event(d, vm, "start", "vm '%s': started, pid %d", vm->name, (int)vmm);
	return 0;
}

int sup_vmm_request(struct mabod *d, struct vmrec *vm, const char *cmd, json_t **reply, char *err,
		    size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[PATH_MAX], buf[65536];
	size_t got = 0;
	int ret;
	if (reply)
		*reply = NULL;
	if (sup_path(d, vm, "api.sock", path, sizeof(path)) < 0 ||
	    strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* The VMM answers from its event loop at once; a VMM that does not is not waited for
	 * long, the daemon has other VMs. */
	struct timeval tv = { .tv_sec = 1 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		seterr(err, len, "vm '%s': control socket: %s", vm->name, strerror(-ret));
		goto out;
	}
	int n = snprintf(buf, sizeof(buf), "{\"cmd\":\"%s\"}\n", cmd);
	if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n) {
		ret = -EIO;
		seterr(err, len, "vm '%s': control socket: cannot send", vm->name);
		goto out;
	}
	for (;;) {
		ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (r <= 0) {
			ret = r == 0 ? -ECONNRESET : -errno;
			seterr(err, len, "vm '%s': control socket: %s", vm->name,
			       r == 0 ? "closed without an answer" : strerror(errno));
			goto out;
		}
		got += (size_t)r;
		buf[got] = 0;
		if (strchr(buf, '\n'))
			break;
		if (got == sizeof(buf) - 1) {
			ret = -EPROTO;
			seterr(err, len, "vm '%s': control socket: answer too long", vm->name);
			goto out;
		}
	}
	json_error_t jerr;
	json_t *v = json_loadb(buf, (size_t)(strchr(buf, '\n') - buf), 0, &jerr);
	if (!v || !json_is_object(v)) {
		json_decref(v);
		ret = -EPROTO;
		seterr(err, len, "vm '%s': control socket: bad answer", vm->name);
		goto out;
	}
	if (!json_is_true(json_object_get(v, "ok"))) {
		const char *e = json_string_value(json_object_get(v, "error"));
		seterr(err, len, "vm '%s': %s: %s", vm->name, cmd, e ? e : "refused");
		json_decref(v);
		ret = -EINVAL;
		goto out;
	}
	if (reply)
		*reply = v;
	else
		json_decref(v);
	ret = 0;
out:
	close(fd);
	return ret;
}

/* The VMM's own view of its state ("running", "paused", "migrating", ...). */
static int probe(struct mabod *d, struct vmrec *vm)
{
	char err[256];
	json_t *info;
	int ret = sup_vmm_request(d, vm, "info", &info, err, sizeof(err));
	if (ret < 0)
		return ret;
	const char *s = json_string_value(json_object_get(info, "state"));
	enum vm_state st = VM_RUNNING;
	if (s && strcmp(s, "paused") == 0)
		st = VM_PAUSED;
	else if (s && (strcmp(s, "migrating") == 0 || strcmp(s, "incoming") == 0))
		st = VM_MIGRATING;
	json_decref(info);
	if (vm->state != st && vm->state != VM_STOPPING) {
		vm->state = st;
		save(d, vm);
	}
	return 0;
}

/* Presses the guest's power button ("powerdown" on the VMM's control socket). 0, -EINVAL
 * when the VMM refused (its guest has no driver for the button yet, it is incoming), or
 * another -errno when it did not answer. */
static int press_power_button(struct mabod *d, struct vmrec *vm)
{
	char err[512];
	int ret = sup_vmm_request(d, vm, "powerdown", NULL, err, sizeof(err));
	if (!ret)
		vm->pressed_at = now_ms();
	else
		log_debug("%s", err);
	return ret;
}

int sup_stop(struct mabod *d, struct vmrec *vm, int64_t timeout_ms, char *err, size_t len)
{
	vm->want_running = false;
	vm->restart_at = 0;
	if (sup_watch_fd(vm) < 0) {
		vm->state = VM_STOPPED;
		save(d, vm);
		return 0;
	}
	/* A paused guest cannot act on its power button. */
	if (vm->state == VM_PAUSED && sup_vmm_request(d, vm, "resume", NULL, err, len) < 0)
		log_warn("%s", err);
	vm->pressed_at = 0;
	int ret = press_power_button(d, vm);
	vm->state = VM_STOPPING;
	/* No answer at all: the VMM cannot be asked anything, so waiting is pointless. */
	vm->stop_deadline = now_ms() + (ret < 0 && ret != -EINVAL ? 0 : timeout_ms);
	save(d, vm);
	mabod_event(d, vm, "stop", "vm '%s': stopping%s", vm->name,
		    ret == -EINVAL ? " (the guest cannot take the power button yet: retrying)"
		    : ret < 0	   ? " (no answer on its control socket: killing it)"
				   : " (power button pressed)");
	return 0;
}

int sup_kill(struct mabod *d, struct vmrec *vm, char *err, size_t len)
{
	vm->want_running = false;
	vm->restart_at = 0;
	if (vm->vmm_fd < 0) {
		if (sup_watch_fd(vm) < 0) {
			vm->state = VM_STOPPED;
			save(d, vm);
			return 0;
		}
		seterr(err, len, "vm '%s': its VMM is gone, its monitor still runs", vm->name);
		return -ESRCH;
	}
	if (pidfd_kill(vm->vmm_fd, SIGKILL) < 0 && errno != ESRCH) {
		int ret = -errno;
		seterr(err, len, "vm '%s': cannot kill pid %d: %s", vm->name, (int)vm->pid,
		       strerror(-ret));
		return ret;
	}
	vm->state = VM_STOPPING;
	vm->stop_deadline = 0;
	save(d, vm);
	mabod_event(d, vm, "kill", "vm '%s': killed pid %d", vm->name, (int)vm->pid);
	return 0;
}

/* How the last run ended, from the monitor's exit file: 0 = status known. */
static int read_exit(struct mabod *d, struct vmrec *vm, bool *failed, bool *migrated, char *how,
		     size_t len)
{
	*migrated = false;
	char path[PATH_MAX], line[64] = "";
	sup_path(d, vm, "exit", path, sizeof(path));
	FILE *f = fopen(path, "re");
	if (!f)
		return -ENOENT;
	bool ok = fgets(line, sizeof(line), f) != NULL;
	fclose(f);
	int v;
	if (ok && sscanf(line, "exited %d", &v) == 1) {
		/* mabo-vmm's status 4: the VM migrated away and runs on the destination now;
		 * its run here ended as asked, and starting it here again would make two. */
		*failed = v != 0 && v != SUP_STATUS_MIGRATED;
		*migrated = v == SUP_STATUS_MIGRATED;
		if (v == 0)
			snprintf(how, len, "powered off (exit status 0)");
		else if (*migrated)
			snprintf(how, len, "migrated away (exit status %d)", v);
		else
			snprintf(how, len, "exit status %d", v);
		return 0;
	}
	if (ok && sscanf(line, "signal %d", &v) == 1) {
		*failed = true;
		snprintf(how, len, "killed by signal %d (%s)", v, strsignal(v));
		return 0;
	}
	return -EINVAL;
}

/* The VMM's last error line (vmm.log), to say why a VM crashed. */
static void last_error(struct mabod *d, struct vmrec *vm, char *buf, size_t len)
{
	char path[PATH_MAX], line[512];
	buf[0] = 0;
	sup_path(d, vm, "vmm.log", path, sizeof(path));
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		/* mabo-vmm starts its lines with \r (its terminal may be in raw mode). */
		char *p = line + strspn(line, "\r");
		p[strcspn(p, "\r\n")] = 0;
		if (strstr(p, "error"))
			snprintf(buf, len, "%s", p);
	}
	fclose(f);
}

/* The run ended (how: a description; failed: not a power-off; migrated: the VM runs elsewhere
 * now, so no restart policy starts it here again). */
static void ended(struct mabod *d, struct vmrec *vm, bool failed, bool migrated, const char *how)
{
	bool asked = !vm->want_running;
	int64_t ran = wall_ms() - vm->started_at;
	char why[256];
	sup_release(vm);
	cg_remove(&d->cg, vm->name);
	vm->usage_at = 0;
	vm->shim_pid = vm->pid = 0;
	vm->shim_start = vm->pid_start = 0;
	vm->stop_deadline = vm->starting_deadline = 0;
	why[0] = 0;
	if (failed && !asked)
		last_error(d, vm, why, sizeof(why));
	snprintf(vm->reason, sizeof(vm->reason), "%s%s%s%s", asked ? "on request: " : "", how,
		 why[0] ? ": " : "", why);
	vm->state = failed && !asked ? VM_CRASHED : VM_STOPPED;
	bool again =
		!asked && !migrated &&
		(vm->restart == RESTART_ALWAYS || (vm->restart == RESTART_ON_FAILURE && failed));
	if (again) {
		if (ran >= SUP_BACKOFF_RESET_MS || vm->backoff_ms == 0)
			vm->backoff_ms = SUP_BACKOFF_FIRST_MS;
		else if (vm->backoff_ms < SUP_BACKOFF_MAX_MS)
			vm->backoff_ms = vm->backoff_ms * 2 > SUP_BACKOFF_MAX_MS
						 ? SUP_BACKOFF_MAX_MS
						 : vm->backoff_ms * 2;
		vm->restart_at = now_ms() + vm->backoff_ms;
	} else {
		vm->want_running = false;
		vm->restart_at = 0;
	}
	save(d, vm);
	mabod_event(d, vm, vm->state == VM_CRASHED ? "crash" : "exit", "vm '%s': %s: %s%s",
		    vm->name, vm->state == VM_CRASHED ? "crashed" : "stopped", vm->reason,
		    again ? " (restarting)" : "");
	if (again)
		mabod_event(d, vm, "restart", "vm '%s': restart in %lld ms", vm->name,
			    (long long)vm->backoff_ms);
}

void sup_on_exit(struct mabod *d, struct vmrec *vm)
{
	char how[128];
	bool failed = true, migrated = false;
	if (vm->shim_fd < 0) {
		/* Only the VMM was watched (its monitor had gone): its status is lost. */
		ended(d, vm, true, false, "ended (status unknown: its monitor was gone)");
		return;
	}
	/* Our own child (started by this daemon) is reaped; an adopted one is not ours. */
	waitpid(vm->shim_pid, NULL, WNOHANG);
	if (read_exit(d, vm, &failed, &migrated, how, sizeof(how)) < 0) {
		struct pollfd p = { .fd = vm->vmm_fd, .events = POLLIN };
		if (vm->vmm_fd >= 0 && poll(&p, 1, 0) == 0) {
			/* The monitor was killed, the VMM runs on: watch it alone. */
			close(vm->shim_fd);
			vm->shim_fd = -1;
			vm->shim_pid = 0;
			vm->shim_start = 0;
			save(d, vm);
			mabod_event(d, vm, "monitor",
				    "vm '%s': its monitor is gone; watching pid %d", vm->name,
				    (int)vm->pid);
			return;
		}
		snprintf(how, sizeof(how), "ended (its monitor left no status)");
	}
	ended(d, vm, failed, migrated, how);
}

/* A VMM no record names but that answers on the VM's control socket: a daemon killed
 * between starting it and recording it leaves one. It is taken with its monitor. */
static void find_unrecorded(struct mabod *d, struct vmrec *vm)
{
	char err[256], dir[PATH_MAX];
	json_t *info;
	if (sup_vmm_request(d, vm, "info", &info, err, sizeof(err)) < 0)
		return;
	pid_t pid = (pid_t)json_integer_value(json_object_get(info, "pid"));
	json_decref(info);
	if (pid <= 0 || sup_path(d, vm, NULL, dir, sizeof(dir)) < 0)
		return;
	vm->pid = pid;
	vm->pid_start = proc_start(pid);
	pid_t parent = (pid_t)proc_stat(pid, 4);
	if (parent > 1 && proc_is_monitor(parent, dir)) {
		vm->shim_pid = parent;
		vm->shim_start = proc_start(parent);
	}
	vm->state = VM_STARTING;
	vm->want_running = true;
	vm->started_at = wall_ms();
	mabod_event(d, vm, "adopt", "vm '%s': found pid %d answering on its control socket",
		    vm->name, (int)pid);
}

void sup_adopt(struct mabod *d, struct vmrec *vm)
{
	if (!vm->shim_pid && !vm->pid)
		find_unrecorded(d, vm);
	if (!vm->shim_pid && !vm->pid)
		return;
	vm->shim_fd = proc_claim(vm->shim_pid, vm->shim_start);
	vm->vmm_fd = proc_claim(vm->pid, vm->pid_start);
	if (vm->shim_fd < 0 && vm->vmm_fd < 0) {
		/* It ended while no daemon watched: the monitor's file tells how. */
		char how[128];
		bool failed = true, migrated = false;
		if (read_exit(d, vm, &failed, &migrated, how, sizeof(how)) < 0)
			snprintf(how, sizeof(how), "ended while mabod was away (status unknown)");
		mabod_event(d, vm, "adopt", "vm '%s': ended while mabod was away", vm->name);
		ended(d, vm, failed, migrated, how);
		return;
	}
	/* Its cgroup is the one by its name (created again if it went: the VMM joins it). */
	if (vm->vmm_fd >= 0 && cg_attach(&d->cg, vm->name, vm->pid) < 0)
		log_warn("vm '%s': pid %d not in its cgroup", vm->name, (int)vm->pid);
	if (vm->vmm_fd >= 0 && probe(d, vm) < 0 && vm->state != VM_STOPPING)
		vm->state = VM_STARTING;
	if (vm->state == VM_STARTING)
		vm->starting_deadline = now_ms() + SUP_START_TIMEOUT_MS;
	if (vm->state == VM_STOPPING)
		vm->stop_deadline = now_ms() + SUP_STOP_TIMEOUT_MS;
	save(d, vm);
	mabod_event(d, vm, "adopt", "vm '%s': adopted pid %d (%s)", vm->name, (int)vm->pid,
		    vm_state_name(vm->state));
}

int64_t sup_tick(struct mabod *d)
{
	int64_t now = now_ms(), next = 1000;
	char err[512];
	for (struct vmrec *vm = d->vms; vm; vm = vm->next) {
		if (vm->state == VM_STARTING && sup_watch_fd(vm) >= 0) {
			if (probe(d, vm) == 0) {
				vm->starting_deadline = 0;
				mabod_event(d, vm, "running", "vm '%s': running", vm->name);
			} else if (now >= vm->starting_deadline) {
				mabod_event(d, vm, "timeout",
					    "vm '%s': no answer on its control socket after %d s: "
					    "killing it",
					    vm->name, SUP_START_TIMEOUT_MS / 1000);
				bool want = vm->want_running;
				if (sup_kill(d, vm, err, sizeof(err)) < 0)
					log_error("%s", err);
				/* A start that failed is a failure for the restart policy. */
				vm->want_running = want;
			} else {
				next = next > 100 ? 100 : next;
			}
		}
		if (vm->state == VM_STOPPING && vm->stop_deadline && now >= vm->stop_deadline) {
			vm->stop_deadline = 0;
			if (vm->vmm_fd >= 0) {
				mabod_event(d, vm, "timeout", "vm '%s': did not stop: killing it",
					    vm->name);
				pidfd_kill(vm->vmm_fd, SIGKILL);
			}
		} else if (vm->state == VM_STOPPING && vm->stop_deadline) {
			/* Refused so far (a guest still booting has no driver yet): again, soon.
			 * Pressed and still running: again now and then, as a person would; a
			 * guest whose driver had just loaded may have had no listener yet. */
			int64_t again = vm->pressed_at ? vm->pressed_at + SUP_REPRESS_MS : 0;
			if (now >= again && sup_watch_fd(vm) >= 0) {
				bool first = !vm->pressed_at;
				if (press_power_button(d, vm) == 0 && first)
					mabod_event(d, vm, "stop", "vm '%s': power button pressed",
						    vm->name);
			}
			next = next > vm->stop_deadline - now ? vm->stop_deadline - now : next;
			int64_t wait = vm->pressed_at ? vm->pressed_at + SUP_REPRESS_MS - now : 500;
			next = next > wait ? (wait > 0 ? wait : 0) : next;
		}
		if (vm->restart_at && sup_watch_fd(vm) < 0) {
			if (now >= vm->restart_at) {
				vm->restart_at = 0;
				vm->restarts++;
				if (sup_start(d, vm, err, sizeof(err)) < 0) {
					mabod_event(d, vm, "error", "%s", err);
					snprintf(vm->reason, sizeof(vm->reason), "%s", err);
					vm->want_running = false;
					save(d, vm);
				} else {
					next = 100; /* its control socket is probed soon */
				}
			} else {
				next = next > vm->restart_at - now ? vm->restart_at - now : next;
			}
		}
	}
	return next < 10 ? 10 : next;
}
