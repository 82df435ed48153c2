/* virtio-net driven through virtio-mmio registers as a guest driver would, on user-mode
 * networking (libslirp) with the event loop real: configuration (MAC, link status) and
 * features; an ARP request answered by slirp's gateway; a TCP SYN with a partial checksum
 * the device completes (slirp drops bad checksums) reaching a host listener and answered
 * with a SYN-ACK marked checksum-valid; a frame for a guest without receive buffers waiting
 * until it adds some; a transmit buffer without a header making the device need a reset;
 * hostfwd on a port in use refused at creation. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "fake_guest.h"

#define RAM_SIZE (4ULL << 20)
#define QSIZE 64

/* A virtio-net on user-mode networking, with the device config dc. */
static struct vm_device_config dc = { .type = "virtio-net" };

static int create_net(void)
{
	return fg_create(&virtio_net_ops, &dc);
}

#define F_CSUM 0
#define F_GUEST_CSUM 1
#define F_MAC 5
#define F_STATUS 16
#define NET_FEATURES                                                                               \
	(ALL_FEATURES | VIRTIO_FEATURE(F_CSUM) | VIRTIO_FEATURE(F_GUEST_CSUM) |                    \
	 VIRTIO_FEATURE(F_MAC) | VIRTIO_FEATURE(F_STATUS))
#define RXQ 0
#define TXQ 1
#define HDR_SIZE 12
/* Receive buffer k at RXB(k), transmit buffer k at TXB(k), 2 KiB each. */
#define RXB(k) (BUF + 0x800ULL * (k))
#define TXB(k) (BUF + 0x20000ULL + 0x800ULL * (k))

static const uint8_t guest_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static const uint8_t gw_mac[6] = { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 }; /* slirp's */
static uint16_t rx_used, tx_used;

static void user_config(void)
{
	memset(&dc.net, 0, sizeof(dc.net));
	dc.net.mode = VM_NET_USER;
	memcpy(dc.net.mac, guest_mac, 6);
}

static void ready(void)
{
	rx_used = tx_used = 0;
	assert_int_equal(create_net(), 0);
	assert_int_equal(negotiate(NET_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	setup_queue(RXQ, QSIZE);
	setup_queue(TXQ, QSIZE);
	driver_ok();
}

static void rx_post(unsigned k)
{
	set_desc(RXQ, k, RXB(k), 2048, VIRTQ_DESC_F_WRITE, 0);
	avail_add(RXQ, (uint16_t)k);
}

/* Sends frame k with a virtio-net header (flags, csum_start, csum_offset); waits until the
 * device has used it. */
static void tx_send(unsigned k, uint8_t flags, uint16_t start, uint16_t offset,
		    const uint8_t *frame, size_t len)
{
	uint8_t *p = gp(TXB(k));
	memset(p, 0, HDR_SIZE);
	p[0] = flags;
	memcpy(p + 6, &start, 2);
	memcpy(p + 8, &offset, 2);
	memcpy(p + HDR_SIZE, frame, len);
	set_desc(TXQ, k, TXB(k), (uint32_t)(HDR_SIZE + len), 0, 0);
	avail_add(TXQ, (uint16_t)k);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, TXQ);
	assert_true(wait_used(TXQ, ++tx_used, 3000));
}

/* The next received frame (its header in hdr): a pointer into guest RAM, its length. */
static const uint8_t *rx_next(uint8_t hdr[HDR_SIZE], size_t *len)
{
	uint32_t id, used;
	assert_true(wait_used(RXQ, ++rx_used, 5000));
	used_elem(RXQ, (uint16_t)(rx_used - 1), &id, &used);
	assert_true(id < QSIZE);
	assert_true(used >= HDR_SIZE + 14);
	memcpy(hdr, gp(RXB(id)), HDR_SIZE);
	*len = used - HDR_SIZE;
	return gp(RXB(id) + HDR_SIZE);
}

static size_t eth_header(uint8_t *f, const uint8_t dst[6], uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, guest_mac, 6);
	f[12] = (uint8_t)(type >> 8);
	f[13] = (uint8_t)type;
	return 14;
}

