#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "core/log.h"

#define MEMORY_MIN (2ULL << 20)
#define MEMORY_MAX (256ULL << 30)
/* --disk reconnect-timeout: a day at most. */
#define CONFIG_RECONNECT_TIMEOUT_MAX 86400

int config_parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	case '\0': break;
	default: return -EINVAL;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end || v == 0 || v > (~0ULL >> shift))
		return -EINVAL;
	*out = v << shift;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: mabo-vmm --kernel FILE [options]\n"
		"Runs one RISC-V rv64gc virtual machine; its console is on stdin/stdout.\n\n"
		"  --kernel FILE       Linux Image (or, with --firmware none, an ELF program)\n"
		"  --initramfs FILE    initramfs (cpio, optionally compressed)\n"
		"  --firmware FILE     OpenSBI fw_dynamic.bin; 'none' runs the kernel ELF "
		"bare-metal\n"
		"                      in machine mode (default: Debian's opensbi package)\n"
		"  --cmdline STR       kernel command line\n"
		"  --memory SIZE       guest RAM, e.g. 512M, 2G (default 512M)\n"
		"  --cpus N            virtual CPUs, 1 to %d (default 1)\n"
		"  --code-cache SIZE   each vCPU's translation cache: SIZE for decoded blocks and\n"
		"                      SIZE for host code, 1M to 1G (default 64M); emptied when\n"
		"                      full, and released to the host while the guest idles\n"
		"  --no-reboot         exit (status 0) when the guest reboots instead of "
		"restarting\n"
		"  --timeout SECONDS   end with status 3 if not done this long after the start\n"
		"                      (loading, waiting for a migration, running)\n"
		"  --dump-dtb FILE     write the machine's device tree blob to FILE and exit\n"
		"  --rng               add a virtio-rng device, the guest's /dev/hwrng (default: "
		"none)\n"
		"  --disk path=FILE[,readonly=on][,locking=off][,id=SERIAL]\n"
		"                      add a virtio-blk disk backed by FILE (a raw image, size a\n"
		"                      multiple of 512, or a block device); repeatable: the\n"
		"                      guest sees vda, vdb, ... in order; readonly=on refuses\n"
		"                      writes; id sets the serial (default: the file name);\n"
		"                      FILE is locked as QEMU locks images (one writer, or\n"
		"                      readers only); locking=off for storage that arbitrates\n"
		"                      its writers itself\n"
		"  --net user[,hostfwd=RULE]...[,mac=MAC]\n"
		"                      add a virtio-net NIC on user-mode networking (no "
		"privileges):\n"
		"                      the guest is 10.0.2.15/24 (DHCP), the host 10.0.2.2, DNS\n"
		"                      10.0.2.3; RULE "
		"tcp:[HOSTADDR:]HOSTPORT-[GUESTADDR]:GUESTPORT\n"
		"                      (or udp:) forwards a host port to the guest (repeatable)\n"
		"  --net tap=IFNAME[,mac=MAC]\n"
		"                      add a virtio-net NIC on the host TAP interface IFNAME\n"
		"                      (created if missing and allowed); --net is repeatable: "
		"eth0,\n"
		"                      eth1, ...; MAC defaults to 52:54:00:12:34:56 plus the "
		"index\n"
		"  --disk path=nbd://HOST[:PORT]/EXPORT[,reconnect-timeout=SECONDS][,...]\n"
		"  --disk path=nbd+unix:///EXPORT?socket=PATH[,reconnect-timeout=SECONDS][,...]\n"
		"                      a disk on an NBD server (nbdkit, qemu-nbd, nbd-server); a\n"
		"                      lost connection is retried while the guest's requests\n"
		"                      wait, for up to reconnect-timeout seconds (default %d),\n"
		"                      then they fail with an I/O error\n"
		"  --console MODE      which guest console gets standard input: 'serial' (the\n"
		"                      UART, ttyS0; default) or 'virtio' (adds a virtio-console,\n"
		"                      hvc0; boot with console=hvc0; the UART still prints)\n"
		"  --incoming URI      wait for a live migration on tcp:ADDR:PORT or unix:PATH\n"
		"                      instead of booting (give the same VM options as the "
		"source)\n"
		"  --restore FILE      resume the VM saved in the snapshot FILE instead of "
		"booting\n"
		"                      (give the same VM options as when it was saved)\n"
		"  --migration-key FILE    authenticate and encrypt migrations (TLS 1.3) with a\n"
		"                      pre-shared key: FILE holds at least 32 random bytes, mode\n"
		"                      0600; give it to both VMMs\n"
		"  --migration-tls DIR     the same with certificates: DIR holds ca.crt, cert.pem\n"
		"                      and key.pem; each side verifies the other's against ca.crt\n"
		"  --migration-insecure    allow migration over TCP in clear, unauthenticated\n"
		"  --api-socket PATH   serve the control socket (JSON lines) at PATH, mode 0600;\n"
		"                      build/mabo is its client (docs/api.md)\n"
		"  --sandbox           allow only the system calls a VMM needs (seccomp); any\n"
		"                      other kills the process with SIGSYS\n"
		"  --sandbox-user USER (as root; implies --sandbox) run as USER, without\n"
		"                      capabilities, seeing only the files the VM uses\n"
		"  --config FILE       take the options from FILE, a JSON object with the same\n"
		"                      fields ('_' for '-'; disks and nets are arrays); flags\n"
		"                      given too override its values, or add disks and NICs\n"
		"  -v, --verbose       more messages on stderr (repeat for debug)\n"
		"  -h, --help          this help\n\n"
		"Devices (--rng, --console virtio, --disk, --net) take virtio-mmio slots in\n"
		"command-line order, at most %d.\n\n"
		"Exit status: 0 guest powered off (or bare-metal test passed); 1 test failed or\n"
		"error; 2 bad usage; 3 timeout; 4 the VM migrated away. On the console, Ctrl-A x\n"
		"quits.\n",
		VM_MAX_CPUS, BLOCK_RECONNECT_TIMEOUT_DEFAULT, VM_MAX_DEVICES);
}

