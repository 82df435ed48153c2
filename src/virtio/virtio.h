/* virtio devices apart from their transport (virtio 1.2).
 *
 * A device type is a const struct virtio_device_ops (its id, features, queues, config space
 * and callbacks), registered by name. A transport (virtio-mmio today, PCI later) embeds a
 * struct virtio_dev, the state common to every device (status, features, queues, the lock,
 * the notification path), decodes its own registers into the virtio_dev_* calls below, and
 * delivers interrupts through its struct virtio_transport_ops. So a device never knows its
 * transport, and a new transport reuses every device unchanged.
 *
 * Threads: transport register accesses come from vCPU threads; a device's work (queue
 * notifications, I/O completions) runs on the VM's event-loop thread, never on a vCPU: a
 * QueueNotify only sets a bit and writes an eventfd. Both hold vdev->lock, which serialises
 * the device's state; device callbacks are called with it held. */
#ifndef MABO_VIRTIO_VIRTIO_H
#define MABO_VIRTIO_VIRTIO_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "virtio/virtqueue.h"

struct vm;
struct vm_device_config;
struct virtio_dev;
struct sbuf;
struct sreader;

/* Device status (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

/* Feature bits (6). */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_FEATURE(bit) (1ULL << (bit))

/* Interrupt causes (the MMIO InterruptStatus / PCI ISR bits). */
#define VIRTIO_INT_USED 0x1   /* used buffer notification */
#define VIRTIO_INT_CONFIG 0x2 /* configuration change notification */

/* Device ids (5). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_INPUT 18

/* Queues per device: the notification bitmap is one 64-bit word. */
#define VIRTIO_MAX_QUEUES 64

/* A device type. Never written at run time. */
struct virtio_device_ops {
	const char *name;     /* the name --rng etc. register it under: "virtio-rng" */
	uint32_t device_id;   /* VIRTIO_ID_* */
	uint64_t features;    /* device-specific features offered; VERSION_1 and the ring
			       * features are added by the core */
	unsigned num_queues;  /* 1 .. VIRTIO_MAX_QUEUES */
	uint16_t queue_max;   /* largest queue size (a power of 2) */
	uint32_t config_size; /* bytes of device configuration space */

	/* Makes the device's state (vdev->priv) for one instance described by cfg; vdev's
	 * queues and lock exist already. 0 or -errno (after logging one line). */
	int (*create)(struct virtio_dev *vdev, const struct vm_device_config *cfg);
	/* Frees vdev->priv; the device gets no more callbacks. */
	void (*destroy)(struct virtio_dev *vdev);
	/* Reads/writes len bytes of configuration at off (off + len <= config_size). NULL:
	 * reads as zeros, writes ignored. */
	void (*config_read)(struct virtio_dev *vdev, uint32_t off, void *buf, uint32_t len);
	void (*config_write)(struct virtio_dev *vdev, uint32_t off, const void *buf, uint32_t len);
	/* May refuse the features the driver accepted when it sets FEATURES_OK (0 or
	 * -errno). NULL: any subset of the offer is fine. */
	int (*features_ok)(struct virtio_dev *vdev, uint64_t features);
	/* Queue q may have new buffers (the driver notified, or the device kicked it). On the
	 * event-loop thread, only while the driver is running the device (DRIVER_OK, not
	 * NEEDS_RESET) and q is ready. */
	void (*queue_notify)(struct virtio_dev *vdev, unsigned q);
	/* The driver reset the device: forget requests in flight (the queues are reset by the
	 * core afterwards). May be NULL. */
	void (*reset)(struct virtio_dev *vdev);

	/* Snapshots and migration; all may be NULL (a device with no state of its own that
	 * finishes its work at once). On the event loop with the lock held, vCPUs paused.
	 * quiesce: stop taking new chains, finish what is in flight, make completed writes
	 * durable; returns how much is still in progress (called again until 0).
	 * unquiesce: take chains again (the migration failed or the snapshot is written).
	 * save/load: the device's own state after quiescing; load returns 0 or -EINVAL. */
	unsigned (*quiesce)(struct virtio_dev *vdev);
	void (*unquiesce)(struct virtio_dev *vdev);
	void (*save)(struct virtio_dev *vdev, struct sbuf *b);
	int (*load)(struct virtio_dev *vdev, struct sreader *r);
	/* A migration's hand-over: takes (take) or gives up what only one VMM may hold (a
	 * disk's lock), so that the destination has it when its guest runs and the source
	 * no longer does. 0 or -errno (after logging one line). May be NULL. */
	int (*claim)(struct virtio_dev *vdev, bool take);
};

/* What a transport provides to the core. */
struct virtio_transport_ops {
	/* Sends the driver a notification (VIRTIO_INT_USED for queue q, or VIRTIO_INT_CONFIG);
	 * vdev->lock is held. */
	void (*interrupt)(void *transport, uint32_t cause, unsigned q);
};

/* The state every device has, embedded in the transport. Fields are the core's: devices use
 * the functions below. */
struct virtio_dev {
	struct vm *vm;
	const struct virtio_device_ops *ops;
	void *priv;    /* the device's own state */
	char name[48]; /* for messages: "virtio-rng at 0x10001000" */

	const struct virtio_transport_ops *transport_ops;
	void *transport;

	pthread_mutex_t lock;
	uint64_t host_features;	    /* offered */
	uint64_t guest_features;    /* accepted by the driver (under lock) */
	uint8_t status;		    /* (under lock) */
	uint32_t config_generation; /* (under lock) */
	struct virtq queues[VIRTIO_MAX_QUEUES];

