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
        self.daemon_args = []
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
        for pid in list(self.pids) + pids_naming(self.run):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


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
    expect(rc == 0 and lines[0].split() == ["NAME", "STATE", "CPUS", "MEMORY", "PID", "UPTIME"]
           and any(l.split()[:5] == ["vm1", "running", "1", "256M", str(v["pid"])]
                   for l in lines[1:]), "vm list: %r" % out)
    rc, out, err = e.mabo("vm", "info", "vm1", "--json")
    expect(rc == 0 and json.loads(out)["spec"]["kernel"] == e.guest + "/Image",
           "vm info --json: %r" % out)


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
    e.daemon_args = ["--console-log-max", str(cap)]
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
        ("disks, nets, rng and cpus reach the VMM", lambda: check_devices(e)),
        ("kill -9 of mabod: two VMs run on and are re-adopted", lambda: check_adoption(e)),
        ("VMM killed, restart never: crashed", lambda: check_crash_never(e)),
        ("VMM killed, restart on-failure: restarted", lambda: check_crash_on_failure(e)),
        ("vm kill and delete", lambda: check_kill_and_delete(e)),
        ("pause, resume, stop", lambda: check_stop_pause(e)),
        ("stop of a VMM that does not answer quit: killed",
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
    failed = 0
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
            print("ok: %s%s (%.1f s)" % (name, " (" + note + ")" if note else "",
                                        time.monotonic() - t0), flush=True)
    finally:
        e.cleanup()
    print("mabod: %d passed, %d failed (logs: %s)" % (len(checks) - failed, failed, args.log_dir))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
