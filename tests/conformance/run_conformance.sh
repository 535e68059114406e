#!/usr/bin/env bash
# Starts a real polyplug-host on a Unix socket with the example bundles greeter (v1) and
# shouter, runs reflection_conformance.py against it (Debian's python3-grpcio, schemas only
# from server reflection), then stops the host with SIGTERM and requires exit status 0.
#
#   run_conformance.sh <polyplug-host binary> <example bundles build dir>
#
# Environment: POLYPLUG_CONFORMANCE_PYTHON (default /usr/bin/python3; must see Debian's
# grpcio and protobuf), POLYPLUG_CONFORMANCE_KEEP=1 keeps the temp dir for a post-mortem.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <polyplug-host binary> <example bundles build dir>" >&2
  exit 2
fi
host_bin=$1
bundles_dir=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${POLYPLUG_CONFORMANCE_PYTHON:-/usr/bin/python3}
script=$here/reflection_conformance.py

fail() { echo "run_conformance: FAIL: $*" >&2; exit 1; }

[[ -x $host_bin ]] || fail "$host_bin is not an executable"
[[ -x $python ]] || fail "$python not found (apt-get install python3 python3-grpcio python3-protobuf)"
[[ -x /usr/bin/protoc ]] || fail "/usr/bin/protoc not found (apt-get install protobuf-compiler)"
[[ -f /usr/share/grpc-proto/grpc/reflection/v1/reflection.proto ]] ||
  fail "/usr/share/grpc-proto is missing (apt-get install grpc-proto)"
for b in greeter_v1 shouter; do
  [[ -f $bundles_dir/$b/manifest.toml ]] || fail "$bundles_dir/$b/manifest.toml is missing (build polyplug_example_bundles)"
done

# A Unix socket path must fit in sun_path (108 bytes): fall back to /tmp for a long TMPDIR.
base=${TMPDIR:-/tmp}
[[ ${#base} -le 60 ]] || base=/tmp
tmp=$(mktemp -d "$base/ppconf.XXXXXX")
host_pid=
cleanup() {
  local rc=$?
  if [[ -n $host_pid ]] && kill -0 "$host_pid" 2>/dev/null; then
    kill -KILL "$host_pid" 2>/dev/null || true
    wait "$host_pid" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f $tmp/host.log ]]; then
    echo "---- polyplug-host log ($tmp/host.log) ----" >&2
    tail -n 200 "$tmp/host.log" >&2 || true
  fi
  if [[ ${POLYPLUG_CONFORMANCE_KEEP:-0} == 1 ]]; then
    echo "run_conformance: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$tmp/bundles/greeter" "$tmp/bundles/shouter" "$tmp/state"
cp -R "$bundles_dir/greeter_v1/." "$tmp/bundles/greeter/"
cp -R "$bundles_dir/shouter/." "$tmp/bundles/shouter/"
socket=$tmp/host.sock
target=unix:$socket

"$host_bin" --listen "$target" --bundles "$tmp/bundles" --state-dir "$tmp/state" \
  >"$tmp/host.log" 2>&1 &
host_pid=$!
echo "run_conformance: started $host_bin (pid $host_pid) on $target"

# Time budget, inside the ctest TIMEOUT of 120 s even when everything hangs: socket 10 s,
# readiness <= 20 s, the test 60 s, shutdown 15 s.
# Ready = the socket exists and Health/Check("") answers SERVING. Poll, bounded, and give
# up at once if the host died.
for _ in $(seq 1 100); do
  [[ -S $socket ]] && break
  kill -0 "$host_pid" 2>/dev/null || { wait "$host_pid" && rc=0 || rc=$?; fail "the host exited ($rc) before creating $socket"; }
  sleep 0.1
done
[[ -S $socket ]] || fail "$socket did not appear within 10 s"
"$python" "$script" --target "$target" --wait-ready --attempts 50 --attempt-timeout 0.2 \
  --host-pid "$host_pid" || fail "the host did not become ready"

set +e
"$python" "$script" --target "$target" --bundle greeter --contract example.greeter@1 --budget 60
test_rc=$?
set -e

# Graceful stop: SIGTERM, then the host must exit 0 within 15 s.
kill -0 "$host_pid" 2>/dev/null || { wait "$host_pid" && rc=0 || rc=$?; host_pid=; fail "the host died during the test (exit status $rc)"; }
kill -TERM "$host_pid"
term_at=$(date +%s%N)
for _ in $(seq 1 150); do
  kill -0 "$host_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$host_pid" 2>/dev/null; then
  fail "the host did not exit within 15 s of SIGTERM"
fi
set +e
wait "$host_pid"
host_rc=$?
set -e
host_pid=
echo "run_conformance: host exited with status $host_rc $(( ($(date +%s%N) - term_at) / 1000000 )) ms after SIGTERM"

[[ $test_rc -eq 0 ]] || fail "reflection_conformance.py failed (exit $test_rc)"
[[ $host_rc -eq 0 ]] || fail "the host exited with status $host_rc after SIGTERM, expected 0"
echo "run_conformance: PASS"
