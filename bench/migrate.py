#!/usr/bin/env python3
"""Live migration, mabo-vmm against QEMU TCG, same guest, same work, one run.

For each payload (idle, busy: ../shared/bench/payload-*.sh, put into the guest's initramfs
and run by /init through mabo.run=) and each run:

- mabo-vmm: a destination `--incoming tcp:127.0.0.1:PORT`, a source booting the guest; once
  the payload prints QMIG-READY (and --settle s later), `build/mabo migrate` with the same
  downtime target; then the destination runs --after s.
- QEMU: ../shared/bench/qemu-migrate.py (the peer runner: QMP migrate to a -incoming tcp:
  peer, with QEMU 7.2's riscv timers re-armed on the destination through the gdbstub, since
  without it the destination guest hangs), with the same guest, memory, bandwidth and
  downtime limit.

Figures, for both:
  outage_ms        vCPUs stopped on the source to running on the destination. mabo: its own
                   downtime_ms (both processes stamp CLOCK_MONOTONIC); QEMU: the source's
                   STOP event to the destination's RESUME event (switchover_ms).
  stall_ms         the largest lateness of the guest's 100 ms ticks ("T <seq> <uptime>"),
                   stamped on the host as they arrive (busy payload only), computed by the
                   peer runner's own function for both.
  total_ms, bytes  the migration's.
and the ratios mabo / qemu (< 1: mabo-vmm is better), plus the loopback TCP bandwidth (the
physical bound for bytes / total time).

    python3 bench/migrate.py [RUNS] [--mem 512M] [--downtime-ms 10] [--payloads idle,busy]
                             [--postcopy] [--keep] [--tls-cost]

mabo-vmm migrates over TLS 1.3 with a pre-shared key (--migration-key, as deployed).
--tls-cost compares that against the same migration in clear (--migration-insecure)
instead of against QEMU: ratio = TLS / clear.

--postcopy migrates ours in post-copy (the guest runs on the destination at once, its pages
follow); the peer runner drives only QEMU's pre-copy, so that comparison is post-copy
against pre-copy, and says so in its header.

Needs ../shared/bench (says so and exits 77 when absent), qemu-system-riscv64, cpio, and
the guest in build/guest.
"""

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "bench")
VMM = os.path.join(ROOT, "build", "mabo-vmm")
MABO = os.path.join(ROOT, "build", "mabo")
GUEST = os.path.join(ROOT, "build", "guest")


