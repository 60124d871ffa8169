#!/usr/bin/env bash
# Fuzzes every parser of stored or received bytes (tests/fuzz/) with
# libFuzzer under ASan + UBSan, SECONDS each, starting from the committed
# seed corpora. Builds with clang in build-fuzz/. New inputs go to
# build-fuzz/corpus/<target>/ (not into the repository); a crash leaves its
# input in build-fuzz/crashes/<target>/ and makes the script exit 1. Add
# such an input to tests/fuzz/corpus/<target>/ with the fix: the normal
# build replays every corpus file as a CTest test.
# Usage: tools/fuzz.sh SECONDS [TARGET...]     (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: tools/fuzz.sh SECONDS [TARGET...]}
shift
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DGNOMON_FUZZ=ON -DBUILD_TESTING=OFF -DGNOMON_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz --target fuzz_all
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for d in tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
failed=() runs=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t" "build-fuzz/crashes/$t"
  # -malloc_limit_mb: one allocation over 512 MiB is a finding (a length
  # field trusted before it was checked), not just a slow input.
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     "build-fuzz/tests/fuzz/fuzz_$t" "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" \
       -max_total_time="$secs" -malloc_limit_mb=512 -rss_limit_mb=2048 -timeout=10 \
       -artifact_prefix="build-fuzz/crashes/$t/" -print_final_stats=1 \
       >"build-fuzz/$t.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "build-fuzz/$t.log" | grep -o '[0-9]*$' || echo 0)
    echo "fuzz_$t: ok, $runs runs in ${secs} s, corpus $(ls "build-fuzz/corpus/$t" | wc -l) inputs"
  else
    echo "fuzz_$t: FAILED (log build-fuzz/$t.log, inputs in build-fuzz/crashes/$t/)"
    grep -m3 -E 'ERROR|SUMMARY|runtime error' "build-fuzz/$t.log" || true
    failed+=("$t")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "crashes in: ${failed[*]}"; exit 1; }
