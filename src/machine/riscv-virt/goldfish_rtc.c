/* Goldfish RTC. Time is the host's wall clock plus an offset the guest may set. The alarm
 * registers hold what the guest writes but never fire: nothing on this machine needs a
 * wake-up alarm, and Linux only reads them back. */
#include "machine/riscv-virt/goldfish_rtc.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/vm.h"
#include "migration/sbuf.h"
#include "machine/riscv-virt/fdt_util.h"

#include <libfdt.h>

struct goldfish_rtc {
	struct vm *vm;
	uint64_t base;
	uint64_t size;
	int irq;

	pthread_mutex_t lock;
	int64_t offset_ns;  /* guest time - host wall clock */
	uint32_t time_high; /* latched by a TIME_LOW read */
	uint32_t set_high;  /* TIME_HIGH written, applied with the next TIME_LOW write */
	uint64_t alarm_ns;
	bool alarm_running;
	uint32_t irq_enabled;
};

static uint64_t goldfish_rtc_host_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t goldfish_rtc_read(void *opaque, uint64_t off, unsigned size)
{
	struct goldfish_rtc *r = opaque;
	uint64_t val = 0;

	(void)size;
	pthread_mutex_lock(&r->lock);
	switch (off) {
	case GOLDFISH_RTC_TIME_LOW: {
		/* Latch the high word so a LOW-then-HIGH pair reads one consistent instant. */
		uint64_t now = goldfish_rtc_host_ns() + (uint64_t)r->offset_ns;
		r->time_high = (uint32_t)(now >> 32);
		val = (uint32_t)now;
		break;
	}
	case GOLDFISH_RTC_TIME_HIGH: val = r->time_high; break;
	case GOLDFISH_RTC_ALARM_LOW: val = (uint32_t)r->alarm_ns; break;
	case GOLDFISH_RTC_ALARM_HIGH: val = (uint32_t)(r->alarm_ns >> 32); break;
	case GOLDFISH_RTC_IRQ_ENABLED: val = r->irq_enabled; break;
	case GOLDFISH_RTC_ALARM_STATUS: val = r->alarm_running; break;
	default: break;
	}
	pthread_mutex_unlock(&r->lock);
	return val;
}

static void goldfish_rtc_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct goldfish_rtc *r = opaque;

	(void)size;
	pthread_mutex_lock(&r->lock);
	switch (off) {
	case GOLDFISH_RTC_TIME_LOW: {
		/* Linux writes HIGH then LOW: the LOW write sets the time. */
		uint64_t t = (uint64_t)r->set_high << 32 | (uint32_t)val;
		r->offset_ns = (int64_t)(t - goldfish_rtc_host_ns());
		break;
	}
	case GOLDFISH_RTC_TIME_HIGH: r->set_high = (uint32_t)val; break;
	case GOLDFISH_RTC_ALARM_LOW:
		r->alarm_ns = (r->alarm_ns & ~0xffffffffULL) | (uint32_t)val;
		r->alarm_running = true;
		break;
	case GOLDFISH_RTC_ALARM_HIGH:
		r->alarm_ns = (r->alarm_ns & 0xffffffffULL) | (uint64_t)(uint32_t)val << 32;
		break;
	case GOLDFISH_RTC_IRQ_ENABLED: r->irq_enabled = (uint32_t)val & 1; break;
	case GOLDFISH_RTC_CLEAR_ALARM: r->alarm_running = false; break;
	case GOLDFISH_RTC_CLEAR_INTERRUPT:
		break; /* the alarm never fires, so there is nothing to clear */
	default: break;
	}
	pthread_mutex_unlock(&r->lock);
}

static int goldfish_rtc_fdt_node(void *opaque, void *fdt, const struct vm *vm)
{
	struct goldfish_rtc *r = opaque;
	int err;

	(void)vm;
	err = virt_fdt_begin_region(fdt, "rtc", r->base, r->size);
	if (err)
		return err;
	VIRT_FDT_TRY(fdt_property_string(fdt, "compatible", "google,goldfish-rtc"));
	err = virt_fdt_plic_irq(fdt, r->irq);
	if (err)
		return err;
	VIRT_FDT_TRY(fdt_end_node(fdt));
	return 0;
}

const struct mmio_ops goldfish_rtc_ops = {
	.read = goldfish_rtc_read,
	.write = goldfish_rtc_write,
	.fdt_node = goldfish_rtc_fdt_node,
};

int goldfish_rtc_create(struct vm *vm, const struct mmio_region *where, struct goldfish_rtc **out)
{
	struct goldfish_rtc *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	r->vm = vm;
	r->base = where->base;
	r->size = where->size;
	r->irq = where->irq;
	err = -pthread_mutex_init(&r->lock, NULL);
	if (err) {
		free(r);
		return err;
	}
	*out = r;
	return 0;
}

void goldfish_rtc_destroy(struct goldfish_rtc *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* The guest's wall clock is the host's plus an offset; the offset travels, so a guest
 * that set its clock keeps it on the other side (whose host clock is assumed right). */
void goldfish_rtc_save(struct goldfish_rtc *r, struct sbuf *b)
{
	pthread_mutex_lock(&r->lock);
	sbuf_u64(b, (uint64_t)r->offset_ns);
	sbuf_u32(b, r->time_high);
	sbuf_u32(b, r->set_high);
	sbuf_u64(b, r->alarm_ns);
	sbuf_bool(b, r->alarm_running);
	sbuf_u32(b, r->irq_enabled);
	pthread_mutex_unlock(&r->lock);
}

int goldfish_rtc_load(struct goldfish_rtc *r, struct sreader *rd)
{
	int64_t off = (int64_t)sreader_u64(rd);
	uint32_t th = sreader_u32(rd), sh = sreader_u32(rd);
	uint64_t alarm = sreader_u64(rd);
	bool running = sreader_bool(rd);
	uint32_t en = sreader_u32(rd);
	if (!sreader_ok(rd))
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	r->offset_ns = off;
	r->time_high = th;
	r->set_high = sh;
	r->alarm_ns = alarm;
	r->alarm_running = running;
	r->irq_enabled = en & 1;
	pthread_mutex_unlock(&r->lock);
	return 0;
}
