#!/usr/bin/env bash
# Fuzz wardgate's parameter wall (params + route) for a while.
#
#   fuzz/run.sh [SECONDS] [extra libFuzzer flags...]     # default 60 s
#
# Env: SANITIZER=none|address (default none: wardgate is #![forbid(unsafe_code)]),
#      JOBS=N (parallel libFuzzer workers via -fork=N).
# New corpus entries go to fuzz/corpus-run/params (git-ignored); the seeds in corpus/params stay as they are.
# A crash leaves its input in fuzz/artifacts/params/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a params fuzz/artifacts/params/crash-...
set -euo pipefail

secs="${1:-60}"
shift || true
cd "$(dirname "$0")"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz..." >&2
    cargo install cargo-fuzz
fi

# cargo-fuzz passes -Z flags (sanitizer coverage, -Zsanitizer) to rustc. On a stable toolchain
# RUSTC_BOOTSTRAP=1 lets them through; a nightly toolchain does not need it.
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

mkdir -p corpus-run/params
fork=()
if [[ -n "${JOBS:-}" ]]; then
    fork=("-fork=${JOBS}")
fi

exec cargo fuzz run --sanitizer "${SANITIZER:-none}" --debug-assertions params \
    corpus-run/params corpus/params -- \
    -max_total_time="${secs}" -max_len=4096 -timeout=5 -print_final_stats=1 \
    "${fork[@]}" "$@"
