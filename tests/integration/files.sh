#!/usr/bin/env bash
# Files, sockets and disk locks, with a bare-metal program that spins (fast) and QEMU's tools:
# - disk locks: a mabo-vmm writer keeps qemu-io and qemu-nbd writers out and lets a reader
#   that shares writes (qemu-io -r) in; two read-only disks share a file; locking=off opts
#   out; the lock goes when the VMM ends;
# - sockets: --api-socket and --incoming unix: are 0600 under umask 000; SIGTERM (and SIGINT
#   with no terminal) ends the VMM with status 0 and removes them, also while it waits for a
#   migration;
# - snapshots: a symlink, a device node and a FIFO at the target are refused and left alone,
#   a relative path is refused, a snapshot file is 0600 and no temporary file stays; a
#   snapshot with bytes after END is refused; a device type with a newline and a terminal
#   escape in a snapshot is printed escaped, on one line;
# - one shared disk file: a snapshot restored, and a migration (also one whose destination
#   is killed) between two VMMs, with the lock where the guest runs.
#   usage: tests/integration/files.sh [VMM] [MABO]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
vmm=${1:-$root/build/mabo-vmm}
mabo=${2:-$root/build/mabo}
# Absolute: some cases run from another directory.
vmm=$(realpath "$vmm")
mabo=$(realpath "$mabo")
for tool in qemu-io qemu-nbd; do
	if ! command -v "$tool" >/dev/null; then
		echo "$tool is missing (package qemu-utils, scripts/install-deps.sh)"
		exit 1
	fi
done
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill -9 "$p" 2>/dev/null
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

python3 - "$tmp/spin.elf" <<'PY'
import struct, sys
base, code_off = 0x80000000, 120
ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
    "<HHIQQQIHHHHHH", 2, 243, 1, base + code_off, 64, 0, 0, 64, 56, 1, 0, 0, 0)
phdr = struct.pack("<IIQQQQQQ", 1, 7, 0, base, base, code_off + 4, code_off + 4, 0x1000)
open(sys.argv[1], "wb").write(ehdr + phdr + struct.pack("<I", 0x6f))
PY
spin=(--kernel "$tmp/spin.elf" --firmware none --memory 8M)
disk=$tmp/disk.raw
truncate -s 1M "$disk"
ino=$(stat -c %i "$disk")

# start NAME ARGS...: a VMM in the background (stdin not a terminal), its pid in $pid.
start() {
	local name=$1
	shift
	"$vmm" "$@" </dev/null >"$tmp/$name.out" 2>"$tmp/$name.err" &
	pid=$!
	pids+=("$pid")
}
# locked: some process holds a lock on the disk file.
locked() { grep -q ":$ino " /proc/locks; }
wait_locked() {
	for _ in $(seq 100); do locked && return 0; sleep 0.05; done
	return 1
}
wait_file() {
	for _ in $(seq 100); do [ -e "$1" ] && return 0; sleep 0.05; done
	return 1
}
# ends_soon PID: waits up to 5 s for PID to end, else kills it (it then fails its check).
ends_soon() {
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
	kill -9 "$1"
}
# qemu_writes: qemu-io can open the disk for writing (0) or is refused (1).
qemu_writes() { qemu-io -f raw -c 'write -P 7 0 512' "$disk" >"$tmp/qemu-io.log" 2>&1; }

# ---- Disk locks, against QEMU's own tools ----
start w "${spin[@]}" --disk "path=$disk"
w=$pid
wait_locked
if ! qemu_writes && grep -q 'Failed to get "write" lock' "$tmp/qemu-io.log"; then
	ok "qemu-io cannot write a disk a mabo-vmm writes"
else
	bad "qemu-io beside a mabo-vmm writer: $(cat "$tmp/qemu-io.log")"
fi
if timeout 5 qemu-nbd -f raw -k "$tmp/nbd.sock" "$disk" 2>"$tmp/qemu-nbd.log"; then
	bad "qemu-nbd served a disk a mabo-vmm writes"
elif grep -q 'Failed to get "write" lock' "$tmp/qemu-nbd.log"; then
	ok "qemu-nbd cannot serve a disk a mabo-vmm writes"
