--- lua-beeos: send messages to BeeOS agents and read their replies, all at
-- once or streamed.
--
--   local beeos = require "beeos"
--   local client = beeos.new{ base_url = ..., api_key = ... }
--   local agent = client:agent("agent-id")
--   local reply, err = agent:send("Hello")
--   local stream, err = agent:stream("Hello")
--   for ev in stream:events() do io.write(ev.text or "") end
--
-- Programmer errors (wrong types, bad values) raise at once, before any I/O.
-- Runtime failures return nil, err with err a beeos.errors object.
local core = require "beeos.core"
local protocol = require "beeos.protocol"
local errors = require "beeos.errors"
local sched = require "beeos.sched"

local _M = {
  _VERSION = "0.1.0",
  errors = errors,
  protocol = protocol,
  spawn = sched.spawn,
  run = sched.run,
  gather = sched.gather,
  sleep = sched.sleep,
  step = sched.step,
  pollset = sched.pollset,
  in_task = sched.in_task,
  is_cancel = sched.is_cancel,
}

local json = protocol.json
local now_ms = core.now_ms

local Client, Agent, Stream, Conversation = {}, {}, {}, {}
Client.__index = Client
Agent.__index = Agent
Conversation.__index = Conversation

local DEFAULTS = {
  connect_timeout_ms = 10000,
  idle_timeout_ms = 60000,
  deadline_grace_ms = 5000,
  max_retries = 2,
  retry_base_s = 0.5,
  retry_max_s = 8,
  retry_after_max_s = 60,
  max_body = 16 * 1024 * 1024,
  max_event = 8 * 1024 * 1024,
}

-- Runs fn(...) and re-raises a validation error at the caller of the public
-- function (level 3: checked <- public function <- caller).
local function checked(fn, ...)
  local ok, a, b = pcall(fn, ...)
  if not ok then error(a, 3) end
  return a, b
end

local argerror = protocol.argerror

local function opt_number(opts, name, default, min)
  local v = opts[name]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < (min or 0) or v == math.huge then
    argerror(name .. " must be a number >= " .. (min or 0))
  end
  return v
end

local function is_loopback(host)
  host = host:lower()
  return host == "localhost" or host == "::1" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

local function parse_base_url(url)
  if type(url) ~= "string" or url == "" then
    argerror("base_url is required (or set BEEOS_BASE_URL)")
  end
  local scheme, authority, prefix = url:match("^(%a[%w+.-]*)://([^/?#]+)([^?#]*)$")
  if not scheme then argerror("base_url is not an http(s) URL: " .. url) end
  scheme = scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then
    argerror("base_url must use http or https, got " .. scheme)
  end
  if authority:find("@", 1, true) then argerror("base_url must not carry credentials") end
  local host = authority:match("^%[([^%]]+)%]") or authority:match("^([^:]+)")
  return scheme, host, (scheme .. "://" .. authority .. prefix):gsub("/+$", "")
end

local function build_client(opts)
  if opts ~= nil and type(opts) ~= "table" then argerror("options must be a table") end
  opts = opts or {}
  local c = setmetatable({}, Client)
  local scheme, host, base = parse_base_url(opts.base_url or os.getenv("BEEOS_BASE_URL"))
  c.base_url = base
  local token = opts.api_key or os.getenv("BEEOS_API_KEY")
  if type(token) ~= "string" or token == "" then argerror("api_key is required (or set BEEOS_API_KEY)") end
  if token:find("[%c ]") then argerror("api_key contains control characters or spaces") end
  c.token = token
  if scheme == "http" and not is_loopback(host) and opts.allow_insecure_http ~= true then
    argerror("refusing to send the api key over plain http to " .. host ..
      " (use https, or allow_insecure_http = true)")
  end
  if opts.verify_tls ~= nil and type(opts.verify_tls) ~= "boolean" then argerror("verify_tls must be a boolean") end
  c.insecure = opts.verify_tls == false
  if opts.ca_file ~= nil and type(opts.ca_file) ~= "string" then argerror("ca_file must be a string") end
  c.ca_file = opts.ca_file
  local tmpl = opts.path_template or protocol.DEFAULT_PATH_TEMPLATE
  if type(tmpl) ~= "string" or not tmpl:find("{agent_id}", 1, true) or tmpl:sub(1, 1) ~= "/" then
    argerror("path_template must be a string starting with / and containing {agent_id}")
  end
  c.path_template = tmpl
  for name, default in pairs(DEFAULTS) do c[name] = opt_number(opts, name, default) end
  c.max_retries = math.floor(c.max_retries)
  c.deadline_ms = opt_number(opts, "deadline_ms", nil, 1)
  if opts.keep_text ~= nil and type(opts.keep_text) ~= "boolean" then argerror("keep_text must be a boolean") end
  c.keep_text = opts.keep_text ~= false
  c.transport = opts.transport or require("beeos.transport.curl").new()
  c.user_agent = ("lua-beeos/%s (%s; %s)"):format(_M._VERSION, _VERSION, core.curl_version())
  c.static_headers = {
    [protocol.ACCEPT_JSON] = protocol.static_headers(token, protocol.ACCEPT_JSON, c.user_agent),
    [protocol.ACCEPT_SSE] = protocol.static_headers(token, protocol.ACCEPT_SSE, c.user_agent),
  }
  local dbg = opts.debug
  if dbg == nil then dbg = os.getenv("BEEOS_DEBUG") end
  c.debug = dbg ~= nil and dbg ~= false and dbg ~= "" and dbg ~= "0"
  return c
