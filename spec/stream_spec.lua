-- agent:stream and send{on_delta}: events, the final reply, and closing a
-- stream every way (end, break, close, <close>, garbage collection).
-- Run from the repository root: busted --lua=lua5.4 spec/stream_spec.lua
local cjson = require "cjson"
local sdk = require "spec.support.sdk"

describe("agent:stream", function()
  local m, client
  sdk.mock_per_file(function(mock, c) m, client = mock, c end)

  -- The mock saw n connections closed by the client mid-response, and none
  -- of the client's is left open (connections_open counts the admin call).
  local function closed_at_mock(n)
    local st
    local ok = m:wait_for(function(mm)
      st = mm:stats()
      return st.client_closed == n and st.connections_open == 1 and st.streams_active == 0
    end, 3)
    assert(ok, ("the mock saw client_closed=%d connections_open=%d streams_active=%d"):format(
      st.client_closed, st.connections_open, st.streams_active))
    return ok
  end

  describe("events and the reply", function()
    it("asks for text/event-stream and yields deltas, then done", function()
      local s, err = client:agent("echo"):stream("hello world")
      assert.is_nil(err)
      local evs = sdk.drain(s)
      assert.equals("text/event-stream", m:requests()[1].headers["accept"])
      -- "echo: hello world" in 4-character deltas, then done.
      local texts, types = {}, {}
      for i, ev in ipairs(evs) do
        types[i] = ev.type
        if ev.type == "delta" then
          texts[#texts + 1] = ev.text
          assert.equals(tostring(#texts), ev.id)
          assert.equals(ev.text, cjson.decode(ev.data).text)
        end
      end
      assert.same({ "echo", ": he", "llo ", "worl", "d" }, texts)
      assert.same({ "delta", "delta", "delta", "delta", "delta", "done" }, types)
      local done = evs[#evs]
      assert.equals(s.reply, done.reply)
      assert.is_nil(s.err)
      assert.equals("echo: hello world", s.text)
      assert.equals("echo: hello world", s.reply.text)
      assert.matches("^msg_%d+$", s.reply.message_id)
      assert.equals(s.idempotency_key, s.reply.in_reply_to)
      assert.equals(s.idempotency_key, m:requests()[1].json.idempotency_key)
      assert.matches("^ctx_%d+$", s.reply.context_id)
      assert.matches("^req_%d+$", s.reply.request_id)
      assert.equals(s.request_id, s.reply.request_id)
      assert.equals(1, s.reply.attempts)
      assert.equals("echo: hello world", s.reply.raw.content)
    end)

    it("sends the same body fields as send", function()
      local s = assert(client:agent("echo"):stream("hi", {
        context_id = "ctx_s", timeout_ms = 5000, idempotency_key = "key_s",
        metadata = { a = "b" }, file_ids = { "f" },
      }))
      sdk.drain(s)
      local r = m:requests()[1]
      assert.same({ message = "hi", context_id = "ctx_s", timeout_ms = 5000, idempotency_key = "key_s",
                    metadata = { a = "b" }, file_ids = { "f" } }, r.json)
      assert.equals("key_s", r.headers["idempotency-key"])
      assert.equals("Bearer " .. sdk.TOKEN, r.headers["authorization"])
      assert.equals("ctx_s", s.reply.context_id)
    end)

    it("returns once the headers are in, before the reply is complete", function()
      -- stall: headers and one delta, then nothing ever again.
      local agent = client:agent("stall")
      local ms, s, err = sdk.timed(agent.stream, agent, "hello")
      assert.is_nil(err)
      assert.is_true(ms < 3000)
      assert.is_nil(s.reply)
      assert.is_nil(s.err)
      local iter = s:events()
      local ev = iter()
      assert.equals("delta", ev.type)
      assert.equals("echo", ev.text)
      s:close()
      assert.truthy(closed_at_mock(1))
    end)

    it("passes unknown event types through untouched", function()
      local s = assert(client:agent("unknown-event"):stream("find bees"))
      local evs = sdk.drain(s)
      local tool
      for _, ev in ipairs(evs) do
        if ev.type == "tool_call" then tool = ev end
      end
      assert.truthy(tool)
      assert.is_nil(tool.text)
      assert.equals("2", tool.id)
      assert.same({ name = "lookup", arguments = { query = "find bees" } }, cjson.decode(tool.data))
      assert.equals("delta", evs[1].type)
      assert.equals("tool_call", evs[2].type)
      assert.equals("echo: find bees", s.text) -- only deltas make the text
      assert.equals("echo: find bees", s.reply.text)
    end)

    it("keeps unknown fields of deltas and done", function()
      local s = assert(client:agent("echo"):stream("hi", { metadata = { mock_extra = '{"seq_hint":7}' } }))
      local evs = sdk.drain(s)
      assert.equals("delta", evs[1].type)
      assert.equals("echo", evs[1].text)
      assert.equals(7, cjson.decode(evs[1].data).seq_hint)
      assert.equals("echo: hi", s.text)
      assert.equals(7, s.reply.raw.seq_hint)
    end)

    it("does not show comments and heartbeats as events", function()
      local s = assert(client:agent("comments"):stream("hello"))
      for _, ev in ipairs(sdk.drain(s)) do
        assert.is_true(ev.type == "delta" or ev.type == "done")
      end
      assert.equals("echo: hello", s.reply.text)
    end)

    it("reassembles multi-byte text delivered one byte per chunk, CRLF lines", function()
      local s = assert(client:agent("bytewise"):stream("ok"))
      sdk.drain(s)
      assert.is_nil(s.err)
      assert.equals("héllo wörld — 🐝 ok", s.text)
      assert.equals("héllo wörld — 🐝 ok", s.reply.text)
    end)

    it("reads CR-only line endings and a leading BOM", function()
      local s = assert(client:agent("cr-only"):stream("ok"))
      sdk.drain(s)
      assert.equals("héllo wörld — 🐝 ok", s.reply and s.reply.text)
      s = assert(client:agent("bom"):stream("ok"))
      sdk.drain(s)
      assert.equals("echo: ok", s.reply and s.reply.text)
    end)

    it("does not keep the text with keep_text = false, yet the reply has it", function()
      local s = assert(client:agent("echo"):stream("hello", { keep_text = false }))
      local n = 0
      for ev in s:events() do if ev.type == "delta" then n = n + 1 end end
      assert.is_true(n > 1)
      assert.equals("", s.text)
      assert.equals("echo: hello", s.reply.text)
    end)
  end)

  describe("failures", function()
    it("returns HTTP errors from stream() itself as nil, err", function()
      local s, err = client:agent("status"):stream("hi", { metadata = { mock_status = "404" } })
      assert.is_nil(s)
      assert.equals("http", err.kind)
      assert.equals(404, err.status)
      assert.equals("not_found", err.code)
      local bad = sdk.client(m, { api_key = "not-the-token" })
      s, err = bad:agent("echo"):stream("hi")
      assert.is_nil(s)
      assert.equals(401, err.status)
      assert.equals("unauthorized", err.code)
    end)

    it("reports an error event as a stream error, keeping the text so far", function()
      local s = assert(client:agent("error-event"):stream("hello", { metadata = { mock_code = "tool_crashed" } }))
      local evs = sdk.drain(s)
      assert.equals("delta", evs[1].type)
      assert.equals("error", evs[#evs].type)
      assert.is_nil(s.reply)
      local err = s.err
      assert.equals("stream", err.kind)
      assert.equals("tool_crashed", err.code)
      assert.equals("the agent failed", err.message)
      assert.equals(200, err.status)
      assert.equals("echo", err.text)
      assert.equals("echo", s.text)
      assert.matches("^req_%d+$", err.request_id)
      assert.equals(s.idempotency_key, err.idempotency_key)
      assert.equals(1, err.attempts)
    end)

    it("reports a stream that ends without done as stream_interrupted, with the text", function()
      local s = assert(client:agent("eof-no-done"):stream("hello"))
      sdk.drain(s)
      assert.is_nil(s.reply)
      assert.equals("stream", s.err.kind)
      assert.equals("stream_interrupted", s.err.code)
      assert.equals("echo: hello", s.err.text)
    end)

    it("reports a connection cut mid-event as stream_interrupted, with the text so far", function()
      local s = assert(client:agent("cut"):stream("hello world"))
      sdk.drain(s)
      assert.is_nil(s.reply)
      assert.equals("stream", s.err.kind)
      assert.equals("stream_interrupted", s.err.code)
      assert.equals("echo: he", s.err.text)
      assert.equals("echo: he", s.text)
      assert.equals(1, s.err.attempts)
    end)

    it("reports a malformed delta as a protocol error", function()
      local s = assert(client:agent("bad-json"):stream("hello"))
      sdk.drain(s)
      assert.is_nil(s.reply)
      assert.equals("protocol", s.err.kind)
      assert.equals("bad_event", s.err.code)
    end)
  end)

  describe("closing", function()
    it("closes the connection when the loop is left with break", function()
      local s = assert(client:agent("echo"):stream("a long reply, paced",
        { metadata = { mock_chunk = "1", mock_interval_ms = "50" } }))
      local n = 0
      for ev in s:events() do
        n = n + 1
        if ev.type == "delta" then break end
      end
      assert.equals(1, n)
      assert.is_true(s.closed)
      assert.truthy(closed_at_mock(1))
      assert.is_nil(s.reply)
      assert.equals("cancelled", s.err.code)
      assert.equals("e", s.err.text)
    end)

    it("close() is idempotent and ends the iteration", function()
      local s = assert(client:agent("stall"):stream("hello"))
      local iter = s:events()
      assert.equals("echo", iter().text)
      s:close()
      s:close()
      assert.is_nil(iter())
      assert.is_true(s.closed)
      assert.truthy(closed_at_mock(1))
      s:close()
      assert.equals(1, m:stats().client_closed)
    end)

    it("close() before reading anything is fine", function()
      local s = assert(client:agent("stall"):stream("hello"))
      s:close()
      assert.truthy(closed_at_mock(1))
      local n = 0
      for _ in s:events() do n = n + 1 end
      assert.equals(0, n)
    end)

    it("closes with a <close> variable at the end of its scope", function()
      do
        local s <close> = assert(client:agent("stall"):stream("hello"))
        assert.equals("echo", s:events()().text)
      end
      assert.truthy(closed_at_mock(1))
    end)

    it("closes with a <close> variable when the scope raises", function()
      local ok = pcall(function()
        local s <close> = assert(client:agent("stall"):stream("hello"))
        error("boom")
      end)
      assert.is_false(ok)
      assert.truthy(closed_at_mock(1))
    end)

    it("frees a forgotten stream when it is garbage collected", function()
      do
        local s = assert(client:agent("stall"):stream("hello"))
        assert.equals("echo", s:events()().text)
      end
      collectgarbage()
      collectgarbage()
      assert.truthy(closed_at_mock(1))
    end)

    it("returns a finished stream's connection to the pool", function()
      local s = assert(client:agent("echo"):stream("one"))
      sdk.drain(s)
      assert(client:agent("echo"):send("two"))
      local reqs = m:requests()
      assert.equals(reqs[1].conn_id, reqs[2].conn_id)
      assert.equals(0, m:stats().client_closed)
    end)
  end)

  describe("send with on_delta", function()
    it("streams underneath and returns the final reply", function()
      local got, evs = {}, {}
      local reply, err = client:agent("echo"):send("hello world", {
        on_delta = function(text, ev)
          got[#got + 1] = text
          evs[#evs + 1] = ev
        end,
      })
      assert.is_nil(err)
      assert.same({ "echo", ": he", "llo ", "worl", "d" }, got)
      for _, ev in ipairs(evs) do assert.equals("delta", ev.type) end
      assert.equals("echo: hello world", reply.text)
      assert.matches("^msg_%d+$", reply.message_id)
      assert.equals(reply.idempotency_key, reply.in_reply_to)
      assert.equals("text/event-stream", m:requests()[1].headers["accept"])
    end)

    it("is not called for unknown events", function()
      local got = {}
      local reply = assert(client:agent("unknown-event"):send("x", {
        on_delta = function(text) got[#got + 1] = text end,
      }))
      assert.equals("echo: x", table.concat(got))
      assert.equals("echo: x", reply.text)
    end)

    it("returns nil, err with the text so far when the stream fails", function()
      local got = {}
      local reply, err = client:agent("error-event"):send("hello", {
        on_delta = function(text) got[#got + 1] = text end,
      })
      assert.is_nil(reply)
      assert.equals("stream", err.kind)
      assert.equals("agent_failed", err.code)
      assert.equals("echo", err.text)
      assert.same({ "echo" }, got)
    end)

    it("returns HTTP errors as nil, err", function()
      local reply, err = client:agent("status"):send("x", {
        on_delta = function() error("not called") end, metadata = { mock_status = "403" },
      })
      assert.is_nil(reply)
      assert.equals(403, err.status)
      assert.equals("forbidden", err.code)
    end)

    it("closes the stream when on_delta raises", function()
      local ok, e = pcall(function()
        return client:agent("stall"):send("hello", { on_delta = function() error("stop here") end })
      end)
      assert.is_false(ok)
      assert.matches("stop here", tostring(e))
      assert.truthy(closed_at_mock(1))
    end)
  end)
end)
