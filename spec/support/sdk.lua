--- Helpers shared by the SDK specs (send, stream, errors, retry, timeout,
-- validation, resources).  Every spec file starts its own mock:
--
--   local sdk = require "spec.support.sdk"
--   local m, client
--   setup(function() m = sdk.mock() end)
--   teardown(function() m:stop() end)
--   before_each(function() m:reset(); client = sdk.client(m) end)
--
-- Nothing here touches the network beyond 127.0.0.1.
local socket = require "socket"
local core = require "beeos.core"
local beeos = require "beeos"
local mockctl = require "spec.support.mockctl"

local _M = {}

-- A token no message, log line or tostring may ever show.
_M.TOKEN = "oag_SECRET-7f3a9c1e5b2d4086-DO-NOT-LEAK"

_M.ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/support/sdk%.lua$")) or "."

--- Starts a mock on a free port with the distinctive token.
function _M.mock(opts)
  opts = opts or {}
  if opts.token == nil then opts.token = _M.TOKEN end
  return mockctl.start(opts)
end

local clients = {}

--- A client of mock m.  Retries back off 10 ms by default so that retry
-- tests stay fast; opts override anything.  Closed by close_clients().
function _M.client(m, opts)
  local o = { base_url = m.url, api_key = m.token, retry_base_s = 0.01, retry_max_s = 0.05 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return _M.track(beeos.new(o))
end

--- Registers a client for close_clients().
function _M.track(c)
  clients[#clients + 1] = c
  return c
end

--- Closes every client made by client() or passed to track(): a pooled
-- keep-alive connection left to the garbage collector would still be open at
-- the mock during the next test.
function _M.close_clients()
  for i = #clients, 1, -1 do
    clients[i]:close()
    clients[i] = nil
  end
end

--- For after_each: closes the clients, then waits until mock m has seen all
-- their connections go (only the admin call's own is open), so that a late
-- hang-up is not counted in the next test's stats.
function _M.finish(m)
  _M.close_clients()
  local st
  local ok = m:wait_for(function(mm)
    st = mm:stats()
    return st.connections_open == 1 and st.streams_active == 0
  end, 5)
  assert(ok, ("connections still open at the mock after the test: %d (streams %d)"):format(
    st.connections_open - 1, st.streams_active))
end

--- Registers, in the enclosing describe, the hooks every API spec file
-- uses: one mock for the file, a reset mock and a fresh client for each
-- test, every client closed and the mock's connections drained after it.
-- on_each(m, client) receives them before each test (and on_each(m) once
-- the mock is up).
function _M.mock_per_file(on_each)
  -- busted gives spec files these as globals; a module reaches them here.
  local busted = require "busted"
  local m
  busted.setup(function()
    m = _M.mock()
    on_each(m, nil)
  end)
  busted.teardown(function() m:stop() end)
  busted.before_each(function()
    m:reset()
    on_each(m, _M.client(m))
  end)
  busted.after_each(function() _M.finish(m) end)
end

_M.now_ms = core.now_ms

--- Runs fn and returns the milliseconds it took, then fn's results.
function _M.timed(fn, ...)
  local t0 = core.now_ms()
  local r = table.pack(fn(...))
  return core.now_ms() - t0, table.unpack(r, 1, r.n)
end

--- A loopback port nothing listens on: bound, read, closed.
function _M.closed_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function fd_list()
  local p = assert(io.popen("ls -l /proc/" .. _M.pid() .. "/fd"))
  local n, list = 0, {}
  for line in p:lines() do
    local fd, target = line:match("(%d+) %-> (.*)$")
    if fd then
      n = n + 1
      list[#list + 1] = fd .. "=" .. target
    end
  end
  p:close()
  return n - 1, table.concat(list, " ") -- minus the read end of this popen's pipe
end

--- Open file descriptors of this process (/proc/self/fd entries), and a
-- description of them.  `ls` may list the popen pipe's write end too, before
-- this process has closed its copy: that only inflates a reading, so the
-- smallest of three is taken.
function _M.fd_count()
  local best, best_list
  for _ = 1, 3 do
    local n, list = fd_list()
    if not best or n < best then best, best_list = n, list end
  end
  return best, best_list
end

local pid
--- This process's pid (from /proc/self/stat, read by this process).
function _M.pid()
  if not pid then
    local f = assert(io.open("/proc/self/stat"))
    pid = tonumber(f:read("a"):match("^(%d+)"))
    f:close()
  end
  return pid
end

--- Resident set size in KiB.
-- `make sanitize` sets this: RSS says nothing about leaks under ASan.
_M.under_asan = os.getenv("BEEOS_UNDER_ASAN") == "1"

function _M.rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

--- Runs fn with io.stderr replaced by a recorder; returns the text written
-- and fn's first result.  Restores io.stderr even if fn raises.
function _M.capture_stderr(fn)
  local out = {}
  local real = io.stderr
  io.stderr = {
    write = function(self, ...)
      for i = 1, select("#", ...) do out[#out + 1] = tostring((select(i, ...))) end
      return self
    end,
    flush = function(self) return self end,
  }
  local ok, res = pcall(fn)
  io.stderr = real
  if not ok then error(res, 0) end
  return table.concat(out), res
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end
_M.shell_quote = shell_quote

--- Runs a Lua chunk in a fresh lua5.4 with the repository's paths and the
-- given environment variables; returns stdout, stderr and whether it exited 0.
function _M.run_lua(code, env)
  local errfile = os.tmpname()
  local parts = { "cd", shell_quote(_M.ROOT), "&& env" }
  for k, v in pairs(env or {}) do parts[#parts + 1] = shell_quote(k .. "=" .. v) end
  parts[#parts + 1] = "lua5.4 -e " .. shell_quote(
    "package.path='./lua/?.lua;./lua/?/init.lua;./?.lua;'..package.path " ..
    "package.cpath='./build/lua5.4/?.so;'..package.cpath")
  parts[#parts + 1] = "-e " .. shell_quote(code)
  parts[#parts + 1] = "2>" .. shell_quote(errfile)
  local p = assert(io.popen(table.concat(parts, " ")))
  local out = p:read("a")
  local ok = p:close()
  local f = io.open(errfile)
  local err = f and f:read("a") or ""
  if f then f:close() end
  os.remove(errfile)
  return out, err, ok == true
end

--- The recorded requests of mock m for agent id (all when nil).
function _M.requests_for(m, agent_id)
  local out = {}
  for _, r in ipairs(m:requests()) do
    if agent_id == nil or r.agent_id == agent_id then out[#out + 1] = r end
  end
  return out
end

--- All events of a stream as a list (the loop closes it).
function _M.drain(stream)
  local evs = {}
  for ev in stream:events() do evs[#evs + 1] = ev end
  return evs
end

return _M
