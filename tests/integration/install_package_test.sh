#!/usr/bin/env bash
# Installs polyplug from the build tree into a scratch prefix, builds the external bundle
# example against the installed package, and checks the bundle directory it produced.
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