	int notify_fd;			 /* eventfd: notifications -> event loop */
	_Atomic uint64_t notify_pending; /* queues to run, a bit each */
	bool registered;		 /* notify_fd is on vm->loop */
	bool quiesced;			 /* no queue work until unquiesced (under lock) */
	unsigned failures;		 /* logged so far (a guest can fail it at will) */
};

/* The device type registered under name ("virtio-rng", "virtio-console"), or NULL. */
const struct virtio_device_ops *virtio_device_find(const char *name);

/* ---- For transports ---- */

/* Sets vdev up for a device of type ops described by cfg, named label (for messages),
 * delivering interrupts through tops/transport, with its notifications on vm->loop; then
 * calls ops->create. 0 or -errno (after logging one line). */
int virtio_dev_init(struct virtio_dev *vdev, struct vm *vm, const struct virtio_device_ops *ops,
		    const struct vm_device_config *cfg, const char *label,
		    const struct virtio_transport_ops *tops, void *transport)
	__attribute__((warn_unused_result));

/* Takes the device off the event loop (waiting for its work to finish), destroys the
 * device, frees what init made. */
void virtio_dev_uninit(struct virtio_dev *vdev);

/* The rest are called with vdev->lock held, except virtio_dev_notify. */

/* 32 bits of the device's features: sel 0 is bits 0-31, sel 1 bits 32-63, others 0. */
uint32_t virtio_dev_features(const struct virtio_dev *vdev, uint32_t sel);

/* The driver writes 32 bits of the features it accepts (ignored once FEATURES_OK is set). */
void virtio_dev_set_guest_features(struct virtio_dev *vdev, uint32_t sel, uint32_t val);

/* The driver writes the status register. 0 resets the device (the transport resets its own
 * registers too). Setting FEATURES_OK succeeds only if the accepted features are a subset
 * of the offer that includes VIRTIO_F_VERSION_1 (and the device agrees); otherwise the bit
 * stays clear, which the driver reads back as failure. DEVICE_NEEDS_RESET is sticky. */
void virtio_dev_set_status(struct virtio_dev *vdev, uint8_t status);

/* Device reset (status 0): the device forgets everything, the queues too. */
void virtio_dev_reset(struct virtio_dev *vdev);

/* The driver sets QueueReady of queue q: enabling checks the rings (a bad queue makes the
 * device need a reset and stay not ready); disabling stops the queue. */
void virtio_dev_set_queue_ready(struct virtio_dev *vdev, unsigned q, bool ready);

/* The driver notifies queue q (any thread, lock not needed): schedules queue_notify on the
 * event loop. Out-of-range q is ignored. */
void virtio_dev_notify(struct virtio_dev *vdev, unsigned q);

/* Configuration space accesses; out of range reads give zeros, writes are ignored. */
void virtio_dev_config_read(struct virtio_dev *vdev, uint32_t off, void *buf, uint32_t len);
void virtio_dev_config_write(struct virtio_dev *vdev, uint32_t off, const void *buf, uint32_t len);

/* Snapshots and migration (vCPUs paused). quiesce: on the event loop, the number of
 * requests the device still has in progress (0: quiet and durable); call until 0.
 * unquiesce: on the event loop, the device takes chains again and looks at every queue.
 * save/load: the common state (features, status, queues) and the device's own. Load is
 * for a device just created on an idle VM, before the vCPUs run: 0 or -EINVAL (r->err). */
unsigned virtio_dev_quiesce(struct virtio_dev *vdev);
/* ops->claim, if the device has one (0 otherwise). */
int virtio_dev_claim(struct virtio_dev *vdev, bool take);
void virtio_dev_unquiesce(struct virtio_dev *vdev);
void virtio_dev_save(struct virtio_dev *vdev, struct sbuf *b);
int virtio_dev_load(struct virtio_dev *vdev, struct sreader *r) __attribute__((warn_unused_result));

/* ---- For devices ---- */

/* Queue q (q < ops->num_queues). */
static inline struct virtq *virtio_dev_queue(struct virtio_dev *vdev, unsigned q)
{
	return &vdev->queues[q];
}

/* True when the driver accepted feature bit. */
static inline bool virtio_dev_has_feature(const struct virtio_dev *vdev, unsigned bit)
{
	return vdev->guest_features & VIRTIO_FEATURE(bit);
}

/* True while the driver runs the device: DRIVER_OK set, NEEDS_RESET not. */
static inline bool virtio_dev_running(const struct virtio_dev *vdev)
{
	return (vdev->status & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_DEVICE_NEEDS_RESET)) ==
	       VIRTIO_STATUS_DRIVER_OK;
}

/* Asks for queue_notify(q) on the event loop, as a driver notification would: from any
 * thread (e.g. a backend thread with new data), lock not needed. */
static inline void virtio_dev_kick(struct virtio_dev *vdev, unsigned q)
{
	virtio_dev_notify(vdev, q);
}

/* After pushing used buffers to q: interrupts the driver if it wants it now. */
void virtio_dev_signal_used(struct virtio_dev *vdev, unsigned q);

/* The device cannot go on (a malformed request, a broken queue): sets DEVICE_NEEDS_RESET,
 * tells the driver (configuration change notification) and logs why, once. */
void virtio_dev_fail(struct virtio_dev *vdev, const char *why);

/* The device changed its configuration space: bumps the generation, tells the driver. */
void virtio_dev_config_changed(struct virtio_dev *vdev);

/* ---- Device types ---- */
extern const struct virtio_device_ops virtio_rng_ops;	  /* virtio/rng.c */
extern const struct virtio_device_ops virtio_console_ops; /* virtio/console.c */
extern const struct virtio_device_ops virtio_blk_ops;	  /* virtio/blk.c */
extern const struct virtio_device_ops virtio_net_ops;	  /* virtio/net.c */
extern const struct virtio_device_ops virtio_input_ops;	  /* virtio/input.c */

#endif
