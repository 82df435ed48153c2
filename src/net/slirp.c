/* User-mode networking through libslirp (like QEMU's -netdev user): the guest sits on
 * 10.0.2.0/24 at 10.0.2.15 (DHCP), reaches the host's loopback and the outside world
 * through 10.0.2.2, and DNS at 10.0.2.3; hostfwd rules listen on host ports and connect to
 * the guest. No privileges needed: slirp terminates the guest's TCP/UDP in host sockets.
 *
 * libslirp is not thread-safe: every call into it runs on the event-loop thread. Its
 * sockets are polled the way it expects (slirp_pollfds_fill / poll / slirp_pollfds_poll),
 * with the event loop's epoll only as the wake-up: each fd slirp asks for is registered
 * (level-triggered) and a ready one schedules a step, which polls the set itself with
 * poll(2) and lets slirp serve it. Guest frames are queued by send (the device's lock is
 * held then, and slirp_input may answer at once) and fed to slirp in the step.
 *
 * When the guest has no receive buffers, frames slirp produces are kept in a bounded
 * backlog (dropped beyond it: TCP retransmits) and slirp's sockets are not read, so host
 * senders wait in their socket buffers, until the device says it has room again. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <slirp/libslirp.h>

#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "core/vm.h"
#include "net/net.h"

#define USER_NETWORK 0x0a000200u /* 10.0.2.0/24 */
#define USER_NETMASK 0xffffff00u
#define USER_HOST 0x0a000202u  /* 10.0.2.2 */
#define USER_DNS 0x0a000203u   /* 10.0.2.3 */
#define USER_GUEST 0x0a00020fu /* 10.0.2.15, the first DHCP address */

/* Guest frames waiting for slirp, and slirp's frames waiting for guest buffers, at most. */
#define USER_TXQ_MAX 256
#define USER_RXQ_MAX 512
/* Longest wait between steps (slirp's TCP timers need at least this). */
#define USER_MAX_TIMEOUT_MS 1000
#define USER_MESSAGES_LOGGED 10

struct user_frame {
	struct user_frame *next;
	size_t len;
	uint8_t data[];
};

struct user_fdreg {
	int fd;
	uint32_t events; /* epoll */
};

struct user_net;

struct user_timer {
	struct user_net *u;
	struct event_timer *et;
	SlirpTimerCb cb;
	void *cb_opaque;
	struct user_timer *next;
};

struct user_frame_queue {
	struct user_frame *head, *tail;
	unsigned len;
};

struct user_net {
	struct net_backend *nb;
	struct event_loop *loop;
	Slirp *slirp;
	/* The set slirp asked for at the last fill. */
	struct pollfd *pfds;
	unsigned npfds, pfds_cap;
	/* The fds registered on the loop now. */
	struct user_fdreg *reg;
	unsigned nreg, reg_cap;
	struct event_timer *poll_timer;
	struct user_timer *timers;
	struct user_frame_queue txq; /* guest -> slirp */
	bool tx_full;		     /* can_send said no: tell the client when drained */
	struct user_frame_queue rxq; /* slirp -> guest, while the guest has no room */
	bool rx_blocked;
	unsigned guest_errors, drops;
};

static void user_frames_push(struct user_frame_queue *q, struct user_frame *f)
{
	f->next = NULL;
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->len++;
}

static struct user_frame *user_frames_pop(struct user_frame_queue *q)
{
	struct user_frame *f = q->head;

	if (f) {
		q->head = f->next;
		if (!q->head)
			q->tail = NULL;
		q->len--;
	}
	return f;
}

static void user_frames_free(struct user_frame_queue *q)
{
	struct user_frame *f;

	while ((f = user_frames_pop(q)))
		free(f);
}

static struct user_frame *user_frame_new(const void *data, size_t len)
{
	struct user_frame *f = malloc(sizeof(*f) + len);

	if (f) {
		f->len = len;
		memcpy(f->data, data, len);
	}
	return f;
}

static void user_drop(struct user_net *u, const char *why)
{
	if (u->drops++ < USER_MESSAGES_LOGGED)
		log_debug("net user: dropped a frame: %s", why);
}

/* ---- slirp's callbacks (all on the loop thread, inside slirp calls) ---- */

