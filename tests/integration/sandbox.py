#!/usr/bin/env python3
"""--sandbox, end to end, with the default guest (build/guest):

- a sandboxed VMM runs under the filter (its /proc status says Seccomp 2 and NoNewPrivs 1),
  boots Linux to its shell, runs commands, saves a snapshot, and powers off with status 0;
- a live migration (pre-copy, then post-copy: userfaultfd) between sandboxed VMMs over
  Unix sockets: the guest runs on at the destination;
- a forbidden system call is caught: the test hook MABO_SANDBOX_SELFTEST=execve makes the
  VMM call execve once the filter is loaded, and the process dies by SIGSYS;
- with --sandbox-user (as root): the VMM runs as that user, without capabilities, in a mount
  tree of its own (its root holds its files, not the host's /etc/shadow), and still boots,
  and reboots;
- mabod runs its VMMs with --sandbox, and reports one killed by a forbidden call as crashed
  (killed by signal 31).

    python3 tests/integration/sandbox.py --vmm build/mabo-vmm --mabo build/mabo \\
        --guest build/guest --log-dir build/sandbox-logs

Python 3 standard library only.
"""

import argparse
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402

passed = failed = 0


def ok(msg):
    global passed
    passed += 1
    print("ok: " + msg, flush=True)


def bad(msg):
    global failed
    failed += 1
    print("FAILED: " + msg, flush=True)


