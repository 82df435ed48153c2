/* Disk sharing between VMs (share.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "daemon/share.h"

/* A disk's identity: a regular file by device and inode (so a symbolic link, a hard link
 * or another spelling of the path is the same disk), a block device by its device number,
 * an NBD export by its URI with the scheme in lower case. A file that cannot be looked at
 * (removed since it was defined) falls back to its path. */
static void disk_key(const char *path, char *key, size_t len)
{
	struct stat st;
	if (strncasecmp(path, "nbd", 3) == 0 && strstr(path, "://")) {
		const char *rest = strstr(path, "://");
		size_t n = (size_t)(rest - path);
		snprintf(key, len, "u:%.*s%s", (int)n, path, rest);
		for (size_t i = 2; i < 2 + n && key[i]; i++)
			key[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
		/* nbd://host and nbd://host/ name the same export. */
		size_t k = strlen(key);
		if (k > 0 && key[k - 1] == '/')
			key[k - 1] = 0;
		return;
	}
	if (stat(path, &st) == 0 && S_ISBLK(st.st_mode))
		snprintf(key, len, "b:%llu", (unsigned long long)st.st_rdev);
	else if (stat(path, &st) == 0)
		snprintf(key, len, "f:%llu:%llu", (unsigned long long)st.st_dev,
			 (unsigned long long)st.st_ino);
	else
		snprintf(key, len, "p:%s", path);
}

static bool live(const struct vmrec *vm)
{
	return vm->shim_fd >= 0 || vm->vmm_fd >= 0;
}

int share_conflict(const struct vmrec *list, const struct vmrec *self, const json_t *spec,
		   bool live_only, char *err, size_t len)
{
	size_t i, j;
	json_t *mine, *theirs;
	char a[4200], b[4200];
	json_array_foreach(json_object_get(spec, "disks"), i, mine)
	{
		const char *path = json_string_value(json_object_get(mine, "path"));
		bool ro = json_is_true(json_object_get(mine, "readonly"));
		if (!path)
			continue;
		disk_key(path, a, sizeof(a));
		for (const struct vmrec *vm = list; vm; vm = vm->next) {
			if (vm == self || (self && strcmp(vm->name, self->name) == 0) ||
			    (live_only && !live(vm)))
				continue;
			json_array_foreach(json_object_get(vm->spec, "disks"), j, theirs)
			{
				const char *p = json_string_value(json_object_get(theirs, "path"));
				bool tro = json_is_true(json_object_get(theirs, "readonly"));
				if (!p || (ro && tro))
					continue;
				disk_key(p, b, sizeof(b));
				if (strcmp(a, b) != 0)
					continue;
				snprintf(err, len, "disk '%s': %s by vm '%s'%s%s%s", path,
					 tro ? "used (read-only)" : "used read-write", vm->name,
					 strcmp(p, path) ? " (as '" : "", strcmp(p, path) ? p : "",
					 strcmp(p, path) ? "')" : "");
				return -EBUSY;
			}
		}
	}
	return 0;
}
