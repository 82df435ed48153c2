/* A VM description: what the command line asked for, validated once. */
#ifndef MABO_CORE_CONFIG_H
#define MABO_CORE_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#define VM_MAX_CPUS 32
/* Devices the command line can add: the virt machine has this many virtio-mmio slots. */
#define VM_MAX_DEVICES 8

/* Which guest console gets standard input. */
enum vm_console {
	VM_CONSOLE_SERIAL = 0, /* the UART (ttyS0): the default */
	VM_CONSOLE_VIRTIO,     /* virtio-console's hvc0; the UART still prints, without input */
};

/* A disk's serial number (virtio-blk GET_ID) is at most this long. */
#define VM_DISK_ID_MAX 20

/* --disk's options, parsed. */
struct vm_disk_config {
	char path[PATH_MAX];          /* a file or block device, or a URI (nbd://...) */
	char id[VM_DISK_ID_MAX + 1];  /* serial; "" = from the file name */
	bool readonly;
	unsigned reconnect_timeout;   /* seconds (NBD); BLOCK_RECONNECT_TIMEOUT_DEFAULT */
};

/* One device of the command line. The list keeps command-line order, and the machine gives
 * devices their slots in that order, so the guest always sees them the same way (later,
 * disks become vda, vdb, ... in the order given). */
struct vm_device_config {
	const char *type; /* a registered device type: "virtio-rng", "virtio-console" */
	const char *arg;  /* the type's argument, as given; may be NULL */
	struct vm_disk_config disk; /* "virtio-blk" */
};

struct vm_config {
	const char *kernel;    /* required */
	const char *initramfs; /* may be NULL */
	const char *firmware;  /* NULL: default; "none": bare-metal mode */
	const char *cmdline;   /* may be NULL */
	uint64_t memory;       /* bytes */
	int cpus;
	bool no_reboot;
	double timeout;        /* seconds, 0 = none */
	int verbose;
	const char *dump_dtb;  /* write the DTB here and exit */
	bool bare_metal;       /* firmware "none" */
	enum vm_console console;
	int ndevices;
	struct vm_device_config devices[VM_MAX_DEVICES];
};

/* Parses "512M", "2G", "1048576", "64K": a positive size in bytes. 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);

/* Parses --disk's argument "path=FILE|URI[,readonly=on|off][,id=SERIAL]
 * [,reconnect-timeout=SECONDS]" into out. 0, or
 * -EINVAL after logging one line. */
int config_parse_disk(const char *arg, struct vm_disk_config *out);

/* Fills cfg from argv; on a bad option prints one line and returns -EINVAL.
 * Returns 1 when --help or --version was handled (exit 0). */
int config_parse_args(struct vm_config *cfg, int argc, char **argv);

#endif
