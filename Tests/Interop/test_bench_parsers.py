"""The bench reads other programs' output; these pin the formats it understands."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from conftest import parse_fetched

spec = importlib.util.spec_from_file_location(
    "bench_transport", Path(__file__).resolve().parents[2] / "scripts" / "bench" / "transport.py")
assert spec and spec.loader
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_transport"] = bench  # dataclasses look their module up
spec.loader.exec_module(bench)


def test_stoq_fetch_line() -> None:
    sha = "ab" * 32
    line = f"fetched 1073741824 bytes sha256 {sha} in 3.512 s (2445.9 Mbit/s)"
    assert parse_fetched(line) == (1073741824, sha, 3.512, 2445.9)
    assert bench.FETCHED.search("info: " + line).group(1) == "1073741824"


def test_stoq_bench_transport_lines() -> None:
    text = ("STOQ one connection: 1000 MB in 3.712 s = 2.260 Gbit/s (rtt 0.000123 seconds, cwnd 1234567, "
            "sent 1049000000 B UDP)\nnew connection to first byte: median 1.87 ms, p90 2.45 ms (50 runs)\n")
    got = bench.parse_bench_transport(text)
    assert got == {"bytes": 1000 << 20, "seconds": 3.712, "gbits": 2.26,
                   "median_ms": 1.87, "p90_ms": 2.45, "runs": 50}
    assert bench.parse_bench_transport("no result") is None
    idle = bench.parse_bench_transport(
        text + "memory per idle connection (client + server side): 166.6 KiB over 500 connections\n")
    assert idle and (idle["idle_kib_per_conn"], idle["idle_conns"]) == (166.6, 500)


def test_ngtcp2_first_byte_log_line() -> None:
    log = ("I00000023 0x4fac frm rx 0 1RTT STREAM(0x0b) id=0x3 fin=0 offset=0 len=18 uni=1\n"
           "I00000031 0x4fac frm rx 5 1RTT STREAM(0x0f) id=0x0 fin=1 offset=0 len=1030 uni=0\n")
    m = bench.NGTCP2_FIRST_BYTE.search(log)
    assert m and m.group(1) == "00000031"


def test_optional_stoq_first_byte_report() -> None:
    m = bench.STOQ_FIRST_BYTE.search("first byte after 2.5 ms")
    assert m and (m.group(1), m.group(2)) == ("2.5", "ms")
