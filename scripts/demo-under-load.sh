#!/usr/bin/env bash
# Runs `stoq demo` beside N busy-loop processes, each in its own session (setsid, so the kernel's
# autogroup scheduling does not shield the demo from them), and prints what the demo blamed:
# stall and down events, the failover time, and the first and second fetch times.
#
#   scripts/demo-under-load.sh [HOGS] [STOQ_BIN] [extra demo args...]
#
# Every hog is killed on exit. The figures are timing on a shared machine: read them as a trend,
# not a test.
set -uo pipefail
hogs=${1:-3}
bin=${2:-.build/release/stoq}
shift 2 2>/dev/null || shift $#
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null; done; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 "$hogs"); do
  setsid sh -c 'while :; do :; done' &
  pids+=($!)
done
sleep 1
out=$(mktemp)
start=$(date +%s.%N)
"$bin" demo "$@" >"$out" 2>&1
rc=$?
end=$(date +%s.%N)
cleanup
pids=()
echo "hogs=$hogs exit=$rc wall=$(echo "$end - $start" | bc) s"
grep -E "stalled|is down|killed|failover|fetched|second fetch|late" "$out" | sed 's/^ */  /'
echo "  stall events: $(grep -c 'stalled' "$out"), down events: $(grep -c 'is down' "$out")"
rm -f "$out"
exit $rc
