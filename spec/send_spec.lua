-- agent:send: the request on the wire (checked at the mock), the reply, the
-- client's defaults and conversations.
-- Run from the repository root: busted --lua=lua5.4 spec/send_spec.lua
local beeos = require "beeos"
local sdk = require "spec.support.sdk"

local UUID4 = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

describe("agent:send", function()
  local m, client
  sdk.mock_per_file(function(mock, c) m, client = mock, c end)

  describe("on the wire", function()
    it("POSTs JSON to /api/v1/agents/{id}/messages with the bearer token and JSON Accept", function()
      assert(client:agent("echo"):send("hello"))
      local reqs = m:requests()
      assert.equals(1, #reqs)
      local r = reqs[1]
      assert.equals("POST", r.method)
      assert.equals("/api/v1/agents/echo/messages", r.path)
      assert.equals("echo", r.agent_id)
      assert.equals("Bearer " .. sdk.TOKEN, r.headers["authorization"])
      assert.equals("application/json", r.headers["accept"])
      assert.equals("application/json", r.headers["content-type"])
      assert.equals(tostring(#r.body), r.headers["content-length"])
      assert.is_nil(r.headers["expect"])
    end)

    it("sends a lua-beeos User-Agent naming the versions", function()
      assert(client:agent("echo"):send("hello"))
      local ua = m:requests()[1].headers["user-agent"]
      assert.matches("^lua%-beeos/" .. beeos._VERSION:gsub("%.", "%%.") .. " %(Lua 5%.4; libcurl/[%d.]+%)$", ua)
    end)

    it("sends message and idempotency_key only, when nothing else is given", function()
      assert(client:agent("echo"):send("hello"))
      local body = m:requests()[1].json
      local keys = {}
      for k in pairs(body) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "idempotency_key", "message" }, keys)
      assert.equals("hello", body.message)
    end)

    it("sends every body field as given", function()
      local reply = assert(client:agent("echo"):send("héllo \"there\"\n", {
        context_id = "ctx_given",
        timeout_ms = 30000,
        idempotency_key = "key-123",
        metadata = { team = "bees", ["with space"] = "ü" },
        file_ids = { "file_1", "file_2" },
      }))
      local r = m:requests()[1]
      local body = r.json
      assert.equals("héllo \"there\"\n", body.message)
      assert.equals("ctx_given", body.context_id)
      assert.equals(30000, body.timeout_ms)
      assert.matches('"timeout_ms":30000[,}]', r.body) -- an integer on the wire
      assert.equals("key-123", body.idempotency_key)
      assert.same({ team = "bees", ["with space"] = "ü" }, body.metadata)
      assert.same({ "file_1", "file_2" }, body.file_ids)
      assert.matches('"file_ids":%["file_1","file_2"%]', r.body) -- a JSON array
      assert.equals("key-123", r.headers["idempotency-key"])
      assert.equals("echo: héllo \"there\"\n", reply.text)
    end)

    it("sends timeout_ms 0 as given", function()
      assert(client:agent("echo"):send("hi", { timeout_ms = 0 }))
      assert.equals(0, m:requests()[1].json.timeout_ms)
    end)

    it("makes a fresh UUIDv4 idempotency key per call, in the body and the header", function()
      local a = assert(client:agent("echo"):send("one"))
      local b = assert(client:agent("echo"):send("two"))
      local reqs = m:requests()
      for i, reply in ipairs({ a, b }) do
        local key = reqs[i].json.idempotency_key
        assert.matches(UUID4, key)
        assert.equals(key, reqs[i].headers["idempotency-key"])
        assert.equals(key, reply.idempotency_key)
        assert.equals(key, reply.in_reply_to)
      end
      assert.not_equals(a.idempotency_key, b.idempotency_key)
    end)

    it("percent-encodes the agent id; the mock decodes it back", function()
      local id = "a b/c ü?#%+&=é🐝"
      assert(client:agent(id):send("hi"))
      local r = m:requests()[1]
      assert.equals("/api/v1/agents/a%20b%2Fc%20%C3%BC%3F%23%25%2B%26%3D%C3%A9%F0%9F%90%9D/messages", r.path)
      assert.equals(id, r.agent_id)
    end)

    it("leaves RFC 3986 unreserved characters as they are", function()
      assert(client:agent("Agent-1.2_x~Z9"):send("hi"))
      assert.equals("/api/v1/agents/Agent-1.2_x~Z9/messages", m:requests()[1].path)
    end)

    it("encodes the ids . and .. so that URL normalisation cannot drop them", function()
      for _, id in ipairs({ ".", "..", "...", "a/../b" }) do
        m:reset()
        local reply, err = client:agent(id):send("hi")
        assert.is_nil(err)
        assert.equals("echo: hi", reply.text)
        local r = m:requests()[1]
        assert.equals(id, r.agent_id)
        assert.matches("^/api/v1/agents/[^/]+/messages$", r.path)
      end
      assert.equals("/api/v1/agents/..%2F..%2Fb/messages", (function()
        m:reset()
        assert(client:agent("../../b"):send("hi"))
        return m:requests()[1].path
      end)())
    end)

    it("accepts ids of 128 characters, also multi-byte ones", function()
      for _, id in ipairs({ string.rep("a", 128), string.rep("é", 128) }) do
        m:reset()
        assert(client:agent(id):send("hi"))
        assert.equals(id, m:requests()[1].agent_id)
      end
    end)

    it("takes the path from the path_template option", function()
      -- base_url with a prefix plus a template: the same mock route.
      local c = sdk.client(m, { base_url = m.url .. "/api/", path_template = "/v1/agents/{agent_id}/messages" })
      local reply = assert(c:agent("x y"):send("hi"))
      assert.equals("echo: hi", reply.text)
      assert.equals("/api/v1/agents/x%20y/messages", m:requests()[1].path)
      -- Another template reaches exactly its path (the mock has no route there).
      m:reset()
      c = sdk.client(m, { path_template = "/v2/bots/{agent_id}/chat" })
      local _, err = c:agent("b/1"):send("hi")
      assert.equals(404, err.status)
      assert.equals("/v2/bots/b%2F1/chat", m:requests()[1].path)
    end)
  end)

  describe("the reply", function()
    it("has text, message_id, in_reply_to, context_id, request_id and raw", function()
      local reply, err = client:agent("echo"):send("hi", { idempotency_key = "k-1", context_id = "c-1" })
      assert.is_nil(err)
      assert.equals("echo: hi", reply.text)
      assert.matches("^msg_%d+$", reply.message_id)
      assert.equals("k-1", reply.in_reply_to)
      assert.equals("k-1", reply.idempotency_key)
      assert.equals("c-1", reply.context_id)
      assert.matches("^req_%d+$", reply.request_id)
      assert.equals(200, reply.status)
      assert.equals(1, reply.attempts)
      assert.equals("table", type(reply.raw))
      assert.equals("echo: hi", reply.raw.content)
      assert.equals(reply.message_id, reply.raw.message_id)
    end)

    it("gets a context id from the server when none is sent", function()
      local reply = assert(client:agent("echo"):send("hi"))
      assert.matches("^ctx_%d+$", reply.context_id)
    end)

    it("keeps unknown fields in reply.raw", function()
      local reply = assert(client:agent("echo"):send("hi", {
        metadata = { mock_extra = '{"usage":{"input_tokens":3,"output_tokens":5},"model":"bee-1"}' },
      }))
      assert.equals("echo: hi", reply.text)
      assert.same({ input_tokens = 3, output_tokens = 5 }, reply.raw.usage)
      assert.equals("bee-1", reply.raw.model)
    end)

    it("carries a reply text with any bytes exactly", function()
      local msg = "tab\t nul\0 quote\" back\\ 🐝 \u{2028}"
      local reply = assert(client:agent("echo"):send(msg))
      assert.equals("echo: " .. msg, reply.text)
    end)

    it("tolerates a trailing slash on base_url", function()
      local c = sdk.client(m, { base_url = m.url .. "/" })
      assert(c:agent("echo"):send("hi"))
      assert.equals("/api/v1/agents/echo/messages", m:requests()[1].path)
    end)
  end)

  describe("defaults from the environment", function()
    it("reads BEEOS_BASE_URL and BEEOS_API_KEY", function()
      local out, err, ok = sdk.run_lua([[
        local beeos = require "beeos"
        local reply, e = beeos.new{}:agent("echo"):send("from env")
        io.write(reply and reply.text or tostring(e))
      ]], { BEEOS_BASE_URL = m.url, BEEOS_API_KEY = sdk.TOKEN })
      assert.is_true(ok, err)
      assert.equals("echo: from env", out)
      assert.equals("Bearer " .. sdk.TOKEN, m:requests()[1].headers["authorization"])
    end)

    it("lets explicit options win over the environment", function()
      local out, err, ok = sdk.run_lua(([[
        local beeos = require "beeos"
        local reply, e = beeos.new{ base_url = %q, api_key = %q }:agent("echo"):send("explicit")
        io.write(reply and reply.text or tostring(e))
      ]]):format(m.url, sdk.TOKEN), { BEEOS_BASE_URL = "http://127.0.0.1:1", BEEOS_API_KEY = "wrong" })
      assert.is_true(ok, err)
      assert.equals("echo: explicit", out)
    end)
  end)

  describe("conversations", function()
    it("carries the context id of each reply into the next send", function()
      local conv = client:agent("echo"):conversation()
      assert.is_nil(conv.context_id)
      local r1 = assert(conv:send("one"))
      assert.matches("^ctx_%d+$", r1.context_id)
      assert.equals(r1.context_id, conv.context_id)
      local r2 = assert(conv:send("two"))
      assert.equals(r1.context_id, r2.context_id)
      local reqs = m:requests()
      assert.is_nil(reqs[1].json.context_id)
      assert.equals(r1.context_id, reqs[2].json.context_id)
    end)

    it("starts from a given context id, and carries it through streams", function()
      local conv = client:agent("echo"):conversation("ctx_start")
      assert(conv:send("one"))
      local s = assert(conv:stream("two"))
      sdk.drain(s)
      assert.equals("ctx_start", s.reply.context_id)
      assert(conv:send("three", { on_delta = function() end }))
      local reqs = m:requests()
      assert.equals(3, #reqs)
      for _, r in ipairs(reqs) do assert.equals("ctx_start", r.json.context_id) end
      assert.equals("text/event-stream", reqs[2].headers["accept"])
    end)

    it("takes a new context id from a streamed reply", function()
      local conv = client:agent("echo"):conversation()
      local s = assert(conv:stream("one"))
      sdk.drain(s)
      local ctx = s.reply.context_id
      assert.matches("^ctx_%d+$", ctx)
      assert.equals(ctx, conv.context_id)
      assert(conv:send("two"))
      assert.equals(ctx, m:requests()[2].json.context_id)
    end)

    it("lets an explicit context_id of one call win", function()
      local conv = client:agent("echo"):conversation("ctx_a")
      assert(conv:send("one", { context_id = "ctx_b" }))
      assert.equals("ctx_b", m:requests()[1].json.context_id)
      assert.equals("ctx_b", conv.context_id) -- the reply's, as always
    end)

    it("keeps the context id when a turn fails", function()
      local conv = client:agent("echo"):conversation("ctx_keep")
      local _, err = client:agent("status"):conversation("x"):send("boom", { max_retries = 0 })
      assert.equals(500, err.status)
      local c2 = client:agent("status"):conversation("ctx_keep")
      assert.is_nil((c2:send("boom", { max_retries = 0 })))
      assert.equals("ctx_keep", c2.context_id)
      assert(conv:send("after"))
      assert.equals("ctx_keep", conv.context_id)
    end)
  end)
end)
