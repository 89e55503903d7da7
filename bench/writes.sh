#!/usr/bin/env bash
# What a write-sync costs the backend and Redis, before and after patching, same run:
# 20 write-syncs of one changed row each (the full-ward query installed apps send) and a
# 10-page paginated sync re-sending 3 changes with every page, on 10,000-row wards, through
#   - wardgate at BEFORE_REV (default af7c6a5: writes forwarded with the client's query, the
#     ward renewed whole after each),
#   - wardgate as built here (writes patch their ward),
#   - the backend alone (the anchor: every sync answered by the backend).
# Counted at the sample backend (rows and bytes it answered, whole-ward reads) and at a Redis of
# this run's own (bytes in and out); medians of per-write latency. Writes bench/WRITES.md and
# the "Writes" section of bench/RESULTS.md.
#
#   bench/writes.sh        # ~2 min, plus one release build of BEFORE_REV (~5 min, kept)
#
# Env: BEFORE_REV, VOTERS (default 10000), PORT_BASE (default 18300), BENCH_DB
# (default wardgate_bench_writes). Everything runs on 127.0.0.1 and is stopped on exit.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
: "${BEFORE_REV:=af7c6a5}" "${VOTERS:=10000}" "${PORT_BASE:=18300}" "${BENCH_DB:=wardgate_bench_writes}"
log() { printf '[writes] %s\n' "$*" >&2; }

(cd "$ROOT" && cargo build --release --quiet)
BEFORE_DIR="$ROOT/target/before-$BEFORE_REV"
if [ ! -x "$BEFORE_DIR/target/release/wardgate" ]; then
  log "building wardgate at $BEFORE_REV into $BEFORE_DIR (once)"
  rm -rf "$BEFORE_DIR"
  git -C "$ROOT" worktree add --detach -f "$BEFORE_DIR" "$BEFORE_REV" >/dev/null
  (cd "$BEFORE_DIR" && CARGO_TARGET_DIR="$BEFORE_DIR/target" cargo build --release --quiet --bin wardgate)
fi

TMP="$(mktemp -d /tmp/wardgate-writes.XXXXXX)"
PIDS=()
cleanup() {
  set +e
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[$i]}" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
P_ORIGIN=$PORT_BASE; P_REDIS=$((PORT_BASE+1)); P_WG=$((PORT_BASE+2)); P_ADMIN=$((PORT_BASE+3))
redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
MYSQL_URL="mysql://root@127.0.0.1:3306/$BENCH_DB"
log "seed 3 wards x $VOTERS voters into $BENCH_DB"
"$ROOT/target/release/wardgate-sample" seed --mysql-url "$MYSQL_URL" --state Karnataka \
  --assembly 150 --wards 3 --voters-per-ward "$VOTERS" >"$TMP/seed.log" 2>&1
"$ROOT/target/release/wardgate-sample" serve --mysql-url "$MYSQL_URL" \
  --listen "127.0.0.1:$P_ORIGIN" >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
export ROOT HERE TMP P_ORIGIN P_REDIS P_WG P_ADMIN VOTERS BEFORE_REV
export BEFORE_BIN="$BEFORE_DIR/target/release/wardgate" AFTER_BIN="$ROOT/target/release/wardgate"
PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/writes.py"
