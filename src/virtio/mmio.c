/* virtio-mmio version 2 (see mmio.h): the register window decoded into the transport-free
 * virtio_dev calls (virtio.h).
 *
 * vCPU threads access the registers under the device lock; a QueueNotify write only sets a
 * bit and writes an eventfd, and the device does the work on the event-loop thread. The
 * interrupt line follows InterruptStatus: high while any bit is set, low once the driver
 * acknowledged them all. */
#include "virtio/mmio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/vm.h"
#include "migration/sbuf.h"
#include "machine/riscv-virt/plic.h"
#include "virtio/virtio.h"

#include <libfdt.h>

struct virtio_mmio {
	struct vm *vm;
	uint64_t base;
	uint64_t size;
	int irq;
	uint32_t irq_parent;

	/* Transport registers, under vdev.lock. */
	uint32_t device_features_sel;
	uint32_t driver_features_sel;
	uint32_t queue_sel;
	uint32_t interrupt_status;
	bool irq_level;

	struct virtio_dev vdev;
};

static void virtio_mmio_update_irq(struct virtio_mmio *t)
{
	bool level = t->interrupt_status != 0;

	if (level != t->irq_level) {
		t->irq_level = level;
		plic_set_irq(t->vm->plic, t->irq, level);
	}
}

/* The core's interrupt callback; vdev.lock is held. */
static void virtio_mmio_interrupt(void *transport, uint32_t cause, unsigned q)
{
	struct virtio_mmio *t = transport;

	(void)q; /* one line for all queues */
	t->interrupt_status |= cause;
	virtio_mmio_update_irq(t);
}

static const struct virtio_transport_ops virtio_mmio_transport_ops = {
	.interrupt = virtio_mmio_interrupt,
};

/* The selected queue, or NULL when QueueSel is past the device's queues. */
static struct virtq *virtio_mmio_queue(struct virtio_mmio *t)
{
	if (t->queue_sel >= t->vdev.ops->num_queues)
		return NULL;
	return virtio_dev_queue(&t->vdev, t->queue_sel);
}

static uint32_t virtio_mmio_read_reg(struct virtio_mmio *t, uint64_t off)
{
	struct virtio_dev *vdev = &t->vdev;
	struct virtq *q;

	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE: return VIRTIO_MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION: return 2;
	case VIRTIO_MMIO_DEVICE_ID: return vdev->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID: return VIRTIO_MMIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES: return virtio_dev_features(vdev, t->device_features_sel);
	case VIRTIO_MMIO_QUEUE_NUM_MAX: return virtio_mmio_queue(t) ? vdev->ops->queue_max : 0;
	case VIRTIO_MMIO_QUEUE_NUM: q = virtio_mmio_queue(t); return q ? q->size : 0;
	case VIRTIO_MMIO_QUEUE_READY: q = virtio_mmio_queue(t); return q && q->ready;
	case VIRTIO_MMIO_INTERRUPT_STATUS: return t->interrupt_status;
	case VIRTIO_MMIO_STATUS: return vdev->status;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH: {
		q = virtio_mmio_queue(t);
		if (!q)
			return 0;
		uint64_t v = off < VIRTIO_MMIO_QUEUE_DRIVER_LOW	  ? q->desc
			     : off < VIRTIO_MMIO_QUEUE_DEVICE_LOW ? q->avail
								  : q->used;
		return off & 4 ? (uint32_t)(v >> 32) : (uint32_t)v;
	}
	case VIRTIO_MMIO_SHM_LEN_LOW:
	case VIRTIO_MMIO_SHM_LEN_HIGH:
	case VIRTIO_MMIO_SHM_BASE_LOW:
	case VIRTIO_MMIO_SHM_BASE_HIGH: return 0xffffffff; /* length ~0: no shared memory region */
	case VIRTIO_MMIO_CONFIG_GENERATION: return vdev->config_generation;
	default: return 0;
	}
}

/* Sets the low or high half of a queue address (only while the queue is not ready). */
static void virtio_mmio_set_half(uint64_t *addr, uint64_t off, uint32_t val)
{
	if (off & 4)
		*addr = (*addr & 0xffffffffULL) | (uint64_t)val << 32;
	else
		*addr = (*addr & ~0xffffffffULL) | val;
}

