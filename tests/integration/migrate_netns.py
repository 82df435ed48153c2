#!/usr/bin/env python3
"""Live migration between "hosts" made of Linux network namespaces, links cut for real.

Four namespaces, made for this run and deleted at its end (also on failure): a switch (a
bridge, br0) and three hosts on it, each by a veth pair: h1 (10.77.N.1) and h2 (10.77.N.2)
run the VMMs (ip netns exec), stor (10.77.N.3) runs qemu-nbd (or nbdkit) exporting the VM's
raw disk image over TCP; both VMMs open it as nbd://10.77.N.3:10809. Nothing touches the
root namespace's network. The destination listens on its own host's address
(--incoming tcp:10.77.N.2:PORT); control sockets are Unix sockets in a temporary directory.
Every migration runs over TLS 1.3 with a pre-shared key given to all VMMs (--migration-key;
--insecure: in clear, --migration-insecure), reconnections and cut links included.

The guest runs migrate.py's workload (numbered, synced disk records; a checksummed memory
pattern; uptime lines) all along, while:

1. faults over the TCP link: the destination killed mid-migration (SIGKILL), a migration
   cancelled; each time the source runs on;
2. the VM is migrated back and forth between h1 and h2 (--rounds, default 20; every
   third compressed, every third post-copy);
3. link cuts (--cuts, default 6): a migration starts (capped at 100 MiB/s, so it lasts
   about 1.2 s), after a seeded random delay (spread over 0 .. 1.5 s, one cut per slice)
   the destination host's link is cut at the switch (ip link set DOWN), left down for a
   few seconds (alternately 2-4 s and 11-13 s: under and over the migration's 10 s socket
   timeouts), then restored. Whatever the outcome, exactly one copy
   of the guest must run afterwards: either the migration failed, the source's guest runs
   on and the destination gives up without ever running it, or it completed, the source
   exited 0 and the guest runs on the destination. Then the next migration must succeed;
4. (unless --no-postcopy) two post-copy migrations (capped at 32 MiB/s, so that the pages
   take seconds to follow) whose link is cut
   (for 3-6 s, then 11-13 s) while the guest already runs on the destination; once the link
   is back each must complete on its own, the guest running on the destination only;
5. at the end the workload stops: the pattern verifies, every record is on the disk in
   order with no gap, the uptime never went backwards, and no record was printed by two
   VMMs (two copies of the guest).

    python3 tests/integration/migrate_netns.py [--rounds 20] [--cuts 6] [--seed N]
            [--no-postcopy] [--poll-status] [--insecure] [--log-dir DIR]

--poll-status adds a second client polling migrate-status during every migration (as a
cluster manager would). Console logs (vmmN.log), each migrate's output (migrate-NN.txt)
and, for a VMM that hangs, its threads' stacks (gdb) go to --log-dir.

Needs root and `ip netns`; without them it prints "skipped: REASON" and exits 77 (what
scripts/test.sh counts as skipped). Python 3 standard library only.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402
import migrate as M  # noqa: E402  (Cluster, WORKLOAD, checks; M.ok / M.bad count results)

SKIPPED = 77
NBD_PORT = 10809
IO_TIMEOUT_S = 10  # the migration's socket timeouts (src/migration/migration.c)
HOSTS = ("h1", "h2", "stor")
# The migrations that get their link cut: capped so that the 1.5 s the cut points are
# drawn from span pass 1, pass 2, the switch-over and a little after (about 1.2 s in
# all; uncapped, the 256 MiB VM goes over the veths in about 0.4 s).
CUT_OPTS = ("--bandwidth", "100")
POSTCOPY_OPTS = ("--bandwidth", "32")  # 256 MiB of pages: about 8 s


def note(msg):
    print("note: " + msg, flush=True)


def sh(argv, timeout=20, check=True):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise console.ConsoleError("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                                        p.stdout.strip()))
    return p


class Net:
    """The namespaces: a switch with a bridge, and h1, h2, stor on it by veth pairs (the
    switch's end of each is named after its host)."""

    def __init__(self, tag, subnet):
        self.ns = {h: "mabo-%s-%s" % (h, tag) for h in ("sw",) + HOSTS}
        self.addr = {h: "10.77.%d.%d" % (subnet, i + 1) for i, h in enumerate(HOSTS)}
        self.made = []

    def setup(self):
        for ns in self.ns.values():
            sh(["ip", "netns", "add", ns])
            self.made.append(ns)
        sw = self.ns["sw"]
        sh(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", sw, "link", "set", "br0", "up"])
        sh(["ip", "-n", sw, "link", "set", "lo", "up"])
        for h in HOSTS:
            ns = self.ns[h]
            sh(["ip", "-n", sw, "link", "add", h, "type", "veth", "peer", "name", "eth0",
                "netns", ns])
            sh(["ip", "-n", sw, "link", "set", h, "master", "br0", "up"])
            sh(["ip", "-n", ns, "addr", "add", self.addr[h] + "/24", "dev", "eth0"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def prefix(self, host):
        return ["ip", "netns", "exec", self.ns[host]]

    def link(self, host, up):
        """The host's link at the switch: up or cut. Once up, waits until the host reaches
        the others again (its neighbour entries may have failed while it was cut)."""
        sh(["ip", "-n", self.ns["sw"], "link", "set", host, "up" if up else "down"])
        if up:
            self.wait_reachable(host)

    def wait_reachable(self, host, timeout=20):
        """Waits until host opens TCP to every other host (a refusal also counts: the
        peer answered); raises after timeout s."""
        probe = ("import socket, sys\n"
                 "for a in sys.argv[1:]:\n"
                 "    s = socket.socket()\n"
                 "    s.settimeout(1)\n"
                 "    try:\n"
                 "        s.connect((a, %d))\n"
                 "    except ConnectionRefusedError:\n"
                 "        pass\n"
                 "    finally:\n"
                 "        s.close()\n" % NBD_PORT)
        others = [self.addr[h] for h in HOSTS if h != host]
        deadline = time.monotonic() + timeout
        while True:
            p = sh(self.prefix(host) + [sys.executable, "-c", probe] + others, check=False)
            if p.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise console.ConsoleError("%s does not reach %s %d s after its link came "
                                           "back: %s" % (host, " ".join(others), timeout,
                                                         p.stdout.strip()[-300:]))
            time.sleep(0.3)

    def cleanup(self):
        for ns in reversed(self.made):
            p = sh(["ip", "netns", "del", ns], check=False)
            if p.returncode != 0:
                print("cannot delete namespace %s: %s" % (ns, p.stdout.strip()), flush=True)
        self.made = []


def tcp_listening(pid, addr, port):
    """Whether process pid's network namespace has a TCP socket listening on addr:port."""
    want = "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(addr))[0], port)
    try:
        with open("/proc/%d/net/tcp" % pid) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return False
    return any(l.split()[1] == want and l.split()[3] == "0A" for l in lines)


def wait_listening(proc, addr, port, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise console.ConsoleError("%s exited (status %s) before listening on %s:%d" %
                                       (what, proc.returncode, addr, port))
        if tcp_listening(proc.pid, addr, port):
            return
        time.sleep(0.05)
    raise console.ConsoleError("%s: not listening on %s:%d after %d s" % (what, addr, port,
                                                                        timeout))


def nbd_server(net, image, log):
    """qemu-nbd (else nbdkit) in the storage namespace, serving image on TCP."""
    addr = net.addr["stor"]
    if shutil.which("qemu-nbd"):
        argv = ["qemu-nbd", "--persistent", "--shared=8", "-f", "raw", "-b", addr,
                "-p", str(NBD_PORT), "--cache=writeback", image]
    elif shutil.which("nbdkit"):
        argv = ["nbdkit", "-f", "-i", addr, "-p", str(NBD_PORT), "file", image]
    else:
        raise console.ConsoleError("neither qemu-nbd nor nbdkit is installed "
                                   "(scripts/install-deps.sh)")
    # ip netns exec execs the server: the pid is the server's.
    p = subprocess.Popen(net.prefix("stor") + argv, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    wait_listening(p, addr, NBD_PORT, argv[0])
    return p, argv[0]


def stop(proc, grace=5):
    """Ends a process this test started (by its pid only)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def info(vm):
    try:
        rc, out, _ = M.mabo(vm.sock, "info", timeout=10)
        return json.loads(out) if rc == 0 else {}
    except (subprocess.TimeoutExpired, ValueError):
        return {}


def info_state(vm):
    return info(vm).get("state")


class Migrations:
    """The VM and where it runs; each migration goes to the other host."""

    def __init__(self, args, net, cl, log_dir):
        self.args, self.net, self.cl, self.log_dir = args, net, cl, log_dir
        self.sessions = []
        self.cur = None
        self.nmig = 0
        self.live = []  # mabo migrate processes still running
        self.outages = []

    # --- VMMs -----------------------------------------------------------------------------
    def start(self, host, incoming=False):
        extra, uri = [], None
        if incoming:
            port = 4400 + self.cl.n + 1
            uri = "tcp:%s:%d" % (self.net.addr[host], port)
            extra = ["--incoming", uri]
        s = self.cl.start(extra, prefix=self.net.prefix(host))
        s.host, s.uri = host, uri
        self.sessions.append(s)
        if incoming:
            wait_listening(s.proc, self.net.addr[host], port, "%s (%s)" % (s.name, host))
        return s

    def boot(self, host):
        self.cur = self.start(host)
        self.cur.expect(console.PROMPT, 120)
        self.cur.send(M.WORKLOAD)
        self.cur.expect(r"W 3 ", 60)
        M.ok("the guest boots on %s (%s) with its disk on nbd://%s:%d, workload running" %
             (host, self.cur.name, self.net.addr["stor"], NBD_PORT))

    def other(self):
        return "h2" if self.cur.host == "h1" else "h1"

    def destination(self):
        return self.start(self.other(), incoming=True)

    def diagnose(self, vm):
        """Saves the threads' stacks of a VMM that seems stuck (if gdb is there)."""
        if vm.proc.poll() is not None or not shutil.which("gdb"):
            return
        path = os.path.join(self.log_dir, "%s-stacks.txt" % vm.name)
        try:
            p = subprocess.run(["gdb", "-batch", "-p", str(vm.proc.pid), "-ex",
                                "thread apply all bt"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            with open(path, "w") as f:
                f.write(p.stdout)
            note("stacks of %s (pid %d) in %s" % (vm.name, vm.proc.pid, path))
        except (OSError, subprocess.TimeoutExpired) as e:
            note("gdb on %s: %s" % (vm.name, e))

    def alive(self, vm):
        """Whether the guest runs on vm: its VMM says running and the workload advances."""
        if vm.proc.poll() is not None or info_state(vm) != "running":
            return False
        n = len(M.uptimes(vm.output))
        deadline = time.monotonic() + 15  # the pattern rewrite takes seconds
        while time.monotonic() < deadline:
            if len(M.uptimes(vm.output)) > n:
                return True
            time.sleep(0.2)
        return False

    # --- migrations -----------------------------------------------------------------------
    def migrate_start(self, dst, *extra):
        self.nmig += 1
        argv = [M.MABO, "--api-socket", self.cur.sock, "migrate", dst.uri] + list(extra)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
        p.what = "migration %d: %s (%s) -> %s (%s) %s" % (
            self.nmig, self.cur.name, self.cur.host, dst.name, dst.host, " ".join(extra))
        p.t0, p.n = time.monotonic(), self.nmig
        p.poller = None
        if self.args.poll_status:
            p.poller = StatusPoller(self.cur.sock)
        self.live.append(p)
        return p

    def migrate_end(self, p, timeout=90):
        """Waits for a mabo migrate; returns (rc, final status, stderr)."""
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += "\n(test: mabo migrate still running after %d s, killed)" % timeout
        if p.poller:
            p.poller.stop()
        self.live.remove(p)
        with open(os.path.join(self.log_dir, "migrate-%02d.txt" % p.n), "w") as f:
            f.write("# %s\n# exit %s after %.1f s\n%s%s" % (p.what, p.returncode,
                                                            time.monotonic() - p.t0, out, err))
        return p.returncode, M.last_json(out), err.strip()

    def no_outcome(self, src, dst, what, rc, res, err):
        """mabo migrate gave no outcome: say what each side does, and stop the run (which
        copy of the guest to trust is unknown)."""
        self.diagnose(src)
        self.diagnose(dst)
        raise console.ConsoleError(
            "%s: no outcome (mabo migrate exit %s, %s, %s); source %s: %s, destination %s: "
            "%s\n--- source ---\n%s\n--- destination ---\n%s" % (
                what, rc, res, err, src.name,
                "exited %s" % src.proc.returncode if src.proc.poll() is not None
                else "state %s" % info_state(src), dst.name,
                "exited %s" % dst.proc.returncode if dst.proc.poll() is not None
                else "state %s" % info_state(dst), src.tail(600), dst.tail(600)))

    def completed(self, dst, res, what):
        """After a migration said completed: the source exits M.MIGRATED, the guest runs on
        dst."""
        src, good = self.cur, True
        try:
            src.proc.wait(30)
            src_rc = src.wait_exit(5)
        except subprocess.TimeoutExpired:
            src_rc = None
        if src_rc is None:
            self.diagnose(src)
            M.bad("%s: completed, but the source %s is still there 30 s later (state %s)" %
                  (what, src.name, info_state(src)))
            src.close()
            good = False
        elif src_rc != M.MIGRATED:
            M.bad("%s: completed, but the source %s exited %s\n%s" %
                  (what, src.name, src_rc, src.tail(600)))
            good = False
        self.cur = dst
        try:
            dst.expect(r"W \d+ ", 30)
        except console.ConsoleError as e:
            raise console.ConsoleError("%s: the guest does not run on the destination: %s" %
                                       (what, e))
        st = info_state(dst)
        if st != "running":
            M.bad("%s: the destination's state is %s" % (what, st))
            good = False
        self.outages.append(res.get("downtime_ms", -1))
        return good

    def migrate(self, what, *extra):
        """A migration that must succeed."""
        src, dst = self.cur, self.destination()
        rc, res, err = self.migrate_end(self.migrate_start(dst, *extra))
        if rc == 0 and res.get("status") == "completed":
            return self.completed(dst, res, what)
        if res.get("status") not in ("failed", "cancelled") and not refused(rc, res, err):
            self.no_outcome(src, dst, what, rc, res, err)
        M.bad("%s: rc %d %s %s\n%s" % (what, rc, res, err, src.tail(400)))
        dst.close()
        return False

    def pingpong(self, rounds):
        hosts = []
        for r in range(rounds):
            hosts.append(self.other())
            # Plain pre-copy, compressed, and post-copy in turn.
            extra = (["--compress"] if r % 3 == 1 else
                     ["--postcopy"] if r % 3 == 2 else [])
            if not self.migrate("round %d to %s" % (r + 1, hosts[-1]), *extra):
                return
        M.ok("%d migrations back and forth over TCP between h1 and h2 (%s; outage ms: %s)" %
             (rounds, " ".join(hosts), self.outages[-rounds:]))

    def faults(self):
        M.fault_kill(self.cur, self.destination(), "destination on %s killed" % self.other())
        M.fault_cancel(self.cur, self.destination(), "cancelled over TCP")
        self.migrate("migration after the faults")

    # --- link cuts ------------------------------------------------------------------------
    def cut(self, i, delay, down, extra=CUT_OPTS):
        """A migration whose destination's link is cut after delay s for down s."""
        src = self.cur
        dst = self.destination()
        what = "cut %d (%s link down at %.2f s for %.1f s)" % (i, dst.host, delay, down)
        p = self.migrate_start(dst, *extra)
        time.sleep(delay)
        self.net.link(dst.host, False)
        t_cut = time.monotonic()
        try:
            ended = p.poll() is not None
            src_lines = len(M.uptimes(src.output))
            time.sleep(down)
        finally:
            self.net.link(dst.host, True)
        rc, res, err = self.migrate_end(p, timeout=60)
        status = res.get("status")
        # Where the cut fell: the migration's own account of its progress.
        print("   %s: %s; migrate exit %s: %s%s, pass %s, %.1f MB, %s ms in all" % (
            what, "the migration had ended" if ended else "cut %.2f s into it" %
            (t_cut - p.t0), rc, status, " (%s)" % res.get("error") if res.get("error") else "",
            res.get("pass"), res.get("bytes", 0) / 1e6, res.get("total_ms")), flush=True)
        if rc == 0 and status == "completed":
            if self.completed(dst, res, what):
                M.ok("%s: completed; the guest runs on %s only, the source exited 0" %
                     (what, dst.host))
            return
        if status not in ("failed", "cancelled") or rc == 0:
            self.no_outcome(src, dst, what, rc, res, err)
        # Failed: the guest must run on at the source, and the destination must never run
        # it. The destination gives up on its own (its reads time out): wait for that.
        two = self.two_copies(src, dst, what, src_lines)
        if not two:
            M.still_running(src, what)
        self.retire(dst, what, two)

    def two_copies(self, src, dst, what, src_lines):
        """After a failed migration: does the guest run on dst too? Watches dst until it
        exits (at most IO_TIMEOUT_S + 10 s)."""
        deadline = time.monotonic() + IO_TIMEOUT_S + 10
        while time.monotonic() < deadline and dst.proc.poll() is None:
            if M.uptimes(dst.output) or info_state(dst) == "running":
                break
            time.sleep(0.2)
        if not M.uptimes(dst.output) and info_state(dst) != "running":
            return False
        src_runs = self.alive(src)
        M.bad("TWO COPIES after %s: the migration failed and the source %s, and the guest "
              "runs on the destination %s (workload lines: source %d after the cut, "
              "destination %d)\n--- source %s ---\n%s\n--- destination %s ---\n%s" %
              (what, "runs on" if src_runs else "state %s" % (
                  info_state(src) if src.proc.poll() is None
                  else "exited %s" % src.proc.returncode),
               dst.name, len(M.uptimes(src.output)) - src_lines, len(M.uptimes(dst.output)),
               src.log_path, src.tail(1500), dst.log_path, dst.tail(1500)))
        if not src_runs:
            raise console.ConsoleError("%s: cannot go on (the guest's home is unclear)" % what)
        return True

    def retire(self, dst, what, two):
        """Ends a destination that did not take the VM (killing it if it still waits)."""
        rc = dst.proc.poll()
        if two:
            note("%s: killing the second copy on %s, the source goes on" % (what, dst.name))
        elif rc is None:
            # A destination that never gives up would hold its host's resources (and the
            # VM's disk open) forever: a failure.
            self.diagnose(dst)
            M.bad("%s: the destination %s still waits %d s after the link came back "
                  "(killed it)\n%s" % (what, dst.name, IO_TIMEOUT_S + 10, dst.tail(600)))
        elif rc == 0:
            M.bad("%s: the destination exited 0 without running the guest" % what)
        else:
            M.ok("%s: the destination gave up (exit %d) without running the guest: %s" %
                 (what, rc, last_error(dst.output)))
        dst.close()

    def cuts(self, n, rng):
        """n cuts, each at a different point: the i-th delay from the i-th slice of
        0 .. 1.5 s; links down alternately for 2-4 s (under the 10 s socket timeouts: the
        migration may carry on) and 11-13 s (over them: it must fail unless it was done)."""
        for i in range(n):
            delay = rng.uniform(1.5 * i / n, 1.5 * (i + 1) / n)
            down = rng.uniform(2, 4) if i % 2 == 0 else rng.uniform(11, 13)
            self.cut(i + 1, delay, down)
            self.migrate("the migration after cut %d" % (i + 1))

    # --- post-copy ------------------------------------------------------------------------
    def postcopy_cut(self, delay, down):
        """A post-copy migration (the guest runs on the destination at once, pages follow
        on demand) whose destination link is cut delay s after the guest first runs there,
        for down s: the destination's guest waits for the link, then the migration
        completes on its own; the source never resumes the guest after handing it over."""
        src = self.cur
        dst = self.destination()
        what = "post-copy cut (%s link down %.2f s into post-copy for %.1f s)" % (
            dst.host, delay, down)
        # Capped, so that the pages take seconds to follow and the cut lands among them.
        p = self.migrate_start(dst, "--postcopy", *POSTCOPY_OPTS)
        # The destination says it runs the guest with pages still to come: post-copy is on.
        deadline = time.monotonic() + 30
        while (p.poll() is None and "postcopy_link" not in info(dst) and
               time.monotonic() < deadline):
            time.sleep(0.02)
        running = p.poll() is None and "postcopy_link" in info(dst)
        dst_during = 0
        if not running:
            M.bad("%s: the migration ended or failed before post-copy was seen; no cut" %
                  what)
        else:
            time.sleep(delay)
            self.net.link(dst.host, False)
            try:
                src_lines = len(M.uptimes(src.output))
                dst_lines = len(M.uptimes(dst.output))
                time.sleep(down)
                dst_during = len(M.uptimes(dst.output)) - dst_lines
                # Past the socket timeouts the destination has noticed, and says so.
                st = info(dst) if down > IO_TIMEOUT_S + 1 else None
            finally:
                self.net.link(dst.host, True)
            if st is not None:
                if st.get("postcopy_link") == "down" and st.get("postcopy_missing_pages"):
                    M.ok("%s: the destination reports the link down, %d pages missing" %
                         (what, st["postcopy_missing_pages"]))
                else:
                    M.bad("%s: the destination's info during the cut: %s" % (what, st))
        rc, res, err = self.migrate_end(p, timeout=120)
        print("   %s: migrate exit %s, %s%s; the destination printed %d workload lines "
              "while cut" % (what, rc, res.get("status"), " (%s)" % res.get("error")
                             if res.get("error") else "", dst_during), flush=True)
        if refused(rc, res, err):
            M.bad("%s: refused: %s" % (what, err))
            dst.close()
            return
        if rc != 0 or res.get("status") != "completed":
            M.bad("%s: did not complete: exit %s %s %s" % (what, rc, res, err))
            if running and self.alive(src):
                M.bad("%s: TWO COPIES: the guest ran on %s and runs on %s" % (
                    what, dst.host, src.host))
            if src.proc.poll() is not None or res.get("status") not in ("failed",
                                                                        "cancelled"):
                self.no_outcome(src, dst, what, rc, res, err)
            dst.close()
            return
        if running and len(M.uptimes(src.output)) > src_lines:
            M.bad("%s: the source printed workload lines after the hand-over" % what)
        if self.completed(dst, res, what):
            M.ok("%s: completed after the link came back; the guest runs on %s" %
                 (what, dst.host))

    def postcopy(self, rng):
        """Post-copy with the link cut for less, then for more than the socket timeouts."""
        for down in (rng.uniform(3, 6), rng.uniform(11, 13)):
            self.postcopy_cut(rng.uniform(0.2, 1.0), down)
            self.migrate("the migration after a post-copy cut")

    def close(self):
        for p in list(self.live):
            stop(p)
            if p.poller:
                p.poller.stop()
        for s in self.sessions:
            s.close()


class StatusPoller:
    """A second client (a cluster manager, say) polling migrate-status while a migration
    runs (--poll-status)."""

    def __init__(self, sock):
        self.sock = sock
        self.done = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.done.is_set():
            try:
                M.mabo(self.sock, "migrate-status", timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.done.wait(0.02)

    def stop(self):
        self.done.set()
        self.t.join(15)


def refused(rc, res, err):
    """mabo migrate's request was refused: no migration started (the source runs on)."""
    return rc == 1 and not res and err.startswith("mabo: migrate:") and "unknown" not in err


def last_error(text):
    lines = re.findall(r"mabo-vmm: (?:error|warning): ([^\r\n]*)", text)
    return lines[-1] if lines else "no error logged"


def distinct_printers(sessions):
    """Records whose workload line was printed by more than one VMM (two copies ran)."""
    who = {}
    for s in sessions:
        for i, _ in M.uptimes(s.output):
            who.setdefault(i, set()).add(s.name)
    return {i: sorted(n) for i, n in who.items() if len(n) > 1}


def skip(reason):
    print("skipped: " + reason, flush=True)
    return SKIPPED


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="migrations back and forth")
    ap.add_argument("--cuts", type=int, default=6, help="link cuts during migrations")
    ap.add_argument("--seed", type=int, help="seed of the cut points (default: random)")
    ap.add_argument("--no-postcopy", dest="postcopy", action="store_false",
                    help="leave out the post-copy migrations with the link cut")
    ap.add_argument("--poll-status", action="store_true",
                    help="a second client polls migrate-status during every migration")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--memory", default="256M")
    ap.add_argument("--log-dir", default=os.path.join(M.ROOT, "build", "migrate-netns-logs"))
    ap.add_argument("--timeout", type=int, default=900, help="the whole run, seconds")
    ap.add_argument("--insecure", action="store_true",
                    help="migrate in clear (--migration-insecure) instead of over TLS")
    args = ap.parse_args()

    if os.geteuid() != 0:
        return skip("needs root (network namespaces)")
    if not shutil.which("ip"):
        return skip("no ip command (iproute2)")
    tag = "%d" % os.getpid()
    probe = "mabo-probe-" + tag
    p = subprocess.run(["ip", "netns", "add", probe], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        return skip("cannot make a network namespace: " + p.stdout.strip())
    subprocess.run(["ip", "netns", "del", probe], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    for f in (M.VMM, M.MABO, M.GUEST + "/Image"):
        if not os.path.exists(f):
            print("FAILED: missing %s: run make and tools/mabo-image" % f)
            return 1

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    print("seed %d (again: --seed %d)" % (seed, seed), flush=True)

    def on_signal(signum, _frame):
        raise SystemExit("interrupted by signal %d" % signum)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def on_alarm(_signum, _frame):
        raise console.ConsoleError("the whole run took longer than %d s" % args.timeout)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)

    os.makedirs(args.log_dir, exist_ok=True)
    for f in os.listdir(args.log_dir):
        if re.match(r"(vmm\d+\.log|migrate-\d+\.txt|nbd\.log)$", f):
            os.unlink(os.path.join(args.log_dir, f))
    tmp = tempfile.mkdtemp(prefix="mabo-netns-")
    net = Net(tag, 1 + os.getpid() % 250)
    server = None
    run = None
    t0 = time.monotonic()
    try:
        net.setup()
        M.ok("namespaces %s: h1 %s, h2 %s, stor %s on a bridge" % (
            ", ".join(net.made), net.addr["h1"], net.addr["h2"], net.addr["stor"]))
        disk = os.path.join(tmp, "disk.img")
        with open(disk, "wb") as f:
            f.truncate(64 << 20)
        with open(os.path.join(args.log_dir, "nbd.log"), "w") as log:
            server, server_name = nbd_server(net, disk, log)
        disk_uri = "nbd://%s:%d" % (net.addr["stor"], NBD_PORT)
        M.ok("%s serves the disk on %s in the storage namespace" % (server_name, disk_uri))
        if args.insecure:
            sec = ["--migration-insecure"]
        else:
            key = os.path.join(tmp, "migration.key")
            with open(key, "wb") as f:
                f.write(os.urandom(32))
            os.chmod(key, 0o600)
            sec = ["--migration-key", key]
        M.ok("migrations %s" % ("in clear (--migration-insecure)" if args.insecure
                                else "over TLS 1.3 with a pre-shared key"))
        cl = M.Cluster(tmp, disk_uri, memory=args.memory, cpus=args.cpus,
                       log_dir=args.log_dir, vmm_opts=["-v"] + sec)
        run = Migrations(args, net, cl, args.log_dir)
        run.boot("h1")
        run.faults()
        run.pingpong(args.rounds)
        run.cuts(args.cuts, rng)
        if args.postcopy:
            run.postcopy(rng)
        last = M.finish_workload(run.cur, run.sessions)
        dup = distinct_printers(run.sessions)
        if dup:
            M.bad("TWO COPIES: records printed by more than one VMM: %s" %
                  sorted(dup.items())[:5])
        else:
            M.ok("every workload line came from one VMM only")
        run.close()
        stop(server)
        server = None
        M.check_records(disk, last)
    except Exception as e:  # noqa: BLE001 - every error is a failure, reported
        M.bad(str(e) if isinstance(e, console.ConsoleError) else
              "%s: %s" % (type(e).__name__, e))
    finally:
        signal.alarm(0)
        if run:
            run.close()
        stop(server)
        net.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print("logs in %s; %.0f s" % (args.log_dir, time.monotonic() - t0))
    print("migrate-netns: %d passed, %d failed (seed %d)" % (M.passed, M.failed, seed))
    return 1 if M.failed else 0


if __name__ == "__main__":
    sys.exit(main())
