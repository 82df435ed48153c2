#!/usr/bin/env python3
"""Drive a VMM's serial console: a small harness, and the guest boot test.

The harness runs a VMM under a pseudo-terminal (the VMM's stdin, stdout and stderr), keeps
everything it prints in memory and in a log file, and offers expect / send / run / wait_exit.
The VMM runs in its own session with the pty as its controlling terminal, so it is killed when
a test times out, when the harness exits, and (by SIGHUP) even when the harness is killed.
It also holds what the other tests share: Checks (named checks, "ok:" / "FAIL:" lines and
the counts), poweroff, and md5 helpers for the disk tests.

Boot test (the guest comes from tools/mabo-image):

    python3 tests/integration/console.py --vmm build/mabo-vmm --cpus 2 --guest build/guest
    python3 tests/integration/console.py --qemu --cpus 2 --guest build/guest

As a library:

    sys.path.insert(0, "tests/integration")
    import console
    with console.boot(guest="build/guest", cpus=2, log="x.log") as s:   # waits for the prompt
        assert s.run("uname -m").strip() == "riscv64"
        s.send("poweroff")
        assert s.wait_exit(60) == 0

Python 3 standard library only.
"""

import argparse
import atexit
import codecs
import fcntl
import hashlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty

PROMPT = r"~ # "  # PS1 of the guest's shell (tools/mabo-image)
READY = r"mabo-init: ready"  # printed by the guest's /init once the modules are loaded
TAIL_CHARS = 2000

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_live_sessions = []


class ConsoleError(Exception):
    """A console expectation failed. The first line of str() is a one-line reason."""


def _tail(text, n=TAIL_CHARS):
    text = text[-n:]
    return "".join(c if c in "\n\t" or c >= " " else "\\x%02x" % ord(c)
                   for c in text.replace("\r\n", "\n"))


