/* mabod: the host daemon. It keeps VM definitions in SQLite, serves the REST API on a Unix
 * socket and supervises one mabo-vmm process per running VM; it never sits in a VM's data
 * path, so VMs run on while it is stopped, killed or upgraded, and the next one re-adopts
 * them.
 *
 *   mabod [--state-dir DIR] [--run-dir DIR] [--vmm PATH] [--console-log-max SIZE]
 *         [--cgroup-parent NAME|none] [-v]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "daemon/daemon.h"
#include "daemon/http.h"
#include "daemon/ops.h"
#include "daemon/store.h"
#include "daemon/supervise.h"

#define DEFAULT_STATE_DIR "/var/lib/maboroshi"
#define DEFAULT_RUN_DIR "/run/maboroshi"
/* Each console log file is at most this big (two are kept: console.log and .1). */
#define CONSOLE_CAP (1 << 20)

void mabod_event(struct mabod *d, const struct vmrec *vm, const char *kind, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_info("%s", msg);
	int64_t t = wall_ms();
	if (d->db)
		store_event(d, t, vm ? vm->name : NULL, kind, msg);
	http_broadcast(d, t, vm ? vm->name : NULL, kind, msg);
	if (vm)
		ops_vm_event(d, vm->name, kind, vm->reason);
}

void mabod_sample(struct mabod *d)
{
	int64_t now = now_ms();
	d->sampled_at = now;
	for (struct vmrec *vm = d->vms; vm; vm = vm->next) {
		if (vm->vmm_fd < 0 || !vm->pid) {
			vm->usage_at = 0;
			vm->cpu_percent = 0;
			continue;
		}
		struct cg_stats s;
		cg_stats(&d->cg, vm->name, vm->pid, &s);
		if (vm->usage_at && now > vm->usage_at && s.cpu_ns >= 0 && vm->usage.cpu_ns >= 0 &&
		    s.cpu_ns >= vm->usage.cpu_ns)
			vm->cpu_percent = (double)(s.cpu_ns - vm->usage.cpu_ns) / 1e4 /
					  (double)(now - vm->usage_at);
		vm->usage = s;
		vm->usage_at = now;
	}
}

struct vmrec *mabod_find(struct mabod *d, const char *name)
{
	for (struct vmrec *vm = d->vms; vm; vm = vm->next)
		if (strcmp(vm->name, name) == 0)
			return vm;
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: mabod [--state-dir DIR] [--run-dir DIR] [--vmm PATH] [-v]\n"
		"The Maboroshi host daemon: VM definitions, the REST API on RUN_DIR/mabod.sock,\n"
		"supervision of one mabo-vmm per running VM. Runs in the foreground.\n\n"
		"  --state-dir DIR  the database (default " DEFAULT_STATE_DIR ")\n"
		"  --run-dir DIR    sockets, console logs (default " DEFAULT_RUN_DIR ")\n"
		"  --vmm PATH       the mabo-vmm binary (default: beside mabod, else $PATH)\n"
		"  --console-log-max SIZE  a console log's size before rotation (default 1M)\n"
		"  --cgroup-parent NAME    the VMs' cgroups: NAME/VM in mabod's own cgroup\n"
		"                   (default maboroshi; none: no cgroups)\n"
		"  -v               debug lines on stderr\n");
}

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

static int absolute(const char *opt, const char *in, char *out, size_t len)
{
	char cwd[PATH_MAX];
	int n;
	if (in[0] == '/')
		n = snprintf(out, len, "%s", in);
	else if (getcwd(cwd, sizeof(cwd)))
		n = snprintf(out, len, "%s/%s", cwd, in);
	else
		n = -1;
	if (n < 0 || (size_t)n >= len) {
		log_error("%s '%s': path too long", opt, in);
		return -ENAMETOOLONG;
	}
	/* Trailing slashes would double in the paths made from it. */
	while (n > 1 && out[n - 1] == '/')
		out[--n] = 0;
	return 0;
}

/* The mabo-vmm beside this binary (build/mabod, build/mabo-vmm), else the one in $PATH. */
static void find_vmm(struct mabod *d)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			snprintf(d->vmm, sizeof(d->vmm), "%.4000s/mabo-vmm", self);
			if (access(d->vmm, X_OK) == 0)
				return;
		}
	}
	const char *path = getenv("PATH");
	char buf[PATH_MAX];
	for (const char *p = path; p && *p;) {
		const char *e = strchr(p, ':');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		snprintf(buf, sizeof(buf), "%.*s/mabo-vmm", (int)l, p);
		if (l && access(buf, X_OK) == 0) {
			snprintf(d->vmm, sizeof(d->vmm), "%s", buf);
			return;
		}
		p = e ? e + 1 : p + l;
	}
	snprintf(d->vmm, sizeof(d->vmm), "mabo-vmm");
}

