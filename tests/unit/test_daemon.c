/* mabod's spec checks, the spec as mabo-vmm arguments, and the SQLite store (schema versions,
 * definitions, state, the bounded event log). */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/share.h"
#include "daemon/spec.h"
#include "daemon/store.h"

/* The store logs events through mabod_event in the daemon; not linked here. */

static char dir[64];
static char kernel[128];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/mabod-unit-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(kernel, sizeof(kernel), "%s/Image", dir);
	FILE *f = fopen(kernel, "w");
	if (!f)
		return -1;
	fputs("not really a kernel", f);
	fclose(f);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static json_t *spec_of(const char *fmt, ...)
{
	char text[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	json_error_t jerr;
	json_t *v = json_loads(text, 0, &jerr);
	if (!v)
		fail_msg("bad test JSON %s: %s", text, jerr.text);
	return v;
}

/* spec_check refuses with a message holding `want`. */
static void refused(const char *want, const char *fmt, ...)
{
	char text[8192], err[SPEC_ERR_MAX] = "";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	json_t *s = spec_of("%s", text);
	json_t *out = spec_check(s, err, sizeof(err));
	if (out || !strstr(err, want))
		fail_msg("%s: accepted or wrong message '%s' (wanted '%s')", text, err, want);
	json_decref(s);
}

static void test_names(void **state)
{
	(void)state;
	assert_true(spec_name_valid("a"));
	assert_true(spec_name_valid("vm-1_X"));
	char n[80];
	memset(n, 'a', 63);
	n[63] = 0;
	assert_true(spec_name_valid(n));
	n[63] = 'a';
	n[64] = 0;
	assert_false(spec_name_valid(n));
	assert_false(spec_name_valid(""));
	assert_false(spec_name_valid("a b"));
	assert_false(spec_name_valid("../x"));
	assert_false(spec_name_valid("a.b"));
	assert_false(spec_name_valid("é"));
}

static void test_check_normalises(void **state)
{
	char err[SPEC_ERR_MAX] = "";
	(void)state;
	json_t *s = spec_of("{\"kernel\":\"%s\",\"memory\":\"1G\"}", kernel);
	json_t *out = spec_check(s, err, sizeof(err));
	assert_non_null(out);
	assert_int_equal(json_integer_value(json_object_get(out, "memory")), 1 << 30);
	assert_int_equal(json_integer_value(json_object_get(out, "cpus")), 1);
	json_decref(out);
	json_decref(s);
	/* Memory defaults to 512M, also given as bytes. */
	s = spec_of("{\"kernel\":\"%s\"}", kernel);
	out = spec_check(s, err, sizeof(err));
	assert_int_equal(json_integer_value(json_object_get(out, "memory")), 512 << 20);
	json_decref(out);
	json_decref(s);
	s = spec_of("{\"kernel\":\"%s\",\"memory\":268435456,\"cpus\":32}", kernel);
	out = spec_check(s, err, sizeof(err));
	assert_non_null(out);
	json_decref(out);
	json_decref(s);
}

static void test_check_refuses(void **state)
{
	(void)state;
	refused("kernel: missing", "{}");
	refused("must be an object", "[]");
	refused("unknown field 'kernal'", "{\"kernel\":\"%s\",\"kernal\":1}", kernel);
	refused("/nonexistent/Image", "{\"kernel\":\"/nonexistent/Image\"}");
	refused("absolute", "{\"kernel\":\"Image\"}");
	refused("not a regular file", "{\"kernel\":\"%s\"}", dir);
	refused("kernel: must be a string", "{\"kernel\":7}");
	refused("initramfs '/none'", "{\"kernel\":\"%s\",\"initramfs\":\"/none\"}", kernel);
	refused("cpus", "{\"kernel\":\"%s\",\"cpus\":0}", kernel);
	refused("cpus", "{\"kernel\":\"%s\",\"cpus\":33}", kernel);
	refused("cpus", "{\"kernel\":\"%s\",\"cpus\":1.5}", kernel);
	refused("memory", "{\"kernel\":\"%s\",\"memory\":\"1M\"}", kernel);
	refused("memory", "{\"kernel\":\"%s\",\"memory\":\"257G\"}", kernel);
	refused("whole number of MiB", "{\"kernel\":\"%s\",\"memory\":\"2049K\"}", kernel);
	refused("memory", "{\"kernel\":\"%s\",\"memory\":\"99999999999999999999T\"}", kernel);
	refused("memory", "{\"kernel\":\"%s\",\"memory\":-1}", kernel);
	refused("memory", "{\"kernel\":\"%s\",\"memory\":true}", kernel);
	refused("rng: must be true or false", "{\"kernel\":\"%s\",\"rng\":1}", kernel);
	refused("console 'hvc'", "{\"kernel\":\"%s\",\"console\":\"hvc\"}", kernel);
	refused("disks[0]: unknown field 'ro'",
		"{\"kernel\":\"%s\",\"disks\":[{\"path\":\"%s\",\"ro\":1}]}", kernel, kernel);
	refused("disks[1].path: missing", "{\"kernel\":\"%s\",\"disks\":[{\"path\":\"%s\"},{}]}",
		kernel, kernel);
	refused("comma", "{\"kernel\":\"%s\",\"disks\":[{\"path\":\"/a,b\"}]}", kernel);
	refused("disks[0].id: longer than 20",
		"{\"kernel\":\"%s\",\"disks\":[{\"path\":\"%s\",\"id\":\"123456789012345678901\"}]"
		"}",
		kernel, kernel);
	refused("nets[0].type", "{\"kernel\":\"%s\",\"nets\":[{\"type\":\"vde\"}]}", kernel);
	refused("nets[0]: unknown field 'port'",
		"{\"kernel\":\"%s\",\"nets\":[{\"type\":\"user\",\"port\":1}]}", kernel);
	refused("nets[0].ifname", "{\"kernel\":\"%s\",\"nets\":[{\"type\":\"tap\"}]}", kernel);
	refused("nets[0].hostfwd",
		"{\"kernel\":\"%s\",\"nets\":[{\"type\":\"user\",\"hostfwd\":[1]}]}", kernel);
	refused("cmdline: longer than 4096", "{\"kernel\":\"%s\",\"cmdline\":\"%04097d\"}", kernel,
		0);
	/* Eight virtio-mmio slots: five disks, three nets and rng make nine. */
	char many[4096];
	int off =
		snprintf(many, sizeof(many), "{\"kernel\":\"%s\",\"rng\":true,\"disks\":[", kernel);
	for (int i = 0; i < 5; i++)
		off += snprintf(many + off, sizeof(many) - off, "%s{\"path\":\"nbd://h/e%d\"}",
				i ? "," : "", i);
	snprintf(many + off, sizeof(many) - off,
		 "],\"nets\":[{\"type\":\"user\"},{\"type\":\"user\"},{\"type\":\"user\"}]}");
	refused("9 devices", "%s", many);
}

static void test_argv(void **state)
{
	char err[SPEC_ERR_MAX] = "";
	(void)state;
	json_t *s = spec_of(
		"{\"kernel\":\"%s\",\"initramfs\":\"%s\",\"firmware\":\"none\",\"cmdline\":\"a b\","
		"\"memory\":\"1G\",\"cpus\":2,\"rng\":true,\"console\":\"virtio\",\"no_reboot\":"
		"true,"
		"\"disks\":[{\"path\":\"%s\",\"readonly\":true,\"id\":\"d1\"},{\"path\":\"nbd://s/"
		"e\"}],"
		"\"nets\":[{\"type\":\"user\",\"hostfwd\":[\"tcp::2222-:22\",\"udp::53-:53\"],"
		"\"mac\":\"52:54:00:00:00:01\"},{\"type\":\"tap\",\"ifname\":\"tap0\"}]}",
		kernel, kernel, kernel);
	json_t *spec = spec_check(s, err, sizeof(err));
	assert_non_null(spec);
	char **argv = spec_argv(spec, "/bin/vmm", "/run/x/api.sock");
	assert_non_null(argv);
	char joined[4096] = "";
	for (char **a = argv; *a; a++) {
		strcat(joined, *a);
		strcat(joined, "|");
	}
	char want[4096];
	snprintf(want, sizeof(want),
		 "/bin/vmm|--kernel|%s|--initramfs|%s|--firmware|none|--cmdline|a b|--memory|1024M|"
		 "--cpus|2|--no-reboot|--rng|--console|virtio|--disk|path=%s,readonly=on,id=d1|"
		 "--disk|path=nbd://s/e|--net|user,hostfwd=tcp::2222-:22,hostfwd=udp::53-:53,"
		 "mac=52:54:00:00:00:01|--net|tap=tap0|--api-socket|/run/x/api.sock|--sandbox|",
		 kernel, kernel, kernel);
	assert_string_equal(joined, want);
	spec_argv_free(argv);
	json_decref(spec);
	json_decref(s);
}

/* What the store needs of the daemon. */
static struct mabod *new_daemon(void)
{
	struct mabod *d = calloc(1, sizeof(*d));
	snprintf(d->state_dir, sizeof(d->state_dir), "%s", dir);
	return d;
}

static void free_vms(struct mabod *d)
{
	for (struct vmrec *vm = d->vms, *n; vm; vm = n) {
		n = vm->next;
		json_decref(vm->spec);
		free(vm);
	}
	d->vms = NULL;
}

/* A VM record named `name` with the disks given as JSON (not checked: the test names files
 * that exist). */
static struct vmrec *share_vm(const char *name, bool running, const char *disks)
{
	struct vmrec *vm = calloc(1, sizeof(*vm));
	assert_non_null(vm);
	snprintf(vm->name, sizeof(vm->name), "%s", name);
	vm->spec = spec_of("{\"disks\":%s}", disks);
	vm->shim_fd = running ? 100 : -1;
	vm->vmm_fd = -1;
	return vm;
}

static void test_share(void **state)
{
	char a[128], b[128], link[128], err[512];
	(void)state;
	snprintf(a, sizeof(a), "%s/a.img", dir);
	snprintf(b, sizeof(b), "%s/b.img", dir);
	snprintf(link, sizeof(link), "%s/link.img", dir);
	fclose(fopen(a, "w"));
	fclose(fopen(b, "w"));
	assert_int_equal(symlink(a, link), 0);
	char d1[512];
	snprintf(d1, sizeof(d1), "[{\"path\":\"%s\",\"readonly\":false}]", a);
	struct vmrec *one = share_vm("one", true, d1);
	struct vmrec *two = share_vm("two", false, "[{\"path\":\"nbd://host:10809/exp\"}]");
	one->next = two;

	/* The same file through a symbolic link, read-write: refused, naming vm 'one'. */
	json_t *s = spec_of("{\"disks\":[{\"path\":\"%s\",\"readonly\":false}]}", link);
	err[0] = 0;
	assert_int_equal(share_conflict(one, NULL, s, false, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "vm 'one'"));
	assert_non_null(strstr(err, link));
	json_decref(s);
	/* Read-only beside a read-write user: refused too (the other writes under it). */
	s = spec_of("{\"disks\":[{\"path\":\"%s\",\"readonly\":true}]}", a);
	assert_int_equal(share_conflict(one, NULL, s, false, err, sizeof(err)), -EBUSY);
	json_decref(s);
	/* Another file: fine. */
	s = spec_of("{\"disks\":[{\"path\":\"%s\"}]}", b);
	assert_int_equal(share_conflict(one, NULL, s, false, err, sizeof(err)), 0);
	json_decref(s);
	/* The VM itself is not a conflict with its own disks. */
	assert_int_equal(share_conflict(one, one, one->spec, false, err, sizeof(err)), 0);
	/* An NBD export, the scheme in another case and a trailing slash: the same one, but
	 * only among live VMs when live_only (vm 'two' does not run). */
	s = spec_of("{\"disks\":[{\"path\":\"NBD://host:10809/exp/\"}]}");
	assert_int_equal(share_conflict(one, NULL, s, false, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "vm 'two'"));
	assert_int_equal(share_conflict(one, NULL, s, true, err, sizeof(err)), 0);
	json_decref(s);

	/* Both read-only: shared. */
	json_decref(one->spec);
	one->spec = spec_of("{\"disks\":[{\"path\":\"%s\",\"readonly\":true}]}", a);
	s = spec_of("{\"disks\":[{\"path\":\"%s\",\"readonly\":true}]}", link);
	assert_int_equal(share_conflict(one, NULL, s, false, err, sizeof(err)), 0);
	json_decref(s);
	/* Read-write beside a read-only user: refused. */
	s = spec_of("{\"disks\":[{\"path\":\"%s\"}]}", link);
	assert_int_equal(share_conflict(one, NULL, s, false, err, sizeof(err)), -EBUSY);
	json_decref(s);

	for (struct vmrec *vm = one, *next; vm; vm = next) {
		next = vm->next;
		json_decref(vm->spec);
		free(vm);
	}
}

static void test_store(void **state)
{
	char path[128], err[SPEC_ERR_MAX];
	(void)state;
	snprintf(path, sizeof(path), "%s/store.db", dir);
	unlink(path);
	struct mabod *d = new_daemon();
	assert_int_equal(store_open(d, path), 0);
	struct vmrec vm = { .shim_fd = -1, .vmm_fd = -1, .restart = RESTART_ON_FAILURE };
	snprintf(vm.name, sizeof(vm.name), "one");
	snprintf(vm.uuid, sizeof(vm.uuid), "00000000-0000-4000-8000-000000000001");
	json_t *s = spec_of("{\"kernel\":\"%s\"}", kernel);
	vm.spec = spec_check(s, err, sizeof(err));
	json_decref(s);
	assert_int_equal(store_insert(d, &vm), 0);
	/* The name is unique; so is the uuid. */
	struct vmrec dup = vm;
	snprintf(dup.uuid, sizeof(dup.uuid), "00000000-0000-4000-8000-000000000002");
	assert_int_equal(store_insert(d, &dup), -EEXIST);
	vm.want_running = true;
	vm.state = VM_RUNNING;
	vm.pid = 1234;
	vm.pid_start = 5678;
	vm.shim_pid = 1233;
	vm.shim_start = 5677;
	snprintf(vm.reason, sizeof(vm.reason), "why");
	assert_int_equal(store_update(d, &vm), 0);
	store_close(d);

	/* Read back by a new daemon. */
	struct mabod *d2 = new_daemon();
	assert_int_equal(store_open(d2, path), 0);
	assert_int_equal(store_load(d2), 0);
	assert_non_null(d2->vms);
	assert_null(d2->vms->next);
	struct vmrec *r = d2->vms;
	assert_string_equal(r->name, "one");
	assert_string_equal(r->uuid, vm.uuid);
	assert_true(r->want_running);
	assert_int_equal(r->state, VM_RUNNING);
	assert_int_equal(r->restart, RESTART_ON_FAILURE);
	assert_int_equal(r->pid, 1234);
	assert_int_equal(r->pid_start, 5678);
	assert_int_equal(r->shim_pid, 1233);
	assert_int_equal(r->shim_start, 5677);
	assert_string_equal(r->reason, "why");
	assert_true(json_equal(r->spec, vm.spec));
	assert_int_equal(store_delete(d2, r), 0);
	free_vms(d2);
	assert_int_equal(store_load(d2), 0);
	assert_null(d2->vms);

	/* The event log keeps the last STORE_EVENTS_MAX or so. */
	for (int i = 0; i < STORE_EVENTS_MAX + 200; i++) {
		char m[32];
		snprintf(m, sizeof(m), "event %d", i);
		assert_int_equal(store_event(d2, i, i % 2 ? "one" : NULL, "test", m), 0);
	}
	json_t *ev = store_events(d2, STORE_EVENTS_MAX);
	assert_true(json_array_size(ev) <= STORE_EVENTS_MAX);
	assert_true(json_array_size(ev) >= STORE_EVENTS_MAX - 64);
	json_t *last = json_array_get(ev, json_array_size(ev) - 1);
	char want[32];
	snprintf(want, sizeof(want), "event %d", STORE_EVENTS_MAX + 199);
	assert_string_equal(json_string_value(json_object_get(last, "message")), want);
	json_decref(ev);
	sqlite3 *db = NULL;
	store_close(d2);
	free(d2);
	json_decref(vm.spec);
	free(d);

	/* A database from a newer mabod is refused, not misread. */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(
		sqlite3_exec(db, "UPDATE schema_version SET version = 99", NULL, NULL, NULL),
		SQLITE_OK);
	sqlite3_close(db);
	struct mabod *d3 = new_daemon();
	assert_int_equal(store_open(d3, path), -EIO);
	assert_null(d3->db);
	free(d3);
}

/* A database written before the schema had a version (version 0: nothing) is brought up. */
static void test_store_upgrade(void **state)
{
	char path[128];
	(void)state;
	snprintf(path, sizeof(path), "%s/empty.db", dir);
	unlink(path);
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE other (x)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	struct mabod *d = new_daemon();
	assert_int_equal(store_open(d, path), 0);
	assert_int_equal(store_load(d), 0);
	store_close(d);
	free(d);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(
		sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &st, NULL),
		SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 1);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),	      cmocka_unit_test(test_check_normalises),
		cmocka_unit_test(test_check_refuses), cmocka_unit_test(test_argv),
		cmocka_unit_test(test_store),	      cmocka_unit_test(test_share),
		cmocka_unit_test(test_store_upgrade),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
