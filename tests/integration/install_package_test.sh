#!/usr/bin/env bash
# Installs polyplug from the build tree into a scratch prefix, builds the external bundle
# example against the installed package and checks the bundle directory it produced, then
# builds the client example against the installed client package and runs it against a
# real polyplug-host.
# usage: install_package_test.sh <build dir> <source dir>
set -euo pipefail
build=$1
source=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$source/examples/external_bundle" -B "$scratch/ext" -G Ninja \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/ext" >/dev/null
bundle="$scratch/ext/hello"
test -f "$bundle/libhello.so" || { echo "FAIL: no libhello.so in $bundle"; exit 1; }
grep -qx 'id = 10161245983986674027' "$bundle/manifest.toml" ||
  { echo "FAIL: manifest id is not FNV-1a 64 of external-hello:"; cat "$bundle/manifest.toml"; exit 1; }
if readelf --dyn-syms -W "$bundle/libhello.so" | grep -q UNIQUE; then
  echo "FAIL: bundle has STB_GNU_UNIQUE symbols despite -fno-gnu-unique"; exit 1
fi
echo "PASS: external bundle built against the installed package"

# The client package: examples/client_app built as a project of its own against the
# installed polyplug_client, then run against a real polyplug-host from the build tree.
cmake -S "$source/examples/client_app" -B "$scratch/app" -G Ninja \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/app" >/dev/null
app="$scratch/app/polyplug-host-demo"
test -x "$app" || { echo "FAIL: no polyplug-host-demo built against the installed client"; exit 1; }
mkdir -p "$scratch/bundles"
cp -r "$build/examples/bundles/greeter_v1" "$scratch/bundles/greeter"
"$build/host/polyplug-host" --listen "unix:$scratch/host.sock" --bundles "$scratch/bundles" \
  --state-dir "$scratch/state" 2>"$scratch/host.log" &
host_pid=$!
trap 'kill -TERM "$host_pid" 2>/dev/null; wait "$host_pid" 2>/dev/null; rm -rf "$scratch"' EXIT
if ! "$app" "unix:$scratch/host.sock" "$scratch/bundles/greeter" "$build/examples/bundles/greeter_v2" \
  >"$scratch/app.log" 2>&1; then
  echo "FAIL: the installed-client demo did not do what it describes:"; cat "$scratch/app.log"
  echo "--- host log"; cat "$scratch/host.log"; exit 1
fi
grep -q "RELOADED greeter 2.0.0" "$scratch/app.log" ||
  { echo "FAIL: no RELOADED event in the demo's output:"; cat "$scratch/app.log"; exit 1; }
echo "PASS: client application built against the installed polyplug_client drove a real host"
