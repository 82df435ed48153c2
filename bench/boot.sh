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

bench_defaults 5 120
CPUS=1
# script_option: the options of this script alone (see parse_options in common.sh).
script_option() {
	case $1 in
	--cpus) CPUS=${2:?--cpus needs a number} ;;
	*) return 1 ;;
	esac
}
parse_options "$@"
is_uint "$CPUS" && ((10#$CPUS >= 1)) || die "--cpus must be a whole number >= 1, not '$CPUS'"
CPUS=$((10#$CPUS))

need_cmd python3 python3
need_qemu

start_run
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
		run_to_done "$vm" "$i" "$log" 'mabo-init: done' \
			"run $i did not print \"mabo-init: done\" within $TIMEOUT s (stopped)" \
			"run $i ended (exit status %s) without printing \"mabo-init: done\"" -- "${cmd[@]}"
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