end

--- Creates a client.  opts: base_url, api_key (defaults: the environment
-- variables BEEOS_BASE_URL, BEEOS_API_KEY), and the tuning options of
-- README "Client options".
function _M.new(opts)
  local c = checked(build_client, opts) -- not a tail call: `checked` counts levels
  return c
end

function Client:__tostring()
  return "beeos.client(" .. self.base_url .. ")"
end

function Client:close()
  self.transport:close()
end

function Client:_log(fmt, ...)
  if self.debug then
    io.stderr:write("[beeos] ", errors.redact(fmt:format(...), self.token), "\n")
  end
end

--- An agent handle.  Raises when the id is not 1..128 characters.
function Client:agent(agent_id)
  checked(protocol.check_agent_id, agent_id)
  return setmetatable({
    client = self, id = agent_id,
    url = self.base_url .. protocol.message_path(self.path_template, agent_id),
  }, Agent)
end

-- ---------------------------------------------------------------------
-- One call: validation, attempts, retries

local function prepare(agent, message, opts, accept)
  if opts ~= nil and type(opts) ~= "table" then argerror("options must be a table") end
  opts = opts or {}
  local c = agent.client
  local key = protocol.check_idempotency_key(opts) or core.uuid4()
  local body = protocol.build_body(message, opts, key)
  local deadline_ms = opt_number(opts, "deadline_ms", nil, 1) or c.deadline_ms
    or ((body.timeout_ms or protocol.DEFAULT_SERVER_TIMEOUT_MS) + c.deadline_grace_ms)
  local max_retries = math.floor(opt_number(opts, "max_retries", c.max_retries))
  if opts.on_delta ~= nil and type(opts.on_delta) ~= "function" then argerror("on_delta must be a function") end
  if opts.keep_text ~= nil and type(opts.keep_text) ~= "boolean" then argerror("keep_text must be a boolean") end
  return {
    client = c, agent = agent, key = key, max_retries = max_retries,
    deadline_at = now_ms() + deadline_ms, deadline_ms = deadline_ms, attempts = 0,
    idle_timeout_ms = opt_number(opts, "idle_timeout_ms", c.idle_timeout_ms),
    keep_text = (opts.keep_text == nil) and c.keep_text or opts.keep_text,
    on_delta = opts.on_delta,
    request = {
      url = agent.url,
      body = json.encode(body),
      headers = protocol.request_headers(c.static_headers[accept], key),
      stream = accept == protocol.ACCEPT_SSE,
      connect_timeout_ms = c.connect_timeout_ms,
      max_body = c.max_body, max_event = c.max_event,
      insecure = c.insecure, ca_file = c.ca_file,
    },
  }
end

-- Fills the fields every error of a call carries.
local function decorate(call, err)
  err.attempts = call.attempts
  err.idempotency_key = call.key
  return err
end

