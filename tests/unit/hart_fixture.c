/* The hart fixture: see hart_fixture.h. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cpu/riscv/cpu.h"
#include "hart_fixture.h"
#include "machine/riscv-virt/htif.h"

void *hart_fixture_new(size_t size, uint64_t ram_size, int id, uint64_t tohost)
{
	struct vm *vm = calloc(1, size);
	assert_non_null(vm);
	vm->ram.base = RAM_BASE;
	vm->ram.size = ram_size;
	vm->ram.host = calloc(1, ram_size);
	assert_non_null(vm->ram.host);
	pthread_mutex_init(&vm->exit_lock, NULL);
	pthread_cond_init(&vm->exit_cond, NULL);
	vm->clock_base_ns = host_now_ns();
	if (tohost) {
		vm->htif = htif_create(vm, tohost);
		assert_non_null(vm->htif);
	}
	vm->harts[0] = hart_create(vm, id);
	assert_non_null(vm->harts[0]);
	vm->nharts = 1;
	return vm;
}

int hart_fixture_teardown(void **state)
{
	struct vm *vm = *state;
	hart_destroy(vm->harts[0]);
	if (vm->htif)
		htif_destroy(vm->htif);
	pthread_mutex_destroy(&vm->exit_lock);
	pthread_cond_destroy(&vm->exit_cond);
	free(vm->ram.host);
	free(vm);
	return 0;
}
