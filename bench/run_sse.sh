#!/bin/sh
# SSE parser benchmark driver (make bench-sse): runs the four parsers on the
# same two streams, side by side, and prints a Markdown table.
#
#   (1)  c        the C parser alone (bench/sse_c.c), sink counts events
#   (1b) c_evq    the same through the event queue, as the binding drives it
#   (2)  lua      beeos.sse through the Lua API on Lua 5.4 (bench/sse_lua.lua)
#   (3)  purelua  a pure-Lua parser, the baseline (bench/sse_purelua.lua)
#   (4)  node     eventsource-parser under Node (bench/node/sse_node.mjs)
#
# Streams (bench/gen_sse.c, fixed seed): small = ~64 MiB of agent-like
# events with 60-120 bytes of JSON data, large = ~64 MiB of 64 KiB events;
# both fed in 16 KiB chunks.  Each program reports its best run; the whole
# set is run ROUNDS times, interleaved, and the best of all is kept (the
# machines are shared and noisy).  MB = 10^6 bytes.
#
# Environment: BUILD (build), LUA (lua5.4), LUA_VERSION (5.4), NODE (node),
# ROUNDS (3), RUNS (7: runs per program per round).
#   sh bench/run_sse.sh --table   print the table of the last run again
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
LUA=${LUA:-lua5.4}
LUA_VERSION=${LUA_VERSION:-5.4}
NODE=${NODE:-node}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-7}
B=$BUILD/bench
OUT=$B/sse_results.txt

LUA_CPATH="$BUILD/lua$LUA_VERSION/?.so;;"
LUA_PATH="lua/?.lua;;"
export LUA_CPATH LUA_PATH

for s in small large; do
    [ -s "$B/sse_$s.sse" ] || "$B/gen_sse" "$s" "$B/sse_$s.sse"
done

have_node=1
if ! command -v "$NODE" >/dev/null 2>&1 || [ ! -d bench/node/node_modules/eventsource-parser ]; then
    have_node=0
    echo "run_sse: node or bench/node/node_modules missing: (4) skipped" >&2
fi

# The baseline must parse what beeos.sse parses (LF and CRLF, odd chunks).
[ "${1:-}" = "--table" ] || "$LUA" bench/sse_purelua.lua --check "$B/sse_small.sse" >&2

table_only=0
[ "${1:-}" = "--table" ] && table_only=1
[ "$table_only" = 1 ] || : >"$OUT"
r=1
[ "$table_only" = 1 ] && r=$((ROUNDS + 1))
while [ "$r" -le "$ROUNDS" ]; do
    for s in small large; do
        f=$B/sse_$s.sse
        echo "run_sse: round $r/$ROUNDS, $s stream" >&2
        { "$B/sse_c" "$f" "$RUNS"
          "$LUA" bench/sse_lua.lua "$f" "$RUNS"
          "$LUA" bench/sse_purelua.lua "$f" "$RUNS"
          if [ "$have_node" = 1 ]; then "$NODE" bench/node/sse_node.mjs "$f" "$RUNS"; fi
        } | sed -n "s/^RESULT /stream=$s /p" >>"$OUT"
    done
    r=$((r + 1))
done

awk -v metas="$B/sse_small.sse.meta $B/sse_large.sse.meta" '
function kv(line, key,    m) {
    if (match(line, "(^| )" key "=[^ ]*")) {
        m = substr(line, RSTART, RLENGTH); sub(/^ /, "", m); sub(/^[^=]*=/, "", m); return m
    }
    return ""
}
BEGIN {
    n = split(metas, mf, " ")
    for (i = 1; i <= n; i++) {
        s = (mf[i] ~ /small/) ? "small" : "large"
        if ((getline line < mf[i]) > 0) { want_ev[s] = kv(line, "events"); want_db[s] = kv(line, "data_bytes") }
    }
    label["c"] = "(1) C parser alone"; label["c_evq"] = "(1b) C parser + evq"
    label["lua"] = "(2) beeos.sse, Lua 5.4"; label["purelua"] = "(3) pure Lua"
    label["node"] = "(4) eventsource-parser, Node"
    order = "c c_evq lua purelua node"
}
{
    s = kv($0, "stream"); im = kv($0, "impl"); secs = kv($0, "secs") + 0
    key = s SUBSEP im
    if (kv($0, "events") != want_ev[s]) { printf "run_sse: %s on %s: %s events, want %s\n", im, s, kv($0, "events"), want_ev[s] > "/dev/stderr"; bad = 1 }
    # node counts UTF-16 code units, not bytes
    if (im != "node" && kv($0, "data_bytes") != want_db[s]) { printf "run_sse: %s on %s: data bytes differ\n", im, s > "/dev/stderr"; bad = 1 }
    if (!(key in best) || secs < best[key]) { best[key] = secs; bytes[key] = kv($0, "bytes"); evs[key] = kv($0, "events") }
}
function mbs(k) { return bytes[k] / best[k] / 1e6 }
function eps(k) { return evs[k] / best[k] }
function ratio(a, b) { return (a in best && b in best) ? sprintf("%.2fx", best[b] / best[a]) : "n/a" }
END {
    print "| stream | implementation | MB/s | events/s | best time |"
    print "|---|---|---:|---:|---:|"
    no = split(order, imps, " ")
    split("small large", ss, " ")
    for (si = 1; si <= 2; si++) for (i = 1; i <= no; i++) {
        k = ss[si] SUBSEP imps[i]
        if (!(k in best)) continue
        printf "| %s | %s | %.0f | %.0f | %.1f ms |\n", ss[si], label[imps[i]], mbs(k), eps(k), best[k] * 1000
    }
    print ""
    print "| ratio | small | large |"
    print "|---|---:|---:|"
    printf "| (2)/(3) speed-up over pure Lua | %s | %s |\n", ratio("small" SUBSEP "lua", "small" SUBSEP "purelua"), ratio("large" SUBSEP "lua", "large" SUBSEP "purelua")
    printf "| (2)/(4) speed vs Node | %s | %s |\n", ratio("small" SUBSEP "lua", "small" SUBSEP "node"), ratio("large" SUBSEP "lua", "large" SUBSEP "node")
    printf "| (1)/(2) C alone vs through Lua | %s | %s |\n", ratio("small" SUBSEP "c", "small" SUBSEP "lua"), ratio("large" SUBSEP "c", "large" SUBSEP "lua")
    print ""
    print "| target | measured | met |"
    print "|---|---:|---|"
    k = "small" SUBSEP "c"
    if (k in best) printf "| (1) >= 1500 MB/s, small events | %.0f MB/s (%.2fx target) | %s |\n", mbs(k), mbs(k) / 1500, (mbs(k) >= 1500 ? "yes" : "NO")
    k = "small" SUBSEP "lua"
    if (k in best) printf "| (2) >= 3.0 M events/s, small events | %.2f M/s (%.2fx target) | %s |\n", eps(k) / 1e6, eps(k) / 3e6, (eps(k) >= 3e6 ? "yes" : "NO")
    p = "small" SUBSEP "purelua"
    if (k in best && p in best) printf "| (2) >= 10x (3), small events | %.2fx | %s |\n", best[p] / best[k], (best[p] / best[k] >= 10 ? "yes" : "NO")
    for (si = 1; si <= 2; si++) {
        k = ss[si] SUBSEP "lua"; p = ss[si] SUBSEP "node"
        if (k in best && p in best) printf "| (2) faster than (4), %s events | %.2fx | %s |\n", ss[si], best[p] / best[k], (best[p] > best[k] ? "yes" : "NO")
    }
    exit bad
}' "$OUT"
