#!/usr/bin/env python3
"""Peer side of scripts/bench-content.sh: builds the inputs from real files on this machine and
measures pyfastcdc (Cython FastCDC 2020, PyPI 0.3.1) on the same bytes STOQ chunks.

  corpus OUTDIR        build OUTDIR/input.bin (real files, for throughput) and OUTDIR/versions/v*.tar
                       (successive edits of real headers and docs, for dedup)
  speed FILE MIN AVG MAX        pyfastcdc cut and cut+SHA-256 GB/s, one core, JSON
  dedup MIN AVG MAX PATH...     pyfastcdc dedup over files, JSON (same fields as `stoq chunk --json`)
  sha256 PATH...                SHA-256 (hashlib, OpenSSL) of every file, read in 8 MiB blocks, one core:
                                bytes, wall seconds and CPU seconds, JSON (the "hashing speed" peer of put)
"""
import hashlib
import io
import json
import os
import random
import sys
import tarfile
import time

import pyfastcdc


def real_files(roots, limit, exts=None):
    out, total = [], 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                p = os.path.join(dirpath, name)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                if exts and not name.endswith(exts):
                    continue
                try:
                    size = os.path.getsize(p)
                except OSError:
                    continue
                if size == 0:
                    continue
                out.append(p)
                total += size
                if total >= limit:
                    return out
    return out


def build_corpus(outdir, input_mb=256, versions=5):
    os.makedirs(outdir + "/versions", exist_ok=True)
    # Throughput input: shared libraries, headers and docs, as they are on disk.
    with open(outdir + "/input.bin", "wb") as f:
        left = input_mb << 20
        for p in real_files(["/usr/lib/x86_64-linux-gnu", "/usr/include", "/usr/share/doc"], input_mb << 20):
            with open(p, "rb") as g:
                b = g.read(left)
            f.write(b)
            left -= len(b)
            if left <= 0:
                break
    # Versioned corpus: a tree of real text files, then successive versions each editing ~3% of files
    # (insert, delete or change a few lines), each version archived as an uncompressed tar.
    rng = random.Random(20261121)
    files = {}
    for p in real_files(["/usr/include/linux", "/usr/share/doc"], 24 << 20):
        with open(p, "rb") as g:
            files[p.lstrip("/")] = g.read()
    names = sorted(files)
    for v in range(versions):
        if v > 0:
            for name in rng.sample(names, max(1, len(names) * 3 // 100)):
                lines = files[name].split(b"\n")
                for _ in range(rng.randint(1, 4)):
                    i = rng.randrange(len(lines) + 1)
                    op = rng.random()
                    if op < 0.4:
                        lines.insert(i, b"/* edit v%d: %x */" % (v, rng.getrandbits(32)))
                    elif op < 0.7 and i < len(lines):
                        del lines[i]
                    elif i < len(lines):
                        lines[i] = lines[i] + b" /* changed */"
                files[name] = b"\n".join(lines)
        with tarfile.open("%s/versions/v%d.tar" % (outdir, v), "w", format=tarfile.GNU_FORMAT) as t:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = len(files[name])
                info.mtime = 1_700_000_000
                info.mode = 0o644
                t.addfile(info, io.BytesIO(files[name]))


def speed(path, mn, avg, mx):
    """Best of 3, by wall clock and by this thread's CPU time (the per-core speed on a loaded machine)."""
    with open(path, "rb") as f:
        data = f.read()
    cdc = pyfastcdc.FastCDC(avg, min_size=mn, max_size=mx, normalized_chunking=2)
    res = {}

    def best(name, fn):
        w = c = 0.0
        out = None
        for _ in range(3):
            t, ct = time.perf_counter(), time.thread_time()
            out = fn()
            w = max(w, len(data) / 1e9 / (time.perf_counter() - t))
            c = max(c, len(data) / 1e9 / max(time.thread_time() - ct, 1e-9))
        res[name + "_gbps_1core"] = w
        res[name + "_gbps_1core_cpu"] = c
        return out

    def cut_sha():
        for ch in cdc.cut_buf(data):
            hashlib.sha256(ch.data).digest()

    res["chunks"] = best("cut", lambda: sum(1 for _ in cdc.cut_buf(data)))
    best("cut_sha", cut_sha)
    best("sha256", lambda: hashlib.sha256(data).digest())
    print(json.dumps(res))


def dedup(mn, avg, mx, paths):
    cdc = pyfastcdc.FastCDC(avg, min_size=mn, max_size=mx, normalized_chunking=2)
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += real_files([p], 1 << 62)
        else:
            files.append(p)
    seen, total, chunks, unique = set(), 0, 0, 0
    t = time.perf_counter()
    for p in files:
        for c in cdc.cut_file(p):
            h = hashlib.sha256(c.data).digest()
            total += c.length
            chunks += 1
            if h not in seen:
                seen.add(h)
                unique += c.length
    secs = time.perf_counter() - t
    print(json.dumps({"files": len(files), "bytes": total, "chunks": chunks, "unique_chunks": len(seen),
                      "unique_bytes": unique, "dedup_ratio": 1 - unique / total if total else 0, "mb_per_s": total / 1e6 / secs}))


def sha256_files(paths):
    files = []
    for p in paths:
        files += real_files([p], 1 << 62) if os.path.isdir(p) else [p]
    total = 0
    t, ct = time.perf_counter(), time.process_time()
    for p in files:
        h = hashlib.sha256()
        with open(p, "rb", buffering=0) as f:
            while True:
                b = f.read(8 << 20)
                if not b:
                    break
                h.update(b)
                total += len(b)
        h.digest()
    print(json.dumps({"bytes": total, "wall": time.perf_counter() - t, "cpu": time.process_time() - ct}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "corpus":
        build_corpus(sys.argv[2])
    elif cmd == "speed":
        speed(sys.argv[2], *map(int, sys.argv[3:6]))
    elif cmd == "sha256":
        sha256_files(sys.argv[2:])
    elif cmd == "dedup":
        dedup(*map(int, sys.argv[2:5]), sys.argv[5:])
    else:
        sys.exit(__doc__)
