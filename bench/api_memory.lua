-- Agent API benchmark 3: peak memory (VmHWM) of a process that reads one
-- large streamed reply.
--
--   lua5.4 bench/api_memory.lua URL TOKEN MIB DELTA_BYTES keep|nokeep
--
-- The reply is MIB MiB of text in deltas of DELTA_BYTES bytes.  keep_text
-- is set on beeos.new.  Prints "vmhwm_kib N" (peak resident set at the end,
-- from /proc/self/status) and "start_vmhwm_kib N" (after the client was
-- made, before the stream).
local beeos = require "beeos"
local core = require "beeos.core"

local url, token = arg[1], arg[2]
local mib = tonumber(arg[3] or "100")
local delta = tonumber(arg[4] or "1024")
local keep_text = arg[5] == "keep"

local function status_kib(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

local total = mib * 1024 * 1024
local nevents = math.ceil(total / delta)
local client = beeos.new{ base_url = url, api_key = token, keep_text = keep_text }
local agent = client:agent("fast")
local start_hwm = status_kib("VmHWM")

local t0 = core.now_ms()
local stream = assert(agent:stream("hi", { metadata = {
  mock_events = tostring(nevents), mock_size = tostring(delta) } }))
local count, bytes = 0, 0
for ev in stream:events() do
  local text = ev.text
  if text then
    count = count + 1
    bytes = bytes + #text
  end
end
local dt = (core.now_ms() - t0) / 1000
assert(stream.reply, tostring(stream.err))
assert(count == nevents, ("got %d deltas, expected %d"):format(count, nevents))
local reply_text_bytes = #stream.reply.text
client:close()
print(("%d deltas of %d bytes (%.1f MiB of text) in %.2f s, keep_text=%s, reply.text %d bytes")
  :format(count, delta, bytes / 1048576, dt, tostring(keep_text), reply_text_bytes))
print(("start_vmhwm_kib %d"):format(start_hwm))
print(("vmhwm_kib %d"):format(status_kib("VmHWM")))
