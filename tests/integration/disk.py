#!/usr/bin/env python3
"""virtio-blk end to end: boot the default guest with disks backed by host files and check
that data written by the guest reaches the file, survives a new VM, and that a read-only
disk refuses writes.

    python3 tests/integration/disk.py --vmm build/mabo-vmm --guest build/guest

1. A 256 MiB sparse raw file as --disk path=FILE (vda) and a small file with readonly=on
   (vdb). In the guest: N MiB of pseudo-random data (dd from /dev/urandom to /tmp) and its
   md5sum; dd'd to /dev/vda with fsync; the page cache dropped; read back from /dev/vda and
   the checksums compared; the serial numbers (/sys/block/vdX/serial) are the file names;
   vdb is read-only (/sys/block/vdb/ro), a write to it fails and its data reads back;
   poweroff exits 0.
2. On the host: the first N MiB of the file have the guest's checksum, the file is still
   256 MiB, the read-only file is unchanged.
3. A new VM on the same file reads the same checksum back.

Uses tests/integration/console.py's harness; Python 3 standard library only. Closing line:
"N passed, M failed".
"""

import argparse
import hashlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402
from console import Checks, ConsoleError, first_md5, md5_of, poweroff  # noqa: E402

DISK_SIZE = 256 << 20
RO_SIZE = 1 << 20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", default="build/mabo-vmm")
    ap.add_argument("--guest", default="build/guest")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--mib", type=int, default=100, help="MiB of data the guest writes")
    ap.add_argument("--log-dir", default=None)
    args = ap.parse_args()
    n = args.mib
    tmp = tempfile.mkdtemp(prefix="mabo-disk-")
    log_dir = args.log_dir or tmp
    disk = os.path.join(tmp, "disk0.raw")
    ro = os.path.join(tmp, "ro-disk.raw")
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)  # sparse
    ro_data = hashlib.sha256(b"mabo").digest() * (RO_SIZE // 32)
    with open(ro, "wb") as f:
        f.write(ro_data)
    ro_md5 = hashlib.md5(ro_data).hexdigest()
    c = Checks()
    st = {}

    def argv():
        return console.vmm_command(args.guest, args.cpus, "512M", "console=ttyS0",
                                   args.vmm) + [
            "--disk", "path=" + disk, "--disk", "path=%s,readonly=on" % ro]

    def first_boot():
        with console.boot(args.guest, vmm=args.vmm, argv=argv(),
                          log=os.path.join(log_dir, "disk-boot1.log")) as s:
            size = s.run("cat /sys/block/vda/size").strip()
            if size != str(DISK_SIZE // 512):
                raise ConsoleError("vda has %s sectors, want %d" % (size, DISK_SIZE // 512))
            ser = s.run("cat /sys/block/vda/serial; echo; cat /sys/block/vdb/serial").split()
            if ser != ["disk0.raw", "ro-disk.raw"]:
                raise ConsoleError("serials %r" % ser)
            if s.run("cat /sys/block/vda/ro /sys/block/vdb/ro").split() != ["0", "1"]:
                raise ConsoleError("read-only flags wrong")
            t0 = time.monotonic()
            s.run("dd if=/dev/urandom of=/tmp/x bs=1M count=%d 2>/dev/null; echo made" % n,
                  timeout=300)
            st["guest_md5"] = first_md5(s.run("md5sum /tmp/x", timeout=120))
            t1 = time.monotonic()
            out = s.run("dd if=/tmp/x of=/dev/vda bs=1M conv=fsync 2>&1; echo rc=$?; sync",
                        timeout=300)
            if "rc=0" not in out:
                raise ConsoleError("writing /dev/vda failed: %s" % out.strip()[-300:])
            t2 = time.monotonic()
            s.run("echo 3 > /proc/sys/vm/drop_caches")
            back = first_md5(s.run("dd if=/dev/vda bs=1M count=%d 2>/dev/null | md5sum" % n,
                                   timeout=300))
            t3 = time.monotonic()
            if back != st["guest_md5"]:
                raise ConsoleError("read back %s, wrote %s" % (back, st["guest_md5"]))
            # The read-only disk: a write fails, the data is the host's.
            out = s.run("dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>&1;"
                        " echo rc=$?")
            if "rc=0" in out:
                raise ConsoleError("a write to the read-only vdb succeeded: %s" % out)
            got = first_md5(s.run("dd if=/dev/vdb bs=64k 2>/dev/null | md5sum"))
            if got != ro_md5:
                raise ConsoleError("vdb reads %s, the file has %s" % (got, ro_md5))
            poweroff(s, 60)
            return "(%d MiB: make %.1f s, write %.1f s, read %.1f s)" % (
                n, t1 - t0, t2 - t1, t3 - t2)

    def host_side():
        if "guest_md5" not in st:
            raise ConsoleError("not run: the first boot failed")
        got = md5_of(disk, n << 20)
        if got != st["guest_md5"]:
            raise ConsoleError("file has %s, guest wrote %s" % (got, st["guest_md5"]))
        if os.path.getsize(disk) != DISK_SIZE:
            raise ConsoleError("disk file is now %d bytes" % os.path.getsize(disk))
        if md5_of(ro, RO_SIZE) != ro_md5:
            raise ConsoleError("the read-only file changed")

    def second_boot():
        if "guest_md5" not in st:
            raise ConsoleError("not run: the first boot failed")
        with console.boot(args.guest, vmm=args.vmm, argv=argv(),
                          log=os.path.join(log_dir, "disk-boot2.log")) as s:
            back = first_md5(s.run("dd if=/dev/vda bs=1M count=%d 2>/dev/null | md5sum" % n,
                                   timeout=300))
            if back != st["guest_md5"]:
                raise ConsoleError("after a new boot vda reads %s, want %s" %
                                   (back, st["guest_md5"]))
            poweroff(s, 60)

    try:
        c.check("guest writes and reads back %d MiB on vda; vdb read-only" % n, first_boot)
        c.check("host file holds the guest's data", host_side)
        c.check("a new VM reads the data back", second_boot)
    finally:
        for p in (disk, ro):
            try:
                os.unlink(p)
            except OSError:
                pass
    passed, failed = c.counts()
    print("disk: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
