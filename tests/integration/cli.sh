#!/usr/bin/env bash
# Bad input to mabo-vmm: each case must give exactly one line on stderr that names the
# offending file or value, a non-zero exit status, and no hang. Needs the default guest in
# build/guest (tools/mabo-image) for the cases built from its kernel.
#   usage: tests/integration/cli.sh [VMM] [GUEST_DIR]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
vmm=${1:-$root/build/mabo-vmm}
guest=${2:-$root/build/guest}
tmp=$(mktemp -d)
qnbd_pid=
trap '[ -n "$qnbd_pid" ] && kill "$qnbd_pid" 2>/dev/null; rm -rf "$tmp"' EXIT

pass=0 fail=0
# check NAME EXPECTED_STATUS PATTERN -- ARGS...: PATTERN must match the single stderr line.
check() {
	local name=$1 want=$2 pattern=$3
	shift 4
	local err status
	err=$(timeout 20 ${as_user:+runuser -u "$as_user" --} "$vmm" "$@" </dev/null 2>&1 >/dev/null)
	status=$?
	local lines
	lines=$(printf '%s\n' "$err" | grep -c .)
	if [ "$status" -eq "$want" ] && [ "$lines" -eq 1 ] && printf '%s' "$err" | grep -q -- "$pattern"; then
		pass=$((pass + 1))
		echo "ok: $name"
	else
		fail=$((fail + 1))
		echo "FAILED: $name: status $status (want $want), $lines line(s): $err"
	fi
}

image=$guest/Image
fw=$guest/fw_dynamic.bin
head -c 100 "$image" >"$tmp/short-Image"
: >"$tmp/empty"
printf '\177ELF\002\001\001' >"$tmp/short.elf"
head -c 64 /bin/ls >"$tmp/x86-header.elf"
head -c 3000 "$fw" >"$tmp/short-fw.bin"

check "missing kernel" 1 "kernel '/nonexistent'" -- --kernel /nonexistent
check "empty kernel" 1 "kernel '$tmp/empty'" -- --kernel "$tmp/empty" --firmware "$fw"
check "truncated kernel Image" 1 "kernel '$tmp/short-Image'" -- --kernel "$tmp/short-Image" --firmware "$fw"
check "x86 ELF as Image" 1 "not a RISC-V kernel Image" -- --kernel /bin/ls --firmware "$fw"
check "x86 ELF bare-metal" 1 "expected RISC-V" -- --kernel /bin/ls --firmware none
check "truncated ELF" 1 "kernel '$tmp/short.elf'" -- --kernel "$tmp/short.elf" --firmware none
check "missing firmware" 1 "firmware '/nonexistent'" -- --kernel "$image" --firmware /nonexistent
check "empty firmware" 1 "firmware '$tmp/empty'" -- --kernel "$image" --firmware "$tmp/empty"
check "missing initramfs" 1 "initramfs '/nonexistent'" -- --kernel "$image" --firmware "$fw" --initramfs /nonexistent
check "initramfs too big" 1 "initramfs '$image'.*more memory" -- --kernel "$image" --firmware "$fw" --initramfs "$image" --memory 40M
check "kernel too big for RAM" 1 "kernel '$image'.*more memory" -- --kernel "$image" --firmware "$fw" --memory 16M
check "malformed memory size" 2 "memory '12Q'" -- --kernel "$image" --memory 12Q
check "zero memory size" 2 "memory '0'" -- --kernel "$image" --memory 0
check "negative memory size" 2 "memory '-5M'" -- --kernel "$image" --memory -5M
check "zero vCPUs" 2 "cpus '0'" -- --kernel "$image" --cpus 0
check "absurd vCPUs" 2 "cpus '100000'" -- --kernel "$image" --cpus 100000
check "vCPUs not a number" 2 "cpus 'two'" -- --kernel "$image" --cpus two
check "code cache not a size" 2 "code-cache 'big'" -- --kernel "$image" --code-cache big
check "code cache too small" 2 "code-cache '64K'.*1M to 1G" -- --kernel "$image" --code-cache 64K
check "code cache too big" 2 "code-cache '2G'.*1M to 1G" -- --kernel "$image" --code-cache 2G
check "bad timeout" 2 "timeout 'soon'" -- --kernel "$image" --timeout soon
check "unknown option" 2 "unknown option '--bogus'" -- --bogus
check "option without value" 2 "'--kernel' needs a value" -- --kernel
check "no kernel" 2 "no kernel given" -- --memory 512M
check "bad console" 2 "console 'hvc'.*'serial' or 'virtio'" -- --kernel "$image" --console hvc
check "console twice" 2 "console 'serial'.*given already" -- --kernel "$image" --console virtio --console serial
check "rng twice" 2 "rng: given twice" -- --kernel "$image" --rng --rng