/* RUN_DIR/mabod.sock, mode 0660. A socket file nobody answers on is a leftover and is
 * replaced; one a server answers on means another daemon. */
static int listen_socket(struct mabod *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/mabod.sock", d->run_dir) >=
	    sizeof(sa.sun_path)) {
		log_error("--run-dir '%s': too long for a socket path", d->run_dir);
		return -ENAMETOOLONG;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (lstat(sa.sun_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error("'%s': exists and is not a socket", sa.sun_path);
			close(fd);
			return -EEXIST;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			log_error("'%s': another mabod answers there", sa.sun_path);
			close(fd);
			return -EADDRINUSE;
		}
		unlink(sa.sun_path);
		close(fd);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
	}
	/* Created 0660 from the start: no window where anyone else could connect. */
	mode_t old = umask(0117);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || chmod(sa.sun_path, 0660) < 0 || listen(fd, 64) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		r = -errno;
		log_error("'%s': %s", sa.sun_path, strerror(-r));
		close(fd);
		return r;
	}
	d->listen_fd = fd;
	return 0;
}

/* Autostart happens once per boot: RUN_DIR (a tmpfs) loses the marker at reboot, so a
 * daemon restarted later does not start again what someone stopped meanwhile. */
static void autostart(struct mabod *d)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/booted", d->run_dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	close(fd);
	for (struct vmrec *vm = d->vms; vm; vm = vm->next) {
		char err[512];
		if (!vm->autostart || sup_watch_fd(vm) >= 0)
			continue;
		mabod_event(d, vm, "autostart", "vm '%s': autostart", vm->name);
		if (sup_start(d, vm, err, sizeof(err)) < 0)
			mabod_event(d, vm, "error", "%s", err);
	}
}

