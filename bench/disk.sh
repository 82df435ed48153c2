#!/usr/bin/env bash
# bench/disk.sh: disk throughput inside the guest, on mabo-vmm and on QEMU (TCG), on the same
# virtio-blk disk backends: a raw file, and an NBD server (qemu-nbd on a Unix socket).
#
# The guest runs bench/diskio.c (built static with Debian's riscv64-linux-gnu-gcc and put
# into a derived initramfs, as bench/coremark.sh does) through "mabo.run=": sequential write
# and read of MIB MiB in 1 MiB requests, then 4 KiB random reads and writes, all with O_DIRECT
# on /dev/vda at queue depth 1, timed with the guest's clock. Runs alternate (mabo, qemu, mabo,
# qemu, ...); compare figures from one invocation only. See bench/README.md.
set -euo pipefail

PROG=disk.sh
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	cat <<EOF
Usage: bench/disk.sh [RUNS] [options]

Measure disk throughput from inside the default guest on mabo-vmm and on QEMU, alternating,
RUNS times each (default 3), on a raw file and on NBD; print each run, then per test the
medians and the ratio mabo / qemu (> 1 means mabo-vmm is faster).

  --mib N        MiB written and read sequentially (default 128; the disk is N + 16 MiB)
  --ops N        4 KiB random reads, and as many writes (default 20000)
  --legs LIST    which backends, comma-separated: file, nbd (default file,nbd); the NBD leg
                 is skipped, saying so, when mabo-vmm has no NBD backend
  --memory SIZE  guest RAM for both (default 512M)
  --timeout S    end a run that has not finished after S seconds (default 600)
  --vmm FILE     our VMM (default build/mabo-vmm)
  --guest DIR    the guest (default build/guest)
  --qemu FILE    QEMU (default qemu-system-riscv64 on PATH)
  --logs DIR     keep the build log and every run's console log in DIR
EOF
}

