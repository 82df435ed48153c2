/* Disks are not shared by accident: a VM may not name a disk (a file or block device,
 * compared by identity after resolving links, or an NBD export) that another VM uses
 * read-write, nor use read-write one another VM uses at all. Read-only sharing is allowed. */
#ifndef MABO_DAEMON_SHARE_H
#define MABO_DAEMON_SHARE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/daemon.h"

/* Whether the checked spec's disks collide with those of the VMs in `list` other than
 * `self` (may be NULL); live_only: only VMs with a running process count. Returns 0, or
 * -EBUSY with a line naming the disk and the other VM in err. */
int share_conflict(const struct vmrec *list, const struct vmrec *self, const json_t *spec,
		   bool live_only, char *err, size_t len);

#endif
