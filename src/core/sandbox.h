/* --sandbox: the VMM confined to the system calls it needs (seccomp) and, run as root with
 * --sandbox-user, to a mount tree of its own files and an unprivileged user. */
#ifndef MABO_CORE_SANDBOX_H
#define MABO_CORE_SANDBOX_H

#include "core/config.h"

/* Confines the calling process; call it while it has a single thread (every thread made
 * later inherits the filter). In this order: with cfg->sandbox_user, a private mount tree
 * holding only the files cfg names and the user's identity without capabilities; then
 * PR_SET_NO_NEW_PRIVS and a seccomp allow-list whose default action kills the process
 * with SIGSYS. 0, or -errno after logging one line.
 *
 * Test hook: the environment variable MABO_SANDBOX_SELFTEST=execve makes the process call
 * execve once the filter is loaded, which the filter must answer by killing it (SIGSYS). */
int sandbox_enter(const struct vm_config *cfg) __attribute__((warn_unused_result));

#endif
