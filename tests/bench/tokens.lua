-- wrk script of `make bench`: every request carries the next token of a file, round-robin.
--   wrk -t1 -c16 -d5s -s tokens.lua URL -- <token file> <first line (0-based)>
-- The requests are formatted once in init (before wrk starts its clock), so picking a token
-- costs wrk one table lookup. With one wrk thread the order is exactly the file's order.
-- done() prints one line "BENCH_JSON {...}" that run.py parses.

local requests = {}
local count = 0
local next_index = 0

function init(args)
  local path = args[1]
  local first = tonumber(args[2] or "0") or 0
  for token in io.lines(path) do
    if #token > 0 then
      count = count + 1
      requests[count] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. token })
    end
  end
  if count == 0 then
    error("no token in " .. path)
  end
  next_index = first % count
end

function request()
  next_index = next_index + 1
  if next_index > count then
    next_index = 1
  end
  return requests[next_index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"mean_us":%.1f,"max_us":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.status, e.connect, e.read, e.write,
    e.timeout))
end
