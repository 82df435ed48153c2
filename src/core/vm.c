#include "core/vm.h"

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
	for (int i = 0; i < vm->nharts; i++)
		if (vm->harts[i])
			hart_kick(vm->harts[i]);
}
