/* Boot loading: crafted bad ELFs and Image headers are rejected with an error naming the
 * file, good ones land where the layout says, harts start with the boot registers. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <libfdt.h>

#include "core/config.h"
#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "cpu/riscv/state.h"
#include "machine/riscv-virt/htif.h"
#include "machine/riscv-virt/virt.h"

#define MiB (1024ULL * 1024)
#define RAM_SIZE (64 * MiB)

/* Stubs for the CPU and HTIF: record what the loader asked for. */
static char fake_harts[VM_MAX_CPUS];
static struct {
	int calls;
	uint64_t pc[VM_MAX_CPUS], a0[VM_MAX_CPUS], a1[VM_MAX_CPUS], a2[VM_MAX_CPUS];
} resets;
static struct htif fake_htif;
static int htif_creates, htif_destroys;

void hart_set_irq(struct hart *h, uint64_t mask, bool level)
{
	(void)h, (void)mask, (void)level;
}
void hart_reset(struct hart *h, uint64_t pc, uint64_t a0, uint64_t a1, uint64_t a2)
{
	int i = (int)((char *)h - fake_harts);
	assert_in_range(i, 0, VM_MAX_CPUS - 1);
	resets.calls++;
	resets.pc[i] = pc;
	resets.a0[i] = a0;
	resets.a1[i] = a1;
	resets.a2[i] = a2;
}
void hart_kick(struct hart *h)
{
	(void)h;
}
/* The machine's state table names these; nothing here saves a fake hart. */
void hart_save(const struct hart *h, struct sbuf *b)
{
	(void)h, (void)b;
}
int hart_load(struct hart *h, struct sreader *r, uint32_t version)
{
	(void)h, (void)r, (void)version;
	return -EINVAL;
}
struct htif *htif_create(struct vm *vm, uint64_t tohost)
{
	htif_creates++;
	fake_htif.vm = vm;
	fake_htif.tohost = tohost;
	return &fake_htif;
}
void htif_destroy(struct htif *h)
{
	assert_ptr_equal(h, &fake_htif);
	htif_destroys++;
}

struct machine {
	struct vm_config cfg;
	struct vm vm;
};

static struct machine *machine_new(int nharts, uint64_t memory)
{
	struct machine *m = calloc(1, sizeof(*m));
	assert_non_null(m);
	m->cfg.memory = memory;
	m->cfg.cpus = nharts;
	m->vm.cfg = &m->cfg;
	m->vm.ram.base = RAM_BASE;
	m->vm.ram.size = memory;
	m->vm.ram.host = malloc(memory);
	assert_non_null(m->vm.ram.host);
	/* Not zero: the loader must zero bss itself. */
	memset(m->vm.ram.host, 0xa5, memory);
	m->vm.nharts = nharts;
	for (int h = 0; h < nharts; h++)
		m->vm.harts[h] = (struct hart *)&fake_harts[h];
	pthread_mutex_init(&m->vm.exit_lock, NULL);
	pthread_cond_init(&m->vm.exit_cond, NULL);
	m->vm.clock_base_ns = host_now_ns();
	assert_int_equal(virt_create(&m->vm), 0);
	memset(&resets, 0, sizeof(resets));
	htif_creates = htif_destroys = 0;
	return m;
}

static void machine_free(struct machine *m)
{
	virt_destroy(&m->vm);
	assert_null(m->vm.htif);
	free(m->vm.ram.host);
	pthread_mutex_destroy(&m->vm.exit_lock);
	pthread_cond_destroy(&m->vm.exit_cond);
	free(m);
}

static uint8_t *ram(struct machine *m, uint64_t gpa)
{
	uint8_t *p = vm_ram_ptr(&m->vm, gpa, 1);
	assert_non_null(p);
	return p;
}

/* Temporary files, removed at the end of each test. */
static char *files[128];
static int nfiles;

static const char *write_file(const void *data, size_t len)
{
	char *p = strdup("/tmp/mabo-test-boot-XXXXXX");
	int fd = mkstemp(p);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	assert_true(nfiles < 128);
	files[nfiles++] = p;
	return p;
}

