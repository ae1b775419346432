--- Everything lua-beeos assumes about the BeeOS wire, in one place.
-- docs/protocol.md is the prose of this module: a user holding the full API
-- spec edits this file (and that page) and nothing else.
local cjson_lib = require "cjson"

-- A private instance: our settings never leak into the caller's cjson.
local json = cjson_lib.new()
json.encode_sparse_array(false)
json.encode_invalid_numbers(false)
local null = cjson_lib.null

local _M = { json = json, null = null }

_M.DEFAULT_PATH_TEMPLATE = "/api/v1/agents/{agent_id}/messages"
_M.MAX_TIMEOUT_MS = 115000        -- the server's hard cap on timeout_ms
_M.DEFAULT_SERVER_TIMEOUT_MS = 120000 -- documented default when none is sent
_M.MAX_FILE_IDS = 16
_M.MAX_AGENT_ID = 128
_M.RESERVED_METADATA = {
  protocol = true, caller_owner_id = true, target_agent_id = true, delivery_principal = true,
}
_M.REQUEST_ID_HEADER = "x-request-id"
_M.EVENT_DELTA, _M.EVENT_DONE, _M.EVENT_ERROR = "delta", "done", "error"
_M.DELTA_TEXT_FIELD = "text"

-- Status -> error code when the body names none, and whether it is retried.
_M.STATUS_CODES = {
  [400] = "bad_request", [401] = "unauthorized", [403] = "forbidden", [404] = "not_found",
  [408] = "request_timeout", [409] = "conflict", [413] = "payload_too_large",
  [422] = "unprocessable", [429] = "rate_limited", [500] = "server_error",
  [502] = "bad_gateway", [503] = "unavailable", [504] = "gateway_timeout",
}
_M.RETRY_STATUS = { [408] = true, [429] = true, [500] = true, [502] = true, [503] = true }

-- Validation errors carry no position here: the public entry points
-- re-raise them at the caller's line (see beeos.init's `checked`).
local function argerror(msg)
  error("beeos: " .. msg, 0)
end
_M.argerror = argerror

local function pct(c) return string.format("%%%02X", c:byte()) end

