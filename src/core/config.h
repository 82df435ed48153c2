/* A VM description: what the command line asked for, validated once. */
#ifndef MABO_CORE_CONFIG_H
#define MABO_CORE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#define VM_MAX_CPUS 32

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
};

/* Parses "512M", "2G", "1048576", "64K": a positive size in bytes. 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);

/* Fills cfg from argv; on a bad option prints one line and returns -EINVAL.
 * Returns 1 when --help or --version was handled (exit 0). */
int config_parse_args(struct vm_config *cfg, int argc, char **argv);

#endif