static void run(struct mabod *d)
{
	struct pollfd *fds = NULL;
	struct vmrec **owners = NULL;
	size_t cap = 0;
	while (!d->quit) {
		size_t n = 0;
		for (struct vmrec *vm = d->vms; vm; vm = vm->next)
			n++;
		/* Each VM: its process, and at most one operation's socket. */
		if (2 * n + 2 > cap) {
			cap = (2 * n + 2) * 2;
			struct pollfd *f = realloc(fds, cap * sizeof(*fds));
			struct vmrec **o = realloc(owners, cap * sizeof(*owners));
			if (f)
				fds = f;
			if (o)
				owners = o;
			if (!f || !o) {
				log_error("out of memory");
				break;
			}
		}
		n = 0;
		fds[n++] = (struct pollfd){ .fd = http_poll_fd(d), .events = POLLIN };
		fds[n++] = (struct pollfd){ .fd = d->signal_fd, .events = POLLIN };
		for (struct vmrec *vm = d->vms; vm; vm = vm->next) {
			if (sup_watch_fd(vm) < 0)
				continue;
			owners[n] = vm;
			fds[n++] = (struct pollfd){ .fd = sup_watch_fd(vm), .events = POLLIN };
		}
		size_t nvm = n;
		int ofds[64];
		size_t nops = ops_poll_fds(d, ofds, cap - n < 64 ? cap - n : 64);
		for (size_t i = 0; i < nops; i++)
			fds[n++] = (struct pollfd){ .fd = ofds[i], .events = POLLIN };
		int64_t timeout = sup_tick(d), ht = http_timeout(d), ot = ops_tick(d);
		if (ot >= 0 && ot < timeout)
			timeout = ot;
		if (ht >= 0 && ht < timeout)
			timeout = ht;
		/* The VMs' CPU shares are over about a second. */
		if (timeout > 1000 - (now_ms() - d->sampled_at))
			timeout = 1000 - (now_ms() - d->sampled_at);
		if (timeout < 0 || d->http_wake)
			timeout = 0;
		d->http_wake = false;
		if (poll(fds, n, (int)timeout) < 0 && errno != EINTR) {
			log_error("poll: %s", strerror(errno));
			break;
		}
		/* VMs first: the list is the one polled until the HTTP handlers change it. */
		for (size_t i = 2; i < nvm; i++)
			if (fds[i].revents)
				sup_on_exit(d, owners[i]);
		if (nops)
			ops_run(d);
		if (fds[1].revents) {
			struct signalfd_siginfo si;
			if (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
				log_info("signal %d: exiting; the VMs keep running",
					 (int)si.ssi_signo);
				d->quit = true;
			}
		}
		if (now_ms() - d->sampled_at >= 1000)
			mabod_sample(d);
		http_run(d);
	}
	free(fds);
	free(owners);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 's' },
		{ "run-dir", required_argument, NULL, 'r' },
		{ "vmm", required_argument, NULL, 'm' },
		{ "console-log-max", required_argument, NULL, 'c' },
		{ "cgroup-parent", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	if (argc > 1 && strcmp(argv[1], "--monitor") == 0)
		return sup_monitor_main(argc, argv);
	static struct mabod daemon;
	struct mabod *d = &daemon;
	d->console_cap = CONSOLE_CAP;
	const char *state = DEFAULT_STATE_DIR, *rundir = DEFAULT_RUN_DIR, *vmm = NULL;
	const char *cgparent = "maboroshi";
	int verbose = 0, c;
	while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		switch (c) {
		case 's': state = optarg; break;
		case 'r': rundir = optarg; break;
		case 'm': vmm = optarg; break;
		case 'g': cgparent = optarg; break;
		case 'c': {
			uint64_t v;
			if (spec_parse_size(optarg, &v) < 0 || v < 4096 || v > (1ULL << 30)) {
				log_error("--console-log-max '%s': a size from 4K to 1G", optarg);
				return 2;
			}
			d->console_cap = (int64_t)v;
			break;
		}
		case 'v': verbose++; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		log_error("unexpected argument '%s'", argv[optind]);
		return 2;
	}
	log_set_verbose(verbose);
	if (cg_init(&d->cg, "/sys/fs/cgroup", cgparent) < 0) {
		log_error("--cgroup-parent '%s': a name (no '/'), or none", cgparent);
		return 2;
	}
	d->listen_fd = d->lock_fd = d->signal_fd = -1;
	d->started_at = wall_ms();
	if (absolute("--state-dir", state, d->state_dir, sizeof(d->state_dir)) < 0 ||
	    absolute("--run-dir", rundir, d->run_dir, sizeof(d->run_dir)) < 0)
		return 2;
	/* A VM's control socket, RUN_DIR/vms/NAME/api.sock, must fit in sun_path. */
	if (strlen(d->run_dir) + strlen("/vms/") + SPEC_NAME_MAX + strlen("/api.sock") >=
	    sizeof(((struct sockaddr_un *)0)->sun_path)) {
		log_error("--run-dir '%s': too long (the VMs' sockets must fit in 107 bytes)",
			  d->run_dir);
		return 2;
	}
	if (vmm) {
		if (absolute("--vmm", vmm, d->vmm, sizeof(d->vmm)) < 0)
			return 2;
	} else {
		find_vmm(d);
	}
	if (access(d->vmm, X_OK) < 0) {
		log_error("mabo-vmm '%s': %s (use --vmm PATH)", d->vmm, strerror(errno));
		return 1;
	}

	char path[PATH_MAX + 32];
	int ret = mkdirs(d->state_dir, 0700);
	if (ret < 0) {
		log_error("--state-dir '%s': %s", d->state_dir, strerror(-ret));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/vms", d->run_dir);
	ret = mkdirs(path, 0755);
	if (ret < 0) {
		log_error("--run-dir '%s': %s", path, strerror(-ret));
		return 1;
	}
	/* One daemon per state directory. */
	snprintf(path, sizeof(path), "%.1000s/mabod.lock", d->state_dir);
	d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lock_fd < 0 || flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		log_error("'%s': %s", path,
			  errno == EWOULDBLOCK ? "another mabod uses this state directory"
					       : strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	d->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);

	snprintf(path, sizeof(path), "%.1000s/mabod.db", d->state_dir);
	if (d->signal_fd < 0 || store_open(d, path) < 0 || store_load(d) < 0)
		return 1;
	if (listen_socket(d) < 0)
		return 1;
	log_info("started: state %s, run %s, vmm %s, api %s/mabod.sock", d->state_dir, d->run_dir,
		 d->vmm, d->run_dir);
	for (struct vmrec *vm = d->vms; vm; vm = vm->next) {
		sup_adopt(d, vm);
		/* A group left by a VM that ended while no daemon watched. */
		if (sup_watch_fd(vm) < 0)
			cg_remove(&d->cg, vm->name);
	}
	autostart(d);
	if (http_start(d) < 0)
		return 1;
	run(d);

	http_stop(d);
	ops_free_all(d);
	for (struct vmrec *vm = d->vms, *next; vm; vm = next) {
		next = vm->next;
		sup_release(vm);
		json_decref(vm->spec);
		free(vm);
	}
	store_close(d);
	snprintf(path, sizeof(path), "%s/mabod.sock", d->run_dir);
	unlink(path);
	/* The HTTP server closed the listening socket. */
	close(d->signal_fd);
	close(d->lock_fd);
	return 0;
}
