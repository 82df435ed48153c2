#!/usr/bin/env bash
# Runs the official riscv-tests ISA binaries (../shared/riscv-tests/isa) bare-metal on
# mabo-vmm. Each must report a pass through HTIF. Prints one line per failure and a
# closing "N passed, M failed" line; exits non-zero on any failure, and 77 (skipped) when the
# binaries are absent.
#   usage: tests/isa/run.sh [VMM] [ISA_DIR] [PATTERN]
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
vmm=${1:-$root/build/mabo-vmm}
isa=${2:-$root/../shared/riscv-tests/isa}
pattern=${3:-rv64*}

if [ ! -d "$isa" ]; then
	echo "isa: SKIPPED: $isa is absent (the riscv-tests binaries live in ../shared)"
	exit 77
fi
if [ ! -x "$vmm" ]; then
	echo "isa: $vmm not found: run make first" >&2
	exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export vmm out
# shellcheck disable=SC2016
find "$isa" -maxdepth 1 -type f -name "$pattern" ! -name '*.dump' -printf '%f\n' | sort |
	xargs -P "$(nproc)" -I{} sh -c '
		if "$vmm" --firmware none --kernel "'"$isa"'/{}" --memory 16M --timeout 20 \
			</dev/null >"$out/{}.log" 2>&1; then
			touch "$out/{}.pass"
		fi'

pass=0 fail=0
for log in "$out"/*.log; do
	t=$(basename "$log" .log)
	if [ -e "$out/$t.pass" ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAILED $t: $(tr '\r\n' '  ' <"$log" | cut -c1-200)"
	fi
done
echo "isa: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
