/* virtio-input (device id 18; virtio 1.2, section 5.8 "Input Device") offering one key,
 * KEY_POWER: the machine's power button. The control socket's "powerdown" presses and
 * releases it (virtio_input_press); Linux's virtio_input driver turns that into a KEY_POWER
 * event on /dev/input/eventN, which the guest's init acts on.
 *
 * Queue 0 (eventq) holds the driver's empty buffers, one struct virtio_input_event each;
 * queue 1 (statusq) carries LED and similar state the other way, which a button has none
 * of: its buffers are given back unread. Events wait in a small queue until the driver has
 * buffers for them, and travel with the device's state (snapshots, migration). */
#include "virtio/input.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/vm.h"
#include "migration/sbuf.h"
#include "virtio/virtio.h"

#define INPUT_QUEUE_MAX 64
#define INPUT_EVENTQ 0
#define INPUT_STATUSQ 1

/* The configuration's select values (5.8.5). */
#define VIRTIO_INPUT_CFG_UNSET 0x00
#define VIRTIO_INPUT_CFG_ID_NAME 0x01
#define VIRTIO_INPUT_CFG_ID_SERIAL 0x02
#define VIRTIO_INPUT_CFG_ID_DEVIDS 0x03
#define VIRTIO_INPUT_CFG_PROP_BITS 0x10
#define VIRTIO_INPUT_CFG_EV_BITS 0x11
#define VIRTIO_INPUT_CFG_ABS_INFO 0x12

/* Linux's input event types and codes (include/uapi/linux/input-event-codes.h). */
#define EV_SYN 0x00
#define EV_KEY 0x01
#define SYN_REPORT 0

#define INPUT_NAME "mabo power button"

/* struct virtio_input_config: select, subsel, size, 5 reserved, a 128-byte union. */
#define INPUT_CFG_SIZE 136
#define INPUT_CFG_UNION 8

struct input_event_le {
	uint16_t type, code;
	uint32_t value;
};

struct virtio_input {
	uint8_t cfg[INPUT_CFG_SIZE]; /* what the driver reads; select/subsel as written */
	struct input_event_le pending[VIRTIO_INPUT_MAX_PENDING];
	unsigned npending; /* events waiting for eventq buffers, oldest first */
};

static int input_create(struct virtio_dev *vdev, const struct vm_device_config *cfg)
{
	(void)cfg;
	struct virtio_input *in = calloc(1, sizeof(*in));
	if (!in) {
		log_error("%s: out of memory", vdev->name);
		return -ENOMEM;
	}
	vdev->priv = in;
	return 0;
}

static void input_destroy(struct virtio_dev *vdev)
{
	free(vdev->priv);
	vdev->priv = NULL;
}

/* Fills size and the union for the select/subsel the driver wrote (5.8.5.1). */
static void input_select(struct virtio_input *in)
{
	uint8_t sel = in->cfg[0], subsel = in->cfg[1];
	uint8_t *u = in->cfg + INPUT_CFG_UNION;
	uint8_t size = 0;

	memset(u, 0, INPUT_CFG_SIZE - INPUT_CFG_UNION);
	switch (sel) {
	case VIRTIO_INPUT_CFG_ID_NAME:
		if (subsel == 0) {
			size = sizeof(INPUT_NAME) - 1;
			memcpy(u, INPUT_NAME, size);
		}
		break;
	case VIRTIO_INPUT_CFG_EV_BITS:
		if (subsel == EV_KEY) {
			u[VIRTIO_INPUT_KEY_POWER / 8] = 1u << (VIRTIO_INPUT_KEY_POWER % 8);
			size = VIRTIO_INPUT_KEY_POWER / 8 + 1;
		}
		break;
	default: /* no serial, ids, properties or axes: size 0 says so */ break;
	}
	in->cfg[2] = size;
}

static void input_config_read(struct virtio_dev *vdev, uint32_t off, void *buf, uint32_t len)
{
	struct virtio_input *in = vdev->priv;
	memcpy(buf, in->cfg + off, len);
}

/* Only select and subsel are writable. */
static void input_config_write(struct virtio_dev *vdev, uint32_t off, const void *buf, uint32_t len)
{
	struct virtio_input *in = vdev->priv;
	const uint8_t *p = buf;

	for (uint32_t i = 0; i < len; i++)
		if (off + i < 2)
			in->cfg[off + i] = p[i];
	if (off < 2)
		input_select(in);
}

