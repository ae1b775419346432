-- Shared by bench/sse_lua.lua and bench/sse_purelua.lua: loads a stream
-- into 16 KiB chunks (outside the timing, as a socket would hand them
-- over), times best-of-N runs on the wall clock and prints one RESULT line
-- that bench/run_sse.sh reads.
local core = require "beeos.core"

local H = {}

H.CHUNK = 16 * 1024

function H.load(path, chunk)
  chunk = chunk or H.CHUNK
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  local chunks = {}
  for i = 1, #s, chunk do chunks[#chunks + 1] = s:sub(i, i + chunk - 1) end
  return chunks, #s
end

-- fn(chunks) -> events, data_bytes, touch.  A run lasts at least min_secs
-- (the stream is parsed reps times) so the millisecond clock is precise
-- enough; the time per pass is what is reported.
function H.bench(impl, path, runs, fn, min_secs)
  runs = runs or 7
  min_secs = min_secs or 0.3
  local chunks, size = H.load(path)
  local events, data_bytes, touch
  local t0 = core.now_ms()
  events, data_bytes, touch = fn(chunks)
  local first = math.max((core.now_ms() - t0) / 1000, 1e-3)
  local reps = math.max(1, math.ceil(min_secs / first))
  local best = math.huge
  for _ = 1, runs do
    collectgarbage("collect")
    t0 = core.now_ms()
    for _ = 1, reps do events, data_bytes, touch = fn(chunks) end
    local secs = (core.now_ms() - t0) / 1000 / reps
    if secs < best then best = secs end
  end
  print(string.format("RESULT impl=%s bytes=%d events=%d data_bytes=%d secs=%.6f touch=%d",
    impl, size, events, data_bytes, best, touch))
end

return H
