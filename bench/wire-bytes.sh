#!/usr/bin/env bash
# Wire bytes per answer kind: what wardgate sends a gzip client, against one whole-stream
# `gzip -6` of the same JSON (what nginx gzip_static would send), on real roll shapes.
#
#   bench/wire-bytes.sh                 # 10,000-voter wards, per-booth and ward-wide serials
#
# Env: VOTERS (per ward, default 10000), PORT_BASE (default 18300).
# Runs the release binaries (built if missing) on 127.0.0.1 and stops what it started.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
: "${VOTERS:=10000}" "${PORT_BASE:=18300}"
BIN="$ROOT/target/release/wardgate"
SAMPLE="$ROOT/target/release/wardgate-sample"
if [ ! -x "$BIN" ] || [ ! -x "$SAMPLE" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi
TMP="$(mktemp -d /tmp/wardgate-wire.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_http() {
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not answering: $1" >&2
  return 1
}

BASE="state=Karnataka&assemblyNo=150&wardNo=1"
declare -A KINDS=(
  [full]="$BASE&date=-1&boothNos=-1"
  [booth]="$BASE&date=-1&boothNos=3"
  [page-aligned]="$BASE&date=-1&boothNos=-1&page=1&size=1000"
  [page-unaligned]="$BASE&date=-1&boothNos=-1&page=3&size=700"
)

printf '%-10s %-15s %10s %10s %10s %7s\n' serials answer identity gzip-6 wardgate ratio
port=$PORT_BASE
for serials in per-booth ward-wide; do
  o=$port; w=$((port + 1)); a=$((port + 2)); port=$((port + 3))
  "$SAMPLE" serve --memory --wards 1 --voters-per-ward "$VOTERS" --serials "$serials" \
    --listen "127.0.0.1:$o" >"$TMP/origin-$serials.log" 2>&1 &
  PIDS+=($!)
  "$BIN" serve --listen "127.0.0.1:$w" --admin-listen "127.0.0.1:$a" \
    --upstream "http://127.0.0.1:$o" --rate-limit downloads=100000/s:100000 \
    >"$TMP/wardgate-$serials.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$a/healthz"
  wait_http "http://127.0.0.1:$o/open/volunteer/citizens?${KINDS[full]}"
  for kind in full booth page-aligned page-unaligned; do
    q="${KINDS[$kind]}"
    curl -sf "http://127.0.0.1:$o/open/volunteer/citizens?$q" -o "$TMP/origin.json"
    # Twice: the first answer builds (and derives); the second is the hit every client gets.
    for _ in 1 2; do
      curl -sf -H 'accept-encoding: gzip' "http://127.0.0.1:$w/open/volunteer/citizens?$q" -o "$TMP/wg.gz"
    done
    if ! gzip -dc "$TMP/wg.gz" | cmp -s - "$TMP/origin.json"; then
      echo "$serials $kind: wardgate's answer differs from the origin's" >&2
      exit 1
    fi
    id=$(wc -c <"$TMP/origin.json")
    g6=$(gzip -6 -c "$TMP/origin.json" | wc -c)
    wg=$(wc -c <"$TMP/wg.gz")
    printf '%-10s %-15s %10d %10d %10d %7s\n' "$serials" "$kind" "$id" "$g6" "$wg" \
      "$(awk -v a="$wg" -v b="$g6" 'BEGIN { printf "%.3f", a / b }')"
  done
done
