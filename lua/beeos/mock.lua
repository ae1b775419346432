--- Offline mock of the BeeOS agent API (see docs/protocol.md and docs/mock.md).
--
-- The demo, the test suite and users run it instead of the real service, so it
-- speaks exactly the wire format of docs/protocol.md and adds "agents" that
-- misbehave on purpose (see AGENTS below) to exercise the SDK's error paths.
--
-- Design: one coroutine per connection over non-blocking luasocket sockets,
-- driven by a single socket.select loop.  A coroutine yields whenever it would
-- block (read, write, or a pacing timer) and the loop resumes it when its socket
-- is ready or its timer is due.  This keeps hundreds of slow streams cheap and
-- lets a stalled or slow agent wait without holding up anyone else.
--
-- Usage:
--   local mock = require "beeos.mock"
--   mock.serve{ host = "127.0.0.1", port = 0, token = "test-token",
--               on_ready = function(url, port) end }   -- runs forever

local socket = require "socket"
local cjson = require "cjson"

local _M = { _VERSION = "0.1.0" }

-- A private cjson instance, so settings here never leak into (or get changed
-- by) the SDK or a test running in the same Lua state.
local json = cjson.new()
-- Strict numbers: a body that decodes is then valid JSON, which lets us embed
-- the raw body verbatim in /_mock/requests (see encode_record).
json.decode_invalid_numbers(false)
json.encode_invalid_numbers(false)

local now = socket.gettime
local byte, char, concat, fmt = string.byte, string.char, table.concat, string.format

-- Limits.  select() cannot watch descriptors >= FD_SETSIZE (1024 on Linux),
-- so the accept loop stops below it and lets the kernel backlog queue the rest.
local RECV_CHUNK = 65536
local MAX_HEAD = 64 * 1024
local MAX_BODY = 32 * 1024 * 1024
local MAX_PIPELINED = 1024 * 1024
local DEFAULT_MAX_CONNECTIONS = 1000
local FD_SETSIZE = 1024
local LISTEN_BACKLOG = 1024
local SERVER_WINDOW_MS = 115000 -- the real service's longest wait for an agent

local BOM = "\239\187\191"

