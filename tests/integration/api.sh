#!/usr/bin/env bash
# The control socket of a real mabo-vmm, driven by build/mabo: info answers, pause stops the
# guest (a loop on its console prints nothing while paused) and resume lets it go on, a snapshot is written while the VM runs on, a migration that cannot
# connect fails and leaves the VM running, errors are one line with a non-zero exit, bad
# requests do not hurt
# the VMM, a second VMM cannot take a live socket but replaces a stale one, and quit ends
# the VMM with status 0 and removes its socket; powerdown makes the guest shut down and the
# VMM exit 0 (refused while the guest has no driver for the button); snapshots back to back both succeed; while
# a VM is incoming, pause, resume, snapshot and migrate are refused. Boots the default guest
# (build/guest).
#   usage: tests/integration/api.sh [VMM] [GUEST_DIR] [MABO]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
vmm=${1:-$root/build/mabo-vmm}
guest=${2:-$root/build/guest}
mabo=${3:-$root/build/mabo}
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

pass=0 fail=0
ok() {
	pass=$((pass + 1))
	echo "ok: $1"
}
bad() {
	fail=$((fail + 1))
	echo "FAILED: $1"
}

boot_args=(--kernel "$guest/Image" --initramfs "$guest/initramfs.cpio.gz"
	--firmware "$guest/fw_dynamic.bin" --memory 256M --cpus 2 --timeout 120)

# start_vmm SOCKET LOG [INPUT]: starts a VMM in the background (its console reads INPUT,
# default /dev/null), sets $vmm_pid.
start_vmm() {
	"$vmm" "${boot_args[@]}" --api-socket "$1" <"${3:-/dev/null}" >"$2" 2>&1 &
	vmm_pid=$!
	pids+=("$vmm_pid")
}

