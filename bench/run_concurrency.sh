#!/usr/bin/env bash
# Concurrency benchmark (issue 4): `make bench-concurrency` runs this.
#
# Starts nginx + ngx_http_lua (bench/loadserver/) on a free port, then runs
# bench/concurrency_bench.lua:
#   concurrent  one stream vs BENCH_N streams as BENCH_N tasks of one client
#               (BENCH_REPEAT runs; the report takes medians)
#   spread      the same with the streams' deltas out of step (random phase)
#   idle        BENCH_N silent open streams, CPU over BENCH_IDLE_S seconds
#   sequential  BENCH_SEQ_N streams one after another (extrapolated to N)
#   one         BENCH_PROCS processes of one stream each, all started at once
# prints the table and writes it to bench/RESULTS.md under
# "## Concurrency (issue 4)" (that section only; the rest is left alone).
#
# Environment: BUILD (build), LUA (lua5.4), NGINX (nginx), BENCH_N (1000),
# BENCH_SEQ_N (20), BENCH_PROCS (BENCH_N), BENCH_REPEAT (3), BENCH_IDLE_S (5),
# BENCH_RESULTS (bench/RESULTS.md; empty: do not write).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build}
LUA=${LUA:-lua5.4}
NGINX=${NGINX:-nginx}
export BENCH_N=${BENCH_N:-1000}
export BENCH_SEQ_N=${BENCH_SEQ_N:-20}
export BENCH_IDLE_S=${BENCH_IDLE_S:-5}
export BENCH_DELTAS=${BENCH_DELTAS:-10}
export BENCH_INTERVAL_MS=${BENCH_INTERVAL_MS:-100}
PROCS=${BENCH_PROCS:-$BENCH_N}
REPEAT=${BENCH_REPEAT:-3}
RESULTS_MD=${BENCH_RESULTS-bench/RESULTS.md}
OUT=$ROOT/$BUILD/bench-concurrency
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/$BUILD/lua5.4/?.so;;"

die() { echo "run_concurrency: $*" >&2; exit 1; }

[ -f "$BUILD/lua5.4/beeos/core.so" ] || die "$BUILD/lua5.4/beeos/core.so missing: run make first"
command -v "$NGINX" >/dev/null 2>&1 ||
  die "nginx not found (Debian: apt-get install -y nginx libnginx-mod-http-lua lua-resty-core)"

# The ngx_http_lua module, as Debian installs it (modules-enabled names it).
MODDIR=""
for d in /usr/lib/nginx/modules /usr/share/nginx/modules; do
  if [ -f "$d/ngx_http_lua_module.so" ] && [ -f "$d/ndk_http_module.so" ]; then MODDIR=$d; break; fi
done
[ -n "$MODDIR" ] ||
  die "ngx_http_lua_module.so not found (Debian: apt-get install -y libnginx-mod-http-lua lua-resty-core)"

