#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) in build-fuzz with clang and runs each one:
# first on its saved regressions (tests/fuzz/regressions/<target>/), then for
# POLYPLUG_FUZZ_SECONDS (default 60) seconds from a scratch copy of its seed corpus
# (tests/fuzz/corpus/<target>/; the source tree is never written).
#
#   tools/run-fuzz.sh [target...]      default: every target
#
# Exits non-zero when an input crashes, leaks, times out or runs out of memory; the input is
# printed, and kept in the scratch directory (the path is printed). Make it a regression:
# copy it into tests/fuzz/regressions/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${POLYPLUG_FUZZ_SECONDS:-60}
jobs=$(nproc)
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(manifest_fuzzer request_fuzzer); fi

# POLYPLUG_FUZZ_BUILD_DIR: a tree already configured with clang and -DPOLYPLUG_FUZZ=ON (the
# test command's build-asan): only the fuzz targets are (re)built there. Unset: build-fuzz,
# configured here. The tests are on (tests/CMakeLists.txt adds tests/fuzz, and the request
# fuzzer serves the test bundles); the examples stay on because tests/host and tests/client
# refer to their targets at configure time.
build=${POLYPLUG_FUZZ_BUILD_DIR:-build-fuzz}
if [[ -z ${POLYPLUG_FUZZ_BUILD_DIR:-} ]]; then
  echo "== ${build}: configure"
  CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S . -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOLYPLUG_FUZZ=ON -DPOLYPLUG_SANITIZE= >/dev/null
elif ! grep -q '^POLYPLUG_FUZZ:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "run-fuzz.sh: $build is not configured with -DPOLYPLUG_FUZZ=ON (and clang)" >&2
  exit 2
fi
echo "== ${build}: build ${targets[*]}"
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

scratch=$(mktemp -d "${TMPDIR:-/tmp}/polyplug-fuzz.XXXXXX")
failed=()
for target in "${targets[@]}"; do
  binary=$PWD/$build/tests/fuzz/$target
  work=$scratch/$target
  mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"

  echo "== ${target}: regressions"
  if ! tests/fuzz/replay.sh "$binary" "tests/fuzz/regressions/$target" >"$work/regressions.log" 2>&1; then
    tail -n 60 "$work/regressions.log"
    echo "!! ${target}: a saved regression input fails again (log: $work/regressions.log)"
    failed+=("$target")
    continue
  fi

  echo "== ${target}: fuzzing for ${seconds}s"
  cp -R "tests/fuzz/corpus/$target/." "$work/corpus/"
  rc=0
  (cd "$work" && TMPDIR=$work/tmp "$binary" -max_total_time="$seconds" -timeout=30 \
     -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/artifacts/" corpus \
     >"$work/fuzz.log" 2>&1) || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$work/fuzz.log" || true
  artifacts=$(find "$work/artifacts" -type f | sort)
  if ((rc != 0)) || [[ -n $artifacts ]]; then
    tail -n 80 "$work/fuzz.log"
    echo "!! ${target}: exit status ${rc}; full log: $work/fuzz.log"
    for a in $artifacts; do
      echo "!! ${target}: failing input: $a"
      echo "   keep it as a regression: cp '$a' tests/fuzz/regressions/${target}/"
    done
    failed+=("$target")
  fi
done

if ((${#failed[@]} > 0)); then
  echo "== FAILED: ${failed[*]} (scratch kept: $scratch)"
  exit 1
fi
rm -rf "$scratch"
echo "== all fuzz targets passed (${targets[*]}, ${seconds}s each)"