static int teardown_files(void **state)
{
	(void)state;
	for (int i = 0; i < nfiles; i++) {
		unlink(files[i]);
		free(files[i]);
	}
	nfiles = 0;
	return 0;
}

/* Runs virt_load with stderr captured; returns its result and copies the message. */
static int load_capture(struct machine *m, char *msg, size_t len)
{
	char tmpl[] = "/tmp/mabo-test-boot-err-XXXXXX";
	int fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	unlink(tmpl);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	int ret = virt_load(&m->vm);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	ssize_t n = pread(fd, msg, len - 1, 0);
	close(fd);
	msg[n > 0 ? n : 0] = '\0';
	return ret;
}

/* Expects virt_load to fail with err and a message containing want (and the file name). */
static void expect_load_error(struct machine *m, int err, const char *file, const char *want)
{
	char msg[1024];
	int ret = load_capture(m, msg, sizeof(msg));
	if (ret != err || !strstr(msg, want) || (file && !strstr(msg, file)))
		fail_msg("expected %d with \"%s\", got %d: %s", err, want, ret, msg);
	/* One line. */
	char *nl = strchr(msg, '\n');
	assert_non_null(nl);
	assert_string_equal(nl + 1, "");
	assert_int_equal(resets.calls, 0);
}

/* ---- A tiny bare-metal ELF: one PT_LOAD with bss, a .symtab with tohost/fromhost. ---- */

#define ELF_CODE_ADDR 0x80000000ULL
#define ELF_MEMSZ 0x2000
#define ELF_TOHOST 0x80001000ULL

struct tiny_elf {
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	uint8_t code[16];
	Elf64_Sym sym[3];
	char strtab[24];
	char shstrtab[32];
	Elf64_Shdr sh[4];
};

static const uint8_t tiny_code[16] = { 0x13, 0, 0, 0, 0x6f, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8 };

static void tiny_elf_init(struct tiny_elf *e)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->eh.e_ident, ELFMAG, SELFMAG);
	e->eh.e_ident[EI_CLASS] = ELFCLASS64;
	e->eh.e_ident[EI_DATA] = ELFDATA2LSB;
	e->eh.e_ident[EI_VERSION] = EV_CURRENT;
	e->eh.e_type = ET_EXEC;
	e->eh.e_machine = EM_RISCV;
	e->eh.e_version = EV_CURRENT;
	e->eh.e_entry = ELF_CODE_ADDR;
	e->eh.e_phoff = offsetof(struct tiny_elf, ph);
	e->eh.e_shoff = offsetof(struct tiny_elf, sh);
	e->eh.e_ehsize = sizeof(Elf64_Ehdr);
	e->eh.e_phentsize = sizeof(Elf64_Phdr);
	e->eh.e_phnum = 1;
	e->eh.e_shentsize = sizeof(Elf64_Shdr);
	e->eh.e_shnum = 4;
	e->eh.e_shstrndx = 3;

	e->ph.p_type = PT_LOAD;
	e->ph.p_flags = PF_R | PF_X | PF_W;
	e->ph.p_offset = offsetof(struct tiny_elf, code);
	e->ph.p_vaddr = e->ph.p_paddr = ELF_CODE_ADDR;
	e->ph.p_filesz = sizeof(e->code);
	e->ph.p_memsz = ELF_MEMSZ;
	memcpy(e->code, tiny_code, sizeof(tiny_code));

	memcpy(e->strtab, "\0tohost\0fromhost", 17);
	e->sym[1].st_name = 1;
	e->sym[1].st_value = ELF_TOHOST;
	e->sym[1].st_info = ELF64_ST_INFO(STB_GLOBAL, STT_OBJECT);
	e->sym[2].st_name = 8;
	e->sym[2].st_value = ELF_TOHOST + 0x40;
	e->sym[2].st_info = ELF64_ST_INFO(STB_GLOBAL, STT_OBJECT);
	memcpy(e->shstrtab, "\0.symtab\0.strtab\0.shstrtab", 27);

	e->sh[1].sh_name = 1;
	e->sh[1].sh_type = SHT_SYMTAB;
	e->sh[1].sh_offset = offsetof(struct tiny_elf, sym);
	e->sh[1].sh_size = sizeof(e->sym);
	e->sh[1].sh_entsize = sizeof(Elf64_Sym);
	e->sh[1].sh_link = 2;
	e->sh[2].sh_name = 9;
	e->sh[2].sh_type = SHT_STRTAB;
	e->sh[2].sh_offset = offsetof(struct tiny_elf, strtab);
	e->sh[2].sh_size = sizeof(e->strtab);
	e->sh[3].sh_name = 17;
	e->sh[3].sh_type = SHT_STRTAB;
	e->sh[3].sh_offset = offsetof(struct tiny_elf, shstrtab);
	e->sh[3].sh_size = sizeof(e->shstrtab);
}

