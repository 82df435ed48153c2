/* mabo-vmm: one virtual machine per process. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/api.h"
#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "core/vm.h"
#include "core/vmm_api.h"
#include "cpu/riscv/cpu.h"
#include "machine/riscv-virt/htif.h"
#include "machine/riscv-virt/virt.h"

static void *hart_thread(void *arg)
{
	hart_run(arg);
	return NULL;
}

static void vm_free(struct vm *vm)
{
	for (int i = 0; i < vm->nharts; i++)
		hart_destroy(vm->harts[i]);
	if (vm->htif)
		htif_destroy(vm->htif);
	if (vm->ram.host)
		munmap(vm->ram.host, vm->ram.size);
	event_loop_destroy(vm->loop);
	pthread_mutex_destroy(&vm->exit_lock);
	pthread_cond_destroy(&vm->exit_cond);
}

static int vm_init(struct vm *vm, const struct vm_config *cfg)
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

	int err = event_loop_create(&vm->loop);
	if (err) {
		log_error("cannot create the event loop: %s", strerror(-err));
		vm_free(vm);
		return err;
	}

	vm->ram.base = RAM_BASE;
	vm->ram.size = cfg->memory;
	/* Reserve nothing up front: untouched guest pages cost no host memory. */
	void *p = mmap(NULL, cfg->memory, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		int e = errno;
		log_error("cannot map %" PRIu64 " MiB of guest memory: %s", cfg->memory >> 20,
			  strerror(e));
		vm_free(vm);
		return -e;
	}
	vm->ram.host = p;
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

static int dump_dtb(const struct vm_config *cfg)
{
	struct vm vm;
	int ret = vm_init(&vm, cfg);
	if (ret < 0)
		return ret;
	ret = virt_create(&vm);
	if (ret < 0)
		goto out;
	static char buf[1 << 16];
	ret = virt_build_fdt(&vm, buf, sizeof(buf));
	if (ret < 0) {
		log_error("cannot build the device tree: %s", strerror(-ret));
		goto out_virt;
	}
	FILE *f = fopen(cfg->dump_dtb, "wb");
	uint32_t size = ((uint32_t)(uint8_t)buf[4] << 24) | ((uint32_t)(uint8_t)buf[5] << 16) |
			((uint32_t)(uint8_t)buf[6] << 8) | (uint8_t)buf[7];
	if (!f || fwrite(buf, 1, size, f) != size || fclose(f) != 0) {
		ret = -errno;
		log_error("--dump-dtb '%s': %s", cfg->dump_dtb, strerror(errno));
	}
out_virt:
	virt_destroy(&vm);
out:
	vm_free(&vm);
	return ret;
}

/* Runs the VM once; returns the exit reason (or a negative errno on setup failure). */
static int vm_run_once(const struct vm_config *cfg, uint64_t *code)
{
	struct vm vm;
	pthread_t threads[VM_MAX_CPUS];
	struct api *api = NULL;
	int started = 0;
	int ret = vm_init(&vm, cfg);
	if (ret < 0)
		return ret;
	ret = virt_create(&vm);
	if (ret < 0)
		goto out;
	ret = virt_load(&vm);
	if (ret < 0)
		goto out_virt;
	if (cfg->api_socket) {
		ret = vmm_api_create(&vm, cfg->api_socket, &api);
		if (ret < 0)
			goto out_virt;
	}

	/* Devices run on the loop: it is up before any vCPU can notify one. */
	ret = event_loop_start(vm.loop);
	if (ret < 0)
		goto out_api;
	for (int i = 0; i < vm.nharts; i++) {
		int e = pthread_create(&threads[i], NULL, hart_thread, vm.harts[i]);
		if (e) {
			log_error("cannot start vCPU %d: %s", i, strerror(e));
			vm_request_exit(&vm, VM_EXIT_ERROR, 0);
			break;
		}
		started++;
	}

	uint64_t deadline = cfg->timeout > 0 ? host_now_ns() + (uint64_t)(cfg->timeout * 1e9) : 0;
	pthread_mutex_lock(&vm.exit_lock);
	while (!atomic_load(&vm.exit_reason)) {
		if (deadline) {
			struct timespec ts = { .tv_sec = deadline / 1000000000ULL,
					       .tv_nsec = deadline % 1000000000ULL };
			if (pthread_cond_timedwait(&vm.exit_cond, &vm.exit_lock, &ts) == ETIMEDOUT &&
			    !atomic_load(&vm.exit_reason)) {
				pthread_mutex_unlock(&vm.exit_lock);
				vm_request_exit(&vm, VM_EXIT_TIMEOUT, 0);
				pthread_mutex_lock(&vm.exit_lock);
			}
		} else {
			pthread_cond_wait(&vm.exit_cond, &vm.exit_lock);
		}
	}
	pthread_mutex_unlock(&vm.exit_lock);
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	event_loop_stop(vm.loop);
	ret = atomic_load(&vm.exit_reason);
	*code = vm.exit_code;
out_api:
	api_destroy(api);
out_virt:
	virt_destroy(&vm);
out:
	vm_free(&vm);
	return ret;
}

int main(int argc, char **argv)
{
	struct vm_config cfg;
	int ret = config_parse_args(&cfg, argc, argv);
	if (ret == 1)
		return 0;
	if (ret < 0)
		return 2;
	log_set_verbose(cfg.verbose);
	signal(SIGPIPE, SIG_IGN);

	if (cfg.dump_dtb)
		return dump_dtb(&cfg) < 0 ? 1 : 0;

	for (;;) {
		uint64_t code = 0;
		int reason = vm_run_once(&cfg, &code);
		switch (reason) {
		case VM_EXIT_POWEROFF:
		case VM_EXIT_PASS:
			return 0;
		case VM_EXIT_REBOOT:
			if (cfg.no_reboot)
				return 0;
			log_info("guest reboot: restarting the VM");
			continue;
		case VM_EXIT_FAIL:
			if ((code >> 56) == 0 && (code & 1))
				printf("FAIL: test %" PRIu64 "\n", (code << 16) >> 17);
			else
				printf("FAIL: tohost 0x%" PRIx64 "\n", code);
			fflush(stdout);
			return 1;
		case VM_EXIT_TIMEOUT:
			log_error("timeout: the guest did not finish within %g s", cfg.timeout);
			return 3;
		default:
			return 1;
		}
	}
}
