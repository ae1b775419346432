-- Driving lua-beeos from an event loop you already run (here: luv, the
-- libuv binding; the same three calls fit cqueues, copas or a hand-written
-- poll loop).
--
-- The SDK's tasks normally run under beeos.run()/gather(), which sleep in
-- poll() themselves.  A program with its own loop instead, whenever it
-- gets control:
--   1. calls beeos.step(): runs what can run, never blocks, returns false
--      once no task is left;
--   2. asks beeos.pollset() for { [fd] = "r" | "w" | "rw" } and the longest
--      it may wait in ms (nil: no timer pending);
--   3. watches those descriptors and that timer, and comes back to 1 when
--      either fires.
-- libcurl opens and closes sockets between steps, so the watchers are made
-- anew after every step rather than kept per descriptor.
--
--   BEEOS_BASE_URL=... BEEOS_API_KEY=... lua5.4 examples/external_loop.lua
local beeos = require "beeos"
local uv = require "luv"

local client = beeos.new{}
local results = {}

for _, name in ipairs{ "alpha", "beta" } do
  beeos.spawn(function()
    local stream, err = client:agent("echo"):stream("hello " .. name)
    if not stream then results[name] = tostring(err) return end
    for _ in stream:events() do end
    results[name] = stream.reply and stream.reply.text or tostring(stream.err)
  end)
end

local watchers = {}
local timer = uv.new_timer()
local ticks = 0

local function drive()
  ticks = ticks + 1
  for fd, w in pairs(watchers) do
    w:stop()
    w:close()
    watchers[fd] = nil
  end
  timer:stop()
  if not beeos.step() then
    timer:close()
    return
  end
  local fds, timeout_ms = beeos.pollset()
  for fd, what in pairs(fds) do
    local w = uv.new_poll(fd)
    watchers[fd] = w
    w:start(what == "rw" and "rw" or (what == "w" and "w" or "r"), drive)
  end
  timer:start(timeout_ms or 1000, 0, drive)
end

-- The program's own timer, to show the loop stays in the program's hands.
local heartbeat = uv.new_timer()
heartbeat:start(50, 50, function() end)

drive()
repeat uv.run("once") until not timer:is_active() and next(watchers) == nil
heartbeat:close()
uv.run("nowait")

print("alpha: " .. tostring(results.alpha))
print("beta: " .. tostring(results.beta))
print("ticks of the outside loop: " .. ticks)
client:close()
