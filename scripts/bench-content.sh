#!/usr/bin/env bash
# Content-layer benchmark: STOQ beside its peers, same bytes, same run.
#   usage: scripts/bench-content.sh PATH/TO/release/stoq [WORKDIR]
# Figures: FastCDC cut GB/s (1 core), chunk+SHA-256 (1 core, all cores), fixed-size baseline, and
# pyfastcdc (Cython FastCDC 2020) on the same bytes with the same min/avg/max; dedup on a versioned
# corpus built from real files (successive edits of /usr/include/linux and /usr/share/doc, as tars);
# put of already-stored content MB/s beside chunk+SHA-256 MB/s.
set -euo pipefail
STOQ=${1:?usage: bench-content.sh PATH/TO/stoq [WORKDIR]}
WORK=${2:-$(mktemp -d /tmp/stoq-bench-content.XXXXXX)}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
MIN=4096; AVG=16384; MAX=1048576
DMIN=2048; DAVG=8192; DMAX=1048576

mkdir -p "$WORK"
if [ ! -f "$WORK/input.bin" ]; then
  echo "building inputs from real files in $WORK ..." >&2
  "$PY" "$HERE/bench_content_peer.py" corpus "$WORK"
fi
cat "$WORK/input.bin" > /dev/null   # page cache

stoq_speed=$("$STOQ" bench-content --input "$WORK/input.bin" --min $MIN --avg $AVG --max $MAX)
py_speed=$("$PY" "$HERE/bench_content_peer.py" speed "$WORK/input.bin" $MIN $AVG $MAX)
stoq_dedup=$("$STOQ" chunk --stats --json --min $DMIN --avg $DAVG --max $DMAX "$WORK/versions")
fixed_dedup=$("$STOQ" chunk --stats --json --fixed --avg $DAVG "$WORK/versions")
py_dedup=$("$PY" "$HERE/bench_content_peer.py" dedup $DMIN $DAVG $DMAX "$WORK/versions")
hash_speed=$("$STOQ" chunk --stats --json --min $MIN --avg $AVG --max $MAX "$WORK/input.bin")

rm -rf "$WORK/store"
timed() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
first_put=$(timed "$STOQ" put "$WORK/input.bin" "$WORK/versions" --store "$WORK/store")
second_put=$(timed "$STOQ" put "$WORK/input.bin" "$WORK/versions" --store "$WORK/store")
put_bytes=$(( $(stat -c %s "$WORK/input.bin") + $(du -cb "$WORK"/versions/*.tar | tail -1 | cut -f1) ))

"$PY" - "$stoq_speed" "$py_speed" "$stoq_dedup" "$fixed_dedup" "$py_dedup" "$hash_speed" "$first_put" "$second_put" "$put_bytes" <<'PYEOF'
import json, sys
s, p, sd, fd, pd, hs = (json.loads(x) for x in sys.argv[1:7])
first, second, nbytes = float(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9])
def row(name, stoq, peer, unit, peer_name):
    ratio = stoq / peer if peer else float("nan")
    print(f"| {name:<44} | {stoq:>10.3f} {unit:<5} | {peer:>10.3f} {unit:<5} | {ratio:>6.2f}x | {peer_name}")
print(f"content bench: {s['bytes']/2**20:.0f} MiB of real files, min/avg/max {s['min']}/{s['avg']}/{s['max']}, {s['cores']} cores")
print(f"| {'figure':<44} | {'STOQ':>16} | {'peer':>16} | {'ratio':>7} | peer")
print("|" + "-" * 46 + "|" + "-" * 18 + "|" + "-" * 18 + "|" + "-" * 9 + "|------")
row("FastCDC cut, 1 core", s["cdc_cut_gbps_1core"], p["cut_gbps_1core"], "GB/s", "pyfastcdc cut_buf")
row("FastCDC cut + SHA-256, 1 core", s["cdc_sha_gbps_1core"], p["cut_sha_gbps_1core"], "GB/s", "pyfastcdc + hashlib.sha256")
row("FastCDC cut + SHA-256, streaming, 1 core", s["stream_cdc_sha_gbps_1core"], p["cut_sha_gbps_1core"], "GB/s", "pyfastcdc + hashlib.sha256")
row(f"FastCDC cut + SHA-256, streaming, {s['cores']} cores", s["stream_cdc_sha_gbps_allcores"], p["cut_sha_gbps_1core"], "GB/s", "pyfastcdc + hashlib.sha256 (1 core)")
row("FastCDC cut + SHA-256 vs fixed-size + SHA-256", s["cdc_sha_gbps_1core"], s["fixed_sha_gbps_1core"], "GB/s", "STOQ fixed-size baseline")
row("SHA-256 alone (swift-crypto vs hashlib)", s["sha256_gbps_1core"], p["sha256_gbps_1core"], "GB/s", "hashlib.sha256 one buffer")
print(f"chunks on the input: STOQ {s['cdc_chunks']} (avg {s['bytes']/s['cdc_chunks']:.0f} B), pyfastcdc {p['chunks']} (avg {s['bytes']/p['chunks']:.0f} B)")
print()
print(f"dedup on {sd['files']} versions ({sd['bytes']/2**20:.1f} MiB of tar archives of successively edited real files), min/avg/max 2048/8192/1048576:")
row("dedup ratio, FastCDC", sd["dedup_ratio"], pd["dedup_ratio"], "", "pyfastcdc same min/avg/max")
row("dedup ratio, FastCDC vs fixed-size", sd["dedup_ratio"], fd["dedup_ratio"], "", "STOQ fixed-size 8 KiB")
print()
put1 = nbytes / 1e6 / first
put2 = nbytes / 1e6 / second
row("put of already-stored content (MB/s)", put2, hs["mb_per_s"], "MB/s", "stoq chunk --stats (chunk + SHA-256, same input)")
print(f"first put (chunk, zstd, encrypt, write, fsync): {put1:.0f} MB/s over {nbytes/2**20:.0f} MiB; second put {put2:.0f} MB/s")
PYEOF
