--- Start and drive a bin/beeos-mock process from busted specs.
--
--   local mockctl = require "spec.support.mockctl"
--   local m = mockctl.start{ token = "test-token" }
--   ... m.url, m.port, m.token, m:requests(), m:stats(), m:reset(), m:drop_idle()
--   m:stop()
--
-- The server runs as a separate process so a spec can never wedge it, and the
-- admin calls use luasocket's socket.http, never the SDK under test.

local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local json = require("cjson").new()

local _M = {}

-- The repository root, from where this file lives, so specs work from any cwd.
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/support/mockctl%.lua$")) or "."

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

local Mock = {}
Mock.__index = Mock

-- One admin call; returns the decoded JSON reply.
function Mock:admin(method, path)
  assert(not self.stopped, "mock already stopped")
  local chunks = {}
  local ok, code = http.request {
    url = self.url .. path,
    method = method,
    headers = method == "POST" and { ["content-length"] = "0" } or nil,
    sink = ltn12.sink.table(chunks),
  }
  local body = table.concat(chunks)
  if not ok or code ~= 200 then
    error(("mock admin %s %s failed: %s %s"):format(method, path, tostring(code), body), 2)
  end
  return json.decode(body)
end

--- Recorded API requests, oldest first: {seq, conn_id, method, path, agent_id,
-- headers (lowercase names), body (raw), json (decoded body or cjson.null)}.
function Mock:requests() return self:admin("GET", "/_mock/requests") end

--- {connections_accepted, connections_open, requests, client_closed, streams_active}
function Mock:stats() return self:admin("GET", "/_mock/stats") end

--- Forget recorded requests, counters and retry attempt counts.
function Mock:reset() return self:admin("POST", "/_mock/reset") end

--- Close every keep-alive connection idle between requests; returns how many.
function Mock:drop_idle()
  local n = self:admin("POST", "/_mock/drop-idle").dropped
  return math.tointeger(n) or n
end

--- Poll `fn` until it returns a truthy value (returned) or `timeout` seconds
-- (default 5) pass (returns nil).  For effects the server sees asynchronously,
-- e.g. a client hanging up.
function Mock:wait_for(fn, timeout)
  local deadline = socket.gettime() + (timeout or 5)
  repeat
    local v = fn(self)
    if v then return v end
    socket.sleep(0.01)
  until socket.gettime() > deadline
  return nil
end

--- Kill the server and wait until it has exited.  Safe to call twice.
function Mock:stop()
  if self.stopped then return end
  self.stopped = true
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  self.proc:close() -- pclose: waits for the process, so no zombie is left
end

Mock.__gc = Mock.stop -- a spec that errors out before stop() still cleans up
Mock.__close = Mock.stop -- local m <close> = mockctl.start{}

--- Start a mock on a free port.  opts: token ("test-token"), host
-- ("127.0.0.1"), quiet (true: drop the server's stderr log), lua (the
-- interpreter; default $BEEOS_MOCK_LUA or "lua5.4").
function _M.start(opts)
  opts = opts or {}
  local token = opts.token or "test-token"
  local lua = opts.lua or os.getenv("BEEOS_MOCK_LUA") or "lua5.4"
  -- `echo $$; exec` makes the shell's pid the server's pid, and keeps the
  -- server a child of this process so stop() can reap it.  --watch-pid $PPID
  -- makes it exit by itself if this test process dies without stopping it.
  local cmd = table.concat({
    "echo $$; exec", shell_quote(lua), shell_quote(ROOT .. "/bin/beeos-mock"),
    "--host", shell_quote(opts.host or "127.0.0.1"), "--port 0",
    "--token", shell_quote(token), "--watch-pid $PPID",
    opts.quiet and "--quiet 2>/dev/null" or "",
  }, " ")
  local proc = assert(io.popen(cmd, "r"))
  local pid = proc:read("l")
  local line = proc:read("l")
  local url = line and line:match("^beeos%-mock listening on (http://%S+)$")
  if not (pid and pid:match("^%d+$") and url) then
    proc:close()
    error("beeos-mock did not start (got " .. tostring(line) .. "); command: " .. cmd, 2)
  end
  return setmetatable({
    url = url,
    port = tonumber(url:match(":(%d+)$")),
    token = token,
    pid = tonumber(pid),
    proc = proc,
    stopped = false,
  }, Mock)
end

return _M
