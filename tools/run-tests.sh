#!/usr/bin/env bash
# Every test: installs what is missing, builds, and runs the whole suite, then the core
# suite again under ASan+UBSan and under TSan. Output ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
jobs=$(nproc)

build_and_test() {  # <build dir> <sanitizer> <ctest label regex>
  local dir=$1 sanitize=$2 labels=$3
  echo "== ${dir}: build (sanitizer: ${sanitize:-none})"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOLYPLUG_SANITIZE="$sanitize" >/dev/null
  cmake --build "$dir" -j "$jobs"
  echo "== ${dir}: test"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" -L "$labels"
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

build_and_test build-asan address 'unit|integration'
build_and_test build-tsan thread 'unit|integration'
build_and_test build "" '.*'
