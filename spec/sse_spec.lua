-- Specs of the SSE parser through its Lua face (lua/beeos/sse.lua over
-- beeos.core): the WHATWG "event stream interpretation" rules, each stream
-- fed whole, one byte at a time and in every 2-way split, plus the Lua API
-- (options, errors, closing, finish, last_event_id, retry, comments).
--
--   busted --lua=lua5.4 spec/sse_spec.lua
--   busted --lua=lua5.1 --cpath='./build/lua5.1/?.so' spec/sse_spec.lua
--   busted --lua=luajit --cpath='./build/lua5.1/?.so' spec/sse_spec.lua
--
-- Plain Lua 5.1 syntax only, so it runs on 5.1, LuaJIT and 5.4 alike.

local sse = require "beeos.sse"

local load_string = loadstring or load -- luacheck: ignore (5.1 / 5.2+)

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

-- The file `require "beeos.core"` loads: the first hit on package.cpath
-- (the search require itself does; package.searchpath is 5.2+ only).
local function core_path()
  for template in package.cpath:gmatch("[^;]+") do
    local path = template:gsub("%?", "beeos/core")
    local f = io.open(path, "rb")
    if f then
      f:close()
      return path
    end
  end
end

local function ev(data, type_, id)
  return { type = type_ or "message", data = data, id = id or "" }
end

local function comment(text)
  return { comment = text }
end