static void virtio_mmio_reset(struct virtio_mmio *t)
{
	virtio_dev_reset(&t->vdev);
	t->device_features_sel = 0;
	t->driver_features_sel = 0;
	t->queue_sel = 0;
	t->interrupt_status = 0;
	virtio_mmio_update_irq(t);
}

static void virtio_mmio_write_reg(struct virtio_mmio *t, uint64_t off, uint32_t val)
{
	struct virtio_dev *vdev = &t->vdev;
	struct virtq *q;

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL: t->device_features_sel = val; break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		virtio_dev_set_guest_features(vdev, t->driver_features_sel, val);
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL: t->driver_features_sel = val; break;
	case VIRTIO_MMIO_QUEUE_SEL: t->queue_sel = val; break;
	case VIRTIO_MMIO_QUEUE_NUM:
		q = virtio_mmio_queue(t);
		/* Checked when the queue is made ready; too big for 16 bits is never valid. */
		if (q && !q->ready)
			q->size = val <= VIRTQ_SIZE_MAX ? (uint16_t)val : 0;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (t->queue_sel < vdev->ops->num_queues)
			virtio_dev_set_queue_ready(vdev, t->queue_sel, val & 1);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		/* Only signals the device: its work runs on the event loop. */
		virtio_dev_notify(vdev, val & 0xffff);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		t->interrupt_status &= ~val;
		virtio_mmio_update_irq(t);
		break;
	case VIRTIO_MMIO_STATUS:
		if ((val & 0xff) == 0)
			virtio_mmio_reset(t);
		else
			virtio_dev_set_status(vdev, (uint8_t)val);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		q = virtio_mmio_queue(t);
		if (q && !q->ready)
			virtio_mmio_set_half(&q->desc, off, val);
		break;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		q = virtio_mmio_queue(t);
		if (q && !q->ready)
			virtio_mmio_set_half(&q->avail, off, val);
		break;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		q = virtio_mmio_queue(t);
		if (q && !q->ready)
			virtio_mmio_set_half(&q->used, off, val);
		break;
	default: break; /* read-only or unknown: ignored */
	}
}

static uint64_t virtio_mmio_read(void *opaque, uint64_t off, unsigned size)
{
	struct virtio_mmio *t = opaque;
	uint64_t val = 0;

	pthread_mutex_lock(&t->vdev.lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		/* The configuration space: any access size, little-endian like the fields. */
		uint8_t buf[8] = { 0 };
		virtio_dev_config_read(&t->vdev, (uint32_t)(off - VIRTIO_MMIO_CONFIG), buf, size);
		for (unsigned i = 0; i < size; i++)
			val |= (uint64_t)buf[i] << (8 * i);
	} else if (size == 4 && !(off & 3)) {
		val = virtio_mmio_read_reg(t, off);
	}
	pthread_mutex_unlock(&t->vdev.lock);
	return val;
}

static void virtio_mmio_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct virtio_mmio *t = opaque;

	pthread_mutex_lock(&t->vdev.lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint8_t buf[8];
		for (unsigned i = 0; i < size; i++)
			buf[i] = (uint8_t)(val >> (8 * i));
		virtio_dev_config_write(&t->vdev, (uint32_t)(off - VIRTIO_MMIO_CONFIG), buf, size);
	} else if (size == 4 && !(off & 3)) {
		/* Registers are 32 bits wide; other widths are ignored (4.2.2.2). */
		virtio_mmio_write_reg(t, off, (uint32_t)val);
	}
	pthread_mutex_unlock(&t->vdev.lock);
}

/* Evaluates a libfdt call; on failure returns -ENOSPC or -EINVAL from the caller. */
#define VIRTIO_MMIO_FDT(call)                                                                      \
	do {                                                                                       \
		int fdt_ret_ = (call);                                                             \
		if (fdt_ret_ < 0)                                                                  \
			return fdt_ret_ == -FDT_ERR_NOSPACE ? -ENOSPC : -EINVAL;                   \
	} while (0)