local function body_snippet(body)
  if not body or body == "" then return nil end
  local s = body:sub(1, 2048):gsub("<[^>]*>", " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if #s > 200 then s = s:sub(1, 200) .. "..." end
  return s ~= "" and s or nil
end

local function http_error(c, status, headers, body)
  local code, message = protocol.error_from_body(body or "")
  local retryable = protocol.RETRY_STATUS[status] == true
  if status >= 300 and status < 400 then
    code = "redirect"
    message = ("the server redirected (HTTP %d) to %s; not followed so the api key stays with %s")
      :format(status, headers.location or "(no Location)", c.base_url)
    retryable = false
  end
  local hint = protocol.should_retry_header(headers)
  if hint ~= nil then retryable = hint end
  return errors.new({
    kind = "http", status = status,
    code = code or protocol.STATUS_CODES[status] or (status >= 500 and "server_error" or "http_error"),
    -- Redacted before the snippet is cut, so no prefix of the token survives.
    message = message or body_snippet(errors.redact(body, c.token)) or ("HTTP " .. status),
    request_id = headers[protocol.REQUEST_ID_HEADER],
    retryable = retryable,
    retry_after = protocol.retry_after(headers),
    location = headers.location,
  }, c.token)
end

-- One attempt.  For "sync": the reply or nil, err.  For "stream": the
-- transport handle (2xx, headers in) or nil, err.
local function attempt(call, mode)
  local c = call.client
  local rq = call.request
  rq.deadline_ms = call.deadline_at
  rq.idle_timeout_ms = mode == "stream" and call.idle_timeout_ms or 0
  c:_log("POST %s attempt %d idempotency_key=%s", rq.url, call.attempts, call.key)
  local h, code, msg = c.transport:request(rq)
  if not h then return nil, errors.from_transport(code, msg, c.token) end
  local ok
  ok, code, msg = h:wait_head()
  if not ok then
    h:close()
    return nil, errors.from_transport(code, msg, c.token)
  end
  local status = h:status()
  local request_id = h:header(protocol.REQUEST_ID_HEADER)
  c:_log("HTTP %d request_id=%s", status, tostring(request_id))
  if status < 200 or status >= 300 then
    local headers = protocol.parse_headers(h:headers())
    local body = h:read_body()
    h:close()
    return nil, http_error(c, status, headers, body)
  end
  if mode == "stream" then
    if not h:is_sse() then
      local content_type = h:header("content-type")
      h:close()
      return nil, errors.new({ kind = "protocol", code = "unexpected_content_type", status = status,
        request_id = request_id,
        message = "expected text/event-stream, got " .. tostring(content_type) }, c.token)
    end
    return h, nil, status, protocol.parse_headers(h:headers()), request_id
  end
  local body
  body, code, msg = h:read_body()
  h:close()
  if not body then
    local err = errors.from_transport(code, msg, c.token)
    err.status, err.request_id = status, request_id
    return nil, err
  end
  local obj, jerr = protocol.decode(body)
  local reply, rerr
  if obj ~= nil then reply, rerr = protocol.reply_from(obj) end
  if not reply then
    return nil, errors.new({ kind = "protocol", code = "bad_reply", status = status,
      request_id = request_id,
      message = "the reply is not valid: " .. tostring(rerr or jerr) }, c.token)
  end
  reply.request_id, reply.status = request_id, status
  return reply
end

local function backoff_s(c, n, retry_after)
  if retry_after then return math.min(retry_after, c.retry_after_max_s) end
  local base = math.min(c.retry_base_s * 2 ^ (n - 1), c.retry_max_s)
  return base * (0.75 + 0.25 * math.random())
end

-- Runs attempts until one succeeds, the error is final, retries are used
-- up, or the next backoff would pass the deadline.
local function with_retries(call, mode)
  local c = call.client
  while true do
    call.attempts = call.attempts + 1
    local res, err, status, headers, request_id = attempt(call, mode)
    if res then return res, nil, status, headers, request_id end
    decorate(call, err)
    if not err.retryable or call.attempts > call.max_retries then return nil, err end
    local delay = backoff_s(c, call.attempts, err.retry_after)
    if now_ms() + delay * 1000 >= call.deadline_at then
      err.message = err.message .. " (no time left to retry before the call's deadline)"
      return nil, err
    end
    c:_log("retrying in %.3f s after %s", delay, err.code)
    sched.sleep(delay)
  end
end

-- ---------------------------------------------------------------------
-- Streams

-- stream.text: the delta texts are kept in a C buffer (outside the Lua
-- heap, so a long reply does not slow the collector down) and turned into
-- one Lua string when read; the string is reused until more text comes.
function Stream.__index(s, k)
  if k == "text" then
    local buf = rawget(s, "textbuf")
    if not buf then return "" end
    local n = buf:len()
    if rawget(s, "text_len") ~= n then
      rawset(s, "text_cache", buf:tostring())
      rawset(s, "text_len", n)
    end
    return rawget(s, "text_cache")
  end
  return Stream[k]
end

local function stream_error(s, err)
  decorate(s.call, err)
  err.text = s.text
  err.request_id = err.request_id or s.request_id
  s.err = err
  s.finished = true
end

local fast_member = core.json_string_member

-- Interprets one event for the stream: delta text, done reply, error.
-- Returns the event, or nil when it ends the stream without being shown.
local function accept(s, ev)
  s.received = s.received + 1
  local ty = ev.type
  if ty == protocol.EVENT_DELTA then
    local text, err = ev.text, nil -- set by C for the exact {"text": "..."} shape
    if text == nil then text, err = protocol.delta_text(ev.data, fast_member) end
    if not text then
      stream_error(s, errors.new({ kind = "protocol", code = "bad_event",
        message = "a delta event's data is not valid: " .. tostring(err) }, s.call.client.token))
      return ev
    end
    ev.text = text
    local buf = s.textbuf
    if buf then buf:append(text) end
  elseif ty == protocol.EVENT_DONE then
    local obj, jerr = protocol.decode(ev.data)
    local reply, rerr
    if obj ~= nil then reply, rerr = protocol.reply_from(obj) end
    if not reply then
      stream_error(s, errors.new({ kind = "protocol", code = "bad_event",
        message = "the done event's data is not valid: " .. tostring(rerr or jerr) }, s.call.client.token))
      return ev
    end
    if obj.content == nil or obj.content == protocol.null then reply.text = s.text end
    reply.request_id, reply.status = s.request_id, s.status
    reply.idempotency_key, reply.attempts = s.call.key, s.call.attempts
    ev.reply = reply
    s.reply = reply
    s.finished = true
    if s.on_done then s.on_done(reply) end
  elseif ty == protocol.EVENT_ERROR then
    local code, message = protocol.error_from_body(ev.data)
    stream_error(s, errors.new({ kind = "stream", code = code or "stream_error",
      message = message or ev.data, status = s.status }, s.call.client.token))
  end
  return ev
end

-- How a stream may end before its first event and still be retried: the
-- request never produced anything the caller saw.
local RETRY_BEFORE_FIRST_EVENT = {
  eof = true, stream_interrupted = true, connection_closed = true, response_interrupted = true,
}

-- Next batch of events, or nil at the end (reply or err then set).
local function next_batch(s)
  while not s.finished do
    local evs = s.h:next_events(protocol.EVENT_DELTA, protocol.DELTA_TEXT_FIELD)
    if evs then return evs end
    local code, msg = s.h:failure()
    local call = s.call
    -- A stream that broke before its first event carried no reply: it is
    -- retried like a failed request.  One that delivered events never is.
    if s.received == 0 and RETRY_BEFORE_FIRST_EVENT[code or "eof"]
        and call.attempts <= call.max_retries
        and now_ms() + backoff_s(call.client, call.attempts) * 1000 < call.deadline_at then
      s.h:close()
      sched.sleep(backoff_s(call.client, call.attempts))
      local h, err, status, headers, request_id = with_retries(call, "stream")
      if not h then
        stream_error(s, err)
        return nil
      end
      s.h, s.status, s.headers, s.request_id = h, status, headers, request_id
    else
      local err
      if code then
        err = errors.from_transport(code, msg, call.client.token)
      else
        err = errors.new({ kind = "stream", code = "stream_interrupted",
          message = s.h:cut() and "the stream was cut inside an event, before its done event"
            or "the stream ended before its done event" }, call.client.token)
      end
      err.status = s.status
      stream_error(s, err)
    end
  end
  return nil
end

--- Iterates the stream's events: `for ev in stream:events() do ... end`.
-- ev.type, ev.data (raw), ev.id, and ev.text for deltas.  Leaving the loop
-- (end, break or error) closes the stream (Lua 5.4 to-be-closed value).
function Stream:events()
  local batch, i = nil, 0
  local function iter()
    -- Once done or error arrived, nothing after it is shown.
    if self.finished or self.closed then
      self:close()
      return nil
    end
    while true do
      if batch then
        i = i + 1
        local ev = batch[i]
        if ev then return accept(self, ev) end
      end
      batch, i = next_batch(self), 0
      if not batch then
        self:close()
        return nil
      end
    end
  end
  return iter, nil, nil, self
end

function Stream:__close() self:close() end

-- A finalizer must not wait (nor yield): the transfer is just closed.
function Stream:__gc() self:close(true) end

--- Idempotent.  Closing an unfinished stream closes its connection.
function Stream:close(no_drain)
  if self.closed then return end
  self.closed = true
  if not self.finished then
    self.finished = true
    if not self.err and not self.reply then
      self.err = decorate(self.call, errors.new({ kind = "stream", code = "cancelled",
        message = "the stream was closed before its done event", status = self.status },
        self.call.client.token))
      self.err.text = self.text
    end
  end
  local h = self.h
  if h then
    -- After done the body is all but read: let it finish so that the
    -- connection goes back to the pool instead of being closed.
    if self.reply and not no_drain and not h.closed then
      local deadline = now_ms() + 50
      while h.t:state() == "headers" and now_ms() < deadline do h:wait() end
    end
    h:close()
  end
end

local function open_stream(agent, message, opts, caller_level)
  local ok, call = pcall(prepare, agent, message, opts, protocol.ACCEPT_SSE)
  if not ok then error(call, caller_level + 1) end
  local h, err, status, headers, request_id = with_retries(call, "stream")
  if not h then return nil, err end
  return setmetatable({
    call = call, h = h, status = status, headers = headers, request_id = request_id,
    idempotency_key = call.key, textbuf = call.keep_text and core.buffer() or nil, received = 0,
    finished = false, closed = false,
  }, Stream)
end

-- ---------------------------------------------------------------------
-- Agent

--- Streams the reply.  Returns once the response headers are in: HTTP
-- errors (after retries) come back here as nil, err.
function Agent:stream(message, opts)
  local s, err = open_stream(self, message, opts, 2) -- not a tail call: levels count
  return s, err
end

-- caller_level: as for open_stream (2: the caller of the public function
-- that calls this one raises validation errors).
local function send(agent, message, opts, caller_level)
  if type(opts) == "table" and opts.on_delta ~= nil then
    local s, err = open_stream(agent, message, opts, caller_level + 1)
    if not s then return nil, err end
    local on_delta = s.call.on_delta
    for ev in s:events() do
      if ev.text and ev.type == protocol.EVENT_DELTA then on_delta(ev.text, ev) end
    end
    if s.reply then return s.reply end
    return nil, s.err
  end
  local ok, call = pcall(prepare, agent, message, opts, protocol.ACCEPT_JSON)
  if not ok then error(call, caller_level + 1) end
  local reply, err = with_retries(call, "sync")
  if not reply then return nil, err end
  reply.idempotency_key, reply.attempts = call.key, call.attempts
  return reply
end

--- Sends a message and returns the whole reply.  With opts.on_delta it
-- streams underneath and calls on_delta(text, ev) for each delta.
function Agent:send(message, opts)
  local reply, err = send(self, message, opts, 2)
  return reply, err
end

--- A conversation carries the context id from each reply into the next
-- turn.
function Agent:conversation(context_id)
  if context_id ~= nil and (type(context_id) ~= "string" or context_id == "") then
    error("beeos: context_id must be a non-empty string", 2)
  end
  return setmetatable({ agent = self, context_id = context_id }, Conversation)
end

local function with_context(conv, opts)
  if opts ~= nil and type(opts) ~= "table" then return opts end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.context_id == nil then o.context_id = conv.context_id end
  return o
end

function Conversation:send(message, opts)
  local reply, err = send(self.agent, message, with_context(self, opts), 2)
  if reply and reply.context_id then self.context_id = reply.context_id end
  return reply, err
end

function Conversation:stream(message, opts)
  local s, err = open_stream(self.agent, message, with_context(self, opts), 2)
  if s then
    s.on_done = function(reply)
      if reply.context_id then self.context_id = reply.context_id end
    end
  end
  return s, err
end

return _M
