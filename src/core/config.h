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
	char path[PATH_MAX];	     /* a file or block device, or a URI (nbd://...) */
	char id[VM_DISK_ID_MAX + 1]; /* serial; "" = from the file name */
	bool readonly;
	bool nolock;		    /* locking=off: no file lock (block_options.nolock) */
	unsigned reconnect_timeout; /* seconds (NBD); BLOCK_RECONNECT_TIMEOUT_DEFAULT */
};

/* --net: user-mode networking (libslirp) or a host TAP device. */
enum vm_net_mode {
	VM_NET_USER,
	VM_NET_TAP,
};

/* Host port forwards per --net user, at most. */
#define VM_NET_MAX_FWD 16
/* A TAP interface name is at most this long (IFNAMSIZ - 1). */
#define VM_NET_IFNAME_MAX 15

/* One hostfwd= rule: connections to host_addr:host_port go to guest_addr:guest_port.
 * Addresses in host byte order; guest_addr 0 means the guest's DHCP address. */
struct vm_net_fwd {
	bool udp;
	uint32_t host_addr;
	uint16_t host_port;
	uint32_t guest_addr;
	uint16_t guest_port;
	char text[64]; /* the rule as given, for messages */
};

/* --net's options, parsed. */
struct vm_net_config {
	enum vm_net_mode mode;
	char ifname[VM_NET_IFNAME_MAX + 1]; /* VM_NET_TAP */
	uint8_t mac[6];
	int nfwd; /* VM_NET_USER */
	struct vm_net_fwd fwd[VM_NET_MAX_FWD];
};

/* One device of the command line. The list keeps command-line order, and the machine gives
 * devices their slots in that order, so the guest always sees them the same way (later,
 * disks become vda, vdb, ... in the order given). */
struct vm_device_config {
	const char *type;	    /* a registered device type: "virtio-rng", "virtio-console" */
	const char *arg;	    /* the type's argument, as given; may be NULL */
	struct vm_disk_config disk; /* "virtio-blk" */
	struct vm_net_config net;   /* "virtio-net" */
};

/* Each vCPU's translation caches (--code-cache): this many bytes of address space for decoded
 * blocks and as many for translated host code; a full cache is emptied and refilled. */
#define VM_CODE_CACHE_DEFAULT (64ULL << 20)
#define VM_CODE_CACHE_MIN (1ULL << 20)
#define VM_CODE_CACHE_MAX (1ULL << 30)

struct vm_config {
	const char *kernel;    /* required */
	const char *initramfs; /* may be NULL */
	const char *firmware;  /* NULL: default; "none": bare-metal mode */
	const char *cmdline;   /* may be NULL */
	uint64_t memory;       /* bytes */
	int cpus;
	uint64_t code_cache; /* bytes per vCPU (VM_CODE_CACHE_*); 0: the default */
	bool no_reboot;
	double timeout; /* seconds, 0 = none */
	int verbose;
	const char *dump_dtb;	/* write the DTB here and exit */
	const char *api_socket; /* serve the control socket here (core/api.h); may be NULL */
	bool bare_metal;	/* firmware "none" */
	enum vm_console console;
	const char *incoming; /* tcp:ADDR:PORT or unix:PATH: wait for a migration */
	const char *restore;  /* a snapshot file to resume from */
	/* Migration over TCP: TLS 1.3 with a pre-shared key or certificates (see
	 * migration/link.h), or plaintext when insecure is said. */
	const char *migration_key; /* a file of at least 32 random bytes */
	const char *migration_tls; /* a directory: ca.crt, cert.pem, key.pem */
	bool migration_insecure;
	bool sandbox;		  /* --sandbox: core/sandbox.h */
	const char *sandbox_user; /* --sandbox-user: run as this user, in its own mounts */
	int ndevices;
	struct vm_device_config devices[VM_MAX_DEVICES];
	/* --config FILE: the flags made of it and the argument list they head, which the
	 * strings above may point into (config_free releases them). */
	char **file_flags;
	int nfile_flags;
	char **merged_argv;
};

/* Parses "512M", "2G", "1048576", "64K": a positive size in bytes. 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);

/* Parses --disk's argument "path=FILE|URI[,readonly=on|off][,id=SERIAL]
 * [,reconnect-timeout=SECONDS]" into out. 0, or
 * -EINVAL after logging one line. */
int config_parse_disk(const char *arg, struct vm_disk_config *out);

/* Parses --net's argument "user[,hostfwd=RULE]...[,mac=MAC]" or "tap=IFNAME[,mac=MAC]"
 * into out; index (0, 1, ...) picks the default MAC 52:54:00:12:34:56 + index. 0, or
 * -EINVAL after logging one line. */
int config_parse_net(const char *arg, int index, struct vm_net_config *out);

/* Fills cfg from argv (and the --config FILE it names); on a bad option prints one line and
 * returns -EINVAL. Returns 1 when --help or --version was handled (exit 0). Call config_free
 * once cfg is no longer used, whatever it returned. */
int config_parse_args(struct vm_config *cfg, int argc, char **argv);

/* Releases what config_parse_args allocated for cfg (its --config FILE's flags). */
void config_free(struct vm_config *cfg);

/* Reads the JSON config file path (README, "Configuration file") into the equivalent flags
 * ("--kernel=FILE", "--disk=path=...", ...): *argc_out strings, to be released with
 * config_free_flags. 0, or -EINVAL (or -ENOMEM) after one line naming the file and the
 * field. */
int config_file_flags(const char *path, char ***argv_out, int *argc_out);
void config_free_flags(char **v, int n);

#endif
