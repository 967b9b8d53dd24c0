#!/usr/bin/env python3
"""HTTP/3 download throughput: STOQHTTP's HTTP/3 server beside ngtcp2's example server
(gtlsserver, nghttp3 on ngtcp2), the same file over [::1], ngtcp2's gtlsclient as the client for
both, alternating runs. Prints Gbit/s for each and the ratio STOQ / gtlsserver (median of runs).

    python3 scripts/bench/http3.py [--bytes N] [--runs N] [--harness PATH]

The STOQ side is the release `stoq-http3-harness` (swift build -c release --product
stoq-http3-harness), which serves a directory from disk the way an edge serves from its cache
(until `stoq node --http` is measured here instead). Skips, saying why, when a piece is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def fetch(port: int, name: str, timeout: float) -> float:
    start = time.monotonic()
    r = subprocess.run(["gtlsclient", "-q", "--exit-on-all-streams-close", "::1", str(port),
                        f"https://localhost:{port}/{name}"], capture_output=True, timeout=timeout)
    elapsed = time.monotonic() - start
    if r.returncode != 0:
        raise RuntimeError(f"gtlsclient failed ({r.returncode}): {r.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, default=int(os.environ.get("BENCH_HTTP3_BYTES", 1_000_000_000)))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 3)))
    ap.add_argument("--harness", default=str(ROOT / ".build/release/stoq-http3-harness"))
    args = ap.parse_args()
    for tool in ("gtlsclient", "gtlsserver", "openssl"):
        if shutil.which(tool) is None:
            print(f"http3: skipped ({tool} is not installed; Debian ngtcp2-client/ngtcp2-server)")
            return 0
    if not os.access(args.harness, os.X_OK):
        print(f"http3: skipped ({args.harness} is missing: swift build -c release --product stoq-http3-harness)")
        return 0
    with tempfile.TemporaryDirectory(prefix="stoq-h3-bench-") as tmp:
        d = Path(tmp)
        (d / "www").mkdir()
        with open(d / "www" / "file.bin", "wb") as f:
            left = args.bytes
            while left > 0:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:::1"], check=True, capture_output=True, timeout=60)
        procs: list[subprocess.Popen] = []
        try:
            stoq = subprocess.Popen([args.harness, "--root", str(d / "www"), "--cert", str(d / "cert.pem"),
                                     "--key", str(d / "key.pem"), "--port", "0"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
            procs.append(stoq)
            assert stoq.stdout is not None
            line = stoq.stdout.readline()
            if not line.startswith("listening "):
                print(f"http3: FAILED (the harness did not start: {line!r})")
                return 1
            stoq_port = int(line.split()[1])
            gtls_port = free_port()
            gtls = subprocess.Popen(["gtlsserver", "-q", "-d", str(d / "www"), "::1", str(gtls_port),
                                     str(d / "key.pem"), str(d / "cert.pem")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(gtls)
            time.sleep(1)
            timeout = max(120.0, args.bytes / 5e6)
            times: dict[str, list[float]] = {"stoq": [], "gtlsserver": []}
            for _ in range(args.runs):
                times["stoq"].append(fetch(stoq_port, "file.bin", timeout))
                times["gtlsserver"].append(fetch(gtls_port, "file.bin", timeout))
            rate = {k: args.bytes * 8 / statistics.median(v) / 1e9 for k, v in times.items()}
            print(f"HTTP/3 download of {args.bytes / 1e6:.0f} MB over [::1], gtlsclient as client, median of {args.runs}")
            print(f"  STOQ HTTP3Server (harness)   {rate['stoq']:.3f} Gbit/s")
            print(f"  ngtcp2 gtlsserver            {rate['gtlsserver']:.3f} Gbit/s")
            print(f"  ratio STOQ / gtlsserver      {rate['stoq'] / rate['gtlsserver']:.2f}")
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
