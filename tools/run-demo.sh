#!/usr/bin/env bash
# The main job: installs what is missing, builds, stages the example bundles in a scratch
# bundle root, starts polyplug-host on them, and drives it the two ways a user would:
# polyplugctl (the CLI for people and CI) and polyplug-host-demo (an application using
# libpolyplug_client: phase events, a live contract handle). greeter is rebuilt and
# reloaded (shouter follows by cascade), then broken and reloaded (FAILED, the previous
# version stays live). Then the host stops with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
build="${POLYPLUG_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target polyplug-host polyplugctl polyplug-host-demo polyplug_example_bundles

scratch=$(mktemp -d)
host_pid=""
cleanup() {
  if [[ -n "$host_pid" ]] && kill -0 "$host_pid" 2>/dev/null; then kill -TERM "$host_pid"; wait "$host_pid" || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT
mkdir -p "$scratch/bundles"
cp -r "$build"/examples/bundles/greeter_v1 "$scratch/bundles/greeter"
cp -r "$build"/examples/bundles/shouter "$scratch/bundles/shouter"
export POLYPLUG_HOST="unix:$scratch/host.sock"
ctl() {
  echo "\$ polyplugctl $*"
  "$build"/tools/polyplugctl "$@"
}

# --supervise: a bundle that crashed the host would be quarantined and the host restarted.
echo "== polyplug-host --supervise --listen $POLYPLUG_HOST --bundles $scratch/bundles"
"$build"/host/polyplug-host --supervise --listen "$POLYPLUG_HOST" --bundles "$scratch/bundles" \
  --state-dir "$scratch/state" &
host_pid=$!
# Wait for the host: health answers SERVING once it listens (exit code 3 until then).
for _ in $(seq 100); do
  if "$build"/tools/polyplugctl health --timeout 1s >/dev/null 2>&1; then break; fi
  sleep 0.1
done

echo "== polyplugctl"
ctl health
ctl info
ctl list bundles
ctl list contracts
ctl find example.greeter@1

echo
echo "== polyplug-host-demo (libpolyplug_client)"
"$build"/examples/client_app/polyplug-host-demo "$POLYPLUG_HOST" "$scratch/bundles/greeter" \
  "$build"/examples/bundles/greeter_v2

echo
echo "== polyplugctl after the demo: v2 is live, the broken rebuild was refused"
ctl watch --from 1 --count 8
ctl reload greeter || echo "(exit code $?: the artifact on disk is still the broken one)"
ctl find example.greeter@1

echo "== stopping the host (SIGTERM)"
kill -TERM "$host_pid"
wait "$host_pid"
host_pid=""
echo "== host exited cleanly"
