/* The virt machine's device tree. The root, /chosen, /memory and /cpus come from the VM's
 * configuration; everything under /soc comes from the devices registered on vm->bus, each
 * emitting its own node (mmio_ops.fdt_node) from the same base/size/irq the bus uses. */
#include "machine/riscv-virt/fdt_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"
#include "machine/riscv-virt/boot.h"
#include "machine/riscv-virt/syscon.h"
#include "machine/riscv-virt/uart.h"
#include "machine/riscv-virt/virt.h"

#include <libfdt.h>

/* What every hart is: the ISA the interpreter implements and Debian's kernel needs. Sstc
 * lets the kernel program its timer itself (stimecmp) instead of through the firmware. */
#define VIRT_CPU_ISA "rv64imafdc_zicntr_zicsr_zifencei_sstc"
static const char virt_cpu_isa_extensions[] = "i\0m\0a\0f\0d\0c\0zicntr\0zicsr\0zifencei\0sstc";
#define VIRT_CPU_MMU "riscv,sv48"

#define VIRT_MODEL "Maboroshi RISC-V virt"

int virt_fdt_errno(int fdt_err)
{
	if (fdt_err >= 0)
		return 0;
	switch (-fdt_err) {
	case FDT_ERR_NOSPACE: return -ENOSPC;
	case FDT_ERR_NOTFOUND: return -ENOENT;
	case FDT_ERR_EXISTS: return -EEXIST;
	default: return -EINVAL;
	}
}

static int virt_fdt_property_reg(void *fdt, uint64_t base, uint64_t size)
{
	fdt32_t reg[4] = {
		cpu_to_fdt32((uint32_t)(base >> 32)),
		cpu_to_fdt32((uint32_t)base),
		cpu_to_fdt32((uint32_t)(size >> 32)),
		cpu_to_fdt32((uint32_t)size),
	};
	VIRT_FDT_TRY(fdt_property(fdt, "reg", reg, sizeof(reg)));
	return 0;
}

int virt_fdt_begin_region(void *fdt, const char *name, uint64_t base, uint64_t size)
{
	char node[64];

	snprintf(node, sizeof(node), "%s@%" PRIx64, name, base);
	VIRT_FDT_TRY(fdt_begin_node(fdt, node));
	return virt_fdt_property_reg(fdt, base, size);
}

int virt_fdt_plic_irq(void *fdt, int irq)
{
	VIRT_FDT_TRY(fdt_property_cell(fdt, "interrupt-parent", VIRT_PHANDLE_PLIC));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "interrupts", (uint32_t)irq));
	return 0;
}

static int virt_fdt_chosen(struct vm *vm, void *fdt, uint64_t initrd_start, uint64_t initrd_end)
{
	char path[64];

	VIRT_FDT_TRY(fdt_begin_node(fdt, "chosen"));
	if (vm->cfg->cmdline)
		VIRT_FDT_TRY(fdt_property_string(fdt, "bootargs", vm->cfg->cmdline));
	if (vm->uart && uart_fdt_path(vm->uart, path, sizeof(path)) == 0)
		VIRT_FDT_TRY(fdt_property_string(fdt, "stdout-path", path));
	if (initrd_end > initrd_start) {
		VIRT_FDT_TRY(fdt_property_u64(fdt, "linux,initrd-start", initrd_start));
		VIRT_FDT_TRY(fdt_property_u64(fdt, "linux,initrd-end", initrd_end));
	}
	/* A seed for the guest kernel's random number generator, as QEMU gives: without it
	 * the kernel spends guest CPU time gathering entropy long after boot. */
	/* Drawn once per VM, so every tree built for it (the guest's, --dump-dtb's) agrees. */
	if (!vm->rng_seed_set && getrandom(vm->rng_seed, sizeof(vm->rng_seed), GRND_NONBLOCK) ==
					 (ssize_t)sizeof(vm->rng_seed))
		vm->rng_seed_set = true;
	if (vm->rng_seed_set)
		VIRT_FDT_TRY(fdt_property(fdt, "rng-seed", vm->rng_seed, sizeof(vm->rng_seed)));
	VIRT_FDT_TRY(fdt_end_node(fdt));

	/* serial0 = the console, so it is ttyS0 whatever the probe order. */
	if (vm->uart && uart_fdt_path(vm->uart, path, sizeof(path)) == 0) {
		VIRT_FDT_TRY(fdt_begin_node(fdt, "aliases"));
		VIRT_FDT_TRY(fdt_property_string(fdt, "serial0", path));
		VIRT_FDT_TRY(fdt_end_node(fdt));
	}
	return 0;
}

