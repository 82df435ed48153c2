/* The VMM: the process around one VM. It owns what outlives a guest's run (the validated
 * configuration, the signal thread, the --timeout watchdog, the last exit reason) and the loop
 * main() runs: each run builds a struct vm (core/vm.h) with its machine, migration object and
 * control socket, and a guest reboot builds the next one. Layering: vmm sits above migration
 * and machine (it is what starts them), below nothing in this process. */
#ifndef MABO_VMM_VMM_H
#define MABO_VMM_VMM_H

#include "core/config.h"

/* The process's exit status (README: "Exit status"). */
enum vmm_status {
	VMM_STATUS_OK = 0,	 /* powered off, rebooted with --no-reboot, test passed, signal */
	VMM_STATUS_FAILED = 1,	 /* a host error, or a bare-metal test failed */
	VMM_STATUS_USAGE = 2,	 /* bad flags or --config */
	VMM_STATUS_TIMEOUT = 3,	 /* --timeout ran out */
	VMM_STATUS_MIGRATED = 4, /* the VM migrated away: it runs on the destination now */
};

struct vmm;

/* Takes cfg (copied) and starts the signal thread and the watchdog. Call before any other
 * thread exists: the threads the VMM starts inherit the signal mask it sets. 0 or -errno
 * (after logging one line). */
int vmm_create(const struct vm_config *cfg, struct vmm **out) __attribute__((warn_unused_result));

/* Runs the VM, again after each guest reboot, until it ends; returns the process's exit
 * status (enum vmm_status). Before the VMM ends or reboots, the clients of the control
 * socket get an "exit" event (docs/api.md). */
int vmm_run(struct vmm *vmm);

/* Stops the watchdog and frees vmm. NULL is fine. */
void vmm_destroy(struct vmm *vmm);

/* --dump-dtb: builds the machine of cfg and writes its device tree blob; 0 or -errno. */
int vmm_dump_dtb(const struct vm_config *cfg);

#endif