# Disks: bad --disk syntax is a usage error (2); a file that cannot be a disk fails (1)
# before the guest starts.
truncate -s 1M "$tmp/disk.raw"
printf 'abc' >"$tmp/odd.raw"
mkdir "$tmp/dir"
check "disk without path" 2 "disk 'readonly=on': no path=FILE" -- --kernel "$image" --disk readonly=on
check "disk unknown key" 2 "disk 'path=$tmp/disk.raw,cache=none': unknown key 'cache'" -- --kernel "$image" --disk "path=$tmp/disk.raw,cache=none"
check "disk bad readonly" 2 "readonly must be 'on' or 'off'" -- --kernel "$image" --disk "path=$tmp/disk.raw,readonly=maybe"
check "disk not key=value" 2 "'$tmp/disk.raw' is not key=value" -- --kernel "$image" --disk "$tmp/disk.raw"
check "disk empty path" 2 "path needs a value" -- --kernel "$image" --disk path=
check "disk id too long" 2 "id is longer than 20" -- --kernel "$image" --disk "path=$tmp/disk.raw,id=abcdefghijklmnopqrstuvwxyz"
check "too many disks" 2 "disk: too many devices" -- --kernel "$image" $(for i in 1 2 3 4 5 6 7 8 9; do echo --disk "path=$tmp/disk.raw,readonly=on"; done)
check "missing disk" 1 "disk '/nonexistent': No such file" -- --kernel "$image" --firmware "$fw" --disk path=/nonexistent
check "disk is a directory" 1 "disk '$tmp/dir': not a regular file or block device" -- --kernel "$image" --firmware "$fw" --disk "path=$tmp/dir"
check "disk is a character device" 1 "disk '/dev/null': not a regular file or block device" -- --kernel "$image" --firmware "$fw" --disk path=/dev/null
check "disk unknown scheme" 1 "disk 'nbdx://host/export': unknown URI scheme 'nbdx'" -- --kernel "$image" --firmware "$fw" --disk path=nbdx://host/export
check "disk size not sectors" 1 "disk '$tmp/odd.raw': size 3 bytes is not a multiple of 512" -- --kernel "$image" --firmware "$fw" --disk "path=$tmp/odd.raw"
check "disk bad locking" 2 "locking must be 'on' or 'off'" -- --kernel "$image" --disk "path=$tmp/disk.raw,locking=maybe"
check "zero-byte disk" 1 "disk '$tmp/empty': empty (0 bytes)" -- --kernel "$image" --firmware "$fw" --disk "path=$tmp/empty"