class Session:
    """One VMM process and its serial console."""

    def __init__(self, argv, log=None, echo=False):
        """Start argv under a pty; log: path of the console log (default: a temp file);
        echo: also copy the console output to this process's stdout as it arrives."""
        self.argv = list(argv)
        if log is None:
            fd, log = tempfile.mkstemp(prefix="mabo-console-", suffix=".log")
            os.close(fd)
        self.log_path = log
        if os.path.dirname(log):
            os.makedirs(os.path.dirname(log), exist_ok=True)
        self._log = open(log, "wb")
        self._log.write(("# %s\n" % " ".join(self.argv)).encode())
        self._log.flush()
        self._echo = echo
        self._buf = []  # decoded text chunks; joined lazily
        self._text = ""
        self._pos = 0  # where the next expect() starts searching
        self._cond = threading.Condition()
        self._eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.start_time = time.monotonic()
        self.boot_time = None  # seconds from start to the first prompt, set by boot()

        master, slave = os.openpty()
        # Raw: bytes pass through untouched, Ctrl-C included. ONLCR off too, so a VMM that
        # turns OPOST back on (QEMU does) does not make the guest's CRLF into CR CR LF.
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.ONLCR
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                start_new_session=True, preexec_fn=_take_ctty)
        except OSError as e:
            os.close(master)
            os.close(slave)
            self._log.close()
            raise ConsoleError("cannot start %s: %s" % (self.argv[0], e.strerror)) from e
        os.close(slave)
        self._master = master
        _live_sessions.append(self)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # --- output -------------------------------------------------------------------------
    def _read_loop(self):
        while True:
            try:
                r, _, _ = select.select([self._master], [], [], 0.2)
                if not r:
                    if self.proc.poll() is not None and not self._pending_input():
                        break
                    continue
                data = os.read(self._master, 65536)
            except OSError:  # EIO: every holder of the pty's slave side is gone
                data = b""
            if not data:
                break
            self._log.write(data)
            self._log.flush()
            if self._echo:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            text = self._decoder.decode(data)
            with self._cond:
                self._buf.append(text)
                self._cond.notify_all()
        with self._cond:
            self._buf.append(self._decoder.decode(b"", final=True))
            self._eof = True
            self._cond.notify_all()

    def _pending_input(self):
        try:
            r, _, _ = select.select([self._master], [], [], 0)
            return bool(r)
        except (OSError, ValueError):
            return False

    @property
    def output(self):
        """Everything the VMM printed so far."""
        with self._cond:
            if self._buf:
                self._text += "".join(self._buf)
                self._buf = []
            return self._text

    def tail(self, n=TAIL_CHARS):
        """The last n characters of output, control characters made visible."""
        return _tail(self.output, n)

    def elapsed(self):
        return time.monotonic() - self.start_time

    def expect(self, pattern, timeout=30):
        """Wait until pattern (a regex) appears in the output after the previous match.
        Returns the re.Match; raises ConsoleError on timeout or when the VMM exits first."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            text = self.output
            m = rx.search(text, self._pos)
            if m:
                self._pos = m.end()
                return m
            with self._cond:
                if self._buf:
                    continue
                if self._eof:
                    status = self.proc.wait()
                    raise ConsoleError(
                        "VMM exited with status %s while waiting for %r (log: %s)\n"
                        "--- last output ---\n%s" % (status, rx.pattern, self.log_path,
                                                      self.tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConsoleError(
                        "timed out after %gs waiting for %r (log: %s)\n--- last output ---\n%s"
                        % (timeout, rx.pattern, self.log_path, self.tail()))
                self._cond.wait(min(left, 0.5))

    # --- input --------------------------------------------------------------------------
    def send_raw(self, data):
        """Write bytes (or str) to the console as they are."""
        if isinstance(data, str):
            data = data.encode()
        while data:
            try:
                n = os.write(self._master, data)
            except OSError as e:
                raise ConsoleError("cannot write to the console: %s" % e.strerror) from e
            data = data[n:]

    def send(self, line):
        """Type a line and Enter. Wait for the prompt first: input typed before the guest
        reads the console may be lost."""
        self.send_raw(line + "\r")

    def ctrl_c(self):
        self.send_raw(b"\x03")

    def run(self, cmd, timeout=30, prompt=PROMPT):
        """Type cmd at the prompt, wait for the next prompt, and return what the command
        printed (the echoed command line dropped, CRLF turned into LF)."""
        self.output  # flush pending chunks so the start offset is exact
        start = max(self._pos, len(self._text))
        self.send(cmd)
        m = self.expect(prompt, timeout)
        text = self._text[start:m.start()]
        nl = text.find("\n")
        text = text[nl + 1:] if nl >= 0 else ""
        return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "")

    # --- process ------------------------------------------------------------------------
    def wait_exit(self, timeout=60):
        """Wait for the VMM to exit and return its exit status (negative: killed by that
        signal). On timeout the VMM is killed and ConsoleError raised."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise ConsoleError("VMM still running %gs later, killed it (log: %s)\n"
                               "--- last output ---\n%s" % (timeout, self.log_path, self.tail()))
        self._reader.join(5)
        return status

    def close(self):
        """Kill the VMM (and anything it started) if it still runs; release the pty."""
        if self.proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._reader.join(2)
        if self._master is not None:
            try:
                os.close(self._master)
            except OSError:
                pass
            self._master = None
        if not self._log.closed:
            self._log.close()
        if self in _live_sessions:
            _live_sessions.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _take_ctty():
    # In the child, after setsid(): the pty becomes the controlling terminal, so the VMM
    # gets SIGHUP if the harness dies without cleaning up.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@atexit.register
def _close_all():
    for s in list(_live_sessions):
        s.close()


# --- commands ---------------------------------------------------------------------------
def vmm_command(guest="build/guest", cpus=1, memory="512M", cmdline="console=ttyS0",
                vmm="build/mabo-vmm", qemu=None):
    """The command line that boots the guest: ours, or QEMU's when qemu names its binary."""
    g = guest.rstrip("/")
    if qemu:
        return [qemu, "-machine", "virt", "-m", memory, "-smp", str(cpus), "-nographic",
                "-bios", g + "/fw_dynamic.bin", "-kernel", g + "/Image",
                "-initrd", g + "/initramfs.cpio.gz", "-append", cmdline]
    return [vmm, "--kernel", g + "/Image", "--initramfs", g + "/initramfs.cpio.gz",
            "--firmware", g + "/fw_dynamic.bin", "--cmdline", cmdline, "--cpus", str(cpus),
            "--memory", memory]