static int virt_fdt_memory(struct vm *vm, void *fdt)
{
	int err = virt_fdt_begin_region(fdt, "memory", vm->ram.base, vm->ram.size);
	if (err)
		return err;
	VIRT_FDT_TRY(fdt_property_string(fdt, "device_type", "memory"));
	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

static int virt_fdt_cpu(void *fdt, int h)
{
	char name[16];

	snprintf(name, sizeof(name), "cpu@%x", h);
	VIRT_FDT_TRY(fdt_begin_node(fdt, name));
	VIRT_FDT_TRY(fdt_property_string(fdt, "device_type", "cpu"));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "reg", (uint32_t)h));
	VIRT_FDT_TRY(fdt_property_string(fdt, "status", "okay"));
	VIRT_FDT_TRY(fdt_property_string(fdt, "compatible", "riscv"));
	VIRT_FDT_TRY(fdt_property_string(fdt, "riscv,isa", VIRT_CPU_ISA));
	VIRT_FDT_TRY(fdt_property_string(fdt, "riscv,isa-base", "rv64i"));
	VIRT_FDT_TRY(fdt_property(fdt, "riscv,isa-extensions", virt_cpu_isa_extensions,
				  sizeof(virt_cpu_isa_extensions)));
	VIRT_FDT_TRY(fdt_property_string(fdt, "mmu-type", VIRT_CPU_MMU));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "phandle", VIRT_PHANDLE_CPU(h)));

	VIRT_FDT_TRY(fdt_begin_node(fdt, "interrupt-controller"));
	VIRT_FDT_TRY(fdt_property_string(fdt, "compatible", "riscv,cpu-intc"));
	/* #address-cells 0: interrupt providers need it (dtc's interrupt_provider check). */
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#address-cells", 0));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#interrupt-cells", 1));
	VIRT_FDT_TRY(fdt_property(fdt, "interrupt-controller", NULL, 0));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "phandle", VIRT_PHANDLE_INTC(h)));
	VIRT_FDT_TRY(fdt_end_node(fdt));

	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

