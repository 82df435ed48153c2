#!/usr/bin/env python3
"""NBD disks end to end: boot the default guest with disks on NBD servers started by the
test (nbdkit's file plugin, qemu-nbd on a raw image, qemu-nbd on a qcow2 image), check that
the guest's data reaches the servers' images and survives a new VM, and that the VMM rides
out a server that is killed and restarted, or that stays away.

    python3 tests/integration/nbd.py --vmm build/mabo-vmm --guest build/guest [--mib N]

1. Three disks: vda on nbdkit (file plugin, raw), vdb on qemu-nbd (raw), vdc on qemu-nbd
   -f qcow2, each 512 MiB, all on Unix sockets. In the guest: N MiB of pseudo-random data
   in /tmp and its md5sum; dd'd to each disk with conv=fsync (a flush at the end); the page
   cache dropped; each disk read back and the checksums compared; poweroff exits 0.
2. On the host, with the servers stopped: the first N MiB of both raw images, and of the
   qcow2 image converted by qemu-img, have the guest's checksum.
3. A new VM, the servers restarted, reads the same checksum back from the three disks.
4. vda on nbdkit (its delay filter holding each write 200 ms), killed while the guest
   writes to it with O_DIRECT and restarted on the same file 3 s later: the VMM says the
   connection was lost with requests waiting and then that it reconnected; the guest's dd completes with status 0 and the data reads
   back (in the guest, and in the file on the host). vdb on a second nbdkit with
   reconnect-timeout=3, killed and kept away: the guest's read fails (dd fails, the
   kernel logs an I/O error), the VMM logs the failure and its console still answers;
   once the server is back, a new read on vdb succeeds; killed again, poweroff still
   exits 0 without waiting for it.

The servers are test dependencies (scripts/install-deps.sh): if nbdkit or qemu-nbd is
missing, the checks fail. Uses tests/integration/console.py's harness; Python 3 standard
library only. Closing line: "N passed, M failed".
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402
from console import Checks, ConsoleError, first_md5, md5_of, poweroff  # noqa: E402

DISK_SIZE = 512 << 20


def wait_output(s, pattern, start, timeout):
    """Wait until pattern appears in the VMM's output after offset start (the VMM's own
    messages come asynchronously, between the guest's); the re.Match."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        m = rx.search(s.output, start)
        if m:
            return m
        if s.proc.poll() is not None:
            raise ConsoleError("VMM exited (status %d) while waiting for %r\n%s" %
                               (s.proc.returncode, pattern, s.tail()))
        if time.monotonic() > deadline:
            raise ConsoleError("timed out after %gs waiting for %r (log: %s)\n%s" %
                               (timeout, pattern, s.log_path, s.tail()))
        time.sleep(0.2)


