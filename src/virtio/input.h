/* The virtio-input power button (virtio/input.c). */
#ifndef MABO_VIRTIO_INPUT_H
#define MABO_VIRTIO_INPUT_H

#include <stdint.h>

struct virtio_dev;

/* Linux's KEY_POWER (include/uapi/linux/input-event-codes.h). */
#define VIRTIO_INPUT_KEY_POWER 116
/* Events waiting for the driver's buffers at most (a press and a release are 4). */
#define VIRTIO_INPUT_MAX_PENDING 16

/* Presses and releases key code on the virtio-input device vdev (any thread). 0, -ENODEV
 * when no driver runs the device (the guest would not see it), -EBUSY when the driver has
 * taken none of the last presses yet. */
int virtio_input_press(struct virtio_dev *vdev, uint16_t code);

#endif
