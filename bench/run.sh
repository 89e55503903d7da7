#!/usr/bin/env bash
# wardgate benchmark: wardgate vs nginx gzip_static (same bytes) vs Varnish vs the uncached origin
# (hits, constant rate), a cold storm against nginx proxy_cache_lock and Varnish in front of a
# 200 ms origin, deltas at hit speed, and `wardgate warm` against its bound; access logs on.
#
#   bench/run.sh            # 100 wards x 10,000 voters, REPEAT=3 (~15 min once tools are installed)
#   bench/run.sh --quick    # 10 wards x 10,000 voters, REPEAT=1, shorter points (~4 min)
#
# Env to scale / tune: WARDS, VOTERS, DURATION (s per point), WARMUP (s), CONNS, RATES
# (comma list of offered req/s for the sweep), REPEAT (repetitions of the target scenarios,
# medians reported), PORT_BASE (default 18100; uses PORT_BASE..PORT_BASE+9), BENCH_DB (the
# storm's database is ${BENCH_DB}_storm), KEEP_TMP=1 keeps the temp dir (logs), NO_BUILD=1
# uses target/release as it is (else rebuilt when older than the sources), BENCH_ONLY=storm,deltas
# (parts of closed,rate,deltas,storm,warm) runs only those, into $TMP/only.json, for development;
# WARM_TIMEOUT (s, default 120) kills a `wardgate warm` repetition still running then.
# Everything runs on 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  : "${WARDS:=10}" "${VOTERS:=10000}" "${DURATION:=4}" "${WARMUP:=1}" "${RATES:=1000,2750,5000}" "${REPEAT:=1}"
else
  : "${WARDS:=100}" "${VOTERS:=10000}" "${DURATION:=8}" "${WARMUP:=2}" "${RATES:=1000,2750,5000,7500}" "${REPEAT:=3}"
fi
: "${CONNS:=64}" "${PORT_BASE:=18100}" "${BENCH_DB:=wardgate_bench}"
STORM_DB="${BENCH_DB}_storm"
export WARDS VOTERS DURATION WARMUP RATES CONNS QUICK REPEAT BENCH_DB STORM_DB

