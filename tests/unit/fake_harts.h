/* Fake harts for tests that run the machine's devices without CPUs: stubs for what the CPU
 * and the HTIF provide, and the interrupt lines the devices drive, recorded per hart. */
#ifndef FAKE_HARTS_H
#define FAKE_HARTS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/vm.h"

/* (struct hart *)&fake_harts[i] stands for hart i. */
extern char fake_harts[VM_MAX_CPUS];
/* The lines hart_set_irq has raised, per hart; each change broadcasts mip_cond under
 * mip_lock, for tests that wait for a line. */
extern _Atomic uint64_t mip[VM_MAX_CPUS];
extern pthread_mutex_t mip_lock;
extern pthread_cond_t mip_cond;
/* hart_kick calls, per hart. */
extern _Atomic int kicks[VM_MAX_CPUS];

#endif
