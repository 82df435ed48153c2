#!/usr/bin/env python3
"""virtio-net end to end: user-mode networking (libslirp) and TAP devices on a bridge.

    python3 tests/integration/net.py --vmm build/mabo-vmm --guest build/guest [--only user|tap]

user (no privileges): one guest with --net user,hostfwd=tcp:127.0.0.1:P-:8080 configures
   eth0 statically (10.0.2.15/24, gateway 10.0.2.2) and
   1. has the MAC given on the command line, and the second NIC the default one plus 1;
   2. fetches a file of a few MB with wget from an HTTP server this test runs on 127.0.0.1
      (10.0.2.2 from the guest): its sha256 in the guest is the host's;
   3. sends that file back with nc to a host listener: the host gets the same bytes
      (guest -> host throughput is printed);
   4. runs nc -l on port 8080: a host client connects to 127.0.0.1:P (hostfwd), gets the
      guest's greeting and sends a payload whose sha256 the guest then prints.
tap (root and /dev/net/tun): a network namespace made by this test holds a bridge and two
   TAP devices on it; two VMs started in the namespace (ip netns exec), one on each TAP,
   with static addresses 10.0.3.1 and 10.0.3.2, ping each other and one sends the other a
   checksummed file with nc. The namespace goes away afterwards, even on failure.

Without root, /dev/net/tun or the right to make a namespace the tap part says so and the run exits 77 (skipped) once
everything else passed. Closing line: "N passed, M failed".
"""

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402
from console import Checks, ConsoleError  # noqa: E402

SKIPPED = 77
FILE_SIZE = 6 << 20
MAC0 = "52:54:00:ab:cd:01"
GUEST_PORT = 8080


def sha256_in(text):
    m = re.search(r"\b([0-9a-f]{64})\b", text)
    if not m:
        raise ConsoleError("no sha256sum in %r" % text[-300:])
    return m.group(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A host TCP listener on 127.0.0.1 that takes one connection and hashes what it gets
    until EOF."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(300)
        self.port = self.sock.getsockname()[1]
        self.digest = None
        self.nbytes = 0
        self.seconds = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(300)
                h = hashlib.sha256()
                t0 = None
                while True:
                    b = conn.recv(1 << 16)
                    if t0 is None:
                        t0 = time.monotonic()
                    if not b:
                        break
                    h.update(b)
                    self.nbytes += len(b)
                self.seconds = time.monotonic() - (t0 or time.monotonic())
                self.digest = h.hexdigest()
        except OSError as e:
            self.error = e
        finally:
            self.sock.close()

    def wait(self, timeout):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise ConsoleError("the host listener got no end of data in %d s" % timeout)
        if self.error:
            raise ConsoleError("host listener: %s" % self.error)


def user_part(args, c, tmp, log_dir):
    data = os.urandom(FILE_SIZE)
    with open(os.path.join(tmp, "blob"), "wb") as f:
        f.write(data)
    want = hashlib.sha256(data).hexdigest()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                partial(QuietHandler, directory=tmp))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    http_port = httpd.server_address[1]
    fwd_port = free_port()
    argv = console.vmm_command(args.guest, args.cpus, "512M", "console=ttyS0", args.vmm) + [
        "--net", "user,hostfwd=tcp:127.0.0.1:%d-:%d,mac=%s" % (fwd_port, GUEST_PORT, MAC0),
        "--net", "user"]
    st = {}
    try:
        s = console.boot(args.guest, vmm=args.vmm, argv=argv, timeout=300,
                         log=os.path.join(log_dir, "net-user.log"))
    except ConsoleError as e:
        c.check("user: boot with two NICs", partial(raise_, e))
        httpd.shutdown()
        return
    with s:
        def macs():
            got = s.run("cat /sys/class/net/eth0/address /sys/class/net/eth1/address").split()
            if got != [MAC0, "52:54:00:12:34:57"]:
                raise ConsoleError("MACs %r, want [%s, 52:54:00:12:34:57]" % (got, MAC0))
            out = s.run("ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && "
                        "ip route add default via 10.0.2.2 && echo configured")
            if "configured" not in out:
                raise ConsoleError("configuring eth0 failed: %s" % out.strip()[-300:])
        c.check("user: eth0 and eth1 have their MACs; eth0 configured", macs)

        def fetch():
            t0 = time.monotonic()
            out = s.run("wget -q -O /tmp/blob http://10.0.2.2:%d/blob; echo rc=$?" % http_port,
                        timeout=600)
            secs = time.monotonic() - t0
            if "rc=0" not in out:
                raise ConsoleError("wget failed: %s" % out.strip()[-300:])
            got = sha256_in(s.run("sha256sum /tmp/blob", timeout=120))
            if got != want:
                raise ConsoleError("the guest's copy has sha256 %s, the host's %s" % (got, want))
            st["fetched"] = True
            return "(%d MiB in %.1f s: %.1f MB/s host -> guest)" % (
                FILE_SIZE >> 20, secs, FILE_SIZE / secs / 1e6)
        c.check("user: wget from the host's HTTP server, sha256 matches", fetch)

        def send_back():
            if not st.get("fetched"):
                raise ConsoleError("not run: the fetch failed")
            r = Receiver()
            out = s.run("nc 10.0.2.2 %d < /tmp/blob; echo rc=$?" % r.port, timeout=600)
            r.wait(120)
            if r.digest != want:
                raise ConsoleError("the host got %d bytes with sha256 %s, want %d with %s (%s)"
                                   % (r.nbytes, r.digest, FILE_SIZE, want, out.strip()[-200:]))
            return "(%.1f MB/s guest -> host)" % (r.nbytes / max(r.seconds, 1e-6) / 1e6)
        c.check("user: the guest sends the file back to a host listener", send_back)

        def hostfwd():
            payload = os.urandom(1 << 20)
            s.run("echo hello-from-guest > /tmp/greet")
            listen_bg(s, "nc -l -p %d < /tmp/greet > /tmp/recv" % GUEST_PORT)
            # Listening before the host connects (slirp accepts first, then connects).
            deadline = time.monotonic() + 30
            while "LISTEN" not in s.run("netstat -tln | grep ':%d '" % GUEST_PORT):
                if time.monotonic() > deadline:
                    raise ConsoleError("the guest's nc does not listen on %d" % GUEST_PORT)
                time.sleep(0.5)
            got = b""
            with socket.create_connection(("127.0.0.1", fwd_port), timeout=120) as k:
                k.sendall(payload)
                k.shutdown(socket.SHUT_WR)
                while True:
                    b = k.recv(4096)
                    if not b:
                        break
                    got += b
            if got.strip() != b"hello-from-guest":
                raise ConsoleError("the host read %r from the guest" % got[:100])
            wait_bg(s, 60)
            gsum = sha256_in(s.run("sha256sum /tmp/recv", timeout=60))
            if gsum != hashlib.sha256(payload).hexdigest():
                raise ConsoleError("the guest received sha256 %s" % gsum)
        c.check("user: a host client reaches the guest's nc through hostfwd, both ways",
                hostfwd)

        c.check("user: poweroff exits 0", partial(console.poweroff, s, 120))
    httpd.shutdown()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def raise_(e):
    raise e


