#!/usr/bin/env bash
# Run every fuzz target for a fixed time, starting from (and adding to) the kept corpus in
# protocols/fuzz/corpus/<target>/, then minimise that corpus again with `cargo fuzz cmin`.
#
#   protocols/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET…]
#
# SECONDS_PER_TARGET defaults to 20; without TARGET every target of `cargo fuzz list` runs.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and libFuzzer's nightly flags: a nightly
# toolchain, or stable with RUSTC_BOOTSTRAP=1 (set here unless the caller set it). A crash stops
# the script with its input under protocols/fuzz/artifacts/<target>/ (reproduce with
# `cargo fuzz run <target> <file>`). FUZZ_CMIN=0 (CI) runs on a temporary copy of the corpus:
# the kept corpus is neither grown nor minimised, and the tree stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."   # protocols/

secs=${1:-20}
shift || true
export RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-1}

if ! cargo fuzz --help >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
  exit 2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  corpus="fuzz/corpus/$t"
  if [ "${FUZZ_CMIN:-1}" = 0 ]; then
    corpus=$(mktemp -d)
    cp -r "fuzz/corpus/$t/." "$corpus/"
  fi
  echo "==> $t: ${secs} s"
  log=$(mktemp)
  status=0
  cargo fuzz run "$t" "$corpus" -- -max_total_time="$secs" -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+.*DONE|Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ -n "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ]; then
    grep -E '==[0-9]+==|SUMMARY|deadly signal|panicked' "$log" | head -20 >&2 || true
    echo "$t: crash found, inputs in protocols/fuzz/artifacts/$t/" >&2
    exit 1
  fi
  if [ "$status" != 0 ]; then
    tail -30 "$log" >&2
    echo "$t: cargo fuzz run failed (exit $status)" >&2
    exit 1
  fi
  rm -f "$log"
  if [ "${FUZZ_CMIN:-1}" = 0 ]; then
    rm -rf "$corpus"
  else
    cargo fuzz cmin "$t" "fuzz/corpus/$t" >/dev/null 2>&1
  fi
  echo "$t: corpus $(ls "fuzz/corpus/$t" | wc -l) files, $(du -s --apparent-size --block-size=1K "fuzz/corpus/$t" | cut -f1) KiB"
done