static struct machine *bare_machine(const void *elf, size_t len)
{
	struct machine *m = machine_new(2, RAM_SIZE);
	m->cfg.firmware = "none";
	m->cfg.kernel = write_file(elf, len);
	return m;
}

static void test_elf_good(void **state)
{
	(void)state;
	struct tiny_elf e;
	tiny_elf_init(&e);
	struct machine *m = bare_machine(&e, sizeof(e));

	assert_int_equal(virt_load(&m->vm), 0);
	assert_memory_equal(ram(m, ELF_CODE_ADDR), tiny_code, sizeof(tiny_code));
	for (uint64_t a = ELF_CODE_ADDR + sizeof(tiny_code); a < ELF_CODE_ADDR + ELF_MEMSZ; a++)
		if (*ram(m, a) != 0)
			fail_msg("bss byte at 0x%llx not zeroed", (unsigned long long)a);
	assert_int_equal(*ram(m, ELF_CODE_ADDR + ELF_MEMSZ), 0xa5); /* nothing past memsz */

	assert_int_equal(resets.calls, 2);
	for (int h = 0; h < 2; h++) {
		assert_int_equal(resets.pc[h], ELF_CODE_ADDR);
		assert_int_equal(resets.a0[h], h);
		assert_int_equal(resets.a2[h], 0);
		assert_int_equal(resets.a1[h], resets.a1[0]);
	}
	/* a1: a valid DTB high in RAM, 8-byte aligned, clear of the program. */
	uint64_t dtb = resets.a1[0];
	assert_int_equal(dtb % 8, 0);
	assert_true(dtb >= ELF_CODE_ADDR + ELF_MEMSZ);
	assert_true(dtb >= RAM_BASE + RAM_SIZE / 2);
	assert_int_equal(fdt_check_header(ram(m, dtb)), 0);
	assert_true(dtb + fdt_totalsize(ram(m, dtb)) <= RAM_BASE + RAM_SIZE);
	assert_true(fdt_path_offset(ram(m, dtb), "/soc/clint@2000000") >= 0);

	assert_int_equal(htif_creates, 1);
	assert_ptr_equal(m->vm.htif, &fake_htif);
	assert_int_equal(fake_htif.tohost, ELF_TOHOST);
	machine_free(m);
	assert_int_equal(htif_destroys, 1);
}

static void test_elf_without_symbols(void **state)
{
	(void)state;
	struct tiny_elf e;
	tiny_elf_init(&e);
	e.eh.e_shoff = 0;
	e.eh.e_shnum = 0;
	struct machine *m = bare_machine(&e, sizeof(e));
	assert_int_equal(virt_load(&m->vm), 0);
	assert_int_equal(htif_creates, 0);
	assert_null(m->vm.htif);
	assert_int_equal(resets.calls, 2);
	machine_free(m);
}

/* Each case breaks one thing in a good ELF. */
static void expect_bad_elf(void (*breakit)(struct tiny_elf *), size_t len, int err,
			   const char *want)
{
	struct tiny_elf e;
	tiny_elf_init(&e);
	if (breakit)
		breakit(&e);
	struct machine *m = bare_machine(&e, len ? len : sizeof(e));
	expect_load_error(m, err, m->cfg.kernel, want);
	assert_int_equal(htif_creates, 0);
	machine_free(m);
}

