/* Device-tree helpers shared by the virt machine's devices (libfdt sequential-write API).
 * Private to src/machine/riscv-virt/. Every helper returns 0 or -errno, never a raw
 * FDT_ERR_* code, so device callbacks can pass errors straight up. */
#ifndef MABO_MACHINE_RISCV_VIRT_FDT_UTIL_H
#define MABO_MACHINE_RISCV_VIRT_FDT_UTIL_H

#include <stddef.h>
#include <stdint.h>

struct vm;

/* Fixed phandles: the sequential-write API cannot look nodes up, so each node that others
 * point at gets a number every emitter can compute on its own. */
#define VIRT_PHANDLE_PLIC 0x01
#define VIRT_PHANDLE_SYSCON 0x02
#define VIRT_PHANDLE_CPU(h) (0x10 + (uint32_t)(h))  /* h < VM_MAX_CPUS (32) */
#define VIRT_PHANDLE_INTC(h) (0x40 + (uint32_t)(h)) /* the hart's riscv,cpu-intc */

/* A libfdt result (>= 0 or -FDT_ERR_*) as 0 or -errno. */
int virt_fdt_errno(int fdt_err);

/* Evaluates a libfdt call; on failure returns its error as -errno from the caller. */
#define VIRT_FDT_TRY(call)                                                                         \
	do {                                                                                       \
		int virt_fdt_ret_ = (call);                                                        \
		if (virt_fdt_ret_ < 0)                                                             \
			return virt_fdt_errno(virt_fdt_ret_);                                      \
	} while (0)

/* Begins node "name@base" and writes reg = <base size> (2 + 2 cells, as /soc uses). */
int virt_fdt_begin_region(void *fdt, const char *name, uint64_t base, uint64_t size);

/* interrupt-parent = <PLIC> and interrupts = <irq>. */
int virt_fdt_plic_irq(void *fdt, int irq);

/* Builds the whole tree into buf with the given initrd range (start == end: none). */
int virt_fdt_build(struct vm *vm, void *buf, size_t size, uint64_t initrd_start,
		   uint64_t initrd_end) __attribute__((warn_unused_result));

/* Same, into a malloc'ed buffer grown until the tree fits; the caller frees *out. */
int virt_fdt_alloc(struct vm *vm, uint64_t initrd_start, uint64_t initrd_end, void **out)
	__attribute__((warn_unused_result));

#endif