class Server:
    """One NBD server on a Unix socket, serving an image; stop() and start() again serve
    the same image on the same socket."""

    def __init__(self, kind, image, sock, fmt="raw"):
        self.kind, self.image, self.sock, self.fmt = kind, image, sock, fmt
        self.proc = None
        self.pid = None
        self.log = open(sock + ".log", "ab")

    def uri(self):
        # qemu-nbd serves the export "disk"; nbdkit serves any name.
        return "nbd+unix:///disk?socket=" + self.sock

    def start(self, filters=()):
        """filters: nbdkit filter arguments, e.g. ("--filter=delay", "wdelay=200ms")."""
        for p in (self.sock, self.sock + ".pid"):
            if os.path.exists(p):
                os.unlink(p)
        pidfile = self.sock + ".pid"
        if self.kind == "nbdkit":
            pre = [f for f in filters if f.startswith("--")]
            post = [f for f in filters if not f.startswith("--")]
            argv = (["nbdkit", "-f", "-U", self.sock, "-P", pidfile] + pre +
                    ["file", self.image] + post)
        else:
            argv = ["qemu-nbd", "--persistent", "-x", "disk", "-f", self.fmt,
                    "-k", self.sock, "--pid-file", pidfile, self.image]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=self.log, start_new_session=True)
        except OSError as e:
            raise ConsoleError("cannot start %s: %s (scripts/install-deps.sh installs it)"
                               % (argv[0], e.strerror)) from e
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConsoleError("%s exited with status %d at start (log: %s.log)" %
                                   (self.kind, self.proc.returncode, self.sock))
            # Both write the pid file once they accept connections.
            if os.path.exists(pidfile) and os.path.exists(self.sock):
                return
            time.sleep(0.05)
        raise ConsoleError("%s did not start listening on %s" % (self.kind, self.sock))

    def kill(self):
        """Kill -9: the server disappears as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self):
        """A clean stop (qemu-nbd closes the qcow2 image properly)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", default="build/mabo-vmm")
    ap.add_argument("--guest", default="build/guest")
    # One vCPU: what is under test is the disk path (the event loop and the backend's
    # I/O thread run apart from the vCPU either way); with two, a guest once hung with both
    # vCPUs spinning in _raw_spin_lock_irq{,save} and the disks idle, an SMP problem of
    # the emulator that disk.py's smaller runs on 2 vCPUs have not shown.
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--mib", type=int, default=200, help="MiB of data the guest writes")
    ap.add_argument("--log-dir", default=None)
    args = ap.parse_args()
    n = args.mib
    tmp = tempfile.mkdtemp(prefix="mabo-nbd-")
    log_dir = args.log_dir or tmp
    os.makedirs(log_dir, exist_ok=True)
    c = Checks()
    st = {}

    def image(name, fmt="raw"):
        path = os.path.join(tmp, name)
        if fmt == "raw":
            with open(path, "wb") as f:
                f.truncate(DISK_SIZE)  # sparse
        else:
            subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, str(DISK_SIZE)],
                           check=True)
        return path

    servers = []

    def server(kind, name, fmt="raw"):
        s = Server(kind, image(name, fmt), os.path.join(tmp, name + ".sock"), fmt)
        servers.append(s)
        return s

    def argv(disks, memory="1G"):
        a = console.vmm_command(args.guest, args.cpus, memory, "console=ttyS0", args.vmm)
        for d in disks:
            a += ["--disk", d]
        return a

    main_servers = {}

    def first_boot():
        main_servers["vda"] = server("nbdkit", "nbdkit.raw")
        main_servers["vdb"] = server("qemu-nbd", "qemu.raw")
        main_servers["vdc"] = server("qemu-nbd", "qemu.qcow2", "qcow2")
        for sv in main_servers.values():
            sv.start()
        disks = ["path=" + main_servers[d].uri() for d in ("vda", "vdb", "vdc")]
        with console.boot(args.guest, vmm=args.vmm, argv=argv(disks), timeout=300,
                          log=os.path.join(log_dir, "nbd-boot1.log")) as s:
            for d in ("vda", "vdb", "vdc"):
                size = s.run("cat /sys/block/%s/size" % d).strip()
                if size != str(DISK_SIZE // 512):
                    raise ConsoleError("%s has %s sectors, want %d" %
                                       (d, size, DISK_SIZE // 512))
            t0 = time.monotonic()
            s.run("dd if=/dev/urandom of=/tmp/x bs=1M count=%d 2>/dev/null; echo made" % n,
                  timeout=900)
            st["md5"] = first_md5(s.run("md5sum /tmp/x", timeout=300))
            times = []
            for d in ("vda", "vdb", "vdc"):
                t1 = time.monotonic()
                out = s.run("dd if=/tmp/x of=/dev/%s bs=1M conv=fsync 2>&1; echo rc=$?" % d,
                            timeout=900)
                if "rc=0" not in out:
                    raise ConsoleError("writing /dev/%s failed: %s" % (d, out.strip()[-300:]))
                t2 = time.monotonic()
                s.run("sync; echo 3 > /proc/sys/vm/drop_caches")
                back = first_md5(s.run("dd if=/dev/%s bs=1M count=%d 2>/dev/null | md5sum" %
                                       (d, n), timeout=900))
                t3 = time.monotonic()
                if back != st["md5"]:
                    raise ConsoleError("%s read back %s, wrote %s" % (d, back, st["md5"]))
                times.append("%s write %.0f s read %.0f s" % (d, t2 - t1, t3 - t2))
            poweroff(s, 120)
            st["written"] = True
            return "(%d MiB; made in %.0f s; %s)" % (n, t1 - t0, ", ".join(times))

    def host_side():
        if not st.get("written"):
            raise ConsoleError("not run: the first boot failed")
        for sv in main_servers.values():
            sv.stop()
        for d in ("vda", "vdb"):
            got = md5_of(main_servers[d].image, n << 20)
            if got != st["md5"]:
                raise ConsoleError("%s's image %s has %s, the guest wrote %s" %
                                   (d, main_servers[d].image, got, st["md5"]))
        raw = os.path.join(tmp, "qcow2-as-raw")
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                        main_servers["vdc"].image, raw], check=True)
        got = md5_of(raw, n << 20)
        os.unlink(raw)
        if got != st["md5"]:
            raise ConsoleError("the qcow2 image holds %s, the guest wrote %s" % (got, st["md5"]))

    def second_boot():
        if not st.get("written"):
            raise ConsoleError("not run: the first boot failed")
        for sv in main_servers.values():
            sv.start()
        disks = ["path=" + main_servers[d].uri() for d in ("vda", "vdb", "vdc")]
        with console.boot(args.guest, vmm=args.vmm, argv=argv(disks, "512M"), timeout=300,
                          log=os.path.join(log_dir, "nbd-boot2.log")) as s:
            for d in ("vda", "vdb", "vdc"):
                back = first_md5(s.run("dd if=/dev/%s bs=1M count=%d 2>/dev/null | md5sum" %
                                       (d, n), timeout=900))
                if back != st["md5"]:
                    raise ConsoleError("after a new boot %s reads %s, want %s" %
                                       (d, back, st["md5"]))
            poweroff(s, 120)
        for sv in main_servers.values():
            sv.stop()

    def outage():
        a = server("nbdkit", "outage-a.raw")
        b = server("nbdkit", "outage-b.raw")
        # A slow server (each write held 200 ms), so that requests are in flight when it
        # is killed; it comes back without the delay.
        a.start(("--filter=delay", "wdelay=200ms"))
        b.start()
        m = 32  # MiB written through the restart
        disks = ["path=" + a.uri(), "path=%s,reconnect-timeout=3" % b.uri()]
        notes = []
        with console.boot(args.guest, vmm=args.vmm, argv=argv(disks, "512M"), timeout=300,
                          log=os.path.join(log_dir, "nbd-outage.log")) as s:
            s.run("dd if=/dev/urandom of=/tmp/y bs=1M count=%d 2>/dev/null; echo made" % m,
                  timeout=300)
            want = first_md5(s.run("md5sum /tmp/y", timeout=120))
            # O_DIRECT: every request goes to the disk while dd runs.
            s.run("rm -f /tmp/rc; (dd if=/tmp/y of=/dev/vda bs=256k oflag=direct"
                  " conv=fsync 2>/tmp/dd.err; echo rc=$? > /tmp/rc) &")
            # Kill the server once a few MiB have reached its file: mid-write.
            deadline = time.monotonic() + 300
            while os.stat(a.image).st_blocks * 512 < (2 << 20):
                if time.monotonic() > deadline:
                    raise ConsoleError("the guest's write did not reach nbdkit's file")
                time.sleep(0.05)
            mark = len(s.output)
            t_kill = time.monotonic()
            a.kill()
            wait_output(s, r"outage-a[^']*': connection lost \([^)]*\); [1-9]\d* requests "
                        r"wait", mark, 60)
            time.sleep(3)
            a.start()
            wait_output(s, r"outage-a[^']*': reconnected after \d+ ms", mark, 60)
            outage_s = time.monotonic() - t_kill
            deadline = time.monotonic() + 600
            while True:
                rc = s.run("cat /tmp/rc 2>/dev/null; echo .").strip()
                if "rc=" in rc:
                    break
                if time.monotonic() > deadline:
                    raise ConsoleError("dd to vda did not finish after the restart")
                time.sleep(2)
            if "rc=0" not in rc:
                raise ConsoleError("dd to vda failed across the restart: %s %s" %
                                   (rc, s.run("cat /tmp/dd.err")))
            s.run("echo 3 > /proc/sys/vm/drop_caches")
            back = first_md5(s.run("dd if=/dev/vda bs=1M count=%d 2>/dev/null | md5sum" % m,
                                   timeout=300))
            if back != want:
                raise ConsoleError("vda reads %s after the restart, the guest wrote %s" %
                                   (back, want))
            if md5_of(a.image, m << 20) != want:
                raise ConsoleError("nbdkit's file does not hold what the guest wrote")
            notes.append("server away %.1f s during the write" % outage_s)

            # vdb: the server stays away past reconnect-timeout=3.
            b.kill()
            mark = len(s.output)
            t0 = time.monotonic()
            out = s.run("dd if=/dev/vdb of=/dev/null bs=4k count=1 iflag=direct 2>&1;"
                        " echo rc=$?", timeout=120)
            took = time.monotonic() - t0
            if "rc=0" in out or "rc=" not in out:
                raise ConsoleError("a read from vdb with its server away did not fail: %s" %
                                   out.strip()[-300:])
            if took < 2:
                raise ConsoleError("the read failed after %.1f s, before the timeout" % took)
            wait_output(s, r"outage-b[^']*': server unreachable for 3 s; [1-9]\d* requests "
                        r"fail", mark, 30)
            if "I/O error" not in s.run("dmesg | grep -i 'error' | tail -n 5"):
                raise ConsoleError("the kernel logged no I/O error for vdb")
            if s.run("echo still-$((40 + 2))").strip() != "still-42":
                raise ConsoleError("the console does not answer after the I/O error")
            notes.append("vdb failed after %.1f s" % took)
            # The server back: a new request reconnects.
            b.start()
            out = s.run("dd if=/dev/vdb of=/dev/null bs=4k count=1 iflag=direct 2>&1;"
                        " echo rc=$?", timeout=120)
            if "rc=0" not in out:
                raise ConsoleError("vdb still fails with its server back: %s" % out[-300:])
            # Power off with vdb's server away: the VMM must not wait for it.
            mark = len(s.output)
            b.kill()
            wait_output(s, r"outage-b[^']*': connection lost", mark, 30)
            t0 = time.monotonic()
            poweroff(s, 120)
            notes.append("poweroff with vdb's server away took %.1f s" %
                         (time.monotonic() - t0))
        a.stop()
        b.stop()
        return "(%s)" % "; ".join(notes)

    try:
        c.check("guest writes %d MiB to NBD disks on nbdkit, qemu-nbd raw and qcow2, "
                "reads it back" % n, first_boot)
        c.check("the servers' images hold the guest's data", host_side)
        c.check("a new VM reads the data back from the three servers", second_boot)
        c.check("server killed during a write: the guest waits, the write completes; "
                "server away past reconnect-timeout: I/O error, the VMM stays up", outage)
    finally:
        for sv in servers:
            sv.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    passed, failed = c.counts()
    print("nbd: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
