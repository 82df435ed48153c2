#!/usr/bin/env python3
"""build/mabo against a fake control socket: this script plays mabo-vmm's side of the
protocol (docs/api.md), simulates migrations that progress and complete, fail, are cancelled
with Ctrl-C or lose the connection, and checks the client's exit status, its last JSON line
on stdout, its one-line errors on stderr, and its progress line on a terminal.

    usage: tests/integration/mabo_client.py [--mabo build/mabo]
"""
import argparse
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeServer:
    """Serves one scenario: handler(conn) for each accepted connection."""

    def __init__(self, path, handler):
        self.path = path
        self.handler = handler
        self.requests = []
        self.errors = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            self.file = conn.makefile("rwb", buffering=0)
            self.conn = conn
            try:
                self.handler(self)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as e:  # reported by the test
                self.errors.append(repr(e))
            finally:
                # The file holds the socket open: close both, so the client sees the end.
                self.file.close()

    def recv(self, timeout=10):
        """The next request, parsed; None at end of stream."""
        self.conn.settimeout(timeout)
        line = self.file.readline()
        if not line:
            return None
        req = json.loads(line)
        self.requests.append(req)
        return req

    def send(self, obj):
        self.file.write((json.dumps(obj) + "\n").encode())

    def close(self):
        self.sock.close()
        self.thread.join(5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def status(state, **kw):
    s = {"status": state, "pass": 1, "postcopy_active": False, "total_pages": 131072,
         "remaining_pages": 1000, "dirty_rate_pps": 500, "bandwidth_mibps": 120.5,
         "expected_downtime_ms": 30, "total_ms": 0, "downtime_ms": 0, "bytes": 0, "rounds": 0}
    s.update(kw)
    return s


def event(state, **kw):
    e = {"event": "migration"}
    e.update(status(state, **kw))
    return e


FINAL = dict(total_ms=812, downtime_ms=4, bytes=123456789, rounds=4)


class Runner:
    def __init__(self, mabo, tmp):
        self.mabo = mabo
        self.tmp = tmp
        self.sock = os.path.join(tmp, "api.sock")
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"ok: {name}")
        else:
            self.failed += 1
            print(f"FAILED: {name}: {detail}")

    def run(self, args, server=None, sigint_after=None, timeout=20, env=None):
        """Runs mabo ARGS; returns (status, stdout, stderr)."""
        p = subprocess.Popen([self.mabo] + args, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        if sigint_after is not None:
            time.sleep(sigint_after)
            p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            if server:
                server.close()
            return -1, out.decode(), err.decode() + " (timed out)"
        if server:
            server.close()
            if server.errors:
                err = err + ("fake server: " + "; ".join(server.errors)).encode()
        return p.returncode, out.decode(), err.decode()

    def serve(self, handler):
        return FakeServer(self.sock, handler)

    def last_json(self, out):
        lines = out.strip().splitlines()
        try:
            return json.loads(lines[-1]) if lines else None
        except ValueError:
            return None

    def one_error_line(self, err, pattern):
        lines = [l for l in err.splitlines() if l.strip()]
        return len(lines) == 1 and lines[0].startswith("mabo: ") and pattern in lines[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mabo", default=os.path.join(ROOT, "build/mabo"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = Runner(os.path.abspath(args.mabo), tmp)
        env = {k: v for k, v in os.environ.items() if k != "MABO_API_SOCKET"}
        S = ["--api-socket", r.sock]

        # Usage.
        st, out, err = r.run(["--help"])
        r.check("--help", st == 0 and "Usage: mabo --api-socket PATH" in out and not err, err)
        for name, argv, pattern in [
            ("no command", S, "no command given"),
            ("unknown command", S + ["reboot"], "unknown command 'reboot'"),
            ("migrate without URI", S + ["migrate"], "migrate: expected one URI"),
            ("snapshot without FILE", S + ["snapshot"], "snapshot: expected one FILE"),
            ("info with an argument", S + ["info", "x"], "info: unexpected argument 'x'"),
            ("bad downtime", S + ["migrate", "tcp:h:1", "--downtime-ms", "soon"],
             "--downtime-ms 'soon'"),
            ("zero downtime", S + ["migrate", "tcp:h:1", "--downtime-ms", "0"], "at least 1"),
            ("negative bandwidth", S + ["migrate", "tcp:h:1", "--bandwidth", "-5"],
             "--bandwidth '-5'"),
            ("migrate option on pause", S + ["pause", "--postcopy"], "are for migrate"),
            ("unknown option", S + ["info", "--bogus"], "unknown option '--bogus'"),
            ("option without value", ["info", "--api-socket"], "'--api-socket' needs a value"),
            ("no socket given", ["info"], "no control socket"),
        ]:
            st, out, err = r.run(argv, env=env)
            r.check(f"usage: {name}", st == 2 and not out and r.one_error_line(err, pattern),
                    f"status {st}, stdout {out!r}, stderr {err!r}")

        # No server.
        st, out, err = r.run(["--api-socket", os.path.join(tmp, "none.sock"), "info"])
        r.check("no server", st == 1 and r.one_error_line(err, "cannot connect to")
                and "is mabo-vmm running" in err, f"status {st}, stderr {err!r}")
        open(os.path.join(tmp, "plain"), "w").close()
        st, out, err = r.run(["--api-socket", os.path.join(tmp, "plain"), "info"])
        r.check("not a socket", st == 1 and r.one_error_line(err, "cannot connect to"),
                f"status {st}, stderr {err!r}")

        # Simple commands.
        def info(s):
            req = s.recv()
            s.send({"ok": True, "state": "running", "cpus": 2, "memory": 536870912})
        srv = r.serve(info)
        st, out, err = r.run(S + ["info"], srv)
        r.check("info", st == 0 and not err and srv.requests == [{"cmd": "info"}] and
                json.loads(out) == {"state": "running", "cpus": 2, "memory": 536870912},
                f"status {st}, stdout {out!r}, stderr {err!r}, requests {srv.requests}")

        def refuse(s):
            req = s.recv()
            s.send({"ok": False, "error": req["cmd"] + ": not supported yet"})
        for cmd in ["pause", "resume", "cancel", "postcopy", "quit"]:
            srv = r.serve(refuse)
            st, out, err = r.run(S + [cmd], srv)
            r.check(f"{cmd} refused", st == 1 and not out and
                    r.one_error_line(err, f"mabo: {cmd}: not supported yet") and
                    srv.requests == [{"cmd": cmd}], f"status {st}, stderr {err!r}")

        def accept(s):
            s.recv()
            s.send({"ok": True})
        srv = r.serve(accept)
        st, out, err = r.run(S + ["pause"], srv)
        r.check("pause accepted", st == 0 and not out and not err, f"status {st}, {err!r}")

        srv = r.serve(accept)
        cwd = os.getcwd()
        st, out, err = r.run(S + ["snapshot", "vm.snap"], srv)
        r.check("snapshot sends an absolute path", st == 0 and srv.requests ==
                [{"cmd": "snapshot", "path": os.path.join(cwd, "vm.snap")}], f"{srv.requests}")

        def garbage(s):
            s.recv()
            s.conn.sendall(b"this is not json\n")
        srv = r.serve(garbage)
        st, out, err = r.run(S + ["info"], srv)
        r.check("garbage reply", st == 1 and r.one_error_line(err, "bad reply from the VMM"),
                f"status {st}, stderr {err!r}")

        def hangup(s):
            s.recv()
        srv = r.serve(hangup)
        st, out, err = r.run(S + ["info"], srv)
        r.check("server hangs up", st == 1 and r.one_error_line(err, "closed the connection"),
                f"status {st}, stderr {err!r}")

        # Migrations.
        def completes(s):
            req = s.recv()
            s.send({"ok": True})
            for i in range(5):
                time.sleep(0.05)
                s.send(event("active", **{"pass": i + 1, "remaining_pages": 1000 - 100 * i}))
            s.send(event("completed", **FINAL))
        srv = r.serve(completes)
        st, out, err = r.run(S + ["migrate", "tcp:10.0.0.2:4444", "--downtime-ms", "50",
                                  "--bandwidth", "100", "--postcopy", "--compress"], srv)
        last = r.last_json(out)
        r.check("migrate completes", st == 0 and not err and last and
                last.get("status") == "completed" and last.get("downtime_ms") == 4 and
                last.get("total_ms") == 812 and last.get("bytes") == 123456789 and
                last.get("rounds") == 4 and "event" not in last,
                f"status {st}, stdout {out!r}, stderr {err!r}")
        r.check("migrate request", srv.requests[:1] == [{
            "cmd": "migrate", "uri": "tcp:10.0.0.2:4444", "downtime_ms": 50,
            "bandwidth_mibps": 100, "postcopy": True, "compress": True, "events": True}],
            f"{srv.requests}")

        def fails(s):
            s.recv()
            s.send({"ok": True})
            s.send(event("active"))
            s.send(event("failed", error="destination closed the connection", **FINAL))
        srv = r.serve(fails)
        st, out, err = r.run(S + ["migrate", "unix:/run/dst.sock"], srv)
        last = r.last_json(out)
        r.check("migrate fails", st == 1 and last and last.get("status") == "failed" and
                r.one_error_line(err, "migrate: failed: destination closed the connection"),
                f"status {st}, stdout {out!r}, stderr {err!r}")
        r.check("migrate defaults", srv.requests[:1] == [{
            "cmd": "migrate", "uri": "unix:/run/dst.sock", "postcopy": False,
            "compress": False, "events": True}], f"{srv.requests}")

        srv = r.serve(refuse)
        st, out, err = r.run(S + ["migrate", "tcp:h:1"], srv)
        r.check("migrate refused", st == 1 and not out and
                r.one_error_line(err, "migrate: not supported yet"), f"{st} {out!r} {err!r}")

        def cancelled(s):
            s.recv()
            s.send({"ok": True})
            s.conn.setblocking(False)
            buf = b""
            deadline = time.time() + 10
            while time.time() < deadline:
                s.send(event("active"))
                time.sleep(0.1)
                try:
                    buf += s.conn.recv(4096)
                except BlockingIOError:
                    pass
                if b"\n" in buf:
                    s.requests.append(json.loads(buf.split(b"\n")[0]))
                    break
            s.conn.setblocking(True)
            s.send(event("active"))
            s.send({"ok": True})
            s.send(event("cancelled", **FINAL))
        srv = r.serve(cancelled)
        st, out, err = r.run(S + ["migrate", "tcp:h:1"], srv, sigint_after=0.5)
        last = r.last_json(out)
        r.check("Ctrl-C cancels", st == 1 and last and last.get("status") == "cancelled" and
                srv.requests[1:] == [{"cmd": "cancel"}] and "migrate: cancelled" in err,
                f"status {st}, stdout {out!r}, stderr {err!r}, requests {srv.requests}")

        def lost(s):
            s.recv()
            s.send({"ok": True})
            s.send(event("active"))
        srv = r.serve(lost)
        st, out, err = r.run(S + ["migrate", "tcp:h:1"], srv)
        r.check("connection lost mid-migration", st == 1 and not out and
                r.one_error_line(err, "outcome is unknown"), f"status {st}, {out!r} {err!r}")

        # A server that answers but does not stream events: the client asks.
        def polled(s):
            s.recv()
            s.send({"ok": True})
            req = s.recv(timeout=10)
            s.send(dict({"ok": True}, **status("completed", **FINAL)))
        srv = r.serve(polled)
        st, out, err = r.run(S + ["migrate", "tcp:h:1"], srv)
        last = r.last_json(out)
        r.check("status asked when events stop", st == 0 and last and
                last.get("status") == "completed" and "ok" not in last and
                srv.requests[1:] == [{"cmd": "migrate-status", "events": True}],
                f"status {st}, {out!r} {err!r} {srv.requests}")

        # The progress line on a terminal.
        srv = r.serve(completes)
        master, slave = pty.openpty()
        p = subprocess.Popen([r.mabo] + S + ["migrate", "tcp:h:1"], stdout=subprocess.PIPE,
                             stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        tty = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            tty += chunk
        out = p.communicate(timeout=20)[0].decode()
        os.close(master)
        srv.close()
        tty = tty.decode(errors="replace")
        r.check("progress line on a terminal", p.returncode == 0 and
                "\r\x1b[Kpass 5 [" in tty and "remaining 600 pages" in tty and
                "dirty 500 pages/s" in tty and "120.5 MiB/s" in tty and
                "downtime ~30 ms" in tty and tty.endswith("\r\x1b[K") and
                r.last_json(out)["status"] == "completed",
                f"status {p.returncode}, terminal {tty!r}, stdout {out!r}")

        print(f"mabo client: {r.passed} passed, {r.failed} failed")
        return 0 if r.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
