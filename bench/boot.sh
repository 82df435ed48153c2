#!/usr/bin/env bash
# bench/boot.sh: boot time of mabo-vmm against QEMU (TCG) on the same guest.
#
# Each run boots the default guest (build/guest) with "mabo.bench" on the kernel command line:
# the guest's /init loads its modules, prints "mabo-init: done" and powers off. The time is
# measured on the host, from launching the VMM to the moment that line appears on its console.
# Runs alternate (mabo, qemu, mabo, qemu, ...) so that both see the same machine load; the
# machine is noisy, so compare figures from one invocation only. See bench/README.md.
set -euo pipefail

PROG=boot.sh
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	cat <<EOF
Usage: bench/boot.sh [RUNS] [options]

Boot the default guest to "mabo-init: done" with mabo-vmm and with QEMU, alternating,
RUNS times each (default 5); print each run, then the medians and the ratio.

  --cpus N       vCPUs for both (default 1)
  --memory SIZE  guest RAM for both (default 512M)
  --timeout S    end a run that has not finished after S seconds (default 120)
  --vmm FILE     our VMM (default build/mabo-vmm)
  --guest DIR    the guest (default build/guest)
  --qemu FILE    QEMU (default qemu-system-riscv64 on PATH)
  --logs DIR     keep every run's console log in DIR (default: deleted at the end)
EOF
}

RUNS=5
CPUS=1
MEMORY=512M
TIMEOUT=120
VMM=$ROOT/build/mabo-vmm
GUEST=$ROOT/build/guest
QEMU="qemu-system-riscv64"
LOGS=
while (($#)); do
	case $1 in
	--cpus) CPUS=${2:?--cpus needs a number}; shift 2 ;;
	--memory) MEMORY=${2:?--memory needs a size}; shift 2 ;;
	--timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
	--vmm) VMM=${2:?--vmm needs a file}; shift 2 ;;
	--guest) GUEST=${2:?--guest needs a directory}; shift 2 ;;
	--qemu) QEMU=${2:?--qemu needs a file}; shift 2 ;;
	--logs) LOGS=${2:?--logs needs a directory}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) usage >&2; die "unknown option '$1'" ;;
	*)
		is_uint "$1" && ((10#$1 >= 1)) || die "RUNS must be a whole number >= 1, not '$1'"
		RUNS=$((10#$1))
		shift
		;;
	esac
done
is_uint "$CPUS" && ((10#$CPUS >= 1)) || die "--cpus must be a whole number >= 1, not '$CPUS'"
is_uint "$TIMEOUT" && ((10#$TIMEOUT >= 1)) || die "--timeout must be whole seconds >= 1, not '$TIMEOUT'"
[[ $MEMORY =~ ^[0-9]+[MG]$ ]] || die "--memory must look like 512M or 2G, not '$MEMORY'"
CPUS=$((10#$CPUS))
TIMEOUT=$((10#$TIMEOUT))

need_cmd python3 python3
if [[ $QEMU == qemu-system-riscv64 ]]; then
	need_cmd qemu-system-riscv64 qemu-system-misc
fi
command -v "$QEMU" >/dev/null 2>&1 || die "QEMU '$QEMU' not found"

make_workdir
snapshot_inputs "$VMM" "$GUEST"
LOGS=${LOGS:-$WORK/logs}
mkdir -p "$LOGS" || die "cannot create log directory '$LOGS'"
RESULTS=$WORK/results

CMDLINE="console=ttyS0 mabo.bench"
MABO_CMD=("$S_VMM" --kernel "$S_IMAGE" --initramfs "$S_INITRD" --firmware "$S_FW"
	--cmdline "$CMDLINE" --memory "$MEMORY" --cpus "$CPUS")
QEMU_CMD=("$QEMU" -machine virt -m "$MEMORY" -smp "$CPUS" -nographic -bios "$S_FW"
	-kernel "$S_IMAGE" -initrd "$S_INITRD" -append "$CMDLINE")

echo "== boot benchmark: launch to \"mabo-init: done\", $RUNS runs each, $CPUS vCPU(s), $MEMORY =="
print_context "$VMM" "$GUEST" "$QEMU"
echo "mabo:    ${VMM#"$ROOT"/} --kernel Image --initramfs initramfs.cpio.gz --firmware fw_dynamic.bin --cmdline \"$CMDLINE\" --memory $MEMORY --cpus $CPUS"
echo "qemu:    ${QEMU##*/} -machine virt -m $MEMORY -smp $CPUS -nographic -bios fw_dynamic.bin -kernel Image -initrd initramfs.cpio.gz -append \"$CMDLINE\""
echo "(times in seconds on the host's monotonic clock; host CPU = user + sys of the VMM process)"
echo

for ((i = 1; i <= RUNS; i++)); do
	for vm in mabo qemu; do
		log=$LOGS/boot-$vm-$i.log
		if [[ $vm == mabo ]]; then cmd=("${MABO_CMD[@]}"); else cmd=("${QEMU_CMD[@]}"); fi
		if ! run_vm "$vm" "$i" "$log" "$TIMEOUT" \
			--mark ready='mabo-init: ready' --mark done='mabo-init: done' -- "${cmd[@]}"; then
			case $(field status) in
			timeout) fail_run "$vm" "$log" "run $i did not print \"mabo-init: done\" within $TIMEOUT s (stopped)" ;;
			*) fail_run "$vm" "$log" "run $i ended (exit status $(field rc)) without printing \"mabo-init: done\"" ;;
			esac
		fi
		printf 'run %d/%d  %-4s  done %7.3f s   (ready %7.3f, exit %7.3f, exit status %s)   host CPU %7.3f s (user %.3f, sys %.3f)\n' \
			"$i" "$RUNS" "$vm" "$(field t_done)" "$(field t_ready)" "$(field t_exit)" "$(field rc)" \
			"$(field cpu)" "$(field user)" "$(field sys)"
	done
done

echo
echo "== boot: summary ($RUNS runs each, load average now $(cut -d' ' -f1-3 /proc/loadavg)) =="
python3 "$VMRUN" summary --metric t_done --unit s --ratio qemu/mabo \
	--ratio-text "  (qemu time / mabo time: > 1 means mabo-vmm boots faster)" \
	--cpu-ratio qemu/mabo --cpu-ratio-text "  (> 1 means mabo-vmm uses less host CPU)" "$RESULTS"
[[ $LOGS == "$WORK/logs" ]] || echo "console logs: $LOGS"
