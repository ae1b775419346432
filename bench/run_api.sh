#!/bin/sh
# Agent API benchmarks (`make bench-api`): prints machine info, then a table
# of figures and ratios against the targets of issue 3.
#
#   1. events/s delivered to `for ev in stream:events()` (touching ev.text)
#      on one long fast stream, against `curl -N` of the same stream (the
#      transfer limit) and LuaSocket + a pure-Lua SSE parser (the baseline).
#      Targets: >= 1 million events/s and >= 5x the baseline.
#   2. sequential agent:send calls/s on one keep-alive connection, against
#      bench/curl_send.c (libcurl easy interface, one reused handle: the
#      limit).  Target: >= 70 % of it.
#   3. peak RSS (VmHWM) of a process reading a 100 MiB streamed reply with
#      keep_text = false.  Target: < 32 MiB.  Also keep_text = true.
#
# The server is bench/server/bench_server.c (one thread, epoll) on a free
# port; row 0 shows it is not the bottleneck (curl takes the stream from it
# far faster than the SDK).  The machine is shared: every figure is the best
# of RUNS runs, and the runs of one benchmark are interleaved (curl, SDK,
# baseline, curl, SDK, ...) so that they see the same noise; only ratios
# within one run of this script mean anything.
#
# Environment: EVENTS (2000000), RUNS (5), CALLS (10000), MEM_MIB (100),
# DELTA_BYTES (1024, delta size of the memory run), LUA (lua5.4),
# BENCH_API_BIN (build/bench-api: bench_server and curl_send).
set -eu
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-2000000}
RUNS=${RUNS:-5}
CALLS=${CALLS:-10000}
MEM_MIB=${MEM_MIB:-100}
DELTA_BYTES=${DELTA_BYTES:-1024}
LUA=${LUA:-lua5.4}
BIN=${BENCH_API_BIN:-build/bench-api}
TOKEN=bench-token
export LUA_PATH="./lua/?.lua;./lua/?/init.lua;;"
export LUA_CPATH="./build/lua5.4/?.so;;"

for need in "$BIN/bench_server" "$BIN/curl_send" build/lua5.4/beeos/core.so; do
    [ -x "$need" ] || [ -f "$need" ] || { echo "missing $need: run 'make bench-api'" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "curl is needed (make deps)" >&2; exit 1; }
"$LUA" -e 'require "socket"; require "cjson"' 2>/dev/null ||
    { echo "LuaSocket and lua-cjson are needed for $LUA (make deps)" >&2; exit 1; }

tmp=$(mktemp -d)
srv_pid=""
cleanup() {
    if [ -n "$srv_pid" ]; then kill "$srv_pid" 2>/dev/null || true; wait "$srv_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

"$BIN/bench_server" --port 0 --token "$TOKEN" >"$tmp/server.log" 2>&1 &
srv_pid=$!
URL=""
for _ in $(seq 1 100); do
    URL=$(sed -n 's/^bench-server listening on //p' "$tmp/server.log")
    [ -n "$URL" ] && break
    sleep 0.05
done
[ -n "$URL" ] || { echo "the bench server did not start:" >&2; cat "$tmp/server.log" >&2; exit 1; }

echo "== machine"
echo "cpu:      $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1) ($(nproc) cores online)"
echo "kernel:   $(uname -sr)"
echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the runs)"
echo "lua:      $("$LUA" -v 2>&1 | head -1); $("$LUA" -e 'print(require("beeos.core").curl_version())')"
echo "server:   $BIN/bench_server on $URL"
echo "settings: EVENTS=$EVENTS RUNS=$RUNS CALLS=$CALLS MEM_MIB=$MEM_MIB DELTA_BYTES=$DELTA_BYTES"
echo

max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }
field() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }

# 1. events/s --------------------------------------------------------------
body="{\"message\":\"hi\",\"metadata\":{\"mock_events\":\"$EVENTS\"}}"
curl_ev=0 sdk_ev=0 sdk_ev_cpu=0 nokeep_ev=0 sock_ev=0
echo "== 1. stream of $EVENTS deltas: $RUNS interleaved runs (curl, SDK, SDK keep_text=false, luasocket)"
for r in $(seq 1 "$RUNS"); do
    t=$(curl -N -s -o /dev/null -w '%{time_total} %{size_download}' \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -H 'Accept: text/event-stream' -d "$body" "$URL/api/v1/agents/fast/messages")
    rate=$(echo "$t" | awk -v n="$EVENTS" '{ printf "%.0f", n / $1 }')
    echo "run $r: curl -N: $(echo "$t" | cut -d' ' -f2) bytes in $(echo "$t" | cut -d' ' -f1) s: $rate events/s"
    curl_ev=$(max "$curl_ev" "$rate")
    "$LUA" bench/api_events.lua "$URL" "$TOKEN" "$EVENTS" 1 keep >"$tmp/ev" 2>&1 || { cat "$tmp/ev"; exit 1; }
    grep '^run' "$tmp/ev" | sed "s/^run 1/run $r: SDK/"
    sdk_ev=$(max "$sdk_ev" "$(field best_events_per_s "$tmp/ev")")
    sdk_ev_cpu=$(max "$sdk_ev_cpu" "$(field best_events_per_cpu_s "$tmp/ev")")
    "$LUA" bench/api_events.lua "$URL" "$TOKEN" "$EVENTS" 1 nokeep >"$tmp/ev" 2>&1 || { cat "$tmp/ev"; exit 1; }
    grep '^run' "$tmp/ev" | sed "s/^run 1/run $r: SDK/"
    nokeep_ev=$(max "$nokeep_ev" "$(field best_events_per_s "$tmp/ev")")
    "$LUA" bench/api_luasocket.lua "$URL" "$TOKEN" "$EVENTS" 1 >"$tmp/ev" 2>&1 || { cat "$tmp/ev"; exit 1; }
    grep '^run' "$tmp/ev" | sed "s/^run 1/run $r: luasocket/"
    sock_ev=$(max "$sock_ev" "$(field best_events_per_s "$tmp/ev")")
