#!/usr/bin/env bash
# The main job: installs what is missing, builds, stages the example bundles in a scratch
# bundle root, starts polyplug-host on them, and drives it over gRPC with
# polyplug-host-demo: watch the phases, rebuild greeter and reload it (shouter follows by
# cascade), break it and reload (FAILED, the previous version stays live). Then stops the
# host with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B "${POLYPLUG_BUILD_DIR:-build}" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "${POLYPLUG_BUILD_DIR:-build}" --target polyplug-host polyplug-host-demo polyplug_example_bundles

scratch=$(mktemp -d)
host_pid=""
cleanup() {
  if [[ -n "$host_pid" ]] && kill -0 "$host_pid" 2>/dev/null; then kill -TERM "$host_pid"; wait "$host_pid" || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT
mkdir -p "$scratch/bundles"
cp -r "${POLYPLUG_BUILD_DIR:-build}"/examples/bundles/greeter_v1 "$scratch/bundles/greeter"
cp -r "${POLYPLUG_BUILD_DIR:-build}"/examples/bundles/shouter "$scratch/bundles/shouter"

echo "== polyplug-host --listen unix:$scratch/host.sock --bundles $scratch/bundles"
"${POLYPLUG_BUILD_DIR:-build}"/host/polyplug-host --listen "unix:$scratch/host.sock" --bundles "$scratch/bundles" \
  --state-dir "$scratch/state" &
host_pid=$!
echo "== polyplug-host-demo"
"${POLYPLUG_BUILD_DIR:-build}"/examples/demo/polyplug-host-demo "unix:$scratch/host.sock" "$scratch/bundles/greeter" \
  "${POLYPLUG_BUILD_DIR:-build}"/examples/bundles/greeter_v2
echo "== stopping the host (SIGTERM)"
kill -TERM "$host_pid"
wait "$host_pid"
host_pid=""
echo "== host exited cleanly"
