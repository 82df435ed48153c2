/* Setting a VM up and tearing it down (see vm_init in vm.h); apart from vm.c so that unit
 * tests with stand-in harts can link the rest. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/event.h"
#include "core/log.h"
#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "machine/riscv-virt/htif.h"

void vm_free(struct vm *vm)
{
	for (int i = 0; i < vm->nharts; i++)
		hart_destroy(vm->harts[i]);
	if (vm->htif)
		htif_destroy(vm->htif);
	if (vm->ram.host) {
		size_t guard = (size_t)sysconf(_SC_PAGESIZE);
		munmap((uint8_t *)vm->ram.host - guard, vm->ram.size + 2 * guard);
	}
	event_loop_destroy(vm->loop);
	vm_pause_uninit(vm);
	pthread_mutex_destroy(&vm->exit_lock);
	pthread_cond_destroy(&vm->exit_cond);
}

int vm_init(struct vm *vm, const struct vm_config *cfg)
{
	memset(vm, 0, sizeof(*vm));
	vm->cfg = cfg;
	pthread_mutex_init(&vm->exit_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->exit_cond, &ca);
	pthread_condattr_destroy(&ca);
	vm->clock_base_ns = host_now_ns();
	vm_pause_init(vm);

	int err = event_loop_create(&vm->loop);
	if (err) {
		log_error("cannot create the event loop: %s", strerror(-err));
		vm_free(vm);
		return err;
	}

	vm->ram.base = RAM_BASE;
	vm->ram.size = cfg->memory;
	/* Reserve nothing up front: untouched guest pages cost no host memory. An inaccessible
	 * page on either side keeps the kernel from merging guest RAM with a neighbouring
	 * mapping, so /proc/PID/smaps accounts the guest's pages on a line of their own. */
	size_t guard = (size_t)sysconf(_SC_PAGESIZE);
	uint8_t *p = mmap(NULL, cfg->memory + 2 * guard, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED || mprotect(p + guard, cfg->memory, PROT_READ | PROT_WRITE) < 0) {
		int e = errno;
		log_error("cannot map %" PRIu64 " MiB of guest memory: %s", cfg->memory >> 20,
			  strerror(e));
		if (p != MAP_FAILED)
			munmap(p, cfg->memory + 2 * guard);
		vm_free(vm);
		return -e;
	}
	vm->ram.host = p + guard;
	for (int i = 0; i < cfg->cpus; i++) {
		vm->harts[i] = hart_create(vm, i);
		if (!vm->harts[i]) {
			log_error("cannot allocate vCPU %d", i);
			vm_free(vm);
			return -ENOMEM;
		}
		vm->nharts = i + 1;
	}
	return 0;
}