else
	bad "qemu-nbd beside a mabo-vmm writer: $(cat "$tmp/qemu-nbd.log")"
fi
if qemu-io -r -f raw -c 'read 0 512' "$disk" >"$tmp/qemu-io-r.log" 2>&1; then
	ok "qemu-io -r (shares writes) reads beside a mabo-vmm writer"
else
	bad "qemu-io -r beside a mabo-vmm writer: $(cat "$tmp/qemu-io-r.log")"
fi
if "$vmm" "${spin[@]}" --disk "path=$disk" --dump-dtb "$tmp/x.dtb" </dev/null 2>"$tmp/dtb.err" &&
	[ -s "$tmp/x.dtb" ]; then
	ok "--dump-dtb beside a writer (it takes no lock)"
else
	bad "--dump-dtb beside a writer: $(cat "$tmp/dtb.err")"
fi
start off "${spin[@]}" --timeout 0.5 --disk "path=$disk,locking=off"
wait "$pid"
st=$?
if [ "$st" -eq 3 ]; then
	ok "locking=off: a second VMM opens the disk (the storage arbitrates)"
else
	bad "locking=off: exit $st: $(cat "$tmp/off.err")"
fi
kill "$w"
wait "$w"
if qemu_writes; then
	ok "the lock goes with the VMM: qemu-io writes afterwards"
else
	bad "after the VMM ended: $(cat "$tmp/qemu-io.log")"
fi
start r1 "${spin[@]}" --disk "path=$disk,readonly=on"
r1=$pid
wait_locked
start r2 "${spin[@]}" --timeout 0.5 --disk "path=$disk,readonly=on"
wait "$pid"
st=$?
[ "$st" -eq 3 ] && ok "two read-only disks share a file" || bad "second reader: exit $st: $(cat "$tmp/r2.err")"
if ! qemu_writes; then
	ok "qemu-io cannot write a disk a mabo-vmm reads (read-only)"
else
	bad "qemu-io wrote under a read-only disk"
fi
kill "$r1"
wait "$r1"
# QEMU first: a qemu-io that writes keeps a mabo-vmm out, and the other way round above.
mkfifo "$tmp/qemu-in"
qemu-io -f raw "$disk" <"$tmp/qemu-in" >/dev/null 2>&1 &
qio=$!
pids+=("$qio")
exec 7>"$tmp/qemu-in"
wait_locked
start w2 "${spin[@]}" --timeout 5 --disk "path=$disk"
wait "$pid"
st=$?
if [ "$st" -eq 1 ] && grep -q "disk '$disk': in use by another process" "$tmp/w2.err"; then
	ok "a mabo-vmm cannot write a disk qemu-io writes (exit 1 naming the file)"
else
	bad "mabo-vmm beside qemu-io: exit $st: $(cat "$tmp/w2.err")"
fi
exec 7>&-
wait "$qio"

# ---- Sockets: 0600 whatever the umask; signals end the VMM and remove them ----
# start0 NAME ARGS...: start under umask 000.
start0() {
	local name=$1
	shift
	bash -c 'umask 000; exec "$@"' umask0 "$vmm" "$@" </dev/null >"$tmp/$name.out" \
		2>"$tmp/$name.err" &
	pid=$!
	pids+=("$pid")
}
start0 sig "${spin[@]}" --api-socket "$tmp/api.sock" --disk "path=$disk"
sig=$pid
wait_file "$tmp/api.sock"
mode=$(stat -c %a "$tmp/api.sock" 2>/dev/null)
[ "$mode" = 600 ] && ok "api socket 0600 under umask 000" || bad "api socket mode $mode"
kill -TERM "$sig"
ends_soon "$sig"
wait "$sig"
st=$?
if [ "$st" -eq 0 ] && [ ! -e "$tmp/api.sock" ] && ! locked; then
	ok "SIGTERM: exit 0, api socket removed, disk unlocked"
else
	bad "SIGTERM: exit $st, $(ls "$tmp/api.sock" 2>&1), $(cat "$tmp/sig.err")"
fi
start0 sig2 "${spin[@]}" --incoming "unix:$tmp/in.sock" --api-socket "$tmp/api2.sock" \
	--disk "path=$disk"
