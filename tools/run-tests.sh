#!/usr/bin/env bash
# Every test: installs what is missing, builds, and runs the suite under ASan+UBSan, the core
# suite under TSan, then the whole suite in a plain build. Output ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
jobs=$(nproc)

build_and_test() {  # <build dir> <sanitizer> <ctest label regex> <build the host: ON|OFF>
  local dir=$1 sanitize=$2 labels=$3 host=$4
  echo "== ${dir}: build (sanitizer: ${sanitize:-none}, host: ${host})"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOLYPLUG_SANITIZE="$sanitize" \
    -DPOLYPLUG_BUILD_HOST="$host" >/dev/null
  cmake --build "$dir" -j "$jobs"
  echo "== ${dir}: test"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" -L "$labels"
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

# Debian's gRPC and Abseil are not built for TSan, which then reports races inside them that
# it cannot see the synchronisation of; the TSan run covers the core (no gRPC) only.
build_and_test build-asan address 'unit|integration' ON
build_and_test build-tsan thread 'unit|integration' OFF
# libFuzzer (clang): replays the saved crash inputs, then fuzzes each target for
# POLYPLUG_FUZZ_SECONDS (60 by default).
echo "== build-fuzz: fuzz"
tools/run-fuzz.sh
build_and_test build "" '.*' ON
