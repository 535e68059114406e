#!/usr/bin/env bash
# Installs polyplug from the build tree into a scratch prefix, builds the external bundle
# example against the installed package and checks the bundle directory it produced, builds
# a plain C bundle with the gcc and polyplug-mkmanifest command lines of
# docs/WRITING_BUNDLES.md (read from the page, run as written), then builds the client
# example against the installed client package and runs it against a real polyplug-host,
# which also loads and calls the C bundle.
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

# The plain C bundle of docs/WRITING_BUNDLES.md (tests/integration/hello_c.c), built with the
# page's own command lines: the first command of a code block that starts with $1
# (continuation lines joined), PREFIX replaced by the scratch prefix.
documented() {
  awk -v start="$1" '
    /^```/ { in_code = !in_code; line = ""; next }
    in_code {
      line = line $0
      if (line ~ /\\$/) { sub(/\\$/, "", line); next }
      if (index(line, start) == 1) { print line; exit }
      line = ""
    }' "$source/docs/WRITING_BUNDLES.md" | sed "s|PREFIX|$scratch/prefix|g"
}
gcc_line=$(documented "gcc -std=c11 ")
mkmanifest_line=$(documented "PREFIX/bin/polyplug-mkmanifest ")
[[ -n $gcc_line && -n $mkmanifest_line ]] ||
  { echo "FAIL: docs/WRITING_BUNDLES.md has no gcc or polyplug-mkmanifest command line"; exit 1; }
c_build="$scratch/hello-c"
mkdir -p "$c_build"
cp "$source/tests/integration/hello_c.c" "$c_build/"
if ! (cd "$c_build" && eval "$gcc_line") >"$scratch/gcc.log" 2>&1 || [[ -s $scratch/gcc.log ]]; then
  echo "FAIL: the documented gcc command line did not build hello_c.c cleanly:"
  echo "  $gcc_line"; cat "$scratch/gcc.log"; exit 1
fi
if ! (cd "$c_build" && eval "$mkmanifest_line") >"$scratch/mkmanifest.log" 2>&1; then
  echo "FAIL: the documented polyplug-mkmanifest command line failed:"
  echo "  $mkmanifest_line"; cat "$scratch/mkmanifest.log"; exit 1
fi
rm "$c_build/hello_c.c"  # the bundle: manifest.toml and the library
ctl="$scratch/prefix/bin/polyplugctl"
c_id=$("$ctl" id hello-c | awk '{print $3}') || { echo "FAIL: polyplugctl id hello-c failed"; exit 1; }
grep -qx "id = $c_id" "$c_build/manifest.toml" ||
  { echo "FAIL: manifest id is not polyplugctl id hello-c ($c_id):"; cat "$c_build/manifest.toml"; exit 1; }
if readelf --dyn-syms -W "$c_build/libhello_c.so" | grep -q UNIQUE; then
  echo "FAIL: the C bundle has STB_GNU_UNIQUE symbols"; exit 1
fi
echo "PASS: plain C bundle built with the documented gcc and polyplug-mkmanifest command lines"

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

# The C bundle loads into the same host and answers a remote call through its invoke.
cp -r "$c_build" "$scratch/bundles/hello-c"
ctl_host=("$ctl" --host "unix:$scratch/host.sock")
if ! "${ctl_host[@]}" load "$scratch/bundles/hello-c" >"$scratch/load.log" 2>&1; then
  echo "FAIL: the plain C bundle did not load:"; cat "$scratch/load.log"
  echo "--- host log"; cat "$scratch/host.log"; exit 1
fi
answer=$("${ctl_host[@]}" call example.hello_c@1 greet --data installer 2>&1) ||
  { echo "FAIL: calling the C bundle failed: $answer"; exit 1; }
[[ $answer == "Hello, installer! (hello_c)" ]] ||
  { echo "FAIL: the C bundle answered '$answer'"; exit 1; }
dir=$("${ctl_host[@]}" call example.hello_c@1 dir 2>&1) ||
  { echo "FAIL: calling the C bundle failed: $dir"; exit 1; }
[[ $dir -ef $scratch/bundles/hello-c ]] ||
  { echo "FAIL: the C bundle copied its bundle_path as '$dir'"; exit 1; }
echo "PASS: the plain C bundle loaded into a real host and answered through invoke"

# The host package: examples/game_runtime (polyplug-game and its gameplay bundle) built as a
# project of its own against the installed polyplug_host and polyplug packages, then run: it
# serves, the installed polyplugctl reloads its gameplay bundle, the new version takes over
# at a frame boundary, and SIGTERM ends it cleanly.
cmake -S "$source/examples/game_runtime" -B "$scratch/game" -G Ninja \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/game" >/dev/null
game="$scratch/game/polyplug-game"
test -x "$game" || { echo "FAIL: no polyplug-game built against the installed host package"; exit 1; }
cp -r "$scratch/game/root" "$scratch/game-root"
"$game" --listen "unix:$scratch/game.sock" --bundles "$scratch/game-root" --hz 200 \
  --state-dir "$scratch/game-state" >"$scratch/game.log" 2>"$scratch/game.err" &
game_pid=$!
trap 'kill -TERM "$host_pid" "$game_pid" 2>/dev/null; wait "$host_pid" "$game_pid" 2>/dev/null; rm -rf "$scratch"' EXIT
# Waits (on file events, via tail -F) for a line of the game's output matching $1.
await_game_line() {
  if ! timeout 60 grep -m1 -q -- "$1" <(tail -n +1 -F "$scratch/game.log" 2>/dev/null); then
    echo "FAIL: polyplug-game never printed a line matching '$1':"; cat "$scratch/game.log"
    echo "--- its stderr"; cat "$scratch/game.err"; exit 1
  fi
}
await_game_line '^ready: serving on unix:'
cp "$scratch/game/gameplay_v2/"* "$scratch/game-root/gameplay/"
if ! "$ctl" --host "unix:$scratch/game.sock" reload gameplay >"$scratch/game-reload.log" 2>&1; then
  echo "FAIL: polyplugctl reload of the embedded host's bundle failed:"; cat "$scratch/game-reload.log"
  echo "--- the game"; cat "$scratch/game.log" "$scratch/game.err"; exit 1
fi
await_game_line '^frame [0-9]*: gameplay 2\.0\.0 took over (generation 2'
kill -TERM "$game_pid"
wait "$game_pid" || { echo "FAIL: polyplug-game exited with $? after SIGTERM:"; cat "$scratch/game.log"; exit 1; }
grep -q '^summary: .* 0 mid-frame switches' "$scratch/game.log" ||
  { echo "FAIL: the game's summary:"; cat "$scratch/game.log"; exit 1; }
echo "PASS: a game built against the installed polyplug_host reloaded its bundle at a frame boundary"