def boot(guest="build/guest", cpus=1, memory="512M", cmdline="console=ttyS0",
         vmm="build/mabo-vmm", qemu=None, log=None, timeout=120, echo=False, argv=None):
    """Boot the guest and wait for its shell prompt; returns the Session (close it, or use
    it as a context manager). argv overrides the whole VMM command line."""
    s = Session(argv or vmm_command(guest, cpus, memory, cmdline, vmm, qemu), log, echo)
    try:
        deadline = time.monotonic() + timeout
        s.expect(READY, timeout)
        s.expect(PROMPT, max(1.0, deadline - time.monotonic()))
        s.boot_time = s.elapsed()
    except BaseException:
        s.close()
        raise
    return s


def missing_input(guest, vmm=None):
    """What the guest directory (and the VMM, unless None) lacks to boot, or None."""
    for f in ("Image", "initramfs.cpio.gz", "fw_dynamic.bin"):
        if not os.path.isfile(os.path.join(guest, f)):
            return "no %s in %s (build it with tools/mabo-image)" % (f, guest)
    if vmm is not None and not os.access(vmm, os.X_OK):
        return "VMM %s is not an executable (build it with make)" % vmm
    return None


def poweroff(s, timeout=60):
    """Type poweroff and wait for the VMM to exit; ConsoleError unless its status is 0."""
    s.send("poweroff")
    status = s.wait_exit(timeout)
    if status != 0:
        raise ConsoleError("VMM exited with status %s after poweroff (log: %s)\n"
                           "--- last output ---\n%s" % (status, s.log_path, s.tail()))


# --- checks and helpers shared by the tests ---------------------------------------------
class Checks:
    """Runs named checks, prints "ok: NAME" or "FAIL: NAME: REASON" as each ends, and keeps
    (name, ok) for each in results. The reason is a ConsoleError's text, else the exception's
    type and text. first_line: print only the reason's first line, and keep the rest of the
    first failure that has more in details (for the caller to print at the end)."""

    def __init__(self, first_line=False):
        self.results = []
        self.details = []
        self.first_line = first_line

    def check(self, name, fn):
        """Run fn() as the check name; what it returns is a note for the ok line. True when
        it passed."""
        t0 = time.monotonic()
        try:
            note = fn()
        except Exception as e:  # noqa: BLE001 - every failure is a test failure
            reason = (str(e) if isinstance(e, ConsoleError) else
                      "%s: %s" % (type(e).__name__, e))
            if self.first_line:
                reason = reason.split("\n", 1)
                if len(reason) > 1 and not self.details:
                    self.details.append(reason[1])
                reason = reason[0]
            self.results.append((name, False))
            print("FAIL: %s: %s" % (name, reason), flush=True)
            return False
        self.results.append((name, True))
        print("ok: %s%s (%.1f s)" % (name, " " + note if note else "", time.monotonic() - t0),
              flush=True)
        return True

    def skip(self, names, why):
        """Count the checks in names as failed: not run, for the reason why."""
        for n in names:
            self.results.append((n, False))
            print("FAIL: %s: not run (%s)" % (n, why), flush=True)

    def counts(self):
        """(passed, failed) so far."""
        passed = sum(1 for _, ok in self.results if ok)
        return passed, len(self.results) - passed


