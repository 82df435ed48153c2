/* The VMM (vmm.h): the loop that runs a VM, reboots it, and reports how it ended. */
#include "vmm/vmm.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/api.h"
#include "core/event.h"
#include "core/json.h"
#include "core/log.h"
#include "core/vm.h"
#include "cpu/riscv/cpu.h"
#include "machine/riscv-virt/virt.h"
#include "migration/migration.h"
#include "vmm/vmm_api.h"

/* --timeout bounds the whole process, not only the guest's run: a watchdog thread ends it
 * with status 3 when the deadline passes in a phase that does not end on its own (an
 * incoming peer that never comes, a stream whose last records never come, a file whose
 * open or read blocks). A thread, because a blocked open() or read() never returns to
 * check a deadline. While the guest runs, the main thread stops it at the deadline and
 * tears the VM down; the watchdog then only bounds that teardown. */
#define WATCHDOG_STOP_GRACE_NS (5ULL * 1000000000ULL)

struct watchdog {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	double timeout;	       /* seconds */
	uint64_t start;	       /* host_now_ns at the process's start */
	uint64_t deadline;     /* host_now_ns; under lock */
	const char *phase;     /* when vm is NULL or names none; under lock */
	struct vm *vm;	       /* whose phase to name, while it exists; under lock */
	const char *api_path;  /* sockets this process made, removed on the way out */
	const char *unix_path; /* --incoming unix:PATH */
	bool stop;
};

static void *watchdog_thread(void *arg)
{
	struct watchdog *wd = arg;

	pthread_mutex_lock(&wd->lock);
	for (;;) {
		if (wd->stop) {
			pthread_mutex_unlock(&wd->lock);
			return NULL;
		}
		if (host_now_ns() >= wd->deadline)
			break;
		struct timespec ts = { .tv_sec = (time_t)(wd->deadline / 1000000000ULL),
				       .tv_nsec = (long)(wd->deadline % 1000000000ULL) };
		pthread_cond_timedwait(&wd->cond, &wd->lock, &ts);
	}
	const char *phase = wd->vm ? atomic_load(&wd->vm->phase) : NULL;
	if (!phase)
		phase = wd->phase;
	log_error("timeout: still %s after %.1f s", phase,
		  (double)(host_now_ns() - wd->start) / 1e9);
	if (wd->api_path)
		unlink(wd->api_path);
	if (wd->unix_path)
		unlink(wd->unix_path);
	/* exit, not _exit: its atexit handlers give the terminal back its mode. The lock
	 * stays held: no phase changes under the message. */
	exit(3);
}

/* Sets what the watchdog names when the VM names nothing, and its deadline: the timeout
 * from the process's start, plus extra_ns. */
static void watchdog_set(struct watchdog *wd, const char *phase, struct vm *vm, uint64_t extra_ns)
{
	if (!wd->timeout)
		return;
	pthread_mutex_lock(&wd->lock);
	wd->phase = phase;
	wd->vm = vm;
	wd->deadline = wd->start + (uint64_t)(wd->timeout * 1e9) + extra_ns;
	pthread_cond_signal(&wd->cond);
	pthread_mutex_unlock(&wd->lock);
}

static void watchdog_forget_vm(struct watchdog *wd)
{
	if (!wd->timeout)
		return;
	pthread_mutex_lock(&wd->lock);
	wd->vm = NULL;
	wd->phase = "stopping the VM";
	pthread_mutex_unlock(&wd->lock);
}

static void watchdog_set_api_path(struct watchdog *wd, const char *path)
{
	if (!wd->timeout)
		return;
	pthread_mutex_lock(&wd->lock);
	wd->api_path = path;
	pthread_mutex_unlock(&wd->lock);
}

static int watchdog_start(struct watchdog *wd, const struct vm_config *cfg)
{
	pthread_condattr_t ca;

	memset(wd, 0, sizeof(*wd));
	wd->start = host_now_ns();
	wd->timeout = cfg->timeout;
	if (!cfg->timeout)
		return 0;
	wd->deadline = wd->start + (uint64_t)(cfg->timeout * 1e9);
	wd->phase = "setting up the VM";
	if (cfg->incoming && strncmp(cfg->incoming, "unix:", 5) == 0)
		wd->unix_path = cfg->incoming + 5;
	pthread_mutex_init(&wd->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&wd->cond, &ca);
	pthread_condattr_destroy(&ca);
	int e = pthread_create(&wd->thread, NULL, watchdog_thread, wd);
	if (e) {
		log_error("--timeout: cannot start the watchdog thread: %s", strerror(e));
		return -e;
	}
	return 0;
}

static void watchdog_stop(struct watchdog *wd)
{
	if (!wd->timeout)
		return;
	pthread_mutex_lock(&wd->lock);
	wd->stop = true;
	pthread_cond_signal(&wd->cond);
	pthread_mutex_unlock(&wd->lock);
	pthread_join(wd->thread, NULL);
}