-- Chunkings of s: whole, byte by byte, then every 2-way split (empty first
-- or last chunk included).  Each is { name = ..., chunks }.
local function chunkings(s)
  local out = { { name = "whole", s } }
  if #s > 1 then
    local bytes = { name = "byte by byte" }
    for i = 1, #s do bytes[i] = s:sub(i, i) end
    out[#out + 1] = bytes
  end
  for k = 0, #s do
    out[#out + 1] = { name = "split at " .. k, s:sub(1, k), s:sub(k + 1) }
  end
  return out
end

-- Feeds the chunks to a new parser; returns what came out.
local function run(chunks, opts)
  local p = sse.new(opts)
  local r = { events = {} }
  for _, chunk in ipairs(chunks) do
    local evs, err, before = p:feed(chunk)
    if not evs then
      assert.is_string(err)
      assert.is_table(before)
      for _, e in ipairs(before) do r.events[#r.events + 1] = e end
      r.err = err
      break
    end
    for _, e in ipairs(evs) do r.events[#r.events + 1] = e end
  end
  if r.err then
    -- Sticky: a later feed fails the same way and delivers nothing; so
    -- does finish.
    local evs, err, before = p:feed("data: x\n\n")
    r.sticky = evs == nil and err == r.err and #before == 0
    local clean, ferr = p:finish()
    r.sticky = r.sticky and clean == nil and ferr == r.err
  else
    r.clean = p:finish()
    -- a second finish says the same
    r.finish_again = p:finish() == r.clean
  end
  -- feed after finish raises, failed stream or not
  local ok, err = pcall(p.feed, p, "data: y\n\n")
  r.feed_after_finish_raises = not ok and err:find("feed after finish", 1, true) ~= nil
  r.last_event_id = p:last_event_id()
  r.retry = p:retry()
  p:close()
  return r
end

-- Checks stream s in every chunking against x:
--   x.events (default {}), x.clean (default true), x.last_event_id
--   (default ""), x.retry (default nil), x.err (a pattern; default none),
--   x.opts (parser options).
local function check(s, x)
  local want = {
    events = x.events or {},
    last_event_id = x.last_event_id or "",
    retry = x.retry,
  }
  want.feed_after_finish_raises = true
  if x.err then
    want.sticky = true
  else
    want.clean = x.clean == nil and true or x.clean
    want.finish_again = true
  end
  for _, c in ipairs(chunkings(s)) do
    local got = run(c, x.opts)
    if x.err then
      assert.is_string(got.err, "expected an error fed " .. c.name)
      assert.matches(x.err, got.err, 1, false, "fed " .. c.name)
      got.err = nil
    end
    assert.same(want, got, "fed " .. c.name)
  end
end

---------------------------------------------------------------------------
-- The module
---------------------------------------------------------------------------

describe("beeos.sse", function()
  it("loads the beeos.core built for this Lua version", function()
    local path = core_path()
    assert.is_string(path, "beeos/core.so not found on package.cpath " .. package.cpath)
    if _VERSION == "Lua 5.1" then
      -- lua5.1 and LuaJIT need the build against the 5.1 headers (make
      -- lua51), e.g. busted --cpath='./build/lua5.1/?.so'.
      assert.truthy(path:find("lua5.1", 1, true), "5.1 host loads " .. path)
    else
      assert.truthy(path:find("lua" .. _VERSION:match("%d+%.%d+"), 1, true),
        _VERSION .. " host loads " .. path)
    end
    assert.is_table(package.loaded["beeos.core"])
    assert.is_function(package.loaded["beeos.core"].sse_new)
  end)

  it("has a version and a constructor", function()
    assert.is_string(sse._VERSION)
    assert.is_function(sse.new)
  end)
end)

---------------------------------------------------------------------------
-- The rules, each stream in every chunking
---------------------------------------------------------------------------

describe("event stream interpretation", function()
  describe("events", function()
    it("dispatches an event at a blank line", function()
      check("data: hello\n\n", { events = { ev("hello") } })
      check("data: a\n\ndata: b\n\n", { events = { ev("a"), ev("b") } })
    end)
    it("handles the empty stream and blank lines alone", function()
      check("", {})
      check("\n\n\r\n\r\r", {})
    end)
  end)

  describe("byte order mark", function()
    it("strips one leading BOM, however its bytes arrive", function()
      check("\239\187\191data: x\n\n", { events = { ev("x") } })
      check("\239\187\191", {})
      check("\239\187\191\n", {})
    end)
    it("treats a second BOM as content", function()
      -- the field name becomes "\u{FEFF}data": unknown, nothing dispatched
      check("\239\187\191\239\187\191data: x\n\n", {})
      check("\239\187\191:\239\187\191\n", { opts = { comments = true },
        events = { comment("\239\187\191") } })
      check("data: x\n\n\239\187\191data: y\n\n", { events = { ev("x") } })
    end)
    it("keeps a BOM inside a value", function()
      check("data: \239\187\191x\n\n", { events = { ev("\239\187\191x") } })
    end)
    it("treats a partial BOM as the start of the first line", function()
      check("\239data: x\n\n", {})
      check("\239\187data: x\n\n", {})
      check("\239\187\n\ndata: x\n\n", { events = { ev("x") } })
      check("\239\187", { clean = false })
    end)
  end)

  describe("line ends", function()
    it("accepts LF, CRLF and lone CR", function()
      local ab = { events = { ev("a\nb") } }
      check("data: a\ndata: b\n\n", ab)
      check("data: a\r\ndata: b\r\n\r\n", ab)
      check("data: a\rdata: b\r\r", ab)
      check("data: a\rdata: b\r\n\n", ab)
      check("data: a\ndata: b\r\r\n", ab)
    end)
    it("counts CRLF as one line end, LF CR and CR CR as two", function()
      local two = { events = { ev("a"), ev("b") } }
      check("data: a\n\rdata: b\n\r", two)
      check("data: a\r\rdata: b\r\r", two)
      check("data: a\r\n\ndata: b\r\n\n", two)
      check("data: a\r\ndata: b\r\n", { clean = false })
    end)
    it("dispatches at a CR ending a chunk, without waiting for more", function()
      local p = sse.new()
      local evs = p:feed("data: x\r\r")
      assert.same({ ev("x") }, evs)
      assert.same({}, p:feed("data: y\r"))
      assert.same({ ev("y") }, p:feed("\r"))
      -- the LF of a CRLF cut in two (an empty chunk between) is not a line end
      assert.same({}, p:feed("data: z\r"))
      assert.same({}, p:feed(""))
      assert.same({}, p:feed("\n"))
      assert.same({ ev("z") }, p:feed("\n"))
      assert.is_true(p:finish())
    end)
  end)

  describe("comments", function()
    it("ignores comment lines", function()
      check(": hi\ndata: a\n:\ndata: b\n\n", { events = { ev("a\nb") } })
      check("data: a\n: x\n", { clean = false })
      check("data: a\n\n: keepalive\n", { events = { ev("a") } })
      check(": keepalive", { clean = false })
    end)
    it("reports them with opts.comments, text after the colon", function()
      check(": hi\ndata: a\ndata: b\n\n:\n::x: y\n", {
        opts = { comments = true },
        events = { comment(" hi"), ev("a\nb"), comment(""), comment(":x: y") },
      })
      check(":a\r:b\r\n:c\n", { opts = { comments = true },
        events = { comment("a"), comment("b"), comment("c") } })
    end)
  end)

  describe("fields", function()
    it("removes exactly one leading space from the value", function()
      check("data:x\n\n", { events = { ev("x") } })
      check("data:  x\n\n", { events = { ev(" x") } })
      check("data:\tx\n\n", { events = { ev("\tx") } })
      check("data: x \n\n", { events = { ev("x ") } })
      check("data: a: b:c\n\n", { events = { ev("a: b:c") } })
      check("data: \n\n", { events = { ev("") } })
    end)
    it("reads a line without a colon as a field with an empty value", function()
      check("data\n\n", { events = { ev("") } })
      check("data\ndata\n\n", { events = { ev("\n") } })
      check("event: a\nevent\ndata: x\n\n", { events = { ev("x") } })
    end)
    it("matches names case-sensitively and exactly", function()
      check("Data: x\n\n", {})
      check("DATA: x\n\n", {})
      check("data : x\n\n", {})
      check(" data: x\n\n", {})
      check("Event: e\nID: 1\nRetry: 5\ndata: x\n\n", { events = { ev("x") } })
    end)
    it("ignores unknown fields", function()
      check("foo: bar\ndata: x\nbaz\n\n", { events = { ev("x") } })
      check("foo: bar\n", { clean = false })
    end)
  end)

  describe("data", function()
    it("joins data lines with LF", function()
      check("data: a\ndata: b\ndata: c\n\n", { events = { ev("a\nb\nc") } })
      check("data: a\ndata:\n\n", { events = { ev("a\n") } })
      check("data:\ndata: a\n\n", { events = { ev("\na") } })
      check("data: YHOO\ndata: +2\ndata: 10\n\n", { events = { ev("YHOO\n+2\n10") } })
    end)
    it("dispatches nothing for an empty data buffer", function()
      check("event: x\n\n", {})
      check("id: 1\n\n", { last_event_id = "1" })
      check("retry: 5\n\n", { retry = 5 })
    end)
  end)

  describe("event type", function()
    it("defaults to message", function()
      check("data: x\n\n", { events = { ev("x", "message") } })
      check("event:\ndata: x\n\n", { events = { ev("x", "message") } })
    end)
    it("takes the last event field, verbatim", function()
      check("event: add\ndata: x\n\n", { events = { ev("x", "add") } })
      check("data: x\nevent: add\n\n", { events = { ev("x", "add") } })
      check("event: a\nevent: b\ndata: x\n\n", { events = { ev("x", "b") } })
      check("event:  A b\ndata: x\n\n", { events = { ev("x", " A b") } })
    end)
    it("is cleared after each dispatch, also when nothing was dispatched", function()
      check("event: a\ndata: x\n\ndata: y\n\n", { events = { ev("x", "a"), ev("y") } })
      check("event: a\n\ndata: y\n\n", { events = { ev("y") } })
    end)
  end)

  describe("last event id", function()
    it("is carried by events and persists", function()
      check("id: 1\ndata: a\n\ndata: b\n\n", { events = { ev("a", nil, "1"), ev("b", nil, "1") },
        last_event_id = "1" })
      check("data: a\nid: 7\n\n", { events = { ev("a", nil, "7") }, last_event_id = "7" })
      check("id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
        { events = { ev("a", nil, "1"), ev("b", nil, "2") }, last_event_id = "2" })
      check("id:  a b \ndata: x\n\n", { events = { ev("x", nil, " a b ") }, last_event_id = " a b " })
    end)
    it("is committed at every blank line, even one that dispatches nothing", function()
      check("id: 5\n\ndata: a\n\n", { events = { ev("a", nil, "5") }, last_event_id = "5" })
    end)
    it("is reset by an empty id", function()
      check("id: 1\ndata: a\n\nid:\ndata: b\n\n", { events = { ev("a", nil, "1"), ev("b") } })
      check("id: 1\ndata: a\n\nid\ndata: b\n\n", { events = { ev("a", nil, "1"), ev("b") } })
    end)
    it("ignores an id containing NUL", function()
      check("id: 1\ndata: a\n\nid: 2\0003\ndata: b\n\n",
        { events = { ev("a", nil, "1"), ev("b", nil, "1") }, last_event_id = "1" })
      check("id: 4\n\nid: \000\ndata: b\n\n", { events = { ev("b", nil, "4") }, last_event_id = "4" })
    end)
    it("is not committed by an unterminated event", function()
      check("id: 1\ndata: a\n\nid: 2\ndata: b\n",
        { events = { ev("a", nil, "1") }, last_event_id = "1", clean = false })
      check("id: 9\n", { clean = false })
    end)
  end)

  describe("retry", function()
    it("takes ASCII digits only", function()
      check("retry: 1500\n\n", { retry = 1500 })
      check("retry: 0\n\n", { retry = 0 })
      check("retry:42\n\n", { retry = 42 })
      check("retry: 007\n\n", { retry = 7 })
      check("retry: 1\n\nretry: 2\n\n", { retry = 2 })
      check("retry: 10\ndata: a\n\n", { retry = 10, events = { ev("a") } })
    end)
    it("applies at once, without a blank line", function()
      check("retry: 3000\n", { retry = 3000, clean = false })
    end)
    it("ignores anything else", function()
      for _, bad in ipairs({ "15a", "-1", "+1", "1.5", " 100", "100 ", "", "1\0002",
                             "\239\188\145", "0x10", "1e3" }) do
        check("retry: " .. bad .. "\n\n", {})
      end
      check("retry\n\n", {})
      check("Retry: 5\n\n", {})
      check("retry: 5\n\nretry: x\n\n", { retry = 5 })
    end)
    it("returns a number", function()
      local p = sse.new()
      assert.is_nil(p:retry())
      p:feed("retry: 2500\n\n")
      assert.equal("number", type(p:retry()))
      assert.equal(2500, p:retry())
      -- past 2^64 - 1 it saturates rather than wraps
      p:feed("retry: 99999999999999999999999\n\n")
      assert.is_true(p:retry() > 1e19)
      p:close()
    end)
  end)

  describe("end of stream", function()
    it("discards an unterminated event: finish() returns false", function()
      check("data: a\n", { clean = false })
      check("data: a", { clean = false })
      check("data: a\r\n", { clean = false })
      check("data: a\n\ndata: b", { events = { ev("a") }, clean = false })
      check("event: x\n", { clean = false })
    end)
    it("finish() returns true after a complete event", function()
      check("data: a\n\n", { events = { ev("a") }, clean = true })
      check("data: a\r\r", { events = { ev("a") }, clean = true })
    end)
  end)

  describe("binary safety", function()
    it("keeps NUL and any byte in data and type", function()
      check("data: a\000b\n\n", { events = { ev("a\000b") } })
      check("data: \000\n\n", { events = { ev("\000") } })
      check("event: a\000b\ndata: x\n\n", { events = { ev("x", "a\000b") } })
      check("data: \255\254\128\n\n", { events = { ev("\255\254\128") } })
      check("data: h\195\169llo \240\159\152\128\n\n", { events = { ev("h\195\169llo \240\159\152\128") } })
      check(":\000x\n", { opts = { comments = true }, events = { comment("\000x") } })
      check("da\000ta: x\n\n", {})
    end)
  end)

  describe("size cap", function()
    local cap = { max_event = 16 }
    it("accepts an event at the cap", function()
      check("data: 0123456789\n\n", { opts = cap, events = { ev("0123456789") } })
      check("data: 0123456\ndata: 0123456\n\n", { opts = cap, events = { ev("0123456\n0123456") } })
      check("event: 012345678\ndata: 12345\n\n", { opts = cap, events = { ev("12345", "012345678") } })
      check("data: 0123456789\n\ndata: 0123456789\n\n",
        { opts = cap, events = { ev("0123456789"), ev("0123456789") } })
    end)
    it("fails past it with a clear error, sticky, events before it kept", function()
      local too = "exceeds the size limit %(16 bytes%)"
      check("data: 0123456789a\n\n", { opts = cap, err = too })
      check("data: a\n\ndata: 0123456789abcdef\n\n", { opts = cap, err = too, events = { ev("a") } })
      check("data: 01234567\ndata: 01234567\n\n", { opts = cap, err = too })
      check("event: 012345678\ndata: 0123456\n\n", { opts = cap, err = too })
      check("data: 0123456\nevent: 012345678\n\n", { opts = cap, err = too })
      check(":0123456789abcdefg\n", { opts = cap, err = too })
      check("x: 0123456789abcdef\n", { opts = cap, err = too })
      check("data: a\n\ndata: 0123456789abcdef", { opts = cap, err = too, events = { ev("a") } })
    end)
    it("returns nil, err, events_before_error from feed", function()
      local p = sse.new{ max_event = 16 }
      local evs, err, before = p:feed("data: 1\n\ndata: 2\n\ndata: 0123456789abcdef\n\n")
      assert.is_nil(evs)
      assert.matches("size limit", err)
      assert.same({ ev("1"), ev("2") }, before)
      evs, err, before = p:feed("data: 3\n\n")
      assert.is_nil(evs)
      assert.matches("size limit", err)
      assert.same({}, before)
      local clean, ferr = p:finish()
      assert.is_nil(clean)
      assert.matches("size limit", ferr)
      assert.error_matches(function() p:feed("data: 4\n\n") end, "feed after finish")
      p:close()
    end)
    it("defaults to 8 MiB", function()
      local n = 8 * 1024 * 1024
      local p = sse.new()
      local body = string.rep("x", n - 6)
      local evs = p:feed("data:" .. body .. "\n\n")
      assert.equal(1, #evs)
      assert.equal(n - 6, #evs[1].data)
      local evs2, err = p:feed("data:" .. body .. "xx\n\n")
      assert.is_nil(evs2)
      assert.matches("8388608 bytes", err)
      p:close()
    end)
  end)

  describe("linear time", function()
    it("takes a long line fed one byte at a time", function()
      local n = 256 * 1024
      local p = sse.new()
      local t0 = os.clock()
      local letters = "abcdefghijklmnopqrstuvwxyz"
      p:feed("data: ")
      for i = 1, n do
        local k = (i - 1) % 26 + 1
        local evs = p:feed(letters:sub(k, k))
        if #evs ~= 0 then error("early event") end
      end
      local evs = p:feed("\n\n")
      assert.equal(1, #evs)
      assert.equal(n, #evs[1].data)
      assert.equal(letters, evs[1].data:sub(1, 26))
      -- a sanity bound, not a timing target: quadratic would take minutes
      assert.is_true(os.clock() - t0 < 60)
      p:close()
    end)
  end)
end)

---------------------------------------------------------------------------
-- The Lua API
---------------------------------------------------------------------------

describe("sse.new options", function()
  it("accepts nil, an empty table and valid options", function()
    for _, opts in ipairs({ {}, { max_event = 1 }, { max_event = 2 ^ 53 }, { comments = true },
                            { comments = false }, { max_event = 100, comments = true } }) do
      local p = sse.new(opts)
      assert.is_userdata(p)
      p:close()
    end
    local p = sse.new()
    assert.is_userdata(p)
    p:close()
    p = sse.new(nil)
    assert.is_userdata(p)
    p:close()
  end)

  it("raises on opts that are not a table", function()
    assert.error_matches(function() sse.new("x") end, "opts must be a table")
    assert.error_matches(function() sse.new(5) end, "opts must be a table")
    assert.error_matches(function() sse.new(true) end, "opts must be a table")
  end)

  it("raises on a bad max_event", function()
    for _, bad in ipairs({ 0, -1, 1.5, "10", true, math.huge, -math.huge, 2 ^ 54, {} }) do
      assert.error_matches(function() sse.new{ max_event = bad } end,
        "max_event must be a positive integer", nil, true)
    end
    assert.error_matches(function() sse.new{ max_event = 0 / 0 } end, "max_event")
  end)

  it("raises on a bad comments flag", function()
    for _, bad in ipairs({ 1, 0, "yes", {} }) do
      assert.error_matches(function() sse.new{ comments = bad } end,
        "comments must be a boolean", nil, true)
    end
  end)

  it("reports comments only when asked", function()
    local s = ": ping\ndata: a\n\n"
    local p = sse.new()
    assert.same({ ev("a") }, p:feed(s))
    p:close()
    p = sse.new{ comments = true }
    local out = p:feed(s)
    assert.same({ comment(" ping"), ev("a") }, out)
    assert.is_nil(out[1].type)
    assert.is_nil(out[1].data)
    assert.is_nil(out[2].comment)
    p:close()
  end)
end)

describe("a parser", function()
  it("returns an array of {type, data, id} from feed", function()
    local p = sse.new()
    local evs = p:feed("id: 3\nevent: t\ndata: x\n\ndata: y\n\n")
    assert.equal(2, #evs)
    assert.same({ type = "t", data = "x", id = "3" }, evs[1])
    assert.same({ type = "message", data = "y", id = "3" }, evs[2])
    assert.same({}, p:feed(""))
    assert.same({}, p:feed("data: partial"))
    p:close()
  end)

  it("tracks last_event_id", function()
    local p = sse.new()
    assert.equal("", p:last_event_id())
    p:feed("id: 1\n")
    assert.equal("", p:last_event_id()) -- not committed before the blank line
    p:feed("\n")
    assert.equal("1", p:last_event_id())
    p:feed("id: 2\ndata: x\n\n")
    assert.equal("2", p:last_event_id())
    p:feed("id: 3\0004\n\n")
    assert.equal("2", p:last_event_id())
    p:feed("id\n\n")
    assert.equal("", p:last_event_id())
    p:close()
  end)

  it("keeps NUL bytes in data", function()
    local p = sse.new()
    local evs = p:feed("data: \000a\000\ndata: \000\n\n")
    assert.equal("\000a\000\n\000", evs[1].data)
    assert.equal(5, #evs[1].data)
    p:close()
  end)

  it("finish() reports a clean end or a cut, and further feeds raise", function()
    local p = sse.new()
    p:feed("data: a\n\n")
    assert.is_true(p:finish())
    assert.error_matches(function() p:feed("data: b\n\n") end, "feed after finish")
    -- still readable after finish
    assert.equal("", p:last_event_id())
    p:close()

    p = sse.new()
    p:feed("id: 1\ndata: a\n\ndata: b\n")
    assert.is_false(p:finish())
    assert.is_false(p:finish()) -- a second finish says the same
    assert.equal("1", p:last_event_id())
    assert.error_matches(function() p:feed("") end, "feed after finish")
    p:close()
  end)

  it("raises on every method once closed; close is idempotent", function()
    local p = sse.new()
    assert.matches("beeos.sse parser", tostring(p))
    p:feed("id: 1\n\n")
    p:close()
    p:close()
    assert.matches("closed", tostring(p))
    assert.error_matches(function() p:feed("data: x\n\n") end, "closed SSE parser")
    assert.error_matches(function() p:finish() end, "closed SSE parser")
    assert.error_matches(function() p:last_event_id() end, "closed SSE parser")
    assert.error_matches(function() p:retry() end, "closed SSE parser")
  end)

  it("raises on a bad feed argument", function()
    local p = sse.new()
    assert.has_error(function() p:feed() end)
    assert.has_error(function() p:feed({}) end)
    assert.has_error(function() p.feed({}, "x") end)
    p:close()
  end)

  it("is freed by the garbage collector, open or closed", function()
    for i = 1, 200 do
      local p = sse.new()
      p:feed("data: " .. string.rep("z", 1000) .. "\n")
      if i % 2 == 0 then p:close() end
    end
    collectgarbage()
    collectgarbage()
    local p = sse.new()
    assert.same({ ev("ok") }, p:feed("data: ok\n\n"))
    p:close()
  end)

  if _VERSION == "Lua 5.4" then
    it("is closed by a to-be-closed variable (5.4)", function()
      local f = assert(load_string([[
        local sse = ...
        local kept
        do
          local p <close> = sse.new()
          p:feed("data: x\n")
          kept = p
        end
        return kept
      ]]))
      local p = f(sse)
      assert.matches("closed", tostring(p))
      assert.error_matches(function() p:feed("x") end, "closed SSE parser")
    end)
  end
end)
