/* Boot loading. Every file is checked before anything is trusted: sizes and offsets read
 * from a header are bounded by the file's size and by RAM before use, so a truncated or
 * crafted file gets one error line and a negative errno, never a crash.
 *
 * Linux layout (RAM at 0x80000000):
 *   RAM + 0             firmware (OpenSBI fw_dynamic; it uses up to RAM + 2 MiB)
 *   RAM + 2 MiB         kernel Image (image_size bytes, bss included)
 *   RAM + 2 MiB + min(RAM/2, 128 MiB)
 *                       initramfs (QEMU's rule: far enough for the kernel, low enough
 *                       for small machines; just past the kernel if that is higher)
 *   top of RAM          fw_dynamic_info (one page), then the DTB, 2 MiB aligned with room
 *                       above it for OpenSBI to grow the tree in place (its fix-ups do) */
#include "machine/riscv-virt/boot.h"

#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "machine/riscv-virt/fdt_util.h"
#include "machine/riscv-virt/htif.h"

#include <libfdt.h>

#define MiB ((uint64_t)1 << 20)
#define BOOT_ALIGN_DOWN(x, a) ((x) & ~((uint64_t)(a)-1))
#define BOOT_ALIGN_UP(x, a) BOOT_ALIGN_DOWN((x) + (a)-1, a)

#define BOOT_INITRD_MAX_OFFSET (128 * MiB)
#define BOOT_FDT_ALIGN (2 * MiB)
#define BOOT_FDT_SLACK (64 * 1024)  /* growth room above the DTB for OpenSBI's fix-ups */
#define BOOT_INFO_RESERVE PAGE_SIZE /* fw_dynamic_info's page, just below the DTB */

/* RISC-V Image header (Documentation/arch/riscv/boot-image-header.rst), little endian. */
#define IMAGE_HEADER_SIZE 64
#define IMAGE_TEXT_OFFSET 8
#define IMAGE_IMAGE_SIZE 16
#define IMAGE_FLAGS 24
#define IMAGE_MAGIC 48	     /* u64 "RISCV\0\0\0", deprecated */
#define IMAGE_MAGIC2 56	     /* u32 "RSC\x05" */
#define IMAGE_ARM64_MAGIC 56 /* arm64 Images put "ARM\x64" in the same place */

struct boot_file {
	const char *what; /* "kernel", "firmware", "initramfs" */
	const char *path;
	int fd;
	uint64_t size;
};

#define BOOT_FILE_INIT                                                                             \
	{                                                                                          \
		.fd = -1                                                                           \
	}

struct boot_elf {
	uint64_t entry;
	uint64_t lo, hi; /* loaded physical range [lo, hi) */
	bool have_tohost, have_fromhost;
	uint64_t tohost, fromhost;
};

static uint64_t boot_le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static uint32_t boot_le32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static void boot_put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static int boot_open(struct boot_file *f, const char *what, const char *path)
{
	struct stat st;
	int err;

	f->what = what;
	f->path = path;
	f->fd = -1;
	if (!path) {
		log_error("%s: no file given", what);
		return -EINVAL;
	}
	/* O_NONBLOCK: opening a FIFO must not wait for a writer; what was opened is then
	 * refused unless it is a regular file (reads of one never block). */
	f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (f->fd < 0) {
		err = -errno;
		log_error("%s '%s': %s", what, path, strerror(errno));
		return err;
	}
	if (fstat(f->fd, &st) != 0) {
		err = -errno;
		log_error("%s '%s': %s", what, path, strerror(errno));
		return err;
	}
	if (S_ISDIR(st.st_mode)) {
		log_error("%s '%s': is a directory", what, path);
		return -EISDIR;
	}
	if (!S_ISREG(st.st_mode)) {
		log_error("%s '%s': not a regular file", what, path);
		return -EINVAL;
	}
	if (st.st_size == 0) {
		log_error("%s '%s': file is empty", what, path);
		return -EINVAL;
	}
	f->size = (uint64_t)st.st_size;
	return 0;
}

