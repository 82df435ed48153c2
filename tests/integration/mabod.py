#!/usr/bin/env python3
"""mabod, the host daemon, with real guests: definitions through the REST API and build/mabo,
VMs started, killed, crashed and restarted, the daemon killed with SIGKILL while VMs run and
a new one re-adopting them, definitions surviving a SIGKILL in the middle of a burst of
defines.

    usage: tests/integration/mabod.py [--build build] [--guest build/guest] [--log-dir DIR]

Each check prints "ok: NAME" or "FAIL: NAME: REASON"; the exit status is 0 only if all
passed. Every process the test starts (daemons, and the monitors and VMMs under them) is
ended by its pid at the end. Python 3 standard library only.
"""
import argparse
import gzip
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

PROMPT = "~ # "


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("mabod", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Failure(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failure(what)


def newc(name, data, mode):
    """One cpio (newc) member."""
    name_b = name.encode() + b"\0"
    hdr = "070701" + "".join("%08x" % v for v in (
        0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
    out = hdr.encode() + name_b
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def ticking_initramfs(guest, path):
    """The guest's initramfs plus /tick.sh, which prints a line every 0.2 s (run with
    mabo.run=/tick.sh): a console that keeps growing, to see a VM run on while no daemon
    exists. The kernel reads concatenated archives."""
    script = b"#!/bin/sh\nn=0\nwhile :; do echo tick $n; n=$((n+1)); sleep 0.2; done\n"
    extra = newc("tick.sh", script, 0o100755) + newc("TRAILER!!!", b"", 0)
    with open(os.path.join(guest, "initramfs.cpio.gz"), "rb") as f:
        base = f.read()
    with open(path, "wb") as f:
        f.write(base + gzip.compress(extra))


class Env:
    def __init__(self, build, guest, log_dir, vmm=None):
        self.build = os.path.abspath(build)
        self.vmm = os.path.abspath(vmm) if vmm else os.path.join(self.build, "mabo-vmm")
        self.guest = os.path.abspath(guest)
        self.tmp = tempfile.mkdtemp(prefix="mabod-")
        self.state = os.path.join(self.tmp, "state")
        self.run = os.path.join(self.tmp, "run")
        self.sock = os.path.join(self.run, "mabod.sock")
        self.log_dir = log_dir
        os.makedirs(log_dir, exist_ok=True)
        self.daemon = None
        # The VMs' cgroups under a parent of this run's own.
        self.cgroup_parent = "mabod-test-%d" % os.getpid()
        self.daemon_args = ["--cgroup-parent", self.cgroup_parent]
        self.daemon_log = open(os.path.join(log_dir, "mabod.log"), "ab")
        self.pids = set()  # every VMM and monitor seen, to end them at the end
        self.tick_initramfs = os.path.join(self.tmp, "tick.cpio.gz")
        ticking_initramfs(self.guest, self.tick_initramfs)

    # ---- the daemon ----
    def start_daemon(self, timeout=10):
        expect(self.daemon is None or self.daemon.poll() is not None, "a daemon runs already")
        self.daemon = subprocess.Popen(
            [os.path.join(self.build, "mabod"), "--state-dir", self.state, "--run-dir",
             self.run, "--vmm", self.vmm] + self.daemon_args, stdin=subprocess.DEVNULL, stdout=self.daemon_log,
            stderr=self.daemon_log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            expect(self.daemon.poll() is None,
                   "mabod exited with status %s (see %s/mabod.log)" % (self.daemon.returncode,
                                                                        self.log_dir))
            try:
                status, _ = self.api("GET", "/v1/host")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise Failure("mabod did not answer within %d s" % timeout)

    def kill9_daemon(self):
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(10)

    # ---- clients ----
    def api(self, method, path, body=None, raw=None):
        c = UnixHTTP(self.sock)
        try:
            data = raw if raw is not None else (json.dumps(body) if body is not None else None)
            c.request(method, path, body=data,
                      headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            text = r.read()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text
        finally:
            c.close()

    def mabo(self, *args, timeout=120):
        env = dict(os.environ, MABO_CONNECT="unix:" + self.sock)
        p = subprocess.run([os.path.join(self.build, "mabo")] + list(args), env=env,
                           capture_output=True, timeout=timeout, text=True, errors="replace")
        return p.returncode, p.stdout, p.stderr

    def vms(self):
        rc, out, err = self.mabo("vm", "list", "--json")
        expect(rc == 0, "vm list --json: status %d: %s" % (rc, err.strip()))
        vms = {v["name"]: v for v in json.loads(out)}
        for v in vms.values():
            if v.get("pid"):
                self.pids.add(v["pid"])
        return vms

    def vm(self, name):
        status, v = self.api("GET", "/v1/vms/" + name)
        expect(status == 200, "GET /v1/vms/%s: %s %s" % (name, status, v))
        if v.get("pid"):
            self.pids.add(v["pid"])
        return v

    def wait_vm(self, name, pred, what, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            v = self.vm(name)
            if pred(v):
                return v
            if time.monotonic() > deadline:
                raise Failure("vm %s: not %s after %d s: %s" % (name, what, timeout, v))
            time.sleep(0.05)

    def console(self, name):
        rc, out, err = self.mabo("vm", "log", name)
        expect(rc == 0, "vm log %s: status %d: %s" % (name, rc, err.strip()))
        return out

    def wait_console(self, name, text, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console(name):
                return
            time.sleep(0.5)
        raise Failure("vm %s: %r not on its console after %d s; tail: %r" %
                      (name, text, timeout, self.console(name)[-300:]))

    def spec(self, **kw):
        s = {"kernel": self.guest + "/Image", "initramfs": self.guest + "/initramfs.cpio.gz",
             "firmware": self.guest + "/fw_dynamic.bin", "memory": "256M",
             "cmdline": "console=ttyS0"}
        s.update(kw)
        return s

    def create_args(self, name, *extra, tick=False):
        g = self.guest
        args = ["vm", "create", name, "--kernel", g + "/Image", "--initramfs",
                self.tick_initramfs if tick else g + "/initramfs.cpio.gz",
                "--firmware", g + "/fw_dynamic.bin", "--memory", "256M", "--cmdline",
                "console=ttyS0" + (" mabo.run=/tick.sh" if tick else "")]
        return args + list(extra)

    def cleanup(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        # Monitors and VMMs under our run dir (their command lines name it), by pid.
        killed = list(self.pids) + pids_naming(self.run)
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        # A cgroup can be removed once its processes are gone (reaped).
        deadline = time.monotonic() + 5
        while any(alive(p) for p in killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in own_cgroups():
            parent = os.path.join(d, self.cgroup_parent)
            if os.path.isdir(parent):
                for sub in os.listdir(parent):
                    if os.path.isdir(os.path.join(parent, sub)):
                        try:
                            os.rmdir(os.path.join(parent, sub))
                        except OSError:
                            pass
                try:
                    os.rmdir(parent)
                except OSError as ex:
                    print("note: cgroup %s not removed: %s" % (parent, ex), flush=True)


def pids_naming(text):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if text.encode() in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def error_of(status, body):
    return body.get("error", {}).get("message", "") if isinstance(body, dict) else str(body)


# ---- the checks ----

def check_start_and_prompt(e):
    rc, out, err = e.mabo(*e.create_args("vm1"))
    expect(rc == 0 and out.startswith("vm1 "), "vm create vm1: %d %r %r" % (rc, out, err))
    rc, out, err = e.mabo("vm", "start", "vm1")
    expect(rc == 0, "vm start vm1: status %d: %s" % (rc, err.strip()))
    v = e.vm("vm1")
    expect(v["state"] == "running" and isinstance(v["pid"], int) and alive(v["pid"]),
           "vm1 after start: %s" % v)


def check_bad_requests(e):
    before = sorted(e.vms())
    # Each: (body or raw text, expected status, text the message must hold).
    cases = [
        ({"name": "x1", "spec": e.spec(), "colour": 1}, 400, "colour"),
        ({"name": "x2", "spec": e.spec(kernal="/x")}, 400, "kernal"),
        ({"name": "x3", "spec": e.spec(disks=[{"path": e.guest + "/Image", "ro": True}])},
         400, "ro"),
        ({"name": "a b", "spec": e.spec()}, 400, "name"),
        ({"name": "", "spec": e.spec()}, 400, "name"),
        ({"name": "n" * 64, "spec": e.spec()}, 400, "name"),
        ({"name": 7, "spec": e.spec()}, 400, "name"),
        ({"name": "x4", "spec": e.spec(cpus="two")}, 400, "cpus"),
        ({"name": "x5", "spec": e.spec(cpus=100000)}, 400, "cpus"),
        ({"name": "x6", "spec": e.spec(memory=[])}, 400, "memory"),
        ({"name": "x7", "spec": e.spec(memory="1P")}, 400, "memory"),
        ({"name": "x8", "spec": e.spec(cmdline="x" * 10000)}, 400, "cmdline"),
        ({"name": "x9", "spec": e.spec(kernel=e.tmp + "/no-such-Image")}, 400,
         e.tmp + "/no-such-Image"),
        ({"name": "x10", "spec": e.spec(initramfs="relative.cpio")}, 400, "initramfs"),
        ({"name": "x11", "spec": e.spec(disks=[{"path": e.tmp + "/nodisk"}])}, 400,
         "disks[0].path"),
        ({"name": "x12", "spec": e.spec(), "restart": "sometimes"}, 400, "restart"),
        ({"name": "x13"}, 400, "spec"),
        ({"name": "vm1", "spec": e.spec()}, 409, "vm1"),
        ("{not json", 400, "JSON"),
        ("[1,2]", 400, "object"),
        ('{"name":"x14","name":"x15","spec":{}}', 400, "JSON"),
        ('{"name":"x16","spec":' + json.dumps(e.spec()) + ',"pad":"' + "p" * (2 << 20) + '"}',
         413, "larger"),
    ]
    for body, want, text in cases:
        if isinstance(body, str):
            status, r = e.api("POST", "/v1/vms", raw=body)
        else:
            status, r = e.api("POST", "/v1/vms", body)
        msg = error_of(status, r)
        expect(status == want and text in msg,
               "POST %.80s: %s %r, expected %d naming %r" % (body, status, r, want, text))
        expect(isinstance(r, dict) and "code" in r.get("error", {}), "no error.code: %r" % r)
    for method, path, want in [("GET", "/v1/vms/nosuch", 404), ("GET", "/v1/nothing", 404),
                               ("POST", "/v1/vms/nosuch/start", 404),
                               ("GET", "/v1/vms/bad%20name", 400),
                               ("PUT", "/v1/vms", 405),
                               ("POST", "/v1/vms/vm1/reboot", 404),
                               ("POST", "/v1/vms/vm1/stop?timeout=x", 400),
                               ("DELETE", "/v1/vms/vm1", 409)]:
        status, r = e.api(method, path)
        expect(status == want, "%s %s: %s %r, expected %d" % (method, path, status, r, want))
    expect(sorted(e.vms()) == before, "something was stored: %s" % sorted(e.vms()))
    # The CLI: one line, non-zero, naming what is wrong.
    rc, out, err = e.mabo("vm", "create", "x20", "--kernel", e.tmp + "/missing")
    expect(rc != 0 and err.count("\n") == 1 and e.tmp + "/missing" in err,
           "vm create with a missing kernel: %d %r" % (rc, err))
    rc, out, err = e.mabo("vm", "create", "x21", "--kernel", e.guest + "/Image", "--bogus", "1")
    expect(rc == 2 and "--bogus" in err, "vm create --bogus: %d %r" % (rc, err))
    expect(sorted(e.vms()) == before, "something was stored: %s" % sorted(e.vms()))


def check_prompt_in_log(e):
    e.wait_console("vm1", PROMPT)


def check_start_running_conflict(e):
    pid = e.vm("vm1")["pid"]
    rc, out, err = e.mabo("vm", "start", "vm1")
    expect(rc == 1 and err.count("\n") == 1 and "already" in err,
           "second start: status %d, stderr %r" % (rc, err))
    status, r = e.api("POST", "/v1/vms/vm1/start")
    expect(status == 409, "POST start of a running VM: %s %r" % (status, r))
    expect(e.vm("vm1")["pid"] == pid, "the pid changed")


def check_list(e):
    vms = e.vms()
    v = vms.get("vm1")
    expect(v and v["state"] == "running" and isinstance(v["pid"], int) and v["cpus"] == 1 and
           v["memory"] == 256 << 20, "list --json: %s" % vms)
    rc, out, err = e.mabo("vm", "list")
    lines = out.splitlines()
    expect(rc == 0 and lines[0].split() == ["NAME", "STATE", "CPUS", "MEMORY", "CPU%", "RSS",
                                            "PID", "UPTIME"]
           and any(l.split()[:4] == ["vm1", "running", "1", "256M"] and
                   l.split()[6] == str(v["pid"]) for l in lines[1:]), "vm list: %r" % out)
    rc, out, err = e.mabo("vm", "info", "vm1", "--json")
    expect(rc == 0 and json.loads(out)["spec"]["kernel"] == e.guest + "/Image",
           "vm info --json: %r" % out)


def own_cgroups():
    """{hierarchy directory: this process's cgroup in it} for the writable v1 controllers
    mabod uses, or the v2 hierarchy; the daemon's groups are made in its own cgroup, and the
    daemon is this process's child."""
    out = {}
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            path = "" if path == "/" else path
            if v2 and ctrls == "":
                out["/sys/fs/cgroup"] = "/sys/fs/cgroup" + path
            for c in ctrls.split(",") if not v2 else []:
                base = os.path.join("/sys/fs/cgroup", c)
                if c in ("cpu", "cpuacct", "memory", "pids") and \
                        os.access(os.path.join(base, "cgroup.procs"), os.W_OK):
                    out[os.path.realpath(base)] = base + path
    return sorted(set(out.values()))


def vm_cgroups(e, name):
    return [os.path.join(d, e.cgroup_parent, name) for d in own_cgroups()]


def procs_in(d):
    with open(os.path.join(d, "cgroup.procs")) as f:
        return {int(x) for x in f.read().split()}


def check_cgroup_accounting(e):
    v = e.vm("vm1")
    pid = v["pid"]
    groups = vm_cgroups(e, "vm1")
    if not groups:
        return "SKIPPED: no writable cgroup hierarchy"
    status, host = e.api("GET", "/v1/host")
    expect(host.get("cgroups") in ("v1", "v2"), "host cgroups: %s" % host.get("cgroups"))
    expect(v["cgroup"] == groups[0], "vm1's cgroup %r, expected %r" % (v["cgroup"], groups[0]))
    for g in groups:
        expect(pid in procs_in(g), "pid %d not in %s" % (pid, g))
    v1 = e.wait_vm("vm1", lambda v: v["cpu_seconds"] is not None, "sampled", 5)
    time.sleep(2.2)
    v2 = e.vm("vm1")
    expect(v2["cpu_seconds"] > v1["cpu_seconds"] and v2["memory_used"] > (16 << 20) and
           v2["tasks"] >= 2 and 0 <= v2["cpu_percent"] <= 100 * os.cpu_count(),
           "vm1's accounting: %s then %s" % (
               {k: v1[k] for k in ("cpu_seconds", "memory_used", "tasks", "cpu_percent")},
               {k: v2[k] for k in ("cpu_seconds", "memory_used", "tasks", "cpu_percent")}))
    # The figures are the cgroup's: the VMM's own CPU time is within them.
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    expect(v2["cpu_seconds"] >= own * 0.9 - 0.05, "cpu_seconds %.2f below the VMM's %.2f" % (
        v2["cpu_seconds"], own))
    rc, out, err = e.mabo("vm", "list")
    row = [l.split() for l in out.splitlines() if l.startswith("vm1 ")]
    expect(rc == 0 and row and float(row[0][4]) >= 0 and row[0][5][-1] in "KMG",
           "vm list row: %r" % out)
    # Prometheus text: the VM's CPU seconds, memory and state, the host's totals.
    c = UnixHTTP(e.sock)
    c.request("GET", "/metrics")
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    metrics = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, val = line.rsplit(" ", 1)
            metrics[k] = float(val)
    expect(r.status == 200 and r.getheader("Content-Type").startswith("text/plain"),
           "/metrics: %s %s" % (r.status, r.getheader("Content-Type")))
    expect(metrics.get('mabo_vm_state{vm="vm1",state="running"}') == 1 and
           metrics.get('mabo_vm_state{vm="vm1",state="stopped"}') == 0 and
           metrics.get('mabo_vm_cpu_seconds_total{vm="vm1"}', 0) >= v2["cpu_seconds"] and
           metrics.get('mabo_vm_memory_bytes{vm="vm1"}', 0) > 0 and
           metrics.get("mabo_host_vms_running", 0) >= 1 and
           metrics.get("mabo_host_cpus") == os.cpu_count(), "/metrics: %s" % text[:2000])
    return "%s: %.2f s CPU, %d MiB, %d tasks" % (
        ", ".join(g.split("/")[4] for g in groups), v2["cpu_seconds"],
        v2["memory_used"] >> 20, v2["tasks"])


def check_disk_shared(e):
    a = os.path.join(e.tmp, "shared-a.img")
    b = os.path.join(e.tmp, "shared-b.img")
    link = os.path.join(e.tmp, "shared-link.img")
    for f in (a, b):
        with open(f, "wb") as fh:
            fh.truncate(1 << 20)
    os.symlink(b, link)
    rc, out, err = e.mabo(*e.create_args("sha", "--disk", "path=" + a))
    expect(rc == 0, "vm create sha: %s" % err)
    # The same file under another name (a hard link: same device and inode), read-write
    # or read-only: refused, naming vm 'sha'.
    hard = os.path.join(e.tmp, "shared-hard.img")
    os.link(a, hard)
    for ro in ("", ",readonly=on"):
        status, r = e.api("POST", "/v1/vms", {"name": "shb", "spec": e.spec(
            disks=[{"path": hard, "readonly": bool(ro)}])})
        expect(status == 423 and "vm 'sha'" in error_of(status, r) and
               r["error"]["code"] == "disk_in_use", "second user of %s: %s %s" % (hard, status, r))
        rc, out, err = e.mabo(*e.create_args("shb", "--disk", "path=" + hard + ro))
        expect(rc == 1 and err.count("\n") == 1 and "vm 'sha'" in err,
               "vm create shb: %d %r" % (rc, err))
    expect("shb" not in e.vms(), "shb was stored")
    # Read-only by both: shared.
    for n in ("shc", "shd"):
        rc, out, err = e.mabo(*e.create_args(n, "--disk", "path=%s,readonly=on" % link))
        expect(rc == 0, "vm create %s read-only: %s" % (n, err))
    # A link turned since the definition to sha's disk: refused at start while sha runs.
    rc, out, err = e.mabo(*e.create_args("she", "--disk", "path=" + link))
    expect(rc == 1 and "vm 'shc'" in err, "read-write beside read-only users: %d %r" % (rc, err))
    for n in ("shc", "shd"):
        e.mabo("vm", "delete", n)
    rc, out, err = e.mabo(*e.create_args("she", "--disk", "path=" + link))
    expect(rc == 0, "vm create she: %s" % err)
    os.unlink(link)
    os.symlink(a, link)
    rc, out, err = e.mabo("vm", "start", "sha")
    expect(rc == 0, "vm start sha: %s" % err)
    status, r = e.api("POST", "/v1/vms/she/start")
    expect(status == 423 and "vm 'sha'" in error_of(status, r), "start of she: %s %s" % (
        status, r))
    expect(e.vm("she")["state"] == "stopped", "she started")
    pid = e.vm("sha")["pid"]
    groups = vm_cgroups(e, "sha")
    rc, out, err = e.mabo("vm", "kill", "sha")
    expect(rc == 0, "vm kill sha: %s" % err)
    # Its cgroups go with it.
    for g in groups:
        expect(not os.path.exists(g), "%s remains after the VM ended" % g)
    for n in ("sha", "she"):
        e.mabo("vm", "delete", n)
    return "pid %d; cgroups removed: %d" % (pid, len(groups))


def collapse(kinds):
    """The kinds in order, each run of one kind once."""
    out = []
    for k in kinds:
        if not out or out[-1] != k:
            out.append(k)
    return out


def check_events_stream(e):
    # Two followers: `mabo events --follow`, and an HTTP/1.1 client reading the chunked
    # text/event-stream itself.
    env = dict(os.environ, MABO_CONNECT="unix:" + e.sock)
    follower = subprocess.Popen([os.path.join(e.build, "mabo"), "events", "--follow"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    c = UnixHTTP(e.sock, timeout=30)
    c.request("GET", "/v1/events", headers={"Accept": "text/event-stream"})
    sock = c.sock
    r = c.getresponse()
    expect(r.status == 200 and r.getheader("Content-Type") == "text/event-stream",
           "GET /v1/events as a stream: %s %s" % (r.status, r.getheader("Content-Type")))
    seen = []

    def reader():
        kind = None
        try:
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    seen.append((kind, json.loads(line[6:])))
        except (OSError, ValueError):
            pass
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        rc, out, err = e.mabo(*e.create_args("ev"))
        expect(rc == 0, "vm create ev: %s" % err)
        rc, out, err = e.mabo("vm", "start", "ev")
        expect(rc == 0, "vm start ev: %s" % err)
        rc, out, err = e.mabo("vm", "stop", "ev")
        expect(rc == 0, "vm stop ev: %s" % err)
        # A graceful stop may say "stop" more than once (the button pressed again while
        # the guest boots): runs of one kind count once.
        want = ["define", "start", "running", "stop", "exit"]
        deadline = time.monotonic() + 5
        while collapse(k for k, v in seen if v.get("vm") == "ev") != want:
            expect(time.monotonic() < deadline, "events on the stream: %s" % seen)
            time.sleep(0.05)
        expect(all(k == v["kind"] and v["time_ms"] > 0 for k, v in seen),
               "event and data disagree: %s" % seen)
    finally:
        # The reader holds the response's buffer: the socket is shut first, so that it
        # returns, then closed.
        sock.shutdown(socket.SHUT_RDWR)
        t.join(5)
        c.close()
        e.mabo("vm", "delete", "ev")
        time.sleep(0.3)
        follower.terminate()
        out, err = follower.communicate(10)
    lines = [json.loads(l) for l in out.splitlines()]
    kinds = collapse(x["kind"] for x in lines if x.get("vm") == "ev")
    expect(kinds == ["define", "start", "running", "stop", "exit", "delete"],
           "mabo events --follow printed %r (stderr %r)" % (out, err))
    return "%d events" % len(seen)


class OpenAPI:
    """Responses checked against docs/openapi.yaml: the path, method and status are
    declared, and a JSON body matches the declared schema (types, required and enum members,
    items, nullable, oneOf), with no member the schema does not declare."""

    def __init__(self, path):
        import yaml  # python3-yaml (scripts/install-deps.sh)
        with open(path) as f:
            self.doc = yaml.safe_load(f)

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            target = self.doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def operation(self, method, path):
        rel = path.split("?")[0]
        if rel.startswith("/v1/"):
            rel = rel[3:]
        for tmpl, item in self.doc["paths"].items():
            a, b = tmpl.strip("/").split("/"), rel.strip("/").split("/")
            if len(a) == len(b) and all(x == y or x.startswith("{") for x, y in zip(a, b)):
                op = item.get(method.lower())
                expect(op is not None, "openapi: %s %s (as %s) not declared" % (
                    method, path, tmpl))
                return op
        raise Failure("openapi: no path for %s" % path)

    def validate(self, schema, value, where):
        schema = self.resolve(schema)
        if value is None:
            expect(schema.get("nullable", False), "%s: null, not nullable" % where)
            return
        if "oneOf" in schema:
            errors = []
            for alt in schema["oneOf"]:
                try:
                    self.validate(alt, value, where)
                    return
                except Failure as ex:
                    errors.append(str(ex))
            raise Failure("%s: matches no alternative (%s)" % (where, errors))
        t = schema.get("type")
        types = {"object": dict, "array": list, "string": str, "boolean": bool,
                 "integer": int, "number": (int, float)}
        if t:
            ok = isinstance(value, types[t]) and not (
                t in ("integer", "number") and isinstance(value, bool))
            expect(ok, "%s: %r is not of type %s" % (where, value, t))
        if "enum" in schema:
            expect(value in schema["enum"], "%s: %r not in %s" % (where, value, schema["enum"]))
        if t == "object":
            props = schema.get("properties", {})
            for k in schema.get("required", []):
                expect(k in value, "%s: required member %r missing" % (where, k))
            for k, v in value.items():
                expect(not props or k in props, "%s: member %r not declared" % (where, k))
                if k in props:
                    self.validate(props[k], v, "%s.%s" % (where, k))
        if t == "array" and "items" in schema:
            for i, v in enumerate(value):
                self.validate(schema["items"], v, "%s[%d]" % (where, i))

    def check(self, method, path, status, ctype, body):
        op = self.operation(method, path)
        resp = self.resolve(op["responses"].get(str(status)) or {})
        expect(resp, "openapi: %s %s answered %d, not declared" % (method, path, status))
        content = resp.get("content", {})
        base = (ctype or "").split(";")[0].strip()
        expect(base in content, "openapi: %s %s %d: content type %r, declared %s" % (
            method, path, status, ctype, sorted(content)))
        if base == "application/json":
            self.validate(content[base]["schema"], body, "%s %s %d" % (method, path, status))


def check_openapi(e):
    try:
        spec = OpenAPI(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "docs", "openapi.yaml"))
    except ImportError:
        return "SKIPPED: python3 yaml module missing (scripts/install-deps.sh)"
    disk = os.path.join(e.tmp, "openapi.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    requests = [
        ("GET", "/v1/vms", None), ("GET", "/v1/vms/vm1", None), ("GET", "/v1/host", None),
        ("GET", "/v1/events?limit=5", None), ("GET", "/v1/vms/nosuchvm", None),
        ("POST", "/v1/vms", {"name": "oa", "spec": e.spec(disks=[{"path": disk}])}),
        ("POST", "/v1/vms", {"name": "oa", "spec": e.spec()}),
        ("POST", "/v1/vms", {"name": "ob", "spec": e.spec(disks=[{"path": disk}])}),
        ("POST", "/v1/vms", {"name": "oc", "spec": e.spec(kernal="x")}),
        ("POST", "/v1/vms", {"name": "o c", "spec": e.spec()}),
        ("POST", "/v1/vms/vm1/start", None), ("POST", "/v1/vms/oa/stop", None),
        ("POST", "/v1/vms/oa/pause", None), ("GET", "/v1/vms/oa/console", None),
        ("DELETE", "/v1/vms/vm1", None), ("DELETE", "/v1/vms/oa", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/vms/vm1/snapshot", {"path": "relative.snap"}),
        ("POST", "/v1/vms/vm1/snapshot", {"path": os.path.join(e.tmp, "openapi.snap")}),
        ("GET", "/v1/operations/1", None), ("GET", "/v1/operations/99999", None),
    ]
    seen = set()
    for method, path, body in requests:
        c = UnixHTTP(e.sock)
        try:
            data = json.dumps(body) if body is not None else None
            c.request(method, path, body=data,
                      headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            raw = r.read()
            ctype = r.getheader("Content-Type")
        finally:
            c.close()
        value = json.loads(raw) if (ctype or "").startswith("application/json") else raw
        spec.check(method, path, r.status, ctype, value)
        seen.add(r.status)
        if r.status == 202:
            spec.check("GET", r.getheader("Location"), 200, "application/json",
                       e.api("GET", r.getheader("Location"))[1])
            # The snapshot ends before the next checks (one operation per VM at a time).
            deadline = time.monotonic() + 30
            while e.api("GET", r.getheader("Location"))[1]["state"] == "running":
                expect(time.monotonic() < deadline, "the snapshot did not end")
                time.sleep(0.05)
    expect({200, 201, 202, 400, 404, 409, 423} <= seen, "statuses seen: %s" % sorted(seen))
    return "%d responses, statuses %s" % (len(requests), sorted(seen))


def check_snapshot_restore(e):
    snap = os.path.join(e.tmp, "vm1.snap")
    t0 = time.monotonic()
    rc, out, err = e.mabo("vm", "snapshot", "vm1", os.path.relpath(snap), "--json")
    took = time.monotonic() - t0
    expect(rc == 0, "vm snapshot vm1: %d %s" % (rc, err))
    op = json.loads(out)
    expect(op["state"] == "succeeded" and op["kind"] == "snapshot" and op["path"] == snap and
           op["progress"] == 1 and os.path.getsize(snap) > (1 << 20),
           "snapshot operation: %s, file %s" % (op, os.path.exists(snap)))
    expect(e.vm("vm1")["state"] == "running", "vm1 after its snapshot: %s" % e.vm("vm1"))
    # Through the API: 202, a Location, the operation found there.
    c = UnixHTTP(e.sock)
    c.request("POST", "/v1/vms/vm1/snapshot", body=json.dumps({"path": snap + "2"}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    body = json.loads(r.read())
    loc = r.getheader("Location")
    c.close()
    expect(r.status == 202 and loc == "/v1/operations/%d" % body["id"] and
           body["state"] == "running", "POST snapshot: %s %s %s" % (r.status, loc, body))
    deadline = time.monotonic() + 30
    while True:
        status, op2 = e.api("GET", loc)
        expect(status == 200, "GET %s: %s %s" % (loc, status, op2))
        if op2["state"] != "running":
            break
        expect(time.monotonic() < deadline, "snapshot still running: %s" % op2)
        time.sleep(0.05)
    expect(op2["state"] == "succeeded" and "finished_at_ms" in op2, "operation: %s" % op2)
    # Refusals: a relative path, a stopped VM, an operation that does not exist.
    status, r1 = e.api("POST", "/v1/vms/vm1/snapshot", {"path": "rel.snap"})
    expect(status == 400 and "path" in error_of(status, r1), "relative path: %s %s" % (
        status, r1))
    rc, out, err = e.mabo(*e.create_args("rs"))
    expect(rc == 0, "vm create rs: %s" % err)
    status, r2 = e.api("POST", "/v1/vms/rs/snapshot", {"path": snap + "3"})
    expect(status == 409, "snapshot of a stopped VM: %s %s" % (status, r2))
    status, r3 = e.api("GET", "/v1/operations/999999")
    expect(status == 404, "unknown operation: %s %s" % (status, r3))
    # A restore of a running VM is refused; of the stopped rs, it runs vm1's guest on.
    status, r4 = e.api("POST", "/v1/vms/vm1/restore", {"path": snap})
    expect(status == 409, "restore of a running VM: %s %s" % (status, r4))
    rc, out, err = e.mabo("vm", "restore", "rs", snap, "--json")
    expect(rc == 0 and json.loads(out)["state"] == "succeeded", "vm restore rs: %d %s %s" % (
        rc, out, err))
    v = e.vm("rs")
    expect(v["state"] == "running" and alive(v["pid"]), "rs after restore: %s" % v)
    with open("/proc/%d/cmdline" % v["pid"], "rb") as f:
        argv = f.read().decode().split("\0")
    expect(["--restore", snap] == argv[argv.index("--restore"):argv.index("--restore") + 2]
           if "--restore" in argv else False, "rs's VMM arguments: %s" % argv)
    rc, out, err = e.mabo("vm", "kill", "rs")
    expect(rc == 0, "vm kill rs: %s" % err)
    # A file that is not a snapshot: the operation fails with the VMM's reason, one line.
    bad = os.path.join(e.tmp, "bad.snap")
    with open(bad, "wb") as f:
        f.write(b"not a snapshot" * 100)
    rc, out, err = e.mabo("vm", "restore", "rs", bad)
    expect(rc == 1 and err.count("\n") == 1 and "restore failed" in err,
           "restore of a bad file: %d %r" % (rc, err))
    expect(e.vm("rs")["state"] == "crashed", "rs after a bad restore: %s" % e.vm("rs"))
    rc, out, err = e.mabo("vm", "delete", "rs")
    return "snapshot %.1f s, %d MiB" % (took, os.path.getsize(snap) >> 20)


def check_adoption(e):
    rc, out, err = e.mabo(*e.create_args("vm2", "--restart", "on-failure", tick=True))
    expect(rc == 0, "vm create vm2: %s" % err)
    rc, out, err = e.mabo("vm", "start", "vm2")
    expect(rc == 0, "vm start vm2: %s" % err)
    e.wait_console("vm2", "tick 3", 120)
    before = {n: v["pid"] for n, v in e.vms().items() if v["state"] == "running"}
    expect({"vm1", "vm2"} <= set(before), "running before: %s" % before)
    e.kill9_daemon()
    console = os.path.join(e.run, "vms", "vm2", "console.log")
    size0 = os.path.getsize(console)
    time.sleep(1.5)
    for n, pid in before.items():
        expect(alive(pid), "%s (pid %d) died with the daemon" % (n, pid))
    size1 = os.path.getsize(console)
    expect(size1 > size0, "vm2's console did not grow while no daemon ran (%d)" % size0)
    e.start_daemon()
    after = e.vms()
    for n, pid in before.items():
        expect(after[n]["state"] == "running" and after[n]["pid"] == pid,
               "%s after restart: %s (pid was %d)" % (n, after[n], pid))
        # Still in its cgroup, which the new daemon accounts.
        for g in vm_cgroups(e, n):
            expect(pid in procs_in(g), "%s (pid %d) not in %s after adoption" % (n, pid, g))
        if vm_cgroups(e, n):
            e.wait_vm(n, lambda v: v["cpu_seconds"] is not None and v["cpu_seconds"] > 0.5,
                      "accounted after adoption", 5)
    t1 = len(e.console("vm2"))
    time.sleep(1.5)
    t2 = len(e.console("vm2"))
    expect(t2 > t1, "vm2's console does not grow after adoption (%d, %d)" % (t1, t2))
    status, ev = e.api("GET", "/v1/events?limit=50")
    expect(status == 200 and sum(x["kind"] == "adopt" for x in ev) >= 2, "events: %r" % ev)
    return "pids %s" % sorted(before.values())


def check_crash_never(e):
    v = e.vm("vm1")
    os.kill(v["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    v = e.wait_vm("vm1", lambda v: v["state"] == "crashed", "crashed", 5)
    seen = time.monotonic() - t0
    expect(seen < 1.5, "crash seen after %.2f s" % seen)
    expect("signal 9" in v.get("reason", "") and v["pid"] is None, "vm1: %s" % v)
    time.sleep(2)
    v = e.vm("vm1")
    expect(v["state"] == "crashed", "vm1 (restart never) changed: %s" % v)
    return "seen in %.2f s" % seen


def check_crash_on_failure(e):
    old = e.vm("vm2")["pid"]
    boots = e.console("vm2").count("tick 0\n")
    os.kill(old, signal.SIGKILL)
    v = e.wait_vm("vm2", lambda v: v["state"] == "crashed" or (v["pid"] and v["pid"] != old),
                  "crashed", 5)
    v = e.wait_vm("vm2", lambda v: v["state"] == "running" and v["pid"] != old, "restarted",
                  30)
    expect(v["restarts"] == 1, "vm2 restarts: %s" % v)
    deadline = time.monotonic() + 120
    while e.console("vm2").count("tick 0\n") <= boots:
        expect(time.monotonic() < deadline, "the restarted vm2 never printed on its console")
        time.sleep(0.5)
    return "new pid %d" % v["pid"]


def check_kill_and_delete(e):
    pid = e.vm("vm2")["pid"]
    rc, out, err = e.mabo("vm", "kill", "vm2")
    expect(rc == 0, "vm kill vm2: %d %s" % (rc, err))
    v = e.vm("vm2")
    expect(v["state"] == "stopped" and not alive(pid), "vm2 after kill: %s" % v)
    time.sleep(1.5)
    expect(e.vm("vm2")["state"] == "stopped", "vm2 was restarted after a kill it was asked")
    rc, out, err = e.mabo("vm", "kill", "vm2")
    expect(rc == 1 and "not running" in err, "kill of a stopped VM: %d %r" % (rc, err))
    rc, out, err = e.mabo("vm", "delete", "vm2")
    expect(rc == 0 and "vm2" not in e.vms(), "vm delete vm2: %d %s" % (rc, err))
    expect(not os.path.exists(os.path.join(e.run, "vms", "vm2")), "vm2's run dir remains")


def check_stop_pause(e):
    rc, out, err = e.mabo("vm", "start", "vm1")
    expect(rc == 0, "vm start vm1 again: %s" % err)
    rc, out, err = e.mabo("vm", "pause", "vm1")
    expect(rc == 0 and e.vm("vm1")["state"] == "paused", "pause: %d %s" % (rc, err))
    rc, out, err = e.mabo("vm", "resume", "vm1")
    expect(rc == 0 and e.vm("vm1")["state"] == "running", "resume: %d %s" % (rc, err))
    pid = e.vm("vm1")["pid"]
    rc, out, err = e.mabo("vm", "stop", "vm1", "--timeout", "10")
    v = e.vm("vm1")
    expect(rc == 0 and v["state"] == "stopped" and not alive(pid), "stop: %d %s %s" %
           (rc, err, v))


def check_graceful_stop(e):
    # The default guest acts on its power button: vm stop shuts it down cleanly, long
    # before the (default, 60 s) timeout.
    rc, out, err = e.mabo(*e.create_args("pw"))
    expect(rc == 0, "vm create pw: %s" % err)
    rc, out, err = e.mabo("vm", "start", "pw")
    expect(rc == 0, "vm start pw: %s" % err)
    e.wait_console("pw", PROMPT)
    pid = e.vm("pw")["pid"]
    t0 = time.monotonic()
    rc, out, err = e.mabo("vm", "stop", "pw")
    took = time.monotonic() - t0
    v = e.vm("pw")
    expect(rc == 0 and v["state"] == "stopped" and not alive(pid),
           "stop: %d %r %s" % (rc, err, v))
    expect("powered off" in v.get("reason", ""), "exit reason: %s" % v)
    log = e.console("pw")
    for line in ("mabo-powerkey: power button pressed, powering off",
                 "Sent SIGTERM to all processes", "reboot: Power down"):
        expect(line in log, "%r not on the console; tail: %r" % (line, log[-400:]))
    expect(took < 30, "stop took %.1f s" % took)
    rc, out, err = e.mabo("vm", "delete", "pw")
    expect(rc == 0, "vm delete pw: %s" % err)
    return "%.1f s" % took


def check_stop_ignored(e):
    # A guest that does not listen (busybox sleep as its init: no driver, no listener):
    # the button is pressed in vain, the VMM is killed once --timeout has passed.
    status, r = e.api("POST", "/v1/vms", {"name": "deaf", "spec": e.spec(
        cmdline="console=ttyS0 rdinit=/bin/busybox -- sleep 600")})
    expect(status == 201, "define deaf: %s %r" % (status, r))
    rc, out, err = e.mabo("vm", "start", "deaf")
    expect(rc == 0, "vm start deaf: %s" % err)
    e.wait_console("deaf", "Run /bin/busybox as init process")
    pid = e.vm("deaf")["pid"]
    t0 = time.monotonic()
    rc, out, err = e.mabo("vm", "stop", "deaf", "--timeout", "3")
    took = time.monotonic() - t0
    v = e.vm("deaf")
    expect(rc == 0 and v["state"] == "stopped" and not alive(pid),
           "stop: %d %r %s" % (rc, err, v))
    expect(3 <= took < 15, "stop took %.1f s (timeout 3 s)" % took)
    expect("signal 9" in v.get("reason", ""), "exit reason: %s" % v)
    rc, out, err = e.mabo("vm", "delete", "deaf")
    expect(rc == 0, "vm delete deaf: %s" % err)
    return "killed after %.1f s" % took


def check_burst(e):
    ok = []
    stop = threading.Event()

    def definer():
        i = 0
        while not stop.is_set():
            name = "burst%d" % i
            i += 1
            try:
                status, _ = e.api("POST", "/v1/vms", {"name": name, "spec": e.spec()})
            except OSError:
                return
            if 200 <= status < 300:
                ok.append(name)

    threads = [threading.Thread(target=definer) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(ok) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    e.kill9_daemon()
    stop.set()
    for t in threads:
        t.join(10)
    expect(len(ok) >= 100, "only %d defines in 20 s" % len(ok))
    e.start_daemon()
    names = set(e.vms())
    lost = [n for n in ok if n not in names]
    expect(not lost, "%d defines answered 201 but lost: %s" % (len(lost), lost[:5]))
    db = sqlite3.connect("file:%s/mabod.db?mode=ro" % e.state, uri=True)
    res = db.execute("PRAGMA integrity_check").fetchall()
    db.close()
    expect(res == [("ok",)], "integrity_check: %s" % res)
    return "%d defines before SIGKILL, all there" % len(ok)


def check_sigterm(e):
    rc, out, err = e.mabo(*e.create_args("vm3", tick=True))
    rc, out, err = e.mabo("vm", "start", "vm3")
    expect(rc == 0, "vm start vm3: %s" % err)
    pid = e.vm("vm3")["pid"]
    e.daemon.send_signal(signal.SIGTERM)
    expect(e.daemon.wait(10) == 0, "mabod exit status %s on SIGTERM" % e.daemon.returncode)
    expect(alive(pid), "vm3 ended with the daemon")
    expect(not os.path.exists(e.sock), "the socket remains after SIGTERM")
    e.start_daemon()
    expect(e.vm("vm3")["pid"] == pid, "vm3 not re-adopted")
    rc, out, err = e.mabo("vm", "kill", "vm3")
    expect(rc == 0 and not alive(pid), "kill vm3: %s" % err)


def check_start_failure(e):
    kernel = os.path.join(e.tmp, "Image-gone")
    with open(e.guest + "/Image", "rb") as f, open(kernel, "wb") as g:
        g.write(f.read())
    status, r = e.api("POST", "/v1/vms", {"name": "gone", "spec": e.spec(kernel=kernel)})
    expect(status == 201, "define gone: %s %r" % (status, r))
    os.unlink(kernel)
    rc, out, err = e.mabo("vm", "start", "gone")
    v = e.vm("gone")
    expect(rc == 1 and err.count("\n") == 1 and "Image-gone" in err,
           "start with the kernel gone: %d %r" % (rc, err))
    expect(v["state"] == "crashed" and "Image-gone" in v.get("reason", ""), "gone: %s" % v)
    rc, out, err = e.mabo("vm", "delete", "gone")
    expect(rc == 0, "delete gone: %s" % err)


def check_autostart(e):
    rc, out, err = e.mabo(*e.create_args("vm4", "--autostart", tick=True))
    expect(rc == 0 and e.vm("vm4")["state"] == "stopped", "vm create vm4: %s" % err)
    # A daemon restarted within the same boot does not autostart (RUN_DIR/booted says so)...
    e.kill9_daemon()
    e.start_daemon()
    time.sleep(0.5)
    expect(e.vm("vm4")["state"] == "stopped", "vm4 autostarted by a restarted daemon")
    # ... the first one after a boot (a fresh RUN_DIR) does.
    e.kill9_daemon()
    os.unlink(os.path.join(e.run, "booted"))
    e.start_daemon()
    v = e.wait_vm("vm4", lambda v: v["state"] == "running", "running", 30)
    rc, out, err = e.mabo("vm", "kill", "vm4")
    expect(rc == 0 and not alive(v["pid"]), "kill vm4: %s" % err)


def check_unrecorded_vmm(e):
    status, r = e.api("POST", "/v1/vms", {"name": "vm5", "spec": e.spec()})
    expect(status == 201, "define vm5: %s %r" % (status, r))
    d = os.path.join(e.run, "vms", "vm5")
    os.makedirs(d, exist_ok=True)
    sock = os.path.join(d, "api.sock")
    g = e.guest
    p = subprocess.Popen(
        [e.vmm, "--kernel", g + "/Image", "--initramfs",
         g + "/initramfs.cpio.gz", "--firmware", g + "/fw_dynamic.bin", "--memory", "256M",
         "--api-socket", sock], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    e.pids.add(p.pid)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            expect(time.monotonic() < deadline and p.poll() is None, "the VMM made no socket")
            time.sleep(0.05)
        rc, out, err = e.mabo("vm", "start", "vm5")
        expect(rc == 1 and "already answers" in err and str(p.pid) in err,
               "start beside an unrecorded VMM: %d %r" % (rc, err))
        # A new daemon finds it on the socket and watches it.
        e.kill9_daemon()
        e.start_daemon()
        v = e.wait_vm("vm5", lambda v: v["state"] == "running", "running", 10)
        expect(v["pid"] == p.pid, "vm5: %s, the VMM is pid %d" % (v, p.pid))
        rc, out, err = e.mabo("vm", "kill", "vm5")
        expect(rc == 0 and p.wait(10) == -signal.SIGKILL, "kill vm5: %d %s" % (rc, err))
        expect(e.vm("vm5")["state"] == "stopped", "vm5 after kill: %s" % e.vm("vm5"))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def check_devices(e):
    disk = os.path.join(e.tmp, "disk.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rel = os.path.relpath(disk)
    rule = "tcp:127.0.0.1:%d-:22" % port
    rc, out, err = e.mabo(*e.create_args("vm6", "--cpus", "2", "--rng", "--disk",
                                         "path=%s,readonly=on,id=d1" % rel, "--net",
                                         "user,hostfwd=" + rule + ",mac=52:54:00:12:34:99"))
    expect(rc == 0, "vm create vm6: %s" % err)
    spec = e.vm("vm6")["spec"]
    expect(spec["disks"] == [{"path": disk, "readonly": True, "id": "d1"}] and
           spec["nets"] == [{"type": "user", "hostfwd": [rule], "mac": "52:54:00:12:34:99"}]
           and spec["rng"] is True and spec["cpus"] == 2, "vm6's spec: %s" % spec)
    rc, out, err = e.mabo("vm", "start", "vm6")
    expect(rc == 0, "vm start vm6: %s" % err)
    pid = e.vm("vm6")["pid"]
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = f.read().decode().split("\0")
    for pair in (["--cpus", "2"], ["--disk", "path=%s,readonly=on,id=d1" % disk],
                 ["--net", "user,hostfwd=%s,mac=52:54:00:12:34:99" % rule], ["--rng"]):
        expect(any(argv[i:i + len(pair)] == pair for i in range(len(argv))),
               "%s not in the VMM's arguments %s" % (pair, argv))
    # The VMM opened the disk file, read-only.
    deadline = time.monotonic() + 30
    while True:
        fds = []
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == disk:
                    with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                        fds.append(int(f.read().split("flags:")[1].split()[0], 8))
            except OSError:
                pass
        if fds:
            break
        expect(time.monotonic() < deadline, "the VMM did not open %s" % disk)
        time.sleep(0.1)
    expect(all(fl & os.O_ACCMODE == os.O_RDONLY for fl in fds),
           "%s open for writing (flags %s)" % (disk, [oct(f) for f in fds]))
    rc, out, err = e.mabo("vm", "kill", "vm6")
    expect(rc == 0, "kill vm6: %s" % err)
    return "pid %d" % pid


def check_stop_unanswered(e):
    rc, out, err = e.mabo("vm", "start", "vm1")
    expect(rc == 0, "vm start vm1: %s" % err)
    pid = e.vm("vm1")["pid"]
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    rc, out, err = e.mabo("vm", "stop", "vm1", "--timeout", "2")
    took = time.monotonic() - t0
    v = e.vm("vm1")
    expect(rc == 0 and v["state"] == "stopped" and not alive(pid),
           "stop of a VMM that does not answer: %d %r %s" % (rc, err, v))
    expect(took < 10, "stop took %.1f s" % took)
    return "%.1f s" % took


def check_console_cap(e):
    cap = 4096
    e.daemon.send_signal(signal.SIGTERM)
    e.daemon.wait(10)
    e.daemon_args = ["--cgroup-parent", e.cgroup_parent, "--console-log-max", str(cap)]
    e.start_daemon()
    rc, out, err = e.mabo(*e.create_args("vm7", tick=True))
    rc, out, err = e.mabo("vm", "start", "vm7")
    expect(rc == 0, "vm start vm7: %s" % err)
    e.wait_console("vm7", "tick 5", 120)
    d = os.path.join(e.run, "vms", "vm7")
    # Read the files and the API answer until they agree (the guest keeps printing).
    for _ in range(20):
        with open(d + "/console.log.1", "rb") as f:
            old = f.read()
        with open(d + "/console.log", "rb") as f:
            cur = f.read()
        env = dict(os.environ, MABO_CONNECT="unix:" + e.sock)
        log = subprocess.run([os.path.join(e.build, "mabo"), "vm", "log", "vm7"], env=env,
                             capture_output=True, timeout=30, check=True).stdout
        if log == old + cur:
            break
    expect(log == old + cur, "vm log is not console.log.1 then console.log")
    # A file is cut at the cap, unless one read from the VMM was bigger (at most 16 KiB).
    expect(0 < len(old) <= 16384 and len(cur) <= 16384, "sizes %d, %d" % (len(old), len(cur)))
    expect(b"OpenSBI" not in log, "the boot banner is still there: nothing was dropped")
    rc, out, err = e.mabo("vm", "kill", "vm7")
    expect(rc == 0, "kill vm7: %s" % err)
    return "console.log.1 %d bytes, console.log %d" % (len(old), len(cur))


def check_poweroff_policies(e):
    # mabo.bench: the guest's /init powers off as soon as it is up (exit status 0).
    for name, policy in (("off-always", "always"), ("off-onfail", "on-failure")):
        rc, out, err = e.mabo("vm", "create", name, "--kernel", e.guest + "/Image",
                              "--initramfs", e.guest + "/initramfs.cpio.gz", "--firmware",
                              e.guest + "/fw_dynamic.bin", "--memory", "256M", "--cmdline",
                              "console=ttyS0 mabo.bench", "--restart", policy)
        expect(rc == 0, "create %s: %s" % (name, err))
        status, r = e.api("POST", "/v1/vms/%s/start" % name)
        expect(status == 202, "start %s: %s %r" % (name, status, r))
    v = e.wait_vm("off-onfail", lambda v: v["state"] == "stopped", "stopped", 120)
    expect("powered off" in v.get("reason", "") and v["restarts"] == 0 and
           v["desired"] == "stopped", "off-onfail: %s" % v)
    v = e.wait_vm("off-always", lambda v: v["restarts"] >= 1, "restarted", 120)
    rc, out, err = e.mabo("vm", "stop", "off-always")
    expect(rc == 0, "stop off-always: %d %s" % (rc, err))
    restarts = e.vm("off-always")["restarts"]
    time.sleep(2)
    v = e.vm("off-always")
    expect(v["state"] == "stopped" and v["restarts"] == restarts, "after stop: %s" % v)
    return "always: %d restarts" % restarts


def check_migrated_always(e):
    # A VM whose VMM migrated it away ends with status 4 (the VM runs on the destination):
    # under restart=always mabod must not start it here again (two copies of one VM).
    rc, out, err = e.mabo(*e.create_args("mig", "--restart", "always", tick=True))
    expect(rc == 0, "create mig: %s" % err)
    rc, out, err = e.mabo("vm", "start", "mig")
    expect(rc == 0, "vm start mig: %s" % err)
    e.wait_console("mig", "tick 3", 120)
    v = e.vm("mig")
    with open("/proc/%d/cmdline" % v["pid"], "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    i = argv.index("--api-socket")
    mig = os.path.join(e.tmp, "mig.sock")
    dst_api = os.path.join(e.tmp, "mig-dst.api")
    argv[i + 1] = dst_api
    dst = subprocess.Popen(argv + ["--incoming", "unix:" + mig], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    e.pids.add(dst.pid)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(mig) and time.monotonic() < deadline:
            time.sleep(0.05)
        p = subprocess.run([os.path.join(e.build, "mabo"), "--api-socket",
                            os.path.join(e.run, "vms", "mig", "api.sock"), "migrate",
                            "unix:" + mig], capture_output=True, text=True, timeout=120)
        expect(p.returncode == 0, "migrate: %d %s %s" % (p.returncode, p.stdout, p.stderr))
        v = e.wait_vm("mig", lambda v: v["state"] == "stopped", "stopped", 30)
        expect("migrated away" in v.get("reason", "") and v["restarts"] == 0 and
               v["desired"] == "stopped", "after the migration: %s" % v)
        time.sleep(2.5)  # longer than the first restart back-off (1 s)
        v = e.vm("mig")
        expect(v["state"] == "stopped" and v["restarts"] == 0 and not v.get("pid"),
               "started again after it migrated away: %s" % v)
        expect(dst.poll() is None, "the destination exited %s" % dst.returncode)
    finally:
        dst.send_signal(signal.SIGTERM)
        try:
            dst.wait(30)
        except subprocess.TimeoutExpired:
            dst.kill()
    return "reason: %s" % v["reason"]


def check_garbage(e):
    import random
    rnd = random.Random(1234)
    base = json.dumps({"name": "fz", "spec": e.spec(disks=[{"path": e.guest + "/Image"}],
                                                    nets=[{"type": "user"}])}).encode()
    statuses = {}
    for i in range(300):
        b = bytearray(base)
        for _ in range(rnd.randint(1, 6)):
            if not b:
                break
            op = rnd.randint(0, 3)
            pos = rnd.randrange(len(b))
            if op == 0:
                b[pos] = rnd.randrange(256)
            elif op == 1:
                del b[pos:pos + rnd.randint(1, 20)]
            elif op == 2:
                b[pos:pos] = rnd.choice([b"[", b"{", b"\"", b"1e999", b"-", b"\\u0000",
                                         b"99999999999999999999", b"null", b","])
            else:
                b = b[:pos]
        status, r = e.api("POST", "/v1/vms", raw=bytes(b))
        statuses[status] = statuses.get(status, 0) + 1
        expect(status in (201, 400, 409), "body %r: %s %r" % (bytes(b)[:200], status, r))
        if status == 201:
            e.api("DELETE", "/v1/vms/" + r["name"])
    deep = '{"name":"deep","spec":' + "[" * 100000 + "]" * 100000 + "}"
    status, r = e.api("POST", "/v1/vms", raw=deep)
    expect(status in (400, 413), "deep nesting: %s" % status)
    # Bytes that are not HTTP, and a connection closed mid-request.
    for junk in (b"\x00\xff" * 1000 + b"\r\n\r\n", b"GET /v1/vms HTTP/1.1\r\nHost: x\r\n",
                 b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(e.sock)
        c.sendall(junk)
        c.close()
    status, _ = e.api("GET", "/v1/host")
    expect(status == 200 and e.daemon.poll() is None, "the daemon did not survive")
    return "statuses %s" % sorted(statuses.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--guest", default="build/guest")
    ap.add_argument("--log-dir", default="build/mabod-logs")
    ap.add_argument("--vmm", help="mabo-vmm for mabod (default: beside it)")
    args = ap.parse_args()
    for f in ("Image", "initramfs.cpio.gz", "fw_dynamic.bin"):
        if not os.path.exists(os.path.join(args.guest, f)):
            print("SKIP: %s/%s missing (run tools/mabo-image)" % (args.guest, f))
            return 77
    e = Env(args.build, args.guest, args.log_dir, args.vmm)
    checks = [
        ("daemon starts", lambda: e.start_daemon()),
        ("define and start a VM", lambda: check_start_and_prompt(e)),
        ("bad requests: 4xx naming the field, nothing stored", lambda: check_bad_requests(e)),
        ("malformed bodies and bytes: 4xx, the daemon lives", lambda: check_garbage(e)),
        ("the shell prompt in vm log", lambda: check_prompt_in_log(e)),
        ("start of a running VM: 409", lambda: check_start_running_conflict(e)),
        ("vm list, list --json, info", lambda: check_list(e)),
        ("cgroup accounting: the VMM in its group, vm list, /metrics",
         lambda: check_cgroup_accounting(e)),
        ("a disk used read-write by another VM: 423 naming it", lambda: check_disk_shared(e)),
        ("real responses match docs/openapi.yaml", lambda: check_openapi(e)),
        ("snapshot and restore: 202, an operation, its outcome", lambda: check_snapshot_restore(e)),
        ("GET /v1/events as a stream, and mabo events --follow, while a VM starts and stops",
         lambda: check_events_stream(e)),
        ("disks, nets, rng and cpus reach the VMM", lambda: check_devices(e)),
        ("kill -9 of mabod: two VMs run on and are re-adopted", lambda: check_adoption(e)),
        ("VMM killed, restart never: crashed", lambda: check_crash_never(e)),
        ("VMM killed, restart on-failure: restarted", lambda: check_crash_on_failure(e)),
        ("vm kill and delete", lambda: check_kill_and_delete(e)),
        ("pause, resume, stop", lambda: check_stop_pause(e)),
        ("vm stop: the guest powers off on its power button", lambda: check_graceful_stop(e)),
        ("vm stop: a guest that ignores the button is killed after --timeout",
         lambda: check_stop_ignored(e)),
        ("stop of a VMM that does not answer: killed",
         lambda: check_stop_unanswered(e)),
        ("power-off: restarted under always, not under on-failure",
         lambda: check_poweroff_policies(e)),
        ("migrated away under always: not restarted", lambda: check_migrated_always(e)),
        ("definitions survive kill -9 in a burst of defines", lambda: check_burst(e)),
        ("SIGTERM: mabod exits, the VM runs on", lambda: check_sigterm(e)),
        ("a start that fails: one line, crashed, with the VMM's reason",
         lambda: check_start_failure(e)),
        ("autostart once per boot", lambda: check_autostart(e)),
        ("a VMM on a VM's socket the daemon did not record: no second copy, adopted",
         lambda: check_unrecorded_vmm(e)),
        ("console log capped (--console-log-max)", lambda: check_console_cap(e)),
    ]
    failed = skipped = 0
    try:
        for name, fn in checks:
            t0 = time.monotonic()
            try:
                note = fn()
            except (Failure, OSError, ValueError, KeyError, TypeError,
                    subprocess.SubprocessError) as ex:
                failed += 1
                print("FAIL: %s: %s: %s" % (name, type(ex).__name__, ex), flush=True)
                if e.daemon is None or e.daemon.poll() is not None:
                    print("FAIL: the daemon is gone; stopping here", flush=True)
                    failed += len(checks) - checks.index((name, fn)) - 1
                    break
                continue
            if note and note.startswith("SKIPPED"):
                skipped += 1
                print("skip: %s: %s" % (name, note), flush=True)
                continue
            print("ok: %s%s (%.1f s)" % (name, " (" + note + ")" if note else "",
                                        time.monotonic() - t0), flush=True)
    finally:
        e.cleanup()
    print("mabod: %d passed, %d failed, %d skipped (logs: %s)" % (
        len(checks) - failed - skipped, failed, skipped, args.log_dir))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
