/* Network backends: where a NIC's Ethernet frames go (user-mode networking through
 * libslirp, or a host TAP device), apart from the device that shows them to the guest
 * (virtio-net knows virtqueues, not sockets).
 *
 * A backend type is a const struct net_backend_ops. net_backend_open gives a struct
 * net_backend attached to a client (the device): frames from the guest go in through
 * net_backend_send; frames for the guest come out through client->receive. Everything runs
 * on the VM's event-loop thread: the backend's fds, timers and deferred work are on the
 * loop, send is called there, and receive is called there without any device lock held.
 *
 * Flow control, so that nothing is unbounded and nothing spins:
 *   - receive returns -EAGAIN when the guest has no room; the backend keeps that frame (and
 *     at most a small bounded backlog), stops reading from its source, and resumes after the
 *     device calls net_backend_rx_ready (once the guest has added receive buffers).
 *   - net_backend_can_send false means the backend's queue towards the network is full: the
 *     device leaves the guest's frames in its ring and the backend calls client->tx_ready
 *     once it has room. */
#ifndef MABO_NET_NET_H
#define MABO_NET_NET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_loop;
struct net_backend;
struct vm_net_config;

/* Ethernet frames (without the FCS) are at most this long here: 64 KiB for offloaded
 * segments, plus the Ethernet and VLAN headers. */
#define NET_FRAME_MAX (65536 + 18)

/* The device side of a backend. Callbacks run on the event-loop thread. */
struct net_client {
	/* A frame for the guest. 0 when it was taken (or dropped because the NIC is down),
	 * -EAGAIN when the guest has no receive buffer: the backend keeps the frame and calls
	 * again after net_backend_rx_ready. */
	int (*receive)(void *opaque, const void *frame, size_t len);
	/* The backend has room again after net_backend_can_send said false. May be NULL. */
	void (*tx_ready)(void *opaque);
	void *opaque;
};

/* A backend type. Never written at run time. */
struct net_backend_ops {
	const char *name; /* "user", "tap" */
	/* Sets the backend up for cfg with its fds and timers on loop; fills nb->priv. Called
	 * before the loop runs or on any thread. 0 or -errno after logging one line. */
	int (*open)(struct net_backend *nb, const struct vm_net_config *cfg,
		    struct event_loop *loop);
	/* A frame from the guest, on the loop thread (the device's lock may be held: the
	 * backend must not call receive from here). 0, or -errno when it was dropped. */
	int (*send)(struct net_backend *nb, const void *frame, size_t len);
	/* false when send would have to drop for want of room. NULL: always true. */
	bool (*can_send)(struct net_backend *nb);
	/* Deferred work (see net_backend_schedule), on the loop thread, no device lock held:
	 * deliver kept frames after rx_ready, run the backend's own pending work. */
	void (*work)(struct net_backend *nb);
	/* Takes the backend off the loop and frees nb->priv, on the loop thread (or with the
	 * loop stopped). */
	void (*close)(struct net_backend *nb);
};

struct net_backend {
	const struct net_backend_ops *ops;
	const struct net_client *client;
	struct event_loop *loop;
	void *priv;		 /* the backend's state */
	atomic_bool work_posted; /* a call of ops->work is queued on the loop */
	atomic_bool rx_ready;	 /* the device asked to resume receiving */
	bool closed;		 /* (loop thread) */
};

/* Opens the backend cfg names, delivering to client (which must outlive it), on loop.
 * 0 or -errno (after logging one line); *out is freed with net_backend_close. */
int net_backend_open(const struct vm_net_config *cfg, const struct net_client *client,
		     struct event_loop *loop, struct net_backend **out)
	__attribute__((warn_unused_result));

/* Sends a frame from the guest (see net_backend_ops.send). */
int net_backend_send(struct net_backend *nb, const void *frame, size_t len);

/* True when the backend can take a frame now (see the header comment). */
bool net_backend_can_send(struct net_backend *nb);

/* The device can take frames again: from any thread, with any lock held; the backend
 * resumes from the loop later. */
void net_backend_rx_ready(struct net_backend *nb);

/* For backends: asks for one call of ops->work on the loop soon (calls coalesce); from any
 * thread. */
void net_backend_schedule(struct net_backend *nb);

/* For backends: takes the rx_ready request (true once per net_backend_rx_ready). */
static inline bool net_backend_take_rx_ready(struct net_backend *nb)
{
	return atomic_exchange(&nb->rx_ready, false);
}

/* Closes the backend: no client callback runs after it returns. Not from the loop
 * thread. NULL is fine. */
void net_backend_close(struct net_backend *nb);

/* ---- Backend types ---- */
extern const struct net_backend_ops net_user_ops; /* net/slirp.c */
extern const struct net_backend_ops net_tap_ops;  /* net/tap.c */

#endif
