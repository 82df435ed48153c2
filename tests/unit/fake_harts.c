/* Fake harts: see fake_harts.h. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include "cpu/riscv/cpu.h"
#include "cpu/riscv/state.h"
#include "fake_harts.h"
#include "machine/riscv-virt/htif.h"

char fake_harts[VM_MAX_CPUS];
_Atomic uint64_t mip[VM_MAX_CPUS];
pthread_mutex_t mip_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t mip_cond = PTHREAD_COND_INITIALIZER;

void hart_set_irq(struct hart *h, uint64_t mask, bool level)
{
	int i = (int)((char *)h - fake_harts);
	pthread_mutex_lock(&mip_lock);
	if (level)
		atomic_fetch_or(&mip[i], mask);
	else
		atomic_fetch_and(&mip[i], ~mask);
	pthread_cond_broadcast(&mip_cond);
	pthread_mutex_unlock(&mip_lock);
}

void hart_reset(struct hart *h, uint64_t pc, uint64_t a0, uint64_t a1, uint64_t a2)
{
	(void)h, (void)pc, (void)a0, (void)a1, (void)a2;
}

/* The machine's state table names these; nothing here saves a fake hart. */
void hart_save(const struct hart *h, struct sbuf *b)
{
	(void)h, (void)b;
}
int hart_load(struct hart *h, struct sreader *r, uint32_t version)
{
	(void)h, (void)r, (void)version;
	return -EINVAL;
}

_Atomic int kicks[VM_MAX_CPUS];

void hart_kick(struct hart *h)
{
	atomic_fetch_add(&kicks[(char *)h - fake_harts], 1);
}

struct htif *htif_create(struct vm *vm, uint64_t tohost)
{
	(void)vm, (void)tohost;
	return NULL;
}

void htif_destroy(struct htif *h)
{
	(void)h;
}
