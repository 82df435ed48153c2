/* The network backend interface's common part (see net.h): opening by mode, deferred work
 * on the event loop, and a close that no late callback can outlive. */
#include "net/net.h"

#include <errno.h>
#include <stdlib.h>

#include "core/config.h"
#include "core/event.h"
#include "core/log.h"

int net_backend_open(const struct vm_net_config *cfg, const struct net_client *client,
		     struct event_loop *loop, struct net_backend **out)
{
	const struct net_backend_ops *ops = cfg->mode == VM_NET_TAP ? &net_tap_ops : &net_user_ops;
	struct net_backend *nb = calloc(1, sizeof(*nb));

	if (!nb)
		return -ENOMEM;
	nb->ops = ops;
	nb->client = client;
	nb->loop = loop;
	int err = ops->open(nb, cfg, loop);
	if (err) {
		free(nb);
		return err;
	}
	*out = nb;
	return 0;
}

int net_backend_send(struct net_backend *nb, const void *frame, size_t len)
{
	return nb->ops->send(nb, frame, len);
}

bool net_backend_can_send(struct net_backend *nb)
{
	return !nb->ops->can_send || nb->ops->can_send(nb);
}

/* Posted: the backend's deferred work, unless it was closed meanwhile. */
static void net_backend_run_work(void *opaque)
{
	struct net_backend *nb = opaque;

	atomic_store(&nb->work_posted, false);
	if (!nb->closed)
		nb->ops->work(nb);
}

void net_backend_schedule(struct net_backend *nb)
{
	if (atomic_exchange(&nb->work_posted, true))
		return;
	if (event_loop_post(nb->loop, net_backend_run_work, nb) != 0) {
		atomic_store(&nb->work_posted, false);
		log_warn("net %s: out of memory scheduling work", nb->ops->name);
	}
}

void net_backend_rx_ready(struct net_backend *nb)
{
	atomic_store(&nb->rx_ready, true);
	net_backend_schedule(nb);
}

static void net_backend_close_on_loop(void *opaque)
{
	struct net_backend *nb = opaque;

	nb->closed = true;
	nb->ops->close(nb);
}

static void net_backend_free(void *opaque)
{
	free(opaque);
}

void net_backend_close(struct net_backend *nb)
{
	if (!nb)
		return;
	/* On the loop, so no backend callback runs concurrently; nb itself is freed by a
	 * function posted after it, behind any work still queued that names it. */
	if (event_loop_run(nb->loop, net_backend_close_on_loop, nb) != 0) {
		/* No memory to post it: close from here. At VM teardown the loop has stopped
		 * already, so this races with nothing there. */
		log_warn("net %s: closing off the event loop (out of memory)", nb->ops->name);
		net_backend_close_on_loop(nb);
	}
	if (event_loop_post(nb->loop, net_backend_free, nb) != 0)
		free(nb);
}
