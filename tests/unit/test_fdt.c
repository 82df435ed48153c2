/* The virt machine's device tree: built for 1 and 4 harts, then read back with libfdt and
 * compared with the memory map on the bus and with QEMU virt's addresses. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libfdt.h>

#include "core/config.h"
#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "fake_harts.h"
#include "machine/riscv-virt/virt.h"

struct machine {
	struct vm_config cfg;
	struct vm vm;
	uint8_t fdt[64 * 1024];
};

static struct machine *machine_new(int nharts, uint64_t memory, const char *cmdline,
				   const char *initramfs)
{
	struct machine *m = calloc(1, sizeof(*m));
	assert_non_null(m);
	m->cfg.kernel = "/nonexistent/Image";
	m->cfg.firmware = "/nonexistent/fw_dynamic.bin";
	m->cfg.cmdline = cmdline;
	m->cfg.initramfs = initramfs;
	m->cfg.memory = memory;
	m->cfg.cpus = nharts;
	m->vm.cfg = &m->cfg;
	m->vm.ram.base = RAM_BASE;
	m->vm.ram.size = memory;
	m->vm.nharts = nharts;
	for (int h = 0; h < nharts; h++)
		m->vm.harts[h] = (struct hart *)&fake_harts[h];
	pthread_mutex_init(&m->vm.exit_lock, NULL);
	pthread_cond_init(&m->vm.exit_cond, NULL);
	m->vm.clock_base_ns = host_now_ns();
	assert_int_equal(virt_create(&m->vm), 0);
	return m;
}

static void machine_free(struct machine *m)
{
	virt_destroy(&m->vm);
	assert_int_equal(m->vm.bus.count, 0);
	pthread_mutex_destroy(&m->vm.exit_lock);
	pthread_cond_destroy(&m->vm.exit_cond);
	free(m);
}

static const void *prop(const void *fdt, int node, const char *name, int *len)
{
	const void *p = fdt_getprop(fdt, node, name, len);
	if (!p)
		fail_msg("node %s: no property %s", fdt_get_name(fdt, node, NULL), name);
	return p;
}

static uint32_t prop_u32(const void *fdt, int node, const char *name)
{
	int len;
	const fdt32_t *p = prop(fdt, node, name, &len);
	assert_int_equal(len, 4);
	return fdt32_to_cpu(*p);
}

static uint64_t prop_u64(const void *fdt, int node, const char *name)
{
	int len;
	const fdt32_t *p = prop(fdt, node, name, &len);
	assert_int_equal(len, 8);
	return (uint64_t)fdt32_to_cpu(p[0]) << 32 | fdt32_to_cpu(p[1]);
}

static void assert_prop_str(const void *fdt, int node, const char *name, const char *want)
{
	int len;
	const char *p = prop(fdt, node, name, &len);
	assert_int_equal(len, (int)strlen(want) + 1);
	assert_string_equal(p, want);
}

/* True when the string list property holds s. */
static bool prop_has_string(const void *fdt, int node, const char *name, const char *s)
{
	return fdt_stringlist_search(fdt, node, name, s) >= 0;
}

static void assert_reg(const void *fdt, int node, uint64_t base, uint64_t size)
{
	int len;
	const fdt32_t *p = prop(fdt, node, "reg", &len);
	assert_int_equal(len, 16);
	assert_int_equal((uint64_t)fdt32_to_cpu(p[0]) << 32 | fdt32_to_cpu(p[1]), base);
	assert_int_equal((uint64_t)fdt32_to_cpu(p[2]) << 32 | fdt32_to_cpu(p[3]), size);
}

static int path(const void *fdt, const char *p)
{
	int off = fdt_path_offset(fdt, p);
	if (off < 0)
		fail_msg("no node %s: %s", p, fdt_strerror(off));
	return off;
}

/* The node a phandle names, which must exist. */
static int by_phandle(const void *fdt, uint32_t ph)
{
	int off = fdt_node_offset_by_phandle(fdt, ph);
	if (off < 0)
		fail_msg("phandle 0x%x names no node", ph);
	return off;
}

