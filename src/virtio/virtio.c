/* The transport-independent part of every virtio device (see virtio.h): feature
 * negotiation, status and reset, queue setup, and the notification path from a vCPU's
 * QueueNotify to the device's work on the event loop. */
#include "virtio/virtio.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "core/vm.h"
#include "migration/sbuf.h"

#define VIRTIO_FAILURES_LOGGED 10

/* The device types, by the name the configuration uses. */
static const struct virtio_device_ops *const virtio_device_types[] = {
	&virtio_rng_ops,
	&virtio_console_ops,
	&virtio_blk_ops,
	&virtio_net_ops,
};

const struct virtio_device_ops *virtio_device_find(const char *name)
{
	for (size_t i = 0; i < sizeof(virtio_device_types) / sizeof(virtio_device_types[0]); i++)
		if (strcmp(virtio_device_types[i]->name, name) == 0)
			return virtio_device_types[i];
	return NULL;
}

/* A queue broke (virtqueue.c): the device needs a reset. Runs with vdev->lock held. */
static void virtio_dev_queue_error(void *opaque, const struct virtq *q, const char *why)
{
	struct virtio_dev *vdev = opaque;
	char msg[200];

	snprintf(msg, sizeof(msg), "queue %u: %s", q->index, why);
	virtio_dev_fail(vdev, msg);
}

/* Event loop: the notification eventfd is readable. */
static void virtio_dev_on_notify(void *opaque, uint32_t events)
{
	struct virtio_dev *vdev = opaque;
	uint64_t count;

	(void)events;
	ssize_t n = read(vdev->notify_fd, &count, sizeof(count));
	(void)n;
	uint64_t pending = atomic_exchange(&vdev->notify_pending, 0);
	if (!pending)
		return;
	pthread_mutex_lock(&vdev->lock);
	if (vdev->quiesced) {
		/* Kept for unquiescing: no guest memory changes while the state is saved. */
		atomic_fetch_or(&vdev->notify_pending, pending);
		pthread_mutex_unlock(&vdev->lock);
		return;
	}
	for (unsigned q = 0; q < vdev->ops->num_queues && pending; q++, pending >>= 1) {
		/* The device may fail while serving a queue: check before each. */
		if (!(pending & 1) || !virtio_dev_running(vdev))
			continue;
		struct virtq *vq = &vdev->queues[q];
		if (vq->ready && !vq->broken && vdev->ops->queue_notify)
			vdev->ops->queue_notify(vdev, q);
	}
	pthread_mutex_unlock(&vdev->lock);
}

int virtio_dev_init(struct virtio_dev *vdev, struct vm *vm, const struct virtio_device_ops *ops,
		    const struct vm_device_config *cfg, const char *label,
		    const struct virtio_transport_ops *tops, void *transport)
{
	int err;

	if (ops->num_queues < 1 || ops->num_queues > VIRTIO_MAX_QUEUES || ops->queue_max == 0 ||
	    ops->queue_max > VIRTQ_SIZE_MAX || (ops->queue_max & (ops->queue_max - 1))) {
		log_error("%s: bad device description (%u queues of up to %u)", label,
			  ops->num_queues, ops->queue_max);
		return -EINVAL;
	}
	if (!vm->loop) {
		log_error("%s: the VM has no event loop", label);
		return -EINVAL;
	}
	memset(vdev, 0, sizeof(*vdev));
	vdev->vm = vm;
	vdev->ops = ops;
	vdev->transport_ops = tops;
	vdev->transport = transport;
	snprintf(vdev->name, sizeof(vdev->name), "%s", label);
	vdev->host_features = ops->features | VIRTIO_FEATURE(VIRTIO_F_VERSION_1) |
			      VIRTIO_FEATURE(VIRTIO_F_INDIRECT_DESC) |
			      VIRTIO_FEATURE(VIRTIO_F_EVENT_IDX);
	for (unsigned q = 0; q < ops->num_queues; q++)
		virtq_init(&vdev->queues[q], vm, q, virtio_dev_queue_error, vdev);

	err = -pthread_mutex_init(&vdev->lock, NULL);
	if (err)
		return err;
	vdev->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vdev->notify_fd < 0) {
		err = -errno;
		log_error("%s: cannot create an eventfd: %s", label, strerror(errno));
		goto err_mutex;
	}
	err = event_loop_add_fd(vm->loop, vdev->notify_fd, EPOLLIN, virtio_dev_on_notify, vdev);
	if (err) {
		log_error("%s: cannot watch its eventfd: %s", label, strerror(-err));
		goto err_fd;
	}
	vdev->registered = true;
	err = ops->create(vdev, cfg);
	if (err)
		goto err_loop;
	return 0;

err_loop:
	event_loop_remove_fd(vm->loop, vdev->notify_fd);
	vdev->registered = false;
err_fd:
	close(vdev->notify_fd);
err_mutex:
	pthread_mutex_destroy(&vdev->lock);
	return err;
}

