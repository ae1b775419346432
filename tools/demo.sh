#!/bin/sh
# `make demo`: start the bundled mock on a free port, stream a reply with
# examples/chat.lua, stop the mock.
set -eu
cd "$(dirname "$0")/.."
log=$(mktemp)
lua5.4 bin/beeos-mock --port 0 --token demo-token >"$log" 2>&1 &
mock_pid=$!
trap 'kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; rm -f "$log"' EXIT INT TERM
url=""
for _ in $(seq 1 100); do
    url=$(sed -n 's/^beeos-mock listening on //p' "$log")
    [ -n "$url" ] && break
    sleep 0.05
done
[ -n "$url" ] || { echo "the mock did not start:"; cat "$log"; exit 1; }
echo "mock BeeOS server on $url"
BEEOS_BASE_URL="$url" BEEOS_API_KEY=demo-token BEEOS_DEMO_PACE_MS=40 \
LUA_PATH="./lua/?.lua;./lua/?/init.lua;;" LUA_CPATH="./build/lua5.4/?.so;;" \
    lua5.4 examples/chat.lua "$@"
