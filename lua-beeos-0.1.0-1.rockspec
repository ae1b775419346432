rockspec_format = "3.0"
package = "lua-beeos"
version = "0.1.0-1"
source = {
   url = "git+https://example.invalid/lua-beeos.git",
   tag = "v0.1.0",
}
description = {
   summary = "Lua SDK for the BeeOS agent API: send and stream replies over libcurl",
   detailed = [[
A C core (libcurl multi interface, an incremental WHATWG-exact SSE parser,
all timeout logic) with a Lua front: client:agent(id), agent:send(),
agent:stream() with coroutine-based streaming, retries and structured errors.
]],
   license = "MIT",
   labels = { "http", "sse", "libcurl", "agents" },
}
dependencies = {
   "lua >= 5.1",
   "lua-cjson",
}
external_dependencies = {
   CURL = { header = "curl/curl.h", library = "curl" },
}
build = {
   type = "builtin",
   modules = {
      ["beeos.core"] = {
         sources = { "src/buf.c", "src/sse.c", "src/evq.c", "src/engine.c", "src/fastjson.c", "src/lbeeos.c" },
         defines = { "_POSIX_C_SOURCE=200809L" },
         libraries = { "curl" },
         incdirs = { "$(CURL_INCDIR)" },
         libdirs = { "$(CURL_LIBDIR)" },
      },
      ["beeos"] = "lua/beeos/init.lua",
      ["beeos.sse"] = "lua/beeos/sse.lua",
      ["beeos.protocol"] = "lua/beeos/protocol.lua",
      ["beeos.errors"] = "lua/beeos/errors.lua",
      ["beeos.sched"] = "lua/beeos/sched.lua",
      ["beeos.transport.curl"] = "lua/beeos/transport/curl.lua",
      ["beeos.mock"] = "lua/beeos/mock.lua",
   },
   install = {
      bin = { ["beeos-mock"] = "bin/beeos-mock" },
   },
}
