/* --config FILE (src/core/config_file.c): a JSON file gives the same struct vm_config as the
 * equivalent flags, flags given too override it or add devices, and bad files are refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"

static char path[64];

static void write_file(const char *text)
{
	snprintf(path, sizeof(path), "/tmp/mabo-test-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static int parse(struct vm_config *cfg, char **argv)
{
	int argc = 0;
	while (argv[argc])
		argc++;
	return config_parse_args(cfg, argc, argv);
}

static void test_same_as_flags(void **state)
{
	struct vm_config a, b;
	(void)state;
	write_file("{\"kernel\":\"/k\",\"initramfs\":\"/i\",\"cmdline\":\"console=ttyS0 x=1\","
		   "\"memory\":\"1G\",\"cpus\":2,\"timeout\":2.5,\"no_reboot\":true,\"rng\":true,"
		   "\"api_socket\":\"/s\",\"disks\":[{\"path\":\"/d\",\"readonly\":true,"
		   "\"id\":\"root\",\"reconnect_timeout\":7,\"locking\":false},\"path=/e\"],"
		   "\"nets\":[{\"mode\":\"user\",\"hostfwd\":[\"tcp::2222-:22\"],"
		   "\"mac\":\"52:54:00:00:00:09\"}]}");
	char *file_argv[] = { "mabo-vmm", "--config", path, NULL };
	char *flag_argv[] = { "mabo-vmm",
			      "--kernel",
			      "/k",
			      "--initramfs",
			      "/i",
			      "--cmdline",
			      "console=ttyS0 x=1",
			      "--memory",
			      "1G",
			      "--cpus",
			      "2",
			      "--timeout",
			      "2.5",
			      "--no-reboot",
			      "--rng",
			      "--api-socket",
			      "/s",
			      "--disk",
			      "path=/d,readonly=on,id=root,reconnect-timeout=7,locking=off",
			      "--disk",
			      "path=/e",
			      "--net",
			      "user,hostfwd=tcp::2222-:22,mac=52:54:00:00:00:09",
			      NULL };
	assert_int_equal(parse(&a, file_argv), 0);
	assert_int_equal(parse(&b, flag_argv), 0);
	assert_string_equal(a.kernel, b.kernel);
	assert_string_equal(a.initramfs, b.initramfs);
	assert_string_equal(a.cmdline, b.cmdline);
	assert_string_equal(a.api_socket, b.api_socket);
	assert_int_equal(a.memory, 1ULL << 30);
	assert_int_equal(a.memory, b.memory);
	assert_int_equal(a.cpus, 2);
	assert_true(a.timeout == 2.5 && a.no_reboot);
	assert_int_equal(a.ndevices, b.ndevices);
	assert_int_equal(a.ndevices, 4);
	for (int i = 0; i < a.ndevices; i++) {
		assert_string_equal(a.devices[i].type, b.devices[i].type);
		assert_memory_equal(&a.devices[i].disk, &b.devices[i].disk,
				    sizeof(a.devices[i].disk));
		assert_memory_equal(&a.devices[i].net, &b.devices[i].net, sizeof(a.devices[i].net));
	}
	assert_true(a.devices[1].disk.readonly && a.devices[1].disk.nolock);
	assert_string_equal(a.devices[1].disk.id, "root");
	assert_int_equal(a.devices[1].disk.reconnect_timeout, 7);
	config_free(&a);
	config_free(&b);
	unlink(path);
}

static void test_flags_override(void **state)
{
	struct vm_config c;
	(void)state;
	write_file("{\"kernel\":\"/k\",\"memory\":256,\"cpus\":1,\"disks\":[{\"path\":\"/a\"}]}");
	char *argv[] = { "mabo-vmm", "--cpus", "3", "--config", path, "--disk", "path=/b", NULL };
	assert_int_equal(parse(&c, argv), -EINVAL); /* memory 256 bytes: the flag's check */
	config_free(&c);
	unlink(path);
	write_file(
		"{\"kernel\":\"/k\",\"memory\":\"256M\",\"cpus\":1,\"disks\":[{\"path\":\"/a\"}]}");
	char *argv2[] = { "mabo-vmm", "--cpus", "3", "--config", path, "--disk", "path=/b", NULL };
	assert_int_equal(parse(&c, argv2), 0);
	assert_int_equal(c.cpus, 3);
	assert_int_equal(c.memory, 256ULL << 20);
	assert_int_equal(c.ndevices, 2);
	assert_string_equal(c.devices[0].disk.path, "/a");
	assert_string_equal(c.devices[1].disk.path, "/b");
	config_free(&c);
	unlink(path);
}

static void test_bad_files(void **state)
{
	static const char *const bad[] = {
		"",
		"[]",
		"{\"kernel\":\"/k\",\"cpu\":1}",
		"{\"kernel\":\"/k\",\"cpus\":1.5}",
		"{\"kernel\":\"/k\",\"cpus\":1,\"cpus\":2}",
		"{\"kernel\":\"/k\",\"rng\":1}",
		"{\"kernel\":\"/k\",\"disks\":[{\"readonly\":true}]}",
		"{\"kernel\":\"/k\",\"disks\":[{\"path\":\"/a\",\"x\":1}]}",
		"{\"kernel\":\"/k\",\"disks\":[7]}",
		"{\"kernel\":\"/k\",\"nets\":[{\"mode\":\"user\",\"ifname\":\"t0\"}]}",
		"{\"kernel\":\"/k\",\"nets\":[{\"mode\":\"bridge\"}]}",
		"{\"kernel\":\"/k\\u0000x\"}",
		"{\"kernel\":\"/k\",\"verbose\":9}",
		"{\"kernel\":\"/k\",\"config\":\"/other\"}",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vm_config c;
		write_file(bad[i]);
		char *argv[] = { "mabo-vmm", "--config", path, NULL };
		if (parse(&c, argv) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
		config_free(&c);
		unlink(path);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_as_flags),
		cmocka_unit_test(test_flags_override),
		cmocka_unit_test(test_bad_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
