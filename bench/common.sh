# Shared by the bench scripts (sourced, after they set HERE and ROOT): the release binaries,
# the processes a script started, and waiting for a listener.

BIN="${BIN:-$ROOT/target/release/wardgate}"
SAMPLE="$ROOT/target/release/wardgate-sample"
if [ ! -x "$BIN" ] || [ ! -x "$SAMPLE" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi

# PIDs of the processes this script started; kill_started stops those and nothing else.
PIDS=()
kill_started() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}

# Waits until URL $1 answers 2xx, for up to $2 tenths of a second (default 100).
wait_http() {
  for _ in $(seq 1 "${2:-100}"); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not answering: $1" >&2
  return 1
}
