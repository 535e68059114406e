#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the demo that loads the example
# bundles, hot-reloads one and prints every phase event.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target polyplug-demo
exec build/examples/demo/polyplug-demo