void virtio_dev_uninit(struct virtio_dev *vdev)
{
	if (vdev->registered)
		event_loop_remove_fd(vdev->vm->loop, vdev->notify_fd);
	vdev->registered = false;
	vdev->ops->destroy(vdev);
	close(vdev->notify_fd);
	pthread_mutex_destroy(&vdev->lock);
}

uint32_t virtio_dev_features(const struct virtio_dev *vdev, uint32_t sel)
{
	if (sel > 1)
		return 0;
	return (uint32_t)(vdev->host_features >> (32 * sel));
}

void virtio_dev_set_guest_features(struct virtio_dev *vdev, uint32_t sel, uint32_t val)
{
	if (sel > 1 || (vdev->status & VIRTIO_STATUS_FEATURES_OK))
		return;
	uint64_t mask = 0xffffffffULL << (32 * sel);
	vdev->guest_features = (vdev->guest_features & ~mask) | ((uint64_t)val << (32 * sel));
}

void virtio_dev_reset(struct virtio_dev *vdev)
{
	if (vdev->ops->reset)
		vdev->ops->reset(vdev);
	for (unsigned q = 0; q < vdev->ops->num_queues; q++)
		virtq_reset(&vdev->queues[q]);
	atomic_store(&vdev->notify_pending, 0);
	vdev->guest_features = 0;
	vdev->status = 0;
}

void virtio_dev_set_status(struct virtio_dev *vdev, uint8_t status)
{
	if (status == 0) {
		virtio_dev_reset(vdev);
		return;
	}
	uint8_t old = vdev->status;
	uint8_t set = status & ~old;

	if (set & VIRTIO_STATUS_FEATURES_OK) {
		uint64_t f = vdev->guest_features;
		const char *why = NULL;
		if (f & ~vdev->host_features)
			why = "accepted features the device does not offer";
		else if (!(f & VIRTIO_FEATURE(VIRTIO_F_VERSION_1)))
			why = "did not accept VIRTIO_F_VERSION_1 (legacy drivers are not "
			      "supported)";
		else if (vdev->ops->features_ok && vdev->ops->features_ok(vdev, f) != 0)
			why = "accepted a feature set the device refuses";
		if (why) {
			log_warn("%s: the driver %s: FEATURES_OK refused", vdev->name, why);
			status &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
		}
	}
	vdev->status = status | (old & VIRTIO_STATUS_DEVICE_NEEDS_RESET);

	/* Buffers made available before DRIVER_OK were not looked at: look now. */
	if ((set & VIRTIO_STATUS_DRIVER_OK) && virtio_dev_running(vdev)) {
		for (unsigned q = 0; q < vdev->ops->num_queues; q++)
			if (vdev->queues[q].ready)
				virtio_dev_notify(vdev, q);
	}
}

void virtio_dev_set_queue_ready(struct virtio_dev *vdev, unsigned q, bool ready)
{
	if (q >= vdev->ops->num_queues)
		return;
	struct virtq *vq = &vdev->queues[q];
	if (!ready) {
		vq->ready = false;
		return;
	}
	if (vq->ready)
		return;
	/* A bad configuration breaks the queue, which makes the device need a reset. */
	if (virtq_enable(vq, vdev->ops->queue_max, virtio_dev_has_feature(vdev, VIRTIO_F_EVENT_IDX),
			 virtio_dev_has_feature(vdev, VIRTIO_F_INDIRECT_DESC)) != 0)
		return;
}

void virtio_dev_notify(struct virtio_dev *vdev, unsigned q)
{
	if (q >= vdev->ops->num_queues)
		return;
	uint64_t bit = 1ULL << q;
	/* If the bit was already pending, whoever set it has written (or is about to write) the
	 * eventfd, and the loop will see our bit when it takes the set. */
	if (atomic_fetch_or(&vdev->notify_pending, bit) & bit)
		return;
	uint64_t one = 1;
	ssize_t n = write(vdev->notify_fd, &one, sizeof(one));
	(void)n; /* EAGAIN: the counter is saturated, the loop will wake anyway */
}

void virtio_dev_config_read(struct virtio_dev *vdev, uint32_t off, void *buf, uint32_t len)
{
	uint32_t size = vdev->ops->config_size;

	if (off > size || len > size - off || !vdev->ops->config_read) {
		memset(buf, 0, len);
		return;
	}
	vdev->ops->config_read(vdev, off, buf, len);
}

void virtio_dev_config_write(struct virtio_dev *vdev, uint32_t off, const void *buf, uint32_t len)
{
	uint32_t size = vdev->ops->config_size;

	if (off > size || len > size - off || !vdev->ops->config_write)
		return;
	vdev->ops->config_write(vdev, off, buf, len);
}

void virtio_dev_signal_used(struct virtio_dev *vdev, unsigned q)
{
	if (q < vdev->ops->num_queues && virtq_should_notify(&vdev->queues[q]))
		vdev->transport_ops->interrupt(vdev->transport, VIRTIO_INT_USED, q);
}