# FIFOs: refused before anything is read (opening one must not wait for a writer, which
# would hang until the timeout).
mkfifo "$tmp/fifo"
check "kernel is a FIFO" 1 "kernel '$tmp/fifo': not a regular file" -- --kernel "$tmp/fifo" --firmware "$fw"
check "bare-metal kernel is a FIFO" 1 "kernel '$tmp/fifo': not a regular file" -- --kernel "$tmp/fifo" --firmware none
check "initramfs is a FIFO" 1 "initramfs '$tmp/fifo': not a regular file" -- --kernel "$image" --firmware "$fw" --initramfs "$tmp/fifo"
check "firmware is a FIFO" 1 "firmware '$tmp/fifo': not a regular file" -- --kernel "$image" --firmware "$tmp/fifo"
check "disk is a FIFO" 1 "disk '$tmp/fifo': not a regular file or block device" -- --kernel "$image" --firmware "$fw" --disk "path=$tmp/fifo"
check "read-only disk is a FIFO" 1 "disk '$tmp/fifo': not a regular file or block device" -- --kernel "$image" --firmware "$fw" --disk "path=$tmp/fifo,readonly=on"

# --incoming unix:PATH over a file that is not a socket: an error, and the file stays.
echo keep >"$tmp/regular"
check "incoming over a regular file" 1 "incoming 'unix:$tmp/regular': exists and is not a socket (not removed)" -- --kernel "$image" --incoming "unix:$tmp/regular"
if [ "$(cat "$tmp/regular" 2>/dev/null)" = keep ]; then
	pass=$((pass + 1))
	echo "ok: incoming over a regular file: the file is kept"
else
	fail=$((fail + 1))
	echo "FAILED: incoming over a regular file: the file was removed or changed"
fi

# A disk another process writes: a second writer is refused naming the file, whether the
# first is a mabo-vmm or QEMU's qemu-nbd (same locks as QEMU).
python3 - "$tmp/spin-disk.elf" <<'PY'
import struct, sys
base, code_off = 0x80000000, 120
ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
    "<HHIQQQIHHHHHH", 2, 243, 1, base + code_off, 64, 0, 0, 64, 56, 1, 0, 0, 0)
phdr = struct.pack("<IIQQQQQQ", 1, 7, 0, base, base, code_off + 4, code_off + 4, 0x1000)
open(sys.argv[1], "wb").write(ehdr + phdr + struct.pack("<I", 0x6f))
PY
truncate -s 1M "$tmp/shared.raw"
"$vmm" --kernel "$tmp/spin-disk.elf" --firmware none --memory 2M --timeout 30 \
	--disk "path=$tmp/shared.raw" </dev/null >/dev/null 2>&1 &
holder=$!
ino=$(stat -c %i "$tmp/shared.raw")
for _ in $(seq 50); do grep -q ":$ino " /proc/locks && break; sleep 0.1; done
check "second writer (a mabo-vmm holds the disk)" 1 "disk '$tmp/shared.raw': in use by another process" -- --kernel "$image" --firmware "$fw" --disk "path=$tmp/shared.raw"
check "reader beside a writer" 1 "disk '$tmp/shared.raw': in use by another process" -- --kernel "$image" --firmware "$fw" --disk "path=$tmp/shared.raw,readonly=on"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
if qemu-nbd --fork --pid-file "$tmp/qemu-nbd-w.pid" -k "$tmp/nbd-w.sock" -f raw \
	"$tmp/shared.raw" 2>"$tmp/qemu-nbd-w.log"; then
	qnbd_pid=$(cat "$tmp/qemu-nbd-w.pid")
	check "second writer (qemu-nbd holds the disk)" 1 "disk '$tmp/shared.raw': in use by another process" -- --kernel "$image" --firmware "$fw" --disk "path=$tmp/shared.raw"
	kill "$qnbd_pid"
	qnbd_pid=
else
	fail=$((fail + 1))
	echo "FAILED: second writer: qemu-nbd did not start: $(cat "$tmp/qemu-nbd-w.log")"
fi

