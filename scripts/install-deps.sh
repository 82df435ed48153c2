#!/usr/bin/env bash
# Installs the Debian packages Maboroshi needs to build, run and test (as root, on
# Debian bookworm). Does nothing when they are all present already.
#   usage: scripts/install-deps.sh [extra packages...]
set -euo pipefail

PACKAGES=(
	# build
	gcc make libc6-dev pkg-config
	libfdt-dev        # device tree generation
	libnbd-dev        # the NBD block backend (nbd:// disks)
	libcmocka-dev     # unit tests
	libslirp-dev      # user-mode networking (--net user): a TCP/IP stack in user space
	libzstd-dev       # compressed pages in live migration and snapshots (--compress)
	libgnutls28-dev   # TLS 1.3 on migration connections (--migration-key, --migration-tls)
	clang libclang-rt-14-dev  # libFuzzer targets (make fuzz): clang -fsanitize=fuzzer
	libsqlite3-dev    # mabod: VM definitions and state (SQLite, WAL)
	libjansson-dev    # JSON: mabod's REST API and VM specs, mabo-vmm --config FILE
	libmicrohttpd-dev # mabod: the REST API's HTTP/1.1 server on a Unix socket
	libseccomp-dev    # mabo-vmm --sandbox: the system call filter
	# guest image tool (tools/mabo-image)
	apt dpkg cpio gzip xz-utils kmod debian-archive-keyring ca-certificates
	e2fsprogs qemu-user  # the root disk: mke2fs -d; busybox --list-full run under qemu-riscv64
	# default firmware when --firmware is not given
	opensbi
	# tests
	python3 device-tree-compiler
	python3-yaml      # tests/integration/mabod.py: responses checked against docs/openapi.yaml
	iproute2          # the TAP test: network namespace, bridge, TAP devices
	nbdkit qemu-utils # NBD servers the NBD disk tests run (qemu-nbd, qemu-img)
	gnutls-bin        # certtool: the migration tests' certificate authority
)
PACKAGES+=("$@")

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