static void break_class32(struct tiny_elf *e)
{
	e->eh.e_ident[EI_CLASS] = ELFCLASS32;
}
static void break_bigendian(struct tiny_elf *e)
{
	e->eh.e_ident[EI_DATA] = ELFDATA2MSB;
	e->eh.e_machine = (uint16_t)(EM_RISCV << 8 | EM_RISCV >> 8);
}
static void break_x86(struct tiny_elf *e)
{
	e->eh.e_machine = EM_X86_64;
}
static void break_aarch64(struct tiny_elf *e)
{
	e->eh.e_machine = EM_AARCH64;
}
static void break_magic(struct tiny_elf *e)
{
	e->eh.e_ident[1] = 'X';
}
static void break_type(struct tiny_elf *e)
{
	e->eh.e_type = ET_REL;
}
static void break_version(struct tiny_elf *e)
{
	e->eh.e_version = 7;
}
static void break_phoff(struct tiny_elf *e)
{
	e->eh.e_phoff = 0xffffffffffffff00ULL;
}
static void break_phnum(struct tiny_elf *e)
{
	e->eh.e_phnum = 0x7fff;
}
static void break_phentsize(struct tiny_elf *e)
{
	e->eh.e_phentsize = 32;
}
static void break_nophdr(struct tiny_elf *e)
{
	e->eh.e_phnum = 0;
}
static void break_noload(struct tiny_elf *e)
{
	e->ph.p_type = PT_NOTE;
}
static void break_seg_offset(struct tiny_elf *e)
{
	e->ph.p_offset = 0x10000;
}
static void break_seg_filesz(struct tiny_elf *e)
{
	e->ph.p_filesz = 0xfffffffffffffff0ULL;
	e->ph.p_memsz = e->ph.p_filesz;
}
static void break_seg_memsz(struct tiny_elf *e)
{
	e->ph.p_memsz = 4;
}
static void break_seg_low(struct tiny_elf *e)
{
	e->ph.p_paddr = 0x1000;
}
static void break_seg_high(struct tiny_elf *e)
{
	e->ph.p_paddr = RAM_BASE + RAM_SIZE - 8;
}
static void break_seg_wrap(struct tiny_elf *e)
{
	e->ph.p_memsz = 0xffffffff00000000ULL;
}
static void break_entry(struct tiny_elf *e)
{
	e->eh.e_entry = 0x1000;
}
static void break_shoff(struct tiny_elf *e)
{
	e->eh.e_shoff = 0x100000;
}
static void break_shentsize(struct tiny_elf *e)
{
	e->eh.e_shentsize = 40;
}
static void break_symlink(struct tiny_elf *e)
{
	e->sh[1].sh_link = 99;
}
static void break_symlink_type(struct tiny_elf *e)
{
	e->sh[1].sh_link = 1;
}
static void break_symsize(struct tiny_elf *e)
{
	e->sh[1].sh_size = 0x7fffffffffffULL;
}
static void break_symentsize(struct tiny_elf *e)
{
	e->sh[1].sh_entsize = 0;
}
static void break_strtab(struct tiny_elf *e)
{
	e->sh[2].sh_offset = 0xfffffffffffff000ULL;
}
static void break_tohost(struct tiny_elf *e)
{
	e->sym[1].st_value = 0x1000;
}

