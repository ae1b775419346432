# make fuzz: libFuzzer run of the SSE parser (fuzz/fuzz_sse.c), bounded in
# time.  Included by the Makefile (-include mk/*.mk).
#
#   make fuzz                      FUZZ_SECONDS (default 60) of fuzzing
#   make fuzz FUZZ_SECONDS=600 FUZZ_FLAGS='-jobs=2 -workers=2'
#   make fuzz-build                only build build/fuzz/fuzz_sse
#   build/fuzz/fuzz_sse build/fuzz/crash-...    replay a finding
#
# The harness checks that the stream fed whole, fed in chunks (through the
# event queue) and read by a reference model give the same events, status,
# last event id, retry and finish result; a difference aborts like a crash.
# The run starts from a copy of the seed corpus fuzz/corpus/ in
# build/fuzz/corpus/ (kept between runs, never committed); findings land in
# build/fuzz/ and fail the make.

FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_FLAGS ?=
FUZZ_MAX_LEN ?= 4096
FUZZ_DIR = $(BUILD)/fuzz
FUZZ_BIN = $(FUZZ_DIR)/fuzz_sse
FUZZ_SRC = src/buf.c src/sse.c src/evq.c
FUZZ_CFLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer

.PHONY: fuzz-build

fuzz-build: $(FUZZ_BIN)

$(FUZZ_BIN): fuzz/fuzz_sse.c tests/c/sse_record.h $(FUZZ_SRC) $(CORE_HDR) mk/fuzz.mk
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CFLAGS_BASE) $(FUZZ_CFLAGS) -Isrc -o $@ fuzz/fuzz_sse.c $(FUZZ_SRC)

# Tokens of the format, so mutations reach the interesting paths sooner.
$(FUZZ_DIR)/sse.dict: mk/fuzz.mk
	@mkdir -p $(@D)
	@printf '%s\n' '"data:"' '"data: "' '"event:"' '"event: "' '"id:"' '"id: "' \
		'"retry:"' '"retry: "' '":"' '"\x0d\x0a"' '"\x0d"' '"\x0a"' '"\x0a\x0a"' \
		'"\x0d\x0d"' '"\xef\xbb\xbf"' '"\x00"' '"message"' '"0123456789"' > $@

fuzz: deps-sanitize $(FUZZ_BIN) $(FUZZ_DIR)/sse.dict
	@mkdir -p $(FUZZ_DIR)/corpus
	@cp -R fuzz/corpus/. $(FUZZ_DIR)/corpus/
	cd $(FUZZ_DIR) && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		./fuzz_sse -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) \
		-timeout=20 -rss_limit_mb=2048 -print_final_stats=1 -dict=sse.dict \
		-artifact_prefix=./ $(FUZZ_FLAGS) corpus
