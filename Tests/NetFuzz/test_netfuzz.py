"""The network fuzzer's short seeded round (make test): a hostile aioquic peer against a running
`stoq node` process ($STOQ_BIN). The node must not crash, must keep answering a legitimate PING
and GET_CHUNK between rounds, and its RSS must come back to within 20 % of its baseline.

`make fuzz` runs the same fuzzer for minutes (NETFUZZ_SECONDS, default 180).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("NETFUZZ_TEST_SECONDS", "20"))
SEED = int(os.environ.get("NETFUZZ_SEED", "20261207"))
# Frame generators to leave out (comma-separated names from stoq_frames.GENERATORS), only to look
# past a known bug while its fix is on its way; empty by default: every frame type is sent.
SKIP = os.environ.get("NETFUZZ_SKIP", "")


@pytest.fixture(scope="module")
def stoq_bin() -> str:
    binary = os.environ.get("STOQ_BIN")
    if not binary or not os.access(binary, os.X_OK):
        pytest.skip("STOQ_BIN is not set to the stoq binary (run through `make test`)")
    return binary


def test_node_survives_a_seeded_hostile_peer(stoq_bin: str, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    cmd = [sys.executable, str(HERE / "netfuzz.py"), "--stoq", stoq_bin, "--seed", str(SEED),
           "--seconds", str(SECONDS), "--json", str(stats), "--keep", str(tmp_path / "work")]
    if SKIP:
        cmd += ["--skip", SKIP]
    # Bounded: attack + settle (at most 90 s) + setup, with room for a loaded machine.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 240)
    print(r.stdout[-6000:])
    print(r.stderr[-3000:], file=sys.stderr)
    assert stats.exists(), f"the fuzzer did not finish: {r.stderr[-2000:]}"
    s = json.loads(stats.read_text())
    assert r.returncode == 0, "; ".join(s.get("failures", [])) or r.stdout[-2000:]
    # The round really attacked: every generator ran, and frames were answered.
    assert s["executions"] > 200, s
    assert len(s["frames_by_type"]) >= 28 - len([n for n in SKIP.split(",") if n]), sorted(s["frames_by_type"])
    assert s["health_checks"] >= 2 and s["health_check_failures"] == 0
    for node, rss in s["rss_kib"].items():
        assert rss["after"] <= rss["baseline"] * 1.2, (node, rss)
