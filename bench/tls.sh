#!/usr/bin/env bash
# What TLS costs at the edge, and what a Redis Cluster costs against a single Redis, one run:
#   - page hits (1,000 rows, gzip) and full-ward hits (gzip) over HTTPS, wardgate terminating
#     TLS itself (rustls, `tls.listen` beside the plain `listen`) against nginx with OpenSSL
#     (`listen … ssl`, the same certificate, `ssl_session_cache shared:SSL:10m`) serving the
#     same bytes by gzip_static, and the same two over plain HTTP, same processes, same run;
#   - wardgate served from Redis (L2) on a single redis-server against a 3-master Redis
#     Cluster: a cold instance's first read of every ward, full-ward hits with an L1 too small
#     to hold them (every answer loaded from Redis), and write-syncs (the write path: backend,
#     cheap read, patch stored in Redis, watermark published).
# Access logs on for every system; medians of REPEAT repetitions, order alternating. Writes
# bench/TLS.md and the "TLS and Redis Cluster" section of bench/RESULTS.md.
#
#   bench/tls.sh            # 100 wards x 10,000 voters, REPEAT=3 (~12 min)
#   bench/tls.sh --quick    # 10 wards, REPEAT=1, 4 s points (~3 min; for trying it out)
#
# Env: WARDS, VOTERS, DURATION (s per point), WARMUP (s), CONNS (default 64), REPEAT (default
# 3), COLD_CONC (concurrent first reads of the cold instance, default 16), WRITES (write-syncs
# per repetition and Redis, default 20), PORT_BASE (default 18600; uses PORT_BASE..+19),
# BENCH_DB (default wardgate_bench_tls, dropped at the end), QUIET_MAX (s to wait for a quiet
# machine before each repetition, default 1800), KEEP_TMP=1 keeps the temp dir (logs),
# NO_BUILD=1 uses target/release as it is. Everything runs on 127.0.0.1 with Redis instances
# of its own (never the machine's 6379); everything started here is stopped on exit, by PID.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n 2,24p "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  : "${WARDS:=10}" "${VOTERS:=10000}" "${DURATION:=4}" "${WARMUP:=1}" "${REPEAT:=1}"
else
  : "${WARDS:=100}" "${VOTERS:=10000}" "${DURATION:=8}" "${WARMUP:=2}" "${REPEAT:=3}"
fi
: "${CONNS:=64}" "${PORT_BASE:=18600}" "${BENCH_DB:=wardgate_bench_tls}" "${COLD_CONC:=16}"
: "${WRITES:=20}" "${QUIET_MAX:=1800}"
export WARDS VOTERS DURATION WARMUP CONNS REPEAT QUICK BENCH_DB COLD_CONC WRITES QUIET_MAX

