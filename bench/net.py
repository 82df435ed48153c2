#!/usr/bin/env python3
"""bench/net.py: network throughput over user-mode networking, mabo-vmm against QEMU (TCG).

    python3 bench/net.py [RUNS] [--mib N] [--vmm FILE] [--guest DIR] [--qemu FILE] [--logs DIR]

Both VMMs boot the default guest with one virtio-net card on libslirp (mabo-vmm: --net user;
QEMU: -netdev user with a virtio-net-device), eth0 configured statically. Each run measures:
  host -> guest: the guest fetches N MiB of random data with wget -O /dev/null from an HTTP
                 server this script runs on 127.0.0.1 (10.0.2.2 from the guest), timed on the
                 host around the command;
  guest -> host: the guest pipes N MiB from dd if=/dev/zero into nc 10.0.2.2 PORT; a host
                 listener counts the bytes, timed from the first byte to the end.
Runs alternate (mabo, qemu, mabo, qemu, ...) so both see the same load; compare figures from
one invocation only (see bench/README.md). Prints every run, the medians and the ratios
mabo / qemu (> 1: mabo-vmm is faster). Python 3 standard library only.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import console  # noqa: E402
import net  # noqa: E402  (the integration test's HTTP handler and host listener)


def one_run(kind, args, http_port, log):
    g = args.guest
    if kind == "qemu":
        argv = console.vmm_command(g, 1, "512M", "console=ttyS0", qemu=args.qemu) + [
            "-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"]
    else:
        argv = console.vmm_command(g, 1, "512M", "console=ttyS0", args.vmm) + ["--net", "user"]
    nbytes = args.mib << 20
    with console.boot(g, argv=argv, timeout=300, log=log) as s:
        out = s.run("ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && "
                    "ip route add default via 10.0.2.2 && echo configured")
        if "configured" not in out:
            raise console.ConsoleError("%s: configuring eth0 failed: %s" % (kind, out[-200:]))
        t0 = time.monotonic()
        out = s.run("wget -q -O /dev/null http://10.0.2.2:%d/data; echo rc=$?" % http_port,
                    timeout=args.timeout)
        down = nbytes / (time.monotonic() - t0) / 1e6
        if "rc=0" not in out:
            raise console.ConsoleError("%s: wget failed: %s" % (kind, out[-200:]))
        r = net.Receiver()
        s.run("dd if=/dev/zero bs=64k count=%d 2>/dev/null | nc 10.0.2.2 %d" %
              (args.mib * 16, r.port), timeout=args.timeout)
        r.wait(120)
        if r.nbytes != nbytes:
            raise console.ConsoleError("%s: the host got %d bytes of %d" % (kind, r.nbytes, nbytes))
        up = nbytes / max(r.seconds, 1e-6) / 1e6
        s.send("poweroff")
        s.wait_exit(120)
    return down, up


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=int, nargs="?", default=3)
    ap.add_argument("--mib", type=int, default=16, help="MiB per transfer (default 16)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per transfer at most")
    ap.add_argument("--vmm", default=os.path.join(ROOT, "build", "mabo-vmm"))
    ap.add_argument("--guest", default=os.path.join(ROOT, "build", "guest"))
    ap.add_argument("--qemu", default="qemu-system-riscv64")
    ap.add_argument("--logs", default=None)
    args = ap.parse_args()
    if not shutil.which(args.qemu):
        print("net.py: no QEMU '%s' (Debian package qemu-system-misc)" % args.qemu,
              file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="mabo-bench-net-")
    # A copy, so that a rebuild during the run does not change what is measured.
    shutil.copy2(args.vmm, os.path.join(tmp, "mabo-vmm"))
    args.vmm = os.path.join(tmp, "mabo-vmm")
    logs = args.logs or os.path.join(tmp, "logs")
    os.makedirs(logs, exist_ok=True)
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "data"), "wb") as f:
        f.write(os.urandom(args.mib << 20))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(net.QuietHandler, directory=www))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print("# %s, host %d CPUs, load %.2f; %d MiB per transfer; MB/s = 10^6 bytes/s" %
          (time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.cpu_count(), os.getloadavg()[0], args.mib))
    res = {"mabo": [], "qemu": []}
    try:
        for i in range(args.runs):
            for kind in ("mabo", "qemu"):
                d, u = one_run(kind, args, httpd.server_address[1],
                               os.path.join(logs, "net-%s-%d.log" % (kind, i)))
                res[kind].append((d, u))
                print("run %d %-4s  host->guest %6.2f MB/s  guest->host %6.2f MB/s" %
                      (i + 1, kind, d, u), flush=True)
    except console.ConsoleError as e:
        print("net.py: %s" % str(e).split("\n")[0], file=sys.stderr)
        return 1
    finally:
        httpd.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: (statistics.median(d for d, _ in v), statistics.median(u for _, u in v))
           for k, v in res.items()}
    for k in ("mabo", "qemu"):
        print("median %-4s  host->guest %6.2f MB/s  guest->host %6.2f MB/s" % (k, *med[k]))
    print("mabo / qemu  host->guest %.2f  guest->host %.2f" %
          (med["mabo"][0] / med["qemu"][0], med["mabo"][1] / med["qemu"][1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
