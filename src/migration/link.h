/* The migration link's security: TLS 1.3 (GnuTLS) over a migration connection.
 *
 * Both VMMs authenticate each other, with a pre-shared key (--migration-key FILE, at least
 * 32 bytes; ECDHE-PSK, so a captured key does not open past captures) or with certificates
 * (--migration-tls DIR: ca.crt, cert.pem, key.pem; each side presents its certificate and
 * verifies the peer's against ca.crt). Every connection runs a fresh handshake, so that a
 * recorded stream replayed to a destination fails at its first byte.
 *
 * A secured connection is handed to the migration code as a plain descriptor (one end of a
 * socket pair); a relay on two threads moves its bytes through the TLS session (one sends,
 * one receives: GnuTLS allows that on one session). So every read, write, shutdown and
 * timeout of the migration code goes through TLS without knowing it. */
#ifndef MABO_MIGRATION_LINK_H
#define MABO_MIGRATION_LINK_H

#include <stdbool.h>
#include <stddef.h>

struct mig_link;

#define MIG_LINK_MIN_KEY 32		/* bytes of a pre-shared key */
#define MIG_LINK_HANDSHAKE_TIMEOUT_S 10 /* a peer that stays silent is dropped after that */

/* Loads the credentials: key_file (a pre-shared key) or tls_dir (certificates), not both.
 * *out is NULL when neither is given (no TLS). 0, or -errno with a one-line reason in why. */
int mig_link_create(const char *key_file, const char *tls_dir, struct mig_link **out, char *why,
		    size_t n) __attribute__((warn_unused_result));
/* Drops the caller's reference (relays still running keep theirs). NULL is fine. */
void mig_link_unref(struct mig_link *l);
struct mig_link *mig_link_ref(struct mig_link *l);

/* Runs the handshake on the connected socket fd (server: the destination's side), within
 * MIG_LINK_HANDSHAKE_TIMEOUT_S, and returns a descriptor that carries the plaintext: its
 * reads, writes and shutdowns go through the session. fd then belongs to the relay. With
 * l NULL, returns fd as it is. On failure closes fd and returns -errno with why. */
int mig_link_secure(struct mig_link *l, int fd, bool server, char *why, size_t n)
	__attribute__((warn_unused_result));

#endif