static void *hart_thread(void *arg)
{
	hart_run(arg);
	return NULL;
}

int vmm_dump_dtb(const struct vm_config *cfg)
{
	struct vm vm;
	int ret = vm_init(&vm, cfg);
	if (ret < 0)
		return ret;
	ret = virt_create(&vm);
	if (ret < 0)
		goto out;
	static char buf[1 << 16];
	ret = virt_build_fdt(&vm, buf, sizeof(buf));
	if (ret < 0) {
		log_error("cannot build the device tree: %s", strerror(-ret));
		goto out_virt;
	}
	FILE *f = fopen(cfg->dump_dtb, "wb");
	uint32_t size = ((uint32_t)(uint8_t)buf[4] << 24) | ((uint32_t)(uint8_t)buf[5] << 16) |
			((uint32_t)(uint8_t)buf[6] << 8) | (uint8_t)buf[7];
	if (!f || fwrite(buf, 1, size, f) != size || fclose(f) != 0) {
		ret = -errno;
		log_error("--dump-dtb '%s': %s", cfg->dump_dtb, strerror(errno));
	}
out_virt:
	virt_destroy(&vm);
out:
	vm_free(&vm);
	return ret;
}

/* SIGTERM, and SIGINT when standard input is not a terminal (on a terminal, Ctrl-C is the
 * guest's), shut the VM down the way a power-off does: the control socket and an incoming
 * migration's socket are removed on the way out. The signals are blocked in every thread and
 * taken by one thread with sigwait, which may then lock and wake like any other. */
struct signals {
	sigset_t set;
	pthread_mutex_t lock;
	struct vm *vm; /* the VM of this run (under lock), NULL between runs */
	int received;  /* the first signal (under lock), 0 before */
};

static void *signal_thread(void *arg)
{
	struct signals *sg = arg;

	for (;;) {
		int sig;
		if (sigwait(&sg->set, &sig) != 0)
			continue;
		pthread_mutex_lock(&sg->lock);
		if (sg->received) {
			/* A shutdown that does not end: a second signal ends the process. */
			log_error("%s again: exiting at once", strsignal(sig));
			_exit(1);
		}
		sg->received = sig;
		log_info("%s: shutting the VM down", strsignal(sig));
		if (sg->vm)
			vm_request_exit(sg->vm, VM_EXIT_POWEROFF, 0);
		pthread_mutex_unlock(&sg->lock);
	}
	return NULL;
}

/* vm runs now (or, NULL, no longer): a signal received before is acted on at once. */
static void signals_watch(struct signals *sg, struct vm *vm)
{
	pthread_mutex_lock(&sg->lock);
	sg->vm = vm;
	if (vm && sg->received)
		vm_request_exit(vm, VM_EXIT_POWEROFF, 0);
	pthread_mutex_unlock(&sg->lock);
}

static int signals_start(struct signals *sg)
{
	pthread_t t;

	sigemptyset(&sg->set);
	sigaddset(&sg->set, SIGTERM);
	if (!isatty(STDIN_FILENO))
		sigaddset(&sg->set, SIGINT);
	pthread_mutex_init(&sg->lock, NULL);
	sg->vm = NULL;
	sg->received = 0;
	/* Before any other thread exists, so that all of them inherit the mask. */
	int e = pthread_sigmask(SIG_BLOCK, &sg->set, NULL);
	if (!e)
		e = pthread_create(&t, NULL, signal_thread, sg);
	if (!e)
		e = pthread_detach(t);
	if (e) {
		log_error("cannot watch for signals: %s", strerror(e));
		return -e;
	}
	return 0;
}

static void restart_queues(void *opaque)
{
	virt_unquiesce(opaque);
}

struct vmm {
	struct vm_config cfg; /* as given; a reboot clears incoming and restore */
	struct watchdog wd;
	struct signals sg;
	/* The outcome of the last run (vmm_outcome): the reason named in the "exit" event,
	 * the process's status, and whether a reboot starts the VM again. */
	const char *exit_reason;
	int status;
	bool again;
};

/* How the run ended: reason is a VM_EXIT_* or, before the guest ran, a negative errno. Sets
 * vmm's outcome and says why on stdout or stderr as the process always has. */
