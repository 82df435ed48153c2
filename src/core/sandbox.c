/* --sandbox: a seccomp allow-list (libseccomp) under PR_SET_NO_NEW_PRIVS.
 *
 * The filter is loaded before the VM is first set up, not after: a guest reboot builds the
 * VM again (it reopens the kernel, the disks, the TAP device), a snapshot writes a file and
 * a migration opens a socket while the guest runs, so every phase needs the calls that set-up
 * needs. What the filter keeps out is the rest of the kernel: no execve, no ptrace, no
 * mount, no module, key, BPF or namespace calls, no process other than threads. Which files
 * the VMM can open is the mount tree's business (--sandbox-user). */
#define _GNU_SOURCE /* CLONE_THREAD, unshare, pivot_root */
#include "core/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/userfaultfd.h>

#include "core/log.h"

/* System calls allowed with any arguments. Found by running the boot, reboot, disk, NBD,
 * network (user and TAP), snapshot and migration (pre-copy, post-copy, TLS) tests under
 * the filter. */
static const int allowed[] = {
	/* files and descriptors */
	SCMP_SYS(read),
	SCMP_SYS(write),
	SCMP_SYS(readv),
	SCMP_SYS(writev),
	SCMP_SYS(pread64),
	SCMP_SYS(pwrite64),
	SCMP_SYS(preadv),
	SCMP_SYS(pwritev),
	SCMP_SYS(preadv2),
	SCMP_SYS(pwritev2),
	SCMP_SYS(lseek),
	SCMP_SYS(close),
	SCMP_SYS(open),
	SCMP_SYS(openat),
	SCMP_SYS(creat),
	SCMP_SYS(stat),
	SCMP_SYS(fstat),
	SCMP_SYS(lstat),
	SCMP_SYS(newfstatat),
	SCMP_SYS(statx),
	SCMP_SYS(statfs),
	SCMP_SYS(fstatfs),
	SCMP_SYS(access),
	SCMP_SYS(faccessat),
	SCMP_SYS(faccessat2),
	SCMP_SYS(readlink),
	SCMP_SYS(readlinkat),
	SCMP_SYS(getdents64),
	SCMP_SYS(fcntl),
	SCMP_SYS(dup),
	SCMP_SYS(dup2),
	SCMP_SYS(dup3),
	SCMP_SYS(pipe),
	SCMP_SYS(pipe2),
	SCMP_SYS(ftruncate),
	SCMP_SYS(fallocate),
	SCMP_SYS(fsync),
	SCMP_SYS(fdatasync),
	SCMP_SYS(sync_file_range),
	SCMP_SYS(flock),
	SCMP_SYS(unlink),
	SCMP_SYS(unlinkat),
	SCMP_SYS(rename),
	SCMP_SYS(renameat),
	SCMP_SYS(renameat2),
	SCMP_SYS(fchmod),
	SCMP_SYS(chmod),
	SCMP_SYS(fchmodat),
	SCMP_SYS(umask),
	SCMP_SYS(getcwd),
	SCMP_SYS(fadvise64),
	SCMP_SYS(close_range),
	/* memory: guest RAM, the code caches (PROT_EXEC for the translated code) */
	SCMP_SYS(mmap),
	SCMP_SYS(munmap),
	SCMP_SYS(mprotect),
	SCMP_SYS(mremap),
	SCMP_SYS(madvise),
	SCMP_SYS(brk),
	SCMP_SYS(mincore),
	SCMP_SYS(membarrier),
	/* threads, time, signals */
	SCMP_SYS(futex),
	SCMP_SYS(set_robust_list),
	SCMP_SYS(get_robust_list),
	SCMP_SYS(rseq),
	SCMP_SYS(set_tid_address),
	SCMP_SYS(exit),
	SCMP_SYS(exit_group),
	SCMP_SYS(gettid),
	SCMP_SYS(getpid),
	SCMP_SYS(getpgrp),
	SCMP_SYS(getpgid),
	SCMP_SYS(getppid),
	SCMP_SYS(tgkill),
	SCMP_SYS(sched_yield),
	SCMP_SYS(sched_getaffinity),
	SCMP_SYS(sched_setaffinity),
	SCMP_SYS(nanosleep),
	SCMP_SYS(clock_nanosleep),
	SCMP_SYS(clock_gettime),
	SCMP_SYS(clock_getres),
	SCMP_SYS(gettimeofday),
	SCMP_SYS(time),
	SCMP_SYS(rt_sigaction),
	SCMP_SYS(rt_sigprocmask),
	SCMP_SYS(rt_sigreturn),
	SCMP_SYS(rt_sigtimedwait),
	SCMP_SYS(rt_sigpending),
	SCMP_SYS(sigaltstack),
	SCMP_SYS(restart_syscall),
	SCMP_SYS(getrandom),
	SCMP_SYS(getuid),
	SCMP_SYS(geteuid),
	SCMP_SYS(getgid),
	SCMP_SYS(getegid),
	SCMP_SYS(getresuid),
	SCMP_SYS(getresgid),
	SCMP_SYS(uname),
	SCMP_SYS(sysinfo),
	SCMP_SYS(getrlimit),
	SCMP_SYS(prlimit64),
	SCMP_SYS(getrusage),
	SCMP_SYS(times),
	/* event loops: epoll, eventfd, timerfd, poll */
	SCMP_SYS(epoll_create),
	SCMP_SYS(epoll_create1),
	SCMP_SYS(epoll_ctl),
	SCMP_SYS(epoll_wait),
	SCMP_SYS(epoll_pwait),
	SCMP_SYS(epoll_pwait2),
	SCMP_SYS(poll),
	SCMP_SYS(ppoll),
	SCMP_SYS(select),
	SCMP_SYS(pselect6),
	SCMP_SYS(eventfd),
	SCMP_SYS(eventfd2),
	SCMP_SYS(timerfd_create),
	SCMP_SYS(timerfd_settime),
	SCMP_SYS(timerfd_gettime),
	/* sockets (socket() itself below): the control socket, migration, NBD, slirp */
	SCMP_SYS(socketpair),
	SCMP_SYS(bind),
	SCMP_SYS(listen),
	SCMP_SYS(accept),
	SCMP_SYS(accept4),
	SCMP_SYS(connect),
	SCMP_SYS(getsockname),
	SCMP_SYS(getpeername),
	SCMP_SYS(setsockopt),
	SCMP_SYS(getsockopt),
	SCMP_SYS(sendto),
	SCMP_SYS(recvfrom),
	SCMP_SYS(sendmsg),
	SCMP_SYS(recvmsg),
	SCMP_SYS(sendmmsg),
	SCMP_SYS(recvmmsg),
	SCMP_SYS(shutdown),
	/* post-copy migration (its ioctls below) */
	SCMP_SYS(userfaultfd),
};

