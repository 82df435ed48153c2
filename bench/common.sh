# shellcheck shell=bash
# bench/common.sh: shared by bench/boot.sh, bench/coremark.sh and bench/disk.sh (sourced,
# not run). Expects PROG to be set by the sourcing script, and usage() for parse_options.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
VMRUN=$BENCH_DIR/vmrun.py

die() {
	echo "$PROG: error: $*" >&2
	exit 1
}

note() {
	echo "$PROG: $*" >&2
}

# is_uint VALUE: a decimal integer >= 0
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# need_cmd COMMAND PACKAGE: make sure COMMAND is on PATH, installing the Debian PACKAGE (through
# scripts/install-deps.sh, which needs root) when it is missing.
need_cmd() {
	local cmd=$1 pkg=$2
	command -v "$cmd" >/dev/null 2>&1 && return 0
	note "$cmd not found: installing Debian package $pkg"
	"$ROOT/scripts/install-deps.sh" "$pkg" >&2 ||
		die "$cmd is missing and package $pkg could not be installed (apt-get install $pkg as root)"
	command -v "$cmd" >/dev/null 2>&1 || die "package $pkg did not provide $cmd"
}

# need_cross_cc: Debian's riscv64 cross compiler and its C library (static guest programs);
# libc6-dev-riscv64-cross is only recommended by the compiler, so it is asked for by name.
need_cross_cc() {
	local pkgs=(gcc-riscv64-linux-gnu libc6-dev-riscv64-cross)
	"$ROOT/scripts/install-deps.sh" "${pkgs[@]}" >&2 ||
		die "the riscv64 cross compiler is missing (apt-get install ${pkgs[*]} as root)"
	command -v riscv64-linux-gnu-gcc >/dev/null 2>&1 ||
		die "package gcc-riscv64-linux-gnu did not provide riscv64-linux-gnu-gcc"
}

# bench_defaults RUNS TIMEOUT: the defaults of the options every script takes.
bench_defaults() {
	RUNS=$1
	MEMORY=512M
	TIMEOUT=$2
	VMM=$ROOT/build/mabo-vmm
	GUEST=$ROOT/build/guest
	QEMU="qemu-system-riscv64"
	LOGS=
}

