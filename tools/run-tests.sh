#!/usr/bin/env bash
# Every test: installs what is missing, builds, and runs the suite under ASan+UBSan (clang;
# the same tree builds the libFuzzer targets), the core suite under TSan, the fuzz targets,
# then the whole suite in a plain build (gcc). Each stage says how long it took; the output
# ends with ctest's summary. docs/DEVELOPING.md has the times and the faster inner loops.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
jobs=$(nproc)
started=$SECONDS
stage_started=$SECONDS

# Prints how long the stage that just ended took, and the total so far.
stage_done() {  # <stage name>
  local now=$SECONDS
  printf '== %s took %dm%02ds (total %dm%02ds)\n' "$1" $(((now - stage_started) / 60)) \
    $(((now - stage_started) % 60)) $(((now - started) / 60)) $(((now - started) % 60))
  stage_started=$now
}

build() {  # <build dir> <cmake options>...
  local dir=$1
  shift
  echo "== ${dir}: build ($*)"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  stage_done "${dir}: build"
}

run_tests() {  # <build dir> <ctest label regex>
  echo "== $1: test"
  ctest --test-dir "$1" --output-on-failure -j "$jobs" -L "$2"
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

# ASan+UBSan with clang, which also builds the fuzz targets (POLYPLUG_FUZZ) in this tree
# instead of a tree of their own. Tests labelled slow run only in the plain build.
CC=clang CXX=clang++ build build-asan -DPOLYPLUG_SANITIZE=address -DPOLYPLUG_FUZZ=ON \
  -DPOLYPLUG_BUILD_HOST=ON
run_tests build-asan 'unit|integration'
stage_done "build-asan: test"

# Debian's gRPC and Abseil are not built for TSan, which then reports races inside them that
# it cannot see the synchronisation of; the TSan run covers the core (no gRPC) only.
build build-tsan -DPOLYPLUG_SANITIZE=thread -DPOLYPLUG_BUILD_HOST=OFF -DPOLYPLUG_FUZZ=OFF
run_tests build-tsan 'unit|integration'
stage_done "build-tsan: test"

# libFuzzer: replays the saved crash inputs, then fuzzes each target for
# POLYPLUG_FUZZ_SECONDS (60 by default), with the targets build-asan built.
echo "== build-asan: fuzz"
POLYPLUG_FUZZ_BUILD_DIR=build-asan tools/run-fuzz.sh
stage_done "build-asan: fuzz"

# Line tables (-g1) instead of full debug information: a backtrace still names files and
# lines, and gcc spends about a third less time on the tree. The Python client's pytest
# suites (label python) run here only: they test the client, not the host's memory.
debug_info="-O2 -g1 -DNDEBUG"
build build -DPOLYPLUG_SANITIZE= -DPOLYPLUG_BUILD_HOST=ON -DPOLYPLUG_FUZZ=OFF \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$debug_info" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$debug_info"
run_tests build '.*'
