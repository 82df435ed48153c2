/* The "virt" machine: its memory map, kept in one table that both registers the devices on
 * the bus and (through each device's fdt_node) describes them in the device tree, so every
 * address and interrupt number is written exactly once. Addresses match QEMU's virt. */
#include "machine/riscv-virt/virt.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"
#include "machine/riscv-virt/boot.h"
#include "machine/riscv-virt/clint.h"
#include "machine/riscv-virt/goldfish_rtc.h"
#include "machine/riscv-virt/htif.h"
#include "machine/riscv-virt/plic.h"
#include "machine/riscv-virt/syscon.h"
#include "machine/riscv-virt/uart.h"

struct virt_device {
	const char *name;
	uint64_t base;
	uint64_t size;
	int irq; /* PLIC source, 0 for none */
	const struct mmio_ops *ops;
	/* Makes the device's state (the region's opaque) and wires it into vm. */
	int (*create)(struct vm *vm, const struct mmio_region *where, void **opaque);
	void (*destroy)(struct vm *vm, void *opaque);
};

static int virt_create_syscon(struct vm *vm, const struct mmio_region *where, void **opaque)
{
	struct syscon *s;
	int err = syscon_create(vm, where, &s);
	if (!err)
		*opaque = s;
	return err;
}

static void virt_destroy_syscon(struct vm *vm, void *opaque)
{
	(void)vm;
	syscon_destroy(opaque);
}

static int virt_create_rtc(struct vm *vm, const struct mmio_region *where, void **opaque)
{
	struct goldfish_rtc *r;
	int err = goldfish_rtc_create(vm, where, &r);
	if (!err)
		*opaque = r;
	return err;
}

static void virt_destroy_rtc(struct vm *vm, void *opaque)
{
	(void)vm;
	goldfish_rtc_destroy(opaque);
}

static int virt_create_clint(struct vm *vm, const struct mmio_region *where, void **opaque)
{
	int err = clint_create(vm, where, &vm->clint);
	if (!err)
		*opaque = vm->clint;
	return err;
}

static void virt_destroy_clint(struct vm *vm, void *opaque)
{
	clint_destroy(opaque);
	vm->clint = NULL;
}

static int virt_create_plic(struct vm *vm, const struct mmio_region *where, void **opaque)
{
	int err = plic_create(vm, where, &vm->plic);
	if (!err)
		*opaque = vm->plic;
	return err;
}

static void virt_destroy_plic(struct vm *vm, void *opaque)
{
	plic_destroy(opaque);
	vm->plic = NULL;
}

static int virt_create_uart(struct vm *vm, const struct mmio_region *where, void **opaque)
{
	int err = uart_create(vm, where, STDIN_FILENO, STDOUT_FILENO, &vm->uart);
	if (!err)
		*opaque = vm->uart;
	return err;
}

static void virt_destroy_uart(struct vm *vm, void *opaque)
{
	uart_destroy(opaque);
	vm->uart = NULL;
}

/* The memory map. Devices are created in this order and destroyed in reverse: the PLIC
 * exists before the devices that raise its sources, and the UART's input thread (which
 * raises one) stops before the PLIC goes. RAM is at RAM_BASE (0x80000000), mapped by the
 * caller, cfg->memory bytes long. */
static const struct virt_device virt_devices[] = {
	{ "test", 0x00100000, 0x1000, 0, &syscon_ops, virt_create_syscon, virt_destroy_syscon },
	{ "rtc", 0x00101000, 0x1000, 11, &goldfish_rtc_ops, virt_create_rtc, virt_destroy_rtc },
	{ "clint", 0x02000000, 0x10000, 0, &clint_ops, virt_create_clint, virt_destroy_clint },
	{ "plic", 0x0c000000, 0x4000000, 0, &plic_ops, virt_create_plic, virt_destroy_plic },
	{ "uart0", 0x10000000, 0x100, 10, &uart_ops, virt_create_uart, virt_destroy_uart },
	/* virtio-mmio slots go here: slot n (0..7) at 0x10001000 + n * 0x1000, size 0x1000,
	 * PLIC source 1 + n, as on QEMU's virt. */
};

#define VIRT_NDEVICES (sizeof(virt_devices) / sizeof(virt_devices[0]))

/* The bus slot holding device d, or -1. */
static int virt_find_region(const struct vm *vm, const struct virt_device *d)
{
	for (int i = 0; i < vm->bus.count; i++) {
		const struct mmio_region *r = &vm->bus.regions[i];
		if (r->base == d->base && r->ops == d->ops)
			return i;
	}
	return -1;
}

/* Destroys the devices of the table that are on the bus, last first, and takes their
 * regions off the bus so nothing can reach freed state. */
static void virt_destroy_devices(struct vm *vm)
{
	for (size_t k = VIRT_NDEVICES; k-- > 0;) {
		const struct virt_device *d = &virt_devices[k];
		int i = virt_find_region(vm, d);
		if (i < 0)
			continue;
		void *opaque = vm->bus.regions[i].opaque;
		memmove(&vm->bus.regions[i], &vm->bus.regions[i + 1],
			(size_t)(vm->bus.count - i - 1) * sizeof(vm->bus.regions[0]));
		vm->bus.count--;
		d->destroy(vm, opaque);
	}
}

int virt_create(struct vm *vm)
{
	int err;

	if (vm->nharts < 1 || vm->nharts > VM_MAX_CPUS) {
		log_error("machine: %d harts requested, the virt machine takes 1 to %d",
			  vm->nharts, VM_MAX_CPUS);
		return -EINVAL;
	}
	if (vm->ram.base != RAM_BASE || vm->ram.size == 0) {
		log_error("machine: RAM must start at 0x%llx (got 0x%" PRIx64 ", %" PRIu64
			  " bytes)", RAM_BASE, vm->ram.base, vm->ram.size);
		return -EINVAL;
	}

	for (size_t k = 0; k < VIRT_NDEVICES; k++) {
		const struct virt_device *d = &virt_devices[k];
		struct mmio_region r = {
			.base = d->base,
			.size = d->size,
			.ops = d->ops,
			.name = d->name,
			.irq = d->irq,
		};

		err = d->create(vm, &r, &r.opaque);
		if (err) {
			log_error("machine: cannot create %s at 0x%" PRIx64 ": %s", d->name,
				  d->base, strerror(-err));
			goto err_devices;
		}
		err = bus_register(&vm->bus, &r);
		if (err) {
			log_error("machine: cannot map %s at 0x%" PRIx64 ": %s", d->name, d->base,
				  err == -EEXIST ? "overlaps another region" : strerror(-err));
			d->destroy(vm, r.opaque);
			goto err_devices;
		}
	}
	return 0;

err_devices:
	virt_destroy_devices(vm);
	return err;
}

int virt_load(struct vm *vm)
{
	const char *fw = vm->cfg->firmware;

	if (fw && strcmp(fw, "none") == 0)
		return boot_load_bare(vm);
	return boot_load_linux(vm);
}

void virt_destroy(struct vm *vm)
{
	if (vm->htif) {
		htif_destroy(vm->htif);
		vm->htif = NULL;
	}
	virt_destroy_devices(vm);
}
