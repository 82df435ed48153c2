# Maboroshi build: `make` builds everything into build/.
CC ?= cc
BUILD ?= build
OPT ?= -O2
CFLAGS ?= $(OPT) -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Isrc -MMD -MP -pthread $(SAN)
LDLIBS += -lfdt -lm -pthread $(SAN)
# `make sanitize` builds into build/asan with AddressSanitizer and UBSan and runs the unit tests.
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

SRCS := $(shell find src -name '*.c' | sort)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
OBJS := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

all: $(BUILD)/mabo-vmm $(UNIT_BINS)

$(BUILD)/mabo-vmm: $(OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libmabo.a: $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

# The FPU relies on the host's floating-point environment (rounding mode, flags).
$(BUILD)/obj/src/cpu/riscv/fpu.o: CFLAGS += -frounding-math -fno-fast-math

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libmabo.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libmabo.a -lcmocka $(LDLIBS)

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

sanitize:
	$(MAKE) BUILD=$(BUILD)/asan OPT=-O1 SAN="$(ASAN_FLAGS)" all unit

clean:
	rm -rf $(BUILD)

.PHONY: all unit sanitize clean
-include $(OBJS:.o=.d)
