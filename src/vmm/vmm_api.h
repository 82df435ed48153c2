/* The VMM's side of the control socket: the api_ops callbacks for one VM (core/api.h), used by
 * vmm/vmm.c. */
#ifndef MABO_VMM_VMM_API_H
#define MABO_VMM_VMM_API_H

struct api;
struct vm;

/* Serves the control socket at path on vm->loop for vm. Call before the loop starts;
 * api_destroy after it stops. 0 or -errno (after logging one line). */
int vmm_api_create(struct vm *vm, const char *path, struct api **out)
	__attribute__((warn_unused_result));

#endif
