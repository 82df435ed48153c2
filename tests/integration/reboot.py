#!/usr/bin/env python3
"""A guest reboot restarts the VM (the guest boots again from scratch); with --no-reboot the
VMM exits with status 0 instead. Prints "N passed, M failed"; exit status 0 when all pass.

    python3 tests/integration/reboot.py [--vmm build/mabo-vmm] [--guest build/guest]
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", default="build/mabo-vmm")
    ap.add_argument("--guest", default="build/guest")
    ap.add_argument("--log-dir", default="build/reboot-logs")
    args = ap.parse_args()
    os.makedirs(args.log_dir, exist_ok=True)
    passed = failed = 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            fn()
            print(f"ok: {name}")
            passed += 1
        except Exception as e:  # a failed check must not stop the others
            print(f"FAIL: {name}: {e}")
            failed += 1

    base = console.vmm_command(args.guest, 1, "512M", "console=ttyS0", args.vmm)

    def reboot_restarts():
        with console.boot(argv=base, log=os.path.join(args.log_dir, "restart.log")) as s:
            # Leave a mark in the first boot's RAM-backed filesystem: it must be gone after.
            out = s.run("echo first > /tmp/mark; cat /tmp/mark").strip()
            if out != "first":
                raise AssertionError(f"/tmp/mark not written before the reboot: {out!r}")
            s.send("reboot")
            s.expect(r"OpenSBI", 120)  # the firmware starts again: a new machine
            s.expect(console.READY, 120)
            s.expect(console.PROMPT, 60)
            out = s.run("cat /tmp/mark 2>&1; echo rc=$?")
            if "rc=1" not in out:
                raise AssertionError(f"/tmp/mark survived the reboot: {out!r}")
            s.send("poweroff")
            status = s.wait_exit(60)
            if status != 0:
                raise AssertionError(f"exit status {status} after poweroff")

    def no_reboot_exits():
        with console.boot(argv=base + ["--no-reboot"],
                          log=os.path.join(args.log_dir, "no-reboot.log")) as s:
            s.send("reboot")
            status = s.wait_exit(60)
            if status != 0:
                raise AssertionError(f"exit status {status}, want 0")

    def read_events(sock, want, timeout):
        """Lines from the control socket until one is the event want, or EOF."""
        events, buf = [], b""
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(4096)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                events.append(json.loads(line))
                if events[-1].get("event") == want:
                    return events
        return events

    def connect(path, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                c.connect(path)
                return c
            except OSError:
                c.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def config_file_boot():
        # The whole VM from a --config file (with a disk and a NIC, as a daemon would
        # describe it); the control socket tells its clients how each run ended.
        g = args.guest.rstrip("/")
        with tempfile.TemporaryDirectory() as tmp:
            sock = os.path.join(tmp, "api.sock")
            disk = os.path.join(tmp, "disk.img")
            with open(disk, "wb") as f:
                f.truncate(1 << 20)
            cfg = {"kernel": g + "/Image", "initramfs": g + "/initramfs.cpio.gz",
                   "firmware": g + "/fw_dynamic.bin", "cmdline": "console=ttyS0",
                   "memory": "256M", "cpus": 1, "api_socket": sock,
                   "disks": [{"path": disk, "id": "cfgdisk", "readonly": False}],
                   "nets": [{"mode": "user"}], "rng": True}
            path = os.path.join(tmp, "vm.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            # A flag given too overrides the file's value: 256M becomes 384M.
            with console.boot(argv=[args.vmm, "--config", path, "--memory", "384M"],
                              log=os.path.join(args.log_dir, "config.log")) as s:
                out = s.run("cat /sys/block/vda/serial; grep MemTotal /proc/meminfo; "
                            "ls /sys/class/net")
                if "cfgdisk" not in out or "eth0" not in out:
                    raise AssertionError(f"the disk or NIC of the file is missing: {out!r}")
                kb = int(out.split("MemTotal:")[1].split()[0])
                if not 300 * 1024 < kb <= 384 * 1024:
                    raise AssertionError(f"--memory 384M did not override: {kb} kB")
                c = connect(sock)
                s.send("reboot")
                ev = read_events(c, "exit", 120)
                c.close()
                if not ev or ev[-1] != {"event": "exit", "reason": "reboot",
                                        "restarting": True}:
                    raise AssertionError(f"no exit event for the reboot: {ev!r}")
                s.expect(console.READY, 120)
                s.expect(console.PROMPT, 60)
                c = connect(sock)
                s.send("poweroff")
                ev = read_events(c, "exit", 60)
                c.close()
                if not ev or ev[-1] != {"event": "exit", "reason": "poweroff",
                                        "restarting": False, "status": 0}:
                    raise AssertionError(f"no exit event for the power-off: {ev!r}")
                status = s.wait_exit(60)
                if status != 0:
                    raise AssertionError(f"exit status {status} after poweroff")

    check("guest reboot restarts the VM", reboot_restarts)
    check("--no-reboot: guest reboot exits 0", no_reboot_exits)
    check("--config FILE boots the VM; exit events on the control socket", config_file_boot)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