static void boot_close(struct boot_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

/* Reads exactly len bytes at off (within the size fstat gave). */
static int boot_pread(struct boot_file *f, void *buf, uint64_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		size_t chunk = len > (1ULL << 30) ? (1U << 30) : (size_t)len;
		ssize_t n = pread(f->fd, p, chunk, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;
			log_error("%s '%s': read failed: %s", f->what, f->path, strerror(errno));
			return err;
		}
		if (n == 0) {
			log_error("%s '%s': file shrank while being loaded", f->what, f->path);
			return -EIO;
		}
		p += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* Copies [off, off+len) of the file to guest RAM at gpa; the caller checked the range. */
static int boot_copy_to_ram(struct vm *vm, struct boot_file *f, uint64_t gpa, uint64_t off,
			    uint64_t len)
{
	void *host = vm_ram_ptr(vm, gpa, len);

	if (!host) {
		log_error("%s '%s': 0x%" PRIx64 "-0x%" PRIx64 " is outside RAM", f->what, f->path,
			  gpa, gpa + len);
		return -ERANGE;
	}
	return boot_pread(f, host, len, off);
}

static const char *boot_elf_machine_name(unsigned m)
{
	switch (m) {
	case EM_386: return "i386";
	case EM_MIPS: return "MIPS";
	case EM_PPC: return "PowerPC";
	case EM_PPC64: return "PowerPC64";
	case EM_S390: return "S/390";
	case EM_ARM: return "ARM";
	case EM_X86_64: return "x86-64";
	case EM_AARCH64: return "AArch64";
	case EM_RISCV: return "RISC-V";
	case 258: return "LoongArch";
	default: return "unknown";
	}
}

/* Reads and validates the ELF header of a 64-bit little-endian RISC-V executable. */
static int boot_elf_header(struct boot_file *f, Elf64_Ehdr *eh)
{
	uint8_t raw[sizeof(Elf64_Ehdr)] = { 0 };
	uint64_t have = f->size < sizeof(raw) ? f->size : sizeof(raw);
	int err;

	err = boot_pread(f, raw, have, 0);
	if (err)
		return err;
	if (have < SELFMAG || memcmp(raw, ELFMAG, SELFMAG) != 0) {
		log_error("%s '%s': not an ELF file", f->what, f->path);
		return -ENOEXEC;
	}
	if (have < EI_NIDENT + 4) {
		log_error("%s '%s': truncated ELF header (%" PRIu64 " bytes)", f->what, f->path,
			  f->size);
		return -ENOEXEC;
	}
	/* e_machine is at offset 18 in both classes: read it in the file's byte order so
	 * the rejections below can name the machine. */
	unsigned machine = raw[EI_DATA] == ELFDATA2MSB ? (unsigned)raw[18] << 8 | raw[19]
						       : (unsigned)raw[19] << 8 | raw[18];
	if (raw[EI_CLASS] == ELFCLASS32) {
		log_error("%s '%s': 32-bit ELF for machine %u (%s), expected a 64-bit RISC-V ELF",
			  f->what, f->path, machine, boot_elf_machine_name(machine));
		return -ENOEXEC;
	}
	if (raw[EI_CLASS] != ELFCLASS64) {
		log_error("%s '%s': bad ELF class %u", f->what, f->path, raw[EI_CLASS]);
		return -ENOEXEC;
	}
	if (raw[EI_DATA] == ELFDATA2MSB) {
		log_error("%s '%s': big-endian ELF for machine %u (%s), expected little-endian "
			  "RISC-V",
			  f->what, f->path, machine, boot_elf_machine_name(machine));
		return -ENOEXEC;
	}
	if (raw[EI_DATA] != ELFDATA2LSB) {
		log_error("%s '%s': bad ELF data encoding %u", f->what, f->path, raw[EI_DATA]);
		return -ENOEXEC;
	}
	if (machine != EM_RISCV) {
		log_error("%s '%s': ELF for machine %u (%s), expected RISC-V", f->what, f->path,
			  machine, boot_elf_machine_name(machine));
		return -ENOEXEC;
	}
	if (have < sizeof(raw)) {
		log_error("%s '%s': truncated ELF header (%" PRIu64 " bytes)", f->what, f->path,
			  f->size);
		return -ENOEXEC;
	}

	memcpy(eh, raw, sizeof(*eh));
	eh->e_type = le16toh(eh->e_type);
	eh->e_machine = le16toh(eh->e_machine);
	eh->e_version = le32toh(eh->e_version);
	eh->e_entry = le64toh(eh->e_entry);
	eh->e_phoff = le64toh(eh->e_phoff);
	eh->e_shoff = le64toh(eh->e_shoff);
	eh->e_flags = le32toh(eh->e_flags);
	eh->e_ehsize = le16toh(eh->e_ehsize);
	eh->e_phentsize = le16toh(eh->e_phentsize);
	eh->e_phnum = le16toh(eh->e_phnum);
	eh->e_shentsize = le16toh(eh->e_shentsize);
	eh->e_shnum = le16toh(eh->e_shnum);
	eh->e_shstrndx = le16toh(eh->e_shstrndx);

	if (raw[EI_VERSION] != EV_CURRENT || eh->e_version != EV_CURRENT) {
		log_error("%s '%s': bad ELF version %u", f->what, f->path, eh->e_version);
		return -ENOEXEC;
	}
	if (eh->e_type != ET_EXEC && eh->e_type != ET_DYN) {
		log_error("%s '%s': ELF type %u is not an executable", f->what, f->path,
			  eh->e_type);
		return -ENOEXEC;
	}
	return 0;
}

/* True when a table of n entries of entsize bytes at off lies within the file. */
static bool boot_in_file(const struct boot_file *f, uint64_t off, uint64_t n, uint64_t entsize)
{
	return off <= f->size && n <= (f->size - off) / entsize;
}

/* Finds tohost / fromhost in .symtab. A file without one is fine; a broken one is not. */
static int boot_elf_symbols(struct boot_file *f, const Elf64_Ehdr *eh, struct boot_elf *out)
{
	Elf64_Shdr *sh = NULL;
	Elf64_Sym *syms = NULL;
	char *strtab = NULL;
	int err = 0;

	if (eh->e_shoff == 0 || eh->e_shnum == 0)
		return 0; /* no section headers: stripped, no symbols to look for */
	if (eh->e_shentsize != sizeof(Elf64_Shdr)) {
		log_error("%s '%s': bad ELF section header size %u", f->what, f->path,
			  eh->e_shentsize);
		return -ENOEXEC;
	}
	if (!boot_in_file(f, eh->e_shoff, eh->e_shnum, sizeof(Elf64_Shdr))) {
		log_error("%s '%s': ELF section headers lie beyond the end of the file "
			  "(truncated?)",
			  f->what, f->path);
		return -ENOEXEC;
	}
	sh = calloc(eh->e_shnum, sizeof(*sh));
	if (!sh)
		return -ENOMEM;
	err = boot_pread(f, sh, (uint64_t)eh->e_shnum * sizeof(*sh), eh->e_shoff);
	if (err)
		goto out;

	for (unsigned i = 0; i < eh->e_shnum; i++) {
		if (le32toh(sh[i].sh_type) != SHT_SYMTAB)
			continue;
		uint64_t off = le64toh(sh[i].sh_offset), size = le64toh(sh[i].sh_size);
		uint64_t entsize = le64toh(sh[i].sh_entsize);
		uint32_t link = le32toh(sh[i].sh_link);
		if (entsize != sizeof(Elf64_Sym) ||
		    !boot_in_file(f, off, size / entsize, entsize) || link >= eh->e_shnum ||
		    le32toh(sh[link].sh_type) != SHT_STRTAB) {
			log_error("%s '%s': corrupt ELF symbol table", f->what, f->path);
			err = -ENOEXEC;
			goto out;
		}
		uint64_t str_off = le64toh(sh[link].sh_offset),
			 str_size = le64toh(sh[link].sh_size);
		if (!boot_in_file(f, str_off, str_size, 1)) {
			log_error("%s '%s': corrupt ELF string table", f->what, f->path);
			err = -ENOEXEC;
			goto out;
		}
		uint64_t nsyms = size / entsize;
		syms = malloc(nsyms ? nsyms * sizeof(*syms) : 1);
		strtab = malloc(str_size ? str_size : 1);
		if (!syms || !strtab) {
			err = -ENOMEM;
			goto out;
		}
		err = boot_pread(f, syms, nsyms * sizeof(*syms), off);
		if (!err)
			err = boot_pread(f, strtab, str_size, str_off);
		if (err)
			goto out;
		for (uint64_t k = 0; k < nsyms; k++) {
			uint32_t name = le32toh(syms[k].st_name);
			uint64_t value = le64toh(syms[k].st_value);
			if (name >= str_size)
				continue;
			const char *s = strtab + name;
			size_t maxlen = (size_t)(str_size - name);
			if (strnlen(s, maxlen) == maxlen)
				continue; /* not terminated within the table */
			if (strcmp(s, "tohost") == 0) {
				out->tohost = value;
				out->have_tohost = true;
			} else if (strcmp(s, "fromhost") == 0) {
				out->fromhost = value;
				out->have_fromhost = true;
			}
		}
		break; /* one .symtab per file */
	}
out:
	free(strtab);
	free(syms);
	free(sh);
	return err;
}

/* Loads every PT_LOAD of an ELF at its physical address (filesz copied, the rest of memsz
 * zeroed). All segments are checked before any byte is copied. */
static int boot_elf_load(struct vm *vm, struct boot_file *f, bool want_symbols,
			 struct boot_elf *out)
{
	Elf64_Ehdr eh;
	Elf64_Phdr *ph = NULL;
	uint64_t ram_end = vm->ram.base + vm->ram.size;
	int nload = 0;
	int err;

	memset(out, 0, sizeof(*out));
	err = boot_elf_header(f, &eh);
	if (err)
		return err;
	if (eh.e_phnum == 0 || eh.e_phnum == PN_XNUM) {
		log_error("%s '%s': ELF has no program headers", f->what, f->path);
		return -ENOEXEC;
	}
	if (eh.e_phentsize != sizeof(Elf64_Phdr)) {
		log_error("%s '%s': bad ELF program header size %u", f->what, f->path,
			  eh.e_phentsize);
		return -ENOEXEC;
	}
	if (!boot_in_file(f, eh.e_phoff, eh.e_phnum, sizeof(Elf64_Phdr))) {
		log_error("%s '%s': ELF program headers lie beyond the end of the file "
			  "(truncated?)",
			  f->what, f->path);
		return -ENOEXEC;
	}
	ph = calloc(eh.e_phnum, sizeof(*ph));
	if (!ph)
		return -ENOMEM;
	err = boot_pread(f, ph, (uint64_t)eh.e_phnum * sizeof(*ph), eh.e_phoff);
	if (err)
		goto out;

	out->lo = UINT64_MAX;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr *p = &ph[i];
		p->p_type = le32toh(p->p_type);
		p->p_offset = le64toh(p->p_offset);
		p->p_paddr = le64toh(p->p_paddr);
		p->p_filesz = le64toh(p->p_filesz);
		p->p_memsz = le64toh(p->p_memsz);
		if (p->p_type != PT_LOAD || p->p_memsz == 0)
			continue;
		if (p->p_filesz > p->p_memsz) {
			log_error("%s '%s': ELF segment %u has file size 0x%" PRIx64
				  " above its memory size 0x%" PRIx64,
				  f->what, f->path, i, (uint64_t)p->p_filesz, (uint64_t)p->p_memsz);
			err = -ENOEXEC;
			goto out;
		}
		if (!boot_in_file(f, p->p_offset, p->p_filesz, 1)) {
			log_error("%s '%s': ELF segment %u lies beyond the end of the file "
				  "(truncated?)",
				  f->what, f->path, i);
			err = -ENOEXEC;
			goto out;
		}
		if (!vm_ram_ptr(vm, p->p_paddr, p->p_memsz)) {
			log_error("%s '%s': ELF segment %u at 0x%" PRIx64 " (0x%" PRIx64
				  " bytes) is outside RAM 0x%" PRIx64 "-0x%" PRIx64,
				  f->what, f->path, i, (uint64_t)p->p_paddr, (uint64_t)p->p_memsz,
				  vm->ram.base, ram_end);
			err = -ERANGE;
			goto out;
		}
		if (p->p_paddr < out->lo)
			out->lo = p->p_paddr;
		if (p->p_paddr + p->p_memsz > out->hi)
			out->hi = p->p_paddr + p->p_memsz;
		nload++;
	}
	if (nload == 0) {
		log_error("%s '%s': ELF has no loadable segment", f->what, f->path);
		err = -ENOEXEC;
		goto out;
	}
	if (!vm_ram_ptr(vm, eh.e_entry, 2)) {
		log_error("%s '%s': ELF entry point 0x%" PRIx64 " is outside RAM", f->what, f->path,
			  (uint64_t)eh.e_entry);
		err = -ERANGE;
		goto out;
	}
	if (want_symbols) {
		err = boot_elf_symbols(f, &eh, out);
		if (err)
			goto out;
	}

	for (unsigned i = 0; i < eh.e_phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (p->p_type != PT_LOAD || p->p_memsz == 0)
			continue;
		err = boot_copy_to_ram(vm, f, p->p_paddr, p->p_offset, p->p_filesz);
		if (err)
			goto out;
		memset((uint8_t *)vm_ram_ptr(vm, p->p_paddr, p->p_memsz) + p->p_filesz, 0,
		       p->p_memsz - p->p_filesz);
	}
	out->entry = eh.e_entry;
out:
	free(ph);
	return err;
}

/* Firmware at the start of RAM: a raw binary (fw_dynamic.bin) or an ELF (fw_dynamic.elf);
 * it must end below the kernel. */
static int boot_load_firmware(struct vm *vm, struct boot_file *f, uint64_t limit, uint64_t *entry)
{
	uint8_t magic[SELFMAG] = { 0 };
	int err;

	if (f->size >= SELFMAG) {
		err = boot_pread(f, magic, SELFMAG, 0);
		if (err)
			return err;
	}
	if (memcmp(magic, ELFMAG, SELFMAG) == 0) {
		struct boot_elf elf;
		err = boot_elf_load(vm, f, false, &elf);
		if (err)
			return err;
		if (elf.hi > limit) {
			log_error("%s '%s': ends at 0x%" PRIx64 ", past the kernel's place at "
				  "0x%" PRIx64,
				  f->what, f->path, elf.hi, limit);
			return -EFBIG;
		}
		*entry = elf.entry;
		return 0;
	}
	if (f->size > limit - vm->ram.base) {
		log_error("%s '%s': %" PRIu64 " bytes do not fit below the kernel at 0x%" PRIx64
			  " (%" PRIu64 " KiB max)",
			  f->what, f->path, f->size, limit, (limit - vm->ram.base) / 1024);
		return -EFBIG;
	}
	if (vm->ram.size < limit - vm->ram.base) {
		log_error("%s '%s': RAM (%" PRIu64 " KiB) is too small", f->what, f->path,
			  vm->ram.size / 1024);
		return -ENOMEM;
	}
	*entry = vm->ram.base;
	return boot_copy_to_ram(vm, f, vm->ram.base, 0, f->size);
}

/* Says what a non-Image kernel file is, for the error message; NULL when unknown. */
static const char *boot_image_what_else(const uint8_t *h, uint64_t len)
{
	if (len >= 4 && memcmp(h, ELFMAG, SELFMAG) == 0)
		return "it is an ELF file; ELF programs boot bare-metal, with firmware \"none\"";
	if (len >= 2 && h[0] == 0x1f && h[1] == 0x8b)
		return "it is gzip-compressed: give the uncompressed Image";
	if (len >= 6 && memcmp(h,
			       "\xfd"
			       "7zXZ\0",
			       6) == 0)
		return "it is xz-compressed: give the uncompressed Image";
	if (len >= 4 && memcmp(h, "\x28\xb5\x2f\xfd", 4) == 0)
		return "it is zstd-compressed: give the uncompressed Image";
	if (len >= IMAGE_ARM64_MAGIC + 4 && memcmp(h + IMAGE_ARM64_MAGIC, "ARM\x64", 4) == 0)
		return "it is an arm64 Image";
	if (len >= 0x206 && memcmp(h + 0x202, "HdrS", 4) == 0)
		return "it is an x86 bzImage";
	return NULL;
}

/* The kernel Image at addr; *end is where it ends in RAM (bss included). */
static int boot_load_image(struct vm *vm, struct boot_file *f, uint64_t addr, uint64_t *end)
{
	uint8_t h[0x400];
	uint64_t have = f->size < sizeof(h) ? f->size : sizeof(h);
	uint64_t ram_end = vm->ram.base + vm->ram.size;
	const char *other;
	int err;

	err = boot_pread(f, h, have, 0);
	if (err)
		return err;
	other = boot_image_what_else(h, have);
	if (other) {
		log_error("%s '%s': not a RISC-V kernel Image (%s)", f->what, f->path, other);
		return -ENOEXEC;
	}
	if (have < IMAGE_HEADER_SIZE) {
		log_error("%s '%s': too short for a RISC-V kernel Image header (%" PRIu64 " bytes)",
			  f->what, f->path, f->size);
		return -ENOEXEC;
	}
	if (boot_le32(h + IMAGE_MAGIC2) != 0x05435352 /* "RSC\x05" */ &&
	    memcmp(h + IMAGE_MAGIC, "RISCV\0\0\0", 8) != 0) {
		log_error("%s '%s': not a RISC-V kernel Image (no \"RSC\\x05\" magic at offset "
			  "0x38)",
			  f->what, f->path);
		return -ENOEXEC;
	}
	if (boot_le64(h + IMAGE_FLAGS) & 1) {
		log_error("%s '%s': big-endian kernel Image, expected little-endian", f->what,
			  f->path);
		return -ENOEXEC;
	}
	/* An EFI-capable Image carries a PE header (offset in res3): its sections say how long
	 * the file must be, which catches a truncated kernel before it runs. */
	uint32_t pe = boot_le32(h + 60);
	if (h[0] == 'M' && h[1] == 'Z' && pe >= IMAGE_HEADER_SIZE && pe + 64 <= sizeof(h)) {
		uint64_t need = pe + 64;
		if (need <= have && memcmp(h + pe, "PE\0\0", 4) == 0) {
			unsigned nsec = h[pe + 6] | h[pe + 7] << 8;
			unsigned opt = h[pe + 20] | h[pe + 21] << 8;
			/* Raw sizes are rounded up to the file alignment, which the last
			 * section's padding may not reach. */
			uint64_t slack = boot_le32(h + pe + 24 + 36);
			for (unsigned k = 0; k < nsec; k++) {
				uint64_t sh = pe + 24 + opt + 40ULL * k;
				if (sh + 40 > have)
					break;
				uint64_t e =
					(uint64_t)boot_le32(h + sh + 20) + boot_le32(h + sh + 16);
				if (e > slack && e - slack > need)
					need = e - slack;
			}
		}
		if (need > f->size) {
			log_error("%s '%s': truncated: its header describes at least %" PRIu64
				  " bytes but the file has %" PRIu64,
				  f->what, f->path, need, f->size);
			return -ENOEXEC;
		}
	}
	/* image_size covers bss; 0 in headers older than version 0.2 means "file size". */
	uint64_t image_size = boot_le64(h + IMAGE_IMAGE_SIZE);
	uint64_t load_size = image_size > f->size ? image_size : f->size;
	if (addr >= ram_end || load_size > ram_end - addr) {
		log_error("%s '%s': needs %" PRIu64 " MiB at 0x%" PRIx64
			  " but RAM ends at 0x%" PRIx64 ": give the VM more memory",
			  f->what, f->path, BOOT_ALIGN_UP(load_size, MiB) / MiB, addr, ram_end);
		return -EFBIG;
	}
	err = boot_copy_to_ram(vm, f, addr, 0, f->size);
	if (err)
		return err;
	/* bss must read as zero even when RAM is reused (a reboot). */
	memset((uint8_t *)vm_ram_ptr(vm, addr, load_size) + f->size, 0, load_size - f->size);
	*end = addr + load_size;
	log_info("kernel '%s': text_offset 0x%" PRIx64 ", image_size 0x%" PRIx64
		 ", loaded at 0x%" PRIx64,
		 f->path, boot_le64(h + IMAGE_TEXT_OFFSET), image_size, addr);
	return 0;
}

/* QEMU's rule (far enough above the kernel for it to unpack, low enough for small RAM),
 * moved up past the kernel's image_size when a big kernel in a small RAM reaches it. */
static uint64_t boot_initrd_start(const struct vm *vm, uint64_t kernel_end)
{
	uint64_t gap = vm->ram.size / 2 < BOOT_INITRD_MAX_OFFSET ? vm->ram.size / 2
								 : BOOT_INITRD_MAX_OFFSET;
	uint64_t start = BOOT_ALIGN_UP(vm->ram.base + BOOT_KERNEL_OFFSET + gap, PAGE_SIZE);

	if (kernel_end > start)
		start = BOOT_ALIGN_UP(kernel_end, PAGE_SIZE);
	return start;
}

/* Where the kernel Image named by cfg will end in RAM, from its header; 0 when it cannot
 * tell (the load itself reports what is wrong with the file). */
static uint64_t boot_image_end_peek(const struct vm *vm)
{
	uint8_t h[IMAGE_HEADER_SIZE];
	struct stat st;
	uint64_t end = 0;
	int fd;

	if (!vm->cfg->kernel)
		return 0;
	fd = open(vm->cfg->kernel, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
	    boot_le32(h + IMAGE_MAGIC2) == 0x05435352) {
		uint64_t image_size = boot_le64(h + IMAGE_IMAGE_SIZE);
		uint64_t size =
			image_size > (uint64_t)st.st_size ? image_size : (uint64_t)st.st_size;
		uint64_t addr = vm->ram.base + BOOT_KERNEL_OFFSET;
		if (size <= UINT64_MAX - addr)
			end = addr + size;
	}
	close(fd);
	return end;
}

static bool boot_is_bare(const struct vm *vm)
{
	return vm->cfg->firmware && strcmp(vm->cfg->firmware, "none") == 0;
}

int boot_initrd_range(const struct vm *vm, uint64_t *start, uint64_t *end)
{
	const char *path = vm->cfg->initramfs;
	struct stat st;

	*start = *end = 0;
	if (!path || boot_is_bare(vm))
		return 0;
	if (stat(path, &st) != 0) {
		int err = -errno;
		log_error("initramfs '%s': %s", path, strerror(errno));
		return err;
	}
	*start = boot_initrd_start(vm, boot_image_end_peek(vm));
	*end = *start + (uint64_t)st.st_size;
	return 0;
}

/* The highest address for len bytes at or above floor: 2 MiB aligned with growth room
 * above (QEMU's choice for the DTB), else page aligned at the very top. 0 when none. */
static uint64_t boot_place_high(const struct vm *vm, uint64_t len, uint64_t floor)
{
	uint64_t ram_end = vm->ram.base + vm->ram.size;
	uint64_t a;

	if (floor < vm->ram.base)
		floor = vm->ram.base;
	if (len + BOOT_FDT_SLACK <= ram_end - floor) {
		a = BOOT_ALIGN_DOWN(ram_end - len - BOOT_FDT_SLACK, BOOT_FDT_ALIGN);
		if (a >= floor)
			return a;
	}
	if (len <= ram_end - floor) {
		a = BOOT_ALIGN_DOWN(ram_end - len, PAGE_SIZE);
		if (a >= floor)
			return a;
	}
	return 0;
}

static void boot_reset_harts(struct vm *vm, uint64_t pc, uint64_t dtb, uint64_t a2)
{
	for (int h = 0; h < vm->nharts; h++)
		hart_reset(vm->harts[h], pc, (uint64_t)h, dtb, a2);
}

int boot_load_linux(struct vm *vm)
{
	const struct vm_config *cfg = vm->cfg;
	struct boot_file fw = BOOT_FILE_INIT, kernel = BOOT_FILE_INIT, initrd = BOOT_FILE_INIT;
	uint64_t ram_end = vm->ram.base + vm->ram.size;
	uint64_t kernel_addr = vm->ram.base + BOOT_KERNEL_OFFSET;
	uint64_t fw_entry = 0, kernel_end = 0, initrd_start = 0, initrd_end = 0;
	uint64_t floor, base, info_addr, fdt_addr;
	void *fdt = NULL;
	int err;

	/* The caller turns "default firmware" into a path: NULL here is a caller's bug or
	 * a missing default, worth a clear line rather than a crash. */
	if (!cfg->firmware) {
		log_error("firmware: no firmware file given (OpenSBI fw_dynamic.bin)");
		return -EINVAL;
	}
	/* Each step names itself for --timeout: an open or a read can block (a file on a
	 * hung network file system). */
	vm_set_phase(vm, "loading the firmware");
	err = boot_open(&fw, "firmware", cfg->firmware);
	vm_set_phase(vm, "loading the kernel");
	if (!err)
		err = boot_open(&kernel, "kernel", cfg->kernel);
	vm_set_phase(vm, "loading the initramfs");
	if (!err && cfg->initramfs)
		err = boot_open(&initrd, "initramfs", cfg->initramfs);
	if (err)
		goto out;

	vm_set_phase(vm, "loading the firmware");
	err = boot_load_firmware(vm, &fw, kernel_addr, &fw_entry);
	if (err)
		goto out;
	vm_set_phase(vm, "loading the kernel");
	err = boot_load_image(vm, &kernel, kernel_addr, &kernel_end);
	if (err)
		goto out;
	floor = kernel_end;

	if (cfg->initramfs) {
		initrd_start = boot_initrd_start(vm, kernel_end);
		initrd_end = initrd_start + initrd.size;
		if (initrd_start >= ram_end || initrd.size > ram_end - initrd_start) {
			log_error("initramfs '%s': %" PRIu64 " MiB do not fit in RAM at 0x%" PRIx64
				  " (RAM ends at 0x%" PRIx64 "): give the VM more memory",
				  initrd.path, BOOT_ALIGN_UP(initrd.size, MiB) / MiB, initrd_start,
				  ram_end);
			err = -EFBIG;
			goto out;
		}
		vm_set_phase(vm, "loading the initramfs");
		err = boot_copy_to_ram(vm, &initrd, initrd_start, 0, initrd.size);
		if (err)
			goto out;
		floor = initrd_end;
	}

	vm_set_phase(vm, "building the device tree");
	err = virt_fdt_alloc(vm, initrd_start, initrd_end, &fdt);
	if (err) {
		log_error("device tree: cannot build it: %s", strerror(-err));
		goto out;
	}
	uint64_t fdt_size = fdt_totalsize(fdt);
	base = boot_place_high(vm, BOOT_INFO_RESERVE + fdt_size, floor);
	if (!base) {
		log_error("%s '%s': no room left for the device tree above 0x%" PRIx64
			  " (RAM ends at 0x%" PRIx64 "): give the VM more memory",
			  cfg->initramfs ? "initramfs" : "kernel",
			  cfg->initramfs ? initrd.path : kernel.path, floor, ram_end);
		err = -EFBIG;
		goto out;
	}
	info_addr = base;
	fdt_addr = base + BOOT_INFO_RESERVE;
	memcpy(vm_ram_ptr(vm, fdt_addr, fdt_size), fdt, fdt_size);

	/* struct fw_dynamic_info: six unsigned longs, read by OpenSBI before anything runs. */
	uint8_t *info = vm_ram_ptr(vm, info_addr, BOOT_FW_DYNAMIC_INFO_SIZE);
	boot_put_le64(info + 0, BOOT_FW_DYNAMIC_MAGIC);
	boot_put_le64(info + 8, BOOT_FW_DYNAMIC_VERSION);
	boot_put_le64(info + 16, kernel_addr); /* next_addr */
	boot_put_le64(info + 24, 1);	       /* next_mode: S-mode */
	boot_put_le64(info + 32, 0);	       /* options */
	boot_put_le64(info + 40, 0);	       /* boot_hart */

	log_info("boot: firmware 0x%" PRIx64 ", kernel 0x%" PRIx64 "-0x%" PRIx64
		 ", initramfs 0x%" PRIx64 "-0x%" PRIx64 ", fw_dynamic_info 0x%" PRIx64
		 ", dtb 0x%" PRIx64 " (%" PRIu64 " bytes)",
		 fw_entry, kernel_addr, kernel_end, initrd_start, initrd_end, info_addr, fdt_addr,
		 fdt_size);
	/* Every hart enters the firmware: OpenSBI elects the boot hart and parks the rest
	 * until the kernel starts them through SBI HSM. */
	boot_reset_harts(vm, fw_entry, fdt_addr, info_addr);
out:
	free(fdt);
	boot_close(&initrd);
	boot_close(&kernel);
	boot_close(&fw);
	return err;
}

int boot_load_bare(struct vm *vm)
{
	const struct vm_config *cfg = vm->cfg;
	struct boot_file kernel = BOOT_FILE_INIT;
	struct boot_elf elf;
	uint64_t fdt_addr;
	void *fdt = NULL;
	int err;

	if (cfg->initramfs) {
		log_error("initramfs '%s': not used in bare-metal mode (firmware \"none\")",
			  cfg->initramfs);
		return -EINVAL;
	}
	vm_set_phase(vm, "loading the kernel");
	err = boot_open(&kernel, "kernel", cfg->kernel);
	if (err)
		goto out;
	err = boot_elf_load(vm, &kernel, true, &elf);
	if (err)
		goto out;
	if (elf.have_tohost && !vm_ram_ptr(vm, elf.tohost, 8)) {
		log_error("kernel '%s': tohost at 0x%" PRIx64 " is outside RAM", kernel.path,
			  elf.tohost);
		err = -ERANGE;
		goto out;
	}

	err = virt_fdt_alloc(vm, 0, 0, &fdt);
	if (err) {
		log_error("device tree: cannot build it: %s", strerror(-err));
		goto out;
	}
	uint64_t fdt_size = fdt_totalsize(fdt);
	fdt_addr = boot_place_high(vm, fdt_size, elf.hi);
	if (!fdt_addr) {
		log_error("kernel '%s': no room left for the device tree above 0x%" PRIx64
			  " (RAM ends at 0x%" PRIx64 "): give the VM more memory",
			  kernel.path, elf.hi, vm->ram.base + vm->ram.size);
		err = -EFBIG;
		goto out;
	}
	memcpy(vm_ram_ptr(vm, fdt_addr, fdt_size), fdt, fdt_size);

	if (vm->htif) {
		htif_destroy(vm->htif);
		vm->htif = NULL;
	}
	if (elf.have_tohost) {
		vm->htif = htif_create(vm, elf.tohost);
		if (!vm->htif) {
			log_error("kernel '%s': cannot set up HTIF at tohost 0x%" PRIx64 ": %s",
				  kernel.path, elf.tohost, strerror(ENOMEM));
			err = -ENOMEM;
			goto out;
		}
		if (elf.have_fromhost && elf.fromhost != elf.tohost + 0x40)
			log_debug("kernel '%s': fromhost at 0x%" PRIx64 ", not tohost + 0x40",
				  kernel.path, elf.fromhost);
	}
	log_info("boot: ELF '%s' 0x%" PRIx64 "-0x%" PRIx64 ", entry 0x%" PRIx64 ", dtb 0x%" PRIx64
		 "%s",
		 kernel.path, elf.lo, elf.hi, elf.entry, fdt_addr,
		 elf.have_tohost ? ", tohost found" : "");
	boot_reset_harts(vm, elf.entry, fdt_addr, 0);
out:
	free(fdt);
	boot_close(&kernel);
	return err;
}