/* A frame for the guest. */
static ssize_t user_send_packet(const void *buf, size_t len, void *opaque)
{
	struct user_net *u = opaque;
	const struct net_client *c = u->nb->client;

	if (!u->rx_blocked) {
		if (c->receive(c->opaque, buf, len) != -EAGAIN)
			return (ssize_t)len;
		u->rx_blocked = true;
	}
	/* Once blocked, every frame waits in order behind the first refused one. */
	if (u->rxq.len >= USER_RXQ_MAX) {
		user_drop(u, "the guest has no receive buffers");
		return (ssize_t)len;
	}
	struct user_frame *f = user_frame_new(buf, len);
	if (!f) {
		user_drop(u, "out of memory");
		return (ssize_t)len;
	}
	user_frames_push(&u->rxq, f);
	return (ssize_t)len;
}

static void user_guest_error(const char *msg, void *opaque)
{
	struct user_net *u = opaque;

	if (u->guest_errors++ < USER_MESSAGES_LOGGED)
		log_warn("net user: guest error: %s", msg);
}

static int64_t user_clock_get_ns(void *opaque)
{
	(void)opaque;
	return (int64_t)host_now_ns();
}

static void user_timer_fire(void *opaque)
{
	struct user_timer *t = opaque;

	t->cb(t->cb_opaque);
	net_backend_schedule(t->u->nb); /* the timer may have made work for the sockets */
}

static void *user_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
	struct user_net *u = opaque;
	struct user_timer *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->u = u;
	t->cb = cb;
	t->cb_opaque = cb_opaque;
	if (event_timer_create(u->loop, user_timer_fire, t, &t->et) != 0) {
		free(t);
		return NULL;
	}
	t->next = u->timers;
	u->timers = t;
	return t;
}

static void user_timer_free(void *timer, void *opaque)
{
	struct user_net *u = opaque;
	struct user_timer *t = timer;

	if (!t)
		return;
	for (struct user_timer **pp = &u->timers; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	event_timer_destroy(t->et);
	free(t);
}

static void user_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
	struct user_timer *t = timer;

	(void)opaque;
	if (t)
		event_timer_arm(t->et, expire_ms < 0 ? 0 : (uint64_t)expire_ms * 1000000ULL);
}

static void user_register_poll_fd(int fd, void *opaque)
{
	(void)fd, (void)opaque; /* the set is rebuilt at every fill */
}

static void user_notify(void *opaque)
{
	struct user_net *u = opaque;
	net_backend_schedule(u->nb);
}

static const SlirpCb user_callbacks = {
	.send_packet = user_send_packet,
	.guest_error = user_guest_error,
	.clock_get_ns = user_clock_get_ns,
	.timer_new = user_timer_new,
	.timer_free = user_timer_free,
	.timer_mod = user_timer_mod,
	.register_poll_fd = user_register_poll_fd,
	.unregister_poll_fd = user_register_poll_fd,
	.notify = user_notify,
};

/* slirp_pollfds_fill: one more fd to wait for; returns its index. */
static int user_add_poll(int fd, int events, void *opaque)
{
	struct user_net *u = opaque;

	if (u->npfds == u->pfds_cap) {
		unsigned cap = u->pfds_cap ? 2 * u->pfds_cap : 16;
		struct pollfd *p = realloc(u->pfds, cap * sizeof(*p));
		if (!p)
			return -1; /* slirp then skips this socket for one round */
		u->pfds = p;
		u->pfds_cap = cap;
	}
	short ev = 0;
	if (events & SLIRP_POLL_IN)
		ev |= POLLIN;
	if (events & SLIRP_POLL_OUT)
		ev |= POLLOUT;
	if (events & SLIRP_POLL_PRI)
		ev |= POLLPRI;
	u->pfds[u->npfds] = (struct pollfd){ .fd = fd, .events = ev };
	return (int)u->npfds++;
}

/* slirp_pollfds_poll: what fd number idx got. */
static int user_get_revents(int idx, void *opaque)
{
	struct user_net *u = opaque;
	int r = 0;

	if (idx < 0 || (unsigned)idx >= u->npfds)
		return 0;
	short ev = u->pfds[idx].revents;
	if (ev & POLLNVAL)
		return 0;
	if (ev & POLLIN)
		r |= SLIRP_POLL_IN;
	if (ev & POLLOUT)
		r |= SLIRP_POLL_OUT;
	if (ev & POLLPRI)
		r |= SLIRP_POLL_PRI;
	if (ev & POLLERR)
		r |= SLIRP_POLL_ERR;
	if (ev & POLLHUP)
		r |= SLIRP_POLL_HUP;
	return r;
}

/* ---- the loop side ---- */

