#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 30) and
# fails if any of them crashes, panics, leaks past libFuzzer's limits or
# hangs on one input. Installs cargo-fuzz if it is missing.
#
#   scripts/fuzz.sh [SECONDS]
#
# FUZZ_BUILD=dev builds without optimizations (several times faster to
# compile, slower to run): what CI uses for its short smoke runs. The
# default optimized build is for long runs (BENCHMARKS.md).
#
# Stable toolchain only: cargo-fuzz passes nightly -Z flags, which stable
# rustc accepts under RUSTC_BOOTSTRAP=1. AddressSanitizer is used when the
# toolchain ships its runtime, otherwise plain coverage-guided fuzzing.
# The committed seeds in fuzz/corpus/<target>/ are read, never written: new
# inputs go to a scratch corpus. A crashing input lands in
# fuzz/artifacts/<target>/; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer <s> <target> <file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
if ls "$(rustc --print sysroot)/lib/rustlib/$host/lib/"librustc-*_rt.asan.a >/dev/null 2>&1; then
  sanitizer=address
else
  sanitizer=none
fi

profile=()
if [[ "${FUZZ_BUILD:-}" == dev ]]; then
  profile=(--dev)
fi

echo "== building fuzz targets (sanitizer: $sanitizer, ${FUZZ_BUILD:-optimized})"
cargo fuzz build "${profile[@]}" --sanitizer "$sanitizer"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in $(cargo fuzz list); do
  mkdir -p "fuzz/corpus/$target" "$scratch/$target"
  log="$scratch/$target.log"
  # -timeout: one input taking this long is a hang, and a failure.
  if cargo fuzz run "${profile[@]}" --sanitizer "$sanitizer" "$target" \
      "$scratch/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
    corpus="$(find "$scratch/$target" -type f | wc -l)"
    echo "fuzz: $target ok: ${execs:-?} executions in ${seconds}s, corpus grew to $corpus inputs"
  else
    echo "fuzz: $target FAILED:"
    # The panic or sanitizer report and the saved input, not the input dump.
    grep -E -A2 'panicked at|==ERROR|SUMMARY:|artifacts/' "$log" | cut -c1-300 | head -n 40 || true
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: all targets ok"
