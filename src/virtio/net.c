/* virtio-net (device id 1; virtio 1.2, section 5.1 "Network Device"): one receive and one
 * transmit queue, frames to and from a network backend (net/net.h).
 *
 * Every buffer starts with the 12-byte struct virtio_net_hdr (virtio 1.x always has
 * num_buffers). Transmit: the device reads header and frame, completes a partial checksum
 * the driver left to it (VIRTIO_NET_F_CSUM), and hands the frame to the backend, on the
 * event loop. Receive: the backend delivers a frame on the event loop; it goes whole into
 * the next receive chain, marked checksum-valid (VIRTIO_NET_F_GUEST_CSUM: frames from
 * slirp and the host stack carry correct checksums). With no receive chain available the
 * device refuses the frame, and tells the backend to resume once the driver adds some.
 *
 * No mergeable receive buffers and no segmentation offloads: frames are at most the MTU
 * (1500) plus the Ethernet header, so the driver's buffers always hold one whole. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/vm.h"
#include "net/net.h"
#include "virtio/virtio.h"

/* Feature bits (5.1.3). */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16

#define VIRTIO_NET_S_LINK_UP 1
/* struct virtio_net_hdr flags. */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE 0

#define NET_HDR_SIZE 12
#define NET_QUEUE_MAX 256
#define NET_RXQ 0
#define NET_TXQ 1
/* Frames sent per turn on the event loop before other devices get theirs. */
#define NET_TX_BATCH 128
#define NET_ETH_MIN 14 /* an Ethernet header */
#define NET_MESSAGES_LOGGED 10

/* Configuration space: mac[6], status, max_virtqueue_pairs (5.1.4). */
#define NET_CFG_MAC 0
#define NET_CFG_STATUS 6
#define NET_CFG_MAX_PAIRS 8
#define NET_CONFIG_SIZE 10

struct net_dev {
	struct virtio_dev *vdev;
	struct net_backend *nb;
	struct net_client client;
	bool rx_waiting; /* refused a frame for want of receive buffers (under vdev->lock) */
	unsigned drops;	 /* malformed transmit frames logged */
	uint8_t config[NET_CONFIG_SIZE];
	/* Under vdev->lock: one chain's segments, one frame with its header. */
	struct virtq_seg segs[VIRTQ_MAX_SEGS];
	uint8_t buf[NET_HDR_SIZE + NET_FRAME_MAX];
};

static void net_log_drop(struct net_dev *n, const char *why, size_t len)
{
	if (n->drops++ < NET_MESSAGES_LOGGED)
		log_warn("%s: dropped a %zu-byte frame from the guest: %s%s", n->vdev->name, len,
			 why, n->drops == NET_MESSAGES_LOGGED ? " (no more such messages)" : "");
}

/* The backend's frame for the guest (event loop, vdev->lock not held). */
static int net_receive(void *opaque, const void *frame, size_t len)
{
	struct net_dev *n = opaque;
	struct virtio_dev *vdev = n->vdev;
	struct virtq *q = virtio_dev_queue(vdev, NET_RXQ);
	struct virtq_chain c;
	int ret = 0;

	pthread_mutex_lock(&vdev->lock);
	/* A NIC the driver does not run drops what arrives. */
	if (!virtio_dev_running(vdev) || !q->ready || q->broken)
		goto out;
	/* Quiesced for a snapshot or migration: as if the guest had no buffers, so the
	 * backend holds the frame back and offers it again once unquiesced. */
	int r = vdev->quiesced ? 0 : virtq_pop(q, n->segs, VIRTQ_MAX_SEGS, &c);
	if (r == 0) {
		n->rx_waiting = true;
		ret = -EAGAIN;
		goto out;
	}
	if (r < 0)
		goto out;
	uint32_t used = 0;
	if (c.in_len >= NET_HDR_SIZE + len) {
		uint8_t hdr[NET_HDR_SIZE] = { 0 };
		if (virtio_dev_has_feature(vdev, VIRTIO_NET_F_GUEST_CSUM))
			hdr[0] = VIRTIO_NET_HDR_F_DATA_VALID;
		hdr[1] = VIRTIO_NET_HDR_GSO_NONE;
		hdr[10] = 1; /* num_buffers, little-endian */
		if (virtq_chain_write(q, &c, 0, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr) ||
		    virtq_chain_write(q, &c, NET_HDR_SIZE, frame, len) != (ssize_t)len)
			goto out; /* the queue broke */
		used = NET_HDR_SIZE + (uint32_t)len;
	}
	/* A buffer too small for the frame goes back empty: the driver counts an error. */
	if (virtq_push(q, c.head, used) == 0)
		virtio_dev_signal_used(vdev, NET_RXQ);
out:
	pthread_mutex_unlock(&vdev->lock);
	return ret;
}

/* The backend has room again (event loop). */
static void net_tx_ready(void *opaque)
{
	struct net_dev *n = opaque;
	virtio_dev_kick(n->vdev, NET_TXQ);
}

static int net_create(struct virtio_dev *vdev, const struct vm_device_config *cfg)
{
	struct net_dev *n = calloc(1, sizeof(*n));
	int err;

	if (!n)
		return -ENOMEM;
	n->vdev = vdev;
	n->client = (struct net_client){ .receive = net_receive,
					 .tx_ready = net_tx_ready,
					 .opaque = n };
	memcpy(n->config + NET_CFG_MAC, cfg->net.mac, 6);
	n->config[NET_CFG_STATUS] = VIRTIO_NET_S_LINK_UP;
	n->config[NET_CFG_MAX_PAIRS] = 1;
	err = net_backend_open(&cfg->net, &n->client, vdev->vm->loop, &n->nb);
	if (err) {
		free(n);
		return err;
	}
	vdev->priv = n;
	return 0;
}

