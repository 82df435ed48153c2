/* A VM with RAM and one real hart, for tests that drive the hart directly. */
#ifndef HART_FIXTURE_H
#define HART_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "core/vm.h"

/* A test's fixture struct of size bytes, its first member a struct vm, zeroed; the vm given
 * ram_size bytes of zeroed RAM at RAM_BASE, an HTIF at tohost (none for 0) and hart id as its
 * only hart. */
void *hart_fixture_new(size_t size, uint64_t ram_size, int id, uint64_t tohost);
/* cmocka teardown: frees *state, made by hart_fixture_new. */
int hart_fixture_teardown(void **state);

#endif