/* Appends a device to the ordered list; -EINVAL (after one line) when it is full or when
 * the type may appear only once and is there already. */
static int config_add_device(struct vm_config *cfg, const char *option, const char *type,
			     const char *arg, bool repeatable)
{
	for (int i = 0; i < cfg->ndevices && !repeatable; i++) {
		if (strcmp(cfg->devices[i].type, type) == 0) {
			log_error("%s: given twice (the machine takes one %s)", option, type);
			return -EINVAL;
		}
	}
	if (cfg->ndevices == VM_MAX_DEVICES) {
		log_error("%s: too many devices (the machine has %d virtio slots)", option,
			  VM_MAX_DEVICES);
		return -EINVAL;
	}
	cfg->devices[cfg->ndevices++] = (struct vm_device_config){ .type = type, .arg = arg };
	return 0;
}

/* Copies the value of key (n bytes at v) into dst of size cap; -EINVAL when it is empty or
 * too long. */
static int config_disk_value(const char *arg, const char *key, const char *v, size_t n, char *dst,
			     size_t cap)
{
	if (n == 0) {
		log_error("--disk '%s': %s needs a value", arg, key);
		return -EINVAL;
	}
	if (n >= cap) {
		log_error("--disk '%s': %s is longer than %zu characters", arg, key, cap - 1);
		return -EINVAL;
	}
	memcpy(dst, v, n);
	dst[n] = '\0';
	return 0;
}