static void net_destroy(struct virtio_dev *vdev)
{
	struct net_dev *n = vdev->priv;

	if (!n)
		return;
	net_backend_close(n->nb);
	free(n);
	vdev->priv = NULL;
}

static void net_config_read(struct virtio_dev *vdev, uint32_t off, void *buf, uint32_t len)
{
	struct net_dev *n = vdev->priv;
	memcpy(buf, n->config + off, len);
}

static void net_reset(struct virtio_dev *vdev)
{
	struct net_dev *n = vdev->priv;

	/* A backend waiting for buffers resumes, and drops until the driver is back. */
	if (n->rx_waiting) {
		n->rx_waiting = false;
		net_backend_rx_ready(n->nb);
	}
}

/* The Internet checksum of len bytes at p added to sum, folded, not inverted. */
static uint16_t net_csum_fold(const uint8_t *p, size_t len, uint32_t sum)
{
	uint64_t s = sum;

	for (; len >= 2; p += 2, len -= 2)
		s += (uint32_t)p[0] << 8 | p[1];
	if (len)
		s += (uint32_t)p[0] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* Completes the checksum the driver left partial (NEEDS_CSUM): the one's complement sum
 * from csum_start to the end, stored at csum_start + csum_offset, where the driver put the
 * pseudo-header's sum. false when the offsets do not fit the frame. */
static bool net_complete_csum(uint8_t *frame, size_t len, uint16_t start, uint16_t offset)
{
	if (start >= len || (size_t)offset + 2 > len - start)
		return false;
	uint16_t sum = (uint16_t)~net_csum_fold(frame + start, len - start, 0);
	if (sum == 0)
		sum = 0xffff; /* same value for TCP, and 0 means "none" for UDP */
	frame[start + offset] = (uint8_t)(sum >> 8);
	frame[start + offset + 1] = (uint8_t)sum;
	return true;
}

/* Sends one transmit chain's frame (or drops it). 0, or -EIO when the queue broke. */
static int net_tx_one(struct net_dev *n, struct virtq *q, const struct virtq_chain *c)
{
	uint8_t *hdr = n->buf, *frame = n->buf + NET_HDR_SIZE;

	if (c->out_len < NET_HDR_SIZE) {
		virtio_dev_fail(n->vdev, "transmit buffer without a virtio-net header");
		return -EIO;
	}
	size_t len = c->out_len - NET_HDR_SIZE;
	if (len < NET_ETH_MIN || len > NET_FRAME_MAX) {
		net_log_drop(n, "bad length", len);
		return 0;
	}
	if (virtq_chain_read(q, c, 0, n->buf, NET_HDR_SIZE + len) != (ssize_t)(NET_HDR_SIZE + len))
		return -EIO;
	if (hdr[1] != VIRTIO_NET_HDR_GSO_NONE) {
		net_log_drop(n, "segmentation offload was not offered", len);
		return 0;
	}
	if (hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		uint16_t start = (uint16_t)(hdr[6] | hdr[7] << 8);
		uint16_t offset = (uint16_t)(hdr[8] | hdr[9] << 8);
		if (!virtio_dev_has_feature(n->vdev, VIRTIO_NET_F_CSUM) ||
		    !net_complete_csum(frame, len, start, offset)) {
			net_log_drop(n, "bad checksum offsets", len);
			return 0;
		}
	}
	net_backend_send(n->nb, frame, len); /* a drop here is the network's */
	return 0;
}

static void net_tx(struct net_dev *n, struct virtq *q)
{
	struct virtq_chain c;
	unsigned sent = 0;
	int r = 0;

	do {
		virtq_disable_notify(q);
		for (;;) {
			if (!net_backend_can_send(n->nb))
				goto out; /* tx_ready kicks the queue again */
			if (sent == NET_TX_BATCH) {
				virtio_dev_kick(n->vdev, NET_TXQ);
				goto out;
			}
			r = virtq_pop(q, n->segs, VIRTQ_MAX_SEGS, &c);
			if (r <= 0)
				break;
			if (net_tx_one(n, q, &c) < 0 || virtq_push(q, c.head, 0) < 0)
				goto out;
			sent++;
		}
		if (r < 0)
			break;
	} while (virtq_enable_notify(q));
out:
	if (sent)
		virtio_dev_signal_used(n->vdev, NET_TXQ);
}

static void net_queue_notify(struct virtio_dev *vdev, unsigned qi)
{
	struct net_dev *n = vdev->priv;

	if (qi == NET_TXQ) {
		net_tx(n, virtio_dev_queue(vdev, qi));
	} else if (n->rx_waiting) {
		/* Receive buffers arrived: the backend may deliver again. */
		n->rx_waiting = false;
		net_backend_rx_ready(n->nb);
	}
}

const struct virtio_device_ops virtio_net_ops = {
	.name = "virtio-net",
	.device_id = VIRTIO_ID_NET,
	.features = VIRTIO_FEATURE(VIRTIO_NET_F_CSUM) | VIRTIO_FEATURE(VIRTIO_NET_F_GUEST_CSUM) |
		    VIRTIO_FEATURE(VIRTIO_NET_F_MAC) | VIRTIO_FEATURE(VIRTIO_NET_F_STATUS),
	.num_queues = 2,
	.queue_max = NET_QUEUE_MAX,
	.config_size = NET_CONFIG_SIZE,
	.create = net_create,
	.destroy = net_destroy,
	.config_read = net_config_read,
	.queue_notify = net_queue_notify,
	.reset = net_reset,
};