static void user_on_fd(void *opaque, uint32_t events)
{
	struct user_net *u = opaque;

	(void)events;
	net_backend_schedule(u->nb);
}

static void user_on_timeout(void *opaque)
{
	struct user_net *u = opaque;
	net_backend_schedule(u->nb);
}

/* The epoll events to wait for on pollfd p: none of the reading kind while the guest has
 * no room. */
static uint32_t user_wanted(const struct user_net *u, const struct pollfd *p)
{
	uint32_t ev = 0;

	if ((p->events & POLLIN) && !u->rx_blocked)
		ev |= EPOLLIN;
	if ((p->events & POLLPRI) && !u->rx_blocked)
		ev |= EPOLLPRI;
	if (p->events & POLLOUT)
		ev |= EPOLLOUT;
	return ev;
}

/* Makes the loop's registrations match the set slirp asked for. Each kept fd is modified
 * rather than trusted: slirp may have closed it and opened another under the same number,
 * which epoll has forgotten (the modification then fails and it is added afresh). */
static void user_sync_fds(struct user_net *u)
{
	unsigned n = 0;

	for (unsigned i = 0; i < u->nreg; i++) {
		bool keep = false;
		for (unsigned j = 0; j < u->npfds && !keep; j++)
			keep = u->pfds[j].fd == u->reg[i].fd && user_wanted(u, &u->pfds[j]);
		if (keep)
			u->reg[n++] = u->reg[i];
		else
			event_loop_remove_fd(u->loop, u->reg[i].fd);
	}
	u->nreg = n;
	for (unsigned j = 0; j < u->npfds; j++) {
		int fd = u->pfds[j].fd;
		bool seen = false;
		for (unsigned k = 0; k < j && !seen; k++)
			seen = u->pfds[k].fd == fd;
		if (seen)
			continue;
		/* Several entries for one fd: wait for what any of them wants. */
		uint32_t ev = 0;
		for (unsigned k = j; k < u->npfds; k++)
			if (u->pfds[k].fd == fd)
				ev |= user_wanted(u, &u->pfds[k]);
		if (!ev)
			continue;
		struct user_fdreg *r = NULL;
		for (unsigned i = 0; i < u->nreg && !r; i++)
			if (u->reg[i].fd == fd)
				r = &u->reg[i];
		if (r) {
			if (event_loop_modify_fd(u->loop, fd, ev) == 0) {
				r->events = ev;
				continue;
			}
			event_loop_remove_fd(u->loop, fd);
			if (event_loop_add_fd(u->loop, fd, ev, user_on_fd, u) == 0)
				r->events = ev;
			else
				*r = u->reg[--u->nreg];
			continue;
		}
		if (u->nreg == u->reg_cap) {
			unsigned cap = u->reg_cap ? 2 * u->reg_cap : 16;
			struct user_fdreg *p = realloc(u->reg, cap * sizeof(*p));
			if (!p)
				continue; /* the poll timer still steps */
			u->reg = p;
			u->reg_cap = cap;
		}
		if (event_loop_add_fd(u->loop, fd, ev, user_on_fd, u) == 0)
			u->reg[u->nreg++] = (struct user_fdreg){ .fd = fd, .events = ev };
	}
}

/* Hands kept frames to the guest while it takes them. */
static void user_rx_resume(struct user_net *u)
{
	const struct net_client *c = u->nb->client;
	struct user_frame *f;

	while ((f = u->rxq.head)) {
		if (c->receive(c->opaque, f->data, f->len) == -EAGAIN)
			return;
		free(user_frames_pop(&u->rxq));
	}
	u->rx_blocked = false;
}

/* One step: the guest's frames into slirp, slirp's sockets served, the next wait set up. */
static void user_work(struct net_backend *nb)
{
	struct user_net *u = nb->priv;
	struct user_frame *f;

	if (net_backend_take_rx_ready(nb) && u->rx_blocked)
		user_rx_resume(u);
	while ((f = user_frames_pop(&u->txq))) {
		slirp_input(u->slirp, f->data, (int)f->len);
		free(f);
	}
	if (u->tx_full) {
		u->tx_full = false;
		if (nb->client->tx_ready)
			nb->client->tx_ready(nb->client->opaque);
	}

	int ready = 0;
	if (u->npfds) {
		for (unsigned i = 0; i < u->npfds; i++) {
			if (u->rx_blocked)
				u->pfds[i].events &= (short)~(POLLIN | POLLPRI);
			u->pfds[i].revents = 0;
		}
		ready = poll(u->pfds, u->npfds, 0);
	}
	slirp_pollfds_poll(u->slirp, ready < 0, user_get_revents, u);

	uint32_t timeout = USER_MAX_TIMEOUT_MS;
	u->npfds = 0;
	slirp_pollfds_fill(u->slirp, &timeout, user_add_poll, u);
	if (timeout > USER_MAX_TIMEOUT_MS)
		timeout = USER_MAX_TIMEOUT_MS;
	user_sync_fds(u);
	event_timer_arm(u->poll_timer, host_now_ns() + timeout * 1000000ULL);
}

