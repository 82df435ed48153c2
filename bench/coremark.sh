#!/usr/bin/env bash
# bench/coremark.sh: EEMBC CoreMark inside the guest, on mabo-vmm and on QEMU (TCG).
#
# CoreMark (EEMBC, Apache-2.0) is not part of this repository: its source is taken from
# $COREMARK_SRC (default ${MABO_CACHE:-$HOME/.cache/maboroshi}/coremark). It is built with
# Debian's riscv64-linux-gnu-gcc, static, -O2, and put into a derived initramfs (the default
# guest's initramfs followed by a second cpio archive holding /bin/coremark); the guest runs it
# through "mabo.run=" on the kernel command line and powers off. Runs alternate (mabo, qemu,
# mabo, qemu, ...); compare figures from one invocation only. See bench/README.md.
set -euo pipefail

PROG=coremark.sh
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DEFAULT_ITERATIONS=40000

usage() {
	cat <<EOF
Usage: bench/coremark.sh [RUNS] [options]

Run CoreMark in the default guest on mabo-vmm and on QEMU, alternating, RUNS times each
(default 3); print each run's Iterations/Sec, then the medians and the ratio.

  --iterations N  CoreMark iterations per run (default \$COREMARK_ITERATIONS or $DEFAULT_ITERATIONS);
                  each run must take at least 10 s of guest time for CoreMark to validate it.
                  0 lets each guest size the run itself (~10-20 s; then the work differs)
  --cpus N        vCPUs for both (default 1; CoreMark itself is single-threaded)
  --memory SIZE   guest RAM for both (default 512M)
  --timeout S     end a run that has not finished after S seconds (default 240)
  --vmm FILE      our VMM (default build/mabo-vmm)
  --guest DIR     the guest (default build/guest)
  --qemu FILE     QEMU (default qemu-system-riscv64 on PATH)
  --logs DIR      keep the build log and every run's console log in DIR

Environment: COREMARK_SRC, a directory holding EEMBC's CoreMark (core_main.c, ..., posix/).
EOF
}

