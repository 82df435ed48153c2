#!/usr/bin/env python3
"""virtio devices end to end: boot the default guest with virtio-rng and virtio-console and
check what the guest sees and what reaches the host.

    python3 tests/integration/virtio.py --vmm build/mabo-vmm --guest build/guest

1. The device tree (--dump-dtb): one virtio_mmio node per device, in command-line order, at
   0x10001000 + n * 0x1000 with PLIC source 1 + n; none without devices.
2. `--rng --console virtio`, kernel console=hvc0: the shell runs on hvc0 (standard input goes
   there), /sys/bus/virtio lists both devices with their ids in slot order, /dev/hwrng gives
   bytes from virtio_rng, text written to /dev/hvc0 and to /dev/ttyS0 both reach the host,
   Ctrl-C reaches the shell through hvc0, poweroff exits 0.
3. `--rng` with the serial console on 2 vCPUs: the UART keeps its input, a long read of
   /dev/hwrng completes, Ctrl-A x ends the VM with status 0.

Uses tests/integration/console.py's harness; Python 3 standard library only. Closing line:
"N passed, M failed".
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402
from console import Checks, ConsoleError, PROMPT  # noqa: E402


def expect_output(session, cmd, want, timeout=30):
    got = session.run(cmd, timeout).strip()
    if not re.fullmatch(want, got, re.S):
        raise ConsoleError("`%s` printed %r, expected %r" % (cmd, got, want))
    return got


def dtb_checks(c, args, guest):
    image = os.path.join(guest, "Image")

    def dump(extra):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.dtb")
            r = subprocess.run([args.vmm, "--kernel", image, "--dump-dtb", path] + extra,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=30)
            if r.returncode != 0:
                raise ConsoleError("--dump-dtb %s: exit %d: %s" % (" ".join(extra),
                                                                  r.returncode, r.stderr))
            r = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", path],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise ConsoleError("dtc cannot read the tree: %s" % r.stderr)
            return r.stdout

    # The power button: on every machine, outside the slots.
    POWER_BUTTON = ("virtio_mmio@10009000",
                    ("virtio,mmio", "0x00 0x10009000 0x00 0x1000", "0x09", True))

    def nodes(dts):
        # name -> (reg, interrupts)
        out = {}
        for m in re.finditer(r"(virtio_mmio@[0-9a-f]+) \{(.*?)\};", dts, re.S):
            body = m.group(2)
            compat = re.search(r'compatible = "([^"]*)"', body)
            reg = re.search(r"reg = <([^>]*)>", body)
            irq = re.search(r"interrupts = <([^>]*)>", body)
            parent = re.search(r"interrupt-parent = <([^>]*)>", body)
            out[m.group(1)] = (compat and compat.group(1), reg and reg.group(1),
                               irq and irq.group(1), parent is not None)
        return out

    def with_devices():
        got = nodes(dump(["--console", "virtio", "--rng"]))
        want = {
            "virtio_mmio@10001000": ("virtio,mmio", "0x00 0x10001000 0x00 0x1000", "0x01", True),
            "virtio_mmio@10002000": ("virtio,mmio", "0x00 0x10002000 0x00 0x1000", "0x02", True),
            POWER_BUTTON[0]: POWER_BUTTON[1],
        }
        if got != want:
            raise ConsoleError("virtio_mmio nodes %r, expected %r" % (got, want))
        return "2 slots, in order, and the power button"

    def without_devices():
        got = nodes(dump([]))
        if got != dict([POWER_BUTTON]):
            raise ConsoleError("virtio_mmio nodes %r without devices" % got)
        return "the power button alone"

    c.check("device tree with --console virtio --rng", with_devices)
    c.check("device tree without devices", without_devices)


def boot_checked(c, args, name, argv, log_name, names):
    """The check name: boot argv to the prompt. The Session, or None with the checks in names
    counted as not run."""
    session = None

    def do_boot():
        nonlocal session
        log = os.path.join(args.log_dir, log_name) if args.log_dir else None
        session = console.boot(argv=argv, log=log, timeout=args.timeout, echo=args.verbose)
        return "at %.1f s" % session.boot_time

    if not c.check(name, do_boot):
        c.skip(names, "no prompt")
    return session


def hvc0_boot(c, args):
    """Boot 2: --rng --console virtio, console=hvc0."""
    names = ["shell on hvc0", "virtio devices", "hwrng is virtio_rng", "hwrng gives bytes",
             "hvc0 output reaches the host", "UART output reaches the host", "Ctrl-C on hvc0",
             "poweroff (hvc0)"]
    argv = console.vmm_command(args.guest, 1, args.memory, "console=hvc0", args.vmm) + [
        "--rng", "--console", "virtio"]
    s = boot_checked(c, args, "boot to prompt on hvc0 (--rng --console virtio)", argv,
                     "virtio-hvc0.log", names)
    if s is None:
        return
    try:
        c.check("shell on hvc0", lambda: (
            expect_output(s, "tty", r"/dev/hvc0"),
            expect_output(s, "cut -d' ' -f1 /proc/consoles", r"hvc0"))[0])

        def devices():
            # Each device's sysfs path (its virtio_mmio window) and id. (Short: a command
            # wider than the terminal is echoed on two lines.)
            return expect_output(
                s, "for d in /sys/bus/virtio/devices/*;do readlink -f $d;cat $d/device;done",
                r"/sys/devices/platform/soc/10001000\.virtio_mmio/virtio0\r?\n0x0004\r?\n"
                r"/sys/devices/platform/soc/10002000\.virtio_mmio/virtio1\r?\n0x0003\r?\n"
                r"/sys/devices/platform/soc/10009000\.virtio_mmio/virtio2\r?\n0x0012") and \
                "virtio0 = rng at 0x10001000, virtio1 = console at 0x10002000, " \
                "virtio2 = input (the power button) at 0x10009000"
        c.check("virtio devices", devices)
        c.check("hwrng is virtio_rng", lambda: expect_output(
            s, "cat /sys/class/misc/hw_random/rng_current", r"virtio_rng\.\d+"))

        def hwrng():
            expect_output(s, "head -c 64 /dev/hwrng | wc -c", r"64")
            a = s.run("head -c 16 /dev/hwrng | od -An -tx1").split()
            b = s.run("head -c 16 /dev/hwrng | od -An -tx1").split()
            if len(a) != 16 or len(b) != 16 or a == b or a == ["00"] * 16:
                raise ConsoleError("two reads of /dev/hwrng gave %r and %r" % (a, b))
            return "64 bytes; two reads differ"
        c.check("hwrng gives bytes", hwrng)

        def hvc_out():
            s.send("echo to-hvc0-$((6*7)) >/dev/hvc0")
            s.expect(r"to-hvc0-42", 20)
            s.expect(PROMPT, 20)
        c.check("hvc0 output reaches the host", hvc_out)

        def uart_out():
            # The UART keeps printing (it only lost its input).
            s.send("echo to-uart-$((6*7)) >/dev/ttyS0")
            s.expect(r"to-uart-42", 20)
            s.expect(PROMPT, 20)
        c.check("UART output reaches the host", uart_out)

        def ctrl_c():
            s.send('echo sl""eeping; sleep 30')
            s.expect(r"\nsleeping\r*\n", 30)
            time.sleep(0.5)
            s.ctrl_c()
            s.expect(PROMPT, 10)
            expect_output(s, "echo rc=$?", r"rc=130")
            return "interrupted sleep"
        c.check("Ctrl-C on hvc0", ctrl_c)

        def power_off():
            console.poweroff(s, 60)
            return "exit 0"
        c.check("poweroff (hvc0)", power_off)
    finally:
        s.close()


def serial_boot(c, args):
    """Boot 3: --rng with the serial console on 2 vCPUs."""
    names = ["UART input with --rng", "long hwrng read", "Ctrl-A x"]
    argv = console.vmm_command(args.guest, 2, args.memory, "console=ttyS0", args.vmm) + ["--rng"]
    s = boot_checked(c, args, "boot to prompt on ttyS0 (--rng, 2 cpus)", argv,
                     "virtio-serial.log", names)
    if s is None:
        return
    try:
        c.check("UART input with --rng", lambda: (
            expect_output(s, "tty", r"/dev/ttyS0"),
            expect_output(s, "ls /sys/bus/virtio/devices", r"virtio0 +virtio1"))[0])
        c.check("long hwrng read", lambda: expect_output(
            s, "head -c 262144 /dev/hwrng | wc -c", r"262144", 60))

        def ctrl_a_x():
            # The host console's escape ends the VM (status 0) whichever device has input.
            s.send_raw(b"\x01x")
            status = s.wait_exit(30)
            if status != 0:
                raise ConsoleError("VMM exited with status %s after Ctrl-A x" % status)
            return "exit 0"
        c.check("Ctrl-A x", ctrl_a_x)
    finally:
        s.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="virtio-rng and virtio-console end to end.")
    ap.add_argument("--vmm", default="build/mabo-vmm")
    ap.add_argument("--guest", default="build/guest")
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--timeout", type=float, default=120, help="boot timeout, seconds")
    ap.add_argument("--log-dir", help="keep the console logs here (default: temp files)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the consoles live")
    args = ap.parse_args(argv)

    why = console.missing_input(args.guest, args.vmm)
    if why:
        print("FAIL: " + why)
        print("0 passed, 1 failed")
        return 1
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)

    c = Checks(first_line=True)
    dtb_checks(c, args, args.guest)
    hvc0_boot(c, args)
    serial_boot(c, args)

    passed, failed = c.counts()
    if c.details:
        print(c.details[0], file=sys.stderr)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
