#!/usr/bin/env bash
# Runs one step of `make test` and records how long it took, so every CI log ends with the time of
# each step (issue 11: `make test` must stay under 30 minutes from a clean clone; this shows where
# the minutes go when it does not).
#   scripts/timed.sh NAME COMMAND...   appends "NAME SECONDS status" to $STOQ_TIMES
#   scripts/timed.sh --report          prints the table and the total
set -uo pipefail
times=${STOQ_TIMES:-.build/make-test-times.txt}
if [ "${1:-}" = "--report" ]; then
    [ -f "$times" ] || exit 0
    echo "== make test, time per step"
    awk '{ printf "  %-16s %6d s  %s\n", $1, $2, $3; total += $2 } END { printf "  %-16s %6d s (%d min %d s)\n", "total", total, total / 60, total % 60 }' "$times"
    exit 0
fi
name=$1
shift
mkdir -p "$(dirname "$times")"
start=$(date +%s)
"$@"
status=$?
end=$(date +%s)
echo "$name $((end - start)) $([ $status -eq 0 ] && echo ok || echo "FAILED($status)")" >> "$times"
echo "== $name: $((end - start)) s"
exit $status
