/* HTIF tohost: how bare-metal test programs report a result or print a character. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/vm.h"
#include "machine/riscv-virt/htif.h"

struct htif *htif_create(struct vm *vm, uint64_t tohost)
{
	struct htif *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->vm = vm;
	h->tohost = tohost;
	h->fromhost = tohost + 0x40;
	return h;
}

void htif_destroy(struct htif *h)
{
	free(h);
}

void htif_after_store(struct htif *h, uint64_t pa, unsigned size)
{
	(void)pa;
	(void)size;
	uint64_t *p = vm_ram_ptr(h->vm, h->tohost, 8);
	if (!p)
		return;
	uint64_t v;
	memcpy(&v, p, 8);
	if (!v)
		return;
	unsigned dev = v >> 56, cmd = (v >> 48) & 0xff;
	if (dev == 0 && (v & 1)) {
		/* Exit: 1 is a pass, (n << 1) | 1 a failure in test n. */
		uint64_t code = (v << 16) >> 17;
		if (code == 0)
			vm_request_exit(h->vm, VM_EXIT_PASS, 0);
		else
			vm_request_exit(h->vm, VM_EXIT_FAIL, v); /* the raw value: main decodes */
	} else if (dev == 1 && cmd == 1) {
		char c = (char)(v & 0xff);
		if (write(STDOUT_FILENO, &c, 1) < 0) {
			/* Nothing useful to do: the console is gone. */
		}
		uint64_t zero = 0, ack = (1ULL << 56) | (1ULL << 48);
		memcpy(p, &zero, 8);
		uint64_t *f = vm_ram_ptr(h->vm, h->fromhost, 8);
		if (f)
			memcpy(f, &ack, 8);
	} else {
		/* A request we do not serve (syscall proxying): report it as a failure. */
		vm_request_exit(h->vm, VM_EXIT_FAIL, v);
	}
}
