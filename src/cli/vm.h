/* mabo's daemon commands (vm ..., host, events): the client of mabod's REST API. */
#ifndef MABO_CLI_VM_H
#define MABO_CLI_VM_H

#include <stdbool.h>

/* Whether argv is a daemon command (after an optional --connect). */
bool mabo_daemon_command(int argc, char **argv);
/* Runs it; returns the exit status (0 done, 1 failed, 2 bad usage). */
int mabo_daemon_main(int argc, char **argv);

#endif