# Descriptors: one per stream here, one per stream in nginx, plus slack.
need=$((BENCH_N * 2 + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  if [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$need" ]; then
    ulimit -n "$need"
  else
    ulimit -Hn "$need" 2>/dev/null && ulimit -n "$need" ||
      die "ulimit -n is $(ulimit -n) (hard $(ulimit -Hn)); $need descriptors are needed"
  fi
fi
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=65536

rm -rf "$OUT"
mkdir -p "$OUT/tmp"
TOKEN=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
NGINX_PID=""

cleanup() {
  if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill -TERM "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$LUA" -e 'local s = require "socket"
    local t = assert(s.bind("127.0.0.1", 0)); local _, p = t:getsockname(); t:close(); print(p)' 2>/dev/null ||
    echo $((20000 + RANDOM % 40000))
}

# A free port can be taken between the probe and nginx's bind: retry.
PORT=""
for attempt in 1 2 3 4 5; do
  port=$(free_port)
  sed -e "s|@PREFIX@|$OUT|g" -e "s|@PORT@|$port|g" -e "s|@TOKEN@|$TOKEN|g" \
    -e "s|@WORKERS@|1|g" -e "s|@MODDIR@|$MODDIR|g" -e "s|@NOFILE@|$NOFILE|g" \
    -e "s|@LUADIR@|$ROOT/bench/loadserver|g" bench/loadserver/nginx.conf.in >"$OUT/nginx.conf"
  "$NGINX" -p "$OUT" -c "$OUT/nginx.conf" -e "$OUT/error.log" >"$OUT/nginx.out" 2>&1 &
  NGINX_PID=$!
  for _ in $(seq 50); do
    if ! kill -0 "$NGINX_PID" 2>/dev/null; then break; fi
    if curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then PORT=$port; break; fi
    sleep 0.1
  done
  [ -n "$PORT" ] && break
  cleanup
  NGINX_PID=""
  echo "run_concurrency: nginx did not start on port $port (attempt $attempt):" >&2
  cat "$OUT/nginx.out" "$OUT/error.log" 2>/dev/null | tail -3 >&2 || true
done
[ -n "$PORT" ] || die "could not start nginx; see $OUT/"
export BENCH_URL="http://127.0.0.1:$PORT" BENCH_TOKEN="$TOKEN"
echo "load server: nginx (ngx_http_lua) pid $NGINX_PID on $BENCH_URL, config $OUT/nginx.conf" >&2

R=$OUT/results.txt
: >"$R"
info() { printf 'INFO %s=%s\n' "$1" "$2" >>"$R"; }

# CPU seconds (user+sys) of the nginx workers, children of the master.
nginx_cpu() {
  local total=0 pid rest
  for pid in $(pgrep -P "$NGINX_PID" || true); do
    rest=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
# CPU ms (user+sys) of this shell's waited-for children, from the output of
# `times` (which must run in this shell, not in a $(...) subshell).
children_cpu_ms() {
  tail -1 "$1" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60000 + a[2] * 1000 } printf "%d\n", t }'
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

info date "$(date -u '+%Y-%m-%d %H:%M UTC')"
info cpu "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
info nproc "$(nproc)"
info mem "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
info kernel "$(uname -sr)"
info lua "$("$LUA" -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
info curl "$("$LUA" -e 'print(require("beeos.core").curl_version())')"
info nginx "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
info nofile "$NOFILE"
info load "$(cut -d' ' -f1-3 /proc/loadavg)"
info commit "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src lua 2>/dev/null || echo ' (+ uncommitted changes in src/ lua/)')"

phase() { # name, command...: runs it, records the nginx workers' CPU around it
  local name=$1 c0
  shift
  echo "== $name" >&2
  c0=$(nginx_cpu)
  "$@" >>"$R"
  echo "RESULT $name.server_cpu_s=$(awk -v a="$c0" -v b="$(nginx_cpu)" 'BEGIN { printf "%.2f", (b - a) / 100 }')" >>"$R"
}

for i in $(seq "$REPEAT"); do
  phase concurrent "$LUA" bench/concurrency_bench.lua concurrent
done
phase spread "$LUA" bench/concurrency_bench.lua spread
phase idle "$LUA" bench/concurrency_bench.lua idle
phase sequential "$LUA" bench/concurrency_bench.lua sequential

# One OS process per conversation, all started at once.
echo "== processes ($PROCS x $LUA, xargs -P $PROCS)" >&2
times >"$OUT/times.0"
s0=$(nginx_cpu)
t0=$(now_ms)
seq "$PROCS" | xargs -P "$PROCS" -n 1 "$LUA" bench/concurrency_bench.lua one >"$OUT/procs.txt" 2>"$OUT/procs.err" || true
t1=$(now_ms)
times >"$OUT/times.1"
c0=$(children_cpu_ms "$OUT/times.0")
c1=$(children_cpu_ms "$OUT/times.1")
{
  echo "RESULT procs.n=$PROCS"
  echo "RESULT procs.wall_ms=$((t1 - t0))"
  echo "RESULT procs.cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", (b - a) / 1000 }')"
  echo "RESULT procs.server_cpu_s=$(awk -v a="$s0" -v b="$(nginx_cpu)" 'BEGIN { printf "%.2f", (b - a) / 100 }')"
} >>"$R"
[ -s "$OUT/procs.err" ] && { echo "process errors (first 3):" >&2; head -3 "$OUT/procs.err" >&2; }

grep -E '^(WARN|ERROR|\[error\]|\[crit\]|\[alert\])' "$OUT/error.log" 2>/dev/null | grep -v setrlimit | head -3 >&2 || true

"$LUA" bench/concurrency_report.lua "$R" "$OUT/procs.txt" "$OUT/section.md"

if [ -n "$RESULTS_MD" ]; then
  "$LUA" bench/concurrency_report.lua --merge "$OUT/section.md" "$RESULTS_MD"
  echo "wrote section \"## Concurrency (issue 4)\" of $RESULTS_MD" >&2
fi