# Networks: bad --net syntax is a usage error (2); a host port already in use or a TAP
# device that cannot be had fails (1) before the guest starts.
check "net unknown mode" 2 "net 'bridge': must start with 'user' or 'tap=IFNAME'" -- --kernel "$image" --net bridge
check "net bad mac" 2 "net 'user,mac=52:54:00:12:34': mac '52:54:00:12:34' is not like" -- --kernel "$image" --net user,mac=52:54:00:12:34
check "net multicast mac" 2 "mac '01:00:5e:00:00:01' is a multicast address" -- --kernel "$image" --net user,mac=01:00:5e:00:00:01
check "net mac twice" 2 "mac given twice" -- --kernel "$image" --net user,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02
check "net unknown option" 2 "net 'user,restrict=on': unknown option 'restrict=on'" -- --kernel "$image" --net user,restrict=on
check "net bad hostfwd" 2 "hostfwd 'tcp:8080:80' is not like" -- --kernel "$image" --net user,hostfwd=tcp:8080:80
check "net hostfwd port 0" 2 "hostfwd 'tcp:0-:80' is not like" -- --kernel "$image" --net user,hostfwd=tcp:0-:80
check "net hostfwd port too big" 2 "hostfwd 'tcp:8080-:65536' is not like" -- --kernel "$image" --net user,hostfwd=tcp:8080-:65536
check "net hostfwd bad address" 2 "hostfwd 'tcp:300.0.0.1:8080-:80' is not like" -- --kernel "$image" --net user,hostfwd=tcp:300.0.0.1:8080-:80
check "net hostfwd bad protocol" 2 "hostfwd 'sctp:8080-:80' is not like" -- --kernel "$image" --net user,hostfwd=sctp:8080-:80
check "net hostfwd on tap" 2 "hostfwd is for 'user' networking only" -- --kernel "$image" --net tap=tap0,hostfwd=tcp:8080-:80
check "net tap name too long" 2 "TAP interface name must be 1 to 15" -- --kernel "$image" --net tap=abcdefghijklmnopq
check "net tap without name" 2 "TAP interface name must be 1 to 15" -- --kernel "$image" --net tap=
# A port some other process listens on.
python3 -c 'import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
time.sleep(60)' "$tmp/port" &
holder=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
busy=$(cat "$tmp/port" 2>/dev/null)
check "net hostfwd port in use" 1 "hostfwd 'tcp:127.0.0.1:$busy-:80': cannot listen on 127.0.0.1 port $busy: Address already in use" -- --kernel "$image" --firmware "$fw" --net "user,hostfwd=tcp:127.0.0.1:$busy-:80"
check "net hostfwd guest address off the network" 1 "hostfwd 'tcp:127.0.0.1:$busy-192.168.1.5:80': the guest address must be on 10.0.2.0/24" -- --kernel "$image" --firmware "$fw" --net "user,hostfwd=tcp:127.0.0.1:$busy-192.168.1.5:80"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
if [ "$(id -u)" -eq 0 ] && [ -c /dev/net/tun ]; then
	check "net tap on a non-TAP interface" 1 "net tap 'lo': the interface is not a TAP device" -- --kernel "$image" --firmware "$fw" --net tap=lo
else
	echo "SKIP: net tap on a non-TAP interface: needs root and /dev/net/tun"
fi