static void vmm_outcome(struct vmm *vmm, int reason, uint64_t code)
{
	const struct vm_config *cfg = &vmm->cfg;

	pthread_mutex_lock(&vmm->sg.lock);
	bool signalled = vmm->sg.received != 0;
	pthread_mutex_unlock(&vmm->sg.lock);
	vmm->again = false;
	if (reason == VM_EXIT_MIGRATED) {
		/* Even when told to end meanwhile: the VM runs elsewhere now, and whoever
		 * supervises this process must not start it here again. */
		vmm->exit_reason = "migrated";
		vmm->status = VMM_STATUS_MIGRATED;
		return;
	}
	if (signalled) {
		/* Told to end: whatever stopped (a guest, or a wait for a migration), it did
		 * so as asked. */
		vmm->exit_reason = "killed";
		vmm->status = reason == VM_EXIT_POWEROFF || reason == -ECANCELED
				      ? VMM_STATUS_OK
				      : VMM_STATUS_FAILED;
		return;
	}
	switch (reason) {
	case VM_EXIT_POWEROFF:
	case VM_EXIT_PASS:
		vmm->exit_reason = "poweroff";
		vmm->status = VMM_STATUS_OK;
		return;
	case VM_EXIT_REBOOT:
		vmm->exit_reason = "reboot";
		vmm->status = VMM_STATUS_OK;
		if (cfg->no_reboot)
			return;
		if (!cfg->kernel) {
			log_error("guest reboot: no --kernel to boot again");
			vmm->status = VMM_STATUS_FAILED;
			return;
		}
		log_info("guest reboot: restarting the VM");
		vmm->again = true;
		return;
	case VM_EXIT_FAIL:
		if ((code >> 56) == 0 && (code & 1))
			printf("FAIL: test %" PRIu64 "\n", (code << 16) >> 17);
		else
			printf("FAIL: tohost 0x%" PRIx64 "\n", code);
		fflush(stdout);
		vmm->exit_reason = "crashed";
		vmm->status = VMM_STATUS_FAILED;
		return;
	case VM_EXIT_TIMEOUT:
		log_error("timeout: the guest did not finish within %g s", cfg->timeout);
		vmm->exit_reason = "timeout";
		vmm->status = VMM_STATUS_TIMEOUT;
		return;
	default:
		vmm->exit_reason = "crashed";
		vmm->status = VMM_STATUS_FAILED;
		return;
	}
}

/* Tells the control socket's clients how the run ended (docs/api.md, "exit" event). */
static void vmm_send_exit_event(struct vmm *vmm, struct api *api)
{
	struct json_writer w;

	if (!api)
		return;
	json_writer_init(&w);
	json_begin_object(&w);
	json_kv_string(&w, "event", "exit");
	json_kv_string(&w, "reason", vmm->exit_reason);
	json_kv_bool(&w, "restarting", vmm->again);
	if (!vmm->again)
		json_kv_int(&w, "status", vmm->status);
	json_end_object(&w);
	if (!json_writer_error(&w))
		api_broadcast(api, json_writer_str(&w));
	json_writer_free(&w);
}