static int virt_fdt_cpus(struct vm *vm, void *fdt)
{
	char name[16];
	int err;

	VIRT_FDT_TRY(fdt_begin_node(fdt, "cpus"));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#address-cells", 1));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#size-cells", 0));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "timebase-frequency", (uint32_t)VM_TIMEBASE_HZ));
	for (int h = 0; h < vm->nharts; h++) {
		err = virt_fdt_cpu(fdt, h);
		if (err)
			return err;
	}
	/* One cluster, one core per hart: the topology Linux would guess, stated. */
	VIRT_FDT_TRY(fdt_begin_node(fdt, "cpu-map"));
	VIRT_FDT_TRY(fdt_begin_node(fdt, "cluster0"));
	for (int h = 0; h < vm->nharts; h++) {
		snprintf(name, sizeof(name), "core%d", h);
		VIRT_FDT_TRY(fdt_begin_node(fdt, name));
		VIRT_FDT_TRY(fdt_property_cell(fdt, "cpu", VIRT_PHANDLE_CPU(h)));
		VIRT_FDT_TRY(fdt_end_node(fdt));
	}
	VIRT_FDT_TRY(fdt_end_node(fdt));
	VIRT_FDT_TRY(fdt_end_node(fdt));
	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

static int virt_fdt_soc(struct vm *vm, void *fdt)
{
	VIRT_FDT_TRY(fdt_begin_node(fdt, "soc"));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#address-cells", 2));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#size-cells", 2));
	VIRT_FDT_TRY(fdt_property_string(fdt, "compatible", "simple-bus"));
	VIRT_FDT_TRY(fdt_property(fdt, "ranges", NULL, 0));
	for (int i = 0; i < vm->bus.count; i++) {
		const struct mmio_region *r = &vm->bus.regions[i];
		if (!r->ops->fdt_node)
			continue;
		int err = r->ops->fdt_node(r->opaque, fdt, vm);
		if (err) {
			/* Not logged: running out of buffer is normal, the caller grows it. */
			return err;
		}
	}
	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

static bool virt_has_syscon(const struct vm *vm)
{
	for (int i = 0; i < vm->bus.count; i++)
		if (vm->bus.regions[i].ops == &syscon_ops)
			return true;
	return false;
}

int virt_fdt_build(struct vm *vm, void *buf, size_t size, uint64_t initrd_start,
		   uint64_t initrd_end)
{
	void *fdt = buf;
	int err;

	if (size > INT32_MAX)
		size = INT32_MAX;
	VIRT_FDT_TRY(fdt_create(fdt, (int)size));
	VIRT_FDT_TRY(fdt_finish_reservemap(fdt));
	VIRT_FDT_TRY(fdt_begin_node(fdt, ""));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#address-cells", 2));
	VIRT_FDT_TRY(fdt_property_cell(fdt, "#size-cells", 2));
	VIRT_FDT_TRY(fdt_property_string(fdt, "compatible", "riscv-virtio"));
	VIRT_FDT_TRY(fdt_property_string(fdt, "model", VIRT_MODEL));

	err = virt_fdt_chosen(vm, fdt, initrd_start, initrd_end);
	if (!err)
		err = virt_fdt_memory(vm, fdt);
	if (!err)
		err = virt_fdt_cpus(vm, fdt);
	if (!err)
		err = virt_fdt_soc(vm, fdt);
	if (!err && virt_has_syscon(vm))
		err = syscon_fdt_power_nodes(fdt);
	if (err)
		return err;

	VIRT_FDT_TRY(fdt_end_node(fdt));
	VIRT_FDT_TRY(fdt_finish(fdt));
	return 0;
}

int virt_build_fdt(struct vm *vm, void *buf, size_t size)
{
	uint64_t start = 0, end = 0;
	int err = boot_initrd_range(vm, &start, &end);

	if (err)
		return err;
	return virt_fdt_build(vm, buf, size, start, end);
}

int virt_fdt_alloc(struct vm *vm, uint64_t initrd_start, uint64_t initrd_end, void **out)
{
	for (size_t size = 64 * 1024; size <= 16 * 1024 * 1024; size *= 2) {
		void *buf = malloc(size);
		if (!buf)
			return -ENOMEM;
		int err = virt_fdt_build(vm, buf, size, initrd_start, initrd_end);
		if (!err) {
			*out = buf;
			return 0;
		}
		free(buf);
		if (err != -ENOSPC)
			return err;
	}
	return -ENOSPC;
}

int virt_dump_fdt(struct vm *vm, const char *path)
{
	uint64_t initrd_start, initrd_end;
	void *fdt = NULL;
	int fd, err;

	err = boot_initrd_range(vm, &initrd_start, &initrd_end);
	if (err)
		return err;
	err = virt_fdt_alloc(vm, initrd_start, initrd_end, &fdt);
	if (err) {
		log_error("device tree: cannot build it: %s", strerror(-err));
		return err;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		log_error("dtb file '%s': %s", path, strerror(errno));
		goto out_free;
	}
	const uint8_t *p = fdt;
	size_t left = fdt_totalsize(fdt);
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			log_error("dtb file '%s': write failed: %s", path, strerror(-err));
			close(fd);
			goto out_free;
		}
		p += n;
		left -= (size_t)n;
	}
	if (close(fd) != 0) {
		err = -errno;
		log_error("dtb file '%s': %s", path, strerror(errno));
	}
out_free:
	free(fdt);
	return err;
}
