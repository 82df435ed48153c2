#!/usr/bin/env python3
"""A guest reboot restarts the VM (the guest boots again from scratch); with --no-reboot the
VMM exits with status 0 instead. Prints "N passed, M failed"; exit status 0 when all pass.

    python3 tests/integration/reboot.py [--vmm build/mabo-vmm] [--guest build/guest]
"""
import argparse
import os
import sys

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

    check("guest reboot restarts the VM", reboot_restarts)
    check("--no-reboot: guest reboot exits 0", no_reboot_exits)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
