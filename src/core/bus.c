#include "core/bus.h"

#include <errno.h>
#include <stddef.h>

int bus_register(struct bus *bus, const struct mmio_region *r)
{
	if (bus->count >= BUS_MAX_REGIONS)
		return -ENOSPC;
	for (int i = 0; i < bus->count; i++) {
		const struct mmio_region *o = &bus->regions[i];
		if (r->base < o->base + o->size && o->base < r->base + r->size)
			return -EEXIST;
	}
	bus->regions[bus->count++] = *r;
	return 0;
}

const struct mmio_region *bus_find(const struct bus *bus, uint64_t addr)
{
	for (int i = 0; i < bus->count; i++) {
		const struct mmio_region *r = &bus->regions[i];
		if (addr - r->base < r->size)
			return r;
	}
	return NULL;
}