done
echo

# 2. send calls/s ----------------------------------------------------------
curl_calls=0 sdk_calls=0
echo "== 2. $CALLS sequential sends on one connection: $RUNS interleaved runs (curl_send, SDK)"
for r in $(seq 1 "$RUNS"); do
    "$BIN/curl_send" "$URL" "$TOKEN" "$CALLS" 1 >"$tmp/s" 2>&1 || { cat "$tmp/s"; exit 1; }
    grep '^run' "$tmp/s" | sed "s/^run 1/run $r: curl_send/"
    curl_calls=$(max "$curl_calls" "$(field best_calls_per_s "$tmp/s")")
    "$LUA" bench/api_send.lua "$URL" "$TOKEN" "$CALLS" 1 >"$tmp/s" 2>&1 || { cat "$tmp/s"; exit 1; }
    grep '^run' "$tmp/s" | sed "s/^run 1/run $r: SDK agent:send/"
    sdk_calls=$(max "$sdk_calls" "$(field best_calls_per_s "$tmp/s")")
done
echo

# 3. memory ----------------------------------------------------------------
echo "== 3. one $MEM_MIB MiB streamed reply in deltas of $DELTA_BYTES bytes, peak RSS"
"$LUA" bench/api_memory.lua "$URL" "$TOKEN" "$MEM_MIB" "$DELTA_BYTES" nokeep >"$tmp/m0" 2>&1 || { cat "$tmp/m0"; exit 1; }
head -1 "$tmp/m0"
"$LUA" bench/api_memory.lua "$URL" "$TOKEN" "$MEM_MIB" "$DELTA_BYTES" keep >"$tmp/m1" 2>&1 || { cat "$tmp/m1"; exit 1; }
head -1 "$tmp/m1"
hwm0=$(field vmhwm_kib "$tmp/m0")
hwm1=$(field vmhwm_kib "$tmp/m1")
start0=$(field start_vmhwm_kib "$tmp/m0")
echo

# table --------------------------------------------------------------------
awk -v curl_ev="$curl_ev" -v sdk_ev="$sdk_ev" -v sdk_ev_cpu="$sdk_ev_cpu" -v nokeep_ev="$nokeep_ev" \
    -v sock_ev="$sock_ev" -v curl_calls="$curl_calls" -v sdk_calls="$sdk_calls" \
    -v hwm0="$hwm0" -v hwm1="$hwm1" -v start0="$start0" -v mib="$MEM_MIB" 'BEGIN {
    verdict = "PASS"
    line = "+--------------------------------------------------+-----------------+--------------------+---------------+---------+"
    print "== results (best of each; ratios within this run)"
    print line
    printf "| %-48s | %15s | %-18s | %-13s | %-7s |\n", "measure", "figure", "ratio", "target", "verdict"
    print line
    row("0. stream limit: curl -N of the same stream", sprintf("%.2f M ev/s", curl_ev / 1e6),
        sprintf("%.1fx the SDK", curl_ev / sdk_ev), "server >> SDK", curl_ev > 2 * sdk_ev)
    row("1. SDK events/s (default: keep_text on)", sprintf("%.2f M ev/s", sdk_ev / 1e6),
        "", ">= 1 M ev/s", sdk_ev >= 1e6)
    row("   same, vs luasocket + pure-Lua SSE", "", sprintf("%.2fx", sdk_ev / sock_ev), ">= 5x", sdk_ev >= 5 * sock_ev)
    row("1. SDK events/s, keep_text = false", sprintf("%.2f M ev/s", nokeep_ev / 1e6),
        "", ">= 1 M ev/s", nokeep_ev >= 1e6)
    row("   same, vs luasocket + pure-Lua SSE", "", sprintf("%.2fx", nokeep_ev / sock_ev), ">= 5x", nokeep_ev >= 5 * sock_ev)
    row("   baseline: luasocket + pure-Lua SSE + cjson", sprintf("%.2f M ev/s", sock_ev / 1e6), "", "", -1)
    row("   SDK (keep_text on), per CPU-second", sprintf("%.2f M ev/s", sdk_ev_cpu / 1e6), "", "", -1)
    row("2. limit: curl_send (libcurl easy, 1 handle)", sprintf("%.0f calls/s", curl_calls), "", "", -1)
    row("2. SDK agent:send, one keep-alive connection", sprintf("%.0f calls/s", sdk_calls),
        sprintf("%.1f%% of curl_send", 100 * sdk_calls / curl_calls), ">= 70%", sdk_calls >= 0.7 * curl_calls)
    row(sprintf("3. VmHWM, %d MiB reply, keep_text = false", mib), sprintf("%.1f MiB", hwm0 / 1024),
        sprintf("start %.1f MiB", start0 / 1024), "< 32 MiB", hwm0 < 32 * 1024)
    row(sprintf("3. VmHWM, %d MiB reply, keep_text = true", mib), sprintf("%.1f MiB", hwm1 / 1024),
        "(contrast)", "", -1)
    print line
    print "overall: " verdict
}
function row(name, fig, ratio, target, ok,    v) {
    v = ok < 0 ? "" : (ok ? "PASS" : "MISS")
    if (ok == 0) verdict = "MISS (see bench/RESULTS.md)"
    printf "| %-48s | %15s | %-18s | %-13s | %-7s |\n", name, fig, ratio, target, v
}'