# File permissions do not stop root: as root, run these cases as user nobody.
# NBD disks: a server that cannot be reached, an export it does not have, a URI libnbd
# cannot parse: one line naming the disk, before the guest starts.
check "nbd bad reconnect-timeout" 2 "reconnect-timeout must be 0 to" -- --kernel "$image" --disk "path=nbd://localhost/x,reconnect-timeout=soon"
check "nbd refused" 1 "disk 'nbd://127.0.0.1:1/x': cannot connect to the NBD server: .*refused" -- --kernel "$image" --firmware "$fw" --disk path=nbd://127.0.0.1:1/x
check "nbd no socket" 1 "disk 'nbd+unix:///x?socket=$tmp/none.sock': cannot connect to the NBD server: .*No such file" -- --kernel "$image" --firmware "$fw" --disk "path=nbd+unix:///x?socket=$tmp/none.sock"
check "nbd URI without socket" 1 "disk 'nbd+unix:///x': cannot connect to the NBD server: .*socket" -- --kernel "$image" --firmware "$fw" --disk "path=nbd+unix:///x"
check "nbd unparsable URI" 1 "disk 'nbd://\[nowhere/x': cannot connect to the NBD server: unable to parse URI" -- --kernel "$image" --firmware "$fw" --disk "path=nbd://[nowhere/x"
if qemu-nbd --fork --persistent --pid-file "$tmp/qemu-nbd.pid" -k "$tmp/nbd.sock" -x exp1 \
	-f raw "$tmp/disk.raw" 2>"$tmp/qemu-nbd.log"; then
	qnbd_pid=$(cat "$tmp/qemu-nbd.pid")
	check "nbd missing export" 1 "disk 'nbd+unix:///exp2?socket=$tmp/nbd.sock': cannot connect to the NBD server: .*no export named 'exp2'" -- --kernel "$image" --firmware "$fw" --disk "path=nbd+unix:///exp2?socket=$tmp/nbd.sock"
	kill "$qnbd_pid"
	qnbd_pid=
else
	fail=$((fail + 1))
	echo "FAILED: nbd missing export: qemu-nbd did not start: $(cat "$tmp/qemu-nbd.log")"
fi

# File permissions do not stop root: as root, run these two cases as user nobody.
as_user=
if [ "$(id -u)" -eq 0 ]; then
	as_user=nobody
	chmod 755 "$tmp"
fi
if [ -z "$as_user" ] || { command -v runuser >/dev/null && id nobody >/dev/null 2>&1; }; then
	# Copies in $tmp, so that nobody can reach them wherever the checkout lives.
	cp "$vmm" "$tmp/vmm" && cp "$image" "$tmp/Image" && cp "$fw" "$tmp/fw.bin"
	chmod 755 "$tmp/vmm" && chmod 644 "$tmp/Image" "$tmp/fw.bin"
	saved_vmm=$vmm
	vmm=$tmp/vmm
	cp "$tmp/disk.raw" "$tmp/locked.raw"
	chmod 000 "$tmp/locked.raw"
	check "unreadable disk" 1 "disk '$tmp/locked.raw': cannot open: Permission denied" -- --kernel "$tmp/Image" --firmware "$tmp/fw.bin" --disk "path=$tmp/locked.raw,readonly=on"
	chmod 444 "$tmp/locked.raw"
	check "read-only file as writable disk" 1 "disk '$tmp/locked.raw': cannot open for writing.*readonly=on" -- --kernel "$tmp/Image" --firmware "$tmp/fw.bin" --disk "path=$tmp/locked.raw"
	if [ -n "$as_user" ] && [ -c /dev/net/tun ]; then
		# Unprivileged: no TAP device to attach to, and no right to make one.
		check "net tap without permission" 1 "net tap 'mabo-none0': .*\(no permission\|Permission denied\)" -- --kernel "$tmp/Image" --firmware "$tmp/fw.bin" --net tap=mabo-none0
	elif [ -n "$as_user" ]; then
		echo "SKIP: net tap without permission: no /dev/net/tun"
	else
		echo "SKIP: net tap without permission: runs only as root (as user nobody)"
	fi
	vmm=$saved_vmm
else
	fail=$((fail + 1))
	echo "FAILED: unreadable disk cases: running as root without runuser or user nobody"
fi
as_user=

# A bare-metal program that spins forever ("j .") must end with the timeout status.
python3 - "$tmp/spin.elf" <<'PY'
import struct, sys
base, code_off = 0x80000000, 120
ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
    "<HHIQQQIHHHHHH", 2, 243, 1, base + code_off, 64, 0, 0, 64, 56, 1, 0, 0, 0)
phdr = struct.pack("<IIQQQQQQ", 1, 7, 0, base, base, code_off + 4, code_off + 4, 0x1000)
open(sys.argv[1], "wb").write(ehdr + phdr + struct.pack("<I", 0x6f))
PY
check "timeout" 3 "timeout" -- --kernel "$tmp/spin.elf" --firmware none --timeout 0.5 --memory 2M

