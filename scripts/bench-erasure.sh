#!/usr/bin/env bash
# Erasure-coding benchmark: HyperMesh's Swift coder beside raw ISA-L (and zfec when installed),
# same sizes, same run, with ratios.
#
# usage: scripts/bench-erasure.sh PATH_TO_STOQ [K M SHARD_SIZE LOST SECONDS]
#   PATH_TO_STOQ  a built `stoq` binary (release build for real figures), which runs
#                 `stoq block bench-erasure`.
# Defaults: 10 + 4, 1 MiB shards, rebuild 4, 2 s per loop.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: $0 PATH_TO_STOQ [K M SHARD_SIZE LOST SECONDS]}"
k="${2:-10}"; m="${3:-4}"; size="${4:-1048576}"; lost="${5:-4}"; secs="${6:-2}"

harness="$(mktemp -d)/isal_bench"
gcc -O2 -o "$harness" "$here/bench/isal_bench.c" -lisal

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }

isal="$("$harness" "$k" "$m" "$size" "$lost" "$secs")"
swift="$("$bin" block bench-erasure --data-shards "$k" --parity-shards "$m" --shard-size "$size" --lost "$lost" --seconds "$secs")"
zfec=""
if python3 -c 'import zfec' 2>/dev/null; then
  zfec="$(python3 "$here/bench/zfec_bench.py" "$k" "$m" "$size" "$lost" "$secs")"
fi

echo "$isal"
echo "$swift"
[ -n "$zfec" ] && echo "$zfec"
echo
printf "%-22s %12s %14s %12s\n" "erasure $k+$m, ${size} B" "encode GB/s" "rebuild-$lost GB/s" "vs ISA-L"
ie="$(field encode_gbps "$isal")"; ir="$(field "rebuild${lost}_gbps" "$isal")"
se="$(field encode_gbps "$swift")"; sr="$(field "rebuild${lost}_gbps" "$swift")"
printf "%-22s %12s %14s %12s\n" "raw ISA-L (C)" "$ie" "$ir" "1.000/1.000"
printf "%-22s %12s %14s %12s\n" "HyperMesh (Swift)" "$se" "$sr" "$(ratio "$se" "$ie")/$(ratio "$sr" "$ir")"
if [ -n "$zfec" ]; then
  ze="$(field encode_gbps "$zfec")"; zr="$(field "rebuild${lost}_gbps" "$zfec")"
  printf "%-22s %12s %14s %12s\n" "zfec (PyPI)" "$ze" "$zr" "$(ratio "$ze" "$ie")/$(ratio "$zr" "$ir")"
else
  echo "zfec: not installed (pip install zfec) — skipped"
fi
