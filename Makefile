# Makefile — builds bin/d11 and the tests. GNU make; C11 (gnu11), warnings are errors.
#
#   make             build bin/d11
#   make test        build and run every test (unit + integration); the CI gate
#   make test-full   the same under ASan + UBSan (+ LeakSanitizer), then the threaded parts
#                    under ThreadSanitizer (make test-tsan)
#   make sim         the deterministic simulator, SEEDS=N seeds (make sim-san: under ASan)
#   make fuzz        build the libFuzzer drivers (clang) and run each for FUZZ_SECONDS (60)
#   make deps        install missing Debian packages (scripts/deps.sh)
#   make run         deps + build + `bin/d11 up` on embedded defaults

SHELL    := /bin/bash
CC       ?= cc
SAN      ?=
OPT      ?= -O2 -g
CFLAGS   += -std=gnu11 $(OPT) -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers \
            -D_GNU_SOURCE -MMD -MP $(SAN)
LDFLAGS  += $(SAN)
LDLIBS   += -lsqlite3 -lhttp_parser -lcrypto -lpthread -lm
LDLIBS   += -lsystemd
LDLIBS   += -lpq
CFLAGS   += -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
LDLIBS   += -lnats

BUILD    ?= build
BIN      ?= bin/d11
$(BUILD)/src/core/promtext.o: CFLAGS += -DD11_GIT_REV=\"$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)\"
SRCS     := $(shell find src -name '*.c' -not -path 'src/sim/*' | sort)
OBJS     := $(SRCS:%.c=$(BUILD)/%.o)
LIBOBJS  := $(filter-out $(BUILD)/src/main.o,$(OBJS))
SIM_SRCS := $(sort $(wildcard src/sim/*.c))
SIM_OBJS := $(SIM_SRCS:%.c=$(BUILD)/%.o)
# Unit tests mirror src/ (tests/unit/<part>/test_*.c); each links libd11.a (every object
# but main.o), so a test may #include a .c to reach its statics without symbol clashes
# only for what it includes.
TEST_SRCS := $(shell find tests/unit -name 'test_*.c' | sort)
TEST_BINS := $(addprefix $(BUILD)/tests/,$(basename $(notdir $(TEST_SRCS))))
LIB      := $(BUILD)/libd11.a
vpath test_%.c $(sort $(dir $(TEST_SRCS)))

.PHONY: all test test-bins test-full test-tsan fuzz fuzz-objs deps run clean sim sim-san
all: $(BIN)

$(BIN): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# -Wconversion (incl. sign conversion in C) where it earns its keep: the state machines,
# the allotment and ledger math, the storage seam, the codecs and the core. Every narrowing
# there is an explicit, checked cast.
CONV_DIRS := cell center store rpc core sim
$(foreach d,$(CONV_DIRS),$(eval $(BUILD)/src/$(d)/%.o: CFLAGS += -Wconversion))

$(LIB): $(LIBOBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/tests/test_%: test_%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Itests/unit -I. -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

# The deterministic simulator (src/sim): build/sim for people, and the same program as
# build/tests/test_sim so that `make test` / `make test-full` run its default budget.
$(BUILD)/sim $(BUILD)/tests/test_sim: $(SIM_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(SIM_OBJS) $(LIB) $(LDLIBS)

test-bins: $(TEST_BINS) $(BUILD)/tests/test_sim

test: $(BIN) $(TEST_BINS) $(BUILD)/tests/test_sim
	@bash tests/run.sh

# The sanitizer build lives entirely in build-san/ (its own objects, tests and binary) so it
# never replaces the bin/d11 that other work may be running.
test-full:
	$(MAKE) BUILD=build-san BIN=build-san/d11 OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" build-san/d11 test-bins
	@set -o pipefail; mkdir -p build-tsan; \
	  D11_BIN=$(CURDIR)/build-san/d11 D11_TEST_BUILD=build-san bash tests/run.sh 2>&1 | tee build-san/run.log; rc=$$?; \
	  $(MAKE) --no-print-directory test-tsan 2>&1 | tee build-tsan/run.log || rc=1; \
	  bash tests/sum.sh build-san/run.log build-tsan/run.log; exit $$rc

# ThreadSanitizer over the threaded parts: the storage thread, the event loop's
# cross-thread wake, and the real binary (gateway threads + cell storage threads) under
# a few integration tests. Its own build dir; the summary line is tests/run.sh's.
TSAN_UNIT := test_store_thread test_loop test_link
test-tsan:
	$(MAKE) BUILD=build-tsan BIN=build-tsan/d11 OPT="-O1 -g" SAN="-fsanitize=thread" \
	    build-tsan/d11 $(addprefix build-tsan/tests/,$(TSAN_UNIT))
	@rm -f build-tsan/tsan-report.*
	@TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 log_path=$(CURDIR)/build-tsan/tsan-report" \
	    D11_BIN=$(CURDIR)/build-tsan/d11 D11_TEST_BUILD=build-tsan D11_TEST_TIMEOUT_SCALE=3 \
	    bash tests/run.sh --tsan test_orders.py test_hot_sku.py; rc=$$?; \
	  if ls build-tsan/tsan-report.* >/dev/null 2>&1; then \
	    echo "ThreadSanitizer reports (a supervised child may have been restarted silently):"; \
	    head -40 build-tsan/tsan-report.*; echo "0 passed, 1 failed"; exit 1; fi; exit $$rc

# `make sim SEEDS=N [STEPS=K] [FIRST=S]`: N seeds of the simulator (release build);
# `make sim-san` the same under ASan + UBSan (build-san/). A failing seed prints itself.
SEEDS ?= 1000
STEPS ?= 2000
FIRST ?= 1
sim: $(BUILD)/sim
	$(BUILD)/sim --regressions tests/sim/regressions.txt --seeds $(SEEDS) --first $(FIRST) --steps $(STEPS)

sim-san:
	$(MAKE) BUILD=build-san BIN=build-san/d11 OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" build-san/sim
	build-san/sim --regressions tests/sim/regressions.txt --seeds $(SEEDS) --first $(FIRST) --steps $(STEPS)

# libFuzzer drivers: objects built by clang with coverage into build-fuzz/, one binary per
# fuzz/fuzz_*.c, each run for FUZZ_SECONDS on a scratch corpus seeded from fuzz/corpus/NAME
# (new inputs stay in build-fuzz/; copy the interesting ones into fuzz/corpus by hand).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang OPT="-O1 -g" SAN="-fsanitize=fuzzer-no-link,address,undefined" fuzz-objs
	@set -e; for t in $(FUZZ_TARGETS); do \
	  clang -O1 -g -D_GNU_SOURCE -Isrc -fsanitize=fuzzer,address,undefined -o build-fuzz/$$t fuzz/$$t.c \
	    $(filter-out build-fuzz/src/main.o,$(SRCS:%.c=build-fuzz/%.o)) $(LDLIBS); \
	  mkdir -p build-fuzz/corpus/$$t; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  build-fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/$$t fuzz/corpus/$${t#fuzz_} 2>&1 | grep -E "stat::number_of_executed_units|ERROR|SUMMARY" ; \
	done

fuzz-objs: $(LIBOBJS)

deps:
	@bash scripts/deps.sh

# ARGS: flags for d11 up, e.g. make run ARGS="--listen 127.0.0.1:9000 --cells 4"
ARGS ?=
run: deps bin/d11
	bin/d11 up $(ARGS)

clean:
	rm -rf $(BUILD) build-san build-tsan build-fuzz bin

-include $(OBJS:.o=.d)
-include $(SIM_OBJS:.o=.d)
-include $(TEST_BINS:=.d)

# The integration suite on the PostgreSQL backend (issue 10, docs/postgresql.md): ONE private
# PostgreSQL 15 for the run (tests/integration/pgserver.py: initdb in a temp dir, own port,
# stopped by PID), a fresh database per platform (harness.py, D11_TEST_STORE=postgresql).
# API walk, hot SKU, kill -9 crash loop, cell kill, faults, restart, crash. .ci/run runs it
# as its own step; the last line is tests/run.sh's `N passed, N failed`. Bounded (< 6 min on
# the 2-core box): the crash loop runs 10 cycles in 2 phases here (20 in `make test`).
PG_TESTS := test_orders.py test_hot_sku.py test_crashloop.py test_cell_down.py test_faults.py \
            test_restart.py test_crash.py
.PHONY: test-pg
test-pg: $(BIN)
	@D11_CRASH_CYCLES=10 D11_CRASH_PHASE_CYCLES=5 python3 tests/integration/pgserver.py bash tests/run.sh $(PG_TESTS)