int config_parse_disk(const char *arg, struct vm_disk_config *out)
{
	bool have_ro = false, have_rt = false, have_lock = false;

	memset(out, 0, sizeof(*out));
	out->reconnect_timeout = BLOCK_RECONNECT_TIMEOUT_DEFAULT;
	for (const char *p = arg; *p;) {
		const char *end = p + strcspn(p, ",");
		const char *eq = memchr(p, '=', (size_t)(end - p));
		if (!eq) {
			log_error("--disk '%s': '%.*s' is not key=value (keys: path, readonly, "
				  "locking, id, reconnect-timeout)",
				  arg, (int)(end - p), p);
			return -EINVAL;
		}
		size_t klen = (size_t)(eq - p), vlen = (size_t)(end - eq - 1);
		const char *v = eq + 1;
		if (klen == 4 && strncmp(p, "path", 4) == 0) {
			if (out->path[0]) {
				log_error("--disk '%s': path given twice", arg);
				return -EINVAL;
			}
			if (config_disk_value(arg, "path", v, vlen, out->path, sizeof(out->path)))
				return -EINVAL;
		} else if (klen == 2 && strncmp(p, "id", 2) == 0) {
			if (config_disk_value(arg, "id", v, vlen, out->id, sizeof(out->id)))
				return -EINVAL;
		} else if ((klen == 8 && strncmp(p, "readonly", 8) == 0) ||
			   (klen == 7 && strncmp(p, "locking", 7) == 0)) {
			bool is_ro = klen == 8, on;
			const char *key = is_ro ? "readonly" : "locking";
			if (is_ro ? have_ro : have_lock) {
				log_error("--disk '%s': %s given twice", arg, key);
				return -EINVAL;
			}
			*(is_ro ? &have_ro : &have_lock) = true;
			if ((vlen == 2 && strncmp(v, "on", 2) == 0) ||
			    (vlen == 3 && strncmp(v, "yes", 3) == 0) ||
			    (vlen == 4 && strncmp(v, "true", 4) == 0))
				on = true;
			else if ((vlen == 3 && strncmp(v, "off", 3) == 0) ||
				 (vlen == 2 && strncmp(v, "no", 2) == 0) ||
				 (vlen == 5 && strncmp(v, "false", 5) == 0))
				on = false;
			else {
				log_error("--disk '%s': %s must be 'on' or 'off'", arg, key);
				return -EINVAL;
			}
			if (is_ro)
				out->readonly = on;
			else
				out->nolock = !on;
		} else if (klen == 17 && strncmp(p, "reconnect-timeout", 17) == 0) {
			char num[16], *e;
			if (have_rt) {
				log_error("--disk '%s': reconnect-timeout given twice", arg);
				return -EINVAL;
			}
			have_rt = true;
			if (vlen == 0 || vlen >= sizeof(num) || *v < '0' || *v > '9') {
				log_error("--disk '%s': reconnect-timeout must be 0 to %d seconds",
					  arg, CONFIG_RECONNECT_TIMEOUT_MAX);
				return -EINVAL;
			}
			memcpy(num, v, vlen);
			num[vlen] = '\0';
			unsigned long t = strtoul(num, &e, 10);
			if (*e || t > CONFIG_RECONNECT_TIMEOUT_MAX) {
				log_error("--disk '%s': reconnect-timeout must be 0 to %d seconds",
					  arg, CONFIG_RECONNECT_TIMEOUT_MAX);
				return -EINVAL;
			}
			out->reconnect_timeout = (unsigned)t;
		} else {
			log_error("--disk '%s': unknown key '%.*s' (keys: path, readonly, "
				  "locking, id, reconnect-timeout)",
				  arg, (int)klen, p);
			return -EINVAL;
		}
		p = *end ? end + 1 : end;
	}
	if (!out->path[0]) {
		log_error("--disk '%s': no path=FILE given", arg);
		return -EINVAL;
	}
	return 0;
}

/* Parses a MAC "52:54:00:12:34:56" (n bytes at s) into mac. 0 or -EINVAL. */
static int config_parse_mac(const char *s, size_t n, uint8_t mac[6])
{
	if (n != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		const char *p = s + 3 * i;
		if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) ||
		    (i < 5 && p[2] != ':'))
			return -EINVAL;
		char hex[3] = { p[0], p[1], '\0' };
		mac[i] = (uint8_t)strtoul(hex, NULL, 16);
	}
	return 0;
}

/* A port number 1..65535 (n bytes at s). 0 or -EINVAL. */
static int config_parse_port(const char *s, size_t n, uint16_t *out)
{
	unsigned long v = 0;

	if (n == 0 || n > 5)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -EINVAL;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

/* An IPv4 address (n bytes at s; empty: 0) in host byte order. 0 or -EINVAL. */
static int config_parse_ipv4(const char *s, size_t n, uint32_t *out)
{
	char buf[INET_ADDRSTRLEN];
	struct in_addr a;

	if (n == 0) {
		*out = 0;
		return 0;
	}
	if (n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, &a) != 1)
		return -EINVAL;
	*out = ntohl(a.s_addr);
	return 0;
}

/* Parses a hostfwd rule "[tcp|udp]:[HOSTADDR:]HOSTPORT-[GUESTADDR]:GUESTPORT" (n bytes at
 * s) as QEMU's -netdev user takes it, also without the colon before HOSTPORT
 * ("tcp:8080-:80"). 0 or -EINVAL. */