bench_defaults 3 600
MIB=128
OPS=20000
LEGS=file,nbd
# script_option: the options of this script alone (see parse_options in common.sh).
script_option() {
	case $1 in
	--mib) MIB=${2:?--mib needs a number} ;;
	--ops) OPS=${2:?--ops needs a number} ;;
	--legs) LEGS=${2:?--legs needs a list} ;;
	*) return 1 ;;
	esac
}
parse_options "$@"
is_uint "$MIB" && ((${#MIB} <= 6 && 10#$MIB >= 1)) || die "--mib must be a whole number >= 1, not '$MIB'"
is_uint "$OPS" && ((${#OPS} <= 9 && 10#$OPS >= 1)) || die "--ops must be a whole number >= 1, not '$OPS'"
MIB=$((10#$MIB))
OPS=$((10#$OPS))
WANT_FILE=0 WANT_NBD=0
IFS=, read -r -a leg_list <<<"$LEGS"
for leg in "${leg_list[@]}"; do
	case $leg in
	file) WANT_FILE=1 ;;
	nbd) WANT_NBD=1 ;;
	*) die "--legs: unknown backend '$leg' (file, nbd)" ;;
	esac
done
((WANT_FILE + WANT_NBD)) || die "--legs names no backend"

need_cmd python3 python3
need_cross_cc
need_cmd cpio cpio
need_cmd gzip gzip
need_qemu
if ((WANT_NBD)); then
	need_cmd qemu-nbd qemu-utils
fi

start_run
NBD_PID=
stop_nbd() {
	if [[ -n $NBD_PID ]]; then
		kill "$NBD_PID" 2>/dev/null || true
		wait "$NBD_PID" 2>/dev/null || true
		NBD_PID=
	fi
}
trap 'stop_nbd; rm -rf "$WORK"' EXIT

# --- the guest program and the derived initramfs ----------------------------------------
CC=riscv64-linux-gnu-gcc
BUILD_LOG=$LOGS/diskio-build.log
mkdir -p "$WORK/root/bin"
if ! "$CC" -O2 -static -Wall -Wextra -o "$WORK/root/bin/diskio" "$BENCH_DIR/diskio.c" \
	>"$BUILD_LOG" 2>&1; then
	tail -n 20 "$BUILD_LOG" >&2
	die "building bench/diskio.c with $CC failed (log above)"
fi
cat >"$WORK/root/bin/disk-bench" <<EOF
#!/bin/sh
exec /bin/diskio /dev/vda $MIB $OPS
EOF
bench_initrd diskio bin/diskio bin/disk-bench
CMDLINE="console=ttyS0 mabo.run=/bin/disk-bench"
DONE_MARK="mabo-init: /bin/disk-bench exited with status"

# --- the disks ------------------------------------------------------------------------------
# Written in full before the first run, so that no run pays for allocating blocks on the host.
DISK_MIB=$((MIB + 16))
make_disk() {
	dd if=/dev/zero of="$1" bs=1M count="$DISK_MIB" conv=fsync status=none ||
		die "cannot write the $DISK_MIB MiB disk file $1"
}

# mabo-vmm takes nbd URIs once its NBD backend exists: ask it, without starting a guest.
mabo_has_nbd() {
	local err
	err=$("$S_VMM" --kernel "$S_IMAGE" --firmware "$S_FW" \
		--disk "path=nbd+unix:///?socket=$WORK/no-such.sock" --dump-dtb "$WORK/probe.dtb" \
		</dev/null 2>&1 >/dev/null) || true
	! grep -qiE "unknown URI scheme|unknown option|unknown argument" <<<"$err"
}

NBD_SOCK=$WORK/nbd.sock
start_nbd() {
	# qemu-nbd serves the raw file to one client at a time, for as many connections as the
	# runs make (-t); both VMMs see the same server.
	qemu-nbd -f raw -t -k "$NBD_SOCK" --cache=writeback "$WORK/disk-nbd.raw" \
		>"$LOGS/qemu-nbd.log" 2>&1 &
	NBD_PID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -S $NBD_SOCK ]] && return 0
		kill -0 "$NBD_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$LOGS/qemu-nbd.log" >&2
	die "qemu-nbd did not start serving on $NBD_SOCK (log above)"
}

echo "== disk benchmark: $RUNS runs each, $MIB MiB sequential, $OPS random 4 KiB reads and writes, O_DIRECT, queue depth 1, 1 vCPU, $MEMORY =="
print_context "$VMM" "$GUEST" "$QEMU"
echo "guest:   /bin/diskio /dev/vda $MIB $OPS (bench/diskio.c, $("$CC" --version | head -n1), -O2 -static)"
echo "kernel:  \"$CMDLINE\"; initramfs: the guest's, plus bench-initramfs's /bin/diskio"
echo "(MB/s = 10^6 bytes per second of guest time; IOPS = requests per second; > 1 ratios mean mabo-vmm is faster)"

# cmd_for VM LEG: sets CMD to the VMM's command for one run.
cmd_for() {
	local vm=$1 leg=$2
	if [[ $vm == mabo ]]; then
		CMD=("$S_VMM" --kernel "$S_IMAGE" --initramfs "$BENCH_INITRD" --firmware "$S_FW"
			--cmdline "$CMDLINE" --memory "$MEMORY" --cpus 1)
		if [[ $leg == file ]]; then
			CMD+=(--disk "path=$WORK/disk-file.raw")
		else
			CMD+=(--disk "path=nbd+unix:///?socket=$NBD_SOCK")
		fi
	else
		local drive
		if [[ $leg == file ]]; then
			drive="file=$WORK/disk-file.raw,format=raw"
		else
			drive="file=nbd+unix:///?socket=$NBD_SOCK,format=raw"
		fi
		CMD=("$QEMU" -M virt -smp 1 -m "$MEMORY" -nographic -bios "$S_FW" -kernel "$S_IMAGE"
			-initrd "$BENCH_INITRD" -append "$CMDLINE"
			-drive "$drive,if=none,id=d0,cache=writeback" -device virtio-blk-device,drive=d0)
	fi
}

# diskio_value LOG TEST KEY: KEY=VALUE of diskio's line for TEST
diskio_value() {
	tr -d '\r' <"$1" | sed -n "s/^diskio: $2 .* $3=\([0-9.]*\).*/\1/p" | head -n1
}

run_leg() {
	local leg=$1 i vm log
	RESULTS=$WORK/results-$leg
	: >"$RESULTS"
	echo
	case $leg in
	file)
		echo "-- leg: raw file ($DISK_MIB MiB on the host's file system, host page cache)"
		echo "mabo:    ${VMM#"$ROOT"/} ... --disk path=disk.raw"
		echo "qemu:    ${QEMU##*/} -M virt -smp 1 -m $MEMORY -nographic -bios fw_dynamic.bin -kernel Image -initrd bench-initramfs.cpio.gz -append \"$CMDLINE\" -drive file=disk.raw,format=raw,if=none,id=d0,cache=writeback -device virtio-blk-device,drive=d0"
		;;
	nbd)
		echo "-- leg: NBD (qemu-nbd -f raw -t -k SOCKET --cache=writeback disk.raw)"
		echo "mabo:    ${VMM#"$ROOT"/} ... --disk path=nbd+unix:///?socket=SOCKET"
		echo "qemu:    ${QEMU##*/} ... -drive file=nbd+unix:///?socket=SOCKET,format=raw,if=none,id=d0,cache=writeback -device virtio-blk-device,drive=d0"
		;;
	esac
	for ((i = 1; i <= RUNS; i++)); do
		for vm in mabo qemu; do
			log=$LOGS/disk-$leg-$vm-$i.log
			cmd_for "$vm" "$leg"
			run_to_done "$vm" "$i" "$log" "$DONE_MARK" \
				"$leg run $i did not finish within $TIMEOUT s (stopped; see --timeout)" \
				"$leg run $i ended (exit status %s) before diskio finished" -- "${CMD[@]}"
			grep -q "$DONE_MARK 0" "$log" ||
				fail_run "$vm" "$log" "$leg run $i: diskio failed (its message is above)"
			local sw sr rr rw
			sw=$(diskio_value "$log" seq-write MBps)
			sr=$(diskio_value "$log" seq-read MBps)
			rr=$(diskio_value "$log" rand-read IOPS)
			rw=$(diskio_value "$log" rand-write IOPS)
			[[ -n $sw && -n $sr && -n $rr && -n $rw ]] ||
				fail_run "$vm" "$log" "$leg run $i: no diskio figures in the console log"
			echo "$vm $i seq_write=$sw seq_read=$sr rand_read=$rr rand_write=$rw cpu=$(field cpu)" \
				>>"$RESULTS"
			printf 'run %d/%d  %-4s  seq write %9.2f MB/s  seq read %9.2f MB/s  rand read %9.1f IOPS  rand write %9.1f IOPS   (whole run %6.1f s, host CPU %6.1f s)\n' \
				"$i" "$RUNS" "$vm" "$sw" "$sr" "$rr" "$rw" "$(field t_exit)" "$(field cpu)"
		done
	done
	echo
	echo "== $leg: summary ($RUNS runs each, load average now $(cut -d' ' -f1-3 /proc/loadavg)) =="
	local metric unit
	for metric in seq_write seq_read rand_read rand_write; do
		unit=MB/s
		[[ $metric == rand_* ]] && unit=IOPS
		python3 "$VMRUN" summary --metric "$metric" --unit "$unit" --ratio mabo/qemu --no-cpu \
			"$RESULTS" | sed "s/^/$metric: /"
	done
}

if ((WANT_FILE)); then
	make_disk "$WORK/disk-file.raw"
	run_leg file
fi
if ((WANT_NBD)); then
	echo
	if ! mabo_has_nbd; then
		echo "-- leg: NBD: skipped: mabo-vmm has no NBD backend (it refuses nbd+unix:// disks)"
	else
		make_disk "$WORK/disk-nbd.raw"
		start_nbd
		run_leg nbd
		stop_nbd
	fi
fi
[[ $LOGS == "$WORK/logs" ]] || echo "logs: $LOGS"