def listen_bg(s, cmd):
    """Runs cmd in the guest in the background, not as a job of the shell (whose "Done"
    notice would land in another command's output); wait_bg waits for it."""
    s.run("rm -f /tmp/bg-done; sh -c '(%s; touch /tmp/bg-done) &'" % cmd)


def wait_bg(s, timeout):
    deadline = time.monotonic() + timeout
    while "done" not in s.run("test -f /tmp/bg-done && echo done"):
        if time.monotonic() > deadline:
            raise ConsoleError("the guest's background command did not end in %d s" % timeout)
        time.sleep(0.5)


def sh(*cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise ConsoleError("%s: %s" % (" ".join(cmd), r.stdout.strip()))
    return r.stdout


def tap_part(args, c, log_dir):
    """Returns False when it could not run."""
    why = None
    if os.geteuid() != 0:
        why = "not root"
    elif not os.path.exists("/dev/net/tun"):
        why = "no /dev/net/tun"
    elif not shutil.which("ip"):
        why = "no ip command (iproute2)"
    if why:
        print("SKIP: tap: %s: the two-VM TAP test cannot run" % why, flush=True)
        return False
    ns = "mabo-net-%d" % os.getpid()
    vmm = os.path.abspath(args.vmm)
    guest = os.path.abspath(args.guest)
    sessions = []
    r = subprocess.run(["ip", "netns", "add", ns], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 and "not permitted" in r.stdout:
        # Root without CAP_SYS_ADMIN / CAP_NET_ADMIN (an unprivileged container).
        print("SKIP: tap: cannot make a network namespace: %s" % r.stdout.strip(), flush=True)
        return False
    try:
        def setup():
            if r.returncode != 0:
                raise ConsoleError("ip netns add %s: %s" % (ns, r.stdout.strip()))
            x = ["ip", "netns", "exec", ns, "ip"]
            sh(*x, "link", "add", "br0", "type", "bridge")
            for t in ("tap0", "tap1"):
                sh(*x, "tuntap", "add", "dev", t, "mode", "tap")
                sh(*x, "link", "set", t, "master", "br0")
                sh(*x, "link", "set", t, "up")
            sh(*x, "link", "set", "br0", "up")
        if not c.check("tap: namespace %s with a bridge and two TAP devices" % ns, setup):
            return True

        def boot_both():
            for i in (0, 1):
                argv = ["ip", "netns", "exec", ns] + console.vmm_command(
                    guest, 1, "256M", "console=ttyS0", vmm) + [
                    # Distinct MACs: each VM alone would default to the same one.
                    "--net", "tap=tap%d,mac=52:54:00:00:03:%02x" % (i, i + 1)]
                sessions.append(console.Session(argv, os.path.join(log_dir, "net-tap%d.log" % i)))
            for i, s in enumerate(sessions):
                s.expect(console.READY, 400)
                s.expect(console.PROMPT, 60)
                out = s.run("ip addr add 10.0.3.%d/24 dev eth0 && ip link set eth0 up && "
                            "echo configured" % (i + 1))
                if "configured" not in out:
                    raise ConsoleError("VM %d: configuring eth0 failed: %s" % (i, out[-300:]))
        if not c.check("tap: two VMs boot in the namespace, eth0 configured", boot_both):
            return True
        a, b = sessions

        def ping():
            # Each way: VM 0 first, so that it also has to find VM 1 (ARP) by itself.
            for i, (s, to) in enumerate(((a, "10.0.3.2"), (b, "10.0.3.1"))):
                out = s.run("ping -c 3 -W 5 %s" % to, timeout=120)
                if not re.search(r"3 packets transmitted, [23] packets received", out):
                    raise ConsoleError("ping %s from VM %d: %s" % (to, i, out.strip()[-300:]))
        c.check("tap: the VMs ping each other", ping)

        def transfer():
            b.run("dd if=/dev/urandom of=/tmp/x bs=1M count=4 2>/dev/null; echo made",
                  timeout=120)
            want = sha256_in(b.run("sha256sum /tmp/x", timeout=60))
            # busybox nc quits when the peer closes its side, and closes its own side at
            # the end of its standard input: a FIFO held open for writing never ends.
            a.run("rm -f /tmp/fifo; mkfifo /tmp/fifo")
            listen_bg(a, "nc -l -p 9000 0<>/tmp/fifo > /tmp/recv")
            deadline = time.monotonic() + 30
            while "LISTEN" not in a.run("netstat -tln | grep ':9000 '"):
                if time.monotonic() > deadline:
                    raise ConsoleError("VM 0's nc does not listen on 9000")
                time.sleep(0.5)
            t0 = time.monotonic()
            out = b.run("nc 10.0.3.1 9000 < /tmp/x; echo rc=$?", timeout=600)
            wait_bg(a, 120)
            secs = time.monotonic() - t0
            got = sha256_in(a.run("sha256sum /tmp/recv", timeout=60))
            if got != want:
                raise ConsoleError("VM 0 received sha256 %s, VM 1 sent %s (%s)" %
                                   (got, want, out.strip()[-200:]))
            return "(4 MiB in %.1f s)" % secs
        c.check("tap: VM 1 sends VM 0 a 4 MiB file over the bridge, sha256 matches", transfer)

        def poweroff():
            for i, s in enumerate(sessions):
                s.send("poweroff")
            for i, s in enumerate(sessions):
                status = s.wait_exit(120)
                if status != 0:
                    raise ConsoleError("VM %d: exit status %d after poweroff" % (i, status))
        c.check("tap: both VMs power off", poweroff)
    finally:
        for s in sessions:
            s.close()
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", default="build/mabo-vmm")
    ap.add_argument("--guest", default="build/guest")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--only", choices=["user", "tap"], default=None)
    ap.add_argument("--log-dir", default=None)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mabo-net-")
    log_dir = args.log_dir or tmp
    os.makedirs(log_dir, exist_ok=True)
    c = Checks()
    ran_tap = True
    try:
        if args.only in (None, "user"):
            user_part(args, c, tmp, log_dir)
        if args.only in (None, "tap"):
            ran_tap = tap_part(args, c, log_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    passed, failed = c.counts()
    print("net: %d passed, %d failed%s" % (passed, failed, "" if ran_tap else ", tap skipped"))
    if failed:
        return 1
    return 0 if ran_tap else SKIPPED


if __name__ == "__main__":
    sys.exit(main())
