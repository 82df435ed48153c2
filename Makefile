# Maboroshi build: `make` builds everything into build/.
CC ?= cc
BUILD ?= build
OPT ?= -O2
CFLAGS ?= $(OPT) -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Isrc -MMD -MP -pthread $(SAN)
# libnbd: the NBD block backend (src/block/nbd.c).
NBD_CFLAGS := $(shell pkg-config --cflags libnbd 2>/dev/null)
NBD_LIBS := $(shell pkg-config --libs libnbd 2>/dev/null || echo -lnbd)
CFLAGS += $(NBD_CFLAGS)
# GnuTLS: TLS 1.3 on migration connections (src/migration/link.c).
TLS_CFLAGS := $(shell pkg-config --cflags gnutls 2>/dev/null)
TLS_LIBS := $(shell pkg-config --libs gnutls 2>/dev/null || echo -lgnutls)
CFLAGS += $(TLS_CFLAGS)
# jansson: --config FILE (src/core/config_file.c).
JANSSON_CFLAGS := $(shell pkg-config --cflags jansson 2>/dev/null)
JANSSON_LIBS := $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson)
CFLAGS += $(JANSSON_CFLAGS)
# libslirp: user-mode networking (--net user); zstd: compressed migration; libseccomp:
# --sandbox's system call filter (src/core/sandbox.c).
LDLIBS += -lfdt -lslirp -lzstd -lseccomp -lm $(NBD_LIBS) $(TLS_LIBS) $(JANSSON_LIBS) -pthread $(SAN)
# `make sanitize` builds into build/asan with AddressSanitizer and UBSan and runs the unit tests.
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

