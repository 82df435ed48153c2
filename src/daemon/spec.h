/* A VM's specification: the JSON the REST API takes (docs/mabod.md), checked before anything
 * is stored, and turned into mabo-vmm's command line. */
#ifndef MABO_DAEMON_SPEC_H
#define MABO_DAEMON_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A VM name: 1 to 63 of [A-Za-z0-9_-] (it names files and sockets under the run dir). */
#define SPEC_NAME_MAX 63
/* Longest error message spec functions write. */
#define SPEC_ERR_MAX 512

/* The size syntax of mabo-vmm's --memory: N[K|M|G|T]. Returns 0 or -EINVAL / -ERANGE. */
int spec_parse_size(const char *s, uint64_t *out);

/* Whether name is a valid VM name. */
bool spec_name_valid(const char *name);

/* Checks a spec object: known members of the right types and sizes, files that exist.
 * Returns a new normalised copy (memory in bytes, defaults filled in), or NULL with a
 * one-line message naming the member in err. */
json_t *spec_check(const json_t *spec, char *err, size_t errlen);

/* mabo-vmm's arguments for a checked spec, NULL-terminated, argv[0] = vmm; api_socket is
 * the control socket's path. Free with spec_argv_free. Returns NULL when out of memory. */
char **spec_argv(const json_t *spec, const char *vmm, const char *api_socket);
void spec_argv_free(char **argv);
/* argv with two more arguments at its end (argv is freed); NULL when out of memory. */
char **spec_argv_add(char **argv, const char *a, const char *b);

#endif
