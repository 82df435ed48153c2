/* Goldfish RTC: wall-clock time in nanoseconds since the Unix epoch. */
#ifndef MABO_MACHINE_RISCV_VIRT_GOLDFISH_RTC_H
#define MABO_MACHINE_RISCV_VIRT_GOLDFISH_RTC_H

#include "core/bus.h"

struct vm;
struct sbuf;
struct sreader;
struct goldfish_rtc;

#define GOLDFISH_RTC_TIME_LOW 0x00 /* reading it latches TIME_HIGH */
#define GOLDFISH_RTC_TIME_HIGH 0x04
#define GOLDFISH_RTC_ALARM_LOW 0x08 /* writing it arms the alarm */
#define GOLDFISH_RTC_ALARM_HIGH 0x0c
#define GOLDFISH_RTC_IRQ_ENABLED 0x10
#define GOLDFISH_RTC_CLEAR_ALARM 0x14
#define GOLDFISH_RTC_ALARM_STATUS 0x18
#define GOLDFISH_RTC_CLEAR_INTERRUPT 0x1c

extern const struct mmio_ops goldfish_rtc_ops;

int goldfish_rtc_create(struct vm *vm, const struct mmio_region *where, struct goldfish_rtc **out)
	__attribute__((warn_unused_result));
void goldfish_rtc_destroy(struct goldfish_rtc *r);

/* Saved state (the clock's offset from the host's, the alarm registers). 0 or -EINVAL. */
void goldfish_rtc_save(struct goldfish_rtc *r, struct sbuf *b);
int goldfish_rtc_load(struct goldfish_rtc *r, struct sreader *rd);

#endif
