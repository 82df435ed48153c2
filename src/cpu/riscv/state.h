/* A hart's saved state (see state.c). */
#ifndef MABO_CPU_RISCV_STATE_H
#define MABO_CPU_RISCV_STATE_H

struct hart;
struct sbuf;
struct sreader;

#include <stdint.h>

/* The layout hart_save writes. 2: adds Sstc (stimecmp, menvcfg.STCE). hart_load reads every
 * version from 1 up. */
#define HART_STATE_VERSION 2

/* Appends h's architectural state to b. The hart must be parked (vm_pause) or not
 * started. */
void hart_save(const struct hart *h, struct sbuf *b);

/* Replaces h's state with what hart_save wrote in layout `version`; 0, or -EINVAL with
 * r->err saying why (h unchanged then). The hart must not be running. */
int hart_load(struct hart *h, struct sreader *r, uint32_t version);

#endif
