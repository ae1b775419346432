-- Programmer errors raise at once, at the caller's line, naming the field,
-- before any network I/O (the mock must see nothing).
-- Run from the repository root: busted --lua=lua5.4 spec/validation_spec.lua
local beeos = require "beeos"
local sdk = require "spec.support.sdk"

local THIS_FILE = "validation_spec%.lua:%d+: beeos: "

describe("validation", function()
  local m, client, agent
  setup(function() m = sdk.mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    client = sdk.client(m)
    agent = client:agent("echo")
  end)
  after_each(function()
    -- Nothing reached the server, whatever the test did.
    assert.equals(0, #m:requests())
    assert.equals(0, m:stats().requests)
    sdk.finish(m)
  end)

  -- fn() must raise an error that points at this file and matches `field`.
  local function raises(field, fn)
    local ok, e = pcall(fn)
    assert.is_false(ok, "did not raise (expected an error about " .. field .. ")")
    assert.equals("string", type(e))
    assert.matches(THIS_FILE, e)
    assert.matches(field, e, 1, true)
    return e
  end

  -- Both send and stream (and send with on_delta) raise for these options.
  local function all_calls_raise(field, message, opts)
    raises(field, function() agent:send(message, opts) end)
    raises(field, function() agent:stream(message, opts) end)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.on_delta = function() end
    raises(field, function() agent:send(message, o) end)
    raises(field, function() agent:conversation():send(message, opts) end)
    raises(field, function() agent:conversation():stream(message, opts) end)
  end

  describe("the message", function()
    it("must be given", function() all_calls_raise("message", nil) end)
    it("must not be empty", function() all_calls_raise("message must not be empty", "") end)
    it("must be a string", function()
      all_calls_raise("message must be a string", 42)
      all_calls_raise("message must be a string", { "hi" })
    end)
  end)

  describe("the agent id", function()
    it("must be 1 to 128 characters", function()
      raises("agent id", function() client:agent("") end)
      raises("agent id", function() client:agent(string.rep("a", 129)) end)
      raises("agent id", function() client:agent(string.rep("é", 129)) end)
      raises("129 characters", function() client:agent(string.rep("🐝", 129)) end)
      assert.truthy(client:agent(string.rep("a", 128)))
      assert.truthy(client:agent(string.rep("🐝", 128)))
    end)

    it("must be a string", function()
      raises("agent id", function() client:agent(nil) end)
      raises("agent id", function() client:agent(7) end)
      raises("agent id", function() client:agent({}) end)
    end)
  end)

  describe("timeout_ms", function()
    it("must not be negative", function()
      local e = raises("timeout_ms", function() agent:send("hi", { timeout_ms = -1 }) end)
      assert.matches(">= 0", e)
      all_calls_raise("timeout_ms", "hi", { timeout_ms = -1 })
    end)

    it("must be an integer", function()
      for _, bad in ipairs({ 1.5, "100", 0 / 0, math.huge, -math.huge, true }) do
        all_calls_raise("timeout_ms", "hi", { timeout_ms = bad })
      end
    end)
  end)

  describe("metadata", function()
    it("must be a table of strings to strings", function()
      all_calls_raise("metadata", "hi", { metadata = "x=y" })
      all_calls_raise("metadata", "hi", { metadata = { a = 1 } })
      all_calls_raise("metadata.a", "hi", { metadata = { a = { b = "c" } } })
      all_calls_raise("metadata.a", "hi", { metadata = { a = true } })
      all_calls_raise("metadata keys", "hi", { metadata = { "positional" } })
      all_calls_raise("metadata keys", "hi", { metadata = { [true] = "x" } })
    end)

    it("must not use a reserved key", function()
      for _, key in ipairs({ "protocol", "caller_owner_id", "target_agent_id", "delivery_principal" }) do
        local e = raises("metadata." .. key, function() agent:send("hi", { metadata = { ok = "1", [key] = "x" } }) end)
        assert.matches("reserved", e)
        all_calls_raise("metadata." .. key, "hi", { metadata = { [key] = "x" } })
      end
    end)
  end)

  describe("file_ids", function()
    it("must be a list of 1 to 16 non-empty strings", function()
      all_calls_raise("file_ids", "hi", { file_ids = "file_1" })
      all_calls_raise("file_ids", "hi", { file_ids = {} })
      local many = {}
      for i = 1, 17 do many[i] = "f" .. i end
      all_calls_raise("file_ids", "hi", { file_ids = many })
      all_calls_raise("file_ids[2]", "hi", { file_ids = { "a", "" } })
      all_calls_raise("file_ids[1]", "hi", { file_ids = { 1 } })
      all_calls_raise("file_ids", "hi", { file_ids = { "a", nil, "c" } })
      all_calls_raise("file_ids", "hi", { file_ids = { "a", x = "b" } })
      all_calls_raise("file_ids", "hi", { file_ids = { id = "a" } })
    end)
  end)

  describe("other call options", function()
    it("must be a table", function()
      raises("options must be a table", function() agent:send("hi", "fast") end)
      raises("options must be a table", function() agent:stream("hi", 5) end)
    end)

    it("context_id and idempotency_key must be non-empty strings", function()
      all_calls_raise("context_id", "hi", { context_id = "" })
      all_calls_raise("context_id", "hi", { context_id = 12 })
      all_calls_raise("idempotency_key", "hi", { idempotency_key = "" })
      all_calls_raise("idempotency_key", "hi", { idempotency_key = {} })
      raises("context_id", function() agent:conversation("") end)
      raises("context_id", function() agent:conversation(5) end)
    end)

    it("deadline_ms, idle_timeout_ms and max_retries must be sane numbers", function()
      all_calls_raise("deadline_ms", "hi", { deadline_ms = 0 })
      all_calls_raise("deadline_ms", "hi", { deadline_ms = "1000" })
      all_calls_raise("idle_timeout_ms", "hi", { idle_timeout_ms = -5 })
      all_calls_raise("max_retries", "hi", { max_retries = -1 })
      all_calls_raise("max_retries", "hi", { max_retries = math.huge })
    end)

    it("on_delta must be a function, keep_text a boolean", function()
      raises("on_delta", function() agent:send("hi", { on_delta = "print" }) end)
      raises("on_delta", function() agent:stream("hi", { on_delta = true }) end)
      all_calls_raise("keep_text", "hi", { keep_text = "yes" })
    end)
  end)

  describe("the client", function()
    local function new_raises(field, opts)
      return raises(field, function() beeos.new(opts) end)
    end

    it("needs an api key without control characters or spaces", function()
      new_raises("api_key", { base_url = m.url })
      new_raises("api_key", { base_url = m.url, api_key = "" })
      new_raises("api_key", { base_url = m.url, api_key = 12345 })
      for _, bad in ipairs({ "key\n", "key\r\nX-Evil: 1", "k\0ey", "k\tey", "k ey", "key\127" }) do
        local e = new_raises("api_key contains control characters", { base_url = m.url, api_key = bad })
        assert.is_nil(e:find(bad, 1, true))
      end
    end)

    it("needs an http(s) base_url without credentials", function()
      new_raises("base_url", { api_key = "k" })
      new_raises("base_url", { base_url = "", api_key = "k" })
      new_raises("base_url", { base_url = "127.0.0.1:8080", api_key = "k" })
      new_raises("base_url must use http or https", { base_url = "ftp://127.0.0.1", api_key = "k" })
      new_raises("base_url must not carry credentials", { base_url = "https://u:p@example.com", api_key = "k" })
      new_raises("base_url", { base_url = "https://example.com/?x=1", api_key = "k" })
    end)

    it("refuses plain http to a host that is not loopback", function()
      for _, url in ipairs({ "http://example.com", "http://10.0.0.1:8080", "http://127.0.0.1.nip.io",
                             "http://localhost.example.com", "HTTP://api.beeos.dev/base" }) do
        local e = new_raises("allow_insecure_http", { base_url = url, api_key = "k" })
        assert.matches("plain http", e)
      end
      assert.truthy(beeos.new { base_url = "http://example.com", api_key = "k", allow_insecure_http = true })
      for _, url in ipairs({ "https://example.com", "http://localhost:1", "http://LOCALHOST",
                             "http://127.0.0.1:1", "http://127.8.9.10", "http://[::1]:8080" }) do
        assert.truthy(beeos.new { base_url = url, api_key = "k" }, url)
      end
    end)

    it("validates the TLS options: verify_tls a boolean, ca_file a string", function()
      new_raises("verify_tls", { base_url = m.url, api_key = "k", verify_tls = "no" })
      new_raises("verify_tls", { base_url = m.url, api_key = "k", verify_tls = 0 })
      new_raises("ca_file", { base_url = m.url, api_key = "k", ca_file = true })
      assert.truthy(beeos.new { base_url = "https://example.com", api_key = "k", verify_tls = false })
      assert.truthy(beeos.new { base_url = "https://example.com", api_key = "k", verify_tls = true })
    end)

    it("validates path_template and the tuning numbers", function()
      new_raises("path_template", { base_url = m.url, api_key = "k", path_template = "/agents/messages" })
      new_raises("path_template", { base_url = m.url, api_key = "k", path_template = "agents/{agent_id}" })
      new_raises("path_template", { base_url = m.url, api_key = "k", path_template = 5 })
      for _, name in ipairs({ "connect_timeout_ms", "idle_timeout_ms", "max_retries", "max_body",
                              "max_event", "retry_base_s", "deadline_grace_ms" }) do
        new_raises(name, { base_url = m.url, api_key = "k", [name] = -1 })
        new_raises(name, { base_url = m.url, api_key = "k", [name] = "1" })
      end
      new_raises("deadline_ms", { base_url = m.url, api_key = "k", deadline_ms = 0 })
      new_raises("options must be a table", "http://127.0.0.1")
    end)
  end)
end)

describe("validated values on the wire", function()
  local m, client
  setup(function() m = sdk.mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    client = sdk.client(m)
  end)
  after_each(function() sdk.finish(m) end)

  it("clamps timeout_ms above 115000 to 115000", function()
    for _, v in ipairs({ 115001, 200000, 2 ^ 40 }) do
      assert(client:agent("echo"):send("hi", { timeout_ms = v }))
    end
    local s = assert(client:agent("echo"):stream("hi", { timeout_ms = 999999 }))
    sdk.drain(s)
    local reqs = m:requests()
    assert.equals(4, #reqs)
    for _, r in ipairs(reqs) do
      assert.equals(115000, r.json.timeout_ms)
      assert.matches('"timeout_ms":115000[,}]', r.body)
    end
  end)

  it("sends 115000 and an integral float as they are", function()
    assert(client:agent("echo"):send("hi", { timeout_ms = 115000 }))
    assert(client:agent("echo"):send("hi", { timeout_ms = 2500.0 }))
    local reqs = m:requests()
    assert.matches('"timeout_ms":115000[,}]', reqs[1].body)
    assert.matches('"timeout_ms":2500[,}]', reqs[2].body)
  end)

  it("accepts 16 file ids and an empty metadata table", function()
    local ids = {}
    for i = 1, 16 do ids[i] = "file_" .. i end
    assert(client:agent("echo"):send("hi", { file_ids = ids, metadata = {} }))
    local r = m:requests()[1]
    assert.same(ids, r.json.file_ids)
    assert.matches('"metadata":{}', r.body)
  end)
end)
