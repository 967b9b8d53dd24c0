"""zfec peer for scripts/bench-erasure.sh (Tahoe-LAFS's Reed-Solomon coder from PyPI).

Same shape as the ISA-L and Swift runs: k data shards of SHARD_SIZE bytes, m parity shards;
encode, then rebuild LOST data shards from the next k shards. GB/s over k x shard size per call.
usage: zfec_bench.py K M SHARD_SIZE LOST SECONDS
"""
import os
import sys
import time

import zfec


def loop(seconds, body):
    it, t0 = 0, time.perf_counter()
    while True:
        body()
        it += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return it, el


def main():
    k, m, size, lost = (int(x) for x in sys.argv[1:5])
    seconds = float(sys.argv[5])
    n = k + m
    data = [os.urandom(size) for _ in range(k)]
    enc = zfec.Encoder(k, n)
    parity_ids = list(range(k, n))
    parity = enc.encode(data, parity_ids)
    it, el = loop(seconds, lambda: enc.encode(data, parity_ids))
    encode_gbps = k * size * it / el / 1e9
    shares = (data + parity)[lost:lost + k]
    ids = list(range(lost, lost + k))
    dec = zfec.Decoder(k, n)
    out = dec.decode(shares, ids)
    assert [bytes(x) for x in out[:lost]] == data[:lost], "zfec rebuild mismatch"
    it2, el2 = loop(seconds, lambda: dec.decode(shares, ids))
    rebuild_gbps = k * size * it2 / el2 / 1e9
    print(f"zfec k={k} m={m} shard={size} encode_gbps={encode_gbps:.3f} rebuild{lost}_gbps={rebuild_gbps:.3f} "
          f"iterations={it}/{it2}")


if __name__ == "__main__":
    main()
