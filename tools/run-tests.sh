#!/bin/sh
# Runs every suite (C unit tests, busted specs on Lua 5.4, the parser specs
# on Lua 5.1 and LuaJIT, the rockspec check) and ends with one plain line
# "N passed, N failed" counting all of them.  Exit status 0 only when
# nothing failed.
set -u
cd "$(dirname "$0")/.."
logs=build/test-logs
mkdir -p "$logs"
total_pass=0
total_fail=0

record() { # label passed failed log
    total_pass=$((total_pass + $2))
    total_fail=$((total_fail + $3))
    echo "$1: $2 passed, $3 failed"
    if [ "$3" -gt 0 ]; then
        echo "---- $1 (last lines of $4) ----"
        grep -E '^not ok|^#|Error|error|FAIL' "$4" | head -60
        tail -20 "$4"
        echo "----"
    fi
}

# C unit tests: each binary's last line is "N passed, N failed".
for t in build/ctest/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    log="$logs/$name.log"
    "$t" >"$log" 2>&1
    rc=$?
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
        f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    else
        p=0 f=1
    fi
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    record "C $name" "$p" "$f" "$log"
done

# busted with TAP output: one "ok"/"not ok" line per test.
run_busted() { # label, busted args...
    label=$1
    shift
    log="$logs/busted-$label.log"
    busted -o TAP "$@" >"$log" 2>&1
    rc=$?
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^not ok ' "$log")
    # A crash or a spec file that failed to load still fails the run.
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    record "busted $label" "$p" "$f" "$log"
}

# Tasks of .busted: default (Lua 5.4, every spec), lua51 and luajit (the
# parser specs against the Lua 5.1 ABI build).
run_busted lua5.4
run_busted lua5.1-sse --run=lua51
run_busted luajit-sse --run=luajit

# Lint: luacheck over the shipped Lua (.luacheckrc): no globals, no unused
# variables.
log="$logs/luacheck.log"
if luacheck --no-color lua/ examples/ bin/beeos-mock >"$log" 2>&1; then
    record "luacheck" 1 0 "$log"
else
    record "luacheck" 0 1 "$log"
fi

# The rockspec: luarocks lint, luarocks make into a scratch tree, require.
log="$logs/rock-check.log"
if sh tools/rock-check.sh >"$log" 2>&1; then
    record "rockspec" 2 0 "$log"
else
    record "rockspec" "$(grep -c '^ok ' "$log")" 1 "$log"
fi

# make install into a scratch DESTDIR, then load every module from there.
log="$logs/install.log"
dest=$(mktemp -d)
if make --no-print-directory install DESTDIR="$dest" PREFIX=/usr/local >"$log" 2>&1 &&
    DEST="$dest" LUA_PATH="$dest/usr/local/share/lua/5.4/?.lua;$dest/usr/local/share/lua/5.4/?/init.lua;;" \
    LUA_CPATH="$dest/usr/local/lib/lua/5.4/?.so;;" lua5.4 -e '
      for _, m in ipairs{ "beeos", "beeos.sse", "beeos.protocol", "beeos.errors", "beeos.sched",
                          "beeos.transport.curl", "beeos.mock", "beeos.core" } do
        local path = package.searchpath(m, m == "beeos.core" and package.cpath or package.path)
        assert(path and path:find(os.getenv("DEST"), 1, true), m .. " not from the install tree")
        require(m)
      end' >>"$log" 2>&1 && [ -x "$dest/usr/local/bin/beeos-mock" ]; then
    record "make install" 1 0 "$log"
else
    record "make install" 0 1 "$log"
fi
rm -rf "$dest"

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
