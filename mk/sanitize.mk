# make sanitize: the C tests and the Lua specs under AddressSanitizer +
# UndefinedBehaviorSanitizer, then under valgrind memcheck.  Included by the
# Makefile (-include mk/*.mk).  Fails on any sanitizer or valgrind report.
#
#   (a) sanitize-c         tests/c/test_*.c built with ASan+UBSan into
#                          build/asan/ctest/ and run, leak detection on
#   (b) sanitize-lua       beeos.core built with ASan+UBSan into
#                          build/asan/lua5.4/beeos/core.so; busted runs
#                          SANITIZE_SPECS with it, the ASan runtime preloaded
#                          into the (uninstrumented) lua5.4, leak detection
#                          on (SAN_LUA_LEAKS=0 to turn it off)
#   (c) sanitize-valgrind  memcheck over the normal C test binaries and over
#                          lua5.4 running VALGRIND_SPECS through busted
#
#   make sanitize SANITIZE_SPECS='spec/sse_spec.lua spec/other_spec.lua'
#   make sanitize SAN_CC=gcc

# ASan+UBSan run every spec that drives the C core; valgrind, 20-50 times
# slower, runs the parser specs and the stream specs (the engine's busiest
# paths), whose timing bounds are loose enough for it.
SANITIZE_SPECS ?= $(filter-out spec/mock_spec.lua,$(wildcard spec/*_spec.lua))
VALGRIND_SPECS ?= spec/sse_spec.lua spec/stream_spec.lua
SAN_CC ?= clang
SAN_OPT ?= -O1 -g
SAN_FLAGS ?= -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_DIR = $(BUILD)/asan
SAN_CTESTS = $(patsubst tests/c/%.c,$(SAN_DIR)/ctest/%,$(wildcard tests/c/test_*.c))
SAN_CORE = $(SAN_DIR)/lua$(LUA_VERSION)/beeos/core.so
BUSTED ?= busted

# The shared ASan (+UBSan) runtime: lua is not instrumented, so it must be
# preloaded for the instrumented module.  Expanded only when used.
ifneq ($(findstring clang,$(SAN_CC)),)
SAN_SO_FLAGS = -shared-libsan
SAN_PRELOAD = $(shell $(SAN_CC) -print-file-name=libclang_rt.asan-$(shell uname -m).so)
else
SAN_SO_FLAGS =
SAN_PRELOAD = $(shell $(SAN_CC) -print-file-name=libasan.so) $(shell $(SAN_CC) -print-file-name=libubsan.so)
endif

SAN_UBSAN_ENV = UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Leaks are errors in the C tests, and under lua too: busted ends with
# os.exit(code, true), which closes the Lua state, and lua5.4 itself leaks
# nothing.  SAN_LUA_LEAKS=0 turns that off should a spec's host process
# (not the module) leak.
SAN_LUA_LEAKS ?= 1
SAN_C_ENV = ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 $(SAN_UBSAN_ENV)
# The specs start shell pipelines (io.popen), which inherit the preloaded
# runtime; the shell's own leaks at exit are not ours.
SAN_LUA_ENV = ASAN_OPTIONS=detect_leaks=$(SAN_LUA_LEAKS):halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/mk/lsan-host.supp $(SAN_UBSAN_ENV) BEEOS_UNDER_ASAN=1

VALGRIND ?= valgrind
VALGRIND_FLAGS ?= -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
	--show-leak-kinds=definite

.PHONY: sanitize-c sanitize-lua sanitize-valgrind

sanitize: deps-sanitize
	@$(MAKE) --no-print-directory all # specs start plain lua5.4 processes too
	@$(MAKE) --no-print-directory sanitize-c
	@$(MAKE) --no-print-directory sanitize-lua
	@$(MAKE) --no-print-directory sanitize-valgrind
	@echo "sanitize: ASan+UBSan and valgrind found nothing"

$(SAN_DIR)/ctest/%: tests/c/%.c $(PURE_SRC) $(CORE_HDR) $(wildcard tests/c/*.h) mk/sanitize.mk
	@mkdir -p $(@D)
	$(SAN_CC) $(CFLAGS_BASE) $(SAN_OPT) $(SAN_FLAGS) -Isrc $(CURL_CFLAGS) -o $@ $< \
		$(PURE_SRC) $(CURL_LIBS) $(CTEST_LIBS)

$(SAN_CORE): $(CORE_SRC) $(CORE_HDR) mk/sanitize.mk
	@mkdir -p $(@D)
	$(SAN_CC) $(CFLAGS_BASE) $(SAN_OPT) $(SAN_FLAGS) $(SAN_SO_FLAGS) -I$(LUA_INCDIR) \
		$(CURL_CFLAGS) $(LDFLAGS_SO) -o $@ $(CORE_SRC) $(CURL_LIBS)

sanitize-c: $(SAN_CTESTS)
	@set -e; for t in $(SAN_CTESTS); do \
		echo "== ASan+UBSan: $$t"; \
		$(SAN_C_ENV) $$t > $$t.log 2>&1 || { cat $$t.log; echo "sanitize: $$t failed"; exit 1; }; \
		tail -n 1 $$t.log; \
	done

# busted runs in this lua itself (--ignore-lua: no re-exec through a shell),
# with the instrumented module first on cpath.
sanitize-lua: $(SAN_CORE)
	@echo "== ASan+UBSan: $(LUA) busted $(SANITIZE_SPECS)"
	@test -n "$(SAN_PRELOAD)" && test -f "$(firstword $(SAN_PRELOAD))" || \
		{ echo "sanitize: no ASan runtime found for $(SAN_CC)"; exit 1; }
	LD_PRELOAD="$(SAN_PRELOAD)" $(SAN_LUA_ENV) $(LUA) "$$(command -v $(BUSTED))" --ignore-lua \
		--cpath='./$(SAN_DIR)/lua$(LUA_VERSION)/?.so' $(SANITIZE_SPECS)

sanitize-valgrind: $(CTESTS) $(CORE54)
	@set -e; for t in $(CTESTS); do \
		echo "== valgrind: $$t"; \
		$(VALGRIND) $(VALGRIND_FLAGS) $$t > $$t.vg.log 2>&1 || { cat $$t.vg.log; echo "sanitize: valgrind: $$t failed"; exit 1; }; \
		tail -n 1 $$t.vg.log; \
	done
	@echo "== valgrind: $(LUA) busted $(VALGRIND_SPECS)"
	$(VALGRIND) $(VALGRIND_FLAGS) $(LUA) "$$(command -v $(BUSTED))" --ignore-lua \
		--cpath='./$(BUILD)/lua$(LUA_VERSION)/?.so' $(VALGRIND_SPECS)