T0=$(date +%s)
log() { printf '[tls %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

# ---------------------------------------------------------------- tools
missing=()
for t in nginx wrk curl openssl redis-server redis-cli mysql python3; do
  command -v "$t" >/dev/null || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools: ${missing[*]} (bench/run.sh installs them: nginx-light wrk curl redis-tools mariadb-client)" >&2
  exit 1
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- binaries (as bench/run.sh)
BIN="$ROOT/target/release/wardgate"
SAMPLE="$ROOT/target/release/wardgate-sample"
# rebuilt when missing or older than the sources; NO_BUILD=1 uses the binaries as they are
if [ ! -x "$BIN" ] || [ ! -x "$SAMPLE" ] || { [ "${NO_BUILD:-0}" != 1 ] && [ -n "$(find "$ROOT/crates" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" -print -quit 2>/dev/null)" ]; }; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi

# ---------------------------------------------------------------- ports, temp dir, cleanup
P_ORIGIN=$PORT_BASE
P_WG=$((PORT_BASE+1)); P_WG_TLS=$((PORT_BASE+2)); P_ADMIN=$((PORT_BASE+3))
P_NGINX=$((PORT_BASE+4)); P_NGINX_TLS=$((PORT_BASE+5))
P_REDIS=$((PORT_BASE+6))
P_CL1=$((PORT_BASE+7)); P_CL2=$((PORT_BASE+8)); P_CL3=$((PORT_BASE+9))
P_L2=$((PORT_BASE+10)); P_L2_ADMIN=$((PORT_BASE+11))
# the Cluster's bus ports (else port + 10000)
P_BUS1=$((PORT_BASE+17)); P_BUS2=$((PORT_BASE+18)); P_BUS3=$((PORT_BASE+19))
for p in $P_ORIGIN $P_WG $P_WG_TLS $P_ADMIN $P_NGINX $P_NGINX_TLS $P_REDIS $P_CL1 $P_CL2 $P_CL3 \
  $P_L2 $P_L2_ADMIN $P_BUS1 $P_BUS2 $P_BUS3; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p busy; set PORT_BASE" >&2; exit 1; fi
done

TMP="$(mktemp -d /tmp/wardgate-tls.XXXXXX)"
chmod 755 "$TMP"   # nginx workers (nobody) read below it
PIDS=()
DB_CREATED=0
cleanup() {
  local rc=$?
  set +e
  # tls.py's own instances (restarted per repetition) if it did not stop them
  [ -f "$TMP/started.pids" ] && while read -r p; do kill "$p" 2>/dev/null; done <"$TMP/started.pids"
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[$i]}" 2>/dev/null; done
  sleep 1
  [ -f "$TMP/started.pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null; done <"$TMP/started.pids"
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill -9 "${PIDS[$i]}" 2>/dev/null; done
  wait 2>/dev/null
  [ "$DB_CREATED" = 1 ] && mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`"
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
  log "stopped everything (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url [tries]: 2xx within tries tenths of a second (https: the run's own CA)
  for _ in $(seq 1 "${2:-100}"); do
    curl -sf --cacert "$TMP/tls/cert.pem" -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "not up: $1" >&2; return 1
}

# ---------------------------------------------------------------- certificate
mkdir -p "$TMP/tls"
CERT_CMD="openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=wardgate-bench -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout $TMP/tls/key.pem -out $TMP/tls/cert.pem"
$CERT_CMD 2>"$TMP/tls/openssl.log"
chmod 644 "$TMP/tls/key.pem"   # nginx reads it as root at start; harmless in a throwaway dir

# ---------------------------------------------------------------- Redis: one node, and a Cluster
REDIS_COMMON=(--bind 127.0.0.1 --save '' --appendonly no --daemonize no)
redis-server --port "$P_REDIS" "${REDIS_COMMON[@]}" --dir "$TMP" >"$TMP/redis-single.log" 2>&1 &
PIDS+=($!); export REDIS_SINGLE_PID=$!
CL_PIDS=()
for i in 1 2 3; do
  port_var="P_CL$i"; bus_var="P_BUS$i"
  mkdir -p "$TMP/cluster-$i"
  redis-server --port "${!port_var}" "${REDIS_COMMON[@]}" --dir "$TMP/cluster-$i" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-port "${!bus_var}" \
    >"$TMP/redis-cluster-$i.log" 2>&1 &
  PIDS+=($!); CL_PIDS+=($!)
done
export REDIS_CLUSTER_PIDS="${CL_PIDS[*]}"
for p in $P_REDIS $P_CL1 $P_CL2 $P_CL3; do
  for _ in $(seq 1 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
CLUSTER_CMD="redis-cli --cluster create 127.0.0.1:$P_CL1 127.0.0.1:$P_CL2 127.0.0.1:$P_CL3 --cluster-replicas 0 --cluster-yes"
$CLUSTER_CMD >"$TMP/cluster-create.log" 2>&1
for _ in $(seq 1 100); do
  ok=0
  for p in $P_CL1 $P_CL2 $P_CL3; do
    redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && ok=$((ok+1))
  done
  [ "$ok" = 3 ] && break
  sleep 0.2
done
[ "$ok" = 3 ] || { echo "Redis Cluster not ok; see $TMP/cluster-create.log" >&2; exit 1; }
REDIS_SINGLE_URL="redis://127.0.0.1:$P_REDIS/"
REDIS_CLUSTER_URL="redis://127.0.0.1:$P_CL1/,redis://127.0.0.1:$P_CL2/,redis://127.0.0.1:$P_CL3/"
log "Redis: single :$P_REDIS, Cluster :$P_CL1 :$P_CL2 :$P_CL3 (3 masters, no replicas)"

# ---------------------------------------------------------------- seed, origin
# WARDS wards for the reads, and one more (ward WARDS+1) that only the write-syncs touch
MYSQL_URL="mysql://root@127.0.0.1:3306/$BENCH_DB"
log "seed $((WARDS+1)) wards x $VOTERS voters into $BENCH_DB"
mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`"
DB_CREATED=1
SEED_CMD="$SAMPLE seed --mysql-url $MYSQL_URL --state Karnataka --assembly 150 --wards $((WARDS+1)) --voters-per-ward $VOTERS"
$SEED_CMD >"$TMP/seed.log" 2>&1
tail -n1 "$TMP/seed.log" >&2
ORIGIN_CMD="$SAMPLE serve --mysql-url $MYSQL_URL --listen 127.0.0.1:$P_ORIGIN"
$ORIGIN_CMD >"$TMP/origin.log" 2>&1 &
PIDS+=($!); export ORIGIN_PID=$!
wait_http "http://127.0.0.1:$P_ORIGIN/__origin/stats"

# ---------------------------------------------------------------- warm both Redis setups
PREFIX="tlsbench-$$"
WARM_SINGLE_CMD="$BIN warm --state Karnataka --assembly 150 --mysql-url $MYSQL_URL --upstream http://127.0.0.1:$P_ORIGIN --redis-url $REDIS_SINGLE_URL --redis-prefix $PREFIX --snapshot-max-age 1h --concurrency 4"
WARM_CLUSTER_CMD="$BIN warm --state Karnataka --assembly 150 --mysql-url $MYSQL_URL --upstream http://127.0.0.1:$P_ORIGIN --redis-url $REDIS_CLUSTER_URL --redis-cluster --redis-prefix $PREFIX --snapshot-max-age 1h --concurrency 4"
log "warm the single Redis"
$WARM_SINGLE_CMD >"$TMP/warm-single.log" 2>&1 || { tail -n 20 "$TMP/warm-single.log" >&2; exit 1; }
tail -n1 "$TMP/warm-single.log" >&2
log "warm the Redis Cluster"
$WARM_CLUSTER_CMD >"$TMP/warm-cluster.log" 2>&1 || { tail -n 20 "$TMP/warm-cluster.log" >&2; exit 1; }
tail -n1 "$TMP/warm-cluster.log" >&2

# ---------------------------------------------------------------- wardgate (HTTP + HTTPS), nginx
RL="--rate-limit downloads=1000000/s:1000000 --rate-limit master=1000000/s:1000000 --rate-limit writes=1000000/s:1000000"
# --snapshot-max-age 1h: the hits compare serving the same stored bytes as nginx (bench/run.sh)
WG_CMD="$BIN serve --snapshot-max-age 1h --listen 127.0.0.1:$P_WG --tls-listen 127.0.0.1:$P_WG_TLS --tls-cert $TMP/tls/cert.pem --tls-key $TMP/tls/key.pem --admin-listen 127.0.0.1:$P_ADMIN --upstream http://127.0.0.1:$P_ORIGIN --redis-url $REDIS_SINGLE_URL --redis-prefix $PREFIX $RL --log-format json --access-log-sample 1"
# shellcheck disable=SC2086 # word splitting of the command line is meant
$WG_CMD >"$TMP/wardgate.log" 2>&1 &
PIDS+=($!); export WG_PID=$!
wait_http "http://127.0.0.1:$P_ADMIN/metrics"
wait_http "https://127.0.0.1:$P_WG_TLS/open/volunteer/states"

WWW="$TMP/www"
mkdir -p "$WWW" "$TMP/nginx/logs" "$TMP/nginx/tmp"
echo '{}' >"$WWW/ping.json"
NGINX_CONF="$TMP/nginx/nginx.conf"
sed -e "s#@PORT@#$P_NGINX#" -e "s#@TLS_PORT@#$P_NGINX_TLS#" -e "s#@WWW@#$WWW#" -e "s#@DIR@#$TMP/nginx#" \
  -e "s#@CERT@#$TMP/tls/cert.pem#" -e "s#@KEY@#$TMP/tls/key.pem#" "$HERE/nginx-tls.conf" >"$NGINX_CONF"
NGINX_CMD="nginx -p $TMP/nginx/ -e $TMP/nginx/logs/error.log -c $NGINX_CONF"
$NGINX_CMD >"$TMP/nginx.log" 2>&1 &
PIDS+=($!); export NGINX_PID=$!
wait_http "http://127.0.0.1:$P_NGINX/ping.json"
wait_http "https://127.0.0.1:$P_NGINX_TLS/ping.json"
log "services up: origin :$P_ORIGIN wardgate :$P_WG https :$P_WG_TLS (admin :$P_ADMIN) nginx :$P_NGINX https :$P_NGINX_TLS"

# benchlib reads the settings of bench/run.sh at import; the ones this bench has no use for
# (Varnish, the storm, the sweep) are given placeholders
export BIN SAMPLE TMP ROOT HERE WWW PREFIX MYSQL_URL T0
export P_ORIGIN P_WG P_WG_TLS P_ADMIN P_NGINX P_NGINX_TLS P_REDIS P_CL1 P_CL2 P_CL3 P_L2 P_L2_ADMIN
export REDIS_SINGLE_URL REDIS_CLUSTER_URL RL CERT="$TMP/tls/cert.pem"
export CERT_CMD SEED_CMD ORIGIN_CMD WG_CMD NGINX_CMD CLUSTER_CMD WARM_SINGLE_CMD WARM_CLUSTER_CMD
export STORM_DB="$BENCH_DB" RATES="" P_VARNISH=0 VARNISH_PID=0
export P_STORM_ORIGIN=0 P_STORM_WG=0 P_STORM_ADMIN=0 P_STORM_NGINX=0 P_STORM_VARNISH=0
PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/tls.py"
log "done in $(( $(date +%s) - T0 )) s; see bench/TLS.md"