sig=$pid
wait_file "$tmp/in.sock"
wait_file "$tmp/api2.sock"
mode=$(stat -c %a "$tmp/in.sock" 2>/dev/null)
[ "$mode" = 600 ] && ok "incoming socket 0600 under umask 000" || bad "incoming socket mode $mode"
kill -INT "$sig"
ends_soon "$sig"
wait "$sig"
st=$?
if [ "$st" -eq 0 ] && [ ! -e "$tmp/in.sock" ] && [ ! -e "$tmp/api2.sock" ]; then
	ok "SIGINT (no terminal) while waiting for a migration: exit 0, both sockets removed"
else
	bad "SIGINT while incoming: exit $st, $(ls "$tmp"/*.sock 2>&1), $(cat "$tmp/sig2.err")"
fi
# A stale incoming socket (its VMM killed) is replaced.
start stale "${spin[@]}" --incoming "unix:$tmp/in.sock"
wait_file "$tmp/in.sock"
kill -9 "$pid"
wait "$pid" 2>/dev/null
start stale2 "${spin[@]}" --incoming "unix:$tmp/in.sock"
stale=$pid
sleep 0.5
if kill -0 "$stale" 2>/dev/null && [ -S "$tmp/in.sock" ]; then
	ok "a stale incoming socket is replaced"
else
	bad "stale incoming socket: $(cat "$tmp/stale2.err")"
fi
kill "$stale"
wait "$stale"

# ---- Snapshots ----
start snap "${spin[@]}" --api-socket "$tmp/snap.sock" --disk "path=$disk"
snapvm=$pid
wait_file "$tmp/snap.sock"
echo secret >"$tmp/victim"
ln -s "$tmp/victim" "$tmp/link.snap"
# Where a snapshot used to be written before its rename: a planted link must not be followed.
ln -s "$tmp/victim" "$tmp/good.snap.tmp"
mkfifo "$tmp/fifo.snap"
mkdir "$tmp/dir.snap"
for target in "$tmp/link.snap" /dev/null "$tmp/fifo.snap" "$tmp/dir.snap"; do
	err=$(timeout 20 "$mabo" --api-socket "$tmp/snap.sock" snapshot "$target" 2>&1)
	st=$?
	if [ "$st" -ne 0 ] && printf '%s' "$err" | grep -q "exists and is not a regular file"; then
		ok "snapshot onto $target refused"
	else
		bad "snapshot onto $target: exit $st: $err"
	fi
done
[ -L "$tmp/link.snap" ] && [ -p "$tmp/fifo.snap" ] && [ -c /dev/null ] &&
	[ "$(cat "$tmp/victim")" = secret ] && ok "refused targets left as they were" ||
	bad "a refused target changed"
reply=$(python3 - "$tmp/snap.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile()
s.sendall(b'{"cmd":"snapshot","path":"relative.snap"}\n')
print(f.readline().strip())
s.sendall(b'{"cmd":"migrate","uri":"unix:relative.sock"}\n')
print(f.readline().strip())
PY
)
case $(printf '%s' "$reply" | head -1) in
*'"ok":false'*'not absolute'*) ok "relative snapshot path refused: $(printf '%s' "$reply" | head -1)" ;;
*) bad "relative snapshot path: $reply" ;;
esac
case $(printf '%s' "$reply" | tail -1) in
*'"ok":false'*'not absolute'*) ok "relative migration socket refused: $(printf '%s' "$reply" | tail -1)" ;;
*) bad "relative migration socket: $reply" ;;
esac
if "$mabo" --api-socket "$tmp/snap.sock" snapshot "$tmp/good.snap" >/dev/null 2>"$tmp/mabo.err" &&
	[ "$(stat -c %a "$tmp/good.snap")" = 600 ] && [ "$(cat "$tmp/victim")" = secret ] &&
	[ -z "$(find "$tmp" -maxdepth 1 -name '.good.snap.*')" ]; then
	ok "snapshot written 0600, no temporary file left, planted link untouched"
else
	bad "snapshot: $(cat "$tmp/mabo.err"); $(ls -la "$tmp")"
fi
kill "$snapvm"
wait "$snapvm"

