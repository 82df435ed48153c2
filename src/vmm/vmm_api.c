/* The control socket's callbacks for a VM (core/api.h), for the VMM (vmm/vmm.h): info, pause
 * and resume, snapshots, live migration (migration/migration.h), the power button and quit.
 * Every callback runs on the VM's event loop; a snapshot, which needs the loop to drain the
 * disks, answers later (api_defer). */
#include "vmm/vmm_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/api.h"
#include "core/event.h"
#include "core/json.h"
#include "core/vm.h"
#include "migration/migration.h"
#include "virtio/input.h"

static int vmm_api_info(void *opaque, struct json_writer *w, char *err, size_t errlen)
{
	struct vm *vm = opaque;
	struct migrate_status st;
	const char *state = atomic_load(&vm->arriving) ? "incoming"
			    : vm->user_paused	       ? "paused"
						       : "running";
	(void)err;
	(void)errlen;

	if (vm->migration) {
		migration_get_status(vm->migration, &st);
		if (st.state == MIGRATE_ACTIVE)
			state = st.snapshot ? "saving" : "migrating";
		else if (st.state == MIGRATE_COMPLETED && !st.snapshot)
			state = "migrated";
	}
	json_kv_string(w, "state", state);
	uint64_t missing;
	bool link_up;
	if (migration_incoming_status(vm->migration, &missing, &link_up)) {
		/* Arrived by post-copy: pages still come from the source. */
		json_kv_uint(w, "postcopy_missing_pages", missing);
		json_kv_string(w, "postcopy_link", link_up ? "up" : "down");
	}
	json_kv_int(w, "cpus", vm->nharts);
	json_kv_uint(w, "memory", vm->ram.size);
	json_kv_uint(w, "uptime_ms", vm_mtime(vm) / (VM_TIMEBASE_HZ / 1000));
	json_kv_int(w, "pid", getpid());
	return 0;
}

/* While the VM is incoming (--incoming, --restore), its memory and state are still being
 * loaded: it cannot be paused, resumed, saved or sent on. 0, or -EBUSY with a reason. */
static int refuse_incoming(struct vm *vm, char *err, size_t errlen)
{
	if (!atomic_load(&vm->arriving))
		return 0;
	snprintf(err, errlen, "the VM is incoming: its state has not arrived yet");
	return -EBUSY;
}

static int vmm_api_pause(void *opaque, char *err, size_t errlen)
{
	struct vm *vm = opaque;

	if (refuse_incoming(vm, err, errlen))
		return -EBUSY;
	if (vm->user_paused) {
		snprintf(err, errlen, "the VM is paused already");
		return -EALREADY;
	}
	vm_pause(vm);
	vm->user_paused = true;
	return 0;
}

static int vmm_api_resume(void *opaque, char *err, size_t errlen)
{
	struct vm *vm = opaque;

	if (refuse_incoming(vm, err, errlen))
		return -EBUSY;
	if (!vm->user_paused) {
		snprintf(err, errlen, "the VM is not paused");
		return -EINVAL;
	}
	vm->user_paused = false;
	vm_resume(vm);
	return 0;
}

/* A snapshot's answer: made on the job's thread, sent from the loop (which outlives the
 * job: main ends the job before it stops the loop). */
struct snapshot_done {
	struct api_pending *pending;
	struct event_loop *loop;
	int err;
	char msg[200];
};

static void snapshot_answer(void *opaque)
{
	struct snapshot_done *d = opaque;

	api_complete(d->pending, d->err, d->err ? d->msg : NULL);
	free(d);
}

/* The job ended (on its thread): answer from the loop. */
static void snapshot_finished(void *opaque, int err, const char *msg)
{
	struct snapshot_done *d = opaque;

	d->err = err;
	snprintf(d->msg, sizeof(d->msg), "%s", msg ? msg : "");
	if (event_loop_post(d->loop, snapshot_answer, d))
		snapshot_answer(d); /* no memory to post: answer from here */
}

static int vmm_api_snapshot(void *opaque, const char *path, char *err, size_t errlen)
{
	struct vm *vm = opaque;

	if (refuse_incoming(vm, err, errlen))
		return -EBUSY;
	struct snapshot_done *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->pending = api_defer(vm->api);
	if (!d->pending) {
		free(d);
		return -ENOMEM;
	}
	d->loop = vm->loop;
	int ret = migration_snapshot_start(vm->migration, path, snapshot_finished, d, err, errlen);
	if (ret) {
		/* Not started: answer through the loop, after this callback returns. */
		d->err = ret;
		snprintf(d->msg, sizeof(d->msg), "%s", err);
		if (event_loop_post(vm->loop, snapshot_answer, d)) {
			free(d);
			return ret; /* the pending answer goes with api_destroy */
		}
	}
	return -EINPROGRESS;
}

