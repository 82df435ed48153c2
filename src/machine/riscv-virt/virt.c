/* The "virt" machine: its memory map, kept in one table that both registers the devices on
 * the bus and (through each device's fdt_node) describes them in the device tree, so every
 * address and interrupt number is written exactly once. Addresses match QEMU's virt. */
#include "machine/riscv-virt/virt.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/console.h"
#include "core/log.h"
#include "core/vm.h"
#include "migration/sbuf.h"
#include "machine/riscv-virt/boot.h"
#include "machine/riscv-virt/clint.h"
#include "machine/riscv-virt/fdt_util.h"
#include "machine/riscv-virt/goldfish_rtc.h"
#include "machine/riscv-virt/htif.h"
#include "machine/riscv-virt/plic.h"
#include "machine/riscv-virt/syscon.h"
#include "machine/riscv-virt/uart.h"
#include "virtio/mmio.h"
#include "virtio/virtio.h"

/* One row of the memory map: a device, or a row of identical slots (slot n at base +
 * n * size, PLIC source irq + n) of which the first used(vm) hold a device. */
struct virt_device {
	const char *name;
	uint64_t base;
	uint64_t size;
	int irq; /* PLIC source (of slot 0), 0 for none */
	const struct mmio_ops *ops;
	unsigned slots;			       /* 0 or 1: a single device */
	unsigned (*used)(const struct vm *vm); /* slots in use; NULL: all */
	/* Makes the device's state (the region's opaque) for a slot and wires it into vm. */
	int (*create)(struct vm *vm, const struct mmio_region *where, unsigned slot, void **opaque);
	void (*destroy)(struct vm *vm, void *opaque);
	/* create logs its failures itself, naming what failed (a disk's file): the machine
	 * adds no second line. */
	bool logs_errors;
	/* Saved state (snapshots, migration); NULL: the device has none. */
	void (*save)(void *opaque, struct sbuf *b);
	int (*load)(void *opaque, struct sreader *r);
};

static void virt_save_clint(void *o, struct sbuf *b)
{
	clint_save(o, b);
}
static int virt_load_clint(void *o, struct sreader *r)
{
	return clint_load(o, r);
}
static void virt_save_plic(void *o, struct sbuf *b)
{
	plic_save(o, b);
}
static int virt_load_plic(void *o, struct sreader *r)
{
	return plic_load(o, r);
}
static void virt_save_uart(void *o, struct sbuf *b)
{
	uart_save(o, b);
}
static int virt_load_uart(void *o, struct sreader *r)
{
	return uart_load(o, r);
}
static void virt_save_rtc(void *o, struct sbuf *b)
{
	goldfish_rtc_save(o, b);
}
static int virt_load_rtc(void *o, struct sreader *r)
{
	return goldfish_rtc_load(o, r);
}
static void virt_save_virtio(void *o, struct sbuf *b)
{
	virtio_mmio_save(o, b);
}
static int virt_load_virtio(void *o, struct sreader *r)
{
	return virtio_mmio_load(o, r);
}

