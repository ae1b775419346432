-- Concurrency benchmark client (issue 4); bench/run_concurrency.sh runs it
-- against the nginx load server of bench/loadserver/.
--
--   lua5.4 bench/concurrency_bench.lua MODE
--
-- MODE
--   concurrent  a single stream (median of 3, after a warm-up), then
--               BENCH_N streams at once: BENCH_N tasks of one client
--   spread      the same BENCH_N streams, each with a random 0..interval
--               delay before its second delta (mock_phase_ms), so that the
--               streams' deltas arrive out of step, as real replies do
--   sequential  BENCH_SEQ_N streams one after another: agent:stream in a
--               plain loop, outside any task
--   idle        BENCH_N silent streams (headers, then nothing) held open;
--               CPU and context switches of this process over BENCH_IDLE_S s
--   one         one stream in this process (the one-process-per-conversation
--               baseline); prints a PROC line with its times and memory
--
-- Environment: BENCH_URL, BENCH_TOKEN (required); BENCH_N (1000),
-- BENCH_SEQ_N (20), BENCH_DELTAS (10), BENCH_INTERVAL_MS (100),
-- BENCH_IDLE_S (5).
--
-- Output: "RESULT <mode>.<key>=<value>" lines (bench/concurrency_report.lua
-- reads them); PROC lines in mode one; diagnostics on stderr.
local beeos = require "beeos"
local core = require "beeos.core"

local now_ms = core.now_ms
local MODE = arg[1] or "concurrent"
local URL = os.getenv("BENCH_URL") or error("BENCH_URL is required")
local TOKEN = os.getenv("BENCH_TOKEN") or error("BENCH_TOKEN is required")
local N = tonumber(os.getenv("BENCH_N") or "1000")
local SEQ_N = tonumber(os.getenv("BENCH_SEQ_N") or "20")
local DELTAS = tonumber(os.getenv("BENCH_DELTAS") or "10")
local INTERVAL_MS = tonumber(os.getenv("BENCH_INTERVAL_MS") or "100")
local IDLE_S = tonumber(os.getenv("BENCH_IDLE_S") or "5")

-- ---------------------------------------------------------------------
-- /proc readers

