#!/usr/bin/env bash
# `make bench`: every figure beside its peer from the same run, as a ratio.
#
#   bash scripts/bench.sh /abs/path/to/release/stoq
#
# Parts, each skipped (saying so) when it does not exist yet:
#   transport  scripts/bench/transport.py — STOQ vs ngtcp2's example pair vs aioquic, 1 GiB over [::1]
#   handshakes scripts/bench/handshakes.py — server CPU per handshake and handshakes/s per core:
#              stoq serve with mutual TLS (client certificates verified) beside gtlsserver
#   datagram   scripts/bench/datagram.py — one connection, 512 MiB, STOQ vs ngtcp2's pair over a veth pair
#              at MTU 1500 (two namespaces) and over [::1] with path-MTU-sized datagrams; CPU-s per GiB
#   content    scripts/bench-content.sh STOQ_BIN
#   store      scripts/bench-store.sh STOQ_BIN — stoq put (packs, files) vs restic backup; the store at scale
#   erasure    scripts/bench-erasure.sh STOQ_BIN
#   routing    STOQ_BIN bench routing
#   dht        STOQ_BIN bench dht --scale ... ; STOQ_BIN bench dht --quic N (real lookups over [::1])
#   swarm      STOQ_BIN bench swarm (simulator), then STOQ_BIN bench swarm --real (QUIC on [::1])
#   edge       scripts/bench-edge.sh STOQ_BIN
#   http3      scripts/bench/http3.py — STOQHTTP's HTTP/3 server vs ngtcp2's gtlsserver, gtlsclient for both
#   frontdoor  scripts/bench/frontdoor.py — an edge's --http: 1 GB over HTTP/3 vs gtlsserver, 10 KB over HTTP/2
#              vs nginx (h2load), time to first byte cold and warm; CPU per byte and peak RSS
#   edgeclients scripts/bench/edgeclients.py — one `stoq serve` in a network namespace, 8 clients at
#              once from 8 others (veth), with 1 and with 2 event loops: aggregate Gbit/s, the ratio,
#              cores kept busy per process, CPU-s per GiB (needs root)
#
# Environment: BENCH_OUT (default ./bench-out), BENCH_PARTS (comma list, default all),
# BENCH_TRANSPORT_BYTES, BENCH_AIOQUIC_BYTES, BENCH_DATAGRAM_BYTES, BENCH_DATAGRAM_PATHS, BENCH_RUNS, BENCH_TTFB_FETCHES, BENCH_IDLE_CONNS, BENCH_ONLY
# (see scripts/bench/transport.py), BENCH_HANDSHAKES, BENCH_HANDSHAKE_ROUNDS (scripts/bench/handshakes.py),
# BENCH_EC_CLIENTS, BENCH_EC_MIB, BENCH_EC_LOOPS (scripts/bench/edgeclients.py). Output is also written to BENCH_OUT/bench.txt.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STOQ_BIN=${1:-${STOQ_BIN:-}}
OUT=${BENCH_OUT:-$ROOT/bench-out}
PY=${PYTHON:-python3}
PARTS=${BENCH_PARTS:-transport,datagram,handshakes,content,store,erasure,routing,dht,swarm,edge,http3,frontdoor,edgeclients}
mkdir -p "$OUT"
exec > >(tee "$OUT/bench.txt") 2>&1

want() { [[ ",$PARTS," == *",$1,"* ]]; }
section() { printf '\n== %s ==\n' "$1"; }
status=0

echo "STOQ bench — $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
     "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
if [ -z "$STOQ_BIN" ] || [ ! -x "$STOQ_BIN" ]; then
  echo "note: no stoq binary given (usage: bash scripts/bench.sh /abs/path/to/stoq); STOQ rows are n/a"
  STOQ_BIN=""
fi

if want transport; then
  section "transport (one connection over [::1])"
  "$PY" "$ROOT/scripts/bench/transport.py" ${STOQ_BIN:+--stoq "$STOQ_BIN"} --out "$OUT" || status=1
fi

if want datagram; then
  section "datagram (one connection: veth at MTU 1500, and [::1] with path-MTU datagrams)"
  "$PY" "$ROOT/scripts/bench/datagram.py" ${STOQ_BIN:+--stoq "$STOQ_BIN"} --out "$OUT" || status=1
fi

if want handshakes; then
  section "handshakes (server CPU per handshake over [::1]: stoq serve with mutual TLS beside gtlsserver)"
  "$PY" "$ROOT/scripts/bench/handshakes.py" ${STOQ_BIN:+--stoq "$STOQ_BIN"} --out "$OUT" || status=1
fi