/* interrupts-extended must be, per hart h, <intc(h) a intc(h) b>. */
static void assert_irqs_extended(const void *fdt, int node, int nharts, uint32_t a, uint32_t b)
{
	int len;
	const fdt32_t *p = prop(fdt, node, "interrupts-extended", &len);
	assert_int_equal(len, nharts * 16);
	for (int h = 0; h < nharts; h++) {
		char want[64];
		snprintf(want, sizeof(want), "/cpus/cpu@%x/interrupt-controller", h);
		assert_int_equal(by_phandle(fdt, fdt32_to_cpu(p[4 * h])), path(fdt, want));
		assert_int_equal(fdt32_to_cpu(p[4 * h + 1]), a);
		assert_int_equal(by_phandle(fdt, fdt32_to_cpu(p[4 * h + 2])), path(fdt, want));
		assert_int_equal(fdt32_to_cpu(p[4 * h + 3]), b);
	}
}

static void check_machine(int nharts)
{
	struct machine *m = machine_new(nharts, 512ULL << 20, "console=ttyS0 earlycon", NULL);
	const void *fdt = m->fdt;
	int node, len;

	assert_int_equal(virt_build_fdt(&m->vm, m->fdt, sizeof(m->fdt)), 0);
	assert_int_equal(fdt_check_header(fdt), 0);

	/* Root. */
	assert_int_equal(prop_u32(fdt, 0, "#address-cells"), 2);
	assert_int_equal(prop_u32(fdt, 0, "#size-cells"), 2);
	assert_prop_str(fdt, 0, "compatible", "riscv-virtio");
	prop(fdt, 0, "model", &len);

	/* /chosen: the command line and the console, no initrd. */
	node = path(fdt, "/chosen");
	assert_prop_str(fdt, node, "bootargs", "console=ttyS0 earlycon");
	assert_prop_str(fdt, node, "stdout-path", "/soc/serial@10000000");
	assert_null(fdt_getprop(fdt, node, "linux,initrd-start", NULL));
	assert_null(fdt_getprop(fdt, node, "linux,initrd-end", NULL));

	/* Memory. */
	node = path(fdt, "/memory@80000000");
	assert_prop_str(fdt, node, "device_type", "memory");
	assert_reg(fdt, node, 0x80000000, 512ULL << 20);

	/* CPUs: exactly nharts of them, each a complete rv64gc hart. */
	node = path(fdt, "/cpus");
	assert_int_equal(prop_u32(fdt, node, "timebase-frequency"), VM_TIMEBASE_HZ);
	assert_int_equal(prop_u32(fdt, node, "#address-cells"), 1);
	assert_int_equal(prop_u32(fdt, node, "#size-cells"), 0);
	int ncpus = 0, child;
	fdt_for_each_subnode(child, fdt, node)
	{
		const char *name = fdt_get_name(fdt, child, NULL);
		if (strncmp(name, "cpu@", 4) != 0)
			continue;
		int h = (int)strtol(name + 4, NULL, 16);
		assert_in_range(h, 0, nharts - 1);
		assert_int_equal(prop_u32(fdt, child, "reg"), h);
		assert_prop_str(fdt, child, "device_type", "cpu");
		assert_prop_str(fdt, child, "status", "okay");
		assert_prop_str(fdt, child, "compatible", "riscv");
		assert_prop_str(fdt, child, "riscv,isa", "rv64imafdc_zicntr_zicsr_zifencei_sstc");
		assert_prop_str(fdt, child, "riscv,isa-base", "rv64i");
		assert_prop_str(fdt, child, "mmu-type", "riscv,sv48");
		static const char *const exts[] = { "i", "m",	   "a",	    "f",	"d",
						    "c", "zicntr", "zicsr", "zifencei", "sstc" };
		assert_int_equal(fdt_stringlist_count(fdt, child, "riscv,isa-extensions"), 10);
		for (size_t k = 0; k < sizeof(exts) / sizeof(exts[0]); k++)
			assert_true(prop_has_string(fdt, child, "riscv,isa-extensions", exts[k]));
		int intc = fdt_subnode_offset(fdt, child, "interrupt-controller");
		assert_true(intc >= 0);
		assert_prop_str(fdt, intc, "compatible", "riscv,cpu-intc");
		assert_int_equal(prop_u32(fdt, intc, "#interrupt-cells"), 1);
		assert_non_null(fdt_getprop(fdt, intc, "interrupt-controller", NULL));
		assert_int_not_equal(fdt_get_phandle(fdt, intc), 0);
		ncpus++;
	}
	assert_int_equal(ncpus, nharts);
	for (int h = 0; h < nharts; h++) {
		char core[64], cpu[32];
		snprintf(core, sizeof(core), "/cpus/cpu-map/cluster0/core%d", h);
		snprintf(cpu, sizeof(cpu), "/cpus/cpu@%x", h);
		assert_int_equal(by_phandle(fdt, prop_u32(fdt, path(fdt, core), "cpu")),
				 path(fdt, cpu));
	}

	/* /soc: one node per bus region, with the region's address and interrupt. */
	int soc = path(fdt, "/soc");
	assert_prop_str(fdt, soc, "compatible", "simple-bus");
	assert_int_equal(prop_u32(fdt, soc, "#address-cells"), 2);
	assert_int_equal(prop_u32(fdt, soc, "#size-cells"), 2);
	assert_non_null(fdt_getprop(fdt, soc, "ranges", &len));
	assert_int_equal(len, 0);
	int plic = path(fdt, "/soc/plic@c000000");
	int nsoc = 0;
	fdt_for_each_subnode(child, fdt, soc) nsoc++;
	assert_int_equal(nsoc, m->vm.bus.count);
	for (int i = 0; i < m->vm.bus.count; i++) {
		const struct mmio_region *r = &m->vm.bus.regions[i];
		bool found = false;
		fdt_for_each_subnode(child, fdt, soc)
		{
			const fdt32_t *reg = fdt_getprop(fdt, child, "reg", &len);
			if (!reg || len != 16 ||
			    ((uint64_t)fdt32_to_cpu(reg[0]) << 32 | fdt32_to_cpu(reg[1])) !=
				    r->base)
				continue;
			found = true;
			assert_reg(fdt, child, r->base, r->size);
			if (r->irq) {
				assert_int_equal(prop_u32(fdt, child, "interrupts"), r->irq);
				assert_int_equal(
					by_phandle(fdt, prop_u32(fdt, child, "interrupt-parent")),
					plic);
			}
		}
		if (!found)
			fail_msg("region %s at 0x%llx has no node", r->name,
				 (unsigned long long)r->base);
	}

	/* The QEMU virt addresses, compatibles and interrupt wiring. */
	node = path(fdt, "/soc/clint@2000000");
	assert_reg(fdt, node, 0x2000000, 0x10000);
	assert_true(prop_has_string(fdt, node, "compatible", "sifive,clint0"));
	assert_true(prop_has_string(fdt, node, "compatible", "riscv,clint0"));
	assert_irqs_extended(fdt, node, nharts, 3, 7);

	assert_reg(fdt, plic, 0xc000000, 0x4000000);
	assert_true(prop_has_string(fdt, plic, "compatible", "sifive,plic-1.0.0"));
	assert_true(prop_has_string(fdt, plic, "compatible", "riscv,plic0"));
	assert_int_equal(prop_u32(fdt, plic, "#interrupt-cells"), 1);
	assert_non_null(fdt_getprop(fdt, plic, "interrupt-controller", NULL));
	assert_true(prop_u32(fdt, plic, "riscv,ndev") >= 31);
	assert_irqs_extended(fdt, plic, nharts, 11, 9);

	node = path(fdt, "/soc/serial@10000000");
	assert_reg(fdt, node, 0x10000000, 0x100);
	assert_prop_str(fdt, node, "compatible", "ns16550a");
	assert_int_equal(prop_u32(fdt, node, "clock-frequency"), 3686400);
	assert_int_equal(prop_u32(fdt, node, "interrupts"), 10);

	node = path(fdt, "/soc/rtc@101000");
	assert_reg(fdt, node, 0x101000, 0x1000);
	assert_prop_str(fdt, node, "compatible", "google,goldfish-rtc");
	assert_int_equal(prop_u32(fdt, node, "interrupts"), 11);

	int test = path(fdt, "/soc/test@100000");
	assert_reg(fdt, test, 0x100000, 0x1000);
	assert_true(prop_has_string(fdt, test, "compatible", "sifive,test1"));
	assert_true(prop_has_string(fdt, test, "compatible", "sifive,test0"));
	assert_true(prop_has_string(fdt, test, "compatible", "syscon"));

	node = path(fdt, "/poweroff");
	assert_prop_str(fdt, node, "compatible", "syscon-poweroff");
	assert_int_equal(by_phandle(fdt, prop_u32(fdt, node, "regmap")), test);
	assert_int_equal(prop_u32(fdt, node, "offset"), 0);
	assert_int_equal(prop_u32(fdt, node, "value"), 0x5555);
	node = path(fdt, "/reboot");
	assert_prop_str(fdt, node, "compatible", "syscon-reboot");
	assert_int_equal(by_phandle(fdt, prop_u32(fdt, node, "regmap")), test);
	assert_int_equal(prop_u32(fdt, node, "value"), 0x7777);

	/* The console alias resolves to the UART. */
	assert_int_equal(path(fdt, "serial0"), path(fdt, "/soc/serial@10000000"));

	machine_free(m);
}

