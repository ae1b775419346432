--- The libcurl transport: one engine (one libcurl multi handle, hence one
-- connection pool) per client.  The transport seam: beeos.init talks only to
-- the methods below, so an OpenResty cosocket transport can stand in.
--
--   transport:request(spec) -> handle | nil, code, message
--   handle:wait_head() -> true (a response head is in) | nil, code, message
--   handle:status(), handle:headers() (raw lines), handle:header(name),
--   handle:is_sse()
--   handle:read_body() -> body | nil, code, message
--   handle:next_events([text_type, text_key]) -> non-empty list of events |
--       nil at the end; events of text_type whose data is exactly
--       {"<text_key>": "<string>"} come with field `text` already decoded
--   handle:failure() -> code, message (nil after a clean end)
--   handle:cut() -> true when the stream ended inside an event
--   handle:close()
local core = require "beeos.core"
local sched = require "beeos.sched"

local _M = { name = "curl" }

local Transport = {}
Transport.__index = Transport

local Handle = {}
Handle.__index = Handle

-- Events handed to Lua per C call: amortises the call without letting one
-- batch hold a long stream's worth of tables.
local BATCH = 256

function _M.new()
  return setmetatable({ engine = core.engine_new() }, Transport)
end

function Transport:now_ms() return core.now_ms() end

function Transport:sleep(seconds) sched.sleep(seconds) end

function Transport:close()
  if self.engine then
    self.engine:close()
    self.engine = nil
  end
end


--- spec: url, headers, body, stream, comments, connect_timeout_ms,
-- deadline_ms (absolute, core.now_ms clock), idle_timeout_ms, max_body,
-- max_event, queue_high, insecure, ca_file.  Read, not kept.
function Transport:request(spec)
  if not self.engine then error("beeos: the client is closed", 3) end
  local t, msg = self.engine:start(spec)
  if not t then return nil, "bad_url", msg end
  return setmetatable({ t = t, engine = self.engine, id = t:id() }, Handle)
end

-- Waits for any progress of this transfer (yields inside a task).
function Handle:wait()
  if sched.current() then
    -- A cancelled task closes the transfer it waits on.
    local closer = self.closer
    if not closer then
      closer = function() self:close() end
      self.closer = closer
    end
    local prev = sched.set_cancel_hook(closer)
    sched.wait_transfer(self.engine, self.t)
    sched.set_cancel_hook(prev)
  else
    self.engine:step(1000)
  end
end

--- True once a response head is in, even when the transfer failed right
-- after it (the failure then shows in read_body / next_events / failure).
function Handle:wait_head()
  while not self.closed do
    if self.t:head_done() then return true end
    if self.t:state() == "failed" then return nil, self.t:error() end
    self:wait()
  end
  return nil, "cancelled", "the request was closed"
end

function Handle:status() return self.t:status() end
function Handle:headers() return self.t:headers() end
function Handle:header(name) return self.t:header(name) end
function Handle:is_sse() return self.t:is_sse() end
function Handle:cut() return not self.closed and self.t:cut() end

function Handle:read_body()
  while not self.closed do
    local st = self.t:state()
    if st == "done" then return self.t:body() end
    if st == "failed" then return nil, self.t:error() end
    self:wait()
  end
  return nil, "cancelled", "the request was closed"
end

function Handle:next_events(text_type, text_key)
  local t = self.t
  while not self.closed do
    local evs = t:events(BATCH, text_type, text_key)
    if evs[1] then return evs end
    local st = t:state()
    if st == "done" or st == "failed" then return nil end
    self:wait()
  end
  return nil
end

function Handle:failure()
  if self.closed then return "cancelled", "the stream was closed" end
  return self.t:error()
end

--- Idempotent.  An unfinished transfer's connection is closed, not pooled.
function Handle:close()
  if self.closed then return end
  self.closed = true
  sched.wake_transfer(self.engine, self.id)
  self.t:close()
end

return _M
