#!/usr/bin/env bash
# What one hit (a 1,000-row page, and a whole ward; gzip, access log on) costs the server, side
# by side in the same run: this checkout and a base revision (page-hit instructions counted by
# callgrind, repeatable whatever else the machine does; and CPU per request under wrk), this
# checkout with each send path (--sendfile auto, the default; on; off), nginx gzip_static
# serving the same bytes, and the floor under every wardgate page hit (hyper + sendfile and
# nothing else, the hit_floor example).
#   bench/hit-cost.sh [BASE_REV]     writes bench/HIT-COST.md (default base: 274b9d6)
# Env: PORT_BASE (default 18300, uses +0..+12), HIT_DB (default wardgate_hitcost), N (requests
# counted by callgrind, default 20000; 0 skips the count), REPS (CPU alternations, default 3).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BASE="${1:-274b9d6}"
: "${PORT_BASE:=18300}" "${HIT_DB:=wardgate_hitcost}" "${N:=20000}" "${REPS:=3}"
for t in valgrind wrk nginx mysql redis-cli oha; do
  command -v "$t" >/dev/null || { echo "needs $t (Debian: valgrind wrk nginx-light mariadb-client redis-tools; cargo install oha)" >&2; exit 1; }
done
WORK="$(mktemp -d /tmp/wardgate-hitcost.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx/nginx.pid" ] && kill "$(cat "$WORK/nginx/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  # this run's Redis keys (every wardgate it started used a prefix hitcost-<pid>-<port>)
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "hitcost-$$-*" 2>/dev/null \
    | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1 || true
  git -C "$ROOT" worktree remove --force "$WORK/base" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
source "$HERE/common.sh"
P_ORIGIN=$PORT_BASE; P_HEAD=$((PORT_BASE+1)); P_BASE=$((PORT_BASE+2)); P_NGINX=$((PORT_BASE+3))
P_FLOOR=$((PORT_BASE+4)); P_CG=$((PORT_BASE+5)); P_SF=$((PORT_BASE+10)); P_COPY=$((PORT_BASE+11))

echo "building the base ($BASE), this checkout and the hit_floor example..." >&2
git -C "$ROOT" worktree add --detach "$WORK/base" "$BASE" >/dev/null 2>&1
(cd "$WORK/base" && CARGO_TARGET_DIR="$ROOT/target/bench-base" cargo build --release --quiet -p wardgate --bin wardgate)
(cd "$ROOT" && cargo build --release --quiet -p wardgate --bin wardgate --example hit_floor)
HEAD_BIN="$ROOT/target/release/wardgate"; BASE_BIN="$ROOT/target/bench-base/release/wardgate"
FLOOR_BIN="$ROOT/target/release/examples/hit_floor"

mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$HIT_DB\`"
"$SAMPLE" seed --mysql-url "mysql://root@127.0.0.1:3306/$HIT_DB" --state Karnataka --assembly 150 \
  --wards 10 --voters-per-ward 10000 >"$WORK/seed.log" 2>&1
"$SAMPLE" serve --mysql-url "mysql://root@127.0.0.1:3306/$HIT_DB" --listen "127.0.0.1:$P_ORIGIN" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_ORIGIN/__origin/stats"

# The page of each ward the bench's page scenario asks for (ward w, page w-1, 1,000 rows).
page() { echo "/open/volunteer/citizens?state=Karnataka&assemblyNo=150&wardNo=$1&date=-1&boothNos=-1&page=$(($1 - 1))&size=1000"; }
ward() { echo "/open/volunteer/citizens?state=Karnataka&assemblyNo=150&wardNo=$1&date=-1&boothNos=-1"; }
for w in $(seq 1 10); do page "$w"; done >"$WORK/pages.app"
for w in $(seq 1 10); do ward "$w"; done >"$WORK/wards.app"
for w in $(seq 1 10); do echo "/p/$w.json"; done >"$WORK/p.nginx"
for w in $(seq 1 10); do echo "/w/$w.json"; done >"$WORK/w.nginx"
gate() { # bin port admin-port [wrapper...]: wardgate as the hit bench runs it, access log on
  local bin=$1 port=$2 admin=$3; shift 3
  "$@" "$bin" serve --drain-grace 0s --snapshot-max-age 1h --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$admin" --upstream "http://127.0.0.1:$P_ORIGIN" \
    --redis-url redis://127.0.0.1:6379/ --redis-prefix "hitcost-$$-$port" \
    --rate-limit downloads=1000000/s:1000000 --rate-limit master=1000000/s:1000000 \
    --log-format json --access-log-sample 1 >>"$WORK/gate-$port.log" 2>&1 &
}
warm() { for u in $(cat "$WORK/pages.app" "$WORK/wards.app"); do curl -sf -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$1$u"; done; }

# ---- instructions per hit, callgrind (wardgate's own threads, user space)
instructions() { # bin [env assignments...]: the same send path for both builds (this one
  # copying: under valgrind's slowed clock, auto's trials would decide at random)
  local bin=$1; shift
  gate "$bin" "$P_CG" $((PORT_BASE+6)) env "$@" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out"
  local pid=$!
  wait_http "http://127.0.0.1:$((PORT_BASE+6))/metrics" 600
  warm "$P_CG"; warm "$P_CG"
  sed "s#^#http://127.0.0.1:$P_CG#" "$WORK/pages.app" >"$WORK/cg.urls"
  oha -n 2000 -c 8 --no-tui -H 'Accept-Encoding: gzip' --urls-from-file "$WORK/cg.urls" >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  oha -n "$N" -c 8 --no-tui -H 'Accept-Encoding: gzip' --urls-from-file "$WORK/cg.urls" >"$WORK/oha.txt"
  callgrind_control -i off "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  grep -q "Success rate:.*100.00%" "$WORK/oha.txt" || { echo "callgrind run had failures" >&2; cat "$WORK/oha.txt" >&2; exit 1; }
  callgrind_annotate "$WORK/cg.out" 2>/dev/null | awk -v n="$N" '/PROGRAM TOTALS/ {gsub(",", "", $1); printf "%.0f", $1 / n; exit}'
  rm -f "$WORK/cg.out"*
}
I_BASE="not counted"; I_HEAD="not counted"
if [ "$N" -gt 0 ]; then
  echo "counting instructions per page hit (callgrind, $N requests each)..." >&2
  I_BASE=$(instructions "$BASE_BIN"); I_HEAD=$(instructions "$HEAD_BIN" WARDGATE_SENDFILE=off)
fi

# ---- CPU per hit under wrk: both builds (this one with each send path), nginx on the same
# bytes, the floor; page hits and full-ward hits
gate "$BASE_BIN" "$P_BASE" $((PORT_BASE+7)); PIDS+=($!); PID_BASE=$!
gate "$HEAD_BIN" "$P_HEAD" $((PORT_BASE+8)); PIDS+=($!); PID_HEAD=$!
gate "$HEAD_BIN" "$P_SF" $((PORT_BASE+9)) env WARDGATE_SENDFILE=on; PIDS+=($!); PID_SF=$!
gate "$HEAD_BIN" "$P_COPY" $((PORT_BASE+12)) env WARDGATE_SENDFILE=off; PIDS+=($!); PID_COPY=$!
for a in 7 8 9 12; do wait_http "http://127.0.0.1:$((PORT_BASE+a))/metrics"; done
for p in "$P_BASE" "$P_HEAD" "$P_SF" "$P_COPY"; do warm "$p"; done
mkdir -p "$WORK/www/p" "$WORK/www/w" "$WORK/nginx/logs" "$WORK/nginx/tmp"
for w in $(seq 1 10); do
  curl -sf -H 'Accept-Encoding: gzip' -o "$WORK/www/p/$w.json.gz" "http://127.0.0.1:$P_HEAD$(page "$w")"
  curl -sf -H 'Accept-Encoding: gzip' -o "$WORK/www/w/$w.json.gz" "http://127.0.0.1:$P_HEAD$(ward "$w")"
done
sed -e "s#@PORT@#$P_NGINX#" -e "s#@WWW@#$WORK/www#" -e "s#@DIR@#$WORK/nginx#" "$HERE/nginx.conf" >"$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx/" -e "$WORK/nginx/logs/error.log" -c "$WORK/nginx/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!); PID_NGINX=$!
# the floor serves the same 10 pages (/1../10) and 10 wards (/11../20) as the others
"$FLOOR_BIN" "$P_FLOOR" "$WORK"/www/p/{1..10}.json.gz "$WORK"/www/w/{1..10}.json.gz &
PIDS+=($!); PID_FLOOR=$!
sleep 1
seq 1 10 | sed 's#^#/#' >"$WORK/floor-p.urls"
seq 11 20 | sed 's#^#/#' >"$WORK/floor-w.urls"
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
point() { # port urls pids... -> "req/s µs-per-request"
  local port=$1 urls=$2; shift 2
  local t0 t1 out req
  t0=$(ticks "$@")
  out=$(WRK_URLS="$urls" wrk -t2 -c64 -d4s -H 'Accept-Encoding: gzip' -s "$HERE/wrk-urls.lua" "http://127.0.0.1:$port")
  t1=$(ticks "$@")
  req=$(grep -o '"requests":[0-9]*' <<<"$out" | cut -d: -f2)
  awk -v r="$req" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%d %.2f", r / 4, t * 1e6 / hz / r}'
}
NGINX_PIDS=$(pgrep -P "$PID_NGINX" | tr '\n' ' ')
declare -A ROWS
echo "CPU per hit under wrk, $REPS alternations..." >&2
for rep in $(seq 1 "$REPS"); do
  for kind in p w; do
    [ $kind = p ] && app="$WORK/pages.app" || app="$WORK/wards.app"
    ROWS[base$kind]+="$(point "$P_BASE" "$app" "$PID_BASE");"
    ROWS[head$kind]+="$(point "$P_HEAD" "$app" "$PID_HEAD");"
    ROWS[sf$kind]+="$(point "$P_SF" "$app" "$PID_SF");"
    ROWS[copy$kind]+="$(point "$P_COPY" "$app" "$PID_COPY");"
    # shellcheck disable=SC2086
    ROWS[nginx$kind]+="$(point "$P_NGINX" "$WORK/$kind.nginx" $NGINX_PIDS);"
    ROWS[floor$kind]+="$(point "$P_FLOOR" "$WORK/floor-$kind.urls" "$PID_FLOOR");"
  done
done
med() { tr ';' '\n' <<<"$1" | awk 'NF' | cut -d' ' -f"$2" | sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
all() { tr ';' '\n' <<<"$1" | awk 'NF' | cut -d' ' -f"$2" | paste -sd/ | sed 's#/# / #g'; }
cell() { [ -n "${ROWS[$1]:-}" ] && echo "$(med "${ROWS[$1]}" 2) ($(all "${ROWS[$1]}" 2)); $(med "${ROWS[$1]}" 1) req/s" || echo "–"; }
{
  echo "# What a hit costs the server"
  echo
  echo "Generated by \`bench/hit-cost.sh $BASE\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1))."
  echo "A page hit: a 1,000-row page of a 10,000-row ward, gzip (~47 KB); a full-ward hit: the whole"
  echo "ward, gzip (~470 KB); 10 wards in turn, access log on (\`--access-log-sample 1\`, JSON),"
  echo "keep-alive. Everything in the same run."
  echo
  echo "## Instructions per page hit (callgrind: wardgate's threads, user space, $N hits after warm-up)"
  echo
  echo "| build | instructions per hit |"
  echo "| --- | ---: |"
  echo "| base $BASE | $I_BASE |"
  echo "| this checkout ($(git -C "$ROOT" rev-parse --short HEAD)), \`--sendfile off\` | $I_HEAD |"
  echo
  echo "## CPU per hit under load (wrk 2 threads x 64 connections, 4 s, $REPS alternations; server processes' user + system CPU)"
  echo
  echo "µs per hit, median (every run); median req/s."
  echo
  echo "| server | page hit | full-ward hit |"
  echo "| --- | --- | --- |"
  echo "| wardgate, base $BASE (its default send path) | $(cell basep) | $(cell basew) |"
  echo "| wardgate, this checkout, \`--sendfile auto\` (the default) | $(cell headp) | $(cell headw) |"
  echo "| wardgate, this checkout, \`--sendfile on\` | $(cell sfp) | $(cell sfw) |"
  echo "| wardgate, this checkout, \`--sendfile off\` (copying) | $(cell copyp) | $(cell copyw) |"
  echo "| nginx gzip_static, same bytes, sendfile, access log buffered | $(cell nginxp) | $(cell nginxw) |"
  echo "| floor: hyper + sendfile, nothing else, same bytes (hit_floor) | $(cell floorp) | $(cell floorw) |"
  echo
  echo "The load generator shares the two cores, so req/s follows the sum of both sides' CPU;"
  echo "µs per hit is the server's own cost. The floor is what any wardgate hit pays before its"
  echo "own work (routing, validation, limits, ward budget, cache lookup, headers, log, metrics);"
  echo "where even the floor's req/s is not far above nginx's, the ratio is bounded by the kernel's"
  echo "sending and the load generator's receiving, which every server here pays alike."
  echo
  echo "What \`auto\` chose by the end for each size of send (\`wardgate_sendfile_chosen\`, 1 = sendfile,"
  echo "0 = copied; \`large\`: 256 KiB or more, the whole wards):"
  echo
  echo '```'
  curl -sf "http://127.0.0.1:$((PORT_BASE+8))/metrics" | grep '^wardgate_sendfile_chosen' || true
  echo '```'
  echo
  echo "Its changes of way, as logged (the process's CPU ns per KiB sent each way in the trials):"
  echo
  echo '```'
  grep 'now sent by' "$WORK/gate-$P_HEAD.log" | sed -E 's/.*"message":"([^"]*)".*"copy_cpu_ns_per_kib":([0-9.]*).*"sendfile_cpu_ns_per_kib":([0-9.]*).*/\1: copy \2, sendfile \3/' || true
  echo '```'
} >"$HERE/HIT-COST.md"
cat "$HERE/HIT-COST.md"
