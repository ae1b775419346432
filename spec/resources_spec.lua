-- Resources: connection reuse, bounded memory for huge replies, and no
-- growth of descriptors or memory over many calls.
-- Run from the repository root: busted --lua=lua5.4 spec/resources_spec.lua
local sdk = require "spec.support.sdk"

describe("resources", function()
  local m, client
  sdk.mock_per_file(function(mock, c) m, client = mock, c end)

  -- conn_ids of the recorded requests.
  local function conn_ids()
    local ids = {}
    for i, r in ipairs(m:requests()) do ids[i] = r.conn_id end
    return ids
  end

  describe("keep-alive", function()
    it("sends several calls over one connection", function()
      for i = 1, 5 do assert(client:agent("echo"):send("hi " .. i)) end
      -- One connection for the calls, one for this stats call.
      assert.equals(2, m:stats().connections_accepted)
      local ids = conn_ids()
      assert.equals(5, #ids)
      for i = 2, 5 do assert.equals(ids[1], ids[i]) end
    end)

    it("reuses the connection of completed streams and of HTTP errors", function()
      local s = assert(client:agent("echo"):stream("one"))
      sdk.drain(s)
      assert(client:agent("echo"):send("two"))
      assert.is_nil((client:agent("status"):send("three", { max_retries = 0, metadata = { mock_status = "404" } })))
      s = assert(client:agent("echo"):stream("four"))
      sdk.drain(s)
      assert(client:agent("echo"):send("five", { on_delta = function() end }))
      local ids = conn_ids()
      assert.equals(5, #ids)
      for i = 2, 5 do assert.equals(ids[1], ids[i]) end
    end)

    it("does not reuse the connection of a stream left early", function()
      local s = assert(client:agent("echo"):stream("hello there", { metadata = { mock_interval_ms = "30" } }))
      for _ in s:events() do break end
      assert(client:agent("echo"):send("next"))
      local ids = conn_ids()
      assert.not_equals(ids[1], ids[2])
      assert.truthy(m:wait_for(function(mm) return mm:stats().client_closed == 1 end, 3))
    end)

    it("survives the server dropping idle connections", function()
      assert(client:agent("echo"):send("one"))
      assert.equals(1, m:drop_idle())
      local reply, err = client:agent("echo"):send("two")
      assert.is_nil(err)
      assert.equals("echo: two", reply.text)
      local ids = conn_ids()
      assert.not_equals(ids[1], ids[2])
      assert.equals(2, #ids)
    end)
  end)

  describe("bounded memory", function()
    it("ends a stream whose event exceeds max_event: protocol/event_too_large, not retried", function()
      local c = sdk.client(m, { max_event = 16 * 1024 })
      local s, err = c:agent("huge-event"):stream("hi", { metadata = { mock_size = "200000" } })
      if s then
        sdk.drain(s)
        err = s.err
        assert.is_nil(s.reply)
      end
      assert.equals("protocol", err.kind)
      assert.equals("event_too_large", err.code)
      assert.equals(200, err.status)
      assert.matches("max_event", err.message)
      assert.equals(1, err.attempts)
      assert.equals(1, #m:requests())
      assert.truthy(m:wait_for(function(mm) return mm:stats().streams_active == 0 end, 3))
      c:close()
    end)

    it("ends a reply whose body exceeds max_body: protocol/body_too_large, not retried", function()
      local c = sdk.client(m, { max_body = 16 * 1024 })
      local reply, err = c:agent("huge-body"):send("hi", { metadata = { mock_size = "200000" } })
      assert.is_nil(reply)
      assert.equals("protocol", err.kind)
      assert.equals("body_too_large", err.code)
      assert.equals(200, err.status)
      assert.matches("max_body", err.message)
      assert.equals(1, err.attempts)
      assert.equals(1, #m:requests())
      c:close()
    end)

    it("applies max_body to error bodies too", function()
      local c = sdk.client(m, { max_body = 1024, max_retries = 0 })
      local reply, err = c:agent("huge-body"):send("hi", { metadata = { mock_size = "5000" } })
      assert.is_nil(reply)
      assert.equals("body_too_large", err.code)
      c:close()
    end)

    it("takes huge events and bodies within the limits", function()
      local s = assert(client:agent("huge-event"):stream("hi", { metadata = { mock_size = "300000" } }))
      sdk.drain(s)
      assert.equals(300000, #s.reply.text)
      assert.equals(300000, #s.text)
      local reply = assert(client:agent("huge-body"):send("hi", { metadata = { mock_size = "300000" } }))
      assert.equals(300000, #reply.text)
    end)
  end)

  describe("many calls", function()
    local function settle()
      for _ = 1, 3 do collectgarbage() end
    end

    it("1000 sequential sends leave descriptors, Lua memory and RSS where they were", function()
      local agent = client:agent("echo")
      -- Warm-up: the pool, libcurl's caches and the Lua heap reach their size.
      for i = 1, 200 do assert(agent:send("warm-up " .. i)) end
      settle()
      local fds0, list0 = sdk.fd_count()
      local lua0, rss0 = collectgarbage("count"), sdk.rss_kb()
      for i = 1, 1000 do
        local reply, err = agent:send("message " .. i)
        assert(reply, err)
      end
      settle()
      local fds1, list1 = sdk.fd_count()
      local lua1, rss1 = collectgarbage("count"), sdk.rss_kb()
      assert.equals(fds0, fds1, list0 .. "\n" .. list1)
      -- Slack: a leak of 1 KiB per call would show.
      assert.is_true(lua1 - lua0 < 64, ("Lua heap grew %.0f KiB"):format(lua1 - lua0))
      if not sdk.under_asan then -- ASan's quarantine holds freed memory; LSan checks leaks there
        assert.is_true(rss1 - rss0 < 1024, ("RSS grew %d KiB"):format(rss1 - rss0))
      end
      -- All over the one keep-alive connection.
      local ids = {}
      for _, r in ipairs(m:requests()) do ids[r.conn_id] = true end
      local n = 0
      for _ in pairs(ids) do n = n + 1 end
      assert.equals(1, n)
    end)

    it("200 streams, half of them left early, leave descriptors and memory where they were", function()
      local agent = client:agent("echo")
      local function one(i)
        local s = assert(agent:stream("stream " .. i, { metadata = { mock_interval_ms = "0" } }))
        for ev in s:events() do
          if i % 2 == 0 and ev.type == "delta" then break end
        end
      end
      for i = 1, 40 do one(i) end
      settle()
      local fds0, lua0, rss0 = sdk.fd_count(), collectgarbage("count"), sdk.rss_kb()
      for i = 1, 200 do one(i) end
      settle()
      local fds1, lua1, rss1 = sdk.fd_count(), collectgarbage("count"), sdk.rss_kb()
      assert.is_true(fds1 <= fds0 + 1, ("descriptors %d -> %d"):format(fds0, fds1))
      assert.is_true(lua1 - lua0 < 128, ("Lua heap grew %.0f KiB"):format(lua1 - lua0))
      if not sdk.under_asan then -- ASan's quarantine holds freed memory; LSan checks leaks there
        assert.is_true(rss1 - rss0 < 1024, ("RSS grew %d KiB"):format(rss1 - rss0))
      end
    end)

    it("closing a client releases its connections", function()
      local fds0, list0 = sdk.fd_count()
      local c = sdk.client(m)
      assert(c:agent("echo"):send("hi"))
      assert.is_true(sdk.fd_count() > fds0) -- the connection (and libcurl's own)
      c:close()
      local fds1, list1 = sdk.fd_count()
      assert.equals(fds0, fds1, list0 .. "\n" .. list1)
      assert.truthy(m:wait_for(function(mm) return mm:stats().connections_open == 1 end, 3))
    end)
  end)
end)
