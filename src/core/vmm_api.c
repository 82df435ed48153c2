/* The control socket's callbacks for a VM. For now the VMM answers info and quit; pause,
 * resume, snapshots and migration are answered "not supported yet" (the NULL callbacks)
 * until the VM core implements them. */
#include "core/vmm_api.h"

#include <errno.h>
#include <unistd.h>

#include "core/api.h"
#include "core/json.h"
#include "core/vm.h"

static int vmm_api_info(void *opaque, struct json_writer *w, char *err, size_t errlen)
{
	const struct vm *vm = opaque;
	(void)err;
	(void)errlen;

	json_kv_string(w, "state", "running");
	json_kv_int(w, "cpus", vm->nharts);
	json_kv_uint(w, "memory", vm->ram.size);
	json_kv_uint(w, "uptime_ms", (host_now_ns() - vm->clock_base_ns) / 1000000);
	json_kv_int(w, "pid", getpid());
	return 0;
}

static int vmm_api_quit(void *opaque, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	/* Like a power-off: the vCPUs stop, the main thread tears the VM down and the
	 * process exits with status 0. The response is flushed by api_destroy. */
	vm_request_exit(opaque, VM_EXIT_POWEROFF, 0);
	return 0;
}

static const struct api_ops vmm_api_ops = {
	.info = vmm_api_info,
	.quit = vmm_api_quit,
};

int vmm_api_create(struct vm *vm, const char *path, struct api **out)
{
	return api_create(vm->loop, path, &vmm_api_ops, vm, out);
}