run_script_part() {  # name script
  local name=$1 script=$2
  section "$name"
  if [ ! -f "$ROOT/$script" ]; then
    echo "$name: skipped ($script does not exist yet)"
  elif [ -z "$STOQ_BIN" ]; then
    echo "$name: skipped (no stoq binary)"
  else
    bash "$ROOT/$script" "$STOQ_BIN" || { echo "$name: FAILED (exit $?)"; status=1; }
  fi
}
want content && run_script_part content scripts/bench-content.sh
want store && run_script_part store scripts/bench-store.sh
want erasure && run_script_part erasure scripts/bench-erasure.sh

if want routing; then
  section "routing"
  # swift-argument-parser answers an unknown subcommand's --help with the root help (exit 0),
  # so look for the subcommand's own usage line.
  if [ -n "$STOQ_BIN" ] && "$STOQ_BIN" bench routing --help 2>/dev/null | grep -q "stoq bench routing"; then
    "$STOQ_BIN" bench routing || { echo "routing: FAILED (exit $?)"; status=1; }
  else
    echo "routing: skipped (\`stoq bench routing\` is not available${STOQ_BIN:+ in $STOQ_BIN})"
  fi
fi

if want dht; then
  section "dht (Kademlia, k = 20, alpha = 3; converged tables)"
  if [ -n "$STOQ_BIN" ]; then
    "$STOQ_BIN" bench dht --scale "${BENCH_DHT_SCALE:-1000,10000,100000,1000000}" --lookups "${BENCH_DHT_LOOKUPS:-1000}" \
      || { echo "dht: FAILED"; status=1; }
    "$STOQ_BIN" bench dht --quic "${BENCH_DHT_QUIC_NODES:-40}" --quic-lookups "${BENCH_DHT_QUIC_LOOKUPS:-300}" \
      || { echo "dht over QUIC: FAILED"; status=1; }
    "$STOQ_BIN" bench relay --delay-ms "${BENCH_RELAY_DELAY_MS:-25}" || { echo "relay over QUIC: FAILED"; status=1; }
  else
    echo "dht: skipped (no stoq binary)"
  fi
fi

if want swarm; then
  section "swarm (multi-source retrieval under the simulator, virtual time)"
  if [ -n "$STOQ_BIN" ]; then "$STOQ_BIN" bench swarm || { echo "swarm: FAILED"; status=1; }
  else echo "swarm: skipped (no stoq binary)"; fi
  section "swarm over real QUIC ([::1], stoq node processes as rate-limited sources)"
  # 256 MiB: a 64 MiB fetch lasts under half a second at these rates, so connection set-up, the
  # HAVE round trip and window ramp-up weigh on the goodput figure more than steady state does.
  if [ -n "$STOQ_BIN" ]; then "$STOQ_BIN" bench swarm --real --mib "${BENCH_SWARM_MIB:-256}" --failover-runs "${BENCH_SWARM_KILLS:-20}" \
      || { echo "swarm --real: FAILED"; status=1; }
  else echo "swarm --real: skipped (no stoq binary)"; fi
fi

if want edge; then
  section "edge cache (W-TinyLFU beside LRU, Zipf 1.0)"
  if [ -n "$STOQ_BIN" ]; then bash "$ROOT/scripts/bench-edge.sh" "$STOQ_BIN" || { echo "edge: FAILED"; status=1; }
  else echo "edge: skipped (no stoq binary)"; fi
fi

if want http3; then
  section "http3 (download over [::1]: STOQ's HTTP/3 server beside ngtcp2's gtlsserver, gtlsclient for both)"
  "$PY" "$ROOT/scripts/bench/http3.py" || { echo "http3: FAILED"; status=1; }
fi

if want frontdoor; then
  section "frontdoor (an edge's --http beside gtlsserver over HTTP/3 and nginx over HTTP/2; TTFB cold and warm)"
  "$PY" "$ROOT/scripts/bench/frontdoor.py" ${STOQ_BIN:+--stoq "$STOQ_BIN"} || { echo "frontdoor: FAILED"; status=1; }
fi

if want edgeclients; then
  section "edgeclients (one stoq serve, 8 clients at once over veth; 1 vs 2 event loops)"
  if [ -n "$STOQ_BIN" ]; then "$PY" "$ROOT/scripts/bench/edgeclients.py" --stoq "$STOQ_BIN" || { echo "edgeclients: FAILED"; status=1; }
  else echo "edgeclients: skipped (no stoq binary)"; fi
fi

echo
echo "bench: done (exit $status); results in $OUT (bench.txt, transport.json, handshakes.json)"
exit $status
