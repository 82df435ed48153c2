/* SiFive test device: a 32-bit write at offset 0 ends the run. */
#include "machine/riscv-virt/syscon.h"

#include <errno.h>
#include <stdlib.h>

#include "core/vm.h"
#include "machine/riscv-virt/fdt_util.h"

#include <libfdt.h>

struct syscon {
	struct vm *vm;
	uint64_t base;
	uint64_t size;
};

static uint64_t syscon_read(void *opaque, uint64_t off, unsigned size)
{
	(void)opaque;
	(void)off;
	(void)size;
	return 0;
}

static void syscon_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct syscon *s = opaque;

	if (off != 0 || size < 4)
		return;
	switch (val & 0xffff) {
	case SYSCON_POWEROFF: vm_request_exit(s->vm, VM_EXIT_POWEROFF, 0); break;
	case SYSCON_REBOOT: vm_request_exit(s->vm, VM_EXIT_REBOOT, 0); break;
	case SYSCON_FAIL:
		/* Encoded like an HTIF exit value, which is how main reports failures. */
		vm_request_exit(s->vm, VM_EXIT_FAIL, (((val >> 16) & 0xffff) << 1) | 1);
		break;
	default: break; /* unknown commands are ignored, as QEMU's sifive_test does for reads */
	}
}

static int syscon_fdt_node(void *opaque, void *fdt, const struct vm *vm)
{
	struct syscon *s = opaque;
	static const char compat[] = "sifive,test1\0sifive,test0\0syscon";
	int err;

	(void)vm;
	err = virt_fdt_begin_region(fdt, "test", s->base, s->size);
	if (err)
		return err;
	VIRT_FDT_TRY(fdt_property(fdt, "compatible", compat, sizeof(compat)));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "phandle", VIRT_PHANDLE_SYSCON));
	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

int syscon_fdt_power_nodes(void *fdt)
{
	static const struct {
		const char *name;
		const char *compat;
		uint32_t value;
	} nodes[] = {
		{ "poweroff", "syscon-poweroff", SYSCON_POWEROFF },
		{ "reboot", "syscon-reboot", SYSCON_REBOOT },
	};

	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		VIRT_FDT_TRY(fdt_begin_node(fdt, nodes[i].name));
		VIRT_FDT_TRY(fdt_property_string(fdt, "compatible", nodes[i].compat));
		VIRT_FDT_TRY(fdt_property_cell(fdt, "regmap", VIRT_PHANDLE_SYSCON));
		VIRT_FDT_TRY(fdt_property_cell(fdt, "offset", 0));
		VIRT_FDT_TRY(fdt_property_cell(fdt, "value", nodes[i].value));
		VIRT_FDT_TRY(fdt_end_node(fdt));
	}
	return 0;
}

const struct mmio_ops syscon_ops = {
	.read = syscon_read,
	.write = syscon_write,
	.fdt_node = syscon_fdt_node,
};

int syscon_create(struct vm *vm, const struct mmio_region *where, struct syscon **out)
{
	struct syscon *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->vm = vm;
	s->base = where->base;
	s->size = where->size;
	*out = s;
	return 0;
}

void syscon_destroy(struct syscon *s)
{
	free(s);
}
