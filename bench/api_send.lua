-- Agent API benchmark 2: sequential agent:send calls per second on one
-- keep-alive connection (the bench server's sync JSON reply).
--
--   lua5.4 bench/api_send.lua URL TOKEN CALLS [RUNS]
--
-- 200 warm-up calls open the connection first.  Prints one line per run
-- and a last line "best_calls_per_s N".
local beeos = require "beeos"
local core = require "beeos.core"

local url, token = arg[1], arg[2]
local calls = tonumber(arg[3] or "10000")
local runs = tonumber(arg[4] or "1")

local client = beeos.new{ base_url = url, api_key = token }
local agent = client:agent("echo")

for _ = 1, 200 do assert(agent:send("hello")) end

local best = 0
for r = 1, runs do
  collectgarbage()
  local t0 = core.now_ms()
  for _ = 1, calls do
    local reply, err = agent:send("hello")
    if not reply then error(tostring(err)) end
    assert(reply.text == "echo: hello")
  end
  local dt = (core.now_ms() - t0) / 1000
  local rate = calls / dt
  if rate > best then best = rate end
  print(("run %d: %d calls in %.3f s: %.0f calls/s (%.1f us/call)"):format(r, calls, dt, rate, dt / calls * 1e6))
end
client:close()
print(("best_calls_per_s %.0f"):format(best))