static int vmm_api_migrate(void *opaque, const struct api_migrate_params *p, char *err,
			   size_t errlen)
{
	struct vm *vm = opaque;
	struct migrate_params mp = {
		.downtime_ms = p->downtime_ms,
		.bandwidth_mibps = p->bandwidth_mibps,
		.compress = p->compress,
		.postcopy = p->postcopy,
	};

	if (refuse_incoming(vm, err, errlen))
		return -EBUSY;
	size_t len = strnlen(p->uri, sizeof(p->uri));
	if (len >= sizeof(mp.uri)) {
		snprintf(err, errlen, "the address is too long");
		return -EINVAL;
	}
	memcpy(mp.uri, p->uri, len);
	mp.uri[len] = 0;
	return migration_start(vm->migration, &mp, err, errlen);
}

/* The reason for a refused cancel or switch to post-copy. */
static int migration_refused(int ret, char *err, size_t errlen)
{
	if (ret == -ENOENT)
		snprintf(err, errlen, "no migration in progress");
	else if (ret == -EBUSY)
		snprintf(err, errlen, "too late: the destination has the VM now");
	return ret;
}

static int vmm_api_cancel(void *opaque, char *err, size_t errlen)
{
	struct vm *vm = opaque;
	return migration_refused(migration_cancel(vm->migration), err, errlen);
}

static int vmm_api_postcopy(void *opaque, char *err, size_t errlen)
{
	struct vm *vm = opaque;
	return migration_refused(migration_switch_postcopy(vm->migration), err, errlen);
}

static int vmm_api_migrate_status(void *opaque, struct api_migrate_status *out, char *err,
				  size_t errlen)
{
	struct vm *vm = opaque;
	struct migrate_status st;
	(void)err;
	(void)errlen;

	migration_get_status(vm->migration, &st);
	if (st.snapshot)
		return 0; /* snapshots answer their own request */
	switch (st.state) {
	case MIGRATE_ACTIVE: out->state = API_MIGRATE_ACTIVE; break;
	case MIGRATE_COMPLETED: out->state = API_MIGRATE_COMPLETED; break;
	case MIGRATE_FAILED: out->state = API_MIGRATE_FAILED; break;
	case MIGRATE_CANCELLED: out->state = API_MIGRATE_CANCELLED; break;
	default: out->state = API_MIGRATE_NONE; break;
	}
	out->pass = st.pass;
	out->postcopy_active = st.postcopy_active;
	out->total_pages = vm->ram.size >> PAGE_SHIFT;
	out->remaining_pages = st.remaining_pages;
	out->dirty_rate_pps = st.dirty_rate_pps;
	out->bandwidth_mibps = (double)st.bandwidth_mibps;
	out->expected_downtime_ms = st.expected_downtime_ms;
	out->total_ms = st.total_ms;
	out->downtime_ms = (double)st.downtime_us / 1000.0;
	out->bytes = st.bytes;
	out->rounds = st.rounds;
	snprintf(out->error, sizeof(out->error), "%s", st.error);
	return 0;
}

static int vmm_api_quit(void *opaque, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	/* Like a power-off: the vCPUs stop, the main thread tears the VM down and the
	 * process exits with status 0. The response is flushed by api_destroy. */
	vm_request_exit(opaque, VM_EXIT_POWEROFF, 0);
	return 0;
}

static int vmm_api_powerdown(void *opaque, char *err, size_t errlen)
{
	struct vm *vm = opaque;

	if (refuse_incoming(vm, err, errlen))
		return -EBUSY;
	if (!vm->power_button) {
		snprintf(err, errlen, "this machine has no power button");
		return -ENOTSUP;
	}
	int ret = virtio_input_press(vm->power_button, VIRTIO_INPUT_KEY_POWER);
	if (ret == -ENODEV)
		snprintf(err, errlen, "the guest has no driver for its power button (yet)");
	else if (ret == -EBUSY)
		snprintf(err, errlen, "the guest has not taken the last power button presses");
	return ret;
}

static const struct api_ops vmm_api_ops = {
	.info = vmm_api_info,
	.pause = vmm_api_pause,
	.resume = vmm_api_resume,
	.snapshot = vmm_api_snapshot,
	.migrate = vmm_api_migrate,
	.migrate_cancel = vmm_api_cancel,
	.migrate_postcopy = vmm_api_postcopy,
	.migrate_status = vmm_api_migrate_status,
	.quit = vmm_api_quit,
	.powerdown = vmm_api_powerdown,
};

int vmm_api_create(struct vm *vm, const char *path, struct api **out)
{
	int ret = api_create(vm->loop, path, &vmm_api_ops, vm, out);
	if (!ret)
		vm->api = *out;
	return ret;
}