def md5_of(path, nbytes):
    """The md5 of the first nbytes of a host file (fewer if it is shorter)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        left = nbytes
        while left:
            b = f.read(min(left, 1 << 20))
            if not b:
                break
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def first_md5(text):
    """The first md5 sum in a command's output (md5sum's)."""
    m = re.search(r"\b([0-9a-f]{32})\b", text)
    if not m:
        raise ConsoleError("no md5sum in %r" % text[-300:])
    return m.group(1)


# --- the boot test ----------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description="Boot the guest on a VMM and drive its console.")
    ap.add_argument("--vmm", default="build/mabo-vmm", help="our VMM binary")
    ap.add_argument("--qemu", nargs="?", const="qemu-system-riscv64", default=None,
                    metavar="BINARY", help="run against QEMU instead (default binary: %(const)s)")
    ap.add_argument("--guest", default="build/guest", help="directory from tools/mabo-image")
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--cmdline", default="console=ttyS0", help="kernel command line")
    ap.add_argument("--log", help="console log file (default: a temp file)")
    ap.add_argument("--timeout", type=float, default=120, help="boot timeout, seconds")
    ap.add_argument("--cmd-timeout", type=float, default=30, help="per-command timeout")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the console live")
    args = ap.parse_args(argv)
    if args.cpus < 1:
        ap.error("--cpus must be at least 1")

    def on_signal(signum, _frame):
        raise SystemExit("interrupted by signal %d" % signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    why = missing_input(args.guest, None if args.qemu else args.vmm)
    if why:
        print("FAIL: " + why)
        print("0 passed, 1 failed")
        return 1

    c = Checks(first_line=True)

    def expect_output(cmd, want):
        def fn():
            got = session.run(cmd, args.cmd_timeout).strip()
            if not re.fullmatch(want, got):
                raise ConsoleError("`%s` printed %r, expected %r" % (cmd, got, want))
            return "-> %r" % got
        return fn

    session = None
    vmm_name = args.qemu or args.vmm
    try:
        def do_boot():
            nonlocal session
            session = boot(args.guest, args.cpus, args.memory, args.cmdline, args.vmm,
                           args.qemu, args.log, args.timeout, args.verbose)
            return "at %.1f s" % session.boot_time

        names = ["uname -m", "cpu count", "Sstc timer", "shell arithmetic", "/proc/cmdline",
                 "Ctrl-C", "poweroff"]
        if not c.check("boot to prompt (%s, %d cpus)" % (os.path.basename(vmm_name), args.cpus),
                       do_boot):
            c.skip(names, "no prompt")
        else:
            c.check("uname -m", expect_output("uname -m", r"riscv64"))
            c.check("cpu count", expect_output("grep -c ^processor /proc/cpuinfo",
                                               str(args.cpus)))
            # Every hart offers Sstc and the kernel programs its tick with it (stimecmp),
            # not through the firmware.
            c.check("Sstc timer", expect_output(
                "echo $(grep -c '^isa.*_sstc' /proc/cpuinfo) $(dmesg|grep -c 'via sstc')",
                "%d 1" % args.cpus))
            c.check("shell arithmetic", expect_output("echo $((6*7))", r"42"))
            c.check("/proc/cmdline", expect_output(
                "cat /proc/cmdline", r"(.* )?" + re.escape(args.cmdline) + r"( .*)?"))

            def ctrl_c():
                # Ctrl-C must reach the foreground job through the guest's tty: sleep is
                # interrupted (status 130) long before it would end by itself.
                session.send('echo sl""eeping; sleep 30')
                session.expect(r"\nsleeping\r*\n", args.cmd_timeout)
                time.sleep(0.5)
                session.ctrl_c()
                session.expect(PROMPT, 10)
                got = session.run("echo rc=$?", args.cmd_timeout).strip()
                if got != "rc=130":
                    raise ConsoleError("after Ctrl-C, `echo rc=$?` printed %r, expected "
                                       "'rc=130'" % got)
                return "interrupted sleep"
            c.check("Ctrl-C", ctrl_c)

            def power_off():
                t0 = time.monotonic()
                poweroff(session, 60)
                return "exit 0 after %.1f s, %.1f s in all" % (time.monotonic() - t0,
                                                               session.elapsed())
            c.check("poweroff", power_off)
    finally:
        if session is not None:
            session.close()

    passed, failed = c.counts()
    if c.details:
        print(c.details[0], file=sys.stderr)
    if session is not None:
        print("console log: %s" % session.log_path)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