local function slurp(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- A field of /proc/self/status in KiB (VmRSS, VmHWM) or as a count.
local function status_field(name)
  return tonumber(slurp("/proc/self/status"):match(name .. ":%s*(%d+)")) or 0
end

local TICK = 100 -- USER_HZ; Linux reports /proc times in 1/100 s
-- utime + stime of this process, seconds (10 ms resolution).
local function cpu_s()
  local rest = slurp("/proc/self/stat"):match("%) (.*)")
  local f = {}
  for v in rest:gmatch("%S+") do f[#f + 1] = v end
  return (tonumber(f[12]) + tonumber(f[13])) / TICK
end

-- Time on CPU of this process (all threads' main thread: the SDK is
-- single-threaded), nanoseconds: a finer clock than the ticks above.
local function oncpu_ns()
  return tonumber(slurp("/proc/self/schedstat"):match("^(%d+)")) or 0
end

-- Time this process spent runnable but waiting for a CPU (other processes
-- had it), nanoseconds: how much a noisy machine stretched a wall time.
local function runq_ns()
  return tonumber(slurp("/proc/self/schedstat"):match("^%d+%s+(%d+)")) or 0
end

local function ctx_switches()
  local s = slurp("/proc/self/status")
  return tonumber(s:match("voluntary_ctxt_switches:%s*(%d+)")) or 0,
    tonumber(s:match("nonvoluntary_ctxt_switches:%s*(%d+)")) or 0
end

local function pss_kb()
  return tonumber(slurp("/proc/self/smaps_rollup"):match("Pss:%s*(%d+)")) or 0
end

local function result(key, value)
  if type(value) == "number" and value ~= math.floor(value) then
    value = ("%.6g"):format(value)
  end
  io.stdout:write("RESULT ", MODE, ".", key, "=", tostring(value), "\n")
end

-- ---------------------------------------------------------------------

local client = beeos.new{ base_url = URL, api_key = TOKEN }
local paced = { metadata = { mock_deltas = tostring(DELTAS), mock_interval_ms = tostring(INTERVAL_MS) } }
local expected = {}
for i = 1, DELTAS do expected[i] = ("w%d "):format(i) end
expected = table.concat(expected)

-- Counters shared by every stream of this process.
local live = { opened = 0, finished = 0, on_all_open = nil }

-- One conversation: open the stream, read every event.  Returns
-- { deltas, events } or nil, err.  Works inside and outside tasks.
local function converse(agent, message, opts)
  local s, err = agent:stream(message, opts)
  if not s then return nil, err end
  live.opened = live.opened + 1
  if live.opened == live.target and live.on_all_open then live.on_all_open() end
  local deltas, events = 0, 0
  for ev in s:events() do
    events = events + 1
    if ev.type == "delta" then deltas = deltas + 1 end
  end
  live.finished = live.finished + 1
  if not s.reply then return nil, s.err end
  if deltas ~= DELTAS or s.reply.text ~= expected then
    return nil, ("wrong reply: %d deltas, text %q"):format(deltas, s.reply.text)
  end
  return { deltas = deltas, events = events }
end

local function check(values, errs, n)
  local events, failed, first = 0, 0, nil
  for i = 1, n do
    if values[i] then
      events = events + values[i].events
    else
      failed = failed + 1
      first = first or tostring(errs[i])
    end
  end
  if first then io.stderr:write("first error: ", first, "\n") end
  return events, failed
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

local modes = {}

local function many(opts, singles_too)
  local agent = client:agent("paced")
  -- Warm-up: code paths, one pooled connection, the cjson instance.
  assert(beeos.spawn(converse, agent, "warm-up", opts):wait())
  if singles_too then
    local singles = {}
    for k = 1, 3 do
      local t0 = now_ms()
      local v, err = beeos.spawn(converse, agent, "single " .. k, opts):wait()
      singles[k] = now_ms() - t0
      assert(v, tostring(err))
    end
    result("single_ms", median(singles))
    result("single_min_ms", math.min(table.unpack(singles)))
  end

  collectgarbage("collect")
  collectgarbage("collect")
  local rss0, heap0 = status_field("VmRSS"), collectgarbage("count")
  local hwm0 = status_field("VmHWM")
  live.opened, live.finished, live.target = 0, 0, N
  local open = {}
  live.on_all_open = function()
    open.at_ms = now_ms()
    open.rss = status_field("VmRSS")
    open.heap = collectgarbage("count")
    open.finished_before = live.finished
  end
  local v0 = ctx_switches()
  local rq0 = runq_ns()
  local cpu0, ns0, t0 = cpu_s(), oncpu_ns(), now_ms()
  local tasks = {}
  for i = 1, N do tasks[i] = beeos.spawn(converse, agent, "stream " .. i, opts) end
  local values, errs = beeos.gather(tasks)
  local wall = now_ms() - t0
  local cpu, ns = cpu_s() - cpu0, oncpu_ns() - ns0
  local rq = runq_ns() - rq0
  local wakeups = ctx_switches() - v0
  local events, failed = check(values, errs, N)
  result("n", N)
  result("deltas", DELTAS)
  result("interval_ms", INTERVAL_MS)
  result("wall_ms", wall)
  result("failed", failed)
  result("events", events)
  result("cpu_s", cpu)
  result("oncpu_s", ns / 1e9)
  result("runq_s", rq / 1e9)
  result("wakeups", wakeups)
  result("rss_before_kb", rss0)
  result("heap_before_kb", math.floor(heap0))
  if open.rss then
    result("all_open_after_ms", open.at_ms - t0)
    result("finished_before_all_open", open.finished_before)
    result("rss_all_open_kb", open.rss)
    result("heap_all_open_kb", math.floor(open.heap))
  end
  local hwm = status_field("VmHWM")
  result("hwm_kb", hwm)
  result("hwm_grew_kb", hwm - math.max(hwm0, rss0))
  client:close()
end

function modes.concurrent() many(paced, true) end

function modes.spread()
  many({ metadata = { mock_deltas = paced.metadata.mock_deltas,
    mock_interval_ms = paced.metadata.mock_interval_ms, mock_phase_ms = tostring(INTERVAL_MS) } }, false)
end

function modes.sequential()
  local agent = client:agent("paced")
  assert(converse(agent, "warm-up", paced))
  local rq0 = runq_ns()
  local cpu0, ns0, t0 = cpu_s(), oncpu_ns(), now_ms()
  local events, failed = 0, 0
  for i = 1, SEQ_N do
    local v, err = converse(agent, "seq " .. i, paced)
    if v then events = events + v.events else
      failed = failed + 1
      io.stderr:write("sequential: ", tostring(err), "\n")
    end
  end
  result("n", SEQ_N)
  result("wall_ms", now_ms() - t0)
  result("cpu_s", cpu_s() - cpu0)
  result("oncpu_s", (oncpu_ns() - ns0) / 1e9)
  result("runq_s", (runq_ns() - rq0) / 1e9)
  result("events", events)
  result("failed", failed)
  result("rss_kb", status_field("VmRSS"))
  client:close()
end

function modes.idle()
  local agent = client:agent("silent")
  live.opened, live.target = 0, N
  local quiet = { idle_timeout_ms = 600000 }
  local tasks = {}
  for i = 1, N do tasks[i] = beeos.spawn(converse, agent, "quiet " .. i, quiet) end
  local watcher = beeos.spawn(function()
    local t0 = now_ms()
    while live.opened < N and now_ms() - t0 < 30000 do beeos.sleep(0.05) end
    local opened = live.opened
    beeos.sleep(0.5) -- let the connection set-up settle
    local cpu0, ns0, v0, nv0, w0 = cpu_s(), oncpu_ns(), ctx_switches()
    w0 = now_ms()
    beeos.sleep(IDLE_S)
    local v1, nv1 = ctx_switches()
    return { opened = opened, cpu = cpu_s() - cpu0, oncpu = (oncpu_ns() - ns0) / 1e9,
      wall = now_ms() - w0, vol = v1 - v0, invol = nv1 - nv0, rss = status_field("VmRSS") }
  end)
  local m = watcher:wait()
  for i = 1, N do tasks[i]:cancel() end
  beeos.gather(tasks)
  result("n", N)
  result("opened", m.opened)
  result("wait_ms", m.wall)
  result("cpu_s", m.cpu)
  result("oncpu_s", m.oncpu)
  result("wakeups", m.vol)
  result("preempted", m.invol)
  result("rss_kb", m.rss)
  client:close()
end

function modes.one()
  local start = now_ms()
  local agent = client:agent("paced")
  local opened_at, rss, pss
  live.target = 1
  live.on_all_open = function()
    opened_at = now_ms()
    rss, pss = status_field("VmRSS"), pss_kb()
  end
  local v, err = converse(agent, "proc " .. (arg[2] or "?"), paced)
  local done = now_ms()
  if not v then io.stderr:write("one: ", tostring(err), "\n") end
  io.stdout:write(("PROC start=%d open=%d end=%d rss_kb=%d pss_kb=%d events=%d ok=%d\n")
    :format(start, opened_at or done, done, rss or 0, pss or 0, v and v.events or 0, v and 1 or 0))
  client:close()
end

local fn = modes[MODE] or error("unknown mode " .. MODE)
fn()