/* Runs the VM once and sets vmm's outcome. */
static void vmm_run_once(struct vmm *vmm)
{
	const struct vm_config *cfg = &vmm->cfg;
	struct watchdog *wd = &vmm->wd;
	struct signals *sg = &vmm->sg;
	struct vm vm;
	pthread_t threads[VM_MAX_CPUS];
	struct migration *mig = NULL;
	struct api *api = NULL;
	uint64_t code = 0;
	bool decided = false; /* vmm_outcome called */
	int started = 0;
	bool arrives = cfg->incoming || cfg->restore;
	watchdog_set(wd, "setting up the VM", NULL, 0);
	int ret = vm_init(&vm, cfg);
	if (ret < 0) {
		vmm_outcome(vmm, ret, 0);
		return;
	}
	signals_watch(sg, &vm);
	watchdog_set(wd, "setting up the VM", &vm, 0);
	vm_set_phase(&vm, "opening the disks and devices");
	ret = virt_create(&vm);
	if (ret < 0)
		goto out;
	if (!arrives) {
		ret = virt_load(&vm);
		if (ret < 0)
			goto out_virt;
	}
	ret = migration_create(&vm, &mig);
	if (ret < 0) {
		if (ret == -ENOMEM) /* other failures (credentials) said why */
			log_error("out of memory");
		goto out_virt;
	}
	vm.migration = mig;
	atomic_store(&vm.arriving, arrives);
	/* The control socket is served on this VM's loop and lives as long as the VM: a
	 * reboot closes it (after the "exit" event with "restarting":true) and the next run
	 * opens it again at the same path. */
	if (cfg->api_socket) {
		vm_set_phase(&vm, "opening the control socket");
		ret = vmm_api_create(&vm, cfg->api_socket, &api);
		if (ret < 0)
			goto out_virt;
		watchdog_set_api_path(wd, cfg->api_socket);
	}

	/* Devices run on the loop: it is up before any vCPU can notify one. */
	vm_set_phase(&vm, "starting the devices");
	ret = event_loop_start(vm.loop);
	if (ret < 0)
		goto out_api;
	if (arrives) {
		/* The VM's memory and state come from the stream; nothing runs until they
		 * are all there. */
		ret = cfg->restore ? migration_restore(&vm, cfg->restore)
				   : migration_incoming(&vm, cfg->incoming);
		if (ret < 0) {
			event_loop_stop(vm.loop);
			/* --timeout ran out before a valid source came: a timeout (status 3). */
			if (ret == -ETIME && cfg->incoming)
				ret = VM_EXIT_TIMEOUT;
			goto out_api;
		}
	}
	atomic_store(&vm.arriving, false);
	/* The run's own deadline (below) stops the guest; the watchdog bounds what follows. */
	vm_set_phase(&vm, NULL);
	watchdog_set(wd, "stopping the VM", NULL, WATCHDOG_STOP_GRACE_NS);
	vm.running_harts = vm.nharts;
	for (int i = 0; i < vm.nharts; i++) {
		int e = pthread_create(&threads[i], NULL, hart_thread, vm.harts[i]);
		if (e) {
			log_error("cannot start vCPU %d: %s", i, strerror(e));
			vm_request_exit(&vm, VM_EXIT_ERROR, 0);
			for (int k = i; k < vm.nharts; k++)
				vm_hart_leave(&vm);
			break;
		}
		started++;
	}
	/* Restored devices look at their queues once: requests may have been made
	 * available just before the pause. */
	if (arrives && event_loop_run(vm.loop, restart_queues, &vm))
		log_warn("cannot restart the devices' queues");

	uint64_t deadline = cfg->timeout > 0 ? wd->start + (uint64_t)(cfg->timeout * 1e9) : 0;
	pthread_mutex_lock(&vm.exit_lock);
	while (!atomic_load(&vm.exit_reason)) {
		if (deadline) {
			struct timespec ts = { .tv_sec = deadline / 1000000000ULL,
					       .tv_nsec = deadline % 1000000000ULL };
			if (pthread_cond_timedwait(&vm.exit_cond, &vm.exit_lock, &ts) ==
				    ETIMEDOUT &&
			    !atomic_load(&vm.exit_reason)) {
				pthread_mutex_unlock(&vm.exit_lock);
				vm_request_exit(&vm, VM_EXIT_TIMEOUT, 0);
				pthread_mutex_lock(&vm.exit_lock);
			}
		} else {
			pthread_cond_wait(&vm.exit_cond, &vm.exit_lock);
		}
	}
	pthread_mutex_unlock(&vm.exit_lock);
	/* A post-copy guest may wait on a page that will not come now. */
	migration_stop_incoming(mig);
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	/* The job ends while the loop still runs (it may need it to restart the devices);
	 * the struct stays until the control socket, which reads its status, is gone. */
	migration_shutdown(mig);
	event_loop_stop(vm.loop);
	ret = atomic_load(&vm.exit_reason);
	code = vm.exit_code;
out_api:
	/* The loop is stopped: the event goes out here, and api_destroy gives the clients
	 * a bounded wait to read it. */
	vmm_outcome(vmm, ret, code);
	decided = true;
	vmm_send_exit_event(vmm, api);
	api_destroy(api);
	watchdog_set_api_path(wd, NULL);
out_virt:
	migration_destroy(mig);
	virt_destroy(&vm);
out:
	if (!decided)
		vmm_outcome(vmm, ret, 0);
	signals_watch(sg, NULL);
	/* The watchdog must not read the phase of a VM that is gone. */
	watchdog_forget_vm(wd);
	vm_free(&vm);
}

int vmm_run(struct vmm *vmm)
{
	for (;;) {
		vmm_run_once(vmm);
		if (!vmm->again)
			return vmm->status;
		/* A reboot boots afresh, not from the snapshot or migration again. */
		vmm->cfg.incoming = NULL;
		vmm->cfg.restore = NULL;
	}
}

int vmm_create(const struct vm_config *cfg, struct vmm **out)
{
	struct vmm *vmm = calloc(1, sizeof(*vmm));

	*out = NULL;
	if (!vmm) {
		log_error("out of memory");
		return -ENOMEM;
	}
	vmm->cfg = *cfg;
	vmm->exit_reason = "crashed";
	vmm->status = VMM_STATUS_FAILED;
	/* Before any other thread (the watchdog's too): all of them inherit the mask. The
	 * signal thread is never joined (it waits in sigwait until the process ends), so
	 * vmm is freed only at the process's end. */
	int ret = signals_start(&vmm->sg);
	if (ret == 0)
		ret = watchdog_start(&vmm->wd, cfg);
	if (ret < 0)
		return ret; /* vmm stays: the signal thread may hold it; the process ends */
	*out = vmm;
	return 0;
}

void vmm_destroy(struct vmm *vmm)
{
	if (!vmm)
		return;
	watchdog_stop(&vmm->wd);
	/* The signal thread still refers to vmm->sg (sigwait never returns for good), so
	 * the struct is left for the process's end, which follows. */
}
