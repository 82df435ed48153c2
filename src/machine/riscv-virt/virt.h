/* The "virt" RISC-V machine: memory map, devices, device tree, boot loading. */
#ifndef MABO_MACHINE_RISCV_VIRT_H
#define MABO_MACHINE_RISCV_VIRT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct sbuf;
struct sreader;

/* Creates the host console (vm->console, on standard input and output) and the machine's
 * devices on vm->bus: CLINT, PLIC, UART, syscon, RTC, and the command line's devices
 * (vm->cfg->devices) in virtio-mmio slots, in order. vm->ram, vm->harts, vm->cfg and
 * vm->loop are already set up. 0 or -errno (after logging one line). */
int virt_create(struct vm *vm) __attribute__((warn_unused_result));

/* Loads what vm->cfg names into guest RAM (firmware + kernel + initramfs + DTB, or a
 * bare-metal ELF), and resets every hart at the entry with the boot registers.
 * 0 or -errno (after logging one line naming the file or value). */
int virt_load(struct vm *vm) __attribute__((warn_unused_result));

/* Builds the machine's flattened device tree into buf. 0 or -errno. */
int virt_build_fdt(struct vm *vm, void *buf, size_t size) __attribute__((warn_unused_result));

/* Writes the device tree virt_load gives the guest (same initrd range) to path, for
 * --dump-dtb. 0 or -errno (after logging one line). */
int virt_dump_fdt(struct vm *vm, const char *path) __attribute__((warn_unused_result));

/* Stops device threads and frees what virt_create made (the devices take themselves off
 * vm->loop). */
void virt_destroy(struct vm *vm);

/* Snapshots and migration, with the vCPUs paused. virt_quiesce (event loop): asks every
 * device to finish its I/O and make it durable; returns how much is still in progress (call
 * until 0). virt_unquiesce (event loop): devices take requests again. virt_save_state: every
 * device's state. virt_load_state: into the devices of a VM just made with the same
 * configuration, before its vCPUs run; 0 or -EINVAL with r->err naming the problem. */
unsigned virt_quiesce(struct vm *vm);
void virt_unquiesce(struct vm *vm);
/* A migration's hand-over: every device takes (take) or gives up what only one VMM may hold
 * (disk locks). Tries every device; 0 or the first -errno (each failure logged). */
int virt_claim(struct vm *vm, bool take);
void virt_save_state(struct vm *vm, struct sbuf *b);
int virt_load_state(struct vm *vm, struct sreader *r) __attribute__((warn_unused_result));

#endif
