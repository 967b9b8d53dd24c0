#!/usr/bin/env python3
"""A stand-in for `stoq serve` / `stoq fetch`, built on aioquic_hq.py, to check the harness.

    STOQ_BIN=Tests/Interop/stoq_stand_in.py python3 -m pytest -q Tests/Interop -k stoq
    BENCH_ONLY=stoq bash scripts/bench.sh $PWD/Tests/Interop/stoq_stand_in.py

It accepts the command lines of the spec (issue 2, item 7) and answers in the same
shapes ("listening on [::1]:PORT", "fetched BYTES bytes sha256 HEX in S s (M Mbit/s)"),
so the STOQ code paths of the tests and of the bench (argument building, output parsing,
file checks) can be exercised before STOQ's own commands exist. It is not STOQ: never
report a figure measured with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HQ = Path(__file__).resolve().parent / "aioquic_hq.py"


def main() -> int:
    p = argparse.ArgumentParser(prog="stoq")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", prog="stoq serve", help="serve files (stand-in)")
    s.add_argument("root")
    s.add_argument("--listen", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--ca")
    s.add_argument("--alpn", default="hq-interop")
    s.add_argument("--cipher", action="append", default=[], help="chacha20 only (stand-in)")
    f = sub.add_parser("fetch", prog="stoq fetch", help="fetch a URL (stand-in)")
    f.add_argument("url")
    f.add_argument("-o", dest="output")
    f.add_argument("--cert")
    f.add_argument("--key")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--ca")
    g.add_argument("--insecure", action="store_true")
    f.add_argument("--alpn", default="hq-interop")
    f.add_argument("--cipher", action="append", default=[], help="chacha20 only (stand-in)")
    a = p.parse_args()

    if a.cmd == "serve":
        cmd = [sys.executable, str(HQ), "server", "--root", a.root, "--listen", a.listen,
               "--cert", a.cert, "--key", a.key, "--alpn", a.alpn]
        if a.ca:
            cmd += ["--ca", a.ca]
        if "chacha20" in a.cipher:
            cmd += ["--ciphers", "chacha20"]
        os.execv(sys.executable, cmd)

    out_dir = tempfile.mkdtemp(prefix="stand-in-") if a.output else None
    cmd = [sys.executable, str(HQ), "client", a.url, "--quiet", "--alpn", a.alpn, "--timeout", "60"]
    if a.cert:
        cmd += ["--cert", a.cert, "--key", a.key or ""]
    if a.ca:
        cmd += ["--ca", a.ca]
    if a.insecure:
        cmd += ["--insecure"]
    if "chacha20" in a.cipher:
        cmd += ["--ciphers", "chacha20"]
    if out_dir:
        cmd += ["-o", out_dir]
    import subprocess
    rc = subprocess.call(cmd)
    if out_dir:
        files = list(Path(out_dir).iterdir())
        if rc == 0 and files:
            shutil.move(str(files[0]), a.output)
        shutil.rmtree(out_dir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