# src/cli is the command-line client build/mabo, src/daemon the host daemon build/mabod:
# programs of their own, outside the VMM (which never depends on them).
SRCS := $(shell find src -name '*.c' -not -path 'src/cli/*' -not -path 'src/daemon/*' | sort)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
OBJS := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
# The client links only what it uses.
CLI_SRCS := src/cli/mabo.c src/cli/vm.c src/core/json.c
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/obj/%.o)
# mabod: SQLite (the state), jansson (JSON), libmicrohttpd (the REST API's HTTP server). It
# has its own log.c (core/log.h's interface, with the daemon's line format).
DAEMON_SRCS := $(sort $(wildcard src/daemon/*.c))
DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(BUILD)/obj/%.o)
DAEMON_CFLAGS := $(shell pkg-config --cflags sqlite3 jansson libmicrohttpd 2>/dev/null)
DAEMON_LIBS := $(shell pkg-config --libs sqlite3 jansson libmicrohttpd 2>/dev/null || \
	echo -lsqlite3 -ljansson -lmicrohttpd)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

all: $(BUILD)/mabo-vmm $(BUILD)/mabo $(BUILD)/mabod $(UNIT_BINS)

$(BUILD)/mabo-vmm: $(OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/mabo: $(CLI_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $^ -lm $(SAN)

$(BUILD)/mabod: $(DAEMON_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $^ $(DAEMON_LIBS) $(SAN)

# Messages cut to their buffers are meant; paths are bounded by --run-dir's length check.
$(DAEMON_OBJS): CFLAGS += $(DAEMON_CFLAGS) -Wno-format-truncation

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
	$(CC) $(CFLAGS) -o $@ $< $(filter %.o,$^) $(BUILD)/libmabo.a -lcmocka $(LDLIBS)

# mabod's parts that need no daemon around them: the spec, the store, their names and log.
DAEMON_UNIT_OBJS := $(addprefix $(BUILD)/obj/src/daemon/,spec.o store.o state.o dlog.o share.o)
$(BUILD)/tests/test_daemon: tests/unit/test_daemon.c $(DAEMON_UNIT_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DAEMON_CFLAGS) -o $@ $< $(DAEMON_UNIT_OBJS) -lcmocka $(DAEMON_LIBS)

# Helpers shared by unit tests (tests/unit/*.c but test_*.c), each linked into those using it.
UNIT_HELPERS := $(filter-out $(UNIT_SRCS),$(wildcard tests/unit/*.c))
UNIT_HELPER_OBJS := $(UNIT_HELPERS:%.c=$(BUILD)/obj/%.o)
$(addprefix $(BUILD)/tests/test_,blk net virtio_mmio): $(BUILD)/obj/tests/unit/fake_guest.o
$(addprefix $(BUILD)/tests/test_,blk fdt net virt_devices virtio_mmio): \
	$(BUILD)/obj/tests/unit/fake_harts.o
$(addprefix $(BUILD)/tests/test_,csr exec mmu): $(BUILD)/obj/tests/unit/hart_fixture.o

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

sanitize:
	$(MAKE) BUILD=$(BUILD)/asan OPT=-O1 SAN="$(ASAN_FLAGS)" all unit

# libFuzzer targets (tests/fuzz/fuzz_*.c) for the code that reads guest-controlled bytes, built
# with clang into build/fuzz/. `make fuzz-run` runs each for FUZZ_TIME seconds on a corpus
# kept in build/fuzz/corpus-NAME; a crash leaves its input in build/fuzz/.
FUZZ_CC ?= clang
FUZZ_TIME ?= 60
FUZZ_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Werror -Isrc \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
# Each target with the sources it exercises.
FUZZ_virtqueue_SRCS := src/virtio/virtqueue.c src/core/memory.c src/migration/sbuf.c
# virtio-blk with an in-memory backend; the target includes blk.c itself and has its own log.
FUZZ_blk_SRCS := $(filter-out src/virtio/blk.c src/core/log.c,$(LIB_SRCS)) tests/fuzz/quiet_log.c
# The code generator against the interpreter: the input is a guest program.
FUZZ_jit_SRCS := $(LIB_SRCS)
# The saved-state reader, loading into a whole machine, with a quiet log.
FUZZ_stream_SRCS := $(filter-out src/core/log.c,$(LIB_SRCS)) tests/fuzz/quiet_log.c
# The saved state's meaning: records kept well-formed (CRCs recomputed), values changed,
# what loads is run.
FUZZ_state_SRCS := $(filter-out src/core/log.c,$(LIB_SRCS)) tests/fuzz/quiet_log.c
# The JSON parser and writer: the control socket's requests come from any local client.
FUZZ_json_SRCS := src/core/json.c
FUZZ_NAMES := virtqueue blk jit stream state json
FUZZ_BINS := $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)

fuzz: $(FUZZ_BINS)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard src/*/*.h src/*/*/*.h) \
		$(foreach n,$(FUZZ_NAMES),$(FUZZ_$(n)_SRCS))
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_$*_SRCS) $(NBD_CFLAGS) $(TLS_CFLAGS) -lfdt -lslirp -lzstd \
		-lseccomp -lm $(NBD_LIBS) $(TLS_LIBS) $(JANSSON_LIBS) -pthread

fuzz-run: fuzz
	@set -e; for n in $(FUZZ_NAMES); do \
		mkdir -p $(BUILD)/fuzz/corpus-$$n; \
		echo "== fuzz_$$n for $(FUZZ_TIME) s (log: $(BUILD)/fuzz/fuzz_$$n.log)"; \
		if ! $(BUILD)/fuzz/fuzz_$$n -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
			-artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/corpus-$$n \
			>$(BUILD)/fuzz/fuzz_$$n.log 2>&1; then \
			echo "fuzz_$$n FAILED; its log without the progress lines:"; \
			grep -av '^#[0-9]' $(BUILD)/fuzz/fuzz_$$n.log; exit 1; \
		fi; \
		grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' \
			$(BUILD)/fuzz/fuzz_$$n.log || true; \
	done

.PHONY: all unit sanitize fuzz fuzz-run clean
-include $(OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(DAEMON_OBJS:.o=.d) $(UNIT_BINS:=.d) $(UNIT_HELPER_OBJS:.o=.d)
