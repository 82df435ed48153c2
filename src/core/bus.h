/* MMIO bus: the one registry that owns the guest physical address map. */
#ifndef MABO_CORE_BUS_H
#define MABO_CORE_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct vm;

/* A device's register window. Accesses are 1, 2, 4 or 8 bytes, naturally sized; off is the
 * offset from the region base. Each device serialises its own state (harts call in from
 * their own threads). A read of a hole returns 0; writes to holes are ignored. */
struct mmio_ops {
	uint64_t (*read)(void *opaque, uint64_t off, unsigned size);
	void (*write)(void *opaque, uint64_t off, uint64_t val, unsigned size);
	/* Emits the device's node under the root of a device tree being built (libfdt
	 * sequential-write API, between fdt_begin_node of the parent and its end). May be NULL. */
	int (*fdt_node)(void *opaque, void *fdt, const struct vm *vm);
};

struct mmio_region {
	uint64_t base;
	uint64_t size;
	const struct mmio_ops *ops;
	void *opaque;
	const char *name;
	int irq; /* PLIC source number, or 0 for none */
};

#define BUS_MAX_REGIONS 64

struct bus {
	struct mmio_region regions[BUS_MAX_REGIONS];
	int count;
};

/* Registers a region; -EEXIST when it overlaps another, -ENOSPC when the table is full. */
int bus_register(struct bus *bus, const struct mmio_region *r) __attribute__((warn_unused_result));

/* The region holding addr, or NULL. */
const struct mmio_region *bus_find(const struct bus *bus, uint64_t addr);

#endif
