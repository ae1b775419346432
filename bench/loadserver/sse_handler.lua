-- content_by_lua handler of the concurrency load server (nginx.conf.in).
-- Speaks docs/protocol.md for two agents:
--   any agent but "silent": `mock_deltas` deltas (default 10) `mock_interval_ms`
--     apart (default 100), then a done event; JSON reply for Accept: application/json.
--     `mock_phase_ms` (default 0) adds a random 0..phase ms before the second
--     delta, so that many streams' deltas do not arrive in step.
--   "silent": response headers, then nothing until the client goes away.
local cjson = require "cjson.safe"

local function fail(status, code, message)
  ngx.status = status
  ngx.header.content_type = "application/json"
  ngx.print(cjson.encode({ error = { code = code, message = message } }))
  return ngx.exit(status)
end

ngx.header["X-Request-Id"] = "req_" .. ngx.var.request_id

if ngx.var.http_authorization ~= "Bearer " .. ngx.var.bench_token then
  return fail(401, "unauthorized", "missing or wrong bearer token")
end
if ngx.req.get_method() ~= "POST" then
  ngx.header["Allow"] = "POST"
  return fail(405, "method_not_allowed", "use POST")
end

ngx.req.read_body()
local req = cjson.decode(ngx.req.get_body_data() or "")
if type(req) ~= "table" or type(req.message) ~= "string" or req.message == "" then
  return fail(400, "bad_request", "message is required")
end

local agent = ngx.unescape_uri(ngx.var.agent_id)
local md = type(req.metadata) == "table" and req.metadata or {}
local n = math.max(1, math.floor(tonumber(md.mock_deltas) or 10))
local interval = (tonumber(md.mock_interval_ms) or 100) / 1000
local phase = (tonumber(md.mock_phase_ms) or 0) / 1000
local key = type(req.idempotency_key) == "string" and req.idempotency_key or ngx.var.request_id
local context = type(req.context_id) == "string" and req.context_id or ("ctx_" .. ngx.var.request_id)

local pieces = {}
for i = 1, n do pieces[i] = ("w%d "):format(i) end
local content = table.concat(pieces)
local reply = cjson.encode({
  message_id = "msg_" .. ngx.var.request_id, in_reply_to = key,
  context_id = context, content = content,
})

local accept = ngx.var.http_accept or ""
if not accept:find("text/event-stream", 1, true) then
  ngx.header.content_type = "application/json"
  ngx.print(reply)
  return
end

ngx.header.content_type = "text/event-stream"
ngx.header.cache_control = "no-cache"
ngx.header["X-Accel-Buffering"] = "no"

-- The client hung up (closed stream, cancelled task): stop at once.
ngx.on_abort(function() ngx.exit(499) end)

if agent == "silent" then
  ngx.send_headers()
  ngx.flush(true)
  while true do ngx.sleep(3600) end
end

for i = 1, n do
  if i == 2 and phase > 0 then ngx.sleep(interval + math.random() * phase)
  elseif i > 1 then ngx.sleep(interval) end
  local ok = ngx.print("event: delta\nid: ", i, "\ndata: ", cjson.encode({ text = pieces[i] }), "\n\n")
  if not ok then return end
  ngx.flush(true)
end
ngx.print("event: done\nid: ", n + 1, "\ndata: ", reply, "\n\n")
ngx.flush(true)
return ngx.eof()