/* The node under /soc (#address-cells = #size-cells = 2), as QEMU's virt machine has it. */
static int virtio_mmio_fdt_node(void *opaque, void *fdt, const struct vm *vm)
{
	struct virtio_mmio *t = opaque;
	char name[40];
	fdt32_t reg[4] = {
		cpu_to_fdt32((uint32_t)(t->base >> 32)),
		cpu_to_fdt32((uint32_t)t->base),
		cpu_to_fdt32((uint32_t)(t->size >> 32)),
		cpu_to_fdt32((uint32_t)t->size),
	};

	(void)vm;
	snprintf(name, sizeof(name), "virtio_mmio@%" PRIx64, t->base);
	VIRTIO_MMIO_FDT(fdt_begin_node(fdt, name));
	VIRTIO_MMIO_FDT(fdt_property_string(fdt, "compatible", "virtio,mmio"));
	VIRTIO_MMIO_FDT(fdt_property(fdt, "reg", reg, sizeof(reg)));
	VIRTIO_MMIO_FDT(fdt_property_cell(fdt, "interrupt-parent", t->irq_parent));
	VIRTIO_MMIO_FDT(fdt_property_cell(fdt, "interrupts", (uint32_t)t->irq));
	/* Devices see guest RAM coherently: no cache maintenance around DMA. */
	VIRTIO_MMIO_FDT(fdt_property(fdt, "dma-coherent", NULL, 0));
	VIRTIO_MMIO_FDT(fdt_end_node(fdt));
	return 0;
}

const struct mmio_ops virtio_mmio_ops = {
	.read = virtio_mmio_read,
	.write = virtio_mmio_write,
	.fdt_node = virtio_mmio_fdt_node,
};

int virtio_mmio_create(struct vm *vm, const struct mmio_region *where, uint32_t irq_parent,
		       const struct virtio_device_ops *ops, const struct vm_device_config *cfg,
		       struct virtio_mmio **out)
{
	char label[48];
	int err;

	snprintf(label, sizeof(label), "%s at 0x%" PRIx64, ops->name, where->base);
	if (where->size < VIRTIO_MMIO_CONFIG + ops->config_size) {
		log_error("%s: a %" PRIu64 "-byte window cannot hold its registers", label,
			  where->size);
		return -EINVAL;
	}
	struct virtio_mmio *t = calloc(1, sizeof(*t));
	if (!t) {
		log_error("%s: out of memory", label);
		return -ENOMEM;
	}
	t->vm = vm;
	t->base = where->base;
	t->size = where->size;
	t->irq = where->irq;
	t->irq_parent = irq_parent;
	err = virtio_dev_init(&t->vdev, vm, ops, cfg, label, &virtio_mmio_transport_ops, t);
	if (err) {
		free(t);
		return err;
	}
	*out = t;
	return 0;
}

void virtio_mmio_destroy(struct virtio_mmio *t)
{
	if (!t)
		return;
	virtio_dev_uninit(&t->vdev);
	if (t->irq_level)
		plic_set_irq(t->vm->plic, t->irq, false);
	free(t);
}

void virtio_mmio_save(struct virtio_mmio *t, struct sbuf *b)
{
	pthread_mutex_lock(&t->vdev.lock);
	sbuf_u32(b, t->device_features_sel);
	sbuf_u32(b, t->driver_features_sel);
	sbuf_u32(b, t->queue_sel);
	sbuf_u32(b, t->interrupt_status);
	sbuf_bool(b, t->irq_level);
	pthread_mutex_unlock(&t->vdev.lock);
	virtio_dev_save(&t->vdev, b);
}

int virtio_mmio_load(struct virtio_mmio *t, struct sreader *r)
{
	uint32_t dsel = sreader_u32(r), gsel = sreader_u32(r), qsel = sreader_u32(r);
	uint32_t isr = sreader_u32(r);
	bool level = sreader_bool(r);

	if (!sreader_ok(r))
		return -EINVAL;
	int err = virtio_dev_load(&t->vdev, r);
	if (err)
		return err;
	pthread_mutex_lock(&t->vdev.lock);
	t->device_features_sel = dsel;
	t->driver_features_sel = gsel;
	t->queue_sel = qsel;
	t->interrupt_status = isr & (VIRTIO_INT_USED | VIRTIO_INT_CONFIG);
	/* The PLIC's copy of the line was restored with it. */
	t->irq_level = level;
	virtio_mmio_update_irq(t);
	pthread_mutex_unlock(&t->vdev.lock);
	return 0;
}

struct virtio_dev *virtio_mmio_dev(struct virtio_mmio *t)
{
	return &t->vdev;
}
