#!/usr/bin/env bash
# Edge cache benchmark: W-TinyLFU beside plain LRU at the same capacities on one seeded
# Zipf(1.0) workload (every figure beside its peer, as a ratio).
#
#   bash scripts/bench-edge.sh /abs/path/to/stoq
#
# Environment: BENCH_EDGE_ITEMS (100000), BENCH_EDGE_REQUESTS (1000000),
# BENCH_EDGE_CAPACITIES (100,1000,10000 chunks), BENCH_EDGE_SEED (42).
set -euo pipefail
STOQ_BIN=${1:?usage: bench-edge.sh /abs/path/to/stoq}
"$STOQ_BIN" bench edge \
  --items "${BENCH_EDGE_ITEMS:-100000}" \
  --requests "${BENCH_EDGE_REQUESTS:-1000000}" \
  --capacities "${BENCH_EDGE_CAPACITIES:-100,1000,10000}" \
  --seed "${BENCH_EDGE_SEED:-42}"