static void test_elf_bad(void **state)
{
	(void)state;
	expect_bad_elf(break_class32, 0, -ENOEXEC,
		       "32-bit ELF for machine 243 (RISC-V), expected a 64-bit RISC-V ELF");
	expect_bad_elf(break_bigendian, 0, -ENOEXEC, "big-endian ELF for machine 243 (RISC-V)");
	expect_bad_elf(break_x86, 0, -ENOEXEC, "ELF for machine 62 (x86-64), expected RISC-V");
	expect_bad_elf(break_aarch64, 0, -ENOEXEC,
		       "ELF for machine 183 (AArch64), expected RISC-V");
	expect_bad_elf(break_magic, 0, -ENOEXEC, "not an ELF file");
	expect_bad_elf(break_type, 0, -ENOEXEC, "is not an executable");
	expect_bad_elf(break_version, 0, -ENOEXEC, "bad ELF version");
	expect_bad_elf(break_phoff, 0, -ENOEXEC, "program headers lie beyond the end of the file");
	expect_bad_elf(break_phnum, 0, -ENOEXEC, "program headers lie beyond the end of the file");
	expect_bad_elf(break_phentsize, 0, -ENOEXEC, "bad ELF program header size");
	expect_bad_elf(break_nophdr, 0, -ENOEXEC, "no program headers");
	expect_bad_elf(break_noload, 0, -ENOEXEC, "no loadable segment");
	expect_bad_elf(break_seg_offset, 0, -ENOEXEC, "segment 0 lies beyond the end of the file");
	expect_bad_elf(break_seg_filesz, 0, -ENOEXEC, "segment 0 lies beyond the end of the file");
	expect_bad_elf(break_seg_memsz, 0, -ENOEXEC, "above its memory size");
	expect_bad_elf(break_seg_low, 0, -ERANGE, "is outside RAM");
	expect_bad_elf(break_seg_high, 0, -ERANGE, "is outside RAM");
	expect_bad_elf(break_seg_wrap, 0, -ERANGE, "is outside RAM");
	expect_bad_elf(break_entry, 0, -ERANGE, "entry point 0x1000 is outside RAM");
	expect_bad_elf(break_shoff, 0, -ENOEXEC, "section headers lie beyond the end of the file");
	expect_bad_elf(break_shentsize, 0, -ENOEXEC, "bad ELF section header size");
	expect_bad_elf(break_symlink, 0, -ENOEXEC, "corrupt ELF symbol table");
	expect_bad_elf(break_symlink_type, 0, -ENOEXEC, "corrupt ELF symbol table");
	expect_bad_elf(break_symsize, 0, -ENOEXEC, "corrupt ELF symbol table");
	expect_bad_elf(break_symentsize, 0, -ENOEXEC, "corrupt ELF symbol table");
	expect_bad_elf(break_strtab, 0, -ENOEXEC, "corrupt ELF string table");
	expect_bad_elf(break_tohost, 0, -ERANGE, "tohost at 0x1000 is outside RAM");
	/* Truncations: inside the ident, inside the header, inside the program headers, and
	 * inside the segment data. */
	expect_bad_elf(NULL, 10, -ENOEXEC, "truncated ELF header");
	expect_bad_elf(NULL, 40, -ENOEXEC, "truncated ELF header");
	expect_bad_elf(NULL, sizeof(Elf64_Ehdr) + 20, -ENOEXEC,
		       "program headers lie beyond the end of the file");
	expect_bad_elf(NULL, offsetof(struct tiny_elf, code) + 4, -ENOEXEC,
		       "segment 0 lies beyond the end of the file");
	expect_bad_elf(NULL, offsetof(struct tiny_elf, sh) + 10, -ENOEXEC,
		       "section headers lie beyond the end of the file");
}

static void test_files_bad(void **state)
{
	(void)state;
	struct machine *m = machine_new(1, RAM_SIZE);

	m->cfg.firmware = "none";
	m->cfg.kernel = "/nonexistent/kernel.elf";
	expect_load_error(m, -ENOENT, m->cfg.kernel, "No such file or directory");
	m->cfg.kernel = "/tmp";
	expect_load_error(m, -EISDIR, "/tmp", "is a directory");
	m->cfg.kernel = write_file("", 0);
	expect_load_error(m, -EINVAL, m->cfg.kernel, "file is empty");
	m->cfg.kernel = NULL;
	expect_load_error(m, -EINVAL, NULL, "kernel: no file given");

	/* Linux mode: no firmware at all. */
	m->cfg.firmware = NULL;
	m->cfg.kernel = "/nonexistent/Image";
	expect_load_error(m, -EINVAL, NULL, "no firmware file given");

	/* Unreadable (only meaningful when not root). */
	if (geteuid() != 0) {
		m->cfg.firmware = "none";
		m->cfg.kernel = write_file("x", 1);
		chmod(m->cfg.kernel, 0);
		expect_load_error(m, -EACCES, m->cfg.kernel, "Permission denied");
	}
	machine_free(m);
}

/* ---- Linux mode: firmware + Image + initramfs. ---- */

#define IMAGE_SIZE 0x10000 /* image_size in the header: file plus bss */
#define IMAGE_FILE 0x1000