/* ioctl requests, the only ones allowed. */
/* clang-format off */
static const unsigned long allowed_ioctls[] = {
	TUNSETIFF,					/* net/tap.c */
	BLKGETSIZE64,					/* block/file.c: a block device's size */
	UFFDIO_API, UFFDIO_REGISTER, UFFDIO_UNREGISTER,	/* migration: post-copy */
	UFFDIO_COPY, UFFDIO_ZEROPAGE, UFFDIO_WAKE, USERFAULTFD_IOC_NEW,
	SIOCOUTQ, FIONREAD, FIONBIO,			/* sockets */
	TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ,	/* the console's terminal */
	TIOCGPGRP,
};
/* clang-format on */

/* Address families socket() may make; others fail with EAFNOSUPPORT (a library probing for
 * one, say netlink, gets an answer it handles, not a killed process). */
static const int allowed_families[] = { AF_UNIX, AF_INET, AF_INET6 };

/* prctl options: thread names. */
static const int allowed_prctls[] = { PR_SET_NAME, PR_GET_NAME };

/* A comparison on argument n; every field set (the library's SCMP_A* leave datum_b out). */
static struct scmp_arg_cmp arg(unsigned n, enum scmp_compare op, scmp_datum_t a, scmp_datum_t b)
{
	return (struct scmp_arg_cmp){ .arg = n, .op = op, .datum_a = a, .datum_b = b };
}

static int add(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned n, struct scmp_arg_cmp c)
{
	int r = n ? seccomp_rule_add(ctx, action, nr, 1, c) : seccomp_rule_add(ctx, action, nr, 0);
	if (r < 0) {
		char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
		log_error("sandbox: cannot add a rule for %s: %s", name ? name : "?", strerror(-r));
		free(name);
	}
	return r;
}