# Restore on the same disk file: the restored VM takes the lock.
start restored "${spin[@]}" --restore "$tmp/good.snap" --disk "path=$disk"
rvm=$pid
wait_locked
if kill -0 "$rvm" 2>/dev/null && ! qemu_writes; then
	ok "restored on the same disk file, and holds its lock"
else
	bad "restore on the shared disk: $(cat "$tmp/restored.err")"
fi
kill "$rvm"
wait "$rvm"
# One line, non-zero: bytes after END; a device type with a newline and an escape.
cp "$tmp/good.snap" "$tmp/trail.snap"
printf 'more' >>"$tmp/trail.snap"
python3 - "$tmp/good.snap" "$tmp/evil.snap" <<'PY'
import struct, sys
def crc32c(crc, data):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xffffffff
d = bytearray(open(sys.argv[1], "rb").read())
h = bytes(d[16:24])
n = struct.unpack("<I", h[4:])[0]
p = bytes(d[24:24 + n]).replace(b"virtio-blk", b"vi\n\x1b[31mxy")
assert len(p) == n
d[24:24 + n] = p
d[24 + n:28 + n] = struct.pack("<I", crc32c(crc32c(0, h), p))
open(sys.argv[2], "wb").write(bytes(d))
PY
for case in "trail:bytes after the end of the snapshot" 'evil:a vi\\x0a\\x1b\[31mxy there'; do
	name=${case%%:*}
	want=${case#*:}
	"$vmm" "${spin[@]}" --disk "path=$disk" --restore "$tmp/$name.snap" </dev/null \
		>/dev/null 2>"$tmp/$name.err"
	st=$?
	lines=$(grep -c . "$tmp/$name.err")
	if [ "$st" -eq 1 ] && [ "$lines" -eq 1 ] && grep -q -- "$want" "$tmp/$name.err" &&
		! grep -q $'\x1b' "$tmp/$name.err"; then
		ok "$name snapshot refused: $(cat "$tmp/$name.err")"
	else
		bad "$name snapshot: exit $st, $lines lines: $(cat -v "$tmp/$name.err")"
	fi
done

# ---- Migration on one shared disk file, locks on ----
# migrate SRC_SOCK URI: exit status of build/mabo migrate.
migrate() { timeout 60 "$mabo" --api-socket "$1" migrate "$2" >"$tmp/migrate.out" 2>&1; }
start src "${spin[@]}" --api-socket "$tmp/src.sock" --disk "path=$disk"
src=$pid
wait_file "$tmp/src.sock"
# The destination killed during the migration (stopped first, so that it cannot have
# acknowledged anything): the source keeps the VM and the disk.
start dst1 "${spin[@]}" --incoming "unix:$tmp/dst1.sock" --disk "path=$disk"
dst=$pid
wait_file "$tmp/dst1.sock"
kill -STOP "$dst"
(sleep 1 && kill -9 "$dst") &
if ! migrate "$tmp/src.sock" "unix:$tmp/dst1.sock" && kill -0 "$src" 2>/dev/null &&
	! qemu_writes; then
	ok "destination killed: the source runs on and still holds the disk's lock"
else
	bad "destination killed: $(cat "$tmp/migrate.out")"
fi
wait "$dst" 2>/dev/null
start dst2 "${spin[@]}" --incoming "unix:$tmp/dst2.sock" --api-socket "$tmp/dst2-api.sock" \
	--disk "path=$disk"
dst=$pid
wait_file "$tmp/dst2.sock"
# From the destination socket's directory, by a relative name: build/mabo sends it absolute.
if (cd "$tmp" && migrate "$tmp/src.sock" "unix:dst2.sock"); then
	wait "$src"
	st=$?
	# 4: the VM migrated away (README, "Exit status").
	if [ "$st" -eq 4 ] && kill -0 "$dst" 2>/dev/null && ! qemu_writes; then
		ok "migrated on one shared disk file: the destination runs and holds the lock"
	else
		bad "after the migration: source exit $st, $(cat "$tmp/dst2.err")"
	fi
else
	bad "migration on a shared disk file: $(cat "$tmp/migrate.out"); $(cat "$tmp/dst2.err")"
fi
kill "$dst" 2>/dev/null
wait "$dst" 2>/dev/null

echo "files: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