static uint8_t image[IMAGE_FILE];
static uint8_t firmware[0x3000];

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void image_init(void)
{
	memset(image, 0, sizeof(image));
	image[0] = 0x4d; /* "MZ": the EFI stub's code0, as Debian's Image has */
	image[1] = 0x5a;
	put64(image + 8, 0x200000);    /* text_offset */
	put64(image + 16, IMAGE_SIZE); /* image_size */
	put64(image + 24, 0);	       /* flags: little endian */
	image[32] = 2;		       /* version 0.2 */
	memcpy(image + 48, "RISCV\0\0\0", 8);
	memcpy(image + 56, "RSC\x05", 4);
	for (size_t i = 64; i < sizeof(image); i++)
		image[i] = (uint8_t)(i * 7);
	for (size_t i = 0; i < sizeof(firmware); i++)
		firmware[i] = (uint8_t)(i * 13 + 1);
}

static struct machine *linux_machine(uint64_t memory, const void *img, size_t len,
				     const char *initrd)
{
	struct machine *m = machine_new(4, memory);
	m->cfg.firmware = write_file(firmware, sizeof(firmware));
	m->cfg.kernel = write_file(img, len);
	m->cfg.initramfs = initrd;
	m->cfg.cmdline = "console=ttyS0";
	return m;
}

static void test_linux_good(void **state)
{
	(void)state;
	static uint8_t initrd[5000];
	for (size_t i = 0; i < sizeof(initrd); i++)
		initrd[i] = (uint8_t)(i ^ 0x5a);
	image_init();
	struct machine *m =
		linux_machine(RAM_SIZE, image, sizeof(image), write_file(initrd, sizeof(initrd)));

	assert_int_equal(virt_load(&m->vm), 0);
	const uint64_t kernel = RAM_BASE + 0x200000;
	assert_memory_equal(ram(m, RAM_BASE), firmware, sizeof(firmware));
	assert_memory_equal(ram(m, kernel), image, sizeof(image));
	for (uint64_t a = kernel + IMAGE_FILE; a < kernel + IMAGE_SIZE; a++)
		if (*ram(m, a) != 0)
			fail_msg("kernel bss at 0x%llx not zeroed", (unsigned long long)a);
	/* 64 MiB RAM: the initramfs goes halfway (32 MiB) above the kernel. */
	const uint64_t initrd_start = kernel + RAM_SIZE / 2;
	assert_memory_equal(ram(m, initrd_start), initrd, sizeof(initrd));

	assert_int_equal(resets.calls, 4);
	uint64_t dtb = resets.a1[0], info = resets.a2[0];
	for (int h = 0; h < 4; h++) {
		assert_int_equal(resets.pc[h], RAM_BASE);
		assert_int_equal(resets.a0[h], h);
		assert_int_equal(resets.a1[h], dtb);
		assert_int_equal(resets.a2[h], info);
	}

	/* fw_dynamic_info: magic, version 2, next_addr = kernel, S-mode, boot hart 0. */
	assert_int_equal(info % 8, 0);
	assert_true(info >= initrd_start + sizeof(initrd));
	assert_true(info + 48 <= dtb);
	assert_int_equal(get64(ram(m, info)), 0x4942534f);
	assert_int_equal(get64(ram(m, info + 8)), 2);
	assert_int_equal(get64(ram(m, info + 16)), kernel);
	assert_int_equal(get64(ram(m, info + 24)), 1);
	assert_int_equal(get64(ram(m, info + 32)), 0);
	assert_int_equal(get64(ram(m, info + 40)), 0);

	/* The DTB: high, aligned, inside RAM, with the initramfs range and the command line. */
	const void *fdt = ram(m, dtb);
	assert_int_equal(dtb % 8, 0);
	assert_int_equal(fdt_check_header(fdt), 0);
	assert_true(dtb + fdt_totalsize(fdt) <= RAM_BASE + RAM_SIZE);
	assert_true(dtb >= RAM_BASE + RAM_SIZE - 2 * MiB);
	int chosen = fdt_path_offset(fdt, "/chosen");
	assert_true(chosen >= 0);
	assert_string_equal(fdt_getprop(fdt, chosen, "bootargs", NULL), "console=ttyS0");
	int len;
	fdt64_t v;
	const void *p = fdt_getprop(fdt, chosen, "linux,initrd-start", &len);
	assert_non_null(p);
	assert_int_equal(len, 8);
	memcpy(&v, p, 8); /* properties are only 4-byte aligned */
	assert_int_equal(fdt64_to_cpu(v), initrd_start);
	p = fdt_getprop(fdt, chosen, "linux,initrd-end", &len);
	assert_non_null(p);
	memcpy(&v, p, 8);
	assert_int_equal(fdt64_to_cpu(v), initrd_start + sizeof(initrd));
	int cpus = fdt_path_offset(fdt, "/cpus/cpu@3");
	assert_true(cpus >= 0);

	/* The tree the CLI dumps is the one the guest got. */
	static uint8_t again[64 * 1024];
	assert_int_equal(virt_build_fdt(&m->vm, again, sizeof(again)), 0);
	assert_int_equal(fdt_totalsize(again), fdt_totalsize(fdt));
	assert_memory_equal(again, fdt, fdt_totalsize(fdt));
	machine_free(m);
}

