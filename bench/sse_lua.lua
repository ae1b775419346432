-- SSE benchmark, implementation (2): the C parser through the Lua API.
--   lua5.4 bench/sse_lua.lua FILE [RUNS]
-- Feeds the 16 KiB chunks to beeos.sse and walks the returned event tables,
-- touching ev.type, ev.data and ev.id of each.
local H = dofile((arg[0]:match("^(.*)/") or ".") .. "/sse_harness.lua")
local sse = require "beeos.sse"

local function run(next_chunk)
  local p = sse.new()
  local events, data_bytes, touch = 0, 0, 0
  for chunk in next_chunk do
    local evs = assert(p:feed(chunk))
    for j = 1, #evs do
      local ev = evs[j]
      events = events + 1
      data_bytes = data_bytes + #ev.data
      touch = touch + #ev.type + #ev.id
    end
  end
  assert(p:finish(), "stream ended inside an event")
  p:close()
  return events, data_bytes, touch
end

H.bench("lua", assert(arg[1], "usage: sse_lua.lua FILE [RUNS]"), tonumber(arg[2]), run)