/* An ARP request from 10.0.2.15 for 10.0.2.2. */
static size_t arp_request(uint8_t *f)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t body[28] = { 0, 1,	   8,	 0,    6,  4, 0, 1,  0x52, 0x54,
					  0, 0x12, 0x34, 0x56, 10, 0, 2, 15, 0,	   0,
					  0, 0,	   0,	 0,    10, 0, 2, 2 };
	size_t n = eth_header(f, bcast, 0x0806);
	memcpy(f + n, body, sizeof(body));
	return n + sizeof(body) + 18; /* padded to 60 bytes like a NIC's */
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* A TCP SYN from 10.0.2.15:40000 to 10.0.2.2:port, its checksum left partial as Linux
 * does with VIRTIO_NET_F_CSUM (the pseudo-header's sum in the field). */
static size_t tcp_syn(uint8_t *f, uint16_t port)
{
	size_t n = eth_header(f, gw_mac, 0x0800);
	uint8_t *ip = f + n, *tcp = ip + 20;
	memset(ip, 0, 40);
	ip[0] = 0x45;
	put_be16(ip + 2, 40);
	ip[8] = 64;
	ip[9] = 6;
	const uint8_t src[4] = { 10, 0, 2, 15 }, dst[4] = { 10, 0, 2, 2 };
	memcpy(ip + 12, src, 4);
	memcpy(ip + 16, dst, 4);
	put_be16(ip + 10, (uint16_t)~fold(sum16(ip, 20, 0)));
	put_be16(tcp, 40000);
	put_be16(tcp + 2, port);
	put_be16(tcp + 4, 0x1234);
	tcp[12] = 5 << 4;
	tcp[13] = 0x02; /* SYN */
	put_be16(tcp + 14, 65535);
	uint32_t pseudo = sum16(ip + 12, 8, 0) + 6 + 20;
	put_be16(tcp + 16, fold(pseudo));
	return n + 40;
}

static int listener(uint16_t *port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s, 4), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
	*port = ntohs(a.sin_port);
	return s;
}

