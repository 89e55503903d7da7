-- Round-robin over the request paths listed (one per line) in $WRK_URLS; requests are
-- formatted once in init so the script costs wrk next to nothing. done() prints JSON.
local reqs = {}
local n = 0
local i = 0

function init(args)
  for line in io.lines(os.getenv("WRK_URLS")) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("GET", line)
    end
  end
  n = #reqs
  i = math.random(n) - 1
end

function request()
  i = (i % n) + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_err":%d,"read_err":%d,"write_err":%d,"status_err":%d,"timeout_err":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
