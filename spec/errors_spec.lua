-- Runtime failures: the error object, odd error bodies, connection failures,
-- redirects, TLS, and the token never showing in errors or debug logs.
-- Run from the repository root: busted --lua=lua5.4 spec/errors_spec.lua
local beeos = require "beeos"
local sdk = require "spec.support.sdk"

local TOKEN = sdk.TOKEN

-- Asserts that s does not hold the token, nor a long piece of it.
local function no_token(s)
  s = tostring(s)
  assert.is_nil(s:find(TOKEN, 1, true), "the token shows in: " .. s)
  assert.is_nil(s:find(TOKEN:sub(1, 12), 1, true), "the start of the token shows in: " .. s)
  assert.is_nil(s:find(TOKEN:sub(-12), 1, true), "the end of the token shows in: " .. s)
end

-- Every string field of err, and tostring(err).
local function no_token_in_error(err)
  assert.truthy(err)
  no_token(tostring(err))
  for k, v in pairs(err) do
    if type(v) == "string" then no_token(v) end
  end
end

describe("errors", function()
  local m, client
  sdk.mock_per_file(function(mock, c) m, client = mock, c end)

  describe("the error object", function()
    it("carries kind, code, status, message, request_id, retryable, attempts, idempotency_key", function()
      local reply, err = client:agent("status"):send("hi", {
        metadata = { mock_status = "422", mock_code = "bad_input" }, idempotency_key = "key-e1",
      })
      assert.is_nil(reply)
      assert.is_true(beeos.errors.is(err))
      assert.equals("http", err.kind)
      assert.equals("bad_input", err.code)
      assert.equals(422, err.status)
      assert.equals("mock status 422", err.message)
      assert.matches("^req_%d+$", err.request_id)
      assert.is_false(err.retryable)
      assert.equals(1, err.attempts)
      assert.equals("key-e1", err.idempotency_key)
      assert.equals(1, #m:requests())
    end)

    it("reads well with tostring", function()
      local _, err = client:agent("status"):send("hi", { metadata = { mock_status = "409" } })
      assert.equals("beeos http error (HTTP 409) [conflict]: mock status 409 request_id=" .. err.request_id,
        tostring(err))
      _, err = client:agent("status"):send("hi", { metadata = { mock_status = "503" } })
      assert.equals("beeos http error (HTTP 503) [unavailable]: mock status 503 request_id=" ..
        err.request_id .. " after 3 attempts", tostring(err))
    end)

    it("uses the server's code and message when the body has them", function()
      local _, err = client:agent("status"):send("hi", { metadata = { mock_status = "400", mock_code = "too_long" } })
      assert.equals("too_long", err.code)
      assert.equals("mock status 400", err.message)
    end)

    it("reports a wrong token as 401 unauthorized, not retried", function()
      local c = sdk.client(m, { api_key = "oag_wrong" })
      local _, err = c:agent("echo"):send("hi")
      assert.equals("http", err.kind)
      assert.equals(401, err.status)
      assert.equals("unauthorized", err.code)
      assert.equals("missing or invalid bearer token", err.message)
      assert.equals(1, err.attempts)
      assert.equals(1, #m:requests())
    end)

    it("gives a clean error for a non-JSON (HTML) error body", function()
      local _, err = client:agent("html-error"):send("hi", { max_retries = 0 })
      assert.equals("http", err.kind)
      assert.equals(502, err.status)
      assert.equals("bad_gateway", err.code)
      assert.is_true(err.retryable)
      assert.matches("502 Bad Gateway", err.message)
      assert.is_nil(err.message:find("<", 1, true))
      assert.is_nil(err.message:find("\n", 1, true))
      assert.matches("^req_%d+$", err.request_id)
    end)

    it("gives the same clean error when stream() gets an HTML error", function()
      local s, err = client:agent("html-error"):stream("hi", { max_retries = 0 })
      assert.is_nil(s)
      assert.equals("bad_gateway", err.code)
      assert.matches("502 Bad Gateway", err.message)
    end)

    it("reports a malformed JSON reply as a protocol error", function()
      local reply, err = client:agent("bad-json"):send("hi")
      assert.is_nil(reply)
      assert.equals("protocol", err.kind)
      assert.equals("bad_reply", err.code)
      assert.equals(200, err.status)
      assert.matches("^req_%d+$", err.request_id)
      assert.equals(1, err.attempts)
      assert.equals(1, #m:requests())
    end)

    it("reports a refused connection as connection/connect_failed", function()
      local c = sdk.track(beeos.new { base_url = "http://127.0.0.1:" .. sdk.closed_port(), api_key = TOKEN, max_retries = 0 })
      local ms, reply, err = sdk.timed(function() return c:agent("echo"):send("hi") end)
      assert.is_nil(reply)
      assert.equals("connection", err.kind)
      assert.equals("connect_failed", err.code)
      assert.is_nil(err.status)
      assert.is_nil(err.request_id)
      assert.is_true(err.retryable)
      assert.equals(1, err.attempts)
      assert.matches("^beeos connection error %[connect_failed%]: ", tostring(err))
      assert.is_true(ms < 3000)
      local s
      s, err = c:agent("echo"):stream("hi")
      assert.is_nil(s)
      assert.equals("connect_failed", err.code)
      c:close()
    end)

    it("reports a 200 reply cut short as a connection error, not retried", function()
      local reply, err = client:agent("cut"):send("hello")
      assert.is_nil(reply)
      assert.equals("connection", err.kind)
      assert.equals("response_interrupted", err.code)
      assert.equals(200, err.status)
      assert.equals(1, #m:requests())
    end)
  end)

  describe("redirects", function()
    it("are not followed: code redirect, the message names the location, one request", function()
      local reply, err = client:agent("redirect"):send("hi")
      assert.is_nil(reply)
      assert.equals("http", err.kind)
      assert.equals("redirect", err.code)
      assert.equals(302, err.status)
      assert.is_false(err.retryable)
      assert.matches("http://127.0.0.1:9/elsewhere", err.message, 1, true)
      assert.equals("http://127.0.0.1:9/elsewhere", err.location)
      assert.equals(1, err.attempts)
      assert.equals(1, #m:requests())
    end)

    it("are not followed for streams either, nor for 307 to a path on the same server", function()
      local s, err = client:agent("redirect"):stream("hi")
      assert.is_nil(s)
      assert.equals("redirect", err.code)
      s, err = client:agent("status"):stream("hi", {
        metadata = { mock_status = "307", mock_location = "/api/v1/agents/echo/messages" },
      })
      assert.is_nil(s)
      assert.equals("redirect", err.code)
      assert.equals(307, err.status)
      assert.matches("/api/v1/agents/echo/messages", err.message, 1, true)
      assert.equals(2, #m:requests())
    end)
  end)

  describe("the token", function()
    it("is not in a 401 error whose body echoes it", function()
      local _, err = client:agent("leaky"):send("hi")
      assert.equals(401, err.status)
      assert.matches("invalid bearer token", err.message)
      no_token_in_error(err)
    end)

    it("is not in the snippet of an HTML body that echoes it, even cut at the snippet's end", function()
      for _, pad in ipairs({ "0", "180", "190", "195" }) do
        local _, err = client:agent("leaky"):send("hi", { metadata = { mock_leak_as = "html", mock_pad = pad } })
        assert.equals(401, err.status)
        no_token_in_error(err)
      end
    end)

    it("is not in tostring(err) when the server sends it as the error code", function()
      local _, err = client:agent("leaky"):send("hi", { metadata = { mock_leak_as = "code" } })
      assert.equals(401, err.status)
      no_token_in_error(err)
    end)

    it("is not in a redirect error whose Location carries it", function()
      local _, err = client:agent("leaky"):send("hi", { metadata = { mock_leak_as = "location" } })
      assert.equals("redirect", err.code)
      assert.matches("elsewhere.invalid", err.message, 1, true)
      no_token_in_error(err)
    end)

    it("is not in a stream error event that echoes it", function()
      local s = assert(client:agent("leaky"):stream("hi", { metadata = { mock_leak_as = "event" } }))
      sdk.drain(s)
      assert.equals("stream", s.err.kind)
      assert.matches("expired", s.err.message)
      no_token_in_error(s.err)
      local reply, err = client:agent("leaky"):send("hi", {
        metadata = { mock_leak_as = "event" }, on_delta = function() end,
      })
      assert.is_nil(reply)
      no_token_in_error(err)
    end)

    it("is not in validation errors", function()
      for _, bad in ipairs({ TOKEN .. "\n", TOKEN .. " x", "\1" .. TOKEN }) do
        local ok, e = pcall(beeos.new, { base_url = m.url, api_key = bad })
        assert.is_false(ok)
        assert.matches("api_key", e)
        no_token(e)
      end
    end)

    it("is not in any debug log line (debug = true), which goes to stderr", function()
      local c = sdk.client(m, { debug = true, max_retries = 1 })
      local log = sdk.capture_stderr(function()
        assert(c:agent("echo"):send("hi"))
        c:agent("leaky"):send("hi", { metadata = { mock_leak_as = "code", mock_status = "503" } })
        c:agent("leaky"):send("hi", { metadata = { mock_status = "503", mock_retry_after = "0" } })
        local s = assert(c:agent("leaky"):stream("hi", { metadata = { mock_leak_as = "event" } }))
        sdk.drain(s)
        c:agent("leaky"):send("hi", { metadata = { mock_leak_as = "location" } })
      end)
      assert.matches("[beeos] POST " .. m.url .. "/api/v1/agents/echo/messages attempt 1", log, 1, true)
      assert.matches("[beeos] HTTP 200 request_id=req_", log, 1, true)
      assert.matches("[beeos] retrying in", log, 1, true)
      for line in log:gmatch("[^\n]+") do
        assert.matches("^%[beeos%] ", line)
        no_token(line)
      end
      c:close()
    end)

    it("is not in the BEEOS_DEBUG=1 log of a separate process", function()
      local out, err, ok = sdk.run_lua(([[
        local beeos = require "beeos"
        local c = beeos.new{ retry_base_s = 0.01 }
        assert(c:agent("echo"):send("hi"))
        local _, e = c:agent("leaky"):send("hi", { metadata = { mock_leak_as = "code", mock_status = "503" } })
        io.write(tostring(e))
      ]]), { BEEOS_BASE_URL = m.url, BEEOS_API_KEY = TOKEN, BEEOS_DEBUG = "1" })
      assert.is_true(ok, err)
      assert.matches("%[beeos%] POST ", err)
      assert.matches("%[beeos%] retrying in", err)
      no_token(err)
      no_token(out)
      assert.matches("after 3 attempts", out)
    end)

    it("logs nothing without debug", function()
      local log = sdk.capture_stderr(function()
        assert(client:agent("echo"):send("hi"))
        client:agent("status"):send("hi")
      end)
      assert.equals("", log)
      local _, err, ok = sdk.run_lua([[
        local beeos = require "beeos"
        assert(beeos.new{}:agent("echo"):send("hi"))
      ]], { BEEOS_BASE_URL = m.url, BEEOS_API_KEY = TOKEN, BEEOS_DEBUG = "0" })
      assert.is_true(ok, err)
      assert.equals("", err)
    end)
  end)

  describe("TLS", function()
    local dir, proc, port, pid
    local have_tools = os.execute("command -v openssl >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1")

    setup(function()
      if not have_tools then return end
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. sdk.shell_quote(dir)))
      assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost " ..
        "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s/key.pem -out %s/cert.pem " ..
        ">/dev/null 2>&1"):format(dir, dir)))
      proc = assert(io.popen(("echo $$; exec python3 %s %s/cert.pem %s/key.pem %d"):format(
        sdk.shell_quote(sdk.ROOT .. "/spec/support/tls_server.py"), dir, dir, sdk.pid())))
      pid = tonumber(proc:read("l"))
      port = tonumber((proc:read("l") or ""):match("^port (%d+)$"))
      assert(port, "the TLS server did not start")
    end)

    teardown(function()
      if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
      if proc then proc:close() end
      if dir then os.execute("rm -rf " .. sdk.shell_quote(dir)) end
    end)

    it("verifies the server certificate by default", function()
      if not have_tools then return pending("needs openssl and python3") end
      local c = sdk.track(beeos.new { base_url = "https://127.0.0.1:" .. port, api_key = TOKEN })
      local reply, err = c:agent("echo"):send("hi")
      assert.is_nil(reply)
      assert.equals("connection", err.kind)
      assert.equals("tls_failed", err.code)
      assert.is_false(err.retryable)
      assert.equals(1, err.attempts)
      c:close()
    end)

    it("skips verification only with verify_tls = false", function()
      if not have_tools then return pending("needs openssl and python3") end
      local c = sdk.track(beeos.new { base_url = "https://127.0.0.1:" .. port, api_key = TOKEN, verify_tls = false })
      local reply, err = c:agent("echo"):send("hi")
      assert.is_nil(err)
      assert.equals("tls ok", reply.text)
      c:close()
    end)

    it("trusts a ca_file", function()
      if not have_tools then return pending("needs openssl and python3") end
      local c = sdk.track(beeos.new { base_url = "https://127.0.0.1:" .. port, api_key = TOKEN, ca_file = dir .. "/cert.pem" })
      local reply, err = c:agent("echo"):send("hi")
      assert.is_nil(err)
      assert.equals("tls ok", reply.text)
      c:close()
    end)
  end)
end)
