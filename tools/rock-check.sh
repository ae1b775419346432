#!/bin/sh
# Checks the rockspec the way CI must: `luarocks lint` accepts it, and
# `luarocks make` builds and installs it into a scratch tree from which
# `require "beeos.sse"` and `require "beeos"` work.
set -eu
cd "$(dirname "$0")/.."
spec=$(ls lua-beeos-*.rockspec 2>/dev/null | head -1)
[ -n "$spec" ] || { echo "no rockspec"; exit 1; }
luarocks --lua-version=5.4 lint "$spec"
echo "ok 1 - luarocks lint $spec"
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
# Debian keeps curl/curl.h under the multiarch include directory.
arch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
curl_inc=/usr/include
[ -f "/usr/include/$arch/curl/curl.h" ] && curl_inc="/usr/include/$arch"
luarocks --lua-version=5.4 make --tree "$tree" --deps-mode=none "$spec" \
    CURL_INCDIR="$curl_inc" CURL_LIBDIR="/usr/lib/$arch" >"$tree/make.log" 2>&1 || {
    cat "$tree/make.log"
    exit 1
}
TREE="$tree" LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua" \
LUA_CPATH="$tree/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so" \
    lua5.4 -e '
      local sse = require "beeos.sse"
      local evs = sse.new():feed("data: ok\n\n")
      assert(evs[1].data == "ok", "parser from the rock tree")
      local beeos = require "beeos"
      assert(package.searchpath("beeos.core", package.cpath):find(os.getenv("TREE"), 1, true), "core.so from the tree")
      assert(type(beeos.new) == "function")' 2>&1 || exit 1
echo "ok 2 - luarocks make --tree, then require from it"