static int virt_create_syscon(struct vm *vm, const struct mmio_region *where, unsigned slot,
			      void **opaque)
{
	struct syscon *s;
	(void)slot;
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

static int virt_create_rtc(struct vm *vm, const struct mmio_region *where, unsigned slot,
			   void **opaque)
{
	struct goldfish_rtc *r;
	(void)slot;
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

static int virt_create_clint(struct vm *vm, const struct mmio_region *where, unsigned slot,
			     void **opaque)
{
	(void)slot;
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

static int virt_create_plic(struct vm *vm, const struct mmio_region *where, unsigned slot,
			    void **opaque)
{
	(void)slot;
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

/* The UART prints on the host console, and reads it unless hvc0 was chosen for input. */
static int virt_create_uart(struct vm *vm, const struct mmio_region *where, unsigned slot,
			    void **opaque)
{
	(void)slot;
	int err = uart_create_console(vm, where, vm->console, vm->cfg->console == VM_CONSOLE_SERIAL,
				      &vm->uart);
	if (!err)
		*opaque = vm->uart;
	return err;
}

static void virt_destroy_uart(struct vm *vm, void *opaque)
{
	uart_destroy(opaque);
	vm->uart = NULL;
}

/* Slot n holds the n-th device of the command line (vm->cfg->devices). */
static int virt_create_virtio(struct vm *vm, const struct mmio_region *where, unsigned slot,
			      void **opaque)
{
	const struct vm_device_config *dc = &vm->cfg->devices[slot];
	const struct virtio_device_ops *ops = virtio_device_find(dc->type);
	struct virtio_mmio *t;

	if (!ops) {
		log_error("device '%s': no such device type", dc->type);
		return -EINVAL;
	}
	int err = virtio_mmio_create(vm, where, VIRT_PHANDLE_PLIC, ops, dc, &t);
	if (!err)
		*opaque = t;
	return err;
}

static void virt_destroy_virtio(struct vm *vm, void *opaque)
{
	(void)vm;
	virtio_mmio_destroy(opaque);
}

static unsigned virt_virtio_used(const struct vm *vm)
{
	return (unsigned)vm->cfg->ndevices;
}

#define VIRT_VIRTIO_SLOTS 8

/* The power button: a virtio-input device of its own, outside the slots the command line
 * fills, so that every machine has it whatever devices were asked for. */
static int virt_create_power_button(struct vm *vm, const struct mmio_region *where, unsigned slot,
				    void **opaque)
{
	static const struct vm_device_config dc = { .type = "virtio-input" };
	struct virtio_mmio *t;
	(void)slot;

	int err = virtio_mmio_create(vm, where, VIRT_PHANDLE_PLIC, &virtio_input_ops, &dc, &t);
	if (!err) {
		*opaque = t;
		vm->power_button = virtio_mmio_dev(t);
	}
	return err;
}

/* Every VM made by vm_init has its event loop; a machine assembled without one (to look at
 * its memory map or device tree) cannot run a virtio device, and has no button. */
static unsigned virt_power_button_used(const struct vm *vm)
{
	return vm->loop ? 1 : 0;
}

static void virt_destroy_power_button(struct vm *vm, void *opaque)
{
	vm->power_button = NULL;
	virtio_mmio_destroy(opaque);
}

/* The memory map. Devices are created in this order and destroyed in reverse: the PLIC
 * exists before the devices that raise its sources, and the UART and the virtio devices
 * (whose threads raise them) stop before the PLIC goes. RAM is at RAM_BASE (0x80000000),
 * mapped by the caller, cfg->memory bytes long. */
static const struct virt_device virt_devices[] = {
	{ .name = "test",
	  .base = 0x00100000,
	  .size = 0x1000,
	  .ops = &syscon_ops,
	  .create = virt_create_syscon,
	  .destroy = virt_destroy_syscon },
	{ .name = "rtc",
	  .base = 0x00101000,
	  .size = 0x1000,
	  .irq = 11,
	  .ops = &goldfish_rtc_ops,
	  .create = virt_create_rtc,
	  .destroy = virt_destroy_rtc,
	  .save = virt_save_rtc,
	  .load = virt_load_rtc },
	{ .name = "clint",
	  .base = 0x02000000,
	  .size = 0x10000,
	  .ops = &clint_ops,
	  .create = virt_create_clint,
	  .destroy = virt_destroy_clint,
	  .save = virt_save_clint,
	  .load = virt_load_clint },
	{ .name = "plic",
	  .base = 0x0c000000,
	  .size = 0x4000000,
	  .ops = &plic_ops,
	  .create = virt_create_plic,
	  .destroy = virt_destroy_plic,
	  .save = virt_save_plic,
	  .load = virt_load_plic },
	{ .name = "uart0",
	  .base = 0x10000000,
	  .size = 0x100,
	  .irq = 10,
	  .ops = &uart_ops,
	  .create = virt_create_uart,
	  .destroy = virt_destroy_uart,
	  .save = virt_save_uart,
	  .load = virt_load_uart },
	/* virtio-mmio slots 0..7 at 0x10001000 + n * 0x1000, PLIC sources 1 + n, as on QEMU's
	 * virt; the devices of the command line fill them in order. */
	{ .name = "virtio_mmio",
	  .base = 0x10001000,
	  .size = 0x1000,
	  .irq = 1,
	  .ops = &virtio_mmio_ops,
	  .slots = VIRT_VIRTIO_SLOTS,
	  .used = virt_virtio_used,
	  .create = virt_create_virtio,
	  .destroy = virt_destroy_virtio,
	  .logs_errors = true,
	  .save = virt_save_virtio,
	  .load = virt_load_virtio },
	/* Right after the slots, on the next free PLIC source (QEMU's virt leaves both
	 * unused). */
	{ .name = "power_button",
	  .base = 0x10009000,
	  .size = 0x1000,
	  .irq = 9,
	  .ops = &virtio_mmio_ops,
	  .used = virt_power_button_used,
	  .create = virt_create_power_button,
	  .destroy = virt_destroy_power_button,
	  .logs_errors = true,
	  .save = virt_save_virtio,
	  .load = virt_load_virtio },
};

#define VIRT_NDEVICES (sizeof(virt_devices) / sizeof(virt_devices[0]))

static unsigned virt_slots(const struct virt_device *d)
{
	return d->slots ? d->slots : 1;
}

/* The bus entry holding slot n of d, or -1. */
static int virt_find_region(const struct vm *vm, const struct virt_device *d, unsigned n)
{
	uint64_t base = d->base + (uint64_t)n * d->size;

	for (int i = 0; i < vm->bus.count; i++) {
		const struct mmio_region *r = &vm->bus.regions[i];
		if (r->base == base && r->ops == d->ops)
			return i;
	}
	return -1;
}

/* Destroys the devices of the table that are on the bus, last first, and takes their
 * regions off the bus so nothing can reach freed state; then the host console. */
static void virt_destroy_devices(struct vm *vm)
{
	for (size_t k = VIRT_NDEVICES; k-- > 0;) {
		const struct virt_device *d = &virt_devices[k];
		for (unsigned n = virt_slots(d); n-- > 0;) {
			int i = virt_find_region(vm, d, n);
			if (i < 0)
				continue;
			void *opaque = vm->bus.regions[i].opaque;
			memmove(&vm->bus.regions[i], &vm->bus.regions[i + 1],
				(size_t)(vm->bus.count - i - 1) * sizeof(vm->bus.regions[0]));
			vm->bus.count--;
			d->destroy(vm, opaque);
		}
	}
	console_destroy(vm->console);
	vm->console = NULL;
}

/* Creates slot n of d and maps it. 0 or -errno (after logging one line). */
static int virt_create_slot(struct vm *vm, const struct virt_device *d, unsigned n)
{
	struct mmio_region r = {
		.base = d->base + (uint64_t)n * d->size,
		.size = d->size,
		.ops = d->ops,
		.name = d->name,
		.irq = d->irq ? d->irq + (int)n : 0,
	};
	int err = d->create(vm, &r, n, &r.opaque);

	if (err) {
		if (!d->logs_errors)
			log_error("machine: cannot create %s at 0x%" PRIx64 ": %s", d->name, r.base,
				  strerror(-err));
		return err;
	}
	err = bus_register(&vm->bus, &r);
	if (err) {
		log_error("machine: cannot map %s at 0x%" PRIx64 ": %s", d->name, r.base,
			  err == -EEXIST ? "overlaps another region" : strerror(-err));
		d->destroy(vm, r.opaque);
	}
	return err;
}

int virt_create(struct vm *vm)
{
	int err;

	if (vm->nharts < 1 || vm->nharts > VM_MAX_CPUS) {
		log_error("machine: %d harts requested, the virt machine takes 1 to %d", vm->nharts,
			  VM_MAX_CPUS);
		return -EINVAL;
	}
	if (vm->ram.base != RAM_BASE || vm->ram.size == 0) {
		log_error("machine: RAM must start at 0x%llx (got 0x%" PRIx64 ", %" PRIu64
			  " bytes)",
			  RAM_BASE, vm->ram.base, vm->ram.size);
		return -EINVAL;
	}

	if (vm->cfg->ndevices > VIRT_VIRTIO_SLOTS) {
		log_error("machine: %d devices requested, the virt machine has %d virtio slots",
			  vm->cfg->ndevices, VIRT_VIRTIO_SLOTS);
		return -EINVAL;
	}
	/* The guest's consoles share standard input and output. */
	err = console_create(vm, STDIN_FILENO, STDOUT_FILENO, &vm->console);
	if (err)
		return err;

	for (size_t k = 0; k < VIRT_NDEVICES; k++) {
		const struct virt_device *d = &virt_devices[k];
		unsigned used = d->used ? d->used(vm) : virt_slots(d);
		for (unsigned n = 0; n < used && n < virt_slots(d); n++) {
			err = virt_create_slot(vm, d, n);
			if (err)
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

/* The devices' saved state, in table order (the PLIC before the devices whose lines it
 * holds): for each device on the bus, its name, slot and a length-prefixed blob. */
void virt_save_state(struct vm *vm, struct sbuf *b)
{
	for (size_t k = 0; k < VIRT_NDEVICES; k++) {
		const struct virt_device *d = &virt_devices[k];
		if (!d->save)
			continue;
		for (unsigned n = 0; n < virt_slots(d); n++) {
			int i = virt_find_region(vm, d, n);
			if (i < 0)
				continue;
			struct sbuf dev;
			sbuf_init(&dev);
			d->save(vm->bus.regions[i].opaque, &dev);
			sbuf_str(b, d->name);
			sbuf_u32(b, n);
			sbuf_u32(b, (uint32_t)dev.len);
			sbuf_put(b, dev.data, dev.len);
			if (dev.oom)
				b->oom = true;
			sbuf_free(&dev);
		}
	}
}

int virt_load_state(struct vm *vm, struct sreader *r)
{
	static char why[160];

	for (size_t k = 0; k < VIRT_NDEVICES; k++) {
		const struct virt_device *d = &virt_devices[k];
		if (!d->load)
			continue;
		for (unsigned n = 0; n < virt_slots(d); n++) {
			int i = virt_find_region(vm, d, n);
			if (i < 0)
				continue;
			char name[32];
			sreader_str(r, name, sizeof(name));
			uint32_t slot = sreader_u32(r);
			uint32_t len = sreader_len(r, 16U << 20, "device state too long");
			const uint8_t *p = sreader_take(r, len);
			if (!sreader_ok(r))
				return -EINVAL;
			if (strcmp(name, d->name) != 0 || slot != n) {
				char esc[80];
				str_escape(esc, sizeof(esc), name, strlen(name));
				snprintf(why, sizeof(why),
					 "expected the state of %s %u, found %s %u", d->name, n,
					 esc, slot);
				sreader_fail(r, why);
				return -EINVAL;
			}
			struct sreader dr;
			sreader_init(&dr, p, len);
			int err = d->load(vm->bus.regions[i].opaque, &dr);
			if (!err && dr.left)
				sreader_fail(&dr, "trailing bytes");
			if (err || dr.err) {
				snprintf(why, sizeof(why), "%s %u: %s", d->name, n,
					 dr.err ? dr.err : "cannot load");
				sreader_fail(r, why);
				return -EINVAL;
			}
		}
	}
	if (r->left) {
		sreader_fail(r, "state of a device this machine does not have");
		return -EINVAL;
	}
	return 0;
}

unsigned virt_quiesce(struct vm *vm)
{
	unsigned busy = 0;

	for (int i = 0; i < vm->bus.count; i++)
		if (vm->bus.regions[i].ops == &virtio_mmio_ops)
			busy += virtio_dev_quiesce(virtio_mmio_dev(vm->bus.regions[i].opaque));
	return busy;
}

int virt_claim(struct vm *vm, bool take)
{
	int err = 0;

	for (int i = 0; i < vm->bus.count; i++)
		if (vm->bus.regions[i].ops == &virtio_mmio_ops) {
			int e = virtio_dev_claim(virtio_mmio_dev(vm->bus.regions[i].opaque), take);
			if (e && !err)
				err = e;
		}
	return err;
}

void virt_unquiesce(struct vm *vm)
{
	for (int i = 0; i < vm->bus.count; i++)
		if (vm->bus.regions[i].ops == &virtio_mmio_ops)
			virtio_dev_unquiesce(virtio_mmio_dev(vm->bus.regions[i].opaque));
}