def proc_status(pid):
    """The fields of /proc/PID/status as a dict."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def wait_path(path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", default="build/mabo-vmm")
    ap.add_argument("--mabo", default="build/mabo")
    ap.add_argument("--guest", default="build/guest")
    ap.add_argument("--log-dir", default="build/sandbox-logs")
    args = ap.parse_args()
    vmm = os.path.abspath(args.vmm)
    mabo_bin = os.path.abspath(args.mabo)
    guest = os.path.abspath(args.guest)
    why = console.missing_input(guest, vmm)
    if why:
        print("sandbox: " + why)
        return 77
    os.makedirs(args.log_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="mabo-sandbox-")
    sessions = []

    def mabo(sock, *a, timeout=120):
        p = subprocess.run([mabo_bin, "--api-socket", sock] + list(a), capture_output=True,
                           text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def start(name, extra=(), sandbox=("--sandbox",), env=None, kernel=guest, sockdir=tmp):
        sock = os.path.join(sockdir, name + ".sock")
        argv = [vmm, "--kernel", kernel + "/Image", "--initramfs",
                kernel + "/initramfs.cpio.gz", "--firmware", kernel + "/fw_dynamic.bin",
                "--cmdline", "console=ttyS0", "--memory", "256M", "--cpus", "2",
                "--api-socket", sock] + list(sandbox) + list(extra)
        old = {}
        for k, v in (env or {}).items():
            old[k] = os.environ.get(k)
            os.environ[k] = v
        try:
            s = console.Session(argv, log=os.path.join(args.log_dir, name + ".log"))
        finally:
            for k, v in old.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v
        s.sock = sock
        s.name = name
        sessions.append(s)
        return s

    def booted(s, timeout=120):
        s.expect(console.READY, timeout)
        s.expect(console.PROMPT, 60)

    def filtered(s):
        st = proc_status(s.proc.pid)
        if st.get("Seccomp") != "2" or st.get("NoNewPrivs") != "1":
            raise console.ConsoleError("%s: not filtered: Seccomp %s, NoNewPrivs %s" %
                                       (s.name, st.get("Seccomp"), st.get("NoNewPrivs")))
        return st

    try:
        # 1. Boot, commands, a snapshot, poweroff, all under the filter.
        try:
            s = start("boot")
            booted(s)
            filtered(s)
            got = s.run("uname -m; echo $((6*7))").split()
            if got != ["riscv64", "42"]:
                raise console.ConsoleError("commands printed %r" % got)
            snap = os.path.join(tmp, "snap.bin")
            rc, out, err = mabo(s.sock, "snapshot", snap)
            if rc != 0 or not os.path.getsize(snap):
                raise console.ConsoleError("snapshot: rc %d %s %s" % (rc, out, err))
            if s.run("echo still-$((1+1))").strip() != "still-2":
                raise console.ConsoleError("the guest did not run on after the snapshot")
            console.poweroff(s)
            ok("sandboxed VMM (Seccomp 2, NoNewPrivs 1) boots Linux, runs commands, saves "
               "a snapshot, powers off with status 0")
        except (console.ConsoleError, OSError) as e:
            bad("sandboxed boot: %s" % str(e).splitlines()[0])

        # 2. Migration between sandboxed VMMs: pre-copy, then post-copy back.
        try:
            src = start("mig-src")
            booted(src)
            src.send("echo marker-$((40+2)) > /tmp/m")
            src.expect(console.PROMPT, 10)
            cur = src
            for i, extra in enumerate(((), ("--postcopy",))):
                mig = os.path.join(tmp, "mig%d.sock" % i)
                dst = start("mig-dst%d" % i, ["--incoming", "unix:" + mig])
                if not wait_path(mig):
                    raise console.ConsoleError("%s not listening:\n%s" %
                                               (dst.name, dst.tail(600)))
                filtered(dst)
                rc, out, err = mabo(cur.sock, "migrate", "unix:" + mig, *extra)
                if rc != 0:
                    raise console.ConsoleError("migrate %s: rc %d %s %s\n%s" %
                                               (" ".join(extra), rc, out.strip(),
                                                err.strip(), dst.tail(600)))
                st = cur.wait_exit(60)
                if st != 4:  # the VM migrated away
                    raise console.ConsoleError("%s exited %s after migrating" %
                                               (cur.name, st))
                cur = dst
                got = cur.run("cat /tmp/m").strip()
                if got != "marker-42":
                    raise console.ConsoleError("after migrate %s: %r" % (extra, got))
            console.poweroff(cur)
            ok("migration between sandboxed VMMs over Unix sockets: pre-copy, then "
               "post-copy (userfaultfd): the guest runs on, its data intact")
        except (console.ConsoleError, OSError) as e:
            bad("sandboxed migration: %s" % str(e).splitlines()[0])

        # 3. A forbidden system call kills the VMM with SIGSYS.
        try:
            s = start("forbidden", env={"MABO_SANDBOX_SELFTEST": "execve"})
            st = s.wait_exit(30)
            if st != -signal.SIGSYS:
                raise console.ConsoleError("exit %s, expected death by SIGSYS\n%s" %
                                           (st, s.tail(600)))
            ok("a forbidden call (execve, by the test hook) kills the VMM with SIGSYS")
        except (console.ConsoleError, OSError) as e:
            bad("forbidden call: %s" % str(e).splitlines()[0])

        # 4. --sandbox-user: an unprivileged user in a mount tree of its own.
        try:
            user = pwd.getpwnam("nobody")
        except KeyError:
            user = None
        if os.geteuid() != 0 or user is None:
            print("SKIP: --sandbox-user: needs root and a user 'nobody'", flush=True)
        else:
            try:
                udir = os.path.join(tmp, "user")
                os.mkdir(udir)
                os.chown(udir, user.pw_uid, user.pw_gid)
                os.chmod(tmp, 0o755)
                s = start("user", sandbox=("--sandbox-user", "nobody"), sockdir=udir)
                booted(s)
                st = filtered(s)
                if (st["Uid"].split() != [str(user.pw_uid)] * 4 or
                        st["CapEff"] != "0" * 16 or st["CapPrm"] != "0" * 16):
                    raise console.ConsoleError("runs as Uid %s, CapEff %s, CapPrm %s" %
                                               (st["Uid"], st["CapEff"], st["CapPrm"]))
                root = "/proc/%d/root" % s.proc.pid
                if not os.path.exists("/etc/shadow"):
                    raise console.ConsoleError("the host has no /etc/shadow to hide")
                if os.path.exists(root + "/etc/shadow"):
                    raise console.ConsoleError("the VMM sees /etc/shadow: %s" %
                                               sorted(os.listdir(root)))
                if not os.path.exists(root + guest + "/Image"):
                    raise console.ConsoleError("the VMM's tree lacks its kernel: %s" %
                                               sorted(os.listdir(root)))
                seen = sorted(os.listdir(root))
                if s.run("echo $((6*7))").strip() != "42":
                    raise console.ConsoleError("the guest does not answer")
                # A reboot builds the VM again from the same files.
                s.send("reboot")
                booted(s)
                if s.run("echo again-$((1+1))").strip() != "again-2":
                    raise console.ConsoleError("the guest does not answer after its reboot")
                console.poweroff(s)
                ok("--sandbox-user nobody: uid %d, no capabilities, root holds %s (no "
                   "/etc/shadow); boots, reboots, powers off" % (user.pw_uid, seen))
            except (console.ConsoleError, OSError) as e:
                bad("--sandbox-user: %s" % str(e).splitlines()[0])

        # 5. mabod starts its VMMs with --sandbox; one that makes a forbidden call (the
        # hook, in the daemon's environment, which its VMMs inherit) is reported crashed,
        # killed by SIGSYS.
        mabod_bin = os.path.join(os.path.dirname(mabo_bin), "mabod")
        if not os.access(mabod_bin, os.X_OK):
            print("SKIP: mabod: no %s" % mabod_bin, flush=True)
        else:
            import mabod
            e = mabod.Env(os.path.dirname(mabo_bin), guest,
                          os.path.join(args.log_dir, "mabod"), vmm)
            try:
                e.start_daemon()
                rc, out, err = e.mabo(*e.create_args("vm1"))
                mabod.expect(rc == 0, "vm create vm1: %d %s" % (rc, err.strip()))
                rc, out, err = e.mabo("vm", "start", "vm1")
                v = e.wait_vm("vm1", lambda v: v["state"] == "running" and v["pid"],
                              "running")
                st = proc_status(v["pid"])
                mabod.expect(st.get("Seccomp") == "2" and st.get("NoNewPrivs") == "1",
                             "vm1's VMM: Seccomp %s, NoNewPrivs %s" %
                             (st.get("Seccomp"), st.get("NoNewPrivs")))
                e.daemon.send_signal(signal.SIGTERM)
                e.daemon.wait(30)
                os.environ["MABO_SANDBOX_SELFTEST"] = "execve"
                try:
                    e.start_daemon()
                finally:
                    del os.environ["MABO_SANDBOX_SELFTEST"]
                rc, out, err = e.mabo(*e.create_args("vm2"))
                mabod.expect(rc == 0, "vm create vm2: %d %s" % (rc, err.strip()))
                e.mabo("vm", "start", "vm2")
                v = e.wait_vm("vm2", lambda v: v["state"] in ("crashed", "stopped"),
                              "ended")
                mabod.expect(v["state"] == "crashed" and "signal 31" in v.get("reason", ""),
                             "vm2: %s" % v)
                ok("mabod runs its VMMs sandboxed (Seccomp 2); a forbidden call: vm "
                   "crashed, %r" % v["reason"])
            except (mabod.Failure, OSError, subprocess.SubprocessError) as ex:
                bad("mabod: %s" % str(ex).splitlines()[0])
            finally:
                e.cleanup()
    finally:
        for s in sessions:
            s.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
