# make bench-api: the agent API benchmarks of issue 3 (bench/run_api.sh):
# stream events/s against curl and a LuaSocket baseline, agent:send calls/s
# against plain libcurl, peak RSS of a 100 MiB streamed reply.  Targets,
# not tests: it prints a table and exits 0 whatever the figures.
# Included by the Makefile (-include mk/*.mk).
#
#   make bench-api
#   make bench-api BENCH_API_ENV='EVENTS=1000000 RUNS=9 CALLS=20000'
#
# Needs curl, lua5.4, lua-socket and lua-cjson (all in `make deps`).

BENCH_API_DIR = $(BUILD)/bench-api
BENCH_API_ENV ?=

.PHONY: bench-api bench-api-build

bench-api-build: $(BENCH_API_DIR)/bench_server $(BENCH_API_DIR)/curl_send

bench-api: all bench-api-build
	@env BENCH_API_BIN=$(BENCH_API_DIR) $(BENCH_API_ENV) sh bench/run_api.sh

$(BENCH_API_DIR)/bench_server: bench/server/bench_server.c mk/bench_api.mk
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) -O2 -o $@ bench/server/bench_server.c

$(BENCH_API_DIR)/curl_send: bench/curl_send.c mk/bench_api.mk
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) -O2 $(CURL_CFLAGS) -o $@ bench/curl_send.c $(CURL_LIBS)
