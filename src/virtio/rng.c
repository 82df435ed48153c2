/* virtio-rng (device id 4; virtio 1.2, section 5.4 "Entropy Device"): one request queue,
 * each request a writable buffer the device fills with random bytes from the host's
 * getrandom(2). No features, no configuration space. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "core/vm.h"
#include "virtio/virtio.h"

#define RNG_QUEUE_MAX 256
#define RNG_MAX_SEGS 64
/* Bytes per request at most: the spec lets the device use less than the whole buffer, and a
 * guest offering gigabytes must not keep the event loop busy. */
#define RNG_MAX_PER_REQUEST (64 * 1024)
/* Requests per turn on the event loop before yielding to other devices. */
#define RNG_BATCH 64

static int rng_create(struct virtio_dev *vdev, const struct vm_device_config *cfg)
{
	(void)cfg;
	vdev->priv = NULL;
	return 0;
}

static void rng_destroy(struct virtio_dev *vdev)
{
	(void)vdev;
}

/* Fills the chain's writable buffers; *written gets the byte count. 0 or -errno. */
static int rng_fill(struct virtio_dev *vdev, const struct virtq_chain *c, uint32_t *written)
{
	uint32_t budget = RNG_MAX_PER_REQUEST;

	*written = 0;
	for (unsigned i = c->nout; i < c->nsegs && budget; i++) {
		uint32_t n = c->segs[i].len < budget ? c->segs[i].len : budget;
		/* Straight into guest RAM, through the tracked write path. */
		uint8_t *p = vm_guest_ptr_for_write(vdev->vm, c->segs[i].addr, n);
		if (!p)
			return -EFAULT;
		for (uint32_t done = 0; done < n;) {
			ssize_t r = getrandom(p + done, n - done, 0);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			done += (uint32_t)r;
		}
		*written += n;
		budget -= n;
	}
	return 0;
}

static void rng_queue_notify(struct virtio_dev *vdev, unsigned qi)
{
	struct virtq *q = virtio_dev_queue(vdev, qi);
	struct virtq_seg segs[RNG_MAX_SEGS];
	struct virtq_chain c;
	unsigned served = 0;
	int r;

	do {
		virtq_disable_notify(q);
		while ((r = virtq_pop(q, segs, RNG_MAX_SEGS, &c)) > 0) {
			uint32_t len;
			int err = rng_fill(vdev, &c, &len);
			if (err) {
				virtio_dev_fail(vdev, err == -EFAULT ? "buffer outside guest RAM"
								     : "getrandom failed");
				return;
			}
			if (virtq_push(q, c.head, len) != 0)
				return;
			if (++served == RNG_BATCH) {
				/* More may wait: come back after the loop's other work. */
				virtio_dev_kick(vdev, qi);
				break;
			}
		}
		if (r < 0 || served == RNG_BATCH)
			break;
	} while (virtq_enable_notify(q));
	if (served)
		virtio_dev_signal_used(vdev, qi);
}

const struct virtio_device_ops virtio_rng_ops = {
	.name = "virtio-rng",
	.device_id = VIRTIO_ID_RNG,
	.features = 0,
	.num_queues = 1,
	.queue_max = RNG_QUEUE_MAX,
	.config_size = 0,
	.create = rng_create,
	.destroy = rng_destroy,
	.queue_notify = rng_queue_notify,
};