static int config_parse_hostfwd(const char *s, size_t n, struct vm_net_fwd *f)
{
	const char *end = s + n;
	const char *colon = memchr(s, ':', n);
	const char *dash = memchr(s, '-', n);

	memset(f, 0, sizeof(*f));
	if (!colon || !dash || dash < colon || n >= sizeof(f->text))
		return -EINVAL;
	memcpy(f->text, s, n);
	size_t plen = (size_t)(colon - s);
	if (plen == 3 && strncmp(s, "udp", 3) == 0)
		f->udp = true;
	else if (plen != 0 && !(plen == 3 && strncmp(s, "tcp", 3) == 0))
		return -EINVAL;
	/* Host side: [ADDR:]PORT between the protocol's colon and the dash. */
	const char *h = colon + 1;
	const char *hcolon = memchr(h, ':', (size_t)(dash - h));
	if (hcolon) {
		if (config_parse_ipv4(h, (size_t)(hcolon - h), &f->host_addr) ||
		    config_parse_port(hcolon + 1, (size_t)(dash - hcolon - 1), &f->host_port))
			return -EINVAL;
	} else if (config_parse_port(h, (size_t)(dash - h), &f->host_port)) {
		return -EINVAL;
	}
	/* Guest side: [ADDR]:PORT, or PORT. */
	const char *g = dash + 1;
	const char *gcolon = memchr(g, ':', (size_t)(end - g));
	if (gcolon) {
		if (config_parse_ipv4(g, (size_t)(gcolon - g), &f->guest_addr) ||
		    config_parse_port(gcolon + 1, (size_t)(end - gcolon - 1), &f->guest_port))
			return -EINVAL;
	} else if (config_parse_port(g, (size_t)(end - g), &f->guest_port)) {
		return -EINVAL;
	}
	return 0;
}