static void test_fdt_one_hart(void **state)
{
	(void)state;
	check_machine(1);
}

static void test_fdt_four_harts(void **state)
{
	(void)state;
	check_machine(4);
}

static void test_fdt_max_harts(void **state)
{
	(void)state;
	check_machine(VM_MAX_CPUS);
}

static char *make_file(size_t size)
{
	char *p = strdup("/tmp/mabo-test-fdt-XXXXXX");
	int fd = mkstemp(p);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
	return p;
}

static void test_fdt_initrd(void **state)
{
	(void)state;
	char *initrd = make_file(12345);
	/* 512 MiB: the initramfs goes 128 MiB above the kernel (QEMU's rule). */
	struct machine *m = machine_new(2, 512ULL << 20, NULL, initrd);
	int node;

	assert_int_equal(virt_build_fdt(&m->vm, m->fdt, sizeof(m->fdt)), 0);
	node = path(m->fdt, "/chosen");
	assert_null(fdt_getprop(m->fdt, node, "bootargs", NULL));
	uint64_t start = prop_u64(m->fdt, node, "linux,initrd-start");
	assert_int_equal(start, 0x80000000ULL + 0x200000 + (128ULL << 20));
	assert_int_equal(prop_u64(m->fdt, node, "linux,initrd-end"), start + 12345);
	machine_free(m);

	/* 64 MiB: halfway into RAM instead. */
	m = machine_new(1, 64ULL << 20, NULL, initrd);
	assert_int_equal(virt_build_fdt(&m->vm, m->fdt, sizeof(m->fdt)), 0);
	node = path(m->fdt, "/chosen");
	assert_int_equal(prop_u64(m->fdt, node, "linux,initrd-start"),
			 0x80000000ULL + 0x200000 + (32ULL << 20));
	machine_free(m);

	/* A missing initramfs is an error, not a tree without one. */
	m = machine_new(1, 64ULL << 20, NULL, "/nonexistent/initrd");
	assert_int_equal(virt_build_fdt(&m->vm, m->fdt, sizeof(m->fdt)), -ENOENT);
	machine_free(m);

	unlink(initrd);
	free(initrd);
}