static void test_linux_no_initrd_and_elf_firmware(void **state)
{
	(void)state;
	struct tiny_elf e;
	tiny_elf_init(&e);
	e.eh.e_entry = ELF_CODE_ADDR + 4;
	image_init();
	struct machine *m = linux_machine(RAM_SIZE, image, sizeof(image), NULL);
	m->cfg.firmware = write_file(&e, sizeof(e)); /* fw_dynamic.elf works too */
	assert_int_equal(virt_load(&m->vm), 0);
	assert_int_equal(resets.pc[0], ELF_CODE_ADDR + 4);
	assert_memory_equal(ram(m, RAM_BASE), tiny_code, sizeof(tiny_code));
	const void *fdt = ram(m, resets.a1[0]);
	int chosen = fdt_path_offset(fdt, "/chosen");
	assert_null(fdt_getprop(fdt, chosen, "linux,initrd-start", NULL));
	assert_int_equal(htif_creates, 0); /* no HTIF in Linux mode */
	machine_free(m);
}

/* A kernel reaching QEMU's initramfs spot pushes the initramfs past its end, and the
 * device tree says so too. */
static void test_linux_initrd_after_big_kernel(void **state)
{
	(void)state;
	static uint8_t big_image[IMAGE_FILE];
	image_init();
	memcpy(big_image, image, sizeof(big_image));
	put64(big_image + 16, 5 * MiB + 100); /* RAM 8 MiB: QEMU's spot is at +2 MiB + 4 MiB */
	struct machine *m =
		linux_machine(8 * MiB, big_image, sizeof(big_image), write_file("abc", 3));
	assert_int_equal(virt_load(&m->vm), 0);
	const uint64_t initrd_start = RAM_BASE + 0x200000 + 5 * MiB + 4096;
	assert_memory_equal(ram(m, initrd_start), "abc", 3);
	const void *fdt = ram(m, resets.a1[0]);
	fdt64_t v;
	const void *p =
		fdt_getprop(fdt, fdt_path_offset(fdt, "/chosen"), "linux,initrd-start", NULL);
	assert_non_null(p);
	memcpy(&v, p, 8);
	assert_int_equal(fdt64_to_cpu(v), initrd_start);
	static uint8_t again[64 * 1024];
	assert_int_equal(virt_build_fdt(&m->vm, again, sizeof(again)), 0);
	assert_memory_equal(again, fdt, fdt_totalsize(fdt));
	machine_free(m);
}

static void expect_bad_linux(const void *img, size_t len, uint64_t memory, int err,
			     const char *want)
{
	struct machine *m = linux_machine(memory, img, len, NULL);
	expect_load_error(m, err, m->cfg.kernel, want);
	machine_free(m);
}

