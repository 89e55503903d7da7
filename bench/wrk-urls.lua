-- Round-robin over the request paths listed (one per line) in $WRK_URLS; requests are
-- formatted once in init so the script costs wrk next to nothing. done() prints JSON.
-- Each thread starts at its own share of the list (thread k of -t2 at k/2 of it), so that the
-- first pass over a list of distinct URLs asks each about once, not once per thread at once.
local reqs = {}
local n = 0
local i = 0
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(os.getenv("WRK_URLS")) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("GET", line)
    end
  end
  n = #reqs
  i = ((tid or 0) * math.floor(n / 2)) % n
end

function request()
  i = (i % n) + 1
  return reqs[i]
end

-- percentiles written as the latency spectrum ("pcts": [[percentile, us], ...]) for the plots
local SPECTRUM = { 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99 }

function done(summary, latency, requests)
  local e = summary.errors
  local pcts = {}
  for _, p in ipairs(SPECTRUM) do
    pcts[#pcts + 1] = string.format("[%g,%d]", p, latency:percentile(p))
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_err":%d,"read_err":%d,"write_err":%d,"status_err":%d,"timeout_err":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,"pcts":[%s]}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, table.concat(pcts, ",")))
end
