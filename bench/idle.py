#!/usr/bin/env python3
"""bench/idle.py: what an idle VM costs the host, mabo-vmm against QEMU (TCG).

Boots N idle VMs of each (default 10 + 10) on the default guest (build/guest, made by
tools/mabo-image: same kernel, initramfs and firmware for both, 1 vCPU, --memory for both),
launched in pairs (mabo, qemu, mabo, qemu, ...) so that both see the same machine. Each VM
boots to the guest's console shell (busybox's "Enter 'help'" banner) and is then left alone.
Once all are up and have settled (--settle), the script measures over a window (--window):

  host CPU  the VMM process's CPU time over the window, as a share of one host core:
            utime + stime from /proc/PID/stat (clock ticks), and, finer, the sum of the
            run times in /proc/PID/task/*/schedstat (nanoseconds; threads that ended
            during the window are missed, none do in an idle VM)
  RSS       VmRSS at the end of the window
  guest     the guest RAM mapping's resident pages (from /proc/PID/smaps: the anonymous
            mapping exactly --memory long): the pages the guest touched
  overhead  the VMM's anonymous memory (the sum of "Anonymous:" over /proc/PID/smaps)
            minus the guest's touched pages: what the VMM itself holds (code caches,
            buffers, heaps, stacks); shared libraries and the binary are not counted

and prints every VM, then per VMM the medians (with min and max), the ratios of the medians,
and the two goals: host CPU per idle VM no more than QEMU's, and overhead no more than
16 MiB. The machine is shared and noisy: compare figures from one invocation only.

Usage: python3 bench/idle.py [--vms N] [--memory SIZE] [--settle S] [--window S]
                             [--timeout S] [--vmm FILE] [--guest DIR] [--qemu FILE]
                             [--logs DIR]
Standard library only. QEMU (Debian's qemu-system-misc) is installed through
scripts/install-deps.sh when it is missing. See bench/README.md.
"""
import argparse
import datetime
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PROG = "idle.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_MARK = b"Enter 'help'"
OVERHEAD_GOAL_MIB = 16.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def die(msg):
    sys.exit(f"{PROG}: error: {msg}")


