#!/usr/bin/env bash
# wardgate benchmark: wardgate vs nginx gzip_static (same bytes) vs Varnish vs the uncached origin.
#
#   bench/run.sh            # 100 wards x 10,000 voters (default, < 10 min once tools are installed)
#   bench/run.sh --quick    # 10 wards x 10,000 voters, shorter points
#
# Env to scale / tune: WARDS, VOTERS, DURATION (s per point), WARMUP (s), CONNS, RATES
# (comma list of offered req/s for the sweep), PORT_BASE (default 18100), BENCH_DB.
# Everything runs on 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  : "${WARDS:=10}" "${VOTERS:=10000}" "${DURATION:=5}" "${WARMUP:=1}" "${RATES:=1000,2750,5000}"
else
  : "${WARDS:=100}" "${VOTERS:=10000}" "${DURATION:=8}" "${WARMUP:=2}" "${RATES:=1000,2750,4000,5000,7500,10000}"
fi
: "${CONNS:=64}" "${PORT_BASE:=18100}" "${BENCH_DB:=wardgate_bench}"
export WARDS VOTERS DURATION WARMUP RATES CONNS QUICK

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
if [ ! -x "$BIN" ] || [ ! -x "$SAMPLE" ] || [ -n "$(find "$ROOT/crates" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" -print -quit 2>/dev/null)" ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi

# ---------------------------------------------------------------- temp dir, cleanup
TMP="$(mktemp -d /tmp/wardgate-bench.XXXXXX)"
chmod 755 "$TMP"   # nginx workers (nobody) and varnish (vcache) read below it
PIDS=()
PREFIX="bench-$$"
cleanup() {
  local rc=$?
  set +e
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[$i]}" 2>/dev/null; done
  [ -f "$TMP/nginx/nginx.pid" ] && kill "$(cat "$TMP/nginx/nginx.pid" 2>/dev/null)" 2>/dev/null
  sleep 1
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill -9 "${PIDS[$i]}" 2>/dev/null; done
  wait 2>/dev/null
  # drop this run's Redis keys
  for p in "$PREFIX" "bench-warm-$$"; do
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$p*" 2>/dev/null \
      | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
  log "stopped everything (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

P_ORIGIN=$((PORT_BASE+0)); P_WG=$((PORT_BASE+1)); P_ADMIN=$((PORT_BASE+2))
P_NGINX=$((PORT_BASE+3)); P_VARNISH=$((PORT_BASE+4))
for p in $P_ORIGIN $P_WG $P_ADMIN $P_NGINX $P_VARNISH; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p busy; set PORT_BASE" >&2; exit 1; fi
done
MYSQL_URL="mysql://root@127.0.0.1:3306/$BENCH_DB"

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

# ---------------------------------------------------------------- origin + wardgate
ORIGIN_CMD="$SAMPLE serve --mysql-url $MYSQL_URL --listen 127.0.0.1:$P_ORIGIN"
$ORIGIN_CMD >"$TMP/origin.log" 2>&1 &
PIDS+=($!); ORIGIN_PID=$!
wait_http "http://127.0.0.1:$P_ORIGIN/__origin/stats"

WG_CMD="$BIN serve --listen 127.0.0.1:$P_WG --admin-listen 127.0.0.1:$P_ADMIN --upstream http://127.0.0.1:$P_ORIGIN --redis-url redis://127.0.0.1:6379/ --redis-prefix $PREFIX --rate-limit downloads=1000000/s:1000000 --rate-limit master=1000000/s:1000000 --log-format json --access-log-sample 0"
$WG_CMD >"$TMP/wardgate.log" 2>&1 &
PIDS+=($!); WG_PID=$!
wait_http "http://127.0.0.1:$P_ADMIN/metrics"

# ---------------------------------------------------------------- varnish
mkdir -p "$TMP/varnish"
sed "s/@ORIGIN_PORT@/$P_ORIGIN/" "$HERE/varnish.vcl" >"$TMP/varnish/bench.vcl"
chmod 644 "$TMP/varnish/bench.vcl"
VARNISH_CMD="varnishd -F -n $TMP/varnish/work -a 127.0.0.1:$P_VARNISH -f $TMP/varnish/bench.vcl -s malloc,2G -T none"
$VARNISH_CMD >"$TMP/varnish.log" 2>&1 &
PIDS+=($!); VARNISH_PID=$!

export BIN TMP PREFIX MYSQL_URL ORIGIN_PID WG_PID VARNISH_PID P_ORIGIN P_WG P_ADMIN P_NGINX P_VARNISH
export SEED_CMD ORIGIN_CMD WG_CMD VARNISH_CMD ROOT HERE
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

log "services up: origin :$P_ORIGIN wardgate :$P_WG (admin :$P_ADMIN) varnish :$P_VARNISH nginx :$P_NGINX (after bytes are fetched)"
python3 "$HERE/bench.py"
log "done in $(( $(date +%s) - T0 )) s; see bench/RESULTS.md and bench/latency.svg"
