#!/usr/bin/env bash
# replay.sh <fuzz target> <regressions dir>: runs the target once on every saved input of the
# directory (libFuzzer runs the files it is given as arguments); fails if one crashes.
set -euo pipefail
target=$1 dir=$2
inputs=()
if [[ -d $dir ]]; then
  while IFS= read -r -d '' f; do inputs+=("$f"); done \
    < <(find "$dir" -maxdepth 1 -type f ! -name 'README*' ! -name '.*' -print0 | sort -z)
fi
if ((${#inputs[@]} == 0)); then
  echo "replay.sh: no saved inputs in $dir"
  exit 0
fi
echo "replay.sh: $(basename "$target"): replaying ${#inputs[@]} input(s) from $dir"
exec "$target" "${inputs[@]}"