# --timeout bounds every phase, not only the guest's run: each case ends with status 3, one
# line naming the phase, within the timeout (plus a margin), and leaves no socket behind.
# check_timeout NAME PATTERN SECONDS [ALSO_OK_STATUS ALSO_OK_PATTERN] -- ARGS...
check_timeout() {
	local name=$1 pattern=$2 secs=$3 alt_status= alt_pattern=
	shift 3
	if [ "$1" != -- ]; then
		alt_status=$1 alt_pattern=$2
		shift 2
	fi
	shift
	local t0 err status ms lines
	t0=$(date +%s%N)
	err=$(timeout 20 "$vmm" "$@" --timeout "$secs" </dev/null 2>&1 >/dev/null)
	status=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	lines=$(printf '%s\n' "$err" | grep -c .)
	local limit_ms
	limit_ms=$(python3 -c "print(int($secs * 1000 + 1500))")
	if [ "$lines" -eq 1 ] && [ "$ms" -le "$limit_ms" ] &&
		{ { [ "$status" -eq 3 ] && printf '%s' "$err" | grep -q -- "$pattern"; } ||
			{ [ -n "$alt_status" ] && [ "$status" -eq "$alt_status" ] &&
				printf '%s' "$err" | grep -q -- "$alt_pattern"; }; }; then
		pass=$((pass + 1))
		echo "ok: $name ($ms ms)"
	else
		fail=$((fail + 1))
		echo "FAILED: $name: status $status (want 3), $lines line(s) in $ms ms (limit $limit_ms): $err"
	fi
}

# No source ever connects: the socket goes with the process.
check_timeout "timeout waiting for an incoming migration" \
	"mabo-vmm: error: timeout: still waiting for an incoming migration after 1\.[0-9] s" 1 \
	-- --incoming "unix:$tmp/in.sock" --api-socket "$tmp/api.sock"
if [ -e "$tmp/in.sock" ] || [ -e "$tmp/api.sock" ]; then
	fail=$((fail + 1))
	echo "FAILED: sockets left after the timeout: $(ls "$tmp"/*.sock)"
else
	pass=$((pass + 1))
	echo "ok: no socket left after the timeout"
fi
# A source that sends the stream's header and the start of a record, then nothing (the
# per-read timeout of the migration, 10 s, is longer than --timeout).
python3 - "$tmp/stall.sock" <<'PY' &
import os, socket, struct, sys, time
path = sys.argv[1]
for _ in range(100):
    if os.path.exists(path):
        break
    time.sleep(0.05)
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall(b"MABOSTRM" + struct.pack("<II", 3, 2) + struct.pack("<BBHI", 19, 0, 1, 8) + b"\0\0")
time.sleep(10)
PY
stall_pid=$!
check_timeout "timeout with a stalled migration stream" \
	"mabo-vmm: error: timeout: still receiving the migration after 2\.[0-9] s" 2 \
	-- --incoming "unix:$tmp/stall.sock"
kill "$stall_pid" 2>/dev/null
wait "$stall_pid" 2>/dev/null
# A snapshot read from a pipe whose writer stops after the header and part of a record.
mkfifo "$tmp/snap.fifo"
python3 - "$tmp/snap.fifo" <<'PY' &
import struct, sys, time
f = open(sys.argv[1], "wb", buffering=0)
f.write(b"MABOSTRM" + struct.pack("<II", 3, 1) + struct.pack("<BBHI", 1, 0, 1, 100) + b"\0" * 10)
time.sleep(10)
PY
fifo_pid=$!
check_timeout "timeout with a stalled snapshot" \
	"mabo-vmm: error: timeout: still reading the snapshot after 1\.[0-9] s" 1 \
	-- --restore "$tmp/snap.fifo"
