-- SSE benchmark, implementation (3): the pure-Lua parser a Lua user would
-- write, as the baseline.
--   lua5.4 bench/sse_purelua.lua FILE [RUNS]   benchmark, same loop as (2)
--   lua5.4 bench/sse_purelua.lua --check FILE  compare with beeos.sse on
--       the first MiB of FILE, as LF and as CRLF, cut into odd-sized chunks
--
-- The parser: plain string.find for LF (a CR before it is stripped, so LF
-- and CRLF streams both work; a bare CR as line end is not supported),
-- parser state kept in locals while a chunk is scanned, a partial line kept
-- as pieces and joined once its end arrives (so a long line split over many
-- chunks is copied once), data lines joined with table.concat at dispatch.
-- Same output as beeos.sse: p:feed(bytes) -> array of {type, data, id}.
local find, sub, byte, concat = string.find, string.sub, string.byte, table.concat

local Parser = {}
Parser.__index = Parser

local function new()
  return setmetatable({
    parts = {}, nparts = 0, -- partial line carried between chunks
    data = {}, ndata = 0,   -- data lines of the current event
    etype = "",             -- event type buffer
    id_buf = "",            -- last event ID buffer
    last_id = "",           -- last event ID string (committed at a blank line)
    retry = nil,
    started = false,
  }, Parser)
end

function Parser:feed(chunk)
  local out, nout = {}, 0
  local parts, nparts = self.parts, self.nparts
  local data, ndata = self.data, self.ndata
  local etype, id_buf, last_id = self.etype, self.id_buf, self.last_id
  local pos = 1
  if not self.started and chunk ~= "" then
    self.started = true
    if sub(chunk, 1, 3) == "\239\187\191" then pos = 4 end
  end
  while true do
    local nl = find(chunk, "\n", pos, true)
    if not nl then
      if pos <= #chunk then
        nparts = nparts + 1
        parts[nparts] = pos == 1 and chunk or sub(chunk, pos)
      end
      break
    end
    -- The line is s[i..j].
    local s, i, j = chunk, pos, nl - 1
    if nparts > 0 then
      parts[nparts + 1] = sub(chunk, pos, j)
      s = concat(parts, "", 1, nparts + 1)
      i, j = 1, #s
      for k = nparts + 1, 1, -1 do parts[k] = nil end
      nparts = 0
    end
    pos = nl + 1
    if j >= i and byte(s, j) == 13 then j = j - 1 end

    if j < i then
      -- Blank line: dispatch.
      last_id = id_buf
      if ndata > 0 then
        local d = ndata == 1 and data[1] or concat(data, "\n", 1, ndata)
        nout = nout + 1
        out[nout] = { type = etype ~= "" and etype or "message", data = d, id = last_id }
        for k = ndata, 1, -1 do data[k] = nil end
        ndata = 0
      end
      etype = ""
    elseif byte(s, i) ~= 58 then -- not a ":" comment
      local name, value
      local colon = find(s, ":", i, true)
      if colon and colon <= j then
        name = sub(s, i, colon - 1)
        local v = colon + 1
        if v <= j and byte(s, v) == 32 then v = v + 1 end
        value = sub(s, v, j)
      else
        name, value = sub(s, i, j), ""
      end
      if name == "data" then
        ndata = ndata + 1
        data[ndata] = value
      elseif name == "event" then
        etype = value
      elseif name == "id" then
        if not find(value, "\0", 1, true) then id_buf = value end
      elseif name == "retry" then
        if find(value, "^%d+$") then self.retry = tonumber(value) end
      end
    end
  end
  self.nparts, self.ndata = nparts, ndata
  self.etype, self.id_buf, self.last_id = etype, id_buf, last_id
  return out
end

-- true when the stream ended on an event boundary.
function Parser:finish()
  local clean = self.nparts == 0 and self.ndata == 0
  self.parts, self.nparts, self.data, self.ndata = {}, 0, {}, 0
  return clean
end

local function run(next_chunk)
  local p = new()
  local events, data_bytes, touch = 0, 0, 0
  for chunk in next_chunk do
    local evs = p:feed(chunk)
    for j = 1, #evs do
      local ev = evs[j]
      events = events + 1
      data_bytes = data_bytes + #ev.data
      touch = touch + #ev.type + #ev.id
    end
  end
  assert(p:finish(), "stream ended inside an event")
  return events, data_bytes, touch
end

local function check(path)
  local sse = require "beeos.sse"
  local f = assert(io.open(path, "rb"))
  local s = f:read(1024 * 1024)
  f:close()
  local cut = #s -- keep whole events only
  while cut > 1 and s:sub(cut - 1, cut) ~= "\n\n" do cut = cut - 1 end
  s = s:sub(1, cut)
  local function all(parser, text, step)
    local evs = {}
    for i = 1, #text, step do
      for _, ev in ipairs(assert(parser:feed(text:sub(i, i + step - 1)))) do
        evs[#evs + 1] = ev
      end
    end
    assert(parser:finish())
    return evs
  end
  local n = 0
  for _, text in ipairs { s, (s:gsub("\n", "\r\n")) } do
    for _, step in ipairs { 1, 7, 1000, 16384, 65537 } do
      local want, got = all(sse.new(), text, 16384), all(new(), text, step)
      assert(#want == #got and #want > 0, "event count differs")
      for k = 1, #want do
        local a, b = want[k], got[k]
        assert(a.type == b.type and a.data == b.data and a.id == b.id,
          "event " .. k .. " differs (chunk " .. step .. ")")
      end
      n = n + #got
    end
  end
  print(string.format("purelua check ok: %d events compared, LF and CRLF", n))
end

if arg[1] == "--check" then
  package.path = "lua/?.lua;" .. package.path
  check(assert(arg[2], "usage: sse_purelua.lua --check FILE"))
else
  local H = dofile((arg[0]:match("^(.*)/") or ".") .. "/sse_harness.lua")
  H.bench("purelua", assert(arg[1], "usage: sse_purelua.lua FILE [RUNS]"), tonumber(arg[2]), run)
end
