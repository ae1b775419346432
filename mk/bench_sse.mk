# make bench-sse: the SSE parser benchmark (issue 2), see bench/run_sse.sh.
# Compares the C parser alone, beeos.sse through Lua 5.4, a pure-Lua parser
# and eventsource-parser under Node on the same generated streams, and
# prints a Markdown table (copied into bench/RESULTS.md by hand).

BENCH_SSE = $(BUILD)/bench
BENCH_SSE_STREAMS = $(BENCH_SSE)/sse_small.sse $(BENCH_SSE)/sse_large.sse

.PHONY: bench-sse bench-sse-node

bench-sse: all $(BENCH_SSE)/sse_c $(BENCH_SSE_STREAMS) bench-sse-node
	BUILD=$(BUILD) LUA=$(LUA) LUA_VERSION=$(LUA_VERSION) sh bench/run_sse.sh

$(BENCH_SSE)/gen_sse: bench/gen_sse.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -o $@ bench/gen_sse.c

# Generated once (fixed seed); again only when the generator changes.
$(BENCH_SSE)/sse_%.sse: $(BENCH_SSE)/gen_sse
	$(BENCH_SSE)/gen_sse $* $@

$(BENCH_SSE)/sse_c: bench/sse_c.c src/buf.c src/sse.c src/evq.c $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -Isrc -o $@ bench/sse_c.c src/buf.c src/sse.c src/evq.c

# eventsource-parser, pinned by bench/node/package-lock.json.  Without npm
# the driver skips (4).
bench-sse-node: bench/node/node_modules/.package-lock.json

bench/node/node_modules/.package-lock.json: bench/node/package.json bench/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd bench/node && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "bench-sse: npm not found, eventsource-parser not installed"; fi
