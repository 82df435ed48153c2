#include "core/vm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/riscv/cpu.h"

uint64_t host_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void vm_request_exit(struct vm *vm, enum vm_exit_reason reason, uint64_t code)
{
	pthread_mutex_lock(&vm->exit_lock);
	int expected = VM_EXIT_NONE;
	if (atomic_compare_exchange_strong(&vm->exit_reason, &expected, (int)reason))
		vm->exit_code = code;
	pthread_cond_broadcast(&vm->exit_cond);
	pthread_mutex_unlock(&vm->exit_lock);
	/* Parked harts and a waiting vm_pause look at exit_reason too. */
	pthread_mutex_lock(&vm->pause_lock);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	for (int i = 0; i < vm->nharts; i++)
		if (vm->harts[i])
			hart_kick(vm->harts[i]);
}

void vm_pause_init(struct vm *vm)
{
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	atomic_store(&vm->pause_req, 0);
	vm->parked = 0;
	vm->running_harts = 0;
	atomic_store(&vm->dirty_log, NULL);
	atomic_store(&vm->access_log, NULL);
}

void vm_pause_uninit(struct vm *vm)
{
	vm_dirty_log_stop(vm);
	free(vm_access_log_stop(vm));
	pthread_cond_destroy(&vm->pause_cond);
	pthread_mutex_destroy(&vm->pause_lock);
}

void vm_hart_enter(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	vm->running_harts++;
	pthread_mutex_unlock(&vm->pause_lock);
}

void vm_hart_leave(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	vm->running_harts--;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

void vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	atomic_fetch_add(&vm->pause_req, 1);
	pthread_mutex_unlock(&vm->pause_lock);
	for (int i = 0; i < vm->nharts; i++)
		if (vm->harts[i])
			hart_kick(vm->harts[i]);
	pthread_mutex_lock(&vm->pause_lock);
	while (vm->parked < vm->running_harts && !atomic_load(&vm->exit_reason))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	pthread_mutex_unlock(&vm->pause_lock);
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	if (atomic_load(&vm->pause_req) > 0 && atomic_fetch_sub(&vm->pause_req, 1) == 1)
		pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

void vm_hart_park(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->pause_cond);
	while (atomic_load(&vm->pause_req) && !atomic_load(&vm->exit_reason))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	vm->parked--;
	pthread_mutex_unlock(&vm->pause_lock);
}

int vm_dirty_log_start(struct vm *vm)
{
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;
	size_t words = (size_t)((npages + 63) / 64);
	uint64_t *log = malloc(words * sizeof(uint64_t));

	if (!log)
		return -ENOMEM;
	memset(log, 0xff, words * sizeof(uint64_t));
	if (npages % 64)
		log[words - 1] = (1ULL << (npages % 64)) - 1;
	uint64_t *old = atomic_exchange(&vm->dirty_log, log);
	free(old);
	return 0;
}

void vm_dirty_log_stop(struct vm *vm)
{
	/* Writers load the pointer and use it at once; those run on the event loop or on
	 * harts, which the caller has stopped or which are past their use (see migrate.c). */
	uint64_t *old = atomic_exchange(&vm->dirty_log, NULL);
	free(old);
}

int vm_access_log_start(struct vm *vm)
{
	uint64_t *log = calloc((vm->ram.size / PAGE_SIZE + 63) / 64, sizeof(uint64_t));

	if (!log)
		return -ENOMEM;
	for (int i = 0; i < vm->nharts; i++)
		if (vm->harts[i])
			hart_flush_tlb_all(vm->harts[i]);
	free(atomic_exchange(&vm->access_log, log));
	return 0;
}

uint64_t *vm_access_log_stop(struct vm *vm)
{
	return atomic_exchange(&vm->access_log, NULL);
}

void vm_dirty_log_sync(struct vm *vm, uint64_t *out)
{
	uint64_t *log = atomic_load(&vm->dirty_log);
	uint64_t npages = vm->ram.size >> PAGE_SHIFT;

	if (!log)
		return;
	for (size_t w = 0; w < (npages + 63) / 64; w++)
		out[w] |= atomic_exchange((_Atomic uint64_t *)&log[w], 0);
	for (int i = 0; i < vm->nharts; i++)
		if (vm->harts[i])
			hart_flush_write_tlb(vm->harts[i]);
}
