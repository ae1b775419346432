-- Specs of the bundled mock server (lua/beeos/mock.lua, bin/beeos-mock) with
-- raw TCP and socket.http only, so they do not depend on the SDK they serve.
-- Run from the repository root: busted --lua=lua5.4 spec/mock_spec.lua

local socket = require "socket"
local json = require("cjson").new()
local mockctl = require "spec.support.mockctl"

local TOKEN = "test-token"
local m

---------------------------------------------------------------------------
-- A tiny HTTP/1.1 client over one luasocket connection.
---------------------------------------------------------------------------

local function connect()
  local s = assert(socket.connect("127.0.0.1", m.port))
  s:settimeout(5)
  return s
end

-- Request bytes for the messages endpoint (or any path via o.path).
local function request_bytes(o)
  local body = o.raw_body
  if body == nil and o.body ~= false then
    body = json.encode(o.body or { message = "hello" })
  end
  local h = {
    (o.method or "POST") .. " " .. (o.path or ("/api/v1/agents/" .. (o.agent or "echo") .. "/messages")) .. " HTTP/1.1",
    "Host: 127.0.0.1",
  }
  if o.token ~= false then h[#h + 1] = "Authorization: Bearer " .. (o.token or TOKEN) end
  if o.stream then h[#h + 1] = "Accept: text/event-stream" else h[#h + 1] = "Accept: application/json" end
  if body then
    h[#h + 1] = "Content-Type: application/json"
    h[#h + 1] = "Content-Length: " .. #body
  end
  for _, extra in ipairs(o.headers or {}) do h[#h + 1] = extra end
  return table.concat(h, "\r\n") .. "\r\n\r\n" .. (body or "")
end

-- Read one response.  Returns a table: status, headers (lowercase), body,
-- chunks (list of chunk payloads when chunked), complete (false when the
-- connection ended early), err.
local function read_response(s)
  local r = { headers = {}, chunks = {}, complete = false }
  local line, err = s:receive("*l")
  if not line then r.err = err return r end
  r.status = tonumber(line:match("^HTTP/1%.1 (%d%d%d)"))
  while true do
    line, err = s:receive("*l")
    if not line then r.err = err return r end
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    r.headers[k:lower()] = v
  end
  if r.headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      line, err = s:receive("*l")
      if not line then r.err = err break end
      local size = tonumber(line, 16)
      if size == 0 then
        s:receive("*l") -- end of (empty) trailer
        r.complete = true
        break
      end
      local data, e2, partial = s:receive(size)
      if not data then
        parts[#parts + 1] = partial
        r.err = e2
        break
      end
      parts[#parts + 1] = data
      r.chunks[#r.chunks + 1] = data
      s:receive(2) -- CRLF after the chunk
    end
    r.body = table.concat(parts)
  else
    local len = tonumber(r.headers["content-length"] or "0")
    if len == 0 then -- luasocket's receive(0) would wait for the timeout
      r.body, r.complete = "", true
      return r
    end
    local data, e2, partial = s:receive(len)
    r.body = data or partial
    r.err = e2
    r.complete = data ~= nil
  end
  return r
end

-- One request on a fresh connection, closed afterwards.
local function call(o)
  local s = connect()
  assert(s:send(request_bytes(o)))
  local r = read_response(s)
  s:close()
  return r
end

-- Events of an SSE body (any line ending, optional BOM).
local function sse(body)
  local events = {}
  body = body:gsub("^\239\187\191", ""):gsub("\r\n", "\n"):gsub("\r", "\n")
  for block in (body .. "\n\n"):gmatch("(.-)\n\n") do
    local ev, data, comments = { event = "message" }, {}, 0
    for line in (block .. "\n"):gmatch("(.-)\n") do
      local field, value = line:match("^([^:]*):? ?(.*)$")
      if field == "" then comments = comments + 1
      elseif field == "event" then ev.event = value
      elseif field == "id" then ev.id = value
      elseif field == "data" then data[#data + 1] = value end
    end
    if #data > 0 then
      ev.data = table.concat(data, "\n")
      events[#events + 1] = ev
    end
  end
  return events
end

local function of_type(events, t)
  local out = {}
  for _, e in ipairs(events) do if e.event == t then out[#out + 1] = e end end
  return out
end

local function delta_text(events)
  local t = {}
  for _, e in ipairs(of_type(events, "delta")) do t[#t + 1] = json.decode(e.data).text end
  return table.concat(t)
end

local function body_with(meta, extra)
  local b = { message = "hello", metadata = meta }
  for k, v in pairs(extra or {}) do b[k] = v end
  return b
end

-- Wait until the socket has nothing to say for `secs` (true) or it does (false).
local function silent_for(s, secs)
  s:settimeout(secs)
  local data, err, partial = s:receive(1)
  s:settimeout(5)
  return data == nil and err == "timeout" and partial == ""
end

---------------------------------------------------------------------------

describe("beeos-mock", function()
  setup(function() m = mockctl.start { token = TOKEN } end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  describe("process and helper", function()
    it("listens on a free loopback port and reports it", function()
      assert.matches("^http://127%.0%.0%.1:%d+$", m.url)
      assert.is_true(m.port > 0)
      assert.equals(TOKEN, m.token)
    end)

    it("prints exactly the listening line and stops on SIGTERM", function()
      local p = io.popen("echo $$; exec lua5.4 bin/beeos-mock --port 0 --token x", "r")
      local pid = p:read("l")
      assert.matches("^beeos%-mock listening on http://127%.0%.0%.1:%d+$", p:read("l"))
      os.execute("kill " .. pid)
      assert.is_nil(p:read("l")) -- nothing else on stdout
      local ok, how, code = p:close()
      assert.is_nil(ok)
      assert.equals("signal", how)
      assert.equals(15, code)
    end)

    it("stop() is idempotent and the process is gone", function()
      local m2 = mockctl.start {}
      local url = m2.url
      m2:stop()
      m2:stop()
      local s = socket.tcp()
      s:settimeout(1)
      assert.is_nil((s:connect("127.0.0.1", tonumber(url:match(":(%d+)$")))))
      s:close()
    end)
  end)

  describe("echo agent", function()
    it("answers JSON with the reply object and a request id", function()
      local r = call { agent = "anything", body = { message = "hi", idempotency_key = "k-1", context_id = "c-9" } }
      assert.equals(200, r.status)
      assert.equals("application/json", r.headers["content-type"])
      assert.matches("^req_%d+$", r.headers["x-request-id"])
      local reply = json.decode(r.body)
      assert.equals("echo: hi", reply.content)
      assert.equals("k-1", reply.in_reply_to)
      assert.equals("c-9", reply.context_id)
      assert.matches("^msg_%d+$", reply.message_id)
    end)

    it("generates in_reply_to and context_id when absent", function()
      local reply = json.decode(call { body = { message = "x" } }.body)
      assert.is_string(reply.in_reply_to)
      assert.is_true(#reply.in_reply_to > 0)
      assert.matches("^ctx_%d+$", reply.context_id)
    end)

    it("streams deltas of mock_chunk characters, split on UTF-8 boundaries, then done", function()
      local msg = "héllo wörld 🐝 ok"
      local r = call { stream = true, body = body_with({ mock_chunk = "3" }, { message = msg }) }
      assert.equals(200, r.status)
      assert.equals("text/event-stream", r.headers["content-type"])
      assert.equals("chunked", r.headers["transfer-encoding"])
      assert.is_nil(r.headers["content-length"])
      assert.is_true(r.complete)
      local events = sse(r.body)
      local deltas = of_type(events, "delta")
      for i, e in ipairs(deltas) do
        assert.equals(tostring(i), e.id)
        local text = json.decode(e.data).text
        assert.truthy(utf8.len(text), "delta is valid UTF-8")
        if i < #deltas then assert.equals(3, utf8.len(text)) end
      end
      assert.equals("echo: " .. msg, delta_text(events))
      assert.equals("done", events[#events].event)
      assert.equals("echo: " .. msg, json.decode(events[#events].data).content)
    end)

    it("uses 4-character deltas by default and the exact event layout", function()
      local r = call { stream = true, body = { message = "abcdef" } }
      assert.matches('^event: delta\nid: 1\ndata: {"text":"echo"}\n\n', r.body)
      assert.equals(3, #of_type(sse(r.body), "delta")) -- "echo: abcdef" is 12 chars
    end)

    it("paces deltas mock_interval_ms apart", function()
      local t0 = socket.gettime()
      call { stream = true, body = body_with({ mock_chunk = "1", mock_interval_ms = "20" }, { message = "abcd" }) }
      -- "echo: abcd" = 10 deltas, 9 gaps of 20 ms
      assert.is_true(socket.gettime() - t0 >= 0.17)
    end)

    it("splits text on character boundaries", function()
      local mock = dofile("lua/beeos/mock.lua") -- works with or without .busted's lpath
      assert.same({ "aé", "🐝b", "c" }, mock._split_chars("aé🐝bc", 2))
      assert.same({ "\255\128", "x" }, mock._split_chars("\255\128x", 1)) -- stray bytes tolerated
    end)
  end)

  describe("HTTP behaviour", function()
    it("keeps the connection alive across requests", function()
      local s = connect()
      for i = 1, 3 do
        assert(s:send(request_bytes { body = { message = "n" .. i } }))
        local r = read_response(s)
        assert.equals(200, r.status)
        assert.equals("echo: n" .. i, json.decode(r.body).content)
      end
      assert(s:send(request_bytes { stream = true }))
      assert.is_true(read_response(s).complete)
      s:close()
      local reqs = m:requests()
      assert.equals(4, #reqs)
      for _, q in ipairs(reqs) do assert.equals(reqs[1].conn_id, q.conn_id) end
    end)

    it("serves pipelined requests in order", function()
      local s = connect()
      assert(s:send(request_bytes { body = { message = "a" } } .. request_bytes { body = { message = "b" } }))
      assert.equals("echo: a", json.decode(read_response(s).body).content)
      assert.equals("echo: b", json.decode(read_response(s).body).content)
      s:close()
    end)

    it("honours Connection: close", function()
      local s = connect()
      assert(s:send(request_bytes { headers = { "Connection: close" } }))
      local r = read_response(s)
      assert.equals(200, r.status)
      assert.equals("close", r.headers["connection"])
      local data, err = s:receive(1)
      assert.is_nil(data)
      assert.equals("closed", err)
      s:close()
    end)

    it("answers Expect: 100-continue before the body", function()
      local s = connect()
      local body = json.encode { message = "expecting" }
      assert(s:send(table.concat({
        "POST /api/v1/agents/echo/messages HTTP/1.1", "Host: x",
        "Authorization: Bearer " .. TOKEN, "Content-Length: " .. #body,
        "Expect: 100-continue", "", "" }, "\r\n")))
      assert.equals("HTTP/1.1 100 Continue", s:receive("*l"))
      assert.equals("", s:receive("*l"))
      assert(s:send(body))
      assert.equals("echo: expecting", json.decode(read_response(s).body).content)
      s:close()
    end)

    it("rejects chunked request bodies with 411", function()
      local s = connect()
      assert(s:send("POST /api/v1/agents/echo/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        .. TOKEN .. "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
      local r = read_response(s)
      assert.equals(411, r.status)
      assert.equals("length_required", json.decode(r.body).error.code)
      s:close()
    end)

    it("answers 404 for other paths and 405 for other methods", function()
      local r = call { path = "/api/v1/nope" }
      assert.equals(404, r.status)
      assert.equals("not_found", json.decode(r.body).error.code)
      assert.matches("^req_", r.headers["x-request-id"])
      r = call { method = "GET", agent = "echo", body = false }
      assert.equals(405, r.status)
      assert.equals("POST", r.headers["allow"])
    end)

    it("requires the bearer token", function()
      for _, tok in ipairs { false, "wrong" } do
        local r = call { token = tok }
        assert.equals(401, r.status)
        assert.equals("unauthorized", json.decode(r.body).error.code)
        assert.matches("^req_%d+$", r.headers["x-request-id"])
      end
    end)

    it("rejects bodies without a non-empty string message", function()
      for _, raw in ipairs { "not json", "[]", "{}", '{"message":""}', '{"message":5}',
                             '{"message":"x","metadata":{"a":1}}', '{"message":"x","timeout_ms":-1}' } do
        local r = call { raw_body = raw }
        assert.equals(400, r.status, raw)
        assert.equals("bad_request", json.decode(r.body).error.code)
      end
    end)

    it("percent-decodes the agent id", function()
      call { agent = "team%2Fbee%20one" }
      assert.equals("team/bee one", m:requests()[1].agent_id)
    end)

    it("gives every response a distinct X-Request-Id", function()
      local seen = {}
      for _, o in ipairs { {}, { token = "bad" }, { path = "/x" }, { stream = true } } do
        local id = call(o).headers["x-request-id"]
        assert.is_nil(seen[id])
        seen[id] = true
      end
    end)
  end)

  describe("admin endpoints", function()
    it("records requests with lowercase headers, raw body and decoded json", function()
      local raw = '{"message":"rec","file_ids":["f1"],"metadata":{}}'
      call { agent = "rec%2Fa", raw_body = raw, headers = { "X-Custom: Yes" } }
      call { raw_body = "not json" }
      local reqs = m:requests()
      assert.equals(2, #reqs)
      local q = reqs[1]
      assert.equals(1, q.seq)
      assert.equals("POST", q.method)
      assert.equals("/api/v1/agents/rec%2Fa/messages", q.path)
      assert.equals("rec/a", q.agent_id)
      assert.equals("Yes", q.headers["x-custom"])
      assert.equals("Bearer " .. TOKEN, q.headers["authorization"])
      assert.equals(raw, q.body)
      assert.equals("rec", q.json.message)
      assert.same({ "f1" }, q.json.file_ids)
      assert.equals(json.null, reqs[2].json)
      assert.is_number(q.conn_id)
    end)

    it("does not record admin calls; reset clears records and counters", function()
      call {}
      m:stats()
      assert.equals(1, #m:requests())
      assert.equals(1, m:stats().requests)
      m:reset()
      assert.equals(0, #m:requests())
      local st = m:stats()
      assert.equals(0, st.requests)
      assert.equals(0, st.client_closed)
    end)

    it("serves an empty request list as a JSON array", function()
      local http = require "socket.http"
      assert.equals("[]", (http.request(m.url .. "/_mock/requests")))
    end)

    it("counts connections", function()
      local s1, s2 = connect(), connect()
      assert(s1:send(request_bytes {}))
      read_response(s1)
      assert(s2:send(request_bytes {}))
      read_response(s2)
      local st = m:stats()
      assert.is_true(st.connections_accepted >= 2)
      assert.is_true(st.connections_open >= 2)
      s1:close()
      s2:close()
    end)

    it("drop-idle closes keep-alive connections idle between requests", function()
      local s = connect()
      assert(s:send(request_bytes {}))
      assert.equals(200, read_response(s).status)
      assert.is_true(m:drop_idle() >= 1)
      local data, err = s:receive(1)
      assert.is_nil(data)
      assert.equals("closed", err)
      s:close()
    end)
  end)

  describe("retry agents", function()
    it("rate-limited: 429 with Retry-After for the first attempt per key, then echo", function()
      local b = { message = "m", idempotency_key = "rl-1" }
      local r = call { agent = "rate-limited", body = b }
      assert.equals(429, r.status)
      assert.equals("0", r.headers["retry-after"])
      assert.equals("rate_limited", json.decode(r.body).error.code)
      r = call { agent = "rate-limited", body = b }
      assert.equals(200, r.status)
      assert.equals("echo: m", json.decode(r.body).content)
      -- a new key starts over
      assert.equals(429, call { agent = "rate-limited", body = { message = "m", idempotency_key = "rl-2" } }.status)
    end)

    it("rate-limited: mock_fail and mock_retry_after", function()
      local b = body_with({ mock_fail = "2", mock_retry_after = "3" }, { idempotency_key = "rl-3" })
      local r = call { agent = "rate-limited", body = b }
      assert.equals("3", r.headers["retry-after"])
      assert.equals(429, call { agent = "rate-limited", body = b }.status)
      assert.equals(200, call { agent = "rate-limited", body = b, stream = true }.status)
    end)

    it("unavailable: 503 then echo, also for streams", function()
      local b = { message = "u", idempotency_key = "un-1" }
      local r = call { agent = "unavailable", body = b, stream = true }
      assert.equals(503, r.status)
      assert.equals("unavailable", json.decode(r.body).error.code)
      r = call { agent = "unavailable", body = b, stream = true }
      assert.equals(200, r.status)
      assert.equals("echo: u", delta_text(sse(r.body)))
    end)

    it("fail-then-ok: configurable status, code and retry hints", function()
      local b = body_with({ mock_status = "500", mock_retry_after_ms = "25" }, { idempotency_key = "f-1" })
      local r = call { agent = "fail-then-ok", body = b }
      assert.equals(500, r.status)
      assert.equals("server_error", json.decode(r.body).error.code)
      assert.equals("25", r.headers["retry-after-ms"])
      assert.equals(200, call { agent = "fail-then-ok", body = b }.status)

      b = body_with({ mock_code = "busy", mock_retry_after = "1" }, { idempotency_key = "f-2" })
      r = call { agent = "fail-then-ok", body = b }
      assert.equals(503, r.status)
      assert.equals("busy", json.decode(r.body).error.code)
      assert.equals("1", r.headers["retry-after"])
    end)

    it("mock_should_retry adds an x-should-retry header", function()
      local r = call { agent = "status", body = body_with { mock_status = "400", mock_should_retry = "true" } }
      assert.equals(400, r.status)
      assert.equals("true", r.headers["x-should-retry"])
      r = call { agent = "fail-then-ok", body = body_with { mock_should_retry = "false" } }
      assert.equals(503, r.status)
      assert.equals("false", r.headers["x-should-retry"])
      assert.is_nil(call { agent = "status" }.headers["x-should-retry"])
    end)

    it("reset forgets attempt counts", function()
      local b = { message = "m", idempotency_key = "again" }
      assert.equals(503, call { agent = "unavailable", body = b }.status)
      m:reset()
      assert.equals(503, call { agent = "unavailable", body = b }.status)
    end)

    it("status: any status with its default code or mock_code", function()
      local expect = { [400] = "bad_request", [401] = "unauthorized", [403] = "forbidden",
                       [404] = "not_found", [408] = "request_timeout", [409] = "conflict",
                       [500] = "server_error", [502] = "bad_gateway", [504] = "service_timeout" }
      for status, code in pairs(expect) do
        local r = call { agent = "status", body = body_with { mock_status = tostring(status) } }
        assert.equals(status, r.status)
        assert.equals(code, json.decode(r.body).error.code)
      end
      local r = call { agent = "status", body = body_with { mock_status = "409", mock_code = "duplicate" } }
      assert.equals("duplicate", json.decode(r.body).error.code)
      for _ = 1, 2 do -- always, not only on the first attempt
        assert.equals(403, call { agent = "status", body = body_with({ mock_status = "403" }, { idempotency_key = "s" }) }.status)
      end
    end)
  end)

  describe("timing agents", function()
    it("slow: replies after mock_delay_ms", function()
      local t0 = socket.gettime()
      local r = call { agent = "slow", body = body_with { mock_delay_ms = "150" } }
      assert.equals(200, r.status)
      assert.equals("echo: hello", json.decode(r.body).content)
      assert.is_true(socket.gettime() - t0 >= 0.14)
    end)

    it("slow: 504 service_timeout when timeout_ms elapses first", function()
      local t0 = socket.gettime()
      local r = call { agent = "slow", stream = true, body = body_with({ mock_delay_ms = "5000" }, { timeout_ms = 150 }) }
      local took = socket.gettime() - t0
      assert.equals(504, r.status)
      assert.equals("service_timeout", json.decode(r.body).error.code)
      assert.is_true(took >= 0.14 and took < 2)
    end)

    it("slow: does not block other connections", function()
      local s = connect()
      assert(s:send(request_bytes { agent = "slow", body = body_with { mock_delay_ms = "2000" } }))
      local t0 = socket.gettime()
      assert.equals(200, call {}.status)
      assert.is_true(socket.gettime() - t0 < 0.5)
      s:close()
      -- hanging up during the wait counts as a client close
      assert.truthy(m:wait_for(function(x) return x:stats().client_closed == 1 end))
    end)

    it("heartbeat: ping comments between paced deltas", function()
      local r = call { agent = "heartbeat", stream = true,
                       body = body_with { mock_deltas = "3", mock_interval_ms = "120", mock_heartbeat_ms = "30" } }
      assert.is_true(r.complete)
      local pings = select(2, r.body:gsub(": ping\n", ""))
      assert.is_true(pings >= 4, "got " .. pings .. " pings")
      local events = sse(r.body)
      assert.equals(3, #of_type(events, "delta"))
      assert.equals("echo: hello", delta_text(events))
      assert.equals("done", events[#events].event)
    end)

    it("stall: headers and one delta, then silence; a client hang-up is counted", function()
      local s = connect()
      assert(s:send(request_bytes { agent = "stall", stream = true }))
      assert.equals("HTTP/1.1 200 OK", s:receive("*l"))
      repeat local l = s:receive("*l") until l == ""
      local size = tonumber(s:receive("*l"), 16)
      assert.matches("^event: delta\n", s:receive(size))
      s:receive(2)
      assert.is_true(silent_for(s, 0.3))
      assert.equals(1, m:stats().streams_active)
      s:close()
      assert.truthy(m:wait_for(function(x)
        local st = x:stats()
        return st.client_closed == 1 and st.streams_active == 0
      end))
    end)

    it("stall: a JSON request never gets an answer", function()
      local s = connect()
      assert(s:send(request_bytes { agent = "stall" }))
      assert.is_true(silent_for(s, 0.3))
      s:close()
      assert.truthy(m:wait_for(function(x) return x:stats().client_closed == 1 end))
    end)

    it("stall-headers: never sends anything", function()
      local s = connect()
      assert(s:send(request_bytes { agent = "stall-headers", stream = true }))
      assert.is_true(silent_for(s, 0.3))
      s:close()
      assert.truthy(m:wait_for(function(x) return x:stats().client_closed == 1 end))
    end)
  end)

  describe("broken streams", function()
    it("cut: two deltas, a partial event, then the connection closes without a terminator", function()
      local r = call { agent = "cut", stream = true }
      assert.equals(200, r.status)
      assert.is_false(r.complete)
      assert.equals("closed", r.err)
      assert.equals(2, select(2, r.body:gsub("event: delta\nid: %d+\ndata: {[^\n]*}\n\n", "")))
      assert.matches('\n\nevent: delta\ndata: {"te$', r.body)
    end)

    it("cut: a JSON reply is truncated", function()
      local r = call { agent = "cut" }
      assert.equals(200, r.status)
      assert.is_false(r.complete)
      assert.is_true(#r.body < tonumber(r.headers["content-length"]))
    end)

    it("cut-before-first: headers then close on the first attempt, echo afterwards", function()
      local b = { message = "c", idempotency_key = "cbf" }
      local r = call { agent = "cut-before-first", stream = true, body = b }
      assert.equals(200, r.status)
      assert.equals("text/event-stream", r.headers["content-type"])
      assert.equals("", r.body)
      assert.is_false(r.complete)
      r = call { agent = "cut-before-first", stream = true, body = b }
      assert.is_true(r.complete)
      assert.equals("echo: c", delta_text(sse(r.body)))
    end)

    it("eof-no-done: deltas and a clean end but no done", function()
      local r = call { agent = "eof-no-done", stream = true }
      assert.is_true(r.complete)
      local events = sse(r.body)
      assert.equals("echo: hello", delta_text(events))
      assert.equals(0, #of_type(events, "done"))
    end)

    it("error-event: one delta then an error event and a clean end", function()
      local r = call { agent = "error-event", stream = true }
      assert.is_true(r.complete)
      local events = sse(r.body)
      assert.equals(2, #events)
      assert.equals("delta", events[1].event)
      assert.equals("error", events[2].event)
      assert.equals("agent_failed", json.decode(events[2].data).error.code)
    end)
  end)

  describe("framing agents", function()
    it("bytewise: one byte per chunk, CRLF lines, multi-byte text", function()
      local r = call { agent = "bytewise", stream = true }
      assert.is_true(r.complete)
      assert.is_true(#r.chunks > 100)
      for _, ch in ipairs(r.chunks) do assert.equals(1, #ch) end
      assert.matches("^event: delta\r\nid: 1\r\n", r.body)
      assert.is_nil(r.body:find("[^\r]\n"))
      local events = sse(r.body)
      local text = "héllo wörld — 🐝 hello"
      assert.equals(text, delta_text(events))
      assert.equals(text, json.decode(events[#events].data).content)
    end)

    it("cr-only: CR line endings only", function()
      local r = call { agent = "cr-only", stream = true }
      assert.is_nil(r.body:find("\n", 1, true))
      assert.matches("^event: delta\rid: 1\r", r.body)
      assert.equals("héllo wörld — 🐝 hello", delta_text(sse(r.body)))
    end)

    it("bom: a UTF-8 BOM before the first event", function()
      local r = call { agent = "bom", stream = true }
      assert.equals("\239\187\191event: delta\n", r.body:sub(1, 16))
      assert.equals("echo: hello", delta_text(sse(r.body)))
    end)

    it("comments: comment lines between events", function()
      local r = call { agent = "comments", stream = true }
      local comments = select(2, r.body:gsub("\n:", "")) + (r.body:sub(1, 1) == ":" and 1 or 0)
      assert.is_true(comments >= 3)
      assert.equals("echo: hello", delta_text(sse(r.body)))
    end)

    it("unknown-event: a tool_call event between deltas", function()
      local events = sse(call { agent = "unknown-event", stream = true }.body)
      assert.equals("delta", events[1].event)
      assert.equals("tool_call", events[2].event)
      assert.equals("lookup", json.decode(events[2].data).name)
      assert.equals("echo: hello", delta_text(events))
    end)

    it("bad-json: malformed JSON body, or a malformed delta then done", function()
      local r = call { agent = "bad-json" }
      assert.equals(200, r.status)
      assert.is_false(pcall(json.decode, r.body))
      local events = sse(call { agent = "bad-json", stream = true }.body)
      assert.equals("delta", events[1].event)
      assert.is_false(pcall(json.decode, events[1].data))
      assert.equals("done", events[2].event)
    end)

    it("html-error: 502 with an HTML page", function()
      local r = call { agent = "html-error", stream = true }
      assert.equals(502, r.status)
      assert.equals("text/html", r.headers["content-type"])
      assert.matches("<html>", r.body)
    end)

    it("mock_extra: extra fields in the JSON reply, the deltas and done", function()
      local meta = { mock_extra = '{"usage":{"tokens":3},"content":"not me"}' }
      local r = call { body = body_with(meta) }
      local obj = json.decode(r.body)
      assert.equals(3, obj.usage.tokens)
      assert.equals("echo: hello", obj.content) -- existing fields are not replaced
      local events = sse(call { stream = true, body = body_with(meta) }.body)
      for _, e in ipairs(events) do assert.equals(3, json.decode(e.data).usage.tokens) end
      assert.equals("echo: hello", delta_text(events))
      -- Not an object: ignored.
      obj = json.decode(call { body = body_with { mock_extra = "[1,2]" } }.body)
      assert.is_nil(obj[1])
      assert.equals("echo: hello", obj.content)
    end)

    it("leaky: echoes the bearer token in each mock_leak_as place", function()
      local r = call { agent = "leaky" }
      assert.equals(401, r.status)
      local e = json.decode(r.body).error
      assert.equals("unauthorized", e.code)
      assert.equals("invalid bearer token: Bearer " .. TOKEN, e.message)
      r = call { agent = "leaky", body = body_with { mock_status = "503", mock_pad = "3", mock_retry_after = "0" } }
      assert.equals(503, r.status)
      assert.equals("0", r.headers["retry-after"])
      assert.equals("xxxinvalid bearer token: Bearer " .. TOKEN, json.decode(r.body).error.message)
      r = call { agent = "leaky", body = body_with { mock_leak_as = "html" } }
      assert.equals("text/html", r.headers["content-type"])
      assert.matches(TOKEN, r.body, 1, true)
      r = call { agent = "leaky", body = body_with { mock_leak_as = "code", mock_status = "500" } }
      assert.equals(500, r.status)
      assert.equals(TOKEN, json.decode(r.body).error.code)
      r = call { agent = "leaky", body = body_with { mock_leak_as = "location" } }
      assert.equals(302, r.status)
      assert.equals("https://elsewhere.invalid/login?token=" .. TOKEN, r.headers["location"])
      local events = sse(call { agent = "leaky", stream = true, body = body_with { mock_leak_as = "event" } }.body)
      assert.equals("delta", events[1].event)
      assert.equals("error", events[2].event)
      e = json.decode(events[2].data).error
      assert.equals("auth_" .. TOKEN, e.code)
      assert.equals("token " .. TOKEN .. " expired", e.message)
    end)

    it("redirect: 302 with Location and no body", function()
      local r = call { agent = "redirect" }
      assert.equals(302, r.status)
      assert.equals("http://127.0.0.1:9/elsewhere", r.headers["location"])
      assert.equals("0", r.headers["content-length"])
      assert.equals("", r.body)
    end)
  end)

  describe("large and fast agents", function()
    it("huge-event: one delta of mock_size bytes", function()
      local r = call { agent = "huge-event", stream = true, body = body_with { mock_size = "300000" } }
      local events = sse(r.body)
      assert.equals(300000, #json.decode(of_type(events, "delta")[1].data).text)
      assert.equals(1, #of_type(events, "delta"))
    end)

    it("huge-event: defaults to 10 MiB", function()
      local r = call { agent = "huge-event", stream = true }
      local first = sse(r.body)[1]
      assert.equals(10 * 1024 * 1024, #json.decode(first.data).text)
    end)

    it("huge-body: a JSON reply whose content is mock_size bytes, delivered to a slow reader", function()
      local s = connect()
      assert(s:send(request_bytes { agent = "huge-body", body = body_with { mock_size = "3000000" } }))
      socket.sleep(0.3) -- let the server fill the socket buffers and wait for writability
      local r = read_response(s)
      s:close()
      assert.equals(3000000, #json.decode(r.body).content)
    end)

    it("fast: mock_events deltas in large chunks, then done", function()
      local r = call { agent = "fast", stream = true, body = body_with { mock_events = "5000", mock_text = "ab" } }
      assert.is_true(r.complete)
      assert.is_true(#r.chunks < 50, "events are batched into large chunks")
      local events = sse(r.body)
      local deltas = of_type(events, "delta")
      assert.equals(5000, #deltas)
      assert.equals('{"text":"ab"}', deltas[5000].data)
      assert.equals(string.rep("ab", 5000), json.decode(events[#events].data).content)
    end)

    it("fast: the default 100000 events arrive quickly", function()
      local t0 = socket.gettime()
      local r = call { agent = "fast", stream = true }
      assert.is_true(r.complete)
      local n = select(2, r.body:gsub("event: delta\n", ""))
      assert.equals(100000, n)
      assert.is_true(socket.gettime() - t0 < 5)
    end)
  end)

  describe("robustness", function()
    it("survives clients vanishing mid-stream", function()
      for _ = 1, 5 do
        local s = connect()
        assert(s:send(request_bytes { agent = "fast", stream = true }))
        s:receive(1000)
        s:close()
      end
      local s = connect()
      assert(s:send(request_bytes { agent = "echo", stream = true, body = body_with { mock_interval_ms = "50" } }))
      s:receive("*l")
      s:close()
      assert.equals(200, call {}.status)
      assert.truthy(m:wait_for(function(x) return x:stats().client_closed == 6 end))
    end)

    it("holds 200 concurrent streams", function()
      local socks = {}
      for i = 1, 200 do
        local s = connect()
        assert(s:send(request_bytes { agent = "stall", stream = true }))
        socks[i] = s
      end
      assert.truthy(m:wait_for(function(x) return x:stats().streams_active == 200 end))
      -- everything else still works meanwhile
      local r = call { stream = true }
      assert.is_true(r.complete)
      for _, s in ipairs(socks) do
        assert.equals("HTTP/1.1 200 OK", s:receive("*l"))
        s:close()
      end
      assert.truthy(m:wait_for(function(x)
        local st = x:stats()
        return st.streams_active == 0 and st.client_closed == 200
      end))
    end)

    it("runs 200 paced streams to completion at once", function()
      local socks = {}
      for i = 1, 200 do
        local s = connect()
        assert(s:send(request_bytes { stream = true, body = body_with({ mock_interval_ms = "20" }, { message = "stream " .. i }) }))
        socks[i] = s
      end
      for i, s in ipairs(socks) do
        local r = read_response(s)
        assert.is_true(r.complete)
        assert.equals("echo: stream " .. i, delta_text(sse(r.body)))
        s:close()
      end
    end)
  end)
end)
