--- Structured runtime errors: what every `nil, err` of lua-beeos carries.
--
-- err.kind       "connection" | "timeout" | "http" | "stream" | "protocol"
-- err.code       the server's code when it sent one, else a stable name
-- err.status     HTTP status, when a response came
-- err.message    human text (never contains the token)
-- err.request_id from the response, when there was one
-- err.retryable  whether retrying the same call could succeed
-- err.attempts   how many attempts the call made
-- err.idempotency_key  the key every attempt sent
-- err.text       for streams: the reply text received before the failure
local _M = {}

local Error = {}
Error.__index = Error
_M.Error = Error

-- Codes produced by the transfer engine (src/engine.c) -> kind, and whether
-- the failure happened before any response (safe and useful to retry).
local TRANSPORT = {
  connect_failed = { "connection", true },
  connect_timeout = { "timeout", true },
  send_failed = { "connection", true },
  connection_closed = { "connection", true },
  tls_failed = { "connection", false },
  bad_url = { "connection", false },
  response_interrupted = { "connection", false },
  stream_interrupted = { "stream", false },
  idle_timeout = { "timeout", false },
  deadline = { "timeout", false },
  event_too_large = { "protocol", false },
  body_too_large = { "protocol", false },
  headers_too_large = { "protocol", false },
  out_of_memory = { "protocol", false },
  cancelled = { "stream", false },
}

-- error -> the secret it must never show.  Weak keys, and not a field, so
-- that inspecting or serialising an error does not reveal the token either.
local secret_of = setmetatable({}, { __mode = "k" })

function Error:__tostring()
  local parts = { "beeos ", tostring(self.kind), " error" }
  if self.status then parts[#parts + 1] = " (HTTP " .. tostring(self.status) .. ")" end
  parts[#parts + 1] = " [" .. tostring(self.code) .. "]: " .. tostring(self.message)
  if self.request_id then parts[#parts + 1] = " request_id=" .. tostring(self.request_id) end
  if type(self.attempts) == "number" and self.attempts > 1 then
    parts[#parts + 1] = " after " .. self.attempts .. " attempts"
  end
  -- Fields set after creation (request_id, code) may hold what the server
  -- echoed: scrub the whole line.
  return _M.redact(table.concat(parts), secret_of[self])
end

--- Replaces every occurrence of secret in s.
function _M.redact(s, secret)
  if type(s) ~= "string" or not secret or secret == "" then return s end
  local out, i = {}, 1
  while true do
    local a, b = s:find(secret, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = "[redacted]"
    i = b + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

--- fields: kind, code, message and the optional ones; secret: the token to
-- scrub from every string field (message, code, location, request_id...: a
-- server may echo the token anywhere) and from tostring(err).
function _M.new(fields, secret)
  fields.message = fields.message or fields.code
  if type(secret) == "string" and secret ~= "" then
    for k, v in pairs(fields) do
      if type(v) == "string" then fields[k] = _M.redact(v, secret) end
    end
  end
  if fields.retryable == nil then fields.retryable = false end
  local err = setmetatable(fields, Error)
  if type(secret) == "string" and secret ~= "" then secret_of[err] = secret end
  return err
end

function _M.is(v)
  return getmetatable(v) == Error
end

-- Clearer words than libcurl's for the limits the SDK itself enforces
-- (libcurl reports them as "Failed writing received data").
local LIMIT_MESSAGES = {
  event_too_large = "an event of the stream is larger than the max_event option allows",
  body_too_large = "the response body is larger than the max_body option allows",
  headers_too_large = "the response headers are larger than 64 KiB",
}

--- An error from the transfer engine's code and message.
function _M.from_transport(code, message, secret)
  local t = TRANSPORT[code] or { "connection", false }
  return _M.new({ kind = t[1], code = code, message = LIMIT_MESSAGES[code] or message,
                  retryable = t[2] }, secret)
end

--- Whether an engine code means "no response was received".
function _M.before_response(code)
  local t = TRANSPORT[code]
  return t ~= nil and t[2]
end

return _M
