#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while: `fuzz/run.sh [seconds-per-target]` (default
# 300). Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written: libFuzzer adds
# the inputs it finds to the first corpus directory, which is fuzz/target/corpus/<target>
# (ignored by git, kept between runs) or, with FUZZ_TMP_CORPUS=1 (CI), a temporary one.
# A crash leaves its input in fuzz/artifacts/<target>/: fix the bug, add a unit test next
# to the code, and copy the input into the seed corpus.
#
# Environment: FUZZ_TARGETS (space-separated subset), FUZZ_SANITIZER (default address),
# FUZZ_CODEGEN_UNITS (default cargo-fuzz's 1; more builds faster, runs a little slower).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-300}"
sanitizer="${FUZZ_SANITIZER:-address}"
build=(--sanitizer "$sanitizer")
if [ -n "${FUZZ_CODEGEN_UNITS:-}" ]; then
  build+=(--codegen-units "$FUZZ_CODEGEN_UNITS")
fi
mkdir -p target
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo +nightly fuzz list | tr '\n' ' ')}"

echo "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
cargo +nightly fuzz build "${build[@]}"

failed=()
for t in "${targets[@]}"; do
  if [ "${FUZZ_TMP_CORPUS:-0}" = 1 ]; then
    work="$(mktemp -d)"
  else
    work="target/corpus/$t"
    mkdir -p "$work"
  fi
  echo "== fuzz $t for ${secs}s"
  if ! cargo +nightly fuzz run "${build[@]}" "$t" "$work" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    2>"target/$t.log"; then
    failed+=("$t")
    tail -n 60 "target/$t.log"
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "target/$t.log" || true
  if [ "${FUZZ_TMP_CORPUS:-0}" = 1 ]; then
    rm -rf "$work"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs under fuzz/artifacts/)"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets ran ${secs}s each, no crash"