static void test_fdt_small_buffer(void **state)
{
	(void)state;
	struct machine *m = machine_new(4, 128ULL << 20, NULL, NULL);
	assert_int_equal(virt_build_fdt(&m->vm, m->fdt, 256), -ENOSPC);
	machine_free(m);
}

static void test_fdt_dump(void **state)
{
	(void)state;
	struct machine *m = machine_new(2, 256ULL << 20, "console=ttyS0", NULL);
	char *file = make_file(0);
	static uint8_t buf[64 * 1024];

	assert_int_equal(virt_dump_fdt(&m->vm, file), 0);
	int fd = open(file, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	assert_true(n > 0);
	assert_int_equal(fdt_check_header(buf), 0);
	assert_int_equal(fdt_totalsize(buf), (uint32_t)n);
	assert_int_equal(virt_build_fdt(&m->vm, m->fdt, sizeof(m->fdt)), 0);
	assert_memory_equal(buf, m->fdt, (size_t)n);
	assert_int_equal(virt_dump_fdt(&m->vm, "/nonexistent/dir/x.dtb"), -ENOENT);
	unlink(file);
	free(file);
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
		cmocka_unit_test(test_fdt_one_hart),	 cmocka_unit_test(test_fdt_four_harts),
		cmocka_unit_test(test_fdt_max_harts),	 cmocka_unit_test(test_fdt_initrd),
		cmocka_unit_test(test_fdt_small_buffer), cmocka_unit_test(test_fdt_dump),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