int config_parse_net(const char *arg, int index, struct vm_net_config *out)
{
	bool have_mode = false, have_mac = false;

	memset(out, 0, sizeof(*out));
	for (const char *p = arg; *p || !have_mode;) {
		const char *end = p + strcspn(p, ",");
		size_t len = (size_t)(end - p);
		const char *eq = memchr(p, '=', len);
		size_t klen = eq ? (size_t)(eq - p) : len;
		const char *v = eq ? eq + 1 : end;
		size_t vlen = (size_t)(end - v);

		if (!have_mode) {
			have_mode = true;
			if (len == 4 && strncmp(p, "user", 4) == 0) {
				out->mode = VM_NET_USER;
			} else if (eq && klen == 3 && strncmp(p, "tap", 3) == 0) {
				out->mode = VM_NET_TAP;
				if (vlen == 0 || vlen > VM_NET_IFNAME_MAX) {
					log_error("--net '%s': the TAP interface name must be 1 to "
						  "%d "
						  "characters",
						  arg, VM_NET_IFNAME_MAX);
					return -EINVAL;
				}
				memcpy(out->ifname, v, vlen);
				if (strchr(out->ifname, '/') || strchr(out->ifname, ' ')) {
					log_error("--net '%s': bad TAP interface name '%s'", arg,
						  out->ifname);
					return -EINVAL;
				}
			} else {
				log_error("--net '%s': must start with 'user' or 'tap=IFNAME'",
					  arg);
				return -EINVAL;
			}
		} else if (eq && klen == 3 && strncmp(p, "mac", 3) == 0) {
			if (have_mac) {
				log_error("--net '%s': mac given twice", arg);
				return -EINVAL;
			}
			have_mac = true;
			if (config_parse_mac(v, vlen, out->mac)) {
				log_error("--net '%s': mac '%.*s' is not like 52:54:00:12:34:56",
					  arg, (int)vlen, v);
				return -EINVAL;
			}
			if (out->mac[0] & 1) {
				log_error(
					"--net '%s': mac '%.*s' is a multicast address (the first "
					"byte must be even)",
					arg, (int)vlen, v);
				return -EINVAL;
			}
		} else if (eq && klen == 7 && strncmp(p, "hostfwd", 7) == 0) {
			if (out->mode != VM_NET_USER) {
				log_error("--net '%s': hostfwd is for 'user' networking only", arg);
				return -EINVAL;
			}
			if (out->nfwd == VM_NET_MAX_FWD) {
				log_error("--net '%s': more than %d hostfwd rules", arg,
					  VM_NET_MAX_FWD);
				return -EINVAL;
			}
			if (config_parse_hostfwd(v, vlen, &out->fwd[out->nfwd])) {
				log_error(
					"--net '%s': hostfwd '%.*s' is not like "
					"tcp:[HOSTADDR:]HOSTPORT-[GUESTADDR]:GUESTPORT (ports 1 to "
					"65535)",
					arg, (int)vlen, v);
				return -EINVAL;
			}
			out->nfwd++;
		} else {
			log_error("--net '%s': unknown option '%.*s' (options: %s)", arg, (int)len,
				  p, out->mode == VM_NET_USER ? "hostfwd, mac" : "mac");
			return -EINVAL;
		}
		p = *end ? end + 1 : end;
	}
	if (!have_mac) {
		static const uint8_t base[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
		memcpy(out->mac, base, sizeof(base));
		out->mac[5] = (uint8_t)(base[5] + index);
	}
	return 0;
}

#define DEFAULT_FIRMWARE "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"

/* "ADDR:PORT" with a decimal port 1-65535 (the rule the control socket's migrate applies
 * to its tcp: URIs); ADDR may be empty (any address). */
static bool config_port_ok(const char *hostport)
{
	const char *colon = strrchr(hostport, ':');
	char *end;

	if (!colon || colon[1] < '0' || colon[1] > '9')
		return false;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	return !errno && !*end && port >= 1 && port <= 65535;
}

/* --config FILE (or --config=FILE): the file's flags go first, then the command line's
 * others, so that the command line overrides the file (or adds devices after its own). */
static int config_merge_file(struct vm_config *cfg, int *argc, char ***argv)
{
	const char *path = NULL;
	int at = -1, taken = 0;

	for (int i = 1; i < *argc; i++) {
		const char *a = (*argv)[i];
		if (strcmp(a, "--") == 0)
			break;
		if (strcmp(a, "--config") != 0 && strncmp(a, "--config=", 9) != 0)
			continue;
		if (path) {
			log_error("--config: given twice (give one file)");
			return -EINVAL;
		}
		if (a[8] == '=') {
			path = a + 9;
			taken = 1;
		} else if (i + 1 < *argc) {
			path = (*argv)[i + 1];
			taken = 2;
		} else {
			log_error("option '--config' needs a value");
			return -EINVAL;
		}
		at = i;
		i += taken - 1;
	}
	if (!path)
		return 0;
	if (!*path) {
		log_error("--config: needs a file");
		return -EINVAL;
	}
	int ret = config_file_flags(path, &cfg->file_flags, &cfg->nfile_flags);
	if (ret)
		return ret;
	int n = 1 + cfg->nfile_flags + *argc - 1 - taken;
	char **v = calloc((size_t)n + 1, sizeof(*v));
	if (!v) {
		log_error("--config '%s': out of memory", path);
		return -ENOMEM;
	}
	int k = 0;
	v[k++] = (*argv)[0];
	for (int i = 0; i < cfg->nfile_flags; i++)
		v[k++] = cfg->file_flags[i];
	for (int i = 1; i < *argc; i++)
		if (i < at || i >= at + taken)
			v[k++] = (*argv)[i];
	cfg->merged_argv = v;
	*argc = n;
	*argv = v;
	return 0;
}

void config_free(struct vm_config *cfg)
{
	config_free_flags(cfg->file_flags, cfg->nfile_flags);
	free(cfg->merged_argv);
	cfg->file_flags = cfg->merged_argv = NULL;
	cfg->nfile_flags = 0;
}

int config_parse_args(struct vm_config *cfg, int argc, char **argv)
{
	enum {
		O_KERNEL = 256,
		O_INITRD,
		O_FW,
		O_CMDLINE,
		O_MEM,
		O_CPUS,
		O_NOREBOOT,
		O_TIMEOUT,
		O_DUMPDTB,
		O_RNG,
		O_CONSOLE,
		O_DISK,
		O_INCOMING,
		O_RESTORE,
		O_API,
		O_NET,
		O_CODE_CACHE,
		O_MIGKEY,
		O_MIGTLS,
		O_MIGINSECURE,
		O_SANDBOX,
		O_SANDBOX_USER,
		O_CONFIG
	};
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "initramfs", required_argument, NULL, O_INITRD },
		{ "initrd", required_argument, NULL, O_INITRD },
		{ "firmware", required_argument, NULL, O_FW },
		{ "bios", required_argument, NULL, O_FW },
		{ "cmdline", required_argument, NULL, O_CMDLINE },
		{ "append", required_argument, NULL, O_CMDLINE },
		{ "memory", required_argument, NULL, O_MEM },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "code-cache", required_argument, NULL, O_CODE_CACHE },
		{ "no-reboot", no_argument, NULL, O_NOREBOOT },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "dump-dtb", required_argument, NULL, O_DUMPDTB },
		{ "rng", no_argument, NULL, O_RNG },
		{ "console", required_argument, NULL, O_CONSOLE },
		{ "disk", required_argument, NULL, O_DISK },
		{ "incoming", required_argument, NULL, O_INCOMING },
		{ "restore", required_argument, NULL, O_RESTORE },
		{ "api-socket", required_argument, NULL, O_API },
		{ "net", required_argument, NULL, O_NET },
		{ "migration-key", required_argument, NULL, O_MIGKEY },
		{ "migration-tls", required_argument, NULL, O_MIGTLS },
		{ "migration-insecure", no_argument, NULL, O_MIGINSECURE },
		{ "sandbox", no_argument, NULL, O_SANDBOX },
		{ "sandbox-user", required_argument, NULL, O_SANDBOX_USER },
		{ "config", required_argument, NULL, O_CONFIG },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool console_given = false;
	int nnets = 0;

	memset(cfg, 0, sizeof(*cfg));
	cfg->memory = 512ULL << 20;
	cfg->cpus = 1;
	int ret = config_merge_file(cfg, &argc, &argv);
	if (ret)
		return ret;
	opterr = 0;
	optind = 1;
	for (;;) {
		int c = getopt_long(argc, argv, ":vh", opts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case O_KERNEL: cfg->kernel = optarg; break;
		case O_INITRD: cfg->initramfs = optarg; break;
		case O_FW: cfg->firmware = optarg; break;
		case O_CMDLINE: cfg->cmdline = optarg; break;
		case O_MEM:
			if (config_parse_size(optarg, &cfg->memory) < 0) {
				log_error("--memory '%s': not a size (examples: 512M, 2G)", optarg);
				return -EINVAL;
			}
			if (cfg->memory < MEMORY_MIN || cfg->memory > MEMORY_MAX) {
				log_error("--memory '%s': must be between 2M and 256G", optarg);
				return -EINVAL;
			}
			if (cfg->memory & 0xfffff) {
				log_error("--memory '%s': must be a whole number of MiB", optarg);
				return -EINVAL;
			}
			break;
		case O_CPUS: {
			char *end;
			errno = 0;
			long n = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || n < 1 || n > VM_MAX_CPUS) {
				log_error("--cpus '%s': must be a number from 1 to %d", optarg,
					  VM_MAX_CPUS);
				return -EINVAL;
			}
			cfg->cpus = (int)n;
			break;
		}
		case O_CODE_CACHE:
			if (config_parse_size(optarg, &cfg->code_cache) < 0 ||
			    cfg->code_cache < VM_CODE_CACHE_MIN ||
			    cfg->code_cache > VM_CODE_CACHE_MAX) {
				log_error("--code-cache '%s': must be a size from 1M to 1G",
					  optarg);
				return -EINVAL;
			}
			break;
		case O_NOREBOOT: cfg->no_reboot = true; break;
		case O_TIMEOUT: {
			char *end;
			errno = 0;
			double t = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(t > 0) || t > 1e9) {
				log_error("--timeout '%s': must be a positive number of seconds",
					  optarg);
				return -EINVAL;
			}
			cfg->timeout = t;
			break;
		}
		case O_DUMPDTB: cfg->dump_dtb = optarg; break;
		case O_API:
			if (!*optarg) {
				log_error("--api-socket: needs a socket path");
				return -EINVAL;
			}
			cfg->api_socket = optarg;
			break;
		case O_RNG:
			if (config_add_device(cfg, "--rng", "virtio-rng", NULL, false) < 0)
				return -EINVAL;
			break;
		case O_CONSOLE:
			if (console_given) {
				log_error("--console '%s': --console was given already; choose one",
					  optarg);
				return -EINVAL;
			}
			console_given = true;
			if (strcmp(optarg, "virtio") == 0) {
				if (config_add_device(cfg, "--console 'virtio'", "virtio-console",
						      NULL, false) < 0)
					return -EINVAL;
				cfg->console = VM_CONSOLE_VIRTIO;
			} else if (strcmp(optarg, "serial") != 0) {
				log_error("--console '%s': must be 'serial' or 'virtio'", optarg);
				return -EINVAL;
			}
			break;
		case O_DISK: {
			struct vm_disk_config disk;
			if (config_parse_disk(optarg, &disk) < 0 ||
			    config_add_device(cfg, "--disk", "virtio-blk", optarg, true) < 0)
				return -EINVAL;
			cfg->devices[cfg->ndevices - 1].disk = disk;
			break;
		}
		case O_INCOMING:
			if (strncmp(optarg, "tcp:", 4) != 0 && strncmp(optarg, "unix:", 5) != 0) {
				log_error("--incoming '%s': must be tcp:ADDR:PORT or unix:PATH",
					  optarg);
				return -EINVAL;
			}
			if (strncmp(optarg, "tcp:", 4) == 0 && !config_port_ok(optarg + 4)) {
				log_error("--incoming '%s': expected tcp:ADDR:PORT (port 1-65535)",
					  optarg);
				return -EINVAL;
			}
			cfg->incoming = optarg;
			break;
		case O_RESTORE: cfg->restore = optarg; break;
		case O_MIGKEY: cfg->migration_key = optarg; break;
		case O_MIGTLS: cfg->migration_tls = optarg; break;
		case O_MIGINSECURE: cfg->migration_insecure = true; break;
		case O_SANDBOX: cfg->sandbox = true; break;
		case O_SANDBOX_USER:
			if (!*optarg) {
				log_error("--sandbox-user: needs a user name");
				return -EINVAL;
			}
			cfg->sandbox_user = optarg;
			break;
		case O_NET: {
			struct vm_net_config net;
			if (config_parse_net(optarg, nnets, &net) < 0 ||
			    config_add_device(cfg, "--net", "virtio-net", optarg, true) < 0)
				return -EINVAL;
			cfg->devices[cfg->ndevices - 1].net = net;
			nnets++;
			break;
		}
		case 'v': cfg->verbose++; break;
		case O_CONFIG:
			/* config_merge_file took --config FILE and --config=FILE out. */
			log_error("--config: write it out in full ('--config FILE')");
			return -EINVAL;
		case 'h': usage(stdout); return 1;
		case ':': log_error("option '%s' needs a value", argv[optind - 1]); return -EINVAL;
		default:
			log_error("unknown option '%s' (see --help)", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		log_error("unexpected argument '%s' (see --help)", argv[optind]);
		return -EINVAL;
	}
	if (cfg->incoming && cfg->restore) {
		log_error("--incoming and --restore: choose one");
		return -EINVAL;
	}
	if (cfg->migration_key && cfg->migration_tls) {
		log_error("--migration-key and --migration-tls: choose one");
		return -EINVAL;
	}
	if ((cfg->migration_key || cfg->migration_tls) && cfg->migration_insecure) {
		log_error(
			"--migration-insecure with --migration-key or --migration-tls: choose one");
		return -EINVAL;
	}
	/* Guest memory must not cross a network in clear, nor a stranger's stream become
	 * the VM: TCP needs credentials unless plaintext is asked for by name. */
	if (cfg->incoming && strncmp(cfg->incoming, "tcp:", 4) == 0 && !cfg->migration_key &&
	    !cfg->migration_tls && !cfg->migration_insecure) {
		log_error("--incoming '%s': TCP migration needs --migration-key FILE or "
			  "--migration-tls DIR (or --migration-insecure)",
			  cfg->incoming);
		return -EINVAL;
	}
	/* A VM that arrives by migration or from a snapshot boots nothing. */
	if (!cfg->kernel && !cfg->dump_dtb && !cfg->incoming && !cfg->restore) {
		log_error("no kernel given: use --kernel FILE (see --help)");
		return -EINVAL;
	}
	if (cfg->sandbox_user)
		cfg->sandbox = true;
	if (!cfg->firmware)
		cfg->firmware = DEFAULT_FIRMWARE;
	cfg->bare_metal = strcmp(cfg->firmware, "none") == 0;
	return 0;
}
