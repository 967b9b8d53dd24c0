#!/usr/bin/env bash
# Erasure-coding benchmark: HyperMesh's Swift coder beside raw ISA-L (and zfec when installed),
# same sizes, same run, with ratios.
#
# usage: scripts/bench-erasure.sh PATH_TO_STOQ [K M SHARD_SIZE LOST SECONDS ROUNDS]
#   PATH_TO_STOQ  a built `stoq` binary (release build for real figures); runs `stoq bench erasure`.
# Defaults: 10 + 4, 1 MiB shards, rebuild 4 lost data shards, 1 s per loop, 3 rounds.
# The ISA-L harness and the Swift coder run alternately ROUNDS times. The table shows the best
# figure of each side, and the median of the per-round ratios (each Swift run against the ISA-L
# run just before it), which is the robust figure when other processes load the machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: $0 PATH_TO_STOQ [K M SHARD_SIZE LOST SECONDS ROUNDS]}"
k="${2:-10}"; m="${3:-4}"; size="${4:-1048576}"; lost="${5:-4}"; secs="${6:-1}"; rounds="${7:-3}"

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
harness="$workdir/isal_bench"
gcc -O2 -o "$harness" "$here/bench/isal_bench.c" -lisal

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }

ie=0; ir=0; se=0; sr=0; ae=0; ar=0; aa=0
ratios_e=""; ratios_r=""
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for round in $(seq "$rounds"); do
  isal="$("$harness" "$k" "$m" "$size" "$lost" "$secs")"
  swift="$("$bin" bench erasure --data-shards "$k" --parity-shards "$m" --shard-size "$size" --lost "$lost" --seconds "$secs")"
  echo "round $round: $isal"
  echo "round $round: $swift"
  ie="$(best "$ie" "$(field encode_gbps "$isal")")"; ir="$(best "$ir" "$(field "rebuild${lost}_gbps" "$isal")")"
  se="$(best "$se" "$(field encode_gbps "$swift")")"; sr="$(best "$sr" "$(field "rebuild${lost}_gbps" "$swift")")"
  ae="$(best "$ae" "$(field arrays_encode_gbps "$swift")")"; ar="$(best "$ar" "$(field "arrays_rebuild${lost}_gbps" "$swift")")"
  aa="$(best "$aa" "$(field "arrays_rebuild${lost}_alloc_gbps" "$swift")")"
  ratios_e="$ratios_e $(ratio "$(field encode_gbps "$swift")" "$(field encode_gbps "$isal")")"
  ratios_r="$ratios_r $(ratio "$(field "rebuild${lost}_gbps" "$swift")" "$(field "rebuild${lost}_gbps" "$isal")")"
done
zfec=""
if python3 -c 'import zfec' 2>/dev/null; then
  zfec="$(python3 "$here/bench/zfec_bench.py" "$k" "$m" "$size" "$lost" "$secs")"
  echo "$zfec"
fi

echo
echo "erasure $k+$m, shard $size B, best of $rounds; GB/s over k x shard bytes per call (one core)"
printf "%-34s %12s %16s %14s %14s\n" "coder" "encode GB/s" "rebuild-$lost GB/s" "encode ratio" "rebuild ratio"
row() { printf "%-34s %12s %16s %14s %14s\n" "$1" "$2" "$3" "$(ratio "$2" "$ie")" "$(ratio "$3" "$ir")"; }
row "raw ISA-L (C, aligned buffers)" "$ie" "$ir"
row "HyperMesh ShardStripe (Swift)" "$se" "$sr"
row "HyperMesh [[UInt8]] into buffers" "$ae" "$ar"
printf "%-34s %12s %16s %14s %14s\n" "HyperMesh [[UInt8]] reconstruct" "-" "$aa" "-" "$(ratio "$aa" "$ir")"
echo "median per-round ratio, HyperMesh ShardStripe / raw ISA-L: encode $(median "$ratios_e"), rebuild-$lost $(median "$ratios_r")"
if [ -n "$zfec" ]; then
  row "zfec 1.6 (PyPI)" "$(field encode_gbps "$zfec")" "$(field "rebuild${lost}_gbps" "$zfec")"
else
  echo "zfec: not installed (pip install zfec) - skipped"
fi

# End-to-end: block put and get through real storage nodes over QUIC on [::1] (16 nodes in one
# process), MB/s and the time of each stage, random (incompressible) and text (compressible) content.
echo
if "$bin" bench block --help >/dev/null 2>&1; then
  "$bin" bench block --nodes 16 --block-size $((16 << 20)) --blocks "${BENCH_HM_BLOCKS:-4}" --content random
  echo
  "$bin" bench block --nodes 16 --block-size $((16 << 20)) --blocks "${BENCH_HM_BLOCKS:-4}" --content text
else
  echo "hypermesh end-to-end: skipped (\`stoq bench block\` is not available in $bin)"
fi
