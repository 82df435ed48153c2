/* SiFive test device ("syscon"): the guest powers off, reboots or reports a test result by
 * writing a magic value to offset 0. */
#ifndef MABO_MACHINE_RISCV_VIRT_SYSCON_H
#define MABO_MACHINE_RISCV_VIRT_SYSCON_H

#include "core/bus.h"

struct vm;
struct syscon;

#define SYSCON_FAIL 0x3333     /* exit code in bits 31:16 */
#define SYSCON_POWEROFF 0x5555 /* also "pass" for test programs */
#define SYSCON_REBOOT 0x7777

extern const struct mmio_ops syscon_ops;

int syscon_create(struct vm *vm, const struct mmio_region *where, struct syscon **out)
	__attribute__((warn_unused_result));
void syscon_destroy(struct syscon *s);

/* Emits /poweroff and /reboot (syscon-poweroff, syscon-reboot on the test device's regmap).
 * They live at the root, outside /soc where the device's own node goes, as on QEMU. */
int syscon_fdt_power_nodes(void *fdt);

#endif
