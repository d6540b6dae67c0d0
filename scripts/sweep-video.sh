#!/usr/bin/env bash
# Issue 10 item 7 sweep on validation probes (seed 0). Each line: name, then --set overrides.
set -u
export FFSTREAM_DATA=${FFSTREAM_DATA:-../shared/data}
bin=target/release/ffstream
while read -r name pipeline sets; do
  [ -z "$name" ] && continue
  log=logs/sweep-$name.log
  if grep -q "frozen probes" "$log" 2>/dev/null; then continue; fi
  args=()
  for s in $sets; do args+=(--set "$s"); done
  echo "$(date +%T) start $name" >> logs/sweep.log
  $bin run "$pipeline" --set eval.probe_split=validation "${args[@]}" > "$log" 2>&1
  echo "$(date +%T) end $name rc=$?: $(grep -o 'frozen probes.*' "$log" | head -1)" >> logs/sweep.log
done < "$1"