# parse_options ARGS...: the command line. The script's own options, each with a value, go to
# its script_option function (it returns 1 for an option it does not have); then --memory,
# --timeout, --vmm, --guest, --qemu, --logs, --help and RUNS, which every script takes, are
# read and checked here.
parse_options() {
	while (($#)); do
		if script_option "$@"; then
			shift 2
			continue
		fi
		case $1 in
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
	is_uint "$TIMEOUT" && ((10#$TIMEOUT >= 1)) || die "--timeout must be whole seconds >= 1, not '$TIMEOUT'"
	[[ $MEMORY =~ ^[0-9]+[MG]$ ]] || die "--memory must look like 512M or 2G, not '$MEMORY'"
	TIMEOUT=$((10#$TIMEOUT))
}

# need_qemu: make sure $QEMU is there (installing Debian's when the default is missing).
need_qemu() {
	if [[ $QEMU == qemu-system-riscv64 ]]; then
		need_cmd qemu-system-riscv64 qemu-system-misc
	fi
	command -v "$QEMU" >/dev/null 2>&1 || die "QEMU '$QEMU' not found"
}

# Temporary directory for one benchmark run, removed on exit (vmrun.py stops its virtual
# machine itself on SIGINT/SIGTERM/SIGHUP and when a run times out).
make_workdir() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/mabo-bench.XXXXXX") || die "cannot create a temporary directory"
	trap 'rm -rf "$WORK"' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# snapshot_inputs VMM GUEST_DIR: copy the VMM binary and the guest into $WORK so that a rebuild
# by someone else during the benchmark does not change what is measured. Sets S_VMM, S_IMAGE,
# S_FW, S_INITRD.
snapshot_inputs() {
	local vmm=$1 guest=$2 f
	[[ -x $vmm ]] || die "no VMM binary '$vmm' (run make first, or pass --vmm FILE)"
	for f in Image fw_dynamic.bin initramfs.cpio.gz; do
		[[ -f $guest/$f ]] || die "no $guest/$f (build the guest with tools/mabo-image --out $guest, or pass --guest DIR)"
	done
	mkdir -p "$WORK/in"
	cp "$vmm" "$WORK/in/mabo-vmm"
	cp "$guest/Image" "$guest/fw_dynamic.bin" "$guest/initramfs.cpio.gz" "$WORK/in/"
	S_VMM=$WORK/in/mabo-vmm
	S_IMAGE=$WORK/in/Image
	S_FW=$WORK/in/fw_dynamic.bin
	S_INITRD=$WORK/in/initramfs.cpio.gz
}

# start_run: the work directory, the copies of $VMM and $GUEST in it (snapshot_inputs) and the
# log directory $LOGS (by default in the work directory).
start_run() {
	make_workdir
	snapshot_inputs "$VMM" "$GUEST"
	LOGS=${LOGS:-$WORK/logs}
	mkdir -p "$LOGS" || die "cannot create log directory '$LOGS'"
}

# bench_initrd WHAT FILE...: the guest's initramfs followed by a second newc archive holding
# the FILEs of $WORK/root (made executable), for a guest program WHAT; the kernel unpacks both.
# Sets BENCH_INITRD.
bench_initrd() {
	local what=$1
	shift
	(cd "$WORK/root" && chmod 755 "$@")
	(cd "$WORK/root" && printf '%s\n' "$@" |
		cpio --quiet -o -H newc --owner 0:0) | gzip -6 -n >"$WORK/extra.cpio.gz" ||
		die "cannot write the $what cpio archive"
	BENCH_INITRD=$WORK/bench-initramfs.cpio.gz
	cat "$S_INITRD" "$WORK/extra.cpio.gz" >"$BENCH_INITRD"
}

# print_context VMM GUEST_DIR QEMU: what is being compared, on this machine, now.
print_context() {
	local vmm=$1 guest=$2 qemu=$3 rev kernel cpu
	rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- src 2>/dev/null) ]]; then
		rev="$rev + uncommitted changes in src/"
	fi
	kernel=unknown
	if [[ -f $guest/VERSIONS ]]; then
		kernel=$(sed -n 's/^kernel_package=//p' "$guest/VERSIONS")
		kernel="$kernel ($(sed -n 's/^kernel_version=//p' "$guest/VERSIONS"))"
	fi
	cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n1)
	echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "host:    $(nproc) CPUs, ${cpu:-unknown CPU}, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "ours:    $vmm (built $(date -u -r "$vmm" '+%Y-%m-%d %H:%M:%S UTC'); repository at commit $rev)"
	echo "peer:    $("$qemu" --version | head -n1) (TCG)"
	echo "guest:   $guest, kernel $kernel"
}

# run_vm NAME RUN LOG TIMEOUT MARKS... -- COMMAND...: one timed run through vmrun.py; appends
# "NAME RUN KEY=VALUE..." to $RESULTS and sets RUN_LINE to vmrun.py's line. Returns vmrun.py's
# status (0 when the last mark was seen).
run_vm() {
	local name=$1 run=$2 log=$3 timeout=$4 rc=0
	shift 4
	RUN_LINE=$(python3 "$VMRUN" run --timeout "$timeout" --log "$log" "$@") || rc=$?
	[[ -n $RUN_LINE ]] || die "vmrun.py failed for $name run $run"
	echo "$name $run $RUN_LINE" >>"$RESULTS"
	return $rc
}

# run_to_done NAME RUN LOG DONE_MARK TIMED_OUT ENDED -- COMMAND...: run_vm with $TIMEOUT and the
# marks ready ("mabo-init: ready") and done (DONE_MARK). When done does not come, stop with the
# end of the console log and TIMED_OUT when the run was stopped at the timeout, else ENDED (a
# printf format: %s is the VMM's exit status).
run_to_done() {
	local name=$1 run=$2 log=$3 mark=$4 timed_out=$5 ended=$6
	shift 6
	run_vm "$name" "$run" "$log" "$TIMEOUT" --mark ready='mabo-init: ready' --mark done="$mark" "$@" &&
		return 0
	[[ $(field status) != timeout ]] || fail_run "$name" "$log" "$timed_out"
	# shellcheck disable=SC2059 # ENDED is the format
	fail_run "$name" "$log" "$(printf "$ended" "$(field rc)")"
}

# field KEY: the value of KEY=VALUE in $RUN_LINE
field() {
	local w
	for w in $RUN_LINE; do
		if [[ $w == "$1="* ]]; then
			echo "${w#*=}"
			return
		fi
	done
	echo NA
}

# fail_run NAME LOG WHAT: report a failed run with the end of its console log, and stop.
fail_run() {
	local name=$1 log=$2 what=$3
	echo "---- last lines of the $name console ----" >&2
	tail -n 15 "$log" >&2 || true
	echo "----" >&2
	die "$name: $what"
}