bench_defaults 3 240
ITERATIONS=${COREMARK_ITERATIONS:-$DEFAULT_ITERATIONS}
CPUS=1
# script_option: the options of this script alone (see parse_options in common.sh).
script_option() {
	case $1 in
	--iterations) ITERATIONS=${2:?--iterations needs a number} ;;
	--cpus) CPUS=${2:?--cpus needs a number} ;;
	*) return 1 ;;
	esac
}
parse_options "$@"
is_uint "$ITERATIONS" && ((${#ITERATIONS} <= 10 && 10#$ITERATIONS <= 2147483647)) ||
	die "--iterations must be a whole number (0 for automatic), not '$ITERATIONS'"
is_uint "$CPUS" && ((10#$CPUS >= 1)) || die "--cpus must be a whole number >= 1, not '$CPUS'"
CPUS=$((10#$CPUS))
ITERATIONS=$((10#$ITERATIONS))

# --- CoreMark source --------------------------------------------------------------------
COREMARK_SRC=${COREMARK_SRC:-${MABO_CACHE:-${HOME:?HOME is not set}/.cache/maboroshi}/coremark}
CM_FILES=(core_main.c core_list_join.c core_matrix.c core_state.c core_util.c coremark.h
	posix/core_portme.c posix/core_portme.h)
missing=()
for f in "${CM_FILES[@]}"; do
	[[ -f $COREMARK_SRC/$f ]] || missing+=("$f")
done
if ((${#missing[@]})); then
	# CoreMark is EEMBC's (Apache-2.0) and is not part of this repository.
	die "no CoreMark source in $COREMARK_SRC (missing ${missing[*]}); get EEMBC's CoreMark where there is network access with 'git clone https://github.com/eembc/coremark $COREMARK_SRC' (or copy a checkout there, or set COREMARK_SRC=DIR)"
fi
COREMARK_SRC=$(cd "$COREMARK_SRC" && pwd)

need_cmd python3 python3
need_cross_cc
need_cmd cpio cpio
need_cmd gzip gzip
need_qemu

start_run
RESULTS=$WORK/results

# --- build CoreMark and the derived initramfs ----------------------------------------------
# As EEMBC's posix port builds it (PORT_CFLAGS -O2, XCFLAGS -DPERFORMANCE_RUN=1, seeds from the
# command line), plus -static so that the binary needs nothing from the guest.
CC=riscv64-linux-gnu-gcc
CM_CFLAGS="-O2 -static"
CM_XCFLAGS="-DPERFORMANCE_RUN=1"
CM_FLAGS_STR="$CM_CFLAGS $CM_XCFLAGS"
BUILD_LOG=$LOGS/coremark-build.log
mkdir -p "$WORK/root/bin"
# shellcheck disable=SC2086 # the flag strings are word lists
if ! "$CC" $CM_CFLAGS $CM_XCFLAGS -I"$COREMARK_SRC" -I"$COREMARK_SRC/posix" \
	-DFLAGS_STR="\"$CM_FLAGS_STR\"" \
	"$COREMARK_SRC"/core_list_join.c "$COREMARK_SRC"/core_main.c "$COREMARK_SRC"/core_matrix.c \
	"$COREMARK_SRC"/core_state.c "$COREMARK_SRC"/core_util.c "$COREMARK_SRC"/posix/core_portme.c \
	-o "$WORK/root/bin/coremark" >"$BUILD_LOG" 2>&1; then
	tail -n 20 "$BUILD_LOG" >&2
	die "building CoreMark from $COREMARK_SRC with $CC failed (log above)"
fi
# The standard performance run: seeds 0x0 0x0 0x66, then the iterations, all three algorithms
# (7), and a 2000-byte data block (EEMBC's run1 parameters).
cat >"$WORK/root/bin/coremark-run" <<EOF
#!/bin/sh
exec /bin/coremark 0x0 0x0 0x66 $ITERATIONS 7 1 2000
EOF
# A second newc archive after the guest's own: the kernel unpacks both (/bin exists already).
bench_initrd CoreMark bin/coremark bin/coremark-run

CMDLINE="console=ttyS0 mabo.run=/bin/coremark-run"
MABO_CMD=("$S_VMM" --kernel "$S_IMAGE" --initramfs "$BENCH_INITRD" --firmware "$S_FW"
	--cmdline "$CMDLINE" --memory "$MEMORY" --cpus "$CPUS")
QEMU_CMD=("$QEMU" -machine virt -m "$MEMORY" -smp "$CPUS" -nographic -bios "$S_FW"
	-kernel "$S_IMAGE" -initrd "$BENCH_INITRD" -append "$CMDLINE")
DONE_MARK="mabo-init: /bin/coremark-run exited with status"

iters_text=$ITERATIONS
((ITERATIONS)) || iters_text="automatic"
echo "== CoreMark benchmark: $RUNS runs each, $iters_text iterations, $CPUS vCPU(s), $MEMORY =="
print_context "$VMM" "$GUEST" "$QEMU"
echo "coremark: $COREMARK_SRC, $("$CC" --version | head -n1), flags \"$CM_FLAGS_STR\""
echo "          in the guest: /bin/coremark 0x0 0x0 0x66 $ITERATIONS 7 1 2000"
echo "mabo:    ${VMM#"$ROOT"/} --kernel Image --initramfs bench-initramfs.cpio.gz --firmware fw_dynamic.bin --cmdline \"$CMDLINE\" --memory $MEMORY --cpus $CPUS"
echo "qemu:    ${QEMU##*/} -machine virt -m $MEMORY -smp $CPUS -nographic -bios fw_dynamic.bin -kernel Image -initrd bench-initramfs.cpio.gz -append \"$CMDLINE\""
echo "(Iterations/Sec as CoreMark reports it from the guest's clock; \"host-timed\" = iterations"
echo " / host time from \"mabo-init: ready\" to the end of the run, a check on the guest's clock)"
echo

# cm_value LOG LABEL: the value after "LABEL :" in CoreMark's output
cm_value() {
	sed -n "s/^$2[[:space:]]*:[[:space:]]*//p" "$1" | tr -d '\r' | head -n1
}

VALIDATED_LINE=
for ((i = 1; i <= RUNS; i++)); do
	for vm in mabo qemu; do
		log=$LOGS/coremark-$vm-$i.log
		if [[ $vm == mabo ]]; then cmd=("${MABO_CMD[@]}"); else cmd=("${QEMU_CMD[@]}"); fi
		run_to_done "$vm" "$i" "$log" "$DONE_MARK" \
			"CoreMark run $i did not finish within $TIMEOUT s (stopped; see --timeout)" \
			"run $i ended (exit status %s) before CoreMark finished" -- "${cmd[@]}"
		if grep -q 'Must execute for at least 10 secs' "$log"; then
			fail_run "$vm" "$log" "CoreMark ran for less than 10 s, so it does not validate the run; raise --iterations (now $ITERATIONS)"
		fi
		if ! grep -q '^Correct operation validated' "$log"; then
			fail_run "$vm" "$log" "CoreMark run $i did not print \"Correct operation validated\": wrong results"
		fi
		VALIDATED_LINE=$(grep -m1 '^Correct operation validated' "$log" | tr -d '\r')
		ips=$(cm_value "$log" 'Iterations\/Sec')
		secs=$(cm_value "$log" 'Total time (secs)')
		iters=$(cm_value "$log" 'Iterations')
		[[ $ips =~ ^[0-9.]+$ && $iters =~ ^[0-9]+$ ]] ||
			fail_run "$vm" "$log" "no Iterations/Sec in CoreMark's output"
		host_ips=NA
		if ((ITERATIONS)); then
			host_ips=$(awk -v n="$iters" -v a="$(field t_ready)" -v b="$(field t_done)" \
				'BEGIN { if (b > a) printf "%.3f", n / (b - a); else print "NA" }')
		fi
		echo "$vm $i ips=$ips host_ips=$host_ips" >>"$RESULTS"
		printf 'run %d/%d  %-4s  Iterations/Sec %10.3f   (%s iterations in %s s guest time; host-timed %s it/s)   validated   host CPU %7.3f s\n' \
			"$i" "$RUNS" "$vm" "$ips" "$iters" "$secs" "$host_ips" "$(field cpu)"
	done
done

echo
echo "== CoreMark: summary ($RUNS runs each, load average now $(cut -d' ' -f1-3 /proc/loadavg)) =="
python3 "$VMRUN" summary --metric ips --unit it/s --ratio mabo/qemu \
	--ratio-text "  (mabo Iterations/Sec / qemu Iterations/Sec: > 1 means mabo-vmm is faster)" "$RESULTS"
if ((ITERATIONS)); then
	python3 "$VMRUN" summary --metric host_ips --unit it/s --ratio mabo/qemu \
		--ratio-text "  (host-timed)" --no-cpu "$RESULTS"
fi
echo "validation: every run printed \"$VALIDATED_LINE\""
[[ $LOGS == "$WORK/logs" ]] || echo "logs: $LOGS"
