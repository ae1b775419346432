-- Shared by bench/sse_lua.lua and bench/sse_purelua.lua: times best-of-N
-- runs over a stream file on the wall clock and prints one RESULT line that
-- bench/run_sse.sh reads.
--
-- The stream is read from the file in 16 KiB chunks during the run, as a
-- client receives it from a socket, rather than loaded into memory first:
-- 64 MiB held in the Lua heap sets the collector's pace (a cycle starts when
-- the heap has doubled, so ~70 MiB of garbage piles up between cycles, far
-- out of cache) and made the timings both slower and erratic (190-540 ms
-- for the same run on the small stream).  A client's heap is small.  The
-- cost of reading alone (best of its own runs, ~8 ms per 64 MiB) is
-- measured in the same process and subtracted, so the figure is the
-- parser's, comparable with the C and Node programs, which hold the stream
-- outside any collected heap.
local core = require "beeos.core"

local H = {}

H.CHUNK = 16 * 1024

local function chunks(path)
  local f = assert(io.open(path, "rb"))
  local read = f.read
  return function()
    local c = read(f, H.CHUNK)
    if not c then f:close() end
    return c
  end
end

local function read_only(path)
  local n = 0
  for c in chunks(path) do n = n + #c end
  return n
end

-- Best time of runs (each at least min_secs long: the stream is parsed
-- reps times, so the millisecond clock is precise enough) for one pass.
local function best_of(runs, min_secs, f)
  local t0 = core.now_ms()
  local a, b, c = f()
  local first = math.max((core.now_ms() - t0) / 1000, 1e-3)
  local reps = math.max(1, math.ceil(min_secs / first))
  local best = math.huge
  for _ = 1, runs do
    collectgarbage("collect")
    t0 = core.now_ms()
    for _ = 1, reps do a, b, c = f() end
    local secs = (core.now_ms() - t0) / 1000 / reps
    if secs < best then best = secs end
  end
  return best, a, b, c
end

-- fn(next_chunk) -> events, data_bytes, touch, where next_chunk() returns
-- the next 16 KiB of the stream or nil at its end.
function H.bench(impl, path, runs, fn, min_secs)
  runs = runs or 7
  min_secs = min_secs or 0.3
  local f = assert(io.open(path, "rb"))
  local size = f:seek("end")
  f:close()
  local read_secs = best_of(runs, min_secs, function() return read_only(path) end)
  local total, events, data_bytes, touch = best_of(runs, min_secs, function()
    return fn(chunks(path))
  end)
  print(string.format(
    "RESULT impl=%s bytes=%d events=%d data_bytes=%d secs=%.6f touch=%d read_secs=%.6f",
    impl, size, events, data_bytes, math.max(total - read_secs, 1e-6), touch, read_secs))
end

return H
