/* The block backend registry and the checks common to every backend (see block.h). */
#include "block/block.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* The backend types, by URI scheme. */
static const struct block_backend_ops *const block_backend_types[] = {
	&block_file_ops,
	&block_nbd_ops,
	&block_nbd_unix_ops,
};

/* The backend for uri and where its own part starts. A bare path (no "scheme:" before the
 * first '/') is a file; NULL for "scheme://..." with an unknown scheme. */
static const struct block_backend_ops *block_backend_find(const char *uri, const char **rest)
{
	const char *colon = strchr(uri, ':');
	const char *slash = strchr(uri, '/');

	if (colon && colon != uri && (!slash || colon < slash)) {
		size_t n = (size_t)(colon - uri);
		for (size_t i = 0; i < sizeof(block_backend_types) / sizeof(block_backend_types[0]);
		     i++) {
			const struct block_backend_ops *ops = block_backend_types[i];
			if (strlen(ops->scheme) == n && strncmp(ops->scheme, uri, n) == 0) {
				*rest = ops->whole_uri ? uri : colon + 1;
				return ops;
			}
		}
	}
	*rest = uri;
	if (colon && colon != uri && (!slash || colon < slash) && strncmp(colon, "://", 3) == 0)
		return NULL;
	return &block_file_ops;
}

int block_backend_open(const char *uri, bool readonly, struct event_loop *loop,
		       struct block_backend **out)
{
	const struct block_options opts = {
		.readonly = readonly,
		.reconnect_timeout = BLOCK_RECONNECT_TIMEOUT_DEFAULT,
	};

	return block_backend_open_opts(uri, &opts, loop, out);
}

int block_backend_open_opts(const char *uri, const struct block_options *opts,
			    struct event_loop *loop, struct block_backend **out)
{
	const char *rest;
	const struct block_backend_ops *ops = block_backend_find(uri, &rest);
	struct block_backend *bb;

	if (!ops) {
		log_error("disk '%s': unknown URI scheme '%.*s' (supported: file, nbd, nbd+unix)",
			  uri, (int)(strchr(uri, ':') - uri), uri);
		return -EINVAL;
	}
	bb = calloc(1, sizeof(*bb));
	if (!bb)
		return -ENOMEM;
	bb->ops = ops;
	int err = ops->open(bb, rest, opts, loop);
	if (err) {
		free(bb);
		return err;
	}
	if (opts->readonly)
		bb->readonly = true;
	*out = bb;
	return 0;
}

int block_backend_submit(struct block_backend *bb, struct block_request *req)
{
	switch (req->op) {
	case BLOCK_OP_WRITE:
	case BLOCK_OP_DISCARD:
	case BLOCK_OP_WRITE_ZEROES:
		if (bb->readonly)
			return -EROFS;
		/* fallthrough */
	case BLOCK_OP_READ:
		if (req->offset > bb->size || req->len > bb->size - req->offset)
			return -EINVAL;
		if ((req->op == BLOCK_OP_READ || req->op == BLOCK_OP_WRITE) && req->len &&
		    !req->buf)
			return -EINVAL;
		break;
	case BLOCK_OP_FLUSH: break;
	default: return -EINVAL;
	}
	return bb->ops->submit(bb, req);
}

int block_backend_lock(struct block_backend *bb, bool take)
{
	return bb->ops->lock ? bb->ops->lock(bb, take) : 0;
}

void block_backend_close(struct block_backend *bb)
{
	if (!bb)
		return;
	bb->ops->close(bb);
	free(bb);
}