kill "$fifo_pid" 2>/dev/null
wait "$fifo_pid" 2>/dev/null
# A snapshot pipe nobody ever writes to: open() itself blocks.
mkfifo "$tmp/nowriter.fifo"
check_timeout "timeout opening a snapshot pipe without a writer" \
	"mabo-vmm: error: timeout: still reading the snapshot after 1\.[0-9] s" 1 \
	-- --restore "$tmp/nowriter.fifo"
# A kernel path that blocks (a pipe without a writer): refused before it is read, or ended
# by the timeout; never a hang.
mkfifo "$tmp/kernel.fifo"
check_timeout "kernel pipe without a writer" \
	"mabo-vmm: error: timeout: still loading the kernel after 1\.[0-9] s" 1 \
	1 "kernel '$tmp/kernel.fifo'" -- --kernel "$tmp/kernel.fifo" --firmware "$fw"
# A regular kernel file whose open() blocks, as on a hung network file system: a fanotify
# permission event (root only) that its listener never answers.
cp "$image" "$tmp/held-Image"
python3 - "$tmp/held-Image" "$tmp/held.ready" <<'PY' &
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]
fd = libc.fanotify_init(0x4, os.O_RDONLY)  # FAN_CLASS_CONTENT
if fd < 0 or libc.fanotify_mark(fd, 1, 0x10000, -100, sys.argv[1].encode()) < 0:
    open(sys.argv[2], "w").write("unsupported: " + os.strerror(ctypes.get_errno()))
    sys.exit(0)
open(sys.argv[2], "w").write("ok")  # FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD
time.sleep(20)
PY
held_pid=$!
for _ in $(seq 100); do [ -s "$tmp/held.ready" ] && break; sleep 0.05; done
if [ "$(cat "$tmp/held.ready" 2>/dev/null)" = ok ]; then
	check_timeout "kernel whose open blocks" \
		"mabo-vmm: error: timeout: still loading the kernel after 1\.[0-9] s" 1 \
		-- --kernel "$tmp/held-Image" --firmware "$fw"
else
	echo "skipped: kernel whose open blocks (fanotify: $(cat "$tmp/held.ready" 2>/dev/null))"
fi
kill "$held_pid" 2>/dev/null
wait "$held_pid" 2>/dev/null
# 3 GiB of initramfs (sparse) take seconds to read into guest memory; the firmware and
# kernel before it take a small part of the 1.5 s.
truncate -s 3G "$tmp/big.cpio"
check_timeout "timeout loading a large initramfs" \
	"mabo-vmm: error: timeout: still loading the initramfs after 1\.[0-9] s" 1.5 \
	-- --kernel "$image" --firmware "$fw" --initramfs "$tmp/big.cpio" --memory 4G
rm -f "$tmp/big.cpio"

# --incoming ports are checked like migrate's (1-65535).
check "incoming port 0" 2 "incoming 'tcp:127.0.0.1:0': expected tcp:ADDR:PORT (port 1-65535)" -- --incoming tcp:127.0.0.1:0
check "incoming port too big" 2 "incoming 'tcp:127.0.0.1:65536': expected tcp:ADDR:PORT" -- --incoming tcp:127.0.0.1:65536
check "incoming port not a number" 2 "incoming 'tcp:127.0.0.1:http': expected tcp:ADDR:PORT" -- --incoming tcp:127.0.0.1:http
check "incoming without port" 2 "incoming 'tcp:localhost': expected tcp:ADDR:PORT" -- --incoming tcp:localhost

