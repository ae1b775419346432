# make bench-concurrency: 1000 concurrent SSE streams from one client (tasks)
# against sequential and one-process-per-stream baselines, and an idle check.
# Needs nginx with ngx_http_lua (Debian: nginx libnginx-mod-http-lua
# lua-resty-core) and lua-socket; writes its section of bench/RESULTS.md.
.PHONY: bench-concurrency

bench-concurrency: all
	BUILD=$(BUILD) LUA=$(LUA) bash bench/run_concurrency.sh
