--- Incremental Server-Sent Events parser (WHATWG HTML "event stream
-- interpretation"), backed by the C parser in beeos.core.
--
--   local sse = require "beeos.sse"
--   local p = sse.new{ max_event = 8 * 1024 * 1024, comments = false }
--   for _, ev in ipairs(p:feed(bytes)) do print(ev.type, ev.id, ev.data) end
--   local clean = p:finish()   -- false: the stream ended inside an event
--
-- Usable with any byte source (a socket, a file, an OpenResty cosocket):
-- feed whatever arrived, split anywhere.
local core = require "beeos.core"

local _M = { _VERSION = "0.1.0" }

--- Creates a parser.
-- opts.max_event: cap in bytes on one event (default 8 MiB); a larger event
--   makes feed return nil, err.
-- opts.comments: when true, comment lines come back as { comment = text }.
-- The parser's methods:
--   p:feed(bytes) -> events | nil, err, events_before_the_error
--   p:finish() -> clean (false when an unterminated event was discarded)
--   p:last_event_id() -> string, p:retry() -> ms | nil, p:close()
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("beeos.sse.new: opts must be a table", 2)
  end
  return core.sse_new(opts)
end

return _M
