/* The TAP backend: the NIC's frames go to and come from a host TAP interface (IFF_TAP,
 * IFF_NO_PI), typically on a bridge with other VMs or the host. The interface may exist
 * already (made with `ip tuntap add NAME mode tap [user USER]`) or is created, which needs
 * CAP_NET_ADMIN; it is not configured here (up, addresses, bridge: the host's job).
 *
 * The tap fd is non-blocking and on the event loop. A frame the guest has no room for is
 * kept (one frame), and the fd is not read until the device says it has buffers again;
 * the host kernel then queues or drops, as for a real NIC. Frames from the guest are
 * written at once; one the kernel cannot take is dropped. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "net/net.h"

/* Frames read per wake-up before other work gets a turn. */
#define TAP_READ_BATCH 64
#define TAP_MESSAGES_LOGGED 10

struct tap_net {
	struct net_backend *nb;
	struct event_loop *loop;
	int fd;
	char ifname[IFNAMSIZ];
	bool reading;	/* EPOLLIN registered */
	size_t pending; /* bytes of a frame in buf the guest had no room for, 0 none */
	unsigned errors;
	uint8_t buf[NET_FRAME_MAX];
};

static void tap_log(struct tap_net *t, const char *what, int err)
{
	if (t->errors++ < TAP_MESSAGES_LOGGED)
		log_warn("net tap '%s': %s: %s%s", t->ifname, what, strerror(err),
			 t->errors == TAP_MESSAGES_LOGGED ? " (no more such messages)" : "");
}

static void tap_set_reading(struct tap_net *t, bool on)
{
	if (t->reading == on)
		return;
	if (event_loop_modify_fd(t->loop, t->fd, on ? EPOLLIN : 0) == 0)
		t->reading = on;
}

/* Gives buf's frame to the guest: false when it had no room (the frame is kept). */
static bool tap_deliver(struct tap_net *t, size_t len)
{
	const struct net_client *c = t->nb->client;

	if (c->receive(c->opaque, t->buf, len) == -EAGAIN) {
		t->pending = len;
		tap_set_reading(t, false);
		return false;
	}
	t->pending = 0;
	return true;
}

static void tap_on_readable(void *opaque, uint32_t events)
{
	struct tap_net *t = opaque;

	(void)events;
	for (int i = 0; i < TAP_READ_BATCH && !t->pending; i++) {
		ssize_t n = read(t->fd, t->buf, sizeof(t->buf));
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				tap_log(t, "read failed", errno);
			return;
		}
		if (n == 0 || !tap_deliver(t, (size_t)n))
			return;
	}
}

static void tap_work(struct net_backend *nb)
{
	struct tap_net *t = nb->priv;

	if (!net_backend_take_rx_ready(nb))
		return;
	if (t->pending && !tap_deliver(t, t->pending))
		return;
	tap_set_reading(t, true);
}

static int tap_send(struct net_backend *nb, const void *frame, size_t len)
{
	struct tap_net *t = nb->priv;

	for (;;) {
		ssize_t n = write(t->fd, frame, len);
		if (n >= 0)
			return 0;
		if (errno == EINTR)
			continue;
		/* EAGAIN / ENOBUFS: the kernel's queue is full, as on a busy wire. EIO: the
		 * interface is down. Drop the frame either way. */
		int err = errno;
		if (err != EAGAIN && err != ENOBUFS)
			tap_log(t, "write failed", err);
		return -err;
	}
}

static int tap_open(struct net_backend *nb, const struct vm_net_config *cfg,
		    struct event_loop *loop)
{
	struct tap_net *t = calloc(1, sizeof(*t));
	struct ifreq ifr;
	int err;

	if (!t)
		return -ENOMEM;
	t->nb = nb;
	t->loop = loop;
	snprintf(t->ifname, sizeof(t->ifname), "%s", cfg->ifname);
	t->fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (t->fd < 0) {
		err = -errno;
		log_error("net tap '%s': cannot open /dev/net/tun: %s", t->ifname, strerror(errno));
		goto err_free;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	memcpy(ifr.ifr_name, t->ifname, strlen(t->ifname));
	if (ioctl(t->fd, TUNSETIFF, &ifr) != 0) {
		err = -errno;
		bool exists = if_nametoindex(t->ifname) != 0;
		if (err == -EPERM || err == -EACCES)
			log_error("net tap '%s': %s (as root: ip tuntap add %s mode tap user USER)",
				  t->ifname,
				  exists ? "no permission to attach to it"
					 : "no such interface, and no permission to create it",
				  t->ifname);
		else if (err == -EBUSY)
			log_error("net tap '%s': busy (attached to another process?)", t->ifname);
		else if (err == -EINVAL && exists)
			log_error("net tap '%s': the interface is not a TAP device", t->ifname);
		else
			log_error("net tap '%s': cannot attach: %s", t->ifname, strerror(-err));
		goto err_close;
	}
	err = event_loop_add_fd(loop, t->fd, EPOLLIN, tap_on_readable, t);
	if (err) {
		log_error("net tap '%s': cannot watch its fd: %s", t->ifname, strerror(-err));
		goto err_close;
	}
	t->reading = true;
	nb->priv = t;
	return 0;

err_close:
	close(t->fd);
err_free:
	free(t);
	return err;
}

static void tap_close(struct net_backend *nb)
{
	struct tap_net *t = nb->priv;

	event_loop_remove_fd(t->loop, t->fd);
	close(t->fd);
	free(t);
	nb->priv = NULL;
}

const struct net_backend_ops net_tap_ops = {
	.name = "tap",
	.open = tap_open,
	.send = tap_send,
	.work = tap_work,
	.close = tap_close,
};
