#!/usr/bin/env bash
# What holding the rate limits across the fleet costs the hot path: page hits (1,000 rows,
# gzip) through one wardgate with rate_limit.shared on (tokens charged to Redis in batches) and
# off (this instance's own limiter), same run, access logs on, REPEAT repetitions in alternating
# order, medians, with the Redis commands each request cost. Two clients: one device at a rate
# its quota never binds (its lease is spent and reported about once a second), and 50,000
# devices in turn (X-Device-Id per request, each a bucket of its own: the election-day shape,
# many clients at a few requests each).
#
#   bench/limits.sh        # writes bench/LIMITS.md
#
# Env: DURATION (s per point, 8), REPEAT (9: single runs vary by ±20% on a shared 2-core VM), CONNS (64), PORT_BASE (18800; uses +0..+4).
# Everything runs on 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
: "${DURATION:=8}" "${REPEAT:=9}" "${CONNS:=64}" "${PORT_BASE:=18800}"
# shellcheck source=bench/common.sh
source "$HERE/common.sh"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
TMP="$(mktemp -d /tmp/wardgate-limits.XXXXXX)"
trap 'kill_started; rm -rf "$TMP"' EXIT

REDIS=$PORT_BASE ORIGIN=$((PORT_BASE + 1)) GATE=$((PORT_BASE + 2)) ADMIN=$((PORT_BASE + 3))
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
"$SAMPLE" serve --memory --wards 10 --voters-per-ward 10000 --listen "127.0.0.1:$ORIGIN" >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$ORIGIN/open/volunteer/states" 300

PAGE="/open/volunteer/citizens?state=Karnataka&assemblyNo=150&wardNo=1&date=-1&boothNos=-1&page=0&size=1000"
cat >"$TMP/devices.lua" <<LUA
local n = 0
request = function()
  n = n + 1
  wrk.headers["Accept-Encoding"] = "gzip"
  wrk.headers["X-Device-Id"] = "device-" .. ((n * 7919 + math.random(0, 49999)) % 50000)
  return wrk.format(nil, "$PAGE")
end
LUA

# start_gate SHARED: one wardgate, rate limits shared or not, every request logged.
start_gate() {
  cat >"$TMP/gate.toml" <<TOML
listen = "127.0.0.1:$GATE"
admin_listen = "127.0.0.1:$ADMIN"
upstream = "http://127.0.0.1:$ORIGIN"
redis_url = "redis://127.0.0.1:$REDIS/"
redis_prefix = "wgbench$RANDOM"
[rate_limit]
shared = $1
downloads = { rate = 1000000.0, burst = 1000000 }
[ward_budget]
enabled = false
[log]
access_log_sample = 1.0
TOML
  "$BIN" serve --config "$TMP/gate.toml" >/dev/null 2>>"$TMP/gate-$1.log" &
  GATE_PID=$!
  PIDS+=("$GATE_PID")
  wait_http "http://127.0.0.1:$ADMIN/readyz" 300
  for _ in 1 2 3; do curl -sf -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$GATE$PAGE"; done
}

redis_cmds() { redis-cli -p "$REDIS" info stats | awk -F: '/^total_commands_processed/ {print $2+0}'; }

# req/s of wrk against the gate: $1 = one|devices
point() {
  local args=(-t2 "-c$CONNS" "-d${DURATION}s" --latency)
  if [ "$1" = devices ]; then args+=(-s "$TMP/devices.lua"); else args+=(-H 'Accept-Encoding: gzip' -H 'X-Device-Id: bench-one'); fi
  local c0 c1
  c0=$(redis_cmds)
  wrk "${args[@]}" "http://127.0.0.1:$GATE$PAGE" >"$TMP/wrk.out"
  c1=$(redis_cmds)
  awk -v c="$((c1 - c0))" '/^ +[0-9]+ requests in/ {n=$1} /Requests\/sec/ {r=$2} END {printf "%s %.4f\n", r, c / n}' "$TMP/wrk.out"
  grep -q "Non-2xx" "$TMP/wrk.out" && { echo "non-2xx answers:" >&2; cat "$TMP/wrk.out" >&2; exit 1; } || true
}

declare -A R C
for rep in $(seq 1 "$REPEAT"); do
  order=(true false); [ $((rep % 2)) = 0 ] && order=(false true)
  for shared in "${order[@]}"; do
    start_gate "$shared"
    for client in one devices; do
      point "$client" >"$TMP/point"
      read -r v cmds <"$TMP/point"
      R[$shared,$client]+="$v "
      C[$shared,$client]+="$cmds "
      echo "rep $rep shared=$shared $client: $v req/s, $cmds Redis commands per request" >&2
    done
    kill "$GATE_PID"; wait "$GATE_PID" 2>/dev/null || true
  done
done

python3 - "$ROOT/bench/LIMITS.md" "${R[true,one]}" "${R[false,one]}" "${R[true,devices]}" "${R[false,devices]}" "${C[true,one]}" "${C[true,devices]}" <<'PY'
import statistics, subprocess, sys, datetime, os
out, so, lo, sd, ld, co, cd = sys.argv[1:]
f = lambda s: [float(x) for x in s.split()]
m = lambda s: statistics.median(f(s))
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
rows = [("one device, quota never binding", so, lo, co),
        ("50,000 devices in turn (a bucket each)", sd, ld, cd)]
with open(out, "w") as fh:
    fh.write("# The hot-path cost of limits held across the fleet\n\n")
    fh.write(f"`bench/limits.sh`, {datetime.date.today()}, commit {commit}, {os.cpu_count()} cores shared by wardgate, "
             "Redis, the sample backend and wrk. Page hits (1,000 rows, gzip) from one wardgate with "
             f"`rate_limit.shared` on (tokens charged to Redis in batches) and off (its own limiter), every request logged; wrk -t2 -c{os.environ.get('CONNS', '64')}, "
             f"{os.environ.get('DURATION', '8')} s a point, medians of {len(f(so))} repetitions in alternating order.\n\n")
    fh.write("| client | shared (req/s) | local (req/s) | shared ÷ local | Redis commands per request, shared | runs shared | runs local |\n|---|---:|---:|---:|---:|---|---|\n")
    for name, s, l, c in rows:
        fh.write(f"| {name} | {m(s):,.0f} | {m(l):,.0f} | {m(s)/m(l):.2f}x | {m(c):.3f} | {s.strip()} | {l.strip()} |\n")
    fh.write("\nRedis commands count each command a script runs (`total_commands_processed`), the script call included.\n"
             "Rerun: `bench/limits.sh` (DURATION, REPEAT, CONNS in the environment).\n")
print(open(out).read())
PY
