-- Agent API benchmark, the baseline: what a Lua user would write without
-- the SDK.  LuaSocket for the connection, HTTP/1.1 chunked decoding the way
-- socket.http does it (receive("*l") for each chunk-size line, then
-- receive(size) for the chunk), a string.find-based SSE parser, and
-- cjson.decode of each delta's data.  Events reach the same kind of loop as
-- the SDK's: `for ev in events() do ... ev.text ... end`.
--
--   lua5.4 bench/api_luasocket.lua URL TOKEN EVENTS [RUNS]
--
-- Prints one line per run and a last line "best_events_per_s N".
local socket = require "socket"
local cjson = require "cjson"

local url, token = arg[1], arg[2]
local nevents = tonumber(arg[3] or "1000000")
local runs = tonumber(arg[4] or "1")
local host, port, prefix = url:match("^http://([^:/]+):(%d+)(.*)$")
assert(host, "URL must be http://host:port")

local find, sub, decode = string.find, string.sub, cjson.decode

-- Incremental SSE parser: feed(chunk) appends complete events to out.
local function new_parser()
  local partial = nil            -- start of a line split across chunks
  local etype, data, id = nil, nil, ""
  local ndata, datas = 0, {}
  return function(chunk, out, nout)
    if partial then chunk = partial .. chunk; partial = nil end
    local pos, len = 1, #chunk
    while pos <= len do
      local nl = find(chunk, "\n", pos, true)
      if not nl then partial = sub(chunk, pos); break end
      local last = nl - 1
      if last >= pos and find(chunk, "^\r", last) then last = last - 1 end
      if last < pos then
        -- blank line: dispatch
        if ndata > 0 then
          data = ndata == 1 and datas[1] or table.concat(datas, "\n", 1, ndata)
          local ev = { type = etype or "message", data = data, id = id }
          if ev.type == "delta" then ev.text = decode(data).text end
          nout = nout + 1
          out[nout] = ev
        end
        etype, ndata = nil, 0
      else
        local colon = find(chunk, ":", pos, true)
        local field, value
        if colon and colon <= last then
          field = sub(chunk, pos, colon - 1)
          local vs = colon + 1
          if sub(chunk, vs, vs) == " " then vs = vs + 1 end
          value = sub(chunk, vs, last)
        else
          field, value = sub(chunk, pos, last), ""
        end
        if field == "data" then
          ndata = ndata + 1
          datas[ndata] = value
        elseif field == "event" then
          etype = value
        elseif field == "id" then
          id = value
        end                                  -- "" (comment), retry: ignored
      end
      pos = nl + 1
    end
    return nout
  end
end

local function stream_events()
  local body = cjson.encode({
    message = "hi", idempotency_key = "bench-" .. tostring(os.time()),
    metadata = { mock_events = tostring(nevents) },
  })
  local sock = assert(socket.tcp())
  assert(sock:connect(host, tonumber(port)))
  sock:setoption("tcp-nodelay", true)
  assert(sock:send(table.concat({
    "POST " .. prefix .. "/api/v1/agents/fast/messages HTTP/1.1",
    "Host: " .. host .. ":" .. port,
    "Authorization: Bearer " .. token,
    "Content-Type: application/json",
    "Accept: text/event-stream",
    "Content-Length: " .. #body,
    "", body,
  }, "\r\n")))
  local status = assert(sock:receive("*l"))
  assert(status:match("^HTTP/1%.1 200"), status)
  local chunked = false
  while true do
    local line = assert(sock:receive("*l"))
    if line == "" then break end
    if line:lower():match("^transfer%-encoding:%s*chunked") then chunked = true end
  end
  assert(chunked, "expected a chunked stream")
  local feed = new_parser()
  local batch, i, n, finished = {}, 0, 0, false
  return function()
    while true do
      i = i + 1
      if i <= n then
        local ev = batch[i]
        batch[i] = nil
        return ev
      end
      if finished then sock:close(); return nil end
      -- next HTTP chunk
      local size_line = assert(sock:receive("*l"))
      local size = tonumber(size_line:match("^%x+"), 16)
      if size == 0 then
        repeat local l = assert(sock:receive("*l")) until l == ""
        finished = true
        i, n = 0, 0
      else
        local chunk = assert(sock:receive(size))
        assert(sock:receive("*l") == "")
        i = 0
        n = feed(chunk, batch, 0)
      end
    end
  end
end

local best = 0
for r = 1, runs do
  local t0 = socket.gettime()
  local count, bytes, done = 0, 0, false
  for ev in stream_events() do
    local text = ev.text
    if text then
      count = count + 1
      bytes = bytes + #text
    elseif ev.type == "done" then
      done = true
    end
  end
  local dt = socket.gettime() - t0
  assert(count == nevents and done, ("got %d deltas (done: %s)"):format(count, tostring(done)))
  local rate = count / dt
  if rate > best then best = rate end
  print(("run %d: %d deltas, %d text bytes in %.3f s: %.0f events/s"):format(r, count, bytes, dt, rate))
end
print(("best_events_per_s %.0f"):format(best))
