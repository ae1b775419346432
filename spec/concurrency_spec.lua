-- Coroutine-based concurrency: many agents and streams from one Lua state.
local beeos = require "beeos"
local core = require "beeos.core"
local mockctl = require "spec.support.mockctl"

local function open_fds()
  local n = 0
  local p = io.popen("ls /proc/" .. (io.open("/proc/self/stat"):read("*n")) .. "/fd")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

-- CPU seconds of this process (user + system), from /proc.
local function cpu_seconds()
  local f = io.open("/proc/self/stat")
  local stat = f:read("*a")
  f:close()
  local rest = stat:match("%) (.*)")
  local fields = {}
  for v in rest:gmatch("%S+") do fields[#fields + 1] = v end
  -- fields[12], fields[13]: utime, stime in clock ticks (after pid, comm).
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

describe("beeos scheduler", function()
  local m, client

  setup(function()
    m = mockctl.start{}
    client = beeos.new{ base_url = m.url, api_key = m.token }
  end)

  teardown(function()
    client:close()
    m:stop()
  end)

  before_each(function() m:reset() end)

  local paced = { metadata = { mock_deltas = "4", mock_interval_ms = "150" } }

  local function stream_all(agent, message, opts)
    local s, err = agent:stream(message, opts)
    if not s then return nil, err end
    local n = 0
    for ev in s:events() do
      if ev.type == "delta" then n = n + 1 end
    end
    if s.reply then s.reply.deltas = n end
    return s.reply, s.err
  end

  it("runs N paced streams in about the time of one, not N times it", function()
    local agent = client:agent("heartbeat")
    local t0 = core.now_ms()
    local single, err = stream_all(agent, "one", paced)
    local one_ms = core.now_ms() - t0
    assert.is_nil(err)
    assert.equals(4, single.deltas)

    local n = 10
    local tasks = {}
    t0 = core.now_ms()
    for i = 1, n do
      tasks[i] = beeos.spawn(stream_all, agent, "task " .. i, paced)
    end
    local replies, errs = beeos.gather(tasks)
    local all_ms = core.now_ms() - t0
    for i = 1, n do
      assert.is_nil(errs[i])
      assert.equals("echo: task " .. i, replies[i].text)
      assert.equals(4, replies[i].deltas)
    end
    -- Sequentially this would take n * one_ms; concurrently about one_ms.
    assert.is_true(all_ms < one_ms * n / 3,
      ("%d streams took %d ms, one took %d ms"):format(n, all_ms, one_ms))
  end)

  it("times out one stalled stream alone; the others complete", function()
    local tasks = {}
    for i = 1, 5 do
      tasks[i] = beeos.spawn(stream_all, client:agent("heartbeat"), "ok " .. i,
        { idle_timeout_ms = 400, metadata = { mock_deltas = "3", mock_interval_ms = "100" } })
    end
    tasks[6] = beeos.spawn(stream_all, client:agent("stall"), "stuck", { idle_timeout_ms = 400 })
    local replies, errs = beeos.gather(tasks)
    for i = 1, 5 do
      assert.is_nil(errs[i])
      assert.equals("echo: ok " .. i, replies[i].text)
    end
    assert.is_nil(replies[6])
    assert.equals("timeout", errs[6].kind)
    assert.equals("idle_timeout", errs[6].code)
    assert.is_true(#errs[6].text > 0, "the text received before the stall is kept")
  end)

  it("reports a task's raised error with that task and leaves the others alone", function()
    local agent = client:agent("echo")
    local good1 = beeos.spawn(function() return agent:send("a") end)
    local bad = beeos.spawn(function()
      local r = agent:send("b")
      error("boom after " .. r.text)
    end)
    local good2 = beeos.spawn(function() return stream_all(agent, "c") end)
    local replies, errs = beeos.gather(good1, bad, good2)
    assert.equals("echo: a", replies[1].text)
    assert.equals("echo: c", replies[3].text)
    assert.is_nil(errs[1])
    assert.is_nil(errs[3])
    assert.is_nil(replies[2])
    assert.equals("task", errs[2].kind)
    assert.equals("task_failed", errs[2].code)
    assert.equals(bad, errs[2].task)
    assert.truthy(errs[2].message:find("boom after echo: b", 1, true))
    assert.truthy(tostring(errs[2]):find("boom", 1, true))
    -- task:wait() gives the same outcome afterwards.
    local r, e = bad:wait()
    assert.is_nil(r)
    assert.equals(errs[2], e)
  end)

  it("lets a task close another task's stream; the mock sees the connection closed", function()
    local agent = client:agent("heartbeat")
    local slow_opts = { metadata = { mock_deltas = "50", mock_interval_ms = "100" } }
    local victim_stream
    local victim = beeos.spawn(function()
      local s, err = agent:stream("victim", slow_opts)
      if not s then return nil, err end
      victim_stream = s
      local n = 0
      for _ in s:events() do n = n + 1 end
      return n, s.err
    end)
    local others = {}
    for i = 1, 3 do
      others[i] = beeos.spawn(stream_all, agent, "other " .. i,
        { metadata = { mock_deltas = "6", mock_interval_ms = "100" } })
    end
    local killer = beeos.spawn(function()
      while not victim_stream do beeos.sleep(0.02) end
      beeos.sleep(0.25)
      victim_stream:close()
      return true
    end)
    local n, verr = victim:wait()
    assert.is_true(n >= 1 and n < 50, "the victim saw a few events, not all: " .. tostring(n))
    assert.equals("cancelled", verr.code)
    assert.is_true(killer:wait())
    local replies, errs = beeos.gather(others)
    for i = 1, 3 do
      assert.is_nil(errs[i])
      assert.equals(6, replies[i].deltas)
    end
    assert.truthy(m:wait_for(function(mm) return mm:stats().client_closed >= 1 end, 3))
  end)

  it("cancels a task: its transfer is removed and its connection closed", function()
    local agent = client:agent("heartbeat")
    local t = beeos.spawn(stream_all, agent, "doomed",
      { metadata = { mock_deltas = "100", mock_interval_ms = "100" } })
    local other = beeos.spawn(stream_all, agent, "survivor",
      { metadata = { mock_deltas = "5", mock_interval_ms = "100" } })
    local canceller = beeos.spawn(function()
      beeos.sleep(0.3)
      return t:cancel()
    end)
    local r, err = t:wait()
    assert.is_nil(r)
    assert.equals("task", err.kind)
    assert.equals("cancelled", err.code)
    assert.is_true(canceller:wait())
    local reply, oerr = other:wait()
    assert.is_nil(oerr)
    assert.equals(5, reply.deltas)
    assert.truthy(m:wait_for(function(mm) return mm:stats().client_closed >= 1 end, 3))
    assert.equals(0, client.transport.engine:active())
  end)

  it("lets a pcall inside a task see its cancellation through beeos.is_cancel", function()
    local agent = client:agent("heartbeat")
    local seen
    local t = beeos.spawn(function()
      local ok, e = pcall(stream_all, agent, "caught",
        { metadata = { mock_deltas = "100", mock_interval_ms = "100" } })
      seen = not ok and beeos.is_cancel(e)
      if not ok then error(e, 0) end
      return "not cancelled"
    end)
    local canceller = beeos.spawn(function()
      beeos.sleep(0.2)
      return t:cancel()
    end)
    local r, err = t:wait()
    assert.is_true(canceller:wait())
    assert.is_nil(r)
    assert.equals("cancelled", err.code)
    assert.is_true(seen)
  end)

  it("cancelling a task that has not started yet means it never runs", function()
    local ran = false
    local t = beeos.spawn(function() ran = true end)
    assert.is_true(t:cancel())
    local r, err = t:wait()
    assert.is_nil(r)
    assert.equals("cancelled", err.code)
    assert.is_false(ran)
  end)

  it("reuses connections across tasks: 200 sends from 10 tasks", function()
    local c2 = beeos.new{ base_url = m.url, api_key = m.token }
    local agent = c2:agent("echo")
    local tasks = {}
    for i = 1, 10 do
      tasks[i] = beeos.spawn(function()
        for j = 1, 20 do
          local r, err = agent:send(("t%d-%d"):format(i, j))
          if not r then return nil, err end
          assert(r.text == ("echo: t%d-%d"):format(i, j))
        end
        return true
      end)
    end
    local oks, errs = beeos.gather(tasks)
    for i = 1, 10 do
      assert.is_nil(errs[i])
      assert.is_true(oks[i])
    end
    local stats = m:stats()
    assert.equals(200, stats.requests)
    assert.is_true(stats.connections_accepted <= 12,
      "connections opened: " .. stats.connections_accepted)
    c2:close()
  end)

  it("blocks outside tasks and yields inside them with the same agent object", function()
    local agent = client:agent("echo")
    local outside = agent:send("outside")
    assert.equals("echo: outside", outside.text)
    local t = beeos.spawn(function()
      assert.is_true(beeos.in_task())
      local r = agent:send("inside")
      local s = agent:stream("inside stream")
      for _ in s:events() do end
      return r.text .. " / " .. s.reply.text
    end)
    assert.is_false(beeos.in_task())
    assert.equals("echo: inside / echo: inside stream", t:wait())
  end)

  it("sleeps in poll when idle: 200 silent streams cost no measurable CPU", function()
    local c3 = beeos.new{ base_url = m.url, api_key = m.token }
    local agent = c3:agent("stall")
    local tasks = {}
    for i = 1, 200 do
      tasks[i] = beeos.spawn(stream_all, agent, "quiet " .. i, { idle_timeout_ms = 3000 })
    end
    -- Let every stream get its headers and first delta, then measure a
    -- quiet second in which nothing arrives.
    local watcher = beeos.spawn(function()
      while m:stats().streams_active < 200 do beeos.sleep(0.05) end
      beeos.sleep(0.3)
      local cpu0, t0 = cpu_seconds(), core.now_ms()
      beeos.sleep(1.0)
      return cpu_seconds() - cpu0, core.now_ms() - t0
    end)
    local cpu, wall = watcher:wait()
    for i = 1, 200 do tasks[i]:cancel() end
    beeos.gather(tasks)
    assert.is_true(wall >= 900)
    assert.is_true(cpu <= 0.05, ("used %.2f s CPU in %d ms of idling"):format(cpu, wall))
    c3:close()
  end)

  it("leaks no handles or descriptors over 10 000 short tasks", function()
    collectgarbage()
    local fds_before_client = open_fds()
    local c4 = beeos.new{ base_url = m.url, api_key = m.token }
    local agent = c4:agent("echo")
    local function wave(n)
      local tasks = {}
      for i = 1, n do
        tasks[i] = beeos.spawn(function()
          if i % 10 == 0 then return agent:send("w" .. i) end
          beeos.sleep(0)
          return i
        end)
      end
      local vals, errs = beeos.gather(tasks)
      for i = 1, n do assert(errs[i] == nil and vals[i] ~= nil, tostring(errs[i])) end
    end
    wave(500) -- warm-up: pool, caches
    collectgarbage()
    collectgarbage()
    local mem0 = collectgarbage("count")
    local most_fds = 0
    for _ = 1, 19 do
      wave(500)
      most_fds = math.max(most_fds, open_fds())
    end
    collectgarbage()
    collectgarbage()
    local mem1 = collectgarbage("count")
    -- Each wave runs 50 sends at once, so the pool holds up to about 50
    -- connections between waves, however many were made in all (950).
    assert.is_true(most_fds <= fds_before_client + 60,
      ("descriptors: %d before the client, up to %d during"):format(fds_before_client, most_fds))
    assert.is_true(mem1 < mem0 + 512, ("Lua heap: %.0f KiB -> %.0f KiB"):format(mem0, mem1))
    assert.equals(0, c4.transport.engine:active())
    -- Closing the client gives every descriptor back (fewer is fine:
    -- earlier tests' garbage may be collected meanwhile).
    c4:close()
    local fds_after = open_fds()
    assert.is_true(fds_after <= fds_before_client,
      ("descriptors: %d before the client, %d after closing it"):format(fds_before_client, fds_after))
  end)

  it("runs the external event loop example (luv) to completion", function()
    local cmd = ("BEEOS_BASE_URL=%s BEEOS_API_KEY=%s LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' "
      .. "LUA_CPATH='./build/lua5.4/?.so;;' lua5.4 examples/external_loop.lua 2>&1"):format(m.url, m.token)
    local p = io.popen(cmd)
    local out = p:read("*a")
    local ok = p:close()
    assert.is_true(ok, out)
    assert.truthy(out:find("alpha: echo: hello alpha", 1, true), out)
    assert.truthy(out:find("beta: echo: hello beta", 1, true), out)
    assert.truthy(out:find("ticks of the outside loop: %d+"), out)
  end)
end)