static int load_filter(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!ctx) {
		log_error("sandbox: cannot create the seccomp filter: out of memory");
		return -ENOMEM;
	}
	int r = 0;
	struct scmp_arg_cmp none = { 0 };
	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]) && r == 0; i++)
		r = add(ctx, SCMP_ACT_ALLOW, allowed[i], 0, none);
	/* The kernel takes ioctl's request as 32 bits: compare only those. */
	for (size_t i = 0; i < sizeof(allowed_ioctls) / sizeof(allowed_ioctls[0]) && r == 0; i++)
		r = add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
			arg(1, SCMP_CMP_MASKED_EQ, 0xffffffffUL, allowed_ioctls[i] & 0xffffffffUL));
	for (int f = 0; f <= AF_INET6 && r == 0; f++) {
		bool ok = false;
		for (size_t i = 0; i < sizeof(allowed_families) / sizeof(allowed_families[0]); i++)
			ok |= allowed_families[i] == f;
		r = add(ctx, ok ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket),
			1, arg(0, SCMP_CMP_EQ, (scmp_datum_t)f, 0));
	}
	if (r == 0)
		r = add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
			arg(0, SCMP_CMP_GT, (scmp_datum_t)AF_INET6, 0));
	for (size_t i = 0; i < sizeof(allowed_prctls) / sizeof(allowed_prctls[0]) && r == 0; i++)
		r = add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
			arg(0, SCMP_CMP_EQ, (scmp_datum_t)allowed_prctls[i], 0));
	/* Threads only: clone with CLONE_THREAD. clone3 passes its flags in memory, out of the
	 * filter's sight; ENOSYS makes the C library fall back to clone. */
	if (r == 0)
		r = add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
			arg(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	if (r == 0)
		r = add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, none);
	if (r == 0) {
		/* seccomp_load sets PR_SET_NO_NEW_PRIVS too (SCMP_FLTATR_CTL_NNP, on by
		 * default); set here first, so that it holds whatever the library's default. */
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
			r = -errno;
			log_error("sandbox: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		}
	}
	if (r == 0) {
		r = seccomp_load(ctx);
		if (r < 0)
			log_error("sandbox: cannot load the seccomp filter: %s", strerror(-r));
	}
	seccomp_release(ctx);
	return r;
}

/* The private mount tree: a tmpfs holding, at their own paths, only what the VM uses. */
struct tree {
	char root[64]; /* where the tmpfs is mounted before it becomes "/" */
};

/* mkdir -p of path (absolute) under the tree's root. */
static int mkdirs(const struct tree *t, const char *path)
{
	char buf[PATH_MAX + 64];
	if (snprintf(buf, sizeof(buf), "%s%s", t->root, path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + strlen(t->root) + 1;; p++) {
		if (*p != '/' && *p)
			continue;
		char c = *p;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = c;
		if (!c)
			return 0;
	}
}

/* Binds the host's path (a file or a directory) at the same path in the tree. A missing
 * path is skipped when optional. */
static int bind_path(const struct tree *t, const char *path, bool optional, bool writable)
{
	char real[PATH_MAX], target[PATH_MAX + 64];
	struct stat st;
	if (!realpath(path, real) || stat(real, &st) < 0) {
		if (optional)
			return 0;
		int e = errno;
		log_error("sandbox: '%s': %s", path, strerror(e));
		return -e;
	}
	snprintf(target, sizeof(target), "%s%s", t->root, real);
	int r;
	if (S_ISDIR(st.st_mode)) {
		r = mkdirs(t, real);
	} else {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", real);
		r = mkdirs(t, dirname(dir));
		if (r == 0) {
			int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
			if (fd < 0)
				r = -errno;
			else
				close(fd);
		}
	}
	if (r == 0 && mount(real, target, NULL, MS_BIND | MS_REC, NULL) < 0)
		r = -errno;
	/* Read-only where the VM only reads: a bind mount takes the flag on a remount. */
	if (r == 0 && !writable &&
	    mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
		  NULL) < 0 &&
	    !S_ISCHR(st.st_mode))
		r = -errno;
	if (r < 0)
		log_error("sandbox: cannot show '%s' in the private mount tree: %s", path,
			  strerror(-r));
	return r;
}

/* The directory holding a socket the VMM makes (it creates the file itself). */
static int bind_parent(const struct tree *t, const char *path)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	return bind_path(t, dirname(dir), false, true);
}

static int fill_tree(const struct tree *t, const struct vm_config *cfg)
{
	int r = 0;
	if (cfg->kernel)
		r = bind_path(t, cfg->kernel, false, false);
	if (r == 0 && cfg->initramfs)
		r = bind_path(t, cfg->initramfs, false, false);
	if (r == 0 && cfg->firmware && !cfg->bare_metal)
		r = bind_path(t, cfg->firmware, false, false);
	if (r == 0 && cfg->restore)
		r = bind_path(t, cfg->restore, false, false);
	if (r == 0 && cfg->migration_key)
		r = bind_path(t, cfg->migration_key, false, false);
	if (r == 0 && cfg->migration_tls)
		r = bind_path(t, cfg->migration_tls, false, false);
	if (r == 0 && cfg->api_socket)
		r = bind_parent(t, cfg->api_socket);
	if (r == 0 && cfg->incoming && strncmp(cfg->incoming, "unix:", 5) == 0)
		r = bind_parent(t, cfg->incoming + 5);
	for (int i = 0; i < cfg->ndevices && r == 0; i++) {
		const struct vm_device_config *d = &cfg->devices[i];
		if (strcmp(d->type, "virtio-blk") == 0 && !strstr(d->disk.path, "://"))
			r = bind_path(t, d->disk.path, false, !d->disk.readonly);
		if (strcmp(d->type, "virtio-net") == 0 && d->net.mode == VM_NET_TAP)
			r = bind_path(t, "/dev/net/tun", false, true);
	}
	/* /proc: /proc/self/pagemap (migration); the resolver's file (user networking);
	 * the devices a C library and post-copy open. */
	static const char *const common[] = {
		"/proc",	"/dev/null",	    "/dev/zero",
		"/dev/urandom", "/dev/userfaultfd", "/etc/resolv.conf"
	};
	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]) && r == 0; i++)
		r = bind_path(t, common[i], true, strncmp(common[i], "/dev/", 5) == 0);
	return r;
}

