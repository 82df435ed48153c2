/* Loading a guest into RAM: OpenSBI + Linux Image + initramfs + DTB, or a bare-metal ELF. */
#ifndef MABO_MACHINE_RISCV_VIRT_BOOT_H
#define MABO_MACHINE_RISCV_VIRT_BOOT_H

#include <stdint.h>

struct vm;

/* Linux layout, offsets from the start of RAM. The firmware sits at the start; the kernel
 * goes 2 MiB up (the alignment RV64 Linux needs, and what OpenSBI leaves free). */
#define BOOT_KERNEL_OFFSET 0x200000ULL
/* fw_dynamic_info magic ("OSBI") and the version we fill in. */
#define BOOT_FW_DYNAMIC_MAGIC 0x4942534fULL
#define BOOT_FW_DYNAMIC_VERSION 2
#define BOOT_FW_DYNAMIC_INFO_SIZE 48

/* Linux mode: firmware cfg->firmware at RAM start, kernel Image cfg->kernel at
 * RAM + BOOT_KERNEL_OFFSET, cfg->initramfs, DTB and fw_dynamic_info high in RAM; every hart
 * reset at the firmware entry with a0 = hartid, a1 = DTB, a2 = fw_dynamic_info.
 * 0 or -errno after one log line naming the file and the problem. */
int boot_load_linux(struct vm *vm) __attribute__((warn_unused_result));

/* Bare-metal mode: cfg->kernel is a 64-bit RISC-V ELF executable loaded at its physical
 * addresses; every hart reset at e_entry with a0 = hartid, a1 = DTB, a2 = 0; vm->htif set
 * when the ELF has a `tohost` symbol. 0 or -errno after one log line. */
int boot_load_bare(struct vm *vm) __attribute__((warn_unused_result));

/* Where the initramfs goes (from its current size): [*start, *end), both 0 when there is
 * none (or in bare-metal mode). Used by the device tree so --dump-dtb matches the boot.
 * 0 or -errno after one log line. */
int boot_initrd_range(const struct vm *vm, uint64_t *start, uint64_t *end)
	__attribute__((warn_unused_result));

#endif
