/* Device access to guest RAM: the one path for device writes (see vm.h), so that dirty-page
 * tracking for live migration has a single place to hook. */
#include <errno.h>
#include <string.h>

#include "core/vm.h"

int vm_guest_read(const struct vm *vm, uint64_t gpa, void *buf, size_t len)
{
	const void *p = vm_ram_ptr(vm, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(buf, p, len);
	return 0;
}

void *vm_guest_ptr_for_write(struct vm *vm, uint64_t gpa, uint64_t len)
{
	void *p = vm_ram_ptr(vm, gpa, len);

	/* Marked before the write lands: safe because device writes run on the event loop,
	 * and the log is harvested there too (vm_dirty_log_sync), never between the two. */
	if (p)
		vm_dirty_mark(vm, gpa, len);
	return p;
}

int vm_guest_write(struct vm *vm, uint64_t gpa, const void *buf, size_t len)
{
	void *p = vm_guest_ptr_for_write(vm, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, buf, len);
	return 0;
}
