#!/usr/bin/env bash
# Builds gnomon and runs the whole test suite: unit, engine and end-to-end
# tests (the loop-device ones need root and skip elsewhere, saying why), then
# the unit and engine suites again under AddressSanitizer + UBSan, then every
# fuzz target for a few seconds (tools/fuzz.sh). The S3 tests run against a
# real Ceph RADOS Gateway that this script starts (tools/rgw.sh) and stops.
# Usage: tools/test.sh            (from anywhere; installs missing packages as root)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/rgw.sh install
jobs=$(nproc)

# A real S3 store for the S3 tests (tests/s3_test.cc): a Ceph RADOS Gateway
# on loopback, two gateways over one cluster, stopped however this script ends.
rgw_dir=$(mktemp -d /tmp/gnomon-rgw.XXXXXXXX)
rmdir "$rgw_dir"
trap 'bash tools/rgw.sh stop "$rgw_dir" >/dev/null 2>&1 || true' EXIT
rgw_env=$(bash tools/rgw.sh start "$rgw_dir" --gateways 2)
eval "$rgw_env"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
export GNOMON_TEST_S3_ENDPOINT=$GNOMON_S3_ENDPOINT GNOMON_TEST_S3_ENDPOINT2=$GNOMON_S3_ENDPOINT2
export GNOMON_TEST_RGW_DIR=$rgw_dir

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest -j "$jobs" --output-on-failure)

if [ "${GNOMON_SKIP_SANITIZERS:-0}" != 1 ]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DGNOMON_SANITIZE=ON \
        -DGNOMON_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j "$jobs"
  # Fewer random kills and every tenth injected fault only (they are there
  # to find memory errors; the first pass ran them all), and not the package tests or the
  # boot tests (no code of ours runs there that the first pass and DiskTest do not run).
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     GNOMON_PRUNE_KILL_RUNS=10 GNOMON_KILL_RUNS=4 GNOMON_FAULT_STRIDE=10 \
     ctest -j "$jobs" --output-on-failure -E '^(PackageTest|SystemdUnitsTest|DiskBootTest\..*)$')
fi

# A bounded fuzzing run of every parser (tools/fuzz.sh runs as long as asked).
if [ "${GNOMON_SKIP_FUZZ:-0}" != 1 ]; then
  bash tools/fuzz.sh "${GNOMON_FUZZ_SECONDS:-5}"
fi