void virtio_dev_fail(struct virtio_dev *vdev, const char *why)
{
	if (vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
		return;
	/* A guest can break and reset a device in a loop: say it a few times, not forever. */
	if (vdev->failures < VIRTIO_FAILURES_LOGGED) {
		vdev->failures++;
		log_warn("%s: %s; the device needs a reset%s", vdev->name, why,
			 vdev->failures == VIRTIO_FAILURES_LOGGED
				 ? " (further failures of this device are not logged)"
				 : "");
	}
	vdev->status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
	/* 2.1.2: with DRIVER_OK set, a device that sets NEEDS_RESET sends a configuration
	 * change notification. */
	if (vdev->status & VIRTIO_STATUS_DRIVER_OK)
		vdev->transport_ops->interrupt(vdev->transport, VIRTIO_INT_CONFIG, 0);
}

void virtio_dev_config_changed(struct virtio_dev *vdev)
{
	vdev->config_generation++;
	if (vdev->status & VIRTIO_STATUS_DRIVER_OK)
		vdev->transport_ops->interrupt(vdev->transport, VIRTIO_INT_CONFIG, 0);
}

unsigned virtio_dev_quiesce(struct virtio_dev *vdev)
{
	unsigned busy = 0;

	pthread_mutex_lock(&vdev->lock);
	vdev->quiesced = true;
	if (vdev->ops->quiesce)
		busy = vdev->ops->quiesce(vdev);
	pthread_mutex_unlock(&vdev->lock);
	return busy;
}

int virtio_dev_claim(struct virtio_dev *vdev, bool take)
{
	return vdev->ops->claim ? vdev->ops->claim(vdev, take) : 0;
}

void virtio_dev_unquiesce(struct virtio_dev *vdev)
{
	pthread_mutex_lock(&vdev->lock);
	vdev->quiesced = false;
	if (vdev->ops->unquiesce)
		vdev->ops->unquiesce(vdev);
	pthread_mutex_unlock(&vdev->lock);
	/* Notifications that came while quiet were taken without work: look again. */
	for (unsigned q = 0; q < vdev->ops->num_queues; q++)
		virtio_dev_notify(vdev, q);
}

void virtio_dev_save(struct virtio_dev *vdev, struct sbuf *b)
{
	pthread_mutex_lock(&vdev->lock);
	sbuf_str(b, vdev->ops->name);
	sbuf_u64(b, vdev->host_features);
	sbuf_u64(b, vdev->guest_features);
	sbuf_u8(b, vdev->status);
	sbuf_u32(b, vdev->config_generation);
	sbuf_u32(b, vdev->ops->num_queues);
	for (unsigned q = 0; q < vdev->ops->num_queues; q++)
		virtq_save(&vdev->queues[q], b);
	struct sbuf dev;
	sbuf_init(&dev);
	if (vdev->ops->save)
		vdev->ops->save(vdev, &dev);
	sbuf_u32(b, (uint32_t)dev.len);
	sbuf_put(b, dev.data, dev.len);
	if (dev.oom)
		b->oom = true;
	sbuf_free(&dev);
	pthread_mutex_unlock(&vdev->lock);
}

int virtio_dev_load(struct virtio_dev *vdev, struct sreader *r)
{
	char name[64];
	int err = -EINVAL;

	sreader_str(r, name, sizeof(name));
	uint64_t host = sreader_u64(r);
	uint64_t guest = sreader_u64(r);
	uint8_t status = sreader_u8(r);
	uint32_t gen = sreader_u32(r);
	uint32_t nq = sreader_u32(r);
	if (!sreader_ok(r))
		return -EINVAL;
	if (strcmp(name, vdev->ops->name) != 0) {
		sreader_fail(r, "virtio: device type mismatch");
		return -EINVAL;
	}
	/* The destination must offer what the driver may have accepted. */
	if (nq != vdev->ops->num_queues || (guest & ~vdev->host_features) ||
	    (host & ~vdev->host_features)) {
		sreader_fail(r, "virtio: features or queues differ");
		return -EINVAL;
	}
	pthread_mutex_lock(&vdev->lock);
	vdev->guest_features = guest;
	vdev->status = status;
	vdev->config_generation = gen;
	for (unsigned q = 0; q < nq; q++) {
		err = virtq_load(&vdev->queues[q], vdev->ops->queue_max, r);
		if (err)
			goto out;
	}
	uint32_t len = sreader_len(r, 1U << 20, "virtio: device state too long");
	const uint8_t *p = sreader_take(r, len);
	err = -EINVAL;
	if (!sreader_ok(r))
		goto out;
	err = 0;
	if (vdev->ops->load) {
		struct sreader dr;
		sreader_init(&dr, p, len);
		err = vdev->ops->load(vdev, &dr);
		if (!err && dr.left)
			sreader_fail(&dr, "virtio: trailing device state");
		if (dr.err) {
			sreader_fail(r, dr.err);
			err = -EINVAL;
		}
	} else if (len) {
		sreader_fail(r, "virtio: unexpected device state");
		err = -EINVAL;
	}
out:
	pthread_mutex_unlock(&vdev->lock);
	return err;
}