static int user_send(struct net_backend *nb, const void *frame, size_t len)
{
	struct user_net *u = nb->priv;

	if (u->txq.len >= USER_TXQ_MAX) {
		user_drop(u, "the queue towards slirp is full");
		return -ENOBUFS;
	}
	struct user_frame *f = user_frame_new(frame, len);
	if (!f)
		return -ENOMEM;
	user_frames_push(&u->txq, f);
	net_backend_schedule(nb);
	return 0;
}

static bool user_can_send(struct net_backend *nb)
{
	struct user_net *u = nb->priv;

	if (u->txq.len < USER_TXQ_MAX)
		return true;
	u->tx_full = true;
	return false;
}

static void user_free(struct user_net *u)
{
	for (unsigned i = 0; i < u->nreg; i++)
		event_loop_remove_fd(u->loop, u->reg[i].fd);
	event_timer_destroy(u->poll_timer);
	if (u->slirp)
		slirp_cleanup(u->slirp);
	while (u->timers)
		user_timer_free(u->timers, u);
	user_frames_free(&u->txq);
	user_frames_free(&u->rxq);
	free(u->pfds);
	free(u->reg);
	free(u);
}

static struct in_addr user_in_addr(uint32_t host_order)
{
	return (struct in_addr){ .s_addr = htonl(host_order) };
}

static int user_open(struct net_backend *nb, const struct vm_net_config *cfg,
		     struct event_loop *loop)
{
	struct user_net *u = calloc(1, sizeof(*u));
	int err;

	if (!u)
		return -ENOMEM;
	u->nb = nb;
	u->loop = loop;
	err = event_timer_create(loop, user_on_timeout, u, &u->poll_timer);
	if (err) {
		free(u);
		return err;
	}
	SlirpConfig sc = {
		.version = 3,
		.restricted = 0,
		.in_enabled = true,
		.vnetwork = user_in_addr(USER_NETWORK),
		.vnetmask = user_in_addr(USER_NETMASK),
		.vhost = user_in_addr(USER_HOST),
		.in6_enabled = false,
		.vdhcp_start = user_in_addr(USER_GUEST),
		.vnameserver = user_in_addr(USER_DNS),
	};
	u->slirp = slirp_new(&sc, &user_callbacks, u);
	if (!u->slirp) {
		log_error("net user: libslirp could not set up the network");
		user_free(u);
		return -ENOMEM;
	}
	for (int i = 0; i < cfg->nfwd; i++) {
		const struct vm_net_fwd *f = &cfg->fwd[i];
		struct in_addr host = user_in_addr(f->host_addr);
		uint32_t gaddr = f->guest_addr ? f->guest_addr : USER_GUEST;
		struct in_addr guest = user_in_addr(gaddr);
		if ((gaddr & USER_NETMASK) != USER_NETWORK || gaddr == USER_HOST ||
		    gaddr == USER_DNS) {
			log_error("net user: hostfwd '%s': the guest address must be on "
				  "10.0.2.0/24 (the guest is 10.0.2.15)",
				  f->text);
			user_free(u);
			return -EINVAL;
		}
		errno = 0;
		if (slirp_add_hostfwd(u->slirp, f->udp, host, f->host_port, guest, f->guest_port) <
		    0) {
			err = errno ? -errno : -EADDRINUSE;
			char a[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, &host, a, sizeof(a));
			log_error("net user: hostfwd '%s': cannot listen on %s port %u: %s",
				  f->text, a, f->host_port, strerror(-err));
			user_free(u);
			return err;
		}
	}
	nb->priv = u;
	net_backend_schedule(nb); /* the first fill, once the loop runs */
	return 0;
}

static void user_close(struct net_backend *nb)
{
	user_free(nb->priv);
	nb->priv = NULL;
}

const struct net_backend_ops net_user_ops = {
	.name = "user",
	.open = user_open,
	.send = user_send,
	.can_send = user_can_send,
	.work = user_work,
	.close = user_close,
};