# --config FILE: its fields go through the flags' checks; a bad file is one line naming the
# file and the field (status 2, like a bad flag).
cfg() { printf '%s\n' "$2" >"$tmp/$1.json"; }
cfg syntax '{"kernel": "/x",'
cfg notobj '["kernel"]'
cfg unknown '{"kernel": "/x", "kernal": "/y"}'
cfg dup '{"cpus": 1, "cpus": 2}'
cfg cpustype '{"kernel": "/x", "cpus": "two"}'
cfg cpus0 '{"kernel": "/x", "cpus": 0}'
cfg memory '{"kernel": "/x", "memory": "12Q"}'
cfg disktype '{"kernel": "/x", "disks": {"path": "/x"}}'
cfg diskfield '{"kernel": "/x", "disks": [{"path": "/x", "read_only": true}]}'
cfg diskro '{"kernel": "/x", "disks": [{"path": "/x", "readonly": "on"}]}'
cfg diskcomma '{"kernel": "/x", "disks": [{"path": "/x,readonly=on"}]}'
cfg diskrt '{"kernel": "/x", "disks": [{"path": "/x", "reconnect_timeout": 100000}]}'
cfg netmode '{"kernel": "/x", "nets": [{"mac": "52:54:00:00:00:01"}]}'
cfg netfwd '{"kernel": "/x", "nets": [{"mode": "user", "hostfwd": ["tcp::0-:22"]}]}'
cfg nokernel '{"cpus": 1}'
cfg tcpin '{"incoming": "tcp:127.0.0.1:4444"}'
cfg missing "{\"kernel\": \"/nonexistent\", \"firmware\": \"$fw\"}"
check "config: missing file" 2 "config '/nonexistent': No such file" -- --config /nonexistent
check "config: a directory" 2 "config '$tmp': not a regular file" -- --config "$tmp"
check "config: JSON syntax" 2 "config '$tmp/syntax.json': line 2" -- --config "$tmp/syntax.json"
check "config: not an object" 2 "config '$tmp/notobj.json': not a JSON object" -- --config "$tmp/notobj.json"
check "config: unknown field" 2 "config '$tmp/unknown.json': unknown field 'kernal'" -- --config "$tmp/unknown.json"
check "config: duplicate field" 2 "config '$tmp/dup.json': .*duplicate object key" -- --config "$tmp/dup.json"
check "config: wrong type" 2 "config '$tmp/cpustype.json': field 'cpus' must be an integer" -- --config "$tmp/cpustype.json"
check "config: zero vCPUs (the flag's check)" 2 "cpus '0': must be a number from 1" -- --config "$tmp/cpus0.json"
check "config: malformed memory (the flag's check)" 2 "memory '12Q'" -- --config "$tmp/memory.json"
check "config: disks not an array" 2 "field 'disks' must be an array" -- --config "$tmp/disktype.json"
check "config: unknown disk field" 2 "unknown field 'disks\[0\]\.read_only'" -- --config "$tmp/diskfield.json"
check "config: disk readonly not a boolean" 2 "field 'disks\[0\]\.readonly' must be true or false" -- --config "$tmp/diskro.json"
check "config: a comma in a disk path" 2 "field 'disks\[0\]\.path' contains a ','" -- --config "$tmp/diskcomma.json"
check "config: disk reconnect timeout (the flag's check)" 2 "reconnect-timeout must be 0 to" -- --config "$tmp/diskrt.json"
check "config: NIC without mode" 2 "field 'nets\[0\]\.mode' is missing" -- --config "$tmp/netmode.json"
check "config: bad hostfwd (the flag's check)" 2 "hostfwd 'tcp::0-:22' is not like" -- --config "$tmp/netfwd.json"
check "config: no kernel" 2 "no kernel given" -- --config "$tmp/nokernel.json"
check "config: TCP incoming without credentials" 2 "TCP migration needs --migration-key" -- --config "$tmp/tcpin.json"
check "config: given twice" 2 "config: given twice" -- --config "$tmp/cpus0.json" --config "$tmp/dup.json"
check "config: the file's kernel is opened" 1 "kernel '/nonexistent'" -- --config "$tmp/missing.json"
check "config: a flag overrides the file" 1 "kernel '$tmp/empty'" -- --config "$tmp/missing.json" --kernel "$tmp/empty"

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