def note(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def parse_size(s):
    m = re.fullmatch(r"([0-9]+)([MG])", s)
    if not m:
        die(f"--memory must look like 128M or 1G, not '{s}'")
    return int(m[1]) << (20 if m[2] == "M" else 30)


def need_qemu(qemu):
    if qemu == "qemu-system-riscv64" and not shutil.which(qemu):
        note("qemu-system-riscv64 not found: installing Debian package qemu-system-misc")
        rc = subprocess.call([os.path.join(ROOT, "scripts/install-deps.sh"),
                              "qemu-system-misc"], stdout=sys.stderr)
        if rc != 0:
            die("qemu-system-riscv64 is missing and could not be installed "
                "(apt-get install qemu-system-misc as root)")
    if not shutil.which(qemu):
        die(f"QEMU '{qemu}' not found")


class VM:
    def __init__(self, kind, index, cmd, log_path):
        self.kind, self.index, self.log_path = kind, index, log_path
        self.log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            die(f"cannot run {cmd[0]}: {e.strerror}")
        self.t0 = time.monotonic()
        self.booted = None  # seconds from launch to the shell banner

    @property
    def name(self):
        return f"{self.kind}-{self.index}"

    def check_booted(self):
        if self.booted is None:
            with open(self.log_path, "rb") as f:
                if SHELL_MARK in f.read():
                    self.booted = time.monotonic() - self.t0
        return self.booted is not None

    def stop(self):
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.log.close()

    def tail(self, n=15):
        with open(self.log_path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def cpu_ns(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def memory(pid, guest_bytes):
    """(VmRSS, anonymous total, guest RAM resident), in bytes; guest None if not found."""
    anon = 0
    guest = None
    vma = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\S+)\s*(.*)$", line)
            if m:
                size = int(m[2], 16) - int(m[1], 16)
                vma = (size, m[4] == "0" and not m[5])
                continue
            if line.startswith("Anonymous:"):
                anon += int(line.split()[1]) * 1024
            elif line.startswith("Rss:") and vma and vma[1] and vma[0] == guest_bytes:
                guest = (guest or 0) + int(line.split()[1]) * 1024
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, anon, guest


def context(args, vmm_copy):
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain",
                            "--untracked-files=no", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        rev += " + uncommitted changes in src/"
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    kernel = "unknown"
    versions = os.path.join(args.guest, "VERSIONS")
    if os.path.exists(versions):
        kv = dict(l.strip().split("=", 1) for l in open(versions) if "=" in l)
        kernel = f"{kv.get('kernel_package', '?')} ({kv.get('kernel_version', '?')})"
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    qver = subprocess.run([args.qemu, "--version"], capture_output=True,
                          text=True).stdout.splitlines()[0]
    built = datetime.datetime.fromtimestamp(os.path.getmtime(args.vmm), datetime.timezone.utc)
    print(f"date:    {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
    print(f"host:    {os.cpu_count()} CPUs, {cpu}, load average {load}")
    print(f"ours:    {args.vmm} (built {built:%Y-%m-%d %H:%M:%S} UTC; "
          f"repository at commit {rev})")
    print(f"peer:    {qver} (TCG)")
    print(f"guest:   {args.guest}, kernel {kernel}")


def med(xs):
    xs = [x for x in xs if x is not None]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None


def main():
    p = argparse.ArgumentParser(prog=PROG, description="Host cost of idle VMs: mabo-vmm "
                                "against QEMU.")
    p.add_argument("--vms", type=int, default=10, help="VMs of each (default 10)")
    p.add_argument("--memory", default="128M", help="guest RAM for both (default 128M)")
    p.add_argument("--settle", type=float, default=20.0,
                   help="seconds to wait after the last boot (default 20)")
    p.add_argument("--window", type=float, default=60.0,
                   help="seconds of measurement (default 60)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a pair may take to boot (default 300)")
    p.add_argument("--vmm", default=os.path.join(ROOT, "build/mabo-vmm"))
    p.add_argument("--guest", default=os.path.join(ROOT, "build/guest"))
    p.add_argument("--qemu", default="qemu-system-riscv64")
    p.add_argument("--logs", help="keep every VM's console log in this directory")
    args = p.parse_args()
    if args.vms < 1 or args.settle < 0 or args.window <= 0 or args.timeout <= 0:
        die("--vms must be >= 1, --settle >= 0, --window and --timeout > 0")
    mem = parse_size(args.memory)
    if not os.access(args.vmm, os.X_OK):
        die(f"no VMM binary '{args.vmm}' (run make first, or pass --vmm FILE)")
    for f in ("Image", "fw_dynamic.bin", "initramfs.cpio.gz"):
        if not os.path.isfile(os.path.join(args.guest, f)):
            die(f"no {args.guest}/{f} (build the guest with tools/mabo-image --out "
                f"{args.guest}, or pass --guest DIR)")
    need_qemu(args.qemu)

    work = tempfile.mkdtemp(prefix="mabo-bench.")
    vms = []

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        # Copies, so that a rebuild during the run does not change what is measured.
        vmm = os.path.join(work, "mabo-vmm")
        shutil.copy(args.vmm, vmm)
        for f in ("Image", "fw_dynamic.bin", "initramfs.cpio.gz"):
            shutil.copy(os.path.join(args.guest, f), work)
        logs = args.logs or os.path.join(work, "logs")
        os.makedirs(logs, exist_ok=True)
        image, fw, initrd = (os.path.join(work, f) for f in
                             ("Image", "fw_dynamic.bin", "initramfs.cpio.gz"))
        cmdline = "console=ttyS0"
        cmds = {
            "mabo": [vmm, "--kernel", image, "--initramfs", initrd, "--firmware", fw,
                     "--cmdline", cmdline, "--memory", args.memory, "--cpus", "1"],
            "qemu": [args.qemu, "-machine", "virt", "-m", args.memory, "-smp", "1",
                     "-nographic", "-bios", fw, "-kernel", image, "-initrd", initrd,
                     "-append", cmdline],
        }
        print(f"== idle benchmark: {args.vms} idle VMs each, 1 vCPU, {args.memory}, "
              f"settle {args.settle:g} s, window {args.window:g} s ==")
        context(args, vmm)
        print(f"mabo:    mabo-vmm --kernel Image --initramfs initramfs.cpio.gz --firmware "
              f"fw_dynamic.bin --cmdline \"{cmdline}\" --memory {args.memory} --cpus 1")
        print(f"qemu:    qemu-system-riscv64 -machine virt -m {args.memory} -smp 1 -nographic "
              f"-bios fw_dynamic.bin -kernel Image -initrd initramfs.cpio.gz "
              f"-append \"{cmdline}\"")
        print("(host CPU as % of one core over the window; memory in MiB; overhead = "
              "anonymous memory - guest RAM touched)", flush=True)

        # Boot in pairs, one of each, so both see the same load; the VMs already up idle.
        for i in range(1, args.vms + 1):
            pair = [VM(k, i, cmds[k], os.path.join(logs, f"idle-{k}-{i}.log"))
                    for k in ("mabo", "qemu")]
            vms += pair
            deadline = time.monotonic() + args.timeout
            while not all(v.check_booted() for v in pair):
                for v in pair:
                    if v.proc.poll() is not None:
                        print(f"---- last lines of {v.name}'s console ----\n{v.tail()}\n----",
                              file=sys.stderr)
                        die(f"{v.name} exited (status {v.proc.returncode}) before its shell")
                if time.monotonic() > deadline:
                    for v in pair:
                        if not v.check_booted():
                            print(f"---- last lines of {v.name}'s console ----\n{v.tail()}"
                                  "\n----", file=sys.stderr)
                    die(f"pair {i} did not reach the shell within {args.timeout:g} s")
                time.sleep(0.2)
            note(f"pair {i}/{args.vms} up (mabo {pair[0].booted:.1f} s, "
                 f"qemu {pair[1].booted:.1f} s)")
        time.sleep(args.settle)

        t0 = time.monotonic()
        start = {v.name: (cpu_ticks(v.proc.pid), cpu_ns(v.proc.pid)) for v in vms}
        time.sleep(args.window)
        elapsed = time.monotonic() - t0
        rows = []
        for v in vms:
            if v.proc.poll() is not None:
                die(f"{v.name} exited (status {v.proc.returncode}) during the window")
            ticks, ns = cpu_ticks(v.proc.pid), cpu_ns(v.proc.pid)
            rss, anon, guest = memory(v.proc.pid, mem)
            row = {
                "vm": v, "cpu_stat": 100.0 * (ticks - start[v.name][0]) / CLK_TCK / elapsed,
                "cpu_sched": 100.0 * (ns - start[v.name][1]) / 1e9 / elapsed,
                "rss": rss / 2**20, "guest": None if guest is None else guest / 2**20,
                "overhead": None if guest is None else (anon - guest) / 2**20,
            }
            rows.append(row)
        print()
        for r in rows:
            g = "NA" if r["guest"] is None else f"{r['guest']:6.1f}"
            o = "NA" if r["overhead"] is None else f"{r['overhead']:6.1f}"
            print(f"{r['vm'].name:<8} booted {r['vm'].booted:5.1f} s   host CPU "
                  f"{r['cpu_stat']:5.2f} % (stat), {r['cpu_sched']:5.3f} % (schedstat)   "
                  f"RSS {r['rss']:6.1f}   guest {g}   overhead {o}")

        print()
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        print(f"== idle: medians over {args.vms} VMs each, window {elapsed:.1f} s "
              f"(load average now {load}) ==")
        meds = {}
        for kind in ("mabo", "qemu"):
            mine = [r for r in rows if r["vm"].kind == kind]
            meds[kind] = {}
            parts = []
            for key, label, unit, fmt in (("cpu_stat", "host CPU (stat)", "%", ".2f"),
                                          ("cpu_sched", "host CPU (schedstat)", "%", ".3f"),
                                          ("rss", "RSS", "MiB", ".1f"),
                                          ("guest", "guest touched", "MiB", ".1f"),
                                          ("overhead", "overhead", "MiB", ".1f")):
                m = med([r[key] for r in mine])
                meds[kind][key] = m[0] if m else None
                parts.append(f"{label} {m[0]:{fmt}} {unit} ({m[1]:{fmt}}-{m[2]:{fmt}})"
                             if m else f"{label} NA")
            print(f"{kind:<5} " + ";  ".join(parts))
        for key, label in (("cpu_stat", "host CPU (stat)"), ("cpu_sched", "host CPU (schedstat)"),
                           ("rss", "RSS"), ("overhead", "overhead")):
            a, b = meds["mabo"][key], meds["qemu"][key]
            print(f"ratio mabo/qemu {label} = " +
                  (f"{a / b:.3f}" if a is not None and b else "NA") + "  (< 1: mabo-vmm costs less)")
        a, b = meds["mabo"]["cpu_sched"], meds["qemu"]["cpu_sched"]
        print("goal: host CPU per idle VM <= QEMU's: " +
              ("met" if a is not None and b is not None and a <= b else "NOT met"))
        o = meds["mabo"]["overhead"]
        print(f"goal: VMM memory beyond the guest's touched pages <= {OVERHEAD_GOAL_MIB:g} MiB: " +
              ("met" if o is not None and o <= OVERHEAD_GOAL_MIB else "NOT met"))
        if args.logs:
            print(f"console logs: {args.logs}")
    except KeyboardInterrupt:
        note("interrupted; stopping the virtual machines")
        return 130
    finally:
        for v in vms:
            v.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
