--- A small coroutine scheduler: many conversations from one Lua state, each
-- written as straight-line code.
--
-- Inside a task (a coroutine started by spawn), the SDK's waits (for a
-- response, for stream events, for a retry backoff) yield here; outside any
-- task they block exactly as before.  When no task can run, the process
-- sleeps in poll() over every engine's sockets until a socket or a timer is
-- due: no busy waiting.
--
-- State is per Lua state (module upvalues), never in C globals.
local core = require "beeos.core"

local _M = {}

local MARK = {}            -- first value of every scheduler yield
local CANCEL = {}          -- resume value that tells a waiter to unwind
local MAX_SLEEP_MS = 1000  -- upper bound of one poll: timers are rechecked

local task_of = setmetatable({}, { __mode = "k" }) -- coroutine -> task
local runnable = {}        -- tasks to resume, in order
local waiting = {}         -- engine -> { [transfer id] = task }
local sleepers = {}        -- task -> wake time (ms)

local Task = {}
Task.__index = Task

local unpack = table.unpack or unpack -- luacheck: ignore (5.1)
local function pack(...) return { n = select("#", ...), ... } end

local function make_runnable(t)
  if not t.queued then
    t.queued = true
    runnable[#runnable + 1] = t
  end
end

local function clear_wait(t)
  local w = t.wait_on
  if w then
    local byid = waiting[w.engine]
    if byid and byid[w.id] == t then
      byid[w.id] = nil
      if next(byid) == nil then waiting[w.engine] = nil end
    end
    t.wait_on = nil
  end
  sleepers[t] = nil
end

local function finish(t, status, ...)
  t.status = status
  t.results = pack(...)
  clear_wait(t)
  for _, j in ipairs(t.joiners) do make_runnable(j) end
  t.joiners = {}
end

local function task_error(t, code, message, value)
  local errors = require "beeos.errors"
  return errors.new({ kind = "task", code = code, message = message, value = value, task = t })
end

local function resume(t)
  t.queued = false
  if t.status == "done" or t.status == "failed" or t.status == "cancelled" then return end
  local signal = t.cancel_requested and CANCEL or true
  t.status = "running"
  local res = pack(coroutine.resume(t.co, signal))
  if coroutine.status(t.co) == "dead" then
    if res[1] then
      finish(t, "done", unpack(res, 2, res.n))
    elseif t.cancel_requested then
      finish(t, "cancelled", nil, task_error(t, "cancelled", "task was cancelled"))
    else
      local value = res[2]
      local msg = (type(value) == "string" or (type(value) == "table" and getmetatable(value)
        and getmetatable(value).__tostring)) and tostring(value) or ("raised a " .. type(value))
      finish(t, "failed", nil, task_error(t, "task_failed",
        debug.traceback(t.co, "task raised: " .. msg), value))
    end
    return
  end
  -- Suspended: the yield said what it waits for.
  t.status = "waiting"
  if res[2] ~= MARK then
    -- A plain coroutine.yield() inside a task: treat as "run me again".
    make_runnable(t)
    return
  end
  local op = res[3]
  if op == "transfer" then
    local engine, id = res[4], res[5]
    local byid = waiting[engine]
    if not byid then byid = {}; waiting[engine] = byid end
    byid[id] = t
    t.wait_on = { engine = engine, id = id }
  elseif op == "sleep" then
    sleepers[t] = res[4]
  elseif op == "join" then
    local other = res[4]
    if other.status == "done" or other.status == "failed" or other.status == "cancelled" then
      make_runnable(t)
    else
      other.joiners[#other.joiners + 1] = t
    end
  else
    make_runnable(t)
  end
end

--- The task running now, or nil outside any task (or inside a coroutine
-- of the caller's own, where yielding to us would be wrong).
function _M.current()
  local co = coroutine.running()
  return co and task_of[co] or nil
end

function _M.in_task() return _M.current() ~= nil end

local function yield(...)
  local signal = coroutine.yield(MARK, ...)
  if signal == CANCEL then error(CANCEL, 0) end
end

--- Whether an error caught by pcall inside a task is that task's
-- cancellation (which the caller should re-raise with error(e, 0)).
function _M.is_cancel(e) return e == CANCEL end

--- Waits for progress of one transfer of an engine (any new state, bytes or
-- events), or up to max_ms when blocking outside a task.
function _M.wait_transfer(engine, transfer, max_ms)
  if _M.current() then
    yield("transfer", engine, transfer:id())
  else
    engine:step(max_ms or MAX_SLEEP_MS)
  end
end

--- Wakes whatever waits on a transfer that is going away.
function _M.wake_transfer(engine, id)
  local byid = waiting[engine]
  local t = byid and byid[id]
  if t then
    clear_wait(t)
    make_runnable(t)
  end
end

--- Sleeps seconds: yields inside a task, blocks outside.
function _M.sleep(seconds)
  local ms = math.max(0, (seconds or 0) * 1000)
  if _M.current() then
    yield("sleep", core.now_ms() + ms)
  else
    core.sleep_ms(ms)
  end
end

local function is_finished(t)
  return t.status == "done" or t.status == "failed" or t.status == "cancelled"
end

--- One round: resume what can run, else wait (at most max_wait_ms) for I/O
-- or timers.  Returns false when there is nothing at all to wait for.
local function round(max_wait_ms)
  if #runnable > 0 then
    local batch = runnable
    runnable = {}
    for i = 1, #batch do resume(batch[i]) end
    return true
  end
  local now = core.now_ms()
  local timeout = max_wait_ms
  local has_sleepers = false
  for t, at in pairs(sleepers) do
    has_sleepers = true
    if at <= now then
      sleepers[t] = nil
      make_runnable(t)
      timeout = 0
    elseif at - now < timeout then
      timeout = at - now
    end
  end
  local engines = {}
  for e in pairs(waiting) do engines[#engines + 1] = e end
  if #engines == 0 and not has_sleepers and #runnable == 0 then return false end
  if #engines > 0 then
    core.wait(engines, #runnable > 0 and 0 or timeout)
    for i = 1, #engines do
      local e = engines[i]
      local ids = e:take_ready()
      local byid = waiting[e]
      for j = 1, #ids do
        local t = byid and byid[ids[j]]
        if t then
          clear_wait(t)
          make_runnable(t)
        end
      end
    end
  elseif #runnable == 0 then
    core.sleep_ms(timeout)
  end
  return true
end

local function run_until(done)
  if _M.current() then error("beeos: cannot run the scheduler from inside a task; use task:wait()", 3) end
  while not done() do
    if not round(MAX_SLEEP_MS) then
      -- Every remaining task waits on another task that cannot finish.
      error("beeos: scheduler deadlock: tasks wait on each other", 3)
    end
  end
end

--- Starts fn(...) as a task.  It runs at the next scheduling point (run,
-- gather, wait, or when the current task waits).
function _M.spawn(fn, ...)
  if type(fn) ~= "function" then error("beeos.spawn: fn must be a function", 2) end
  local args = pack(...)
  local t = setmetatable({ status = "pending", joiners = {} }, Task)
  t.co = coroutine.create(function(signal)
    if signal == CANCEL then error(CANCEL, 0) end
    return fn(unpack(args, 1, args.n))
  end)
  task_of[t.co] = t
  make_runnable(t)
  return t
end

--- Runs until every task has finished.
function _M.run()
  run_until(function()
    return #runnable == 0 and next(waiting) == nil and next(sleepers) == nil
  end)
end

local function outcome(t)
  return unpack(t.results, 1, t.results.n)
end

--- Waits for the task and returns what its function returned; a task that
-- raised (or was cancelled) gives nil, err with err.kind == "task".
function Task:wait()
  if not is_finished(self) then
    if _M.current() then
      if _M.current() == self then error("beeos: a task cannot wait for itself", 2) end
      while not is_finished(self) do yield("join", self) end
    else
      run_until(function() return is_finished(self) end)
    end
  end
  return outcome(self)
end

--- Cancels the task: the transfer it waits on is closed (its connection is
-- not pooled), and it unwinds at its current wait.
function Task:cancel()
  if is_finished(self) then return false end
  if _M.current() == self then error(CANCEL, 0) end
  self.cancel_requested = true
  if self.status == "pending" then
    finish(self, "cancelled", nil, task_error(self, "cancelled", "task was cancelled"))
    return true
  end
  clear_wait(self)
  if self.on_cancel then self.on_cancel() end
  make_runnable(self)
  return true
end

--- Runs the given tasks (a list, or several arguments) to completion and
-- returns two lists in argument order: each task's first result, and each
-- one's error (its second result, or the error it raised).
function _M.gather(...)
  local list = select("#", ...) == 1 and getmetatable((...)) ~= Task and (...) or { ... }
  local function all_done()
    for i = 1, #list do if not is_finished(list[i]) then return false end end
    return true
  end
  if _M.current() then
    for i = 1, #list do list[i]:wait() end
  else
    run_until(all_done)
  end
  local values, errs = {}, {}
  for i = 1, #list do
    local r = list[i].results
    values[i], errs[i] = r[1], r[2]
  end
  return values, errs
end

--- Registers what to do when the current task is cancelled while waiting
-- (the SDK closes the transfer it waits on).  Returns the previous hook.
function _M.set_cancel_hook(fn)
  local t = _M.current()
  if not t then return nil end
  local prev = t.on_cancel
  t.on_cancel = fn
  return prev
end

--- For an outside event loop: the sockets every waiting engine needs
-- watched ({ [fd] = "r" | "w" | "rw" }) and the longest it may wait (ms)
-- before calling step(); nil timeout when nothing is pending.
function _M.pollset()
  local fds, timeout = {}, nil
  if #runnable > 0 then timeout = 0 end
  for e in pairs(waiting) do
    for fd, what in pairs(e:sockets()) do fds[fd] = what end
    local t = e:timeout()
    if t and (not timeout or t < timeout) then timeout = t end
  end
  local now = core.now_ms()
  for _, at in pairs(sleepers) do
    local d = math.max(0, at - now)
    if not timeout or d < timeout then timeout = d end
  end
  return fds, timeout
end

--- One non-blocking round for an outside event loop.  Returns true while
-- any task is still alive.
function _M.step()
  round(0)
  round(0)
  return #runnable > 0 or next(waiting) ~= nil or next(sleepers) ~= nil
end

return _M
