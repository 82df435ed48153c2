#!/usr/bin/env python3
"""Boot from the ext4 root disk that tools/mabo-image builds (rootfs.ext4), with root=/dev/vda.

    python3 tests/integration/rootdisk.py --vmm build/mabo-vmm --guest build/guest

Every boot runs on a sparse copy of rootfs.ext4 in a temporary directory (the image itself is
never written):
1. root=/dev/vda rw: / is /dev/vda, ext4, read-write (/proc/mounts); /sbin/init is busybox;
   the guest writes a file and syncs; poweroff exits 0.
2. On the host: e2fsck -fn finds the copy clean (poweroff unmounted it cleanly).
3. A second VM on the same copy finds the file with its content; poweroff exits 0.
4. Without rw the root is mounted read-only and writes to it fail; mabo.bench on the command
   line makes the root disk's rcS print "mabo-init: done" and power off (exit 0).
5. root=/dev/vdb with no second disk and rootwait=3: the initramfs says the device did not
   appear and goes on with its own shell.

Uses tests/integration/console.py's harness; Python 3 standard library only. Closing line:
"N passed, M failed".
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402
from console import Checks, ConsoleError, poweroff  # noqa: E402

BOOT_TIMEOUT = 240  # seconds; the machine is shared and slow under load
CMD_TIMEOUT = 60


def root_mount(s):
    """(device, type, options) of / from the guest's /proc/mounts."""
    out = s.run("cat /proc/mounts", CMD_TIMEOUT)
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[1] == "/":
            return f[0], f[2], f[3].split(",")
    raise ConsoleError("no / in /proc/mounts: %r" % out[-500:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", default="build/mabo-vmm")
    ap.add_argument("--guest", default="build/guest")
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--log-dir", default=None)
    args = ap.parse_args()
    image = os.path.join(args.guest, "rootfs.ext4")
    if not os.path.isfile(image):
        print("FAIL: no %s (build it with tools/mabo-image)" % image)
        print("rootdisk: 0 passed, 1 failed")
        return 1
    e2fsck = shutil.which("e2fsck") or "/sbin/e2fsck"
    tmp = tempfile.mkdtemp(prefix="mabo-rootdisk-")
    log_dir = args.log_dir or tmp
    disk = os.path.join(tmp, "rootfs.ext4")
    # A sparse copy: the guest writes to it, never to the built image.
    subprocess.run(["cp", "--sparse=always", image, disk], check=True)
    c = Checks()
    st = {}
    stamp = "mabo-rootdisk-%d-%d" % (os.getpid(), int(time.time()))

    def boot(cmdline, log, disks=(disk,)):
        argv = console.vmm_command(args.guest, args.cpus, "512M", cmdline, args.vmm)
        for d in disks:
            argv += ["--disk", "path=" + d]
        return console.boot(args.guest, vmm=args.vmm, argv=argv, timeout=BOOT_TIMEOUT,
                            log=os.path.join(log_dir, log))

    def first_boot():
        with boot("console=ttyS0 root=/dev/vda rw", "rootdisk-boot1.log") as s:
            dev, fstype, opts = root_mount(s)
            if (dev, fstype) != ("/dev/vda", "ext4") or "rw" not in opts:
                raise ConsoleError("/ is %s %s %s, want /dev/vda ext4 rw" %
                                   (dev, fstype, ",".join(opts)))
            link = s.run("readlink /sbin/init", CMD_TIMEOUT).strip()
            if link != "/bin/busybox":
                raise ConsoleError("/sbin/init -> %r" % link)
            # The write's status and sync's, each its own; then the file as the guest reads it.
            out = s.run("echo %s > /root/written; w=$?; sync; echo rc=$w,$?; cat /root/written"
                        % stamp, CMD_TIMEOUT)
            # (The echo of a long command line may wrap: the last two lines are the answer.)
            if [l.strip() for l in out.strip().splitlines()[-2:]] != ["rc=0,0", stamp]:
                raise ConsoleError("writing /root/written failed: %r" % out)
            st["written"] = True
            poweroff(s, 120)
        return "(/ is /dev/vda ext4 rw)"

    def host_fsck():
        if "written" not in st:
            raise ConsoleError("not run: the first boot failed")
        r = subprocess.run([e2fsck, "-fn", disk], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
        if r.returncode != 0:
            raise ConsoleError("e2fsck -fn exited with %d:\n%s" % (r.returncode, r.stdout))
        return "(%s)" % r.stdout.strip().splitlines()[-1]

    def second_boot():
        if "written" not in st:
            raise ConsoleError("not run: the first boot failed")
        with boot("console=ttyS0 root=/dev/vda rw", "rootdisk-boot2.log") as s:
            got = s.run("cat /root/written", CMD_TIMEOUT).strip()
            if got != stamp:
                raise ConsoleError("/root/written holds %r, want %r" % (got, stamp))
            poweroff(s, 120)

    def read_only_and_bench():
        with boot("console=ttyS0 root=/dev/vda", "rootdisk-ro.log") as s:
            dev, fstype, opts = root_mount(s)
            if dev != "/dev/vda" or "ro" not in opts:
                raise ConsoleError("/ is %s %s %s, want /dev/vda read-only" %
                                   (dev, fstype, ",".join(opts)))
            out = s.run("touch /root/x 2>&1; echo rc=$?", CMD_TIMEOUT)
            if "rc=0" in out:
                raise ConsoleError("a write to the read-only root succeeded")
            poweroff(s, 120)
        argv = console.vmm_command(args.guest, args.cpus, "512M",
                                   "console=ttyS0 root=/dev/vda rw mabo.bench", args.vmm)
        argv += ["--disk", "path=" + disk]
        s = console.Session(argv, os.path.join(log_dir, "rootdisk-bench.log"))
        try:
            s.expect(r"mabo-init: root is /dev/vda \(ext4, rw\)", BOOT_TIMEOUT)
            s.expect(r"mabo-init: done", BOOT_TIMEOUT)
            status = s.wait_exit(120)
            if status != 0:
                raise ConsoleError("exit status %s after mabo.bench" % status)
        finally:
            s.close()
        return "(ro root refuses writes; mabo.bench powers off)"

    def missing_device():
        with boot("console=ttyS0 root=/dev/vdb rootwait=3", "rootdisk-missing.log") as s:
            if not re.search(r"mabo-init: root device /dev/vdb did not appear within 3 s",
                             s.output):
                raise ConsoleError("no message about the missing root device (log: %s)" %
                                   s.log_path)
            dev, fstype, _ = root_mount(s)
            if fstype not in ("rootfs", "ramfs", "tmpfs"):
                raise ConsoleError("/ is %s %s, want the initramfs" % (dev, fstype))
            poweroff(s, 120)
        return "(message, then the initramfs shell)"

    try:
        c.check("boot with root=/dev/vda rw, write a file", first_boot)
        c.check("e2fsck -fn of the disk after poweroff is clean", host_fsck)
        c.check("a new VM boots from the disk and reads the file", second_boot)
        c.check("read-only root by default; mabo.bench", read_only_and_bench)
        c.check("root=/dev/vdb that never appears", missing_device)
    finally:
        try:
            os.unlink(disk)
            if args.log_dir:
                os.rmdir(tmp)  # the logs are elsewhere; otherwise they stay in tmp
        except OSError:
            pass
    passed, failed = c.counts()
    print("rootdisk: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
