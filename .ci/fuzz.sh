#!/usr/bin/env bash
# Runs each cargo-fuzz target under fuzz/ for a bounded time, when a nightly
# toolchain is installed. New corpus entries go to fuzz/corpus/<target>/ (not
# kept); what a target once crashed on belongs in fuzz/regressions/<target>/,
# which seeds every run and is replayed on stable by tests/it/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
cargo_fuzz_version=0.13.2

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "nightly toolchain not installed: fuzz targets not run"
  exit 0
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
  echo "-- fuzz target $target for ${seconds} s"
  mkdir -p "fuzz/corpus/$target"
  if ! cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" "fuzz/regressions/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1536 -max_len=65536 \
      -print_final_stats=1 2>"target/fuzz-$target.log"; then
    tail -n 60 "target/fuzz-$target.log" >&2
    echo "fuzz target $target failed: copy its input from fuzz/artifacts/$target/ into fuzz/regressions/$target/ and fix" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "target/fuzz-$target.log" || true
done
