#!/usr/bin/env bash
# Sets everything up and boots the default guest (Debian's riscv64 kernel, OpenSBI and a
# busybox initramfs, built from Debian packages) to a shell on this terminal.
#   usage: scripts/run.sh [extra mabo-vmm options...]     (Ctrl-A x quits; so does poweroff)
# The image tool also makes build/guest/rootfs.ext4, an ext4 root disk; to boot from it:
#   scripts/run.sh --disk path=build/guest/rootfs.ext4 --cmdline "console=ttyS0 root=/dev/vda rw"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh
make -s -j"$(nproc)"
tools/mabo-image --out build/guest
exec build/mabo-vmm --kernel build/guest/Image --initramfs build/guest/initramfs.cpio.gz \
	--firmware build/guest/fw_dynamic.bin --cmdline "console=ttyS0" --memory 512M "$@"
