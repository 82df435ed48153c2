/* mabo-vmm: one virtual machine per process. The flags (or --config FILE) become a validated
 * configuration (core/config.h); the VMM (vmm/vmm.h) runs the VM from it. */
#include <signal.h>

#include "core/config.h"
#include "core/log.h"
#include "core/sandbox.h"
#include "vmm/vmm.h"

int main(int argc, char **argv)
{
	struct vm_config cfg;
	int ret = config_parse_args(&cfg, argc, argv);
	if (ret) {
		config_free(&cfg);
		return ret == 1 ? VMM_STATUS_OK : VMM_STATUS_USAGE;
	}
	log_set_verbose(cfg.verbose);
	signal(SIGPIPE, SIG_IGN);

	int status;
	struct vmm *vmm;
	if (cfg.dump_dtb)
		status = vmm_dump_dtb(&cfg) < 0 ? VMM_STATUS_FAILED : VMM_STATUS_OK;
	/* While the process has one thread (vmm_create starts the others): every thread
	 * inherits the filter. */
	else if (cfg.sandbox && sandbox_enter(&cfg) < 0)
		status = VMM_STATUS_FAILED;
	else if (vmm_create(&cfg, &vmm) < 0)
		status = VMM_STATUS_FAILED;
	else {
		status = vmm_run(vmm);
		vmm_destroy(vmm);
	}
	config_free(&cfg);
	return status;
}