/* A mount namespace whose root is a tmpfs with the VM's files, the working directory at
 * its own path (relative paths keep their meaning), then the user's identity. */
static int confine(const struct vm_config *cfg)
{
	const char *name = cfg->sandbox_user;
	struct passwd *pw = getpwnam(name);
	if (!pw) {
		log_error("--sandbox-user '%s': no such user", name);
		return -ENOENT;
	}
	if (pw->pw_uid == 0) {
		log_error("--sandbox-user '%s': the user must not be root", name);
		return -EINVAL;
	}
	if (geteuid() != 0) {
		log_error("--sandbox-user '%s': needs root (to make the mount tree and change "
			  "user)",
			  name);
		return -EPERM;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd))) {
		log_error("sandbox: the working directory: %s", strerror(errno));
		return -errno;
	}
	struct tree t;
	snprintf(t.root, sizeof(t.root), "/tmp/mabo-sandbox-XXXXXX");
	if (!mkdtemp(t.root)) {
		log_error("sandbox: cannot make a directory in /tmp: %s", strerror(errno));
		return -errno;
	}
	int r = 0;
	const char *what = "";
	if (unshare(CLONE_NEWNS) < 0)
		r = -errno, what = "unshare(CLONE_NEWNS)";
	/* Nothing mounted here reaches the host's tree, nor the other way. */
	else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		r = -errno, what = "making the mounts private";
	else if (mount("tmpfs", t.root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0)
		r = -errno, what = "mounting a tmpfs";
	if (r < 0) {
		log_error("sandbox: %s: %s", what, strerror(-r));
		rmdir(t.root);
		return r;
	}
	r = fill_tree(&t, cfg);
	if (r == 0)
		r = mkdirs(&t, cwd);
	if (r == 0)
		r = mkdirs(&t, "/.old");
	char old[sizeof(t.root) + 8];
	snprintf(old, sizeof(old), "%s/.old", t.root);
	if (r == 0 && syscall(SYS_pivot_root, t.root, old) < 0)
		r = -errno, what = "pivot_root";
	if (r < 0) {
		if (*what)
			log_error("sandbox: %s: %s", what, strerror(-r));
		/* The mounts are this namespace's alone; the host's directory goes. */
		umount2(t.root, MNT_DETACH);
		rmdir(t.root);
		return r;
	}
	/* The directory the tmpfs was mounted on is an empty one of the host's again. */
	char host_dir[sizeof(t.root) + 8];
	snprintf(host_dir, sizeof(host_dir), "/.old%s", t.root);
	rmdir(host_dir);
	if (umount2("/.old", MNT_DETACH) < 0 || rmdir("/.old") < 0) {
		log_error("sandbox: cannot let go of the host's mounts: %s", strerror(errno));
		return -errno;
	}
	if (chdir(cwd) < 0) {
		log_error("sandbox: '%s': %s", cwd, strerror(errno));
		return -errno;
	}
	/* The user's identity; changing uid from 0 clears every capability. */
	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 ||
	    setresuid(uid, uid, uid) < 0) {
		log_error("--sandbox-user '%s': cannot become the user: %s", name, strerror(errno));
		return -errno;
	}
	return 0;
}

int sandbox_enter(const struct vm_config *cfg)
{
	if (cfg->sandbox_user) {
		int r = confine(cfg);
		if (r < 0)
			return r;
	}
	int r = load_filter();
	if (r < 0)
		return r;
	const char *test = getenv("MABO_SANDBOX_SELFTEST");
	if (test && strcmp(test, "execve") == 0) {
		/* Test hook: a forbidden call, which must not return. */
		/* A path that does not exist: unfiltered, the call fails instead of running
		 * something. */
		char *const argv[] = { "mabo-sandbox-selftest", NULL };
		execve("/nonexistent/mabo-sandbox-selftest", argv, NULL);
		log_error("sandbox: self-test: execve was not stopped: %s", strerror(errno));
		return -EPERM;
	}
	log_info("sandbox: seccomp filter loaded");
	return 0;
}