def load_peer():
    spec = importlib.util.spec_from_file_location("qemu_migrate",
                                                  os.path.join(SHARED, "qemu-migrate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_initrd(work):
    """The guest's initramfs plus a cpio archive with /bench/{idle,busy}.sh."""
    d = os.path.join(work, "extra")
    os.makedirs(os.path.join(d, "bench"), exist_ok=True)
    for p in ("idle", "busy"):
        dst = os.path.join(d, "bench", p + ".sh")
        with open(os.path.join(SHARED, "payload-%s.sh" % p)) as f, open(dst, "w") as g:
            g.write(f.read())
        os.chmod(dst, 0o755)
    extra = os.path.join(work, "extra.cpio.gz")
    files = subprocess.run(["find", "bench"], cwd=d, capture_output=True, text=True,
                           check=True).stdout
    archive = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--owner", "0:0"], cwd=d,
                             input=files.encode(), capture_output=True, check=True).stdout
    with open(extra, "wb") as out:
        # A second gzip member, as bench/coremark.sh appends its archive.
        out.write(subprocess.run(["gzip", "-6", "-n"], input=archive, capture_output=True,
                                 check=True).stdout)
    initrd = os.path.join(work, "bench-initramfs.cpio.gz")
    with open(initrd, "wb") as out:
        for p in (os.path.join(GUEST, "initramfs.cpio.gz"), extra):
            with open(p, "rb") as f:
                out.write(f.read())
    return initrd


def loopback_mibps(mib=512):
    """TCP throughput over loopback, one stream: the bound for any migration here."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = [0]

    def sink():
        c, _ = srv.accept()
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            got[0] += len(d)
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    buf = b"\0" * (1 << 20)
    c = socket.create_connection(("127.0.0.1", port))
    t0 = time.monotonic()
    for _ in range(mib):
        c.sendall(buf)
    c.close()
    t.join()
    srv.close()
    return got[0] / (1 << 20) / (time.monotonic() - t0)


class Guest:
    """A mabo-vmm whose console lines are stamped on the host clock (time.time(), as the
    peer runner's)."""

    def __init__(self, name, argv, work):
        self.name = name
        self.lines = []
        self.partial = b""
        self.partial_time = None
        self.ready = threading.Event()
        self.err = open(os.path.join(work, name + ".err"), "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.err)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            now = time.time()
            if not chunk:
                return
            data = self.partial + chunk
            *full, self.partial = data.split(b"\n")
            self.partial_time = now if self.partial else None
            for raw in full:
                text = raw.decode(errors="replace").rstrip("\r")
                self.lines.append((now, text))
                if text.startswith("QMIG-READY"):
                    self.ready.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def wait_path(p, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(p):
            return True
        time.sleep(0.02)
    return False


def migration_key(work):
    key = os.path.join(work, "migration.key")
    if not os.path.exists(key):
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
    return key


def run_mabo(peer, o, payload, initrd, work, n, tls=True):
    wd = os.path.join(work, "mabo-%s-%s-%d" % ("tls" if tls else "clear", payload, n))
    os.makedirs(wd)
    sec = ["--migration-key", migration_key(work)] if tls else ["--migration-insecure"]
    base = [VMM, "--kernel", GUEST + "/Image", "--initramfs", initrd, "--firmware",
            GUEST + "/fw_dynamic.bin", "--memory", o.mem, "--cpus", "1", "--no-reboot",
            "-v", "--cmdline", "console=ttyS0 mabo.run=/bench/%s.sh" % payload] + sec
    port = free_port()
    dsock, ssock = os.path.join(wd, "dst.sock"), os.path.join(wd, "src.sock")
    dst = Guest("dst", base + ["--incoming", "tcp:127.0.0.1:%d" % port, "--api-socket", dsock],
                wd)
    src = None
    res = {"status": "error"}
    try:
        if not wait_path(dsock):
            raise RuntimeError("the destination did not start")
        src = Guest("src", base + ["--api-socket", ssock], wd)
        if not src.ready.wait(o.boot_timeout):
            raise RuntimeError("the guest never printed QMIG-READY")
        time.sleep(o.settle)
        t_migrate = time.time()
        args = [MABO, "--api-socket", ssock, "migrate", "tcp:127.0.0.1:%d" % port,
                "--downtime-ms", str(o.downtime_ms)] + (["--postcopy"] if o.postcopy else [])
        p = subprocess.run(args, capture_output=True, text=True, timeout=o.timeout)
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        res = json.loads(lines[-1]) if lines else {"status": "error", "error": p.stderr}
        if res.get("status") == "completed":
            time.sleep(o.after)
            st = peer.stall_figures(src, dst, t_migrate)
            if st:
                res.update(st)
            res["outage_ms"] = res.get("downtime_ms")
    finally:
        for g in (src, dst):
            if g:
                g.stop()
    return res


def run_qemu(o, payload, initrd, work, n):
    wd = os.path.join(work, "qemu-%s-%d" % (payload, n))
    args = [sys.executable, os.path.join(SHARED, "qemu-migrate.py"), "--qemu", o.qemu,
            "--kernel", GUEST + "/Image", "--bios", GUEST + "/fw_dynamic.bin",
            "--initrd", initrd, "--mem", o.mem, "--run", payload + ".sh",
            "--append", "mabo.run=/bench/%s.sh" % payload,
            "--downtime-limit", str(o.downtime_ms), "--max-bandwidth", "10G",
            "--settle", str(o.settle), "--after", str(o.after), "--workdir", wd,
            "--boot-timeout", str(o.boot_timeout)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=o.timeout + 600)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    res = json.loads(lines[-1]) if lines else {"status": "error", "error": p.stderr[-300:]}
    res["outage_ms"] = res.get("switchover_ms")
    return res


def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def main():
    global SHARED
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="?", type=int, default=3)
    ap.add_argument("--mem", default="512M")
    ap.add_argument("--downtime-ms", type=int, default=10)
    ap.add_argument("--payloads", default="idle,busy")
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--after", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--boot-timeout", type=float, default=240)
    ap.add_argument("--qemu", default="qemu-system-riscv64")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (the VMMs' stderr with -v messages)")
    ap.add_argument("--postcopy", action="store_true",
                    help="mabo migrates in post-copy (QEMU still in pre-copy: the peer "
                    "runner drives only that)")
    ap.add_argument("--tls-cost", action="store_true",
                    help="mabo over TLS against mabo in clear (--migration-insecure), "
                    "without QEMU")
    ap.add_argument("--shared", default=SHARED,
                    help="the directory of the peer runner and payloads (default %(default)s)")
    o = ap.parse_args()
    SHARED = o.shared
    if not os.path.exists(os.path.join(SHARED, "qemu-migrate.py")):
        print("skipped: %s is absent (the QEMU peer runner and payloads live there)" % SHARED)
        return 77
    for f in (VMM, MABO, GUEST + "/Image"):
        if not os.path.exists(f):
            print("missing %s: run make and tools/mabo-image" % f)
            return 1
    peer = load_peer()
    work = tempfile.mkdtemp(prefix="mabo-bench-migrate-")
    try:
        return bench(o, peer, work)
    finally:
        if o.keep:
            print("logs kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench(o, peer, work):
    initrd = bench_initrd(work)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    qv = subprocess.run([o.qemu, "--version"], capture_output=True, text=True).stdout
    print("bench/migrate.py at %s, %s; %s, 1 vCPU, downtime target %d ms, loopback TCP%s" %
          (commit, qv.splitlines()[0] if qv else o.qemu, o.mem, o.downtime_ms,
           "; mabo in post-copy, QEMU in pre-copy" if o.postcopy else ""))
    print("loopback TCP bandwidth: %.0f MiB/s (one stream)" % loopback_mibps())
    keys = ("outage_ms", "guest_stall_ms", "total_ms", "bytes")
    summary = {}
    # The first against the second: mabo (TLS) against QEMU, or TLS against clear.
    whos = ("tls", "clear") if o.tls_cost else ("mabo", "qemu")
    for payload in o.payloads.split(","):
        rows = {w: [] for w in whos}
        for n in range(o.runs):
            for who in whos:
                r = (run_qemu(o, payload, initrd, work, n) if who == "qemu"
                     else run_mabo(peer, o, payload, initrd, work, n, tls=who != "clear"))
                rows[who].append(r)
                print("%-5s %-4s run %d: status %s outage %s ms, stall %s ms, total %s ms, "
                      "%s bytes%s" % (payload, who, n + 1, r.get("status"), r.get("outage_ms"),
                                      r.get("guest_stall_ms"), r.get("total_ms"),
                                      r.get("bytes"),
                                      "" if r.get("status") == "completed"
                                      else " (%s)" % r.get("error")), flush=True)
        for who in rows:
            summary[(payload, who)] = {k: med([r.get(k) for r in rows[who]
                                               if r.get("status") == "completed"])
                                       for k in keys}
    print()
    a, b = whos
    print("medians (completed runs); ratio = %s / %s (< 1: %s better)" %
          (a, b, "TLS" if o.tls_cost else "mabo-vmm"))
    for payload in o.payloads.split(","):
        m, q = summary[(payload, a)], summary[(payload, b)]
        for k in keys:
            ratio = (m[k] / q[k]) if m[k] is not None and q[k] else None
            print("%-5s %-15s %s %-10s %s %-10s ratio %s" %
                  (payload, k, a, m[k], b, q[k], "%.3f" % ratio if ratio is not None else "n/a"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
