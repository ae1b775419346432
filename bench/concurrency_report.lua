-- Report of the concurrency benchmark (bench/run_concurrency.sh).
--
--   lua5.4 bench/concurrency_report.lua RESULTS_TXT PROCS_TXT SECTION_MD
--       prints the table and writes the markdown section to SECTION_MD
--   lua5.4 bench/concurrency_report.lua --merge SECTION_MD RESULTS_MD
--       puts the section into RESULTS_MD: replaces an earlier
--       "## Concurrency (issue 4)" section, else appends it in one write
local HEADING = "## Concurrency (issue 4)"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

if arg[1] == "--merge" then
  local section, target = assert(read(arg[2]), "no section file"), arg[3]
  local old = read(target)
  if not old then
    local f = assert(io.open(target, "wb"))
    f:write("# Benchmarks\n\n", section)
    f:close()
  elseif not old:find("\n" .. HEADING .. "\n", 1, true) and old:sub(1, #HEADING + 1) ~= HEADING .. "\n" then
    -- Other sections are written by other runs: append ours in one write.
    local f = assert(io.open(target, "ab"))
    f:write((old:sub(-1) == "\n" and "\n" or "\n\n") .. section)
    f:close()
  else
    -- Replace our earlier section (up to the next "## " heading) and move
    -- the new file into place in one rename.
    local s = old:find(HEADING, 1, true)
    local e = old:find("\n## ", s + #HEADING, true)
    local new = old:sub(1, s - 1) .. section .. (e and ("\n" .. old:sub(e + 1)) or "")
    local tmp = target .. ".tmp." .. tostring(os.time()) .. tostring(math.random(1e6))
    local f = assert(io.open(tmp, "wb"))
    f:write(new)
    f:close()
    assert(os.rename(tmp, target))
  end
  return
end

local results_path, procs_path, section_path = arg[1], arg[2], arg[3]
local r, info = {}, {}
for line in assert(io.open(results_path)):lines() do
  local k, v = line:match("^RESULT ([%w_.]+)=(.*)$")
  if k then
    r[k] = r[k] or {}
    r[k][#r[k] + 1] = tonumber(v) or v
  else
    k, v = line:match("^INFO ([%w_]+)=(.*)$")
    if k then info[k] = v end
  end
end

local function all(k) return r[k] or {} end
local function med(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  if #t == 0 then return nil end
  table.sort(t)
  if #t % 2 == 1 then return t[(#t + 1) // 2] end
  return (t[#t // 2] + t[#t // 2 + 1]) / 2
end
local function get(k) return med(all(k)) end
local function per_run(fn, ...)
  local keys, out = { ... }, {}
  for i = 1, #all(keys[1]) do
    local vals = {}
    for j, k in ipairs(keys) do vals[j] = all(k)[i] end
    out[i] = fn(table.unpack(vals))
  end
  return out
end

local function ms(v)
  if not v then return "n/a" end
  if v >= 10000 then return ("%.1f s"):format(v / 1000) end
  return ("%d ms"):format(math.floor(v + 0.5))
end
local function secs(v)
  if not v then return "n/a" end
  if v < 0.1 then return ("%.1f ms"):format(v * 1000) end
  return ("%.2f s"):format(v)
end
local function us(v) return v and ("%.1f µs"):format(v * 1e6) or "n/a" end
local function kib(v) return v and ("%.1f KiB"):format(v) or "n/a" end
local function mib(v) return v and ("%.1f MiB"):format(v / 1024) or "n/a" end
local function x(v) return v and ("%.2fx"):format(v) or "n/a" end

-- ---------------------------------------------------------------------
-- Concurrent (several runs: medians, ratio range)
local N = get("concurrent.n") or 0
local DELTAS, INTERVAL = get("concurrent.deltas") or 0, get("concurrent.interval_ms") or 0
local runs = #all("concurrent.wall_ms")
local single = get("concurrent.single_ms")
local wall = get("concurrent.wall_ms")
local ratios = per_run(function(w, s) return w / s end, "concurrent.wall_ms", "concurrent.single_ms")
local ratio = med(ratios)
local rmin, rmax = math.min(table.unpack(ratios)), math.max(table.unpack(ratios))
-- The wall time less the time this process was runnable but had no CPU
-- (other processes of the shared machine had it).
local ratios_cpu = per_run(function(w, q, s) return (w - q * 1000) / s end,
  "concurrent.wall_ms", "concurrent.runq_s", "concurrent.single_ms")
local ratio_cpu = med(ratios_cpu)
local runq = get("concurrent.runq_s")
local per_stream = med(per_run(function(a, b, n) return (a - b) / n end,
  "concurrent.rss_all_open_kb", "concurrent.rss_before_kb", "concurrent.n"))
local heap_per_stream = med(per_run(function(a, b, n) return (a - b) / n end,
  "concurrent.heap_all_open_kb", "concurrent.heap_before_kb", "concurrent.n"))
local hwm_per_stream = med(per_run(function(a, n) return a / n end, "concurrent.hwm_grew_kb", "concurrent.n"))
local cpu = get("concurrent.cpu_s")
local oncpu = get("concurrent.oncpu_s")
local cpu_ev = med(per_run(function(c, e) return c / e end, "concurrent.cpu_s", "concurrent.events"))
local oncpu_ev = med(per_run(function(c, e) return c / e end, "concurrent.oncpu_s", "concurrent.events"))
local failed = 0
for _, k in ipairs({ "concurrent.failed", "spread.failed", "sequential.failed" }) do
  for _, v in ipairs(all(k)) do failed = failed + v end
end
local not_all_open = 0
for _, v in ipairs(all("concurrent.finished_before_all_open")) do not_all_open = not_all_open + v end
local all_open_after = get("concurrent.all_open_after_ms")

-- Spread (one run)
local sp_wall, sp_runq, sp_cpu = get("spread.wall_ms"), get("spread.runq_s"), get("spread.cpu_s")
local sp_ev = get("spread.events")
local sp_rss = get("spread.rss_all_open_kb") and get("spread.rss_before_kb")
  and (get("spread.rss_all_open_kb") - get("spread.rss_before_kb")) / get("spread.n")

-- Sequential (extrapolated)
local seq_n = get("sequential.n") or 1
local seq_wall = get("sequential.wall_ms")
local seq_each = seq_wall and seq_wall / seq_n
local seq_oncpu = get("sequential.oncpu_s")
local seq_ev = get("sequential.events")

-- Processes
local procs = {}
for line in (io.open(procs_path) or io.open("/dev/null")):lines() do
  local p = {}
  for k, v in line:gmatch("([%w_]+)=(%S+)") do p[k] = tonumber(v) end
  if line:match("^PROC ") then procs[#procs + 1] = p end
end
local p_ok, p_events, p_rss, p_pss = 0, 0, 0, 0
for _, p in ipairs(procs) do
  p_ok = p_ok + p.ok
  p_events = p_events + p.events
  p_rss = p_rss + p.rss_kb
  p_pss = p_pss + p.pss_kb
end
-- Sweeps: most streams open at once ([open, end]) and most RSS of live
-- processes at once ([start, end], each at its RSS with the stream open).
local function sweep(from, weight)
  local ev = {}
  for _, p in ipairs(procs) do
    ev[#ev + 1] = { p[from], weight(p) }
    ev[#ev + 1] = { p["end"], -weight(p) }
  end
  table.sort(ev, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
  local cur, best = 0, 0
  for _, e in ipairs(ev) do
    cur = cur + e[2]
    if cur > best then best = cur end
  end
  return best
end
local p_open_peak = sweep("open", function() return 1 end)
local p_rss_peak = sweep("start", function(p) return p.rss_kb end)
local p_n = get("procs.n")
local p_wall = get("procs.wall_ms")
local p_cpu = get("procs.cpu_s")

-- Idle
local idle_cpu, idle_oncpu = get("idle.cpu_s"), get("idle.oncpu_s")
local idle_wait = get("idle.wait_ms")

-- ---------------------------------------------------------------------
local L = {}
local function add(s) L[#L + 1] = s end
local function yes(b) return b and "**met**" or "**not met**" end
local function rq(v) return v and ("%.2f s"):format(v) or "n/a" end

add(HEADING)
add("")
add(("%d conversations, each one SSE stream of %d `delta` events %d ms apart plus a `done` event "
  .. "(%d events), served by %s + ngx_http_lua (`bench/loadserver/`, one worker process). "
  .. "The concurrent row is the median of %d runs (one stream timed in the same process just before "
  .. "each); the other rows are one run each.")
  :format(N, DELTAS, INTERVAL, DELTAS + 1, info.nginx or "?", runs))
add("")
add("| run | conversations | wall time | vs one stream | waited for a CPU (1) | CPU user+sys | CPU per event | memory |")
add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
add(("| one stream (one task; median of 3) | 1 | %s | 1.00x | | | | |"):format(ms(single)))
add(("| **%d tasks, one client, one process** | %d | %s | **%s** (runs %.2f-%.2fx); %s less the CPU wait | %s | %s | %s | "
  .. "**%s per open stream** (RSS with all %d open minus RSS before; Lua heap: %s of it); "
  .. "peak RSS growth %s per stream |")
  :format(N, N, ms(wall), x(ratio), rmin, rmax, x(ratio_cpu), rq(runq), secs(cpu), us(cpu_ev),
    kib(per_stream), N, kib(heap_per_stream), kib(hwm_per_stream)))
add(("| %d tasks, deltas out of step (random 0-%d ms phase per stream) | %d | %s | %s; %s less the CPU wait | %s | %s | %s | %s per open stream |")
  :format(get("spread.n") or N, INTERVAL, get("spread.n") or N, ms(sp_wall),
    x(sp_wall and single and sp_wall / single),
    x(sp_wall and sp_runq and single and (sp_wall - sp_runq * 1000) / single), rq(sp_runq), secs(sp_cpu),
    us(sp_cpu and sp_ev and sp_cpu / sp_ev), kib(sp_rss)))
add(("| sequential: `agent:stream` in a plain loop (%d measured, x%d extrapolated) | %d | %s (%s for %d) | %s | %s for %d | %s (%s for %d) | %s | RSS %s (one stream at a time) |")
  :format(seq_n, N // seq_n, N, ms(seq_each and seq_each * N), ms(seq_wall), seq_n,
    x(seq_each and single and seq_each * N / single), rq(get("sequential.runq_s")), seq_n,
    secs(seq_oncpu and seq_oncpu / seq_n * N), secs(seq_oncpu), seq_n,
    us(seq_oncpu and seq_ev and seq_oncpu / seq_ev), mib(get("sequential.rss_kb"))))
add(("| one process per conversation: `xargs -P %d` x `lua5.4 ... one` | %d (%d ok) | %s | %s | | %s (all processes) | %s | "
  .. "sum of RSS %s (%s per process), sum of PSS %s; peak RSS of live processes %s; "
  .. "at most %d streams open at once |")
  :format(p_n or 0, p_n or 0, p_ok, ms(p_wall), x(p_wall and single and p_wall / single), secs(p_cpu),
    us(p_cpu and p_events > 0 and p_cpu / p_events), mib(p_rss), mib(#procs > 0 and p_rss / #procs),
    mib(p_pss), mib(p_rss_peak), p_open_peak))
add(("| idle: %d silent open streams (headers, then nothing) | %d (%d open) | %s of waiting | | | "
  .. "%s (on-CPU %.1f ms) | %d wakeups | RSS %s |")
  :format(get("idle.n") or 0, get("idle.n") or 0, get("idle.opened") or 0, ms(idle_wait),
    secs(idle_cpu), (idle_oncpu or 0) * 1000, get("idle.wakeups") or 0, mib(get("idle.rss_kb"))))
add("")
add("(1) Run-queue wait of the SDK process (`/proc/self/schedstat`): time it was ready to run while other "
  .. "processes of the shared machine held both CPUs. \"Less the CPU wait\" subtracts it from the wall time.")
add("")
add("Targets:")
add("")
add(("- %d concurrent streams within 1.5x the wall time of one: %s (%s, runs %.2f-%.2fx; less the time "
  .. "the process waited for a CPU: %s, runs %.2f-%.2fx)")
  :format(N, yes(ratio and ratio <= 1.5), x(ratio), rmin, rmax, x(ratio_cpu),
    math.min(table.unpack(ratios_cpu)), math.max(table.unpack(ratios_cpu))))
add(("- at most 64 KiB RSS per open stream: %s (%s%s)")
  :format(yes(per_stream and per_stream <= 64), kib(per_stream),
    not_all_open > 0 and (", but " .. not_all_open .. " streams had finished before the last one opened") or
    (", all %d open at once %s after the start"):format(N, ms(all_open_after))))
add(("- idle streams cost no CPU: %s (%s user+sys, %.1f ms on-CPU over %s; %d wakeups)")
  :format(yes(idle_oncpu and idle_oncpu < 0.05), secs(idle_cpu), (idle_oncpu or 0) * 1000, ms(idle_wait),
    get("idle.wakeups") or 0))
if failed > 0 then add(("- **%d conversations failed** (see the driver's output)"):format(failed)) end
add("")
add("Notes:")
add("")
add(("- CPU user+sys is `/proc/self/stat` (10 ms ticks); the on-CPU time of `/proc/self/schedstat` "
  .. "agrees (concurrent: %s, %s per event). CPU per event divides by every delivered event "
  .. "(deltas and done) and includes opening the connections and building the requests. "
  .. "The sequential row uses on-CPU time (ticks are too coarse for %d streams); the processes "
  .. "row is the rusage of all %d children (`times` in the driver).")
  :format(secs(oncpu), us(oncpu_ev), seq_n, p_n or 0))
add(("- Load server CPU (nginx worker, user+sys): %s per concurrent run, %s for the processes run.")
  :format(secs(get("concurrent.server_cpu_s")), secs(get("procs.server_cpu_s"))))
add("- Processes: each one reads its VmRSS and Pss from /proc/self while its stream is open. The sum of "
  .. "RSS counts the shared libraries (liblua, libcurl, libc) once per process, PSS shares them out; "
  .. "the peak is a sweep over each process's [start, end] interval. Starting the interpreter and "
  .. "libcurl costs most of each process's CPU, so they do not all overlap.")
add(("- The bundled mock (`bin/beeos-mock`) watches sockets with select() and serves at most 1000 "
  .. "connections: it ran 1000 such streams in 1.09 s, but 1100 took two waves (2.6 s), so it has no "
  .. "headroom for this benchmark; hence nginx."))
add("")
add("Machine: " .. ("%s, %s CPUs, %s RAM, %s; %s, %s, %s; `ulimit -n` %s; load average before the run "
  .. "%s (shared machine); tree %s; %s."):format(info.cpu or "?", info.nproc or "?", info.mem or "?",
    info.kernel or "?", info.lua or "?", info.curl or "?", info.nginx or "?", info.nofile or "?",
    info.load or "?", info.commit or "?", info.date or "?"))
add("")
add("Commands:")
add("")
add("```sh")
add("make bench-concurrency        # make all, then bench/run_concurrency.sh")
add("# the driver starts nginx -p build/bench-concurrency -c build/bench-concurrency/nginx.conf")
add("# (from bench/loadserver/nginx.conf.in: free port, random token), sets BENCH_URL, BENCH_TOKEN,")
add("# LUA_PATH, LUA_CPATH, then runs:")
add(("BENCH_N=%d lua5.4 bench/concurrency_bench.lua concurrent   # %d times"):format(N, runs))
add(("BENCH_N=%d lua5.4 bench/concurrency_bench.lua spread"):format(get("spread.n") or N))
add(("BENCH_N=%d BENCH_IDLE_S=%s lua5.4 bench/concurrency_bench.lua idle")
  :format(get("idle.n") or N, tostring(math.floor((idle_wait or 5000) / 1000 + 0.5))))
add(("BENCH_SEQ_N=%d lua5.4 bench/concurrency_bench.lua sequential"):format(seq_n))
add(("seq %d | xargs -P %d -n 1 lua5.4 bench/concurrency_bench.lua one"):format(p_n or N, p_n or N))
add("```")
add("")

local text = table.concat(L, "\n")
io.stdout:write(text)
local f = assert(io.open(section_path, "wb"))
f:write(text)
f:close()
