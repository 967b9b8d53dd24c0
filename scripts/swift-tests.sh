#!/usr/bin/env bash
# The Swift tests of `make test`, in two groups (issue 11, "tests that hold on a busy machine"):
#   1. every suite that does not need real time runs in parallel (Swift Testing's default);
#   2. the suites that need real time - every suite marked `@Suite(.serialized …)` - run after
#      it, one test at a time, with nothing else competing for the cores.
# The real-time suites run real QUIC over [::1], real nodes and processes, and judge stalls,
# keepalives and probe timeouts by the wall clock: beside 60 suites at once on a 2-core machine
# they were starved for seconds (idle timeouts, false stalls). Marking a suite `.serialized` is
# what puts it in the second group, so a new real-time suite needs nothing more.
# Extra arguments go to both `swift test` runs (e.g. --filter to narrow them further is not
# supported: use `swift test` directly for that).
set -euo pipefail
SWIFT=${SWIFT:-swift}
cd "$(dirname "$0")/.."
suites=$(grep -rhoE '@Suite\(\.serialized[^{]*(struct|final class|class|enum|actor) [A-Za-z0-9_]+' Tests --include='*.swift' \
    | sed -E 's/.* ([A-Za-z0-9_]+)$/\1/' | sort -u | paste -sd'|' -)
if [ -z "$suites" ]; then
    echo "swift-tests.sh: found no @Suite(.serialized) suite under Tests/; running everything in parallel" >&2
    exec $SWIFT test --skip-build "$@"
fi
realtime="\\.($suites)/"
echo "== Swift tests, parallel (everything but the real-time suites)"
$SWIFT test --skip-build --skip "$realtime" "$@"
echo "== Swift tests, real time, one at a time: ${suites//|/, }"
$SWIFT test --skip-build --no-parallel --filter "$realtime" "$@"