static void test_linux_bad(void **state)
{
	(void)state;
	static uint8_t bad[0x1000];

	/* arm64 Image: "ARM\x64" where RISC-V has "RSC\x05". */
	image_init();
	memcpy(bad, image, sizeof(bad));
	memset(bad + 48, 0, 8);
	memcpy(bad + 56, "ARM\x64", 4);
	expect_bad_linux(bad, sizeof(bad), RAM_SIZE, -ENOEXEC,
			 "not a RISC-V kernel Image (it is an arm64 Image)");

	/* x86 bzImage. */
	memset(bad, 0, sizeof(bad));
	bad[0x1fe] = 0x55, bad[0x1ff] = 0xaa;
	memcpy(bad + 0x202, "HdrS", 4);
	expect_bad_linux(bad, sizeof(bad), RAM_SIZE, -ENOEXEC, "it is an x86 bzImage");

	/* An ELF (e.g. a vmlinux from another distribution) given as the Image. */
	struct tiny_elf e;
	tiny_elf_init(&e);
	expect_bad_linux(&e, sizeof(e), RAM_SIZE, -ENOEXEC,
			 "not a RISC-V kernel Image (it is an ELF file");

	/* Compressed. */
	static const uint8_t gz[64] = { 0x1f, 0x8b, 8, 0 };
	expect_bad_linux(gz, sizeof(gz), RAM_SIZE, -ENOEXEC, "gzip-compressed");

	/* No magic. */
	memcpy(bad, image, sizeof(bad));
	memset(bad + 48, 0, 12);
	expect_bad_linux(bad, sizeof(bad), RAM_SIZE, -ENOEXEC, "not a RISC-V kernel Image");

	/* Truncated header. */
	expect_bad_linux(image, 40, RAM_SIZE, -ENOEXEC, "too short for a RISC-V kernel Image");

	/* Big-endian flag. */
	memcpy(bad, image, sizeof(bad));
	bad[24] = 1;
	expect_bad_linux(bad, sizeof(bad), RAM_SIZE, -ENOEXEC, "big-endian kernel Image");

	/* image_size beyond RAM. */
	memcpy(bad, image, sizeof(bad));
	put64(bad + 16, 1ULL << 30);
	expect_bad_linux(bad, sizeof(bad), RAM_SIZE, -EFBIG, "give the VM more memory");
	put64(bad + 16, UINT64_MAX);
	expect_bad_linux(bad, sizeof(bad), RAM_SIZE, -EFBIG, "give the VM more memory");

	/* Initramfs larger than RAM can hold. */
	static uint8_t big[6 * MiB];
	struct machine *m =
		linux_machine(8 * MiB, image, sizeof(image), write_file(big, sizeof(big)));
	expect_load_error(m, -EFBIG, m->cfg.initramfs, "do not fit in RAM");
	machine_free(m);

	/* Initramfs that fits but leaves no room for the DTB. */
	m = linux_machine(8 * MiB, image, sizeof(image), write_file(big, 2 * MiB - 2048));
	expect_load_error(m, -EFBIG, m->cfg.initramfs, "no room left for the device tree");
	machine_free(m);

	/* Missing initramfs. */
	m = linux_machine(RAM_SIZE, image, sizeof(image), "/nonexistent/initrd.gz");
	expect_load_error(m, -ENOENT, "/nonexistent/initrd.gz", "No such file or directory");
	machine_free(m);

	/* Firmware too big to stay below the kernel. */
	m = linux_machine(RAM_SIZE, image, sizeof(image), NULL);
	m->cfg.firmware = write_file(big, 3 * MiB);
	expect_load_error(m, -EFBIG, m->cfg.firmware, "do not fit below the kernel");
	machine_free(m);

	/* RAM smaller than the firmware's 2 MiB. */
	m = linux_machine(1 * MiB, image, sizeof(image), NULL);
	expect_load_error(m, -ENOMEM, m->cfg.firmware, "too small");
	machine_free(m);
}

int main(void)
{
	/* The UART reads standard input: keep it off the developer's terminal. */
	int null = open("/dev/null", O_RDONLY);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		close(null);
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_elf_good, teardown_files),
		cmocka_unit_test_teardown(test_elf_without_symbols, teardown_files),
		cmocka_unit_test_teardown(test_elf_bad, teardown_files),
		cmocka_unit_test_teardown(test_files_bad, teardown_files),
		cmocka_unit_test_teardown(test_linux_good, teardown_files),
		cmocka_unit_test_teardown(test_linux_no_initrd_and_elf_firmware, teardown_files),
		cmocka_unit_test_teardown(test_linux_initrd_after_big_kernel, teardown_files),
		cmocka_unit_test_teardown(test_linux_bad, teardown_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
