-- Streams an agent's reply into the terminal as it arrives, then prints the
-- conversation's context id and the time to the first delta.
--
--   BEEOS_BASE_URL=... BEEOS_API_KEY=... lua5.4 examples/chat.lua [agent-id] [message...]
--
-- `make demo` runs it against the bundled mock server.
local beeos = require "beeos"
local core = require "beeos.core"

local agent_id = arg[1] or os.getenv("BEEOS_AGENT") or "echo"
local message = #arg > 1 and table.concat(arg, " ", 2)
  or "Hello, BeeOS! Tell me how streaming works, one small piece at a time."

local client = beeos.new{}           -- base_url and api_key from the environment
local agent = client:agent(agent_id)

local started = core.now_ms()
local metadata = { demo = "chat.lua" }
-- The bundled mock paces its deltas by this knob; a real agent ignores it.
metadata.mock_interval_ms = os.getenv("BEEOS_DEMO_PACE_MS")
local stream, err = agent:stream(message, { metadata = metadata })
if not stream then
  io.stderr:write("request failed: ", tostring(err), "\n")
  os.exit(1)
end

local first_delta_ms
io.write(agent_id, "> ")
for ev in stream:events() do
  if ev.type == "delta" then
    first_delta_ms = first_delta_ms or (core.now_ms() - started)
    io.write(ev.text)
    io.flush()
  end
end
io.write("\n")

if stream.err then
  io.stderr:write("stream failed: ", tostring(stream.err), "\n")
  os.exit(1)
end
print(("context id: %s"):format(stream.reply.context_id))
print(("time to first delta: %d ms (whole reply: %d ms, request id %s)"):format(
  first_delta_ms or -1, core.now_ms() - started, tostring(stream.request_id)))
client:close()