local REASONS = {
  [100] = "Continue", [200] = "OK", [301] = "Moved Permanently", [302] = "Found",
  [303] = "See Other", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
  [409] = "Conflict", [411] = "Length Required", [413] = "Payload Too Large",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- Error codes per status, as in docs/protocol.md's table; used when an agent is
-- asked for a status without an explicit mock_code.
local CODES = {
  [400] = "bad_request", [401] = "unauthorized", [403] = "forbidden",
  [404] = "not_found", [405] = "method_not_allowed", [408] = "request_timeout",
  [409] = "conflict", [411] = "length_required", [413] = "payload_too_large",
  [422] = "unprocessable", [429] = "rate_limited", [431] = "headers_too_large",
  [500] = "server_error", [502] = "bad_gateway", [503] = "unavailable",
  [504] = "service_timeout",
}

local function code_for(status)
  if CODES[status] then return CODES[status] end
  if status >= 300 and status < 400 then return "redirect" end
  if status >= 500 then return "server_error" end
  return "http_" .. status
end

-- Error values thrown inside connection coroutines.  Tables, so they can never
-- be confused with a Lua runtime error message.
local PEER_CLOSED = setmetatable({}, { __tostring = function() return "peer closed" end })
local CLOSE_NOW = setmetatable({}, { __tostring = function() return "close now" end })

----------------------------------------------------------------------------
-- Connection I/O.  Everything below runs inside a connection's coroutine.
----------------------------------------------------------------------------

-- Park the coroutine until the socket is readable / writable, or `delay`
-- seconds pass.  Returns why it woke: "read", "write" or "timer".
local function wait(c, read, write, delay)
  c.wait_read, c.wait_write = read, write
  c.wake_at = delay and (now() + delay) or nil
  local why = coroutine.yield()
  c.wait_read, c.wait_write, c.wake_at = false, false, nil
  return why
end

-- Let the loop serve other connections, then carry on at the next turn.
-- Long writes call this so one fast stream cannot starve the rest.
local function yield_now(c)
  wait(c, false, false, 0)
end

-- Next bytes from the peer (at least one).  Throws PEER_CLOSED at EOF or on a
-- socket error.  Asking luasocket for a big block with timeout 0 returns what
-- is there as the "partial" result, which drains its internal buffer, so
-- select() stays an accurate readiness signal.
local function recv_some(c)
  while true do
    local data, err, partial = c.sock:receive(RECV_CHUNK)
    local got = data or partial
    if got and got ~= "" then return got end
    if err ~= "timeout" then error(PEER_CLOSED, 0) end
    wait(c, true, false)
  end
end

-- Send all of `data`.  With timeout 0 luasocket sends what the kernel takes and
-- reports the index of the last byte sent, so resume from there once writable.
local function send_all(c, data)
  local i, n = 1, #data
  while i <= n do
    local last, err, elast = c.sock:send(data, i)
    if last then
      i = last + 1
    elseif err == "timeout" then
      i = elast + 1
      wait(c, false, true)
    else
      error(PEER_CLOSED, 0) -- "closed", "Broken pipe", "Connection reset by peer"
    end
  end
end

-- Look at the socket without consuming the next request: bytes the client
-- pipelines are kept for later, EOF means the client went away.
local function poll_peer(c)
  local data, err, partial = c.sock:receive(RECV_CHUNK)
  local got = data or partial
  if got and got ~= "" then
    c.buf = c.buf .. got
  elseif err ~= "timeout" then
    error(PEER_CLOSED, 0)
  end
end

-- Pause `ms` milliseconds while still noticing a client that hangs up, so a
-- cancelled slow request or stream is counted and freed at once.
local function sleep(c, ms)
  local deadline = now() + ms / 1000
  while true do
    local left = deadline - now()
    if left <= 0 then return end
    -- Stop reading once a lot is buffered: a flood of pipelined bytes must not
    -- grow memory without bound.
    if wait(c, #c.buf < MAX_PIPELINED, false, left) == "read" then poll_peer(c) end
  end
end

-- Never answer; return only by throwing PEER_CLOSED when the client gives up.
local function hold(c)
  while true do
    if #c.buf < MAX_PIPELINED then
      if wait(c, true, false) == "read" then poll_peer(c) end
    else
      wait(c, false, false, 1) -- flooded: stop reading, just idle
    end
  end
end

----------------------------------------------------------------------------
-- HTTP request parsing
----------------------------------------------------------------------------

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function tokens(value)
  local set = {}
  for t in (value or ""):gmatch("[^,%s]+") do set[t:lower()] = true end
  return set
end

-- Read the next request head.  Returns nil when the client closes cleanly
-- between requests, the request table, or throws {status=...} for a bad one.
local function read_head(c)
  local from = 1
  while true do
    -- Blank lines before a request line are ignored (RFC 9112 2.2).
    if c.buf:find("^[\r\n]") then c.buf = c.buf:gsub("^[\r\n]+", "") end
    local s, e = c.buf:find("\r?\n\r?\n", from)
    if s then
      local head = c.buf:sub(1, s - 1)
      c.buf = c.buf:sub(e + 1)
      return head
    end
    if #c.buf > MAX_HEAD then error({ status = 431, message = "request head too large" }, 0) end
    from = math.max(1, #c.buf - 3)
    local ok, got = pcall(recv_some, c)
    if not ok then
      if got == PEER_CLOSED and c.buf == "" then return nil end
      error(got, 0)
    end
    c.idle = false
    c.buf = c.buf .. got
  end
end

local function read_body(c, n)
  if #c.buf >= n then
    local body = c.buf:sub(1, n)
    c.buf = c.buf:sub(n + 1)
    return body
  end
  -- Collect pieces in a table: repeated concatenation would be quadratic for
  -- multi-megabyte bodies.
  local parts, have = { c.buf }, #c.buf
  c.buf = ""
  while have < n do
    local got = recv_some(c)
    parts[#parts + 1] = got
    have = have + #got
  end
  local all = concat(parts)
  c.buf = all:sub(n + 1)
  return all:sub(1, n)
end

local function parse_head(head)
  local lines = {}
  for line in (head .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = line end
  local method, target, major, minor = (lines[1] or ""):match("^(%u+) (%S+) HTTP/(%d)%.(%d)$")
  if not method then error({ status = 400, message = "malformed request line" }, 0) end
  local headers = {}
  for i = 2, #lines do
    local name, value = lines[i]:match("^([^:%s]+):[ \t]*(.-)[ \t]*$")
    if not name then error({ status = 400, message = "malformed header line" }, 0) end
    name = name:lower()
    -- Repeated fields combine into one comma-separated value (RFC 9110 5.3).
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  local path, query = target:match("^([^?]*)%??(.*)$")
  local http10 = major == "1" and minor == "0"
  local conn = tokens(headers["connection"])
  return {
    method = method, target = target, path = path, query = query,
    version = major .. "." .. minor, headers = headers,
    keep_alive = not conn.close and (not http10 or conn["keep-alive"] == true),
  }
end

----------------------------------------------------------------------------
-- Server state
----------------------------------------------------------------------------

local Server = {}
Server.__index = Server

local function next_id(self, kind)
  self.ids[kind] = self.ids[kind] + 1
  return self.ids[kind]
end

local function log(self, ...)
  if self.log then self.log(concat({ ... }, " ")) end
end

----------------------------------------------------------------------------
-- Responses
----------------------------------------------------------------------------

-- Write a complete response with a Content-Length body.  `headers` is a list
-- of {name, value}.  Returns whether the connection may stay open.
local function respond(c, req, status, headers, body, keep)
  body = body or ""
  if keep == nil then keep = req.keep_alive end
  local parts = { "HTTP/1.1 ", status, " ", REASONS[status] or "Status", "\r\n" }
  for _, h in ipairs(headers or {}) do
    parts[#parts + 1] = h[1] .. ": " .. h[2] .. "\r\n"
  end
  parts[#parts + 1] = "X-Request-Id: " .. req.id .. "\r\n"
  parts[#parts + 1] = "Content-Length: " .. #body .. "\r\n"
  parts[#parts + 1] = keep and "Connection: keep-alive\r\n\r\n" or "Connection: close\r\n\r\n"
  -- Avoid copying a multi-megabyte body just to prepend the head.
  if #body > 65536 then
    send_all(c, concat(parts))
    send_all(c, body)
  else
    parts[#parts + 1] = body
    send_all(c, concat(parts))
  end
  return keep
end

local function send_json(c, req, status, value, extra, keep)
  local headers = { { "Content-Type", "application/json" } }
  for _, h in ipairs(extra or {}) do headers[#headers + 1] = h end
  return respond(c, req, status, headers, type(value) == "string" and value or json.encode(value), keep)
end

local function send_error(c, req, status, code, message, extra, keep)
  return send_json(c, req, status, { error = { code = code, message = message } }, extra, keep)
end

-- Chunked SSE response.  `eol` is the line ending used inside events,
-- `bytewise` writes every body byte as its own chunk (each its own send).
local Stream = {}
Stream.__index = Stream

local function open_stream(self, c, ctx, opts)
  opts = opts or {}
  send_all(c, concat {
    "HTTP/1.1 200 OK\r\n",
    "Content-Type: text/event-stream\r\n",
    "Cache-Control: no-cache\r\n",
    "Transfer-Encoding: chunked\r\n",
    "X-Request-Id: ", ctx.req.id, "\r\n",
    ctx.req.keep_alive and "Connection: keep-alive\r\n" or "Connection: close\r\n",
    "\r\n",
  })
  c.streaming = true
  self.stats.streams_active = self.stats.streams_active + 1
  return setmetatable({ server = self, c = c, eol = opts.eol or "\n",
                        bytewise = opts.bytewise, next_id = 0 }, Stream)
end

function Stream:chunk(data)
  if data == "" then return end -- a zero-size chunk would end the body
  if self.bytewise then
    for i = 1, #data do
      send_all(self.c, "1\r\n" .. data:sub(i, i) .. "\r\n")
      yield_now(self.c) -- one byte per loop turn: separate sends, separate reads
    end
  else
    send_all(self.c, fmt("%x\r\n", #data) .. data .. "\r\n")
  end
end

-- Format one event.  `id == true` takes the next number.
function Stream:format(name, data, id)
  local eol = self.eol
  if type(data) ~= "string" then data = json.encode(data) end
  if id == true then
    self.next_id = self.next_id + 1
    id = self.next_id
  end
  return concat { "event: ", name, eol, id and ("id: " .. id .. eol) or "", "data: ", data, eol, eol }
end

function Stream:event(name, data, id)
  self:chunk(self:format(name, data, id))
end

function Stream:comment(text)
  self:chunk(": " .. text .. self.eol .. self.eol)
end

-- The chunked terminator: a clean end of the body.
function Stream:finish()
  send_all(self.c, "0\r\n\r\n")
  self.c.streaming = false
  self.server.stats.streams_active = self.server.stats.streams_active - 1
end

----------------------------------------------------------------------------
-- Agents
----------------------------------------------------------------------------

-- Split `s` into pieces of `n` characters, cutting only at UTF-8 character
-- starts.  Bytes that are not valid UTF-8 count as one character each, so any
-- input is accepted.
local function split_chars(s, n)
  local pieces, i, len = {}, 1, #s
  n = math.max(1, math.floor(n))
  while i <= len do
    local j, count = i, 0
    while j <= len and count < n do
      j = j + 1
      while j <= len do
        local b = byte(s, j)
        if b < 0x80 or b > 0xBF then break end
        j = j + 1
      end
      count = count + 1
    end
    pieces[#pieces + 1] = s:sub(i, j - 1)
    i = j
  end
  return pieces
end

-- Split `s` into exactly `n` pieces of near-equal character counts (some may be
-- empty when `s` is short); used where the number of events is the knob.
local function split_into(s, n)
  local chars = split_chars(s, 1)
  local pieces, per, k = {}, math.ceil(#chars / math.max(1, n)), 1
  for p = 1, n do
    local last = math.min(#chars, k + per - 1)
    pieces[p] = concat(chars, "", k, last)
    k = last + 1
  end
  return pieces
end

local function knob(ctx, name, default)
  local v = ctx.meta["mock_" .. name]
  if v == nil then return default end
  return v
end

local function knob_num(ctx, name, default)
  local v = tonumber(knob(ctx, name, nil))
  if v == nil or v ~= v or v < 0 then return default end
  return v
end

-- The mock_extra knob: a JSON object whose fields are added to reply objects
-- and deltas (fields a future server might send).  Anything else: none.
local function extra_fields(ctx)
  local v = knob(ctx, "extra", nil)
  if v == nil then return nil end
  local ok, t = pcall(json.decode, v)
  if ok and type(t) == "table" and next(t) ~= nil and #t == 0 then return t end
  return nil
end

local function with_extra(ctx, obj)
  local extra = extra_fields(ctx)
  if extra then
    for k, v in pairs(extra) do
      if obj[k] == nil then obj[k] = v end
    end
  end
  return obj
end

local function reply_object(self, ctx, text)
  return with_extra(ctx, {
    message_id = "msg_" .. next_id(self, "msg"),
    in_reply_to = ctx.key,
    context_id = ctx.context_id,
    content = text,
  })
end

local function echo_text(ctx)
  return "echo: " .. ctx.body.message
end

-- The normal reply: JSON, or a paced SSE stream of deltas then done.
-- `o` customises the stream for the fault agents:
--   eol, bytewise  passed to open_stream
--   prefix         raw bytes written before the first event (bom)
--   between(S, i)  called before delta i > 1 (comments, unknown events)
--   pieces         the delta texts instead of mock_chunk splitting
--   interval       default pacing in ms
--   no_done        end cleanly without the done event
local function reply(self, c, ctx, text, o)
  o = o or {}
  if not ctx.stream then
    return send_json(c, ctx.req, 200, reply_object(self, ctx, text))
  end
  local S = open_stream(self, c, ctx, o)
  local pieces = o.pieces or split_chars(text, knob_num(ctx, "chunk", o.chunk or 4))
  local interval = knob_num(ctx, "interval_ms", o.interval or 5)
  if o.prefix then S:chunk(o.prefix) end
  for i, piece in ipairs(pieces) do
    if i > 1 then
      if interval > 0 then sleep(c, interval) end
      if o.between then o.between(S, i) end
    end
    S:event("delta", with_extra(ctx, { text = piece }), true)
  end
  if not o.no_done then S:event("done", reply_object(self, ctx, text)) end
  S:finish()
  return ctx.req.keep_alive
end

-- How many times this idempotency key has reached this agent (this one
-- included).  A request without a key shares one counter per agent.
local function attempt(self, ctx)
  local k = ctx.agent .. "\0" .. (ctx.sent_key or "")
  local n = (self.attempts[k] or 0) + 1
  self.attempts[k] = n
  return n
end

local function retry_headers(ctx, default_after)
  local h = {}
  local after = knob(ctx, "retry_after", default_after)
  if after then h[#h + 1] = { "Retry-After", tostring(after) } end
  local after_ms = knob(ctx, "retry_after_ms", nil)
  if after_ms then h[#h + 1] = { "retry-after-ms", tostring(after_ms) } end
  local should = knob(ctx, "should_retry", nil)
  if should then h[#h + 1] = { "x-should-retry", tostring(should) } end
  return h
end

local function failing(status, code, default_after)
  return function(self, c, ctx)
    local n = attempt(self, ctx)
    if n <= knob_num(ctx, "fail", 1) then
      local st = status or math.floor(knob_num(ctx, "status", 503))
      return send_error(c, ctx.req, st, knob(ctx, "code", code or code_for(st)),
                        "mock failure on attempt " .. n, retry_headers(ctx, default_after))
    end
    return reply(self, c, ctx, echo_text(ctx))
  end
end

local huge_cache = {}
local function huge_text(size)
  size = math.floor(size)
  if not huge_cache[size] then
    local unit = "abcdefghijklmnopqrstuvwxyz012345"
    huge_cache = { [size] = string.rep(unit, size // #unit + 1):sub(1, size) }
  end
  return huge_cache[size]
end

local HTML_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
  .. "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
  .. "</body>\r\n</html>\r\n"

local AGENTS = {}

AGENTS["rate-limited"] = failing(429, "rate_limited", "0")
AGENTS["unavailable"] = failing(503, "unavailable", nil)
AGENTS["fail-then-ok"] = failing(nil, nil, nil)

AGENTS["status"] = function(self, c, ctx)
  local st = math.floor(knob_num(ctx, "status", 500))
  local extra = retry_headers(ctx, nil)
  if st >= 300 and st < 400 then extra[#extra + 1] = { "Location", knob(ctx, "location", "/elsewhere") } end
  return send_error(c, ctx.req, st, knob(ctx, "code", code_for(st)), "mock status " .. st, extra)
end

AGENTS["slow"] = function(self, c, ctx)
  local delay = knob_num(ctx, "delay_ms", 60000)
  local window = math.min(ctx.timeout_ms or SERVER_WINDOW_MS, SERVER_WINDOW_MS)
  if delay <= window then
    sleep(c, delay)
    return reply(self, c, ctx, echo_text(ctx))
  end
  sleep(c, window)
  return send_error(c, ctx.req, 504, "service_timeout",
                    "agent did not reply within " .. math.floor(window) .. " ms")
end

AGENTS["stall"] = function(self, c, ctx)
  if ctx.stream then
    local S = open_stream(self, c, ctx)
    S:event("delta", { text = split_chars(echo_text(ctx), knob_num(ctx, "chunk", 4))[1] }, true)
  end
  hold(c)
end

AGENTS["stall-headers"] = function(self, c, ctx)
  hold(c)
end

AGENTS["heartbeat"] = function(self, c, ctx)
  if not ctx.stream then return reply(self, c, ctx, echo_text(ctx)) end
  local text = echo_text(ctx)
  local n = math.max(1, math.floor(knob_num(ctx, "deltas", 5)))
  local interval = knob_num(ctx, "interval_ms", 200)
  local beat = knob_num(ctx, "heartbeat_ms", 50)
  local S = open_stream(self, c, ctx)
  for i, piece in ipairs(split_into(text, n)) do
    if i > 1 then
      -- Pings every `beat` ms while the next delta is pending.
      local waited = 0
      while beat > 0 and waited + beat < interval do
        sleep(c, beat)
        waited = waited + beat
        S:comment("ping")
      end
      sleep(c, interval - waited)
    end
    S:event("delta", { text = piece }, true)
  end
  S:event("done", reply_object(self, ctx, text))
  S:finish()
  return ctx.req.keep_alive
end

AGENTS["cut"] = function(self, c, ctx)
  local text = echo_text(ctx)
  if not ctx.stream then
    -- Promise the whole body, deliver half, hang up.
    local body = json.encode(reply_object(self, ctx, text))
    send_all(c, concat {
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: ", ctx.req.id,
      "\r\nContent-Length: ", #body, "\r\n\r\n", body:sub(1, #body // 2),
    })
    error(CLOSE_NOW, 0)
  end
  local pieces = split_chars(text, knob_num(ctx, "chunk", 4))
  local S = open_stream(self, c, ctx)
  S:event("delta", { text = pieces[1] or "" }, true)
  sleep(c, knob_num(ctx, "interval_ms", 5))
  S:event("delta", { text = pieces[2] or "" }, true)
  S:chunk('event: delta\ndata: {"te')
  error(CLOSE_NOW, 0) -- no chunked terminator
end

AGENTS["cut-before-first"] = function(self, c, ctx)
  if attempt(self, ctx) <= knob_num(ctx, "fail", 1) then
    if ctx.stream then
      open_stream(self, c, ctx)
    else
      send_all(c, concat {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: ", ctx.req.id,
        "\r\nContent-Length: 100\r\n\r\n",
      })
    end
    error(CLOSE_NOW, 0)
  end
  return reply(self, c, ctx, echo_text(ctx))
end

AGENTS["eof-no-done"] = function(self, c, ctx)
  return reply(self, c, ctx, echo_text(ctx), { no_done = true })
end

AGENTS["error-event"] = function(self, c, ctx)
  local code = knob(ctx, "code", "agent_failed")
  if not ctx.stream then
    return send_error(c, ctx.req, 500, code, "the agent failed")
  end
  local S = open_stream(self, c, ctx)
  S:event("delta", { text = split_chars(echo_text(ctx), knob_num(ctx, "chunk", 4))[1] }, true)
  S:event("error", { error = { code = code, message = "the agent failed" } })
  S:finish()
  return ctx.req.keep_alive
end

local function multibyte_text(ctx)
  return "héllo wörld — 🐝 " .. ctx.body.message
end

AGENTS["bytewise"] = function(self, c, ctx)
  local text = multibyte_text(ctx)
  if not ctx.stream then return reply(self, c, ctx, text) end
  return reply(self, c, ctx, text, { eol = "\r\n", bytewise = true, interval = 0 })
end

AGENTS["cr-only"] = function(self, c, ctx)
  return reply(self, c, ctx, multibyte_text(ctx), { eol = "\r" })
end

AGENTS["bom"] = function(self, c, ctx)
  return reply(self, c, ctx, echo_text(ctx), { prefix = BOM })
end

AGENTS["comments"] = function(self, c, ctx)
  return reply(self, c, ctx, echo_text(ctx), {
    prefix = ": stream opened\n\n",
    between = function(S, i)
      S:chunk(":keep-alive " .. i .. "\n\n")
    end,
  })
end

AGENTS["unknown-event"] = function(self, c, ctx)
  return reply(self, c, ctx, echo_text(ctx), {
    between = function(S, i)
      if i == 2 then
        S:event("tool_call", { name = "lookup", arguments = { query = ctx.body.message } }, true)
      end
    end,
  })
end

AGENTS["html-error"] = function(self, c, ctx)
  return respond(c, ctx.req, 502, { { "Content-Type", "text/html" } }, HTML_502)
end

AGENTS["bad-json"] = function(self, c, ctx)
  if not ctx.stream then
    return respond(c, ctx.req, 200, { { "Content-Type", "application/json" } },
                   '{"message_id": "msg_0", "content": "echo: ')
  end
  local S = open_stream(self, c, ctx)
  S:event("delta", '{"text": "oops', true)
  S:event("done", reply_object(self, ctx, echo_text(ctx)))
  S:finish()
  return ctx.req.keep_alive
end

AGENTS["huge-event"] = function(self, c, ctx)
  local text = huge_text(knob_num(ctx, "size", 10 * 1024 * 1024))
  return reply(self, c, ctx, text, { pieces = { text } })
end

AGENTS["huge-body"] = function(self, c, ctx)
  local text = huge_text(knob_num(ctx, "size", 10 * 1024 * 1024))
  return reply(self, c, ctx, text, { chunk = 65536, interval = 0 })
end

-- Echoes the request's credentials back, as a careless server or proxy might,
-- to check that the client never shows them.  mock_leak_as picks where.
AGENTS["leaky"] = function(self, c, ctx)
  local auth = ctx.req.headers["authorization"] or ""
  local secret = auth:match("^%S+%s+(.-)%s*$") or auth
  local pad = string.rep("x", math.floor(knob_num(ctx, "pad", 0)))
  local st = math.floor(knob_num(ctx, "status", 401))
  local as = knob(ctx, "leak_as", "json")
  if as == "html" then
    return respond(c, ctx.req, st, { { "Content-Type", "text/html" } },
                   "<html><body><p>" .. pad .. secret .. " is not a valid token</p></body></html>")
  elseif as == "code" then
    return send_error(c, ctx.req, st, secret, "mock leak in the code", retry_headers(ctx, nil))
  elseif as == "location" then
    return respond(c, ctx.req, 302, { { "Location", "https://elsewhere.invalid/login?token=" .. secret } }, "")
  elseif as == "event" and ctx.stream then
    local S = open_stream(self, c, ctx)
    S:event("delta", { text = "partial" }, true)
    S:event("error", { error = { code = "auth_" .. secret, message = pad .. "token " .. secret .. " expired" } })
    S:finish()
    return ctx.req.keep_alive
  end
  return send_error(c, ctx.req, st, knob(ctx, "code", code_for(st)),
                    pad .. "invalid bearer token: " .. auth, retry_headers(ctx, nil))
end

AGENTS["redirect"] = function(self, c, ctx)
  return respond(c, ctx.req, 302, { { "Location", knob(ctx, "location", "http://127.0.0.1:9/elsewhere") } }, "")
end

AGENTS["fast"] = function(self, c, ctx)
  local count = math.floor(knob_num(ctx, "events", 100000))
  local text = knob(ctx, "text", "tok ")
  if not ctx.stream then return reply(self, c, ctx, string.rep(text, count)) end
  -- Pre-build one event (no id line, so all events are identical) and one
  -- ~32 KiB chunk of them; the loop then only hands ready strings to send().
  local ev = "event: delta\ndata: " .. json.encode({ text = text }) .. "\n\n"
  local per = math.max(1, 32768 // #ev)
  local function chunk_of(k)
    local body = string.rep(ev, k)
    return fmt("%x\r\n", #body) .. body .. "\r\n"
  end
  local full = chunk_of(per)
  local S = open_stream(self, c, ctx)
  local batches = count // per
  for b = 1, batches do
    send_all(c, full)
    if b % 8 == 0 then yield_now(c) end
  end
  if count % per > 0 then send_all(c, chunk_of(count % per)) end
  S:event("done", reply_object(self, ctx, string.rep(text, count)))
  S:finish()
  return ctx.req.keep_alive
end

_M.AGENTS = AGENTS

----------------------------------------------------------------------------
-- Request handling
----------------------------------------------------------------------------

local function encode_record(r)
  -- The decoded body is emitted as the raw body text (valid JSON, since it
  -- decoded strictly): re-encoding would turn [] into {} and reorder keys.
  return concat {
    '{"seq":', r.seq, ',"conn_id":', r.conn_id,
    ',"method":', json.encode(r.method), ',"path":', json.encode(r.path),
    ',"agent_id":', r.agent_id and json.encode(r.agent_id) or "null",
    ',"headers":', json.encode(r.headers), ',"body":', json.encode(r.body),
    ',"json":', r.json_ok and r.body or "null", "}",
  }
end

local function admin(self, c, req)
  local route = req.path:sub(8)
  local want = ({ requests = "GET", stats = "GET", reset = "POST", ["drop-idle"] = "POST" })[route]
  if not want then
    return send_error(c, req, 404, "not_found", "no mock admin endpoint " .. req.path)
  end
  if req.method ~= want then
    return send_error(c, req, 405, "method_not_allowed", "use " .. want, { { "Allow", want } })
  end
  if route == "requests" then
    local items = {}
    for i, r in ipairs(self.records) do items[i] = encode_record(r) end
    return send_json(c, req, 200, "[" .. concat(items, ",") .. "]")
  elseif route == "stats" then
    return send_json(c, req, 200, self.stats)
  elseif route == "reset" then
    self.records, self.attempts = {}, {}
    self.ids.seq = 0
    local s = self.stats
    s.connections_accepted, s.requests, s.client_closed = 0, 0, 0
    return send_json(c, req, 200, { ok = true })
  else -- drop-idle
    local dropped = 0
    for other in pairs(self.conns) do
      if other ~= c and other.idle and other.wait_read then
        self:close_conn(other)
        dropped = dropped + 1
      end
    end
    return send_json(c, req, 200, { dropped = dropped })
  end
end

-- Validate the body per docs/protocol.md.  Returns the decoded table or nil
-- and a message.
local function check_body(body)
  local ok, t = pcall(json.decode, body)
  if not ok then return nil, "body is not valid JSON" end
  if type(t) ~= "table" then return nil, "body must be a JSON object" end
  if type(t.message) ~= "string" or t.message == "" then
    return nil, "message must be a non-empty string"
  end
  if t.context_id ~= nil and type(t.context_id) ~= "string" then return nil, "context_id must be a string" end
  if t.idempotency_key ~= nil and (type(t.idempotency_key) ~= "string" or t.idempotency_key == "") then
    return nil, "idempotency_key must be a non-empty string"
  end
  if t.timeout_ms ~= nil and (type(t.timeout_ms) ~= "number" or t.timeout_ms < 0 or t.timeout_ms % 1 ~= 0) then
    return nil, "timeout_ms must be a non-negative integer"
  end
  if t.metadata ~= nil then
    if type(t.metadata) ~= "table" then return nil, "metadata must be an object" end
    for k, v in pairs(t.metadata) do
      if type(k) ~= "string" or type(v) ~= "string" then return nil, "metadata values must be strings" end
    end
  end
  if t.file_ids ~= nil then
    if type(t.file_ids) ~= "table" or #t.file_ids < 1 or #t.file_ids > 16 then
      return nil, "file_ids must be an array of 1 to 16 ids"
    end
    for _, id in ipairs(t.file_ids) do
      if type(id) ~= "string" or id == "" then return nil, "file_ids must be non-empty strings" end
    end
  end
  return t
end

local function handle(self, c, req)
  if req.path:sub(1, 7) == "/_mock/" then return admin(self, c, req) end

  local enc = req.path:match("^/api/v1/agents/([^/]+)/messages$")
  local agent = enc and percent_decode(enc)
  local ok_json = req.body ~= "" and pcall(json.decode, req.body)
  self.ids.seq = self.ids.seq + 1
  self.records[#self.records + 1] = {
    seq = self.ids.seq, conn_id = c.id, method = req.method, path = req.path,
    agent_id = agent, headers = req.headers, body = req.body, json_ok = ok_json,
  }
  self.stats.requests = self.stats.requests + 1

  if not agent then
    return send_error(c, req, 404, "not_found", "no route for " .. req.path)
  end
  if req.method ~= "POST" then
    return send_error(c, req, 405, "method_not_allowed", "use POST", { { "Allow", "POST" } })
  end
  local token = (req.headers["authorization"] or ""):match("^[Bb][Ee][Aa][Rr][Ee][Rr] +(.-)%s*$")
  if token ~= self.token then
    return send_error(c, req, 401, "unauthorized", "missing or invalid bearer token",
                      { { "WWW-Authenticate", 'Bearer realm="beeos"' } })
  end
  local body, why = check_body(req.body)
  if not body then return send_error(c, req, 400, "bad_request", why) end

  local meta = {}
  for k, v in pairs(body.metadata or {}) do meta[k] = v end
  local sent_key = body.idempotency_key or req.headers["idempotency-key"]
  local ctx = {
    req = req, body = body, meta = meta, agent = agent,
    stream = (req.headers["accept"] or ""):find("text/event-stream", 1, true) ~= nil,
    sent_key = sent_key,
    key = sent_key or ("key_" .. next_id(self, "key")),
    context_id = body.context_id or ("ctx_" .. next_id(self, "ctx")),
    -- The real service clamps larger waits to its window.
    timeout_ms = body.timeout_ms and math.min(body.timeout_ms, SERVER_WINDOW_MS),
  }
  local fn = AGENTS[agent] or function(s, cc, cx) return reply(s, cc, cx, echo_text(cx)) end
  return fn(self, c, ctx)
end

-- Read one request and its body.  Returns nil at a clean close.
local function read_request(self, c)
  local head = read_head(c)
  if not head then return nil end
  local req = parse_head(head)
  req.id = "req_" .. next_id(self, "req")
  local h = req.headers
  if h["transfer-encoding"] then
    -- We frame request bodies by Content-Length only; the SDK always sends one.
    error({ status = 411, message = "chunked request bodies are not supported; send Content-Length", req = req }, 0)
  end
  local len = 0
  if h["content-length"] then
    len = tonumber(h["content-length"]:match("^%d+$"))
    if not len then error({ status = 400, message = "bad Content-Length", req = req }, 0) end
  end
  if len > MAX_BODY then error({ status = 413, message = "body too large", req = req }, 0) end
  if len > #c.buf and (h["expect"] or ""):lower() == "100-continue" then
    -- curl waits up to a second for this before sending a large body.
    send_all(c, "HTTP/1.1 100 Continue\r\n\r\n")
  end
  req.body = read_body(c, len)
  return req
end

local function serve_conn(self, c)
  while true do
    c.idle = c.buf == ""
    local ok, req = pcall(read_request, self, c)
    c.idle = false
    if not ok then
      local e = req
      if type(e) == "table" and e.status then
        -- A malformed request: answer it and close, since the framing of
        -- whatever follows is unknown.
        local r = e.req or { id = "req_" .. next_id(self, "req") }
        send_error(c, r, e.status, code_for(e.status), e.message, nil, false)
        return
      end
      error(e, 0)
    end
    if not req then return end
    c.in_response = true
    local keep = handle(self, c, req)
    c.in_response = false
    if not keep then return end
  end
end

----------------------------------------------------------------------------
-- The loop
----------------------------------------------------------------------------

function Server:close_conn(c)
  if c.closed then return end
  c.closed = true
  c.sock:close()
  self.conns[c] = nil
  self.stats.connections_open = self.stats.connections_open - 1
  if c.streaming then
    c.streaming = false
    self.stats.streams_active = self.stats.streams_active - 1
  end
end

function Server:resume(c, why)
  local ok, err = coroutine.resume(c.co, why)
  if not ok then
    log(self, "beeos-mock: connection " .. c.id .. " failed: " .. tostring(err))
    self:close_conn(c)
  elseif coroutine.status(c.co) == "dead" then
    self:close_conn(c)
  end
end

function Server:accept_all()
  while self.stats.connections_open < self.max_connections do
    local sock, err = self.sock:accept()
    if not sock then
      if err ~= "timeout" then
        -- Out of descriptors, say: back off instead of spinning on a socket
        -- that stays readable.
        log(self, "beeos-mock: accept failed: " .. tostring(err))
        self.accept_pause_until = now() + 0.1
      end
      return
    end
    sock:settimeout(0)
    if sock:getfd() >= FD_SETSIZE then
      -- select() cannot watch it (inherited descriptors can push numbers up):
      -- refuse politely rather than crash the loop.
      local body = '{"error":{"code":"unavailable","message":"mock connection limit reached"}}'
      sock:send("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        .. "Content-Length: " .. #body .. "\r\nConnection: close\r\n\r\n" .. body)
      sock:close()
      log(self, "beeos-mock: refused a connection: descriptor above FD_SETSIZE")
      return
    end
    sock:setoption("tcp-nodelay", true) -- small deltas should leave at once
    local c = { sock = sock, id = next_id(self, "conn"), buf = "", wait_read = false, wait_write = false }
    c.co = coroutine.create(function()
      local ok, conn_err = pcall(serve_conn, self, c)
      if not ok then
        if conn_err == PEER_CLOSED then
          if c.in_response then self.stats.client_closed = self.stats.client_closed + 1 end
        elseif conn_err ~= CLOSE_NOW then
          log(self, "beeos-mock: error on connection " .. c.id .. ": " .. tostring(conn_err))
        end
      end
    end)
    self.conns[c] = true
    self.stats.connections_accepted = self.stats.connections_accepted + 1
    self.stats.connections_open = self.stats.connections_open + 1
    self:resume(c, "start")
  end
end

local function pid_alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then
    local stat = f:read("a") or ""
    f:close()
    return not stat:match("^%d+ %b() Z") -- a zombie is as good as gone
  end
  local self_stat = io.open("/proc/self/stat")
  if self_stat then self_stat:close() return false end -- /proc works: it is gone
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

--- One turn of the loop: wait (at most `max_wait` seconds, or until the next
-- timer) for sockets to become ready and resume their coroutines.
function Server:step(max_wait)
  local t = now()
  local recvt, sendt, soonest = {}, {}, nil
  if self.accept_pause_until and t >= self.accept_pause_until then self.accept_pause_until = nil end
  if self.accept_pause_until then
    soonest = self.accept_pause_until
  elseif self.stats.connections_open < self.max_connections then
    recvt[1] = self.sock
  end
  if self.watch_pid then
    if t >= self.next_watch then
      if not pid_alive(self.watch_pid) then os.exit(0) end
      self.next_watch = t + 1
    end
    if not soonest or self.next_watch < soonest then soonest = self.next_watch end
  end
  for c in pairs(self.conns) do
    if c.wait_read then recvt[#recvt + 1] = c.sock end
    if c.wait_write then sendt[#sendt + 1] = c.sock end
    if c.wake_at and (not soonest or c.wake_at < soonest) then soonest = c.wake_at end
  end
  local timeout = soonest and math.max(0, soonest - t) or max_wait
  if max_wait and timeout and timeout > max_wait then timeout = max_wait end
  local r, s = socket.select(recvt, sendt, timeout)
  r, s = r or {}, s or {}
  if r[self.sock] then self:accept_all() end
  t = now()
  local ready = {}
  for c in pairs(self.conns) do
    local why
    if c.wait_read and r[c.sock] then why = "read"
    elseif c.wait_write and s[c.sock] then why = "write"
    elseif c.wake_at and c.wake_at <= t then why = "timer" end
    if why then ready[#ready + 1] = { c, why } end
  end
  for _, item in ipairs(ready) do
    -- An earlier coroutine this turn may have closed it (drop-idle).
    if not item[1].closed then self:resume(item[1], item[2]) end
  end
end

function Server:run()
  while true do self:step() end
end

function Server:close()
  for c in pairs(self.conns) do self:close_conn(c) end
  self.sock:close()
end

--- Bind and return a server object (use :run() or :step()).
-- opts: host ("127.0.0.1"), port (0 = any free port), token ("test-token"),
-- max_connections (1000), watch_pid (exit when that process is gone),
-- log (function(line); default: stderr; false to silence).
function _M.new(opts)
  opts = opts or {}
  local host = opts.host or "127.0.0.1"
  -- A deep backlog: hundreds of clients may connect at once (socket.bind's
  -- default is 32).
  local sock, err = socket.bind(host, opts.port or 0, LISTEN_BACKLOG)
  if not sock then
    error("beeos-mock: cannot bind " .. host .. ":" .. tostring(opts.port or 0) .. ": " .. tostring(err), 0)
  end
  sock:settimeout(0)
  local ip, port = sock:getsockname()
  port = tonumber(port)
  -- A wildcard address is not something a client can connect to.
  local url_host = (ip == "0.0.0.0" and "127.0.0.1") or (ip == "::" and "::1") or ip
  if url_host:find(":", 1, true) then url_host = "[" .. url_host .. "]" end
  local logf = opts.log
  if logf == nil then logf = function(line) io.stderr:write(line, "\n") end end
  return setmetatable({
    sock = sock, port = port, url = "http://" .. url_host .. ":" .. port,
    token = opts.token or "test-token",
    max_connections = math.min(opts.max_connections or DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS),
    watch_pid = opts.watch_pid, next_watch = 0,
    log = logf or nil,
    conns = {}, records = {}, attempts = {},
    ids = { req = 0, msg = 0, ctx = 0, key = 0, conn = 0, seq = 0 },
    stats = { connections_accepted = 0, connections_open = 0, requests = 0,
              client_closed = 0, streams_active = 0 },
  }, Server)
end

--- Bind, call opts.on_ready(url, port), then serve forever.
function _M.serve(opts)
  opts = opts or {}
  local server = _M.new(opts)
  if opts.on_ready then opts.on_ready(server.url, server.port) end
  server:run()
end

-- Exposed for the specs.
_M._split_chars = split_chars

return _M