T0=$(date +%s)
log() { printf '[bench %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

# ---------------------------------------------------------------- tools
need_apt=()
command -v nginx    >/dev/null || need_apt+=(nginx-light)
command -v varnishd >/dev/null || need_apt+=(varnish)
command -v wrk      >/dev/null || need_apt+=(wrk)
[ -x /usr/bin/time ]           || need_apt+=(time)
command -v curl     >/dev/null || need_apt+=(curl)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
command -v mysql    >/dev/null || need_apt+=(mariadb-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # the Debian packages start system services; the bench runs its own instances
  systemctl stop nginx varnish 2>/dev/null || true
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
  log "cargo install oha (constant-rate load generator with latency correction; ~5 min once)"
  cargo install oha --locked --quiet
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- binary
BIN="$ROOT/target/release/wardgate"
SAMPLE="$ROOT/target/release/wardgate-sample"
# rebuilt when missing or older than the sources; NO_BUILD=1 uses the binaries as they are
if [ ! -x "$BIN" ] || [ ! -x "$SAMPLE" ] || { [ "${NO_BUILD:-0}" != 1 ] && [ -n "$(find "$ROOT/crates" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" -print -quit 2>/dev/null)" ]; }; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi

# ---------------------------------------------------------------- temp dir, cleanup
TMP="$(mktemp -d /tmp/wardgate-bench.XXXXXX)"
chmod 755 "$TMP"   # nginx workers (nobody) and varnish (vcache) read below it
PIDS=()
# Redis key prefixes of this run: the hit bench's wardgate, the warm repetitions, the storm's
# fresh wardgates (each repetition appends -N)
PREFIX="bench-$$-hit"; WARM_PREFIX="bench-$$-warm"; STORM_PREFIX="bench-$$-storm"
cleanup() {
  local rc=$?
  set +e
  # bench.py's own services (the storm's, restarted per repetition) if it did not stop them
  [ -f "$TMP/started.pids" ] && while read -r p; do kill "$p" 2>/dev/null; done <"$TMP/started.pids"
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[$i]}" 2>/dev/null; done
  [ -f "$TMP/nginx/nginx.pid" ] && kill "$(cat "$TMP/nginx/nginx.pid" 2>/dev/null)" 2>/dev/null
  sleep 1
  [ -f "$TMP/started.pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null; done <"$TMP/started.pids"
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill -9 "${PIDS[$i]}" 2>/dev/null; done
  wait 2>/dev/null
  # drop this run's Redis keys
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "bench-$$-*" 2>/dev/null \
    | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
  log "stopped everything (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

P_ORIGIN=$((PORT_BASE+0)); P_WG=$((PORT_BASE+1)); P_ADMIN=$((PORT_BASE+2))
P_NGINX=$((PORT_BASE+3)); P_VARNISH=$((PORT_BASE+4))
# the cold storm's: the slow origin (up all along), and wardgate/nginx/Varnish restarted fresh per repetition
P_STORM_ORIGIN=$((PORT_BASE+5)); P_STORM_WG=$((PORT_BASE+6)); P_STORM_ADMIN=$((PORT_BASE+7))
P_STORM_NGINX=$((PORT_BASE+8)); P_STORM_VARNISH=$((PORT_BASE+9))
for p in $P_ORIGIN $P_WG $P_ADMIN $P_NGINX $P_VARNISH $P_STORM_ORIGIN $P_STORM_WG $P_STORM_ADMIN $P_STORM_NGINX $P_STORM_VARNISH; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p busy; set PORT_BASE" >&2; exit 1; fi
done
MYSQL_URL="mysql://root@127.0.0.1:3306/$BENCH_DB"
STORM_MYSQL_URL="mysql://root@127.0.0.1:3306/$STORM_DB"

wait_http() { # url [tries]
  for _ in $(seq 1 "${2:-100}"); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not up: $1" >&2; return 1
}

# ---------------------------------------------------------------- seed
log "seed $WARDS wards x $VOTERS voters into $BENCH_DB"
mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`"
SEED_CMD="$SAMPLE seed --mysql-url $MYSQL_URL --state Karnataka --assembly 150 --wards $WARDS --voters-per-ward $VOTERS"
$SEED_CMD >"$TMP/seed.log" 2>&1
tail -n1 "$TMP/seed.log" >&2
# the storm's: 100 wards of 1,000 voters, and ward 101, cached before the storm, for the hits beside it
log "seed 101 wards x 1000 voters into $STORM_DB"
mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$STORM_DB\`"
STORM_SEED_CMD="$SAMPLE seed --mysql-url $STORM_MYSQL_URL --state Karnataka --assembly 150 --wards 101 --voters-per-ward 1000"
$STORM_SEED_CMD >"$TMP/seed-storm.log" 2>&1
tail -n1 "$TMP/seed-storm.log" >&2

# ---------------------------------------------------------------- origin + wardgate
ORIGIN_CMD="$SAMPLE serve --mysql-url $MYSQL_URL --listen 127.0.0.1:$P_ORIGIN"
$ORIGIN_CMD >"$TMP/origin.log" 2>&1 &
PIDS+=($!); ORIGIN_PID=$!
wait_http "http://127.0.0.1:$P_ORIGIN/__origin/stats"

# --snapshot-max-age 1h: the hit bench compares serving the same stored bytes as nginx, so no
# ward is renewed mid-run (at the default 5 min, the 100 wards' renewals, 100 whole-ward reads
# of the uncached origin, land in the later repetitions on these 2 cores; what renewals cost
# the backend is measured as backend load, not as hit throughput).
WG_CMD="$BIN serve --snapshot-max-age 1h --listen 127.0.0.1:$P_WG --admin-listen 127.0.0.1:$P_ADMIN --upstream http://127.0.0.1:$P_ORIGIN --redis-url redis://127.0.0.1:6379/ --redis-prefix $PREFIX --rate-limit downloads=1000000/s:1000000 --rate-limit master=1000000/s:1000000 --log-format json --access-log-sample 1"
$WG_CMD >"$TMP/wardgate.log" 2>&1 &
PIDS+=($!); WG_PID=$!
wait_http "http://127.0.0.1:$P_ADMIN/metrics"

STORM_ORIGIN_CMD="$SAMPLE serve --mysql-url $STORM_MYSQL_URL --listen 127.0.0.1:$P_STORM_ORIGIN --latency 200"
$STORM_ORIGIN_CMD >"$TMP/origin-storm.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_STORM_ORIGIN/__origin/stats"

# ---------------------------------------------------------------- varnish
mkdir -p "$TMP/varnish"
sed "s/@ORIGIN_PORT@/$P_ORIGIN/" "$HERE/varnish.vcl" >"$TMP/varnish/bench.vcl"
chmod 644 "$TMP/varnish/bench.vcl"
VARNISH_CMD="varnishd -F -n $TMP/varnish/work -a 127.0.0.1:$P_VARNISH -f $TMP/varnish/bench.vcl -s malloc,2G -T none"
$VARNISH_CMD >"$TMP/varnish.log" 2>&1 &
PIDS+=($!); VARNISH_PID=$!

export BIN SAMPLE TMP PREFIX WARM_PREFIX STORM_PREFIX MYSQL_URL ORIGIN_PID WG_PID VARNISH_PID
export P_ORIGIN P_WG P_ADMIN P_NGINX P_VARNISH P_STORM_ORIGIN P_STORM_WG P_STORM_ADMIN P_STORM_NGINX P_STORM_VARNISH
export SEED_CMD ORIGIN_CMD WG_CMD VARNISH_CMD STORM_SEED_CMD STORM_ORIGIN_CMD ROOT HERE T0
export NGINX_CONF="$TMP/nginx/nginx.conf" WWW="$TMP/www"

# nginx serves files from $WWW; the Python driver fills it with the exact gzip bytes fetched from
# wardgate once wardgate is warm (nginx opens files per request, so it can start now).
mkdir -p "$WWW" "$TMP/nginx/logs" "$TMP/nginx/tmp"
echo '{}' >"$WWW/ping.json"
sed -e "s#@PORT@#$P_NGINX#" -e "s#@WWW@#$WWW#" -e "s#@DIR@#$TMP/nginx#" "$HERE/nginx.conf" >"$NGINX_CONF"
export NGINX_CMD="nginx -p $TMP/nginx/ -e $TMP/nginx/logs/error.log -c $NGINX_CONF"
$NGINX_CMD >"$TMP/nginx.log" 2>&1 &
PIDS+=($!); export NGINX_PID=$!
wait_http "http://127.0.0.1:$P_NGINX/ping.json"

wait_http "http://127.0.0.1:$P_VARNISH/open/volunteer/states" 200
# Varnish's access log, as operators run it: varnishncsa beside varnishd
export VARNISHNCSA_CMD="varnishncsa -n $TMP/varnish/work -w $TMP/varnish/access.log"
$VARNISHNCSA_CMD >"$TMP/varnishncsa.log" 2>&1 &
PIDS+=($!); export VARNISHNCSA_PID=$!

log "services up: origin :$P_ORIGIN wardgate :$P_WG (admin :$P_ADMIN) varnish :$P_VARNISH nginx :$P_NGINX (after bytes are fetched), storm origin :$P_STORM_ORIGIN"
PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/bench.py"
log "done in $(( $(date +%s) - T0 )) s; see bench/RESULTS.md, bench/*.svg and bench/results.json"