/* Moves pending events into the driver's eventq buffers, one event per buffer. */
static void input_deliver(struct virtio_dev *vdev)
{
	struct virtio_input *in = vdev->priv;
	struct virtq *q = virtio_dev_queue(vdev, INPUT_EVENTQ);
	struct virtq_seg segs[4];
	struct virtq_chain c;
	unsigned sent = 0;
	int r;

	while (sent < in->npending && (r = virtq_pop(q, segs, 4, &c)) > 0) {
		const struct input_event_le *e = &in->pending[sent];
		uint8_t raw[8];
		raw[0] = (uint8_t)e->type;
		raw[1] = (uint8_t)(e->type >> 8);
		raw[2] = (uint8_t)e->code;
		raw[3] = (uint8_t)(e->code >> 8);
		for (int k = 0; k < 4; k++)
			raw[4 + k] = (uint8_t)(e->value >> (8 * k));
		ssize_t n = virtq_chain_write(q, &c, 0, raw, sizeof(raw));
		if (n != (ssize_t)sizeof(raw)) {
			virtio_dev_fail(vdev, n < 0 ? "event buffer outside guest RAM"
						    : "event buffer shorter than an event");
			return;
		}
		if (virtq_push(q, c.head, sizeof(raw)) != 0)
			return;
		sent++;
	}
	if (!sent)
		return;
	in->npending -= sent;
	memmove(in->pending, in->pending + sent, in->npending * sizeof(in->pending[0]));
	virtio_dev_signal_used(vdev, INPUT_EVENTQ);
}

/* The statusq: LED and sound requests a button does not have; read and returned. */
static void input_drain_status(struct virtio_dev *vdev)
{
	struct virtq *q = virtio_dev_queue(vdev, INPUT_STATUSQ);
	struct virtq_seg segs[4];
	struct virtq_chain c;
	unsigned n = 0;
	int r;

	do {
		virtq_disable_notify(q);
		while ((r = virtq_pop(q, segs, 4, &c)) > 0) {
			if (virtq_push(q, c.head, 0) != 0)
				return;
			n++;
		}
		if (r < 0)
			break;
	} while (virtq_enable_notify(q));
	if (n)
		virtio_dev_signal_used(vdev, INPUT_STATUSQ);
}

static void input_queue_notify(struct virtio_dev *vdev, unsigned q)
{
	if (q == INPUT_EVENTQ)
		input_deliver(vdev);
	else
		input_drain_status(vdev);
}

static void input_reset(struct virtio_dev *vdev)
{
	struct virtio_input *in = vdev->priv;
	/* A driver that resets the device starts afresh: an old press must not power off
	 * the next kernel (after a reboot) the moment its driver loads. */
	in->npending = 0;
}

static void input_save(struct virtio_dev *vdev, struct sbuf *b)
{
	struct virtio_input *in = vdev->priv;

	sbuf_u8(b, in->cfg[0]);
	sbuf_u8(b, in->cfg[1]);
	sbuf_u32(b, in->npending);
	for (unsigned i = 0; i < in->npending; i++) {
		sbuf_u16(b, in->pending[i].type);
		sbuf_u16(b, in->pending[i].code);
		sbuf_u32(b, in->pending[i].value);
	}
}

static int input_load(struct virtio_dev *vdev, struct sreader *r)
{
	struct virtio_input *in = vdev->priv;

	in->cfg[0] = sreader_u8(r);
	in->cfg[1] = sreader_u8(r);
	uint32_t n = sreader_u32(r);
	if (n > VIRTIO_INPUT_MAX_PENDING) {
		sreader_fail(r, "virtio-input: too many pending events");
		return -EINVAL;
	}
	for (uint32_t i = 0; i < n; i++) {
		in->pending[i].type = sreader_u16(r);
		in->pending[i].code = sreader_u16(r);
		in->pending[i].value = sreader_u32(r);
	}
	if (!sreader_ok(r))
		return -EINVAL;
	in->npending = n;
	input_select(in);
	return 0;
}

int virtio_input_press(struct virtio_dev *vdev, uint16_t code)
{
	static const int values[2] = { 1, 0 }; /* pressed, released */
	int ret = 0;

	pthread_mutex_lock(&vdev->lock);
	struct virtio_input *in = vdev->priv;
	if (!virtio_dev_running(vdev)) {
		/* No driver: nobody would see the press now, and a press kept until one loads
		 * would act long after it was asked for. */
		ret = -ENODEV;
	} else if (in->npending + 4 > VIRTIO_INPUT_MAX_PENDING) {
		ret = -EBUSY; /* the guest takes none of the presses already sent */
	} else {
		for (int k = 0; k < 2; k++) {
			in->pending[in->npending++] =
				(struct input_event_le){ EV_KEY, code, (uint32_t)values[k] };
			in->pending[in->npending++] =
				(struct input_event_le){ EV_SYN, SYN_REPORT, 0 };
		}
	}
	pthread_mutex_unlock(&vdev->lock);
	if (!ret)
		virtio_dev_kick(vdev, INPUT_EVENTQ);
	return ret;
}

const struct virtio_device_ops virtio_input_ops = {
	.name = "virtio-input",
	.device_id = VIRTIO_ID_INPUT,
	.features = 0,
	.num_queues = 2,
	.queue_max = INPUT_QUEUE_MAX,
	.config_size = INPUT_CFG_SIZE,
	.create = input_create,
	.destroy = input_destroy,
	.config_read = input_config_read,
	.config_write = input_config_write,
	.queue_notify = input_queue_notify,
	.reset = input_reset,
	.save = input_save,
	.load = input_load,
};
