-- Agent API benchmark 1: events per second delivered to a Lua
-- `for ev in stream:events()` loop that touches ev.text, on one long fast
-- stream from the bench server (bench/server/bench_server.c).
--
--   lua5.4 bench/api_events.lua URL TOKEN EVENTS [RUNS] [keep|nokeep]
--
-- Every run is a new stream on the same client (so on the same keep-alive
-- connection).  The clock runs from agent:stream() to the end of the loop.
-- Prints one line per run and a last line "best_events_per_s N".
local beeos = require "beeos"
local core = require "beeos.core"

local url, token = arg[1], arg[2]
local nevents = tonumber(arg[3] or "1000000")
local runs = tonumber(arg[4] or "1")
local keep_text = (arg[5] or "keep") == "keep"

local client = beeos.new{ base_url = url, api_key = token, keep_text = keep_text }
local agent = client:agent("fast")
local opts = { metadata = { mock_events = tostring(nevents) } }

local best, best_cpu = 0, 0
for r = 1, runs do
  collectgarbage()
  local t0, c0 = core.now_ms(), os.clock()
  local stream = assert(agent:stream("hi", opts))
  local count, bytes = 0, 0
  for ev in stream:events() do
    local text = ev.text
    if text then
      count = count + 1
      bytes = bytes + #text
    end
  end
  local dt, cpu = (core.now_ms() - t0) / 1000, os.clock() - c0
  assert(stream.reply, tostring(stream.err))
  assert(count == nevents, ("got %d deltas, expected %d"):format(count, nevents))
  local rate, cpu_rate = count / dt, count / cpu
  if rate > best then best = rate end
  if cpu_rate > best_cpu then best_cpu = cpu_rate end
  print(("run %d: %d deltas, %d text bytes in %.3f s (%.3f s CPU): %.0f events/s (keep_text=%s)")
    :format(r, count, bytes, dt, cpu, rate, tostring(keep_text)))
end
client:close()
-- Events per second of the process's own CPU time: steadier than the wall
-- clock on a shared machine, for comparing builds.
print(("best_events_per_cpu_s %.0f"):format(best_cpu))
print(("best_events_per_s %.0f"):format(best))
