#!/usr/bin/env bash
# Sets everything up and runs every test: unit tests, the riscv-tests ISA suite, and the
# integration tests that boot Debian's kernel. Prints a closing "N passed, M failed" line.
# A suite that cannot run at all exits 77 (skipped); a suite that leaves out some of its cases
# prints a line "SKIP: CASE: REASON" for each, and those count as skipped too (when the suite
# itself is not skipped), so that nothing left out passes for tested.
#   usage: scripts/test.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh || exit 1
make -s -j"$(nproc)" || exit 1

passed=0 failed=0 skipped=0 times=""
skipped_suites=0 skipped_cases=0 skip_lines=""
out=$(mktemp)
trap 'rm -f "$out"' EXIT
suite() {
	local name=$1
	shift
	echo "=== $name"
	local t0=$SECONDS
	# Unbuffered: through the pipe, Python's output keeps the order it has on a terminal.
	PYTHONUNBUFFERED=1 "$@" 2>&1 | tee "$out"
	local status=${PIPESTATUS[0]}
	times="$times $name:$((SECONDS - t0))s"
	if [ "$status" -eq 0 ]; then
		passed=$((passed + 1))
	elif [ "$status" -eq 77 ]; then
		# A suite that could not run (e.g. ../shared absent) says so; it is not a pass.
		skipped=$((skipped + 1))
		skipped_suites=$((skipped_suites + 1))
		echo "=== $name SKIPPED"
		return
	else
		failed=$((failed + 1))
		echo "=== $name FAILED"
	fi
	# Cases the suite left out: "SKIP: CASE: REASON" lines.
	local n
	n=$(grep -ac '^SKIP: ' "$out")
	if [ "$n" -gt 0 ]; then
		skipped=$((skipped + n))
		skipped_cases=$((skipped_cases + n))
		skip_lines="$skip_lines$(grep -a '^SKIP: ' "$out" | sed "s/^SKIP: /  $name: /")
"
		echo "=== $name: $n case(s) SKIPPED"
	fi
}

suite unit make -s unit
suite unit-sanitizers make -s sanitize
suite isa-sanitizers tests/isa/run.sh build/asan/mabo-vmm
suite isa tests/isa/run.sh
# The libFuzzer targets (clang): the virtqueue, virtio-blk requests, the code generator
# against the interpreter, the saved-state reader (its bytes, and the meaning of well-formed
# records: fuzz_state) and the control socket's JSON parser; 30 s each, the corpus stays in
# build/fuzz.
suite fuzz make -s fuzz-run FUZZ_TIME=30
# build/mabo against a fake control socket (no guest needed).
suite mabo-client python3 tests/integration/mabo_client.py --mabo build/mabo
# Every block translated to host code at its first run, then the interpreter alone.
suite isa-jit env MABO_JIT_HOT=1 tests/isa/run.sh
suite isa-interpreter env MABO_JIT=0 tests/isa/run.sh
if tools/mabo-image --out build/guest; then
	suite cli tests/integration/cli.sh build/mabo-vmm build/guest
	suite api tests/integration/api.sh build/mabo-vmm build/guest build/mabo
	# Disk locks against qemu-io and qemu-nbd, socket modes and signals, snapshot targets,
	# restore and migration on one shared disk file (a bare-metal program: seconds).
	suite files tests/integration/files.sh build/mabo-vmm build/mabo
	# mabod: definitions, bad requests, VMs started, crashed and restarted, the daemon
	# killed with SIGKILL and its VMs re-adopted, definitions kept through a SIGKILL.
	suite mabod python3 tests/integration/mabod.py --build build --guest build/guest \
		--log-dir build/mabod-logs
	suite boot-1cpu python3 tests/integration/console.py --vmm build/mabo-vmm --cpus 1 \
		--guest build/guest --log build/boot-1cpu.log
	suite boot-2cpu python3 tests/integration/console.py --vmm build/mabo-vmm --cpus 2 \
		--guest build/guest --log build/boot-2cpu.log
	# An idle guest: the code caches released, a host core barely used.
	suite idle python3 tests/integration/idle.py --vmm build/mabo-vmm --guest build/guest \
		--log build/idle.log
	suite virtio python3 tests/integration/virtio.py --vmm build/mabo-vmm --guest build/guest \
		--log-dir build/virtio-logs
	suite reboot python3 tests/integration/reboot.py --vmm build/mabo-vmm --guest build/guest \
		--log-dir build/reboot-logs
	suite disk python3 tests/integration/disk.py --vmm build/mabo-vmm --guest build/guest \
		--log-dir build/disk-logs
	# virtio-net: user-mode networking (no privileges), then two VMs on TAP devices in a
	# bridge inside a network namespace (root and /dev/net/tun, else skipped).
	suite net-user python3 tests/integration/net.py --only user --vmm build/mabo-vmm \
		--guest build/guest --log-dir build/net-logs
	suite net-tap python3 tests/integration/net.py --only tap --vmm build/mabo-vmm \
		--guest build/guest --log-dir build/net-logs
	# Boots from a copy of build/guest/rootfs.ext4 with root=/dev/vda.
	suite rootdisk python3 tests/integration/rootdisk.py --vmm build/mabo-vmm \
		--guest build/guest --log-dir build/rootdisk-logs
	# Snapshots and live migration: restore, 20 migrations back and forth under a disk and
	# memory workload, and faults (destination killed, cancel, stream cut and corrupted).
	suite migrate python3 tests/integration/migrate.py --rounds 20
	# The same between "hosts" made of network namespaces (a VMM in each, the NBD server in
	# a third, on a bridge): migrations over TCP, faults, and links cut during migrations
	# (root and ip netns, else skipped).
	suite migrate-netns python3 tests/integration/migrate_netns.py \
		--log-dir build/migrate-netns-logs
	# --sandbox: the seccomp filter (boot, snapshot, migrations, a forbidden call killed by
	# SIGSYS), and --sandbox-user's unprivileged user in a mount tree of its own (as root).
	suite sandbox python3 tests/integration/sandbox.py --vmm build/mabo-vmm --mabo build/mabo \
		--guest build/guest --log-dir build/sandbox-logs
	# NBD disks on nbdkit and qemu-nbd (raw, qcow2), servers killed and restarted.
	suite nbd python3 tests/integration/nbd.py --vmm build/mabo-vmm --guest build/guest \
		--log-dir build/nbd-logs
	# Linux on 2 vCPUs with every block translated before its first run.
	suite boot-2cpu-jit env MABO_JIT_HOT=1 python3 tests/integration/console.py \
		--vmm build/mabo-vmm --cpus 2 --guest build/guest --log build/boot-2cpu-jit.log
else
	echo "=== guest image could not be built"
	failed=$((failed + 1))
fi

echo "suite times:$times"
if [ "$skipped_cases" -gt 0 ]; then
	printf 'cases skipped inside suites:\n%s' "$skip_lines"
fi
echo "skipped: $skipped_suites suites, $skipped_cases cases inside suites"
echo "suites: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