static void test_config(void **state)
{
	(void)state;
	user_config();
	dc.net.mac[5] = 0x99;
	assert_int_equal(create_net(), 0);
	assert_int_equal(rd(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_NET);
	wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	uint32_t f = rd(VIRTIO_MMIO_DEVICE_FEATURES);
	assert_true(f & (1u << F_MAC));
	assert_true(f & (1u << F_STATUS));
	assert_true(f & (1u << F_CSUM));
	assert_true(f & (1u << F_GUEST_CSUM));
	uint8_t cfgspace[8];
	for (int i = 0; i < 8; i++)
		cfgspace[i] =
			(uint8_t)virtio_mmio_ops.read(fg.mmio, VIRTIO_MMIO_CONFIG + (uint64_t)i, 1);
	const uint8_t want[8] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x99, 1, 0 };
	assert_memory_equal(cfgspace, want, 8); /* the MAC, then status: link up */
	assert_int_equal(rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
}

static void test_arp_and_tcp(void **state)
{
	(void)state;
	uint16_t port;
	int ls = listener(&port);
	user_config();
	ready();
	for (unsigned k = 0; k < 8; k++)
		rx_post(k);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, RXQ);

	uint8_t f[128], hdr[HDR_SIZE];
	size_t len;
	tx_send(0, 0, 0, 0, f, arp_request(f));
	const uint8_t *r = rx_next(hdr, &len);
	assert_int_equal(hdr[0], 2);		     /* DATA_VALID */
	assert_int_equal(hdr[10] | hdr[11] << 8, 1); /* num_buffers */
	assert_memory_equal(r, guest_mac, 6);
	assert_int_equal(r[12] << 8 | r[13], 0x0806);
	assert_int_equal(r[14 + 7], 2); /* a reply */
	const uint8_t gw_ip[4] = { 10, 0, 2, 2 };
	assert_memory_equal(r + 14 + 14, gw_ip, 4);
	for (int i = 0; i < 2000 && !irq_line(); i++)
		usleep(1000);
	assert_true(irq_line());

	/* The device completes the checksum: slirp drops the SYN otherwise. */
	tx_send(1, 1 /* NEEDS_CSUM */, 34, 16, f, tcp_syn(f, port));
	r = rx_next(hdr, &len);
	assert_int_equal(r[12] << 8 | r[13], 0x0800);
	assert_int_equal(r[14 + 9], 6);
	const uint8_t *tcp = r + 14 + (r[14] & 0xf) * 4;
	assert_int_equal(tcp[0] << 8 | tcp[1], port);
	assert_int_equal(tcp[2] << 8 | tcp[3], 40000);
	assert_int_equal(tcp[13] & 0x12, 0x12); /* SYN-ACK */
	/* slirp connected to the host listener on the guest's behalf. */
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(ls, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int cs = accept(ls, NULL, NULL);
	assert_true(cs >= 0);
	close(cs);
	close(ls);
}

/* A guest without receive buffers: the frame waits, and arrives once it adds one. */
static void test_rx_waits_for_buffers(void **state)
{
	(void)state;
	user_config();
	ready();
	uint8_t f[128], hdr[HDR_SIZE];
	size_t len;
	tx_send(0, 0, 0, 0, f, arp_request(f));
	usleep(200 * 1000);
	assert_int_equal(get16(QUSED(RXQ) + 2), 0);
	rx_post(0);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, RXQ);
	const uint8_t *r = rx_next(hdr, &len);
	assert_int_equal(r[12] << 8 | r[13], 0x0806);
	assert_int_equal(r[14 + 7], 2);
}

/* A transmit buffer too short for the virtio-net header breaks the device, not the VMM. */
static void test_malformed(void **state)
{
	(void)state;
	user_config();
	ready();
	set_desc(TXQ, 0, TXB(0), 4, 0, 0);
	avail_add(TXQ, 0);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, TXQ);
	assert_true(wait_status(VIRTIO_STATUS_DEVICE_NEEDS_RESET, 2000));
	/* A frame of a bad length is only dropped. */
	wr(VIRTIO_MMIO_STATUS, 0);
	memset(gp(QDESC(0)), 0, 0x8000);
	fg.avail_shadow[0] = fg.avail_shadow[1] = 0;
	assert_int_equal(negotiate(NET_FEATURES) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	setup_queue(RXQ, QSIZE);
	setup_queue(TXQ, QSIZE);
	driver_ok();
	tx_used = 0;
	uint8_t f[8] = { 0 };
	tx_send(0, 0, 0, 0, f, sizeof(f));
	assert_false(rd(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
}

/* hostfwd on a port another socket listens on: the device is not created. */
static void test_hostfwd_port_in_use(void **state)
{
	(void)state;
	uint16_t port;
	int ls = listener(&port);
	user_config();
	dc.net.nfwd = 1;
	dc.net.fwd[0] = (struct vm_net_fwd){
		.host_addr = INADDR_LOOPBACK, .host_port = port, .guest_port = 80, .text = "test"
	};
	assert_int_not_equal(create_net(), 0);
	assert_null(fg.mmio);
	close(ls);
	/* A free one works. */
	dc.net.fwd[0].host_port = 0;
	uint16_t free_port;
	int s2 = listener(&free_port);
	close(s2);
	dc.net.fwd[0].host_port = free_port;
	assert_int_equal(create_net(), 0);
}

int main(void)
{
	fg.ram_size = RAM_SIZE;
	fg.qsize = QSIZE;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_arp_and_tcp, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_rx_waits_for_buffers, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_malformed, fg_setup, fg_teardown),
		cmocka_unit_test_setup_teardown(test_hostfwd_port_in_use, fg_setup, fg_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
