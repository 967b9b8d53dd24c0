#!/usr/bin/env bash
# Store benchmark: `stoq put` (pack files, and one file per chunk) beside `restic backup`, same trees,
# same run; then the store at scale (`stoq bench store`: packs beside files per chunk).
#   usage: scripts/bench-store.sh PATH/TO/release/stoq [WORKDIR]
# Environment: BENCH_STORE_CHUNKS (records in the pack store, default 1000000; the issue's figure is
# 10000000), BENCH_STORE_FILE_CHUNKS (the file-per-chunk peer, default 100000), BENCH_STORE_TREE
# (default the Python standard library tree /usr/lib/python3.*), BENCH_STORE_BIG (bytes of the random
# file, default 1 GB), BENCH_STORE_RUNS (runs of each put and backup, default 3: the table shows the
# median wall time and the median CPU time). Stores and repositories go to WORKDIR (default on
# /dev/shm, as the issue's figures were taken on tmpfs).
set -euo pipefail
STOQ=${1:?usage: bench-store.sh PATH/TO/stoq [WORKDIR]}
BASE=/dev/shm; [ -d "$BASE" ] && [ -w "$BASE" ] || BASE=${TMPDIR:-/tmp}
WORK=${2:-$(mktemp -d "$BASE/stoq-bench-store.XXXXXX")}
TREE=${BENCH_STORE_TREE:-$(ls -d /usr/lib/python3.[0-9]* | sort -V | tail -1)}
BIG_BYTES=${BENCH_STORE_BIG:-1000000000}
CHUNKS=${BENCH_STORE_CHUNKS:-1000000}
FILE_CHUNKS=${BENCH_STORE_FILE_CHUNKS:-100000}
RUNS=${BENCH_STORE_RUNS:-3}
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"
head -c "$BIG_BYTES" /dev/urandom > "$WORK/big.bin"
cat "$WORK/big.bin" > /dev/null; tar cf - "$TREE" 2>/dev/null > /dev/null   # page cache
have_restic=1; command -v restic >/dev/null || have_restic=0
export RESTIC_PASSWORD=bench-store

# "wall cpu" of a command (cpu = user + system of it and its threads).
timed() { /usr/bin/time -f "%e %U %S" "$@" 2>&1 >/dev/null | tail -1 | awk '{ printf "%s %.2f", $1, $2 + $3 }'; }
count_files() { find "$1" -type f | wc -l; }
# "wall cpu" medians of RUNS runs of a command, each into a fresh DIR (made by INIT when given).
median_of() { sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"; }
timed_runs() {  # DIR INIT COMMAND...
  local dir=$1 init=$2 walls="" cpus="" w c; shift 2
  for _ in $(seq "$RUNS"); do
    rm -rf "$dir"; [ -z "$init" ] || $init >/dev/null
    read -r w c < <(timed "$@"); walls+="$w"$'\n'; cpus+="$c"$'\n'
  done
  echo "$(printf '%s' "$walls" | median_of) $(printf '%s' "$cpus" | median_of)"
}

row() {  # label input
  local label=$1 input=$2 p f r
  rm -rf "$WORK/sp" "$WORK/sf" "$WORK/repo"
  p=$(timed_runs "$WORK/sp" "" "$STOQ" put --quiet --store "$WORK/sp" --store-format packs "$input"); pn=$(count_files "$WORK/sp")
  f=$(timed_runs "$WORK/sf" "" "$STOQ" put --quiet --store "$WORK/sf" --store-format files "$input"); fn=$(count_files "$WORK/sf")
  if [ $have_restic = 1 ]; then
    r=$(timed_runs "$WORK/repo" "restic init --quiet --repo $WORK/repo" restic backup --quiet --repo "$WORK/repo" "$input"); rn=$(count_files "$WORK/repo")
  else r="nan nan"; rn="n/a"; fi
  python3 - "$label" "$p" "$pn" "$f" "$fn" "$r" "$rn" <<'PYEOF'
import sys
label, p, pn, f, fn, r, rn = sys.argv[1:]
(pw, pc), (fw, fc), (rw, rc) = (map(float, x.split()) for x in (p, f, r))
def ratio(a, b): return f"{a / b:.2f}x" if b == b and b else "n/a"
print(f"| {label:<34} | {pw:>6.2f} {fw:>6.2f} {rw:>6.2f} {ratio(pw, rw):>6} | {pc:>6.2f} {fc:>6.2f} {rc:>6.2f} {ratio(pc, rc):>6} | {pn:>7} {fn:>7} {rn:>7} |")
PYEOF
}

tree_files=$(find "$TREE" -type f | wc -l); tree_bytes=$(du -sb "$TREE" | cut -f1)
echo "stoq put (store format packs; files = the older layout, one file per chunk) beside restic backup $(restic version 2>/dev/null | cut -d' ' -f2 || echo '(not installed: apt-get install restic)'), stores on $(df --output=fstype "$WORK" | tail -1)"
echo "time = wall seconds; cpu = user + system seconds (medians of $RUNS runs); files = files the store or repository holds afterwards; ratio = packs / restic"
echo "| input                              | time:  packs  files restic  ratio |  cpu:  packs  files restic  ratio |  files: packs   files  restic |"
row "$(basename "$TREE") tree ($tree_files files, $((tree_bytes / 1000000)) MB)" "$TREE"
row "random file ($((BIG_BYTES / 1000000)) MB)" "$WORK/big.bin"
rm -rf "$WORK/sp" "$WORK/sf" "$WORK/repo" "$WORK/big.bin"
[ "$CHUNKS" -gt 0 ] || [ "$FILE_CHUNKS" -gt 0 ] || exit 0
echo
"$STOQ" bench store --chunks "$CHUNKS" --file-chunks "$FILE_CHUNKS" --work "$WORK/scale"
