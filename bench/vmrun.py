#!/usr/bin/env python3
"""vmrun.py: run one virtual machine for a benchmark, timed from the host; summarize runs.

  vmrun.py run --timeout S --log FILE --mark NAME=TEXT [--mark ...] -- COMMAND...
      Starts COMMAND (its own session, standard input /dev/null, standard output and error
      into one pipe), copies everything it prints to FILE, and stamps (host monotonic clock,
      seconds from launch) the first time each TEXT appears in the output. The last mark
      ends the measurement: once it is seen, the machine is given a few seconds to power off
      by itself and is then killed. A run that has not printed the last mark after S seconds
      is killed (SIGTERM, then SIGKILL). Prints one line of KEY=VALUE words:
        status=ok|timeout|exited  rc=N  t_NAME=SECONDS...  t_exit=SECONDS  cpu=SECONDS
        user=SECONDS  sys=SECONDS
      status=exited: the command ended before the last mark. cpu = user + sys, the host CPU
      time of the command (getrusage of the waited-for child). Exit status 0 when ok, 1 if not.

  vmrun.py summary --metric NAME [--unit U] [--ratio A/B [--ratio-text T]]
                   [--cpu-ratio A/B [--cpu-ratio-text T]] [--no-cpu] FILE
      FILE has lines "VM RUN KEY=VALUE..." (the output of run, prefixed with the VM's name and
      the run number). Prints, per VM, the median (and range) of NAME and the median of cpu
      over its runs, then the ratio of the medians of NAME (--ratio) and of cpu (--cpu-ratio).

Standard library only.
"""
import argparse
import os
import resource
import selectors
import signal
import statistics
import subprocess
import sys
import time

GRACE_AFTER_LAST_MARK = 10.0  # seconds for the guest to power off once the work is done


class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def kill_group(proc):
    """Ends proc and its session: SIGTERM, then SIGKILL after 3 s."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def cmd_run(args):
    marks = []
    for m in args.mark:
        name, sep, text = m.partition("=")
        if not sep or not name or not text:
            sys.exit(f"vmrun.py: error: bad --mark '{m}' (want NAME=TEXT)")
        marks.append((name, text.encode()))
    if not args.command:
        sys.exit("vmrun.py: error: no command")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    stamps = {}
    status = "exited"
    log = open(args.log, "wb")
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(args.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        sys.exit(f"vmrun.py: error: cannot run {args.command[0]}: {e.strerror}")
    try:
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        keep = max(len(t) for _, t in marks)
        deadline = t0 + args.timeout
        last = marks[-1][0]
        eof = False
        while not eof:
            now = time.monotonic()
            if now >= deadline:
                status = "timeout" if last not in stamps else "ok"
                break
            for _key, _ev in sel.select(timeout=min(0.5, deadline - now)):
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                t = time.monotonic() - t0
                if not data:
                    eof = True
                    break
                log.write(data)
                scan = buf + data
                for name, text in marks:
                    if name not in stamps and text in scan:
                        stamps[name] = t
                buf = scan[-keep:]
            if last in stamps and deadline > t0 + stamps[last] + GRACE_AFTER_LAST_MARK:
                deadline = t0 + stamps[last] + GRACE_AFTER_LAST_MARK
        if last in stamps:
            status = "ok"
        if eof:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    except (Interrupted, KeyboardInterrupt):
        kill_group(proc)
        log.close()
        sys.exit("vmrun.py: interrupted; the virtual machine was stopped")
    finally:
        kill_group(proc)  # no-op when it has exited
        log.close()
    t_exit = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    words = [f"status={status}", f"rc={proc.returncode}"]
    for name, _ in marks:
        words.append(f"t_{name}={stamps[name]:.3f}" if name in stamps else f"t_{name}=NA")
    words += [f"t_exit={t_exit:.3f}", f"cpu={ru.ru_utime + ru.ru_stime:.3f}",
              f"user={ru.ru_utime:.3f}", f"sys={ru.ru_stime:.3f}"]
    print(" ".join(words), flush=True)
    return 0 if status == "ok" else 1


def cmd_summary(args):
    vals = {}  # vm -> key -> [floats]
    order = []
    with open(args.file) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            vm = parts[0]
            if vm not in vals:
                vals[vm] = {}
                order.append(vm)
            for w in parts[2:]:
                k, sep, v = w.partition("=")
                if not sep:
                    continue
                try:
                    x = float(v)
                except ValueError:
                    continue
                vals[vm].setdefault(k, []).append(x)
    med = {}
    width = max([len(v) for v in order] + [4])
    for vm in order:
        xs = vals[vm].get(args.metric, [])
        cpus = vals[vm].get("cpu", [])
        if not xs:
            print(f"{vm:<{width}}  no valid runs")
            continue
        med[vm] = statistics.median(xs)
        line = (f"{vm:<{width}}  median {args.metric} {med[vm]:.3f} {args.unit}"
                f"  (min {min(xs):.3f}, max {max(xs):.3f}, {len(xs)} runs)")
        if cpus and not args.no_cpu:
            line += f"  median host CPU {statistics.median(cpus):.3f} s"
        print(line)
    cpu_med = {vm: statistics.median(vals[vm]["cpu"]) for vm in order if vals[vm].get("cpu")}
    for what, ratios, meds, text in (("", args.ratio, med, args.ratio_text),
                                     ("host CPU ", args.cpu_ratio, cpu_med, args.cpu_ratio_text)):
        for r in ratios:
            a, sep, b = r.partition("/")
            if not sep:
                sys.exit(f"vmrun.py: error: bad ratio '{r}' (want A/B)")
            if a in meds and b in meds and meds[b] > 0:
                print(f"{what}ratio {a}/{b} = {meds[a] / meds[b]:.3f}{text}")
            else:
                print(f"{what}ratio {a}/{b} = NA (missing runs)")
    return 0


def main():
    p = argparse.ArgumentParser(description="Run and time benchmark virtual machines.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--timeout", type=float, default=120.0)
    r.add_argument("--log", required=True)
    r.add_argument("--mark", action="append", default=[], required=True)
    r.add_argument("command", nargs=argparse.REMAINDER)
    s = sub.add_parser("summary")
    s.add_argument("--metric", required=True)
    s.add_argument("--unit", default="")
    s.add_argument("--ratio", action="append", default=[])
    s.add_argument("--ratio-text", default="")
    s.add_argument("--cpu-ratio", action="append", default=[])
    s.add_argument("--no-cpu", action="store_true", help="leave out the host CPU medians")
    s.add_argument("--cpu-ratio-text", default="")
    s.add_argument("file")
    args = p.parse_args()
    if args.cmd == "run":
        if args.command and args.command[0] == "--":
            args.command = args.command[1:]
        return cmd_run(args)
    return cmd_summary(args)


if __name__ == "__main__":
    sys.exit(main())
