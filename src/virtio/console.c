/* virtio-console (device id 3; virtio 1.2, section 5.3 "Console Device"), one port and no
 * MULTIPORT: the guest's hvc0. receiveq (0) carries the host console's input to the guest,
 * transmitq (1) the guest's output to the host console (core/console.h: standard output).
 *
 * Input: the console's thread hands bytes to a bounded buffer here and kicks the receive
 * queue; the event loop copies them into the buffers the driver made available. When the
 * buffer is full the console stops reading (input waits on the host side), and resumes
 * when the guest has taken some. The buffer outlives device resets, like the UART's. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/console.h"
#include "core/log.h"
#include "core/vm.h"
#include "virtio/virtio.h"

#define VCON_RXQ 0
#define VCON_TXQ 1
#define VCON_QUEUE_MAX 256
#define VCON_MAX_SEGS 64
#define VCON_RX_CAP 4096
/* struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr; meaningful only with
 * features this device does not offer, so it reads as zeros. */
#define VCON_CONFIG_SIZE 12

struct vcon {
	struct virtio_dev *vdev;
	struct console *con;

	pthread_mutex_t lock; /* the input buffer: console thread vs event loop */
	uint8_t rx[VCON_RX_CAP];
	size_t rx_head;
	size_t rx_count;
};

/* Console thread: how much input we can take. */
static size_t vcon_input_room(void *opaque)
{
	struct vcon *v = opaque;

	pthread_mutex_lock(&v->lock);
	size_t room = VCON_RX_CAP - v->rx_count;
	pthread_mutex_unlock(&v->lock);
	return room;
}

/* Console thread: input arrived; the receive queue takes it on the event loop. */
static void vcon_input_receive(void *opaque, const uint8_t *buf, size_t n)
{
	struct vcon *v = opaque;

	pthread_mutex_lock(&v->lock);
	for (size_t i = 0; i < n && v->rx_count < VCON_RX_CAP; i++) {
		v->rx[(v->rx_head + v->rx_count) % VCON_RX_CAP] = buf[i];
		v->rx_count++;
	}
	pthread_mutex_unlock(&v->lock);
	virtio_dev_kick(v->vdev, VCON_RXQ);
}

static const struct console_input_ops vcon_input_ops = {
	.room = vcon_input_room,
	.receive = vcon_input_receive,
};

/* Event loop: buffered input into the driver's receive buffers. */
static void vcon_receive(struct vcon *v, struct virtq *q)
{
	struct virtq_seg segs[VCON_MAX_SEGS];
	struct virtq_chain c;
	bool pushed = false, drained = false;

	pthread_mutex_lock(&v->lock);
	bool was_full = v->rx_count == VCON_RX_CAP;
	while (v->rx_count) {
		if (virtq_pop(q, segs, VCON_MAX_SEGS, &c) <= 0)
			break; /* no buffer: the driver notifies when it adds one */
		size_t n = c.in_len < v->rx_count ? c.in_len : v->rx_count;
		size_t first = VCON_RX_CAP - v->rx_head < n ? VCON_RX_CAP - v->rx_head : n;
		if (virtq_chain_write(q, &c, 0, v->rx + v->rx_head, first) != (ssize_t)first ||
		    virtq_chain_write(q, &c, first, v->rx, n - first) != (ssize_t)(n - first))
			break; /* the queue broke */
		v->rx_head = (v->rx_head + n) % VCON_RX_CAP;
		v->rx_count -= n;
		drained = true;
		if (virtq_push(q, c.head, (uint32_t)n) != 0)
			break;
		pushed = true;
	}
	pthread_mutex_unlock(&v->lock);
	if (pushed)
		virtio_dev_signal_used(v->vdev, VCON_RXQ);
	if (was_full && drained)
		console_input_ready(v->con);
}

/* Event loop: the guest's output to the host console. */
static void vcon_transmit(struct vcon *v, struct virtq *q)
{
	struct virtq_seg segs[VCON_MAX_SEGS];
	struct virtq_chain c;
	bool pushed = false;
	int r;

	do {
		virtq_disable_notify(q);
		while ((r = virtq_pop(q, segs, VCON_MAX_SEGS, &c)) > 0) {
			for (unsigned i = 0; i < c.nout; i++) {
				const void *p =
					vm_ram_ptr(v->vdev->vm, c.segs[i].addr, c.segs[i].len);
				if (!p) {
					virtio_dev_fail(v->vdev, "buffer outside guest RAM");
					return;
				}
				console_write(v->con, p, c.segs[i].len);
			}
			if (virtq_push(q, c.head, 0) != 0)
				return;
			pushed = true;
		}
		if (r < 0)
			break;
	} while (virtq_enable_notify(q));
	if (pushed)
		virtio_dev_signal_used(v->vdev, VCON_TXQ);
}

static void vcon_queue_notify(struct virtio_dev *vdev, unsigned qi)
{
	struct vcon *v = vdev->priv;

	if (qi == VCON_RXQ)
		vcon_receive(v, virtio_dev_queue(vdev, qi));
	else
		vcon_transmit(v, virtio_dev_queue(vdev, qi));
}

static int vcon_create(struct virtio_dev *vdev, const struct vm_device_config *cfg)
{
	(void)cfg;
	if (!vdev->vm->console) {
		log_error("%s: the machine has no host console", vdev->name);
		return -EINVAL;
	}
	struct vcon *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	int err = -pthread_mutex_init(&v->lock, NULL);
	if (err) {
		free(v);
		return err;
	}
	v->vdev = vdev;
	v->con = vdev->vm->console;
	vdev->priv = v;
	/* hvc0 takes the host's input from now on. */
	console_set_input(v->con, &vcon_input_ops, v);
	return 0;
}

static void vcon_destroy(struct virtio_dev *vdev)
{
	struct vcon *v = vdev->priv;

	console_set_input(v->con, NULL, NULL);
	pthread_mutex_destroy(&v->lock);
	free(v);
	vdev->priv = NULL;
}

const struct virtio_device_ops virtio_console_ops = {
	.name = "virtio-console",
	.device_id = VIRTIO_ID_CONSOLE,
	.features = 0,
	.num_queues = 2,
	.queue_max = VCON_QUEUE_MAX,
	.config_size = VCON_CONFIG_SIZE,
	.create = vcon_create,
	.destroy = vcon_destroy,
	.queue_notify = vcon_queue_notify,
};
