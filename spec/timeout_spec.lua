-- Timeouts: connect, the call deadline, the stream idle timeout (which
-- heartbeats reset), and the server's own timeout_ms window.
-- Run from the repository root: busted --lua=lua5.4 spec/timeout_spec.lua
local socket = require "socket"
local beeos = require "beeos"
local sdk = require "spec.support.sdk"

describe("timeouts", function()
  local m, client
  sdk.mock_per_file(function(mock, c) m, client = mock, c end)

  -- The mock saw the client hang up on n responses in progress.
  local function hung_up(n)
    return m:wait_for(function(mm) return mm:stats().client_closed == n end, 3)
  end

  describe("connect", function()
    it("connect_timeout_ms is validated", function()
      for _, bad in ipairs({ -1, "100", 0 / 0, math.huge, true }) do
        local ok, e = pcall(beeos.new, { base_url = m.url, api_key = sdk.TOKEN, connect_timeout_ms = bad })
        assert.is_false(ok)
        assert.matches("connect_timeout_ms", e)
      end
      assert.truthy(beeos.new { base_url = m.url, api_key = sdk.TOKEN, connect_timeout_ms = 250 })
    end)

    it("gives timeout/connect_timeout when the server never completes the handshake", function()
      -- A listening socket that never accepts, its backlog filled: the
      -- kernel drops further SYNs, so a connect hangs as if the host were
      -- unreachable.  No packet leaves the machine.
      local srv = socket.tcp()
      assert(srv:bind("127.0.0.1", 0))
      assert(srv:listen(0))
      local _, port = srv:getsockname()
      local fillers = {}
      local function probe_hangs()
        local p = socket.tcp()
        p:settimeout(0.2)
        local ok = p:connect("127.0.0.1", port)
        fillers[#fillers + 1] = p
        return not ok
      end
      local full = false
      for _ = 1, 8 do
        if probe_hangs() then full = true break end
      end
      if not full then
        for _, f in ipairs(fillers) do f:close() end
        srv:close()
        return pending("could not fill a listen backlog on this kernel")
      end
      local c = sdk.track(beeos.new { base_url = "http://127.0.0.1:" .. port, api_key = sdk.TOKEN,
                            connect_timeout_ms = 300, max_retries = 0 })
      local ms, reply, err = sdk.timed(function() return c:agent("echo"):send("hi") end)
      for _, f in ipairs(fillers) do f:close() end
      srv:close()
      c:close()
      assert.is_nil(reply)
      assert.equals("timeout", err.kind)
      assert.equals("connect_timeout", err.code)
      assert.is_true(err.retryable)
      assert.equals(1, err.attempts)
      assert.is_true(ms >= 250 and ms < 3000, "took " .. ms .. " ms")
    end)
  end)

  describe("the call deadline", function()
    it("ends a call whose headers never come: timeout/deadline, promptly", function()
      local ms, reply, err = sdk.timed(function()
        return client:agent("stall-headers"):send("hi", { deadline_ms = 300 })
      end)
      assert.is_nil(reply)
      assert.equals("timeout", err.kind)
      assert.equals("deadline", err.code)
      assert.is_false(err.retryable)
      assert.equals(1, err.attempts)
      assert.truthy(err.idempotency_key)
      assert.is_true(ms >= 280 and ms < 2000, "took " .. ms .. " ms")
      assert.truthy(hung_up(1))
    end)

    it("ends stream() whose headers never come", function()
      local ms, s, err = sdk.timed(function()
        return client:agent("stall-headers"):stream("hi", { deadline_ms = 300 })
      end)
      assert.is_nil(s)
      assert.equals("deadline", err.code)
      assert.is_true(ms < 2000, "took " .. ms .. " ms")
      assert.truthy(hung_up(1))
    end)

    it("ends a stream mid-way, keeping the text so far", function()
      local s = assert(client:agent("stall"):stream("hello", { deadline_ms = 400, idle_timeout_ms = 60000 }))
      local ms = sdk.timed(sdk.drain, s)
      assert.is_nil(s.reply)
      assert.equals("timeout", s.err.kind)
      assert.equals("deadline", s.err.code)
      assert.equals("echo", s.err.text)
      assert.is_true(ms < 2000, "took " .. ms .. " ms")
      assert.truthy(hung_up(1))
    end)

    it("can be set on the client", function()
      local c = sdk.client(m, { deadline_ms = 300 })
      local ms, _, err = sdk.timed(function() return c:agent("stall-headers"):send("hi") end)
      assert.equals("deadline", err.code)
      assert.is_true(ms < 2000, "took " .. ms .. " ms")
      c:close()
    end)

    it("defaults to timeout_ms plus deadline_grace_ms", function()
      local c = sdk.client(m, { deadline_grace_ms = 200 })
      local ms, _, err = sdk.timed(function() return c:agent("stall-headers"):send("hi", { timeout_ms = 100 }) end)
      assert.equals("deadline", err.code)
      assert.is_true(ms >= 280 and ms < 2000, "took " .. ms .. " ms")
      c:close()
    end)

    it("covers the retries too", function()
      local ms, _, err = sdk.timed(function()
        return client:agent("stall-headers"):send("hi", { deadline_ms = 300, max_retries = 5 })
      end)
      assert.equals("deadline", err.code)
      assert.equals(1, err.attempts)
      assert.is_true(ms < 2000, "took " .. ms .. " ms")
    end)
  end)

  describe("the stream idle timeout", function()
    it("ends a silent stream with timeout/idle_timeout, keeping the text so far", function()
      local s = assert(client:agent("stall"):stream("hello", { idle_timeout_ms = 200 }))
      local ms, evs = sdk.timed(sdk.drain, s)
      assert.equals(1, #evs)
      assert.equals("echo", evs[1].text)
      assert.is_nil(s.reply)
      local err = s.err
      assert.equals("timeout", err.kind)
      assert.equals("idle_timeout", err.code)
      assert.equals("echo", err.text)
      assert.equals("echo", s.text)
      assert.is_false(err.retryable)
      assert.equals(1, err.attempts)
      assert.matches("^req_%d+$", err.request_id)
      assert.is_true(ms >= 150 and ms < 2000, "took " .. ms .. " ms")
      assert.truthy(hung_up(1))
      assert.equals(1, #m:requests())
    end)

    it("can be set on the client", function()
      local c = sdk.client(m, { idle_timeout_ms = 200 })
      local s = assert(c:agent("stall"):stream("hello"))
      local ms = sdk.timed(sdk.drain, s)
      assert.equals("idle_timeout", s.err.code)
      assert.is_true(ms < 2000, "took " .. ms .. " ms")
      c:close()
    end)

    it("applies to send with on_delta", function()
      local reply, err = client:agent("stall"):send("hello", { idle_timeout_ms = 200, on_delta = function() end })
      assert.is_nil(reply)
      assert.equals("idle_timeout", err.code)
      assert.equals("echo", err.text)
    end)

    it("is reset by heartbeat comments: deltas 200 ms apart, pings every 50 ms, idle 120 ms", function()
      local s = assert(client:agent("heartbeat"):stream("hello bees", {
        idle_timeout_ms = 120, metadata = { mock_deltas = "3" },
      }))
      sdk.drain(s)
      assert.is_nil(s.err)
      assert.equals("echo: hello bees", s.reply.text)
    end)

    it("fires on the same pacing without heartbeats", function()
      local s = assert(client:agent("heartbeat"):stream("hello bees", {
        idle_timeout_ms = 120, metadata = { mock_deltas = "3", mock_heartbeat_ms = "0" },
      }))
      sdk.drain(s)
      assert.is_nil(s.reply)
      assert.equals("idle_timeout", s.err.code)
      assert.equals("echo: ", s.err.text) -- the first of 3 parts of "echo: hello bees"
    end)
  end)

  describe("the server's timeout_ms", function()
    it("gives HTTP 504 service_timeout from a slow agent, not retried", function()
      local ms, reply, err = sdk.timed(function()
        return client:agent("slow"):send("hi", { timeout_ms = 200 })
      end)
      assert.is_nil(reply)
      assert.equals("http", err.kind)
      assert.equals(504, err.status)
      assert.equals("service_timeout", err.code)
      assert.equals("agent did not reply within 200 ms", err.message)
      assert.is_false(err.retryable)
      assert.equals(1, err.attempts)
      assert.equals(1, #m:requests())
      assert.equals(200, m:requests()[1].json.timeout_ms)
      assert.is_true(ms >= 180 and ms < 3000, "took " .. ms .. " ms")
    end)

    it("gives the same from stream()", function()
      local s, err = client:agent("slow"):stream("hi", { timeout_ms = 200 })
      assert.is_nil(s)
      assert.equals(504, err.status)
      assert.equals("service_timeout", err.code)
      assert.equals(1, #m:requests())
    end)

    it("lets an agent reply that fits in the window", function()
      local reply = assert(client:agent("slow"):send("hi", { timeout_ms = 2000, metadata = { mock_delay_ms = "100" } }))
      assert.equals("echo: hi", reply.text)
    end)
  end)
end)