wait_socket() {
	for _ in $(seq 100); do
		[ -S "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# mabo_fails NAME PATTERN -- ARGS: mabo exits 1 with exactly one stderr line matching.
mabo_fails() {
	local name=$1 pattern=$2
	shift 3
	local out err status lines
	out=$("$mabo" --api-socket "$sock" "$@" 2>"$tmp/err")
	status=$?
	err=$(cat "$tmp/err")
	lines=$(printf '%s\n' "$err" | grep -c .)
	if [ "$status" -eq 1 ] && [ "$lines" -eq 1 ] && [ -z "$out" ] &&
		printf '%s' "$err" | grep -q -- "$pattern"; then
		ok "$name"
	else
		bad "$name: status $status, stdout '$out', stderr: $err"
	fi
}

sock=$tmp/api.sock
# The console's input is a FIFO held open here (fd 3), so that the guest's shell can be
# driven: the pause test runs a loop in it.
mkfifo "$tmp/console.in"
exec 3<>"$tmp/console.in"
start_vmm "$sock" "$tmp/vmm.log" "$tmp/console.in"
if ! wait_socket "$sock"; then
	bad "the socket did not appear: $(cat "$tmp/vmm.log")"
	echo "api: $pass passed, $fail failed"
	exit 1
fi
ok "socket created"
mode=$(stat -c %a "$sock")
[ "$mode" = 600 ] && ok "socket mode 0600" || bad "socket mode $mode"

info=$("$mabo" --api-socket "$sock" info 2>"$tmp/err")
status=$?
if [ "$status" -eq 0 ] && [ ! -s "$tmp/err" ] && python3 -c '
import json, sys
i = json.loads(sys.argv[1])
assert i["state"] == "running" and i["cpus"] == 2 and i["memory"] == 256 << 20, i
assert i["pid"] == int(sys.argv[2]) and i["uptime_ms"] >= 0, i
' "$info" "$vmm_pid"; then
	ok "info: $info"
else
	bad "info: status $status, stdout '$info', stderr $(cat "$tmp/err")"
fi

# state_is STATE: info reports it.
state_is() {
	"$mabo" --api-socket "$sock" info 2>/dev/null |
		python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["state"] != sys.argv[1])' "$1"
}

# ticks: how many lines the guest's loop has printed so far.
ticks() {
	grep -aEc '^tick [0-9]+' "$tmp/vmm.log"
}
# wait_ticks N SECONDS: until more than N lines are printed; fails after SECONDS.
wait_ticks() {
	local end=$((SECONDS + $2))
	while [ "$(ticks)" -le "$1" ]; do
		[ "$SECONDS" -ge "$end" ] && return 1
		sleep 0.2
	done
}

# Pause and resume act on the guest: a loop on its console prints a line every 0.2 s; while
# paused nothing comes (after a grace for lines already on their way), after resume the
# lines go on.
for _ in $(seq 1800); do
	grep -aq '~ # ' "$tmp/vmm.log" && break
	sleep 0.1
done
# The word is split in the command so that its echo is not counted as a line of the loop.
printf '%s\n' 'i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo "ti""ck $i"; sleep 0.2; done &' >&3
if ! wait_ticks 2 60; then
	bad "pause: the guest's loop does not print (no prompt?): $(tail -c 300 "$tmp/vmm.log")"
elif "$mabo" --api-socket "$sock" pause && state_is paused; then
	sleep 0.5
	n1=$(ticks)
	sleep 3
	n2=$(ticks)
	if [ "$n1" -eq "$n2" ] && state_is paused; then
		ok "pause: the guest printed nothing in 3 s while paused ($n1 lines before)"
	else
		bad "pause: the guest went on while paused: $n1 -> $n2 lines in 3 s"
	fi
else
	bad "pause: $(tail -3 "$tmp/vmm.log")"
fi
mabo_fails "pause twice" "^mabo: pause: the VM is paused already$" -- pause
n2=$(ticks)
if "$mabo" --api-socket "$sock" resume && state_is running && wait_ticks "$n2" 15; then
	ok "resume: the guest goes on ($n2 -> $(ticks) lines)"
else
	bad "resume: state $("$mabo" --api-socket "$sock" info 2>&1), lines $n2 -> $(ticks)"
fi
echo 'touch /tmp/stop' >&3
mabo_fails "resume when running" "^mabo: resume: the VM is not paused$" -- resume
if "$mabo" --api-socket "$sock" snapshot "$tmp/vm.snap" && [ -s "$tmp/vm.snap" ] &&
	[ "$(head -c 8 "$tmp/vm.snap")" = MABOSTRM ] && state_is running; then
	ok "snapshot ($(stat -c %s "$tmp/vm.snap") bytes), the VM runs on"
else
	bad "snapshot: $(tail -3 "$tmp/vmm.log")"
fi
# Snapshots back to back: each answer comes once the job is over, so the next is taken.
b2b=0
for i in 1 2 3 4 5; do
	"$mabo" --api-socket "$sock" snapshot "$tmp/b2b.snap" 2>>"$tmp/b2b.err" && b2b=$((b2b + 1))
done
if [ "$b2b" -eq 5 ] && [ ! -s "$tmp/b2b.err" ]; then
	ok "five snapshots back to back"
else
	bad "snapshots back to back: $b2b of 5: $(cat "$tmp/b2b.err")"
fi
rm -f "$tmp/b2b.snap"
mabo_fails "snapshot to a missing directory" "No such file or directory" -- snapshot "$tmp/no/such/dir/x"
mabo_fails "cancel with nothing to cancel" "^mabo: cancel: no migration in progress$" -- cancel
# This VMM has no migration credentials: a migration over TCP is refused in one line.
mabo_fails "migrate tcp: without credentials" "TCP migration needs this VMM started with --migration-key or --migration-tls" -- migrate tcp:127.0.0.1:9
# A migration to a port where nothing listens fails; the VM keeps running here.
out=$("$mabo" --api-socket "$sock" migrate unix:"$tmp/nobody.sock" --downtime-ms 20 2>"$tmp/err")
status=$?
if [ "$status" -eq 1 ] && printf '%s' "$out" | tail -n 1 | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
assert r["status"] == "failed" and "No such file" in r["error"], r' && state_is running; then
	ok "migration to nowhere fails, the VM runs on"
else
	bad "migration to nowhere: status $status, stdout '$out', stderr $(cat "$tmp/err")"
fi
mabo_fails "migrate bad URI" "uri 'ftp://x': expected tcp:HOST:PORT or unix:PATH" -- migrate ftp://x

# Raw protocol: garbage, an unknown command, an over-long line; the VMM keeps serving.
if python3 - "$sock" <<'EOF'; then
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rwb", buffering=0)
def ask(line):
    f.write(line)
    return json.loads(f.readline())
r = ask(b"\x00\xffgarbage\n")
assert r["ok"] is False and "bad request" in r["error"], r
r = ask(b'{"cmd":"launch"}\n')
assert r["ok"] is False and "unknown command 'launch'" in r["error"], r
r = ask(b'{"cmd":"info"}\n')
assert r["ok"] is True and r["state"] == "running", r
f.write(b"x" * 70000)
r = json.loads(f.readline())
assert r["ok"] is False and "line longer than" in r["error"], r
assert f.readline() == b"", "the server should hang up"
EOF
	ok "bad requests answered, over-long line dropped"
else
	bad "raw protocol"
fi
"$mabo" --api-socket "$sock" info >/dev/null 2>&1 && ok "still serving" || bad "not serving after bad requests"

# A second VMM cannot take a live server's socket.
err=$("$vmm" "${boot_args[@]}" --api-socket "$sock" </dev/null 2>&1 >/dev/null)
status=$?
if [ "$status" -eq 1 ] && [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] &&
	printf '%s' "$err" | grep -q "api socket '$sock': in use by a running server"; then
	ok "second VMM refused"
else
	bad "second VMM: status $status: $err"
fi

# quit: the VMM exits 0 and removes its socket.
"$mabo" --api-socket "$sock" quit 2>"$tmp/err"
status=$?
for _ in $(seq 100); do
	kill -0 "$vmm_pid" 2>/dev/null || break
	sleep 0.1
done
wait "$vmm_pid"
vstatus=$?
if [ "$status" -eq 0 ] && [ "$vstatus" -eq 0 ] && [ ! -e "$sock" ]; then
	ok "quit"
else
	bad "quit: mabo $status ($(cat "$tmp/err")), vmm $vstatus, socket $(ls -l "$sock" 2>&1)"
fi

# A socket file left by a dead process is replaced.
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$sock"
start_vmm "$sock" "$tmp/vmm2.log"
sleep 0.5
if wait_socket "$sock" && "$mabo" --api-socket "$sock" info >/dev/null 2>&1; then
	ok "stale socket replaced"
else
	bad "stale socket: $(cat "$tmp/vmm2.log")"
fi

# powerdown: refused while the guest has no driver for the button (it is still booting);
# once its shell runs, the guest takes the press, shuts down cleanly (init's shutdown
# entries) and the VMM exits 0 within seconds.
mabo_fails "powerdown before the guest's driver: refused" \
	"^mabo: powerdown: the guest has no driver for its power button" -- powerdown
for _ in $(seq 1800); do
	grep -aq '~ # ' "$tmp/vmm2.log" && break
	sleep 0.1
done
t0=$SECONDS
"$mabo" --api-socket "$sock" powerdown 2>"$tmp/err"
status=$?
for _ in $(seq 150); do
	kill -0 "$vmm_pid" 2>/dev/null || break
	sleep 0.1
done
took=$((SECONDS - t0))
if kill -0 "$vmm_pid" 2>/dev/null; then
	bad "powerdown: the VMM still runs after $took s: $(tail -5 "$tmp/vmm2.log")"
	"$mabo" --api-socket "$sock" quit >/dev/null 2>&1
	wait "$vmm_pid"
else
	wait "$vmm_pid"
	vstatus=$?
	if [ "$status" -eq 0 ] && [ "$vstatus" -eq 0 ] && [ ! -e "$sock" ] &&
		grep -aq 'mabo-powerkey: power button pressed, powering off' "$tmp/vmm2.log" &&
		grep -aq 'Sent SIGTERM to all processes' "$tmp/vmm2.log" &&
		grep -aq 'reboot: Power down' "$tmp/vmm2.log"; then
		ok "powerdown: the guest shut down and the VMM exited 0 ($took s)"
	else
		bad "powerdown: mabo $status ($(cat "$tmp/err")), vmm $vstatus: $(tail -8 "$tmp/vmm2.log")"
	fi
fi

# Paths that cannot be a socket: one line, status 1, nothing removed.
echo keep >"$tmp/file"
err=$("$vmm" "${boot_args[@]}" --api-socket "$tmp/file" </dev/null 2>&1 >/dev/null)
status=$?
if [ "$status" -eq 1 ] && [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] &&
	printf '%s' "$err" | grep -q "api socket '$tmp/file': exists and is not a socket" &&
	[ "$(cat "$tmp/file")" = keep ]; then
	ok "regular file kept"
else
	bad "regular file: status $status: $err"
fi
err=$("$vmm" "${boot_args[@]}" --api-socket "$tmp/no/such/dir/s" </dev/null 2>&1 >/dev/null)
status=$?
if [ "$status" -eq 1 ] && [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] &&
	printf '%s' "$err" | grep -q "No such file or directory"; then
	ok "missing directory"
else
	bad "missing directory: status $status: $err"
fi
err=$("$vmm" "${boot_args[@]}" --api-socket "" </dev/null 2>&1 >/dev/null)
status=$?
[ "$status" -eq 2 ] && printf '%s' "$err" | grep -q -- "--api-socket: needs a socket path" &&
	ok "empty path" || bad "empty path: status $status: $err"

# While the VM is incoming (its state not arrived), pause, resume, snapshot and migrate are
# refused; --timeout ends the wait with status 3 and removes both sockets.
isock=$tmp/incoming-api.sock
"$vmm" --memory 256M --cpus 2 --incoming "unix:$tmp/incoming.sock" --api-socket "$isock" \
	--timeout 4 </dev/null >"$tmp/incoming.log" 2>&1 &
ipid=$!
pids+=("$ipid")
if wait_socket "$isock"; then
	saved_sock=$sock
	sock=$isock
	if state_is incoming; then
		ok "incoming: info says incoming"
	else
		bad "incoming: info: $("$mabo" --api-socket "$sock" info 2>&1)"
	fi
	mabo_fails "incoming: snapshot refused" "^mabo: snapshot: the VM is incoming" -- snapshot "$tmp/inc.snap"
	[ ! -e "$tmp/inc.snap" ] && ok "incoming: no snapshot file" || bad "incoming: a snapshot file was written"
	mabo_fails "incoming: pause refused" "^mabo: pause: the VM is incoming" -- pause
	mabo_fails "incoming: resume refused" "^mabo: resume: the VM is incoming" -- resume
	mabo_fails "incoming: migrate refused" "the VM is incoming" -- migrate "unix:$tmp/nowhere.sock"
	sock=$saved_sock
else
	bad "incoming: the socket did not appear: $(cat "$tmp/incoming.log")"
fi
wait "$ipid"
istatus=$?
if [ "$istatus" -eq 3 ] && grep -q "timeout: still waiting for an incoming migration" "$tmp/incoming.log" &&
	[ ! -e "$isock" ] && [ ! -e "$tmp/incoming.sock" ]; then
	ok "incoming: --timeout ends the wait (status 3, sockets removed)"
else
	bad "incoming: status $istatus, sockets: $(ls "$tmp"/*incoming* 2>&1): $(cat "$tmp/incoming.log")"
fi

echo "api: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
