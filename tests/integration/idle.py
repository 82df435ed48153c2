#!/usr/bin/env python3
"""What an idle guest costs the host: the VMM gives its code caches back, and sleeps.

Boots the guest (tools/mabo-image) with 128 MiB and checks, from /proc/PID of the VMM:
  - once the guest idles at its shell, the VMM's anonymous memory beyond the guest RAM
    mapping's resident pages (the pages the guest touched) falls to 16 MiB or less: the
    block and code caches that booting filled are released;
  - the guest still runs commands afterwards (its code is decoded and translated anew);
  - idle, the VMM uses under 3 % of a host core (its threads sleep until the next timer
    interrupt; a polling loop would show here);
  - it powers off cleanly.

    python3 tests/integration/idle.py --vmm build/mabo-vmm --guest build/guest

Prints "ok:"/"FAIL:" per check and "N passed, M failed"; exit 1 on any failure.
Python 3 standard library only.
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console  # noqa: E402

MEMORY = 128 << 20
OVERHEAD_MAX_MIB = 16.0
CPU_MAX_PERCENT = 3.0


def overhead_mib(pid):
    """The VMM's anonymous memory minus the guest RAM mapping's resident pages, in MiB."""
    anon = guest = 0
    found = False
    vma = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\S+)\s*(.*)$", line)
            if m:
                vma = (int(m[2], 16) - int(m[1], 16), m[3] == "0" and not m[4])
                continue
            if line.startswith("Anonymous:"):
                anon += int(line.split()[1])
            elif line.startswith("Rss:") and vma == (MEMORY, True):
                guest += int(line.split()[1])
                found = True
    if not found:
        raise console.ConsoleError("no %d MiB guest RAM mapping in /proc/%d/smaps"
                                   % (MEMORY >> 20, pid))
    return (anon - guest) / 1024.0


def cpu_ns(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total


def main():
    ap = argparse.ArgumentParser(description="Idle cost of the VMM.")
    ap.add_argument("--vmm", default="build/mabo-vmm")
    ap.add_argument("--guest", default="build/guest")
    ap.add_argument("--log", help="console log file (default: a temp file)")
    ap.add_argument("--timeout", type=float, default=180, help="boot timeout, seconds")
    args = ap.parse_args()

    why = console.missing_input(args.guest, args.vmm)
    if why:
        print("FAIL: " + why)
        print("0 passed, 1 failed")
        return 1

    c = console.Checks(first_line=True)
    session = None
    state = {}
    try:
        def do_boot():
            nonlocal session
            session = console.boot(guest=args.guest, memory="128M", vmm=args.vmm,
                                   log=args.log, timeout=args.timeout)
            state["booted"] = overhead_mib(session.proc.pid)
            return "%.1f s, %.1f MiB beyond guest RAM" % (session.boot_time, state["booted"])
        if not c.check("boot", do_boot):
            c.skip(["caches released", "runs after release", "idle CPU", "poweroff"],
                   "no guest")
            return finish(c, session)

        def released():
            deadline = time.monotonic() + 30
            while True:
                o = overhead_mib(session.proc.pid)
                if o <= OVERHEAD_MAX_MIB:
                    return "%.1f MiB after boot, %.1f MiB idle" % (state["booted"], o)
                if time.monotonic() > deadline:
                    raise console.ConsoleError(
                        "the VMM still holds %.1f MiB beyond guest RAM after 30 s idle "
                        "(want <= %g)" % (o, OVERHEAD_MAX_MIB))
                time.sleep(1)
        c.check("caches released", released)

        def runs_after():
            out = session.run("ls /bin | wc -l; echo sum=$((6 * 7))", 60)
            if "sum=42" not in out:
                raise console.ConsoleError("unexpected output %r" % out[-200:])
            return "ran a command"
        c.check("runs after release", runs_after)

        def idle_cpu():
            time.sleep(3)  # the command's echo settles
            pid = session.proc.pid
            t0, n0 = time.monotonic(), cpu_ns(pid)
            time.sleep(10)
            pct = 100.0 * (cpu_ns(pid) - n0) / 1e9 / (time.monotonic() - t0)
            if pct >= CPU_MAX_PERCENT:
                raise console.ConsoleError("idle, the VMM used %.2f %% of a core (want < %g)"
                                           % (pct, CPU_MAX_PERCENT))
            return "%.2f %% of a core" % pct
        c.check("idle CPU", idle_cpu)

        def power_off():
            console.poweroff(session, 60)
            return "exit 0"
        c.check("poweroff", power_off)
    finally:
        if session is not None:
            session.close()
    return finish(c, session)


def finish(c, session):
    passed, failed = c.counts()
    if c.details:
        print(c.details[0], file=sys.stderr)
    if session is not None:
        print("console log: %s" % session.log_path)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