--- Percent-encodes every byte outside RFC 3986's unreserved set (spelled out:
-- %w would follow the C locale).  A segment that is "." or ".." has its dots
-- encoded too: as they are they would be dot-segments, which URL
-- normalisation (libcurl's included) removes, sending the request elsewhere.
function _M.encode_path_segment(s)
  local out = s:gsub("[^A-Za-z0-9%-%._~]", pct)
  if out == "." or out == ".." then out = out:gsub("%.", pct) end
  return out
end

function _M.message_path(template, agent_id)
  local encoded = _M.encode_path_segment(agent_id)
  return (template:gsub("{agent_id}", function() return encoded end))
end

local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v > -math.huge and v < math.huge
end

--- Characters of a UTF-8 string; a byte that is not part of a valid UTF-8
-- sequence counts as one.  (No utf8 library: this runs on Lua 5.1 too.)
local function char_count(s)
  local n, i, len = 0, 1, #s
  while i <= len do
    local b = s:byte(i)
    local extra = (b >= 0xF0 and b <= 0xF4 and 3) or (b >= 0xE0 and b <= 0xEF and 2)
      or (b >= 0xC2 and b <= 0xDF and 1) or 0
    local ok = i + extra <= len
    for j = i + 1, i + extra do
      local c = ok and s:byte(j)
      if not c or c < 0x80 or c > 0xBF then ok = false end
    end
    i = i + (ok and extra or 0) + 1
    n = n + 1
  end
  return n
end
_M.char_count = char_count

--- Agent ids are 1 to 128 characters (**assumption**: Unicode characters of
-- the UTF-8 id, not bytes).
function _M.check_agent_id(agent_id)
  local n = type(agent_id) == "string" and char_count(agent_id)
  if not n or n < 1 or n > _M.MAX_AGENT_ID then
    argerror("agent id must be a string of 1 to 128 characters, got " ..
      (n and (n .. " characters") or type(agent_id)))
  end
end

local function check_message(message)
  if type(message) ~= "string" then argerror("message must be a string, got " .. type(message)) end
  if message == "" then argerror("message must not be empty") end
end

local function check_timeout_ms(v)
  if not is_integer(v) then argerror("timeout_ms must be an integer number of milliseconds") end
  if v < 0 then argerror("timeout_ms must be >= 0, got " .. tostring(v)) end
  if v > _M.MAX_TIMEOUT_MS then return _M.MAX_TIMEOUT_MS end -- as the server clamps
  return math.floor(v)
end

local function check_metadata(md)
  if type(md) ~= "table" then argerror("metadata must be a table of string keys to string values") end
  local out = {}
  for k, v in pairs(md) do
    if type(k) ~= "string" then argerror("metadata keys must be strings, got " .. type(k)) end
    if type(v) ~= "string" then
      argerror("metadata." .. k .. " must be a string, got " .. type(v))
    end
    if _M.RESERVED_METADATA[k] then
      argerror("metadata." .. k .. " is a reserved key (the server would drop it)")
    end
    out[k] = v
  end
  return out
end

local function check_file_ids(ids)
  if type(ids) ~= "table" then argerror("file_ids must be a list of 1 to 16 strings") end
  local n = #ids
  for k in pairs(ids) do
    if not is_integer(k) or k < 1 or k > n then argerror("file_ids must be a list (no holes or keys)") end
  end
  if n < 1 or n > _M.MAX_FILE_IDS then
    argerror("file_ids must hold 1 to 16 ids, got " .. n)
  end
  local out = {}
  for i = 1, n do
    local id = ids[i]
    if type(id) ~= "string" or id == "" then
      argerror("file_ids[" .. i .. "] must be a non-empty string")
    end
    out[i] = id
  end
  return out
end

local function check_optional_string(opts, name)
  local v = opts[name]
  if v ~= nil and (type(v) ~= "string" or v == "") then
    argerror(name .. " must be a non-empty string")
  end
  return v
end

--- Validates a send/stream call and returns the request body fields.
-- Raises (programmer errors) before any I/O.
function _M.build_body(message, opts, idempotency_key)
  check_message(message)
  local body = { message = message }
  body.context_id = check_optional_string(opts, "context_id")
  if opts.timeout_ms ~= nil then body.timeout_ms = check_timeout_ms(opts.timeout_ms) end
  if opts.metadata ~= nil then body.metadata = check_metadata(opts.metadata) end
  if opts.file_ids ~= nil then body.file_ids = check_file_ids(opts.file_ids) end
  body.idempotency_key = idempotency_key
  return body
end

function _M.check_idempotency_key(opts)
  return check_optional_string(opts, "idempotency_key")
end

--- Request headers (besides Content-Length, which libcurl adds).
-- The headers that are the same on every call of a client (built once).
function _M.static_headers(token, accept, user_agent)
  return {
    "Authorization: Bearer " .. token,
    "Content-Type: application/json",
    "Accept: " .. accept,
    "User-Agent: " .. user_agent,
  }
end

-- All request headers of one call.
function _M.request_headers(static, idempotency_key)
  return { static[1], static[2], static[3], static[4], "Idempotency-Key: " .. idempotency_key }
end
_M.ACCEPT_JSON = "application/json"
_M.ACCEPT_SSE = "text/event-stream"

--- Parses raw header lines ("Name: value\n"...) into a table of lowercase
-- names; repeated headers are joined with ", ".
function _M.parse_headers(raw)
  local h = {}
  for name, value in raw:gmatch("([^:\n]+):[ \t]*([^\n]*)") do
    name = name:lower()
    local last = value:byte(-1) -- the engine already cut CR LF: trailing blanks are rare
    if last == 32 or last == 9 or last == 13 then value = value:gsub("[ \t\r]+$", "") end
    local prev = h[name]
    h[name] = prev and (prev .. ", " .. value) or value
  end
  return h
end

local function nonnull(v)
  if v == null then return nil end
  return v
end

--- The reply object of a sync response or of a `done` event.
function _M.reply_from(obj)
  if type(obj) ~= "table" then return nil, "reply is not a JSON object" end
  local content = nonnull(obj.content)
  if content ~= nil and type(content) ~= "string" then return nil, "reply content is not a string" end
  return {
    text = content or "",
    message_id = nonnull(obj.message_id),
    in_reply_to = nonnull(obj.in_reply_to),
    context_id = nonnull(obj.context_id),
    raw = obj,
  }
end

function _M.decode(s)
  local ok, v = pcall(json.decode, s)
  if ok then return v end
  return nil, tostring(v)
end

--- The text of a delta event's data.  C handles the exact `{"text": "..."}`
-- shape; anything else goes through cjson.
function _M.delta_text(data, fast_member)
  local text = fast_member(data, _M.DELTA_TEXT_FIELD)
  if text then return text end
  local obj, err = _M.decode(data)
  if type(obj) ~= "table" then return nil, err or "delta data is not a JSON object" end
  text = nonnull(obj[_M.DELTA_TEXT_FIELD])
  if text ~= nil and type(text) ~= "string" then return nil, "delta text is not a string" end
  return text or ""
end

--- code, message from an error body (`{"error": {"code", "message"}}`),
-- or nil when the body is not that shape.
function _M.error_from_body(body)
  local obj = _M.decode(body)
  if type(obj) ~= "table" then return nil end
  local e = nonnull(obj.error)
  if type(e) == "table" then
    local code, message = nonnull(e.code), nonnull(e.message)
    return type(code) == "string" and code or nil, type(message) == "string" and message or nil
  elseif type(e) == "string" then
    return nil, e
  end
  return nil
end

--- Seconds to wait from the retry hints, or nil.  Retry-After is seconds or
-- an HTTP date; retry-after-ms is milliseconds.
function _M.retry_after(headers, now_epoch)
  local ms = headers["retry-after-ms"]
  if ms and tonumber(ms) then return math.max(0, tonumber(ms) / 1000) end
  local ra = headers["retry-after"]
  if not ra then return nil end
  if ra:match("^%s*%d+%.?%d*%s*$") then return math.max(0, tonumber(ra)) end
  local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                   Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
  local d, mon, y, hh, mm, ss = ra:match("%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT")
  if d and months[mon] then
    local t = { year = tonumber(y), month = months[mon], day = tonumber(d),
                hour = tonumber(hh), min = tonumber(mm), sec = tonumber(ss), isdst = false }
    -- os.time reads the table as local time; correct by the UTC offset.
    local as_local = os.time(t)
    local utc_offset = os.time(os.date("*t", as_local)) - os.time(os.date("!*t", as_local))
    return math.max(0, as_local + utc_offset - (now_epoch or os.time()))
  end
  return nil
end

--- x-should-retry: true / false overrides the status rule; nil when absent.
function _M.should_retry_header(headers)
  local v = headers["x-should-retry"]
  if v == "true" then return true elseif v == "false" then return false end
  return nil
end

return _M
