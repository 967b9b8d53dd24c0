"""Publishing into a running origin (issue 13 §1): `stoq put PATH --node ORIGIN` while an edge serves.

An origin that lists a publisher (`--publisher NODEID`) and an edge run as processes. A fetch loop
reads a content through the edge while a large file (~40 MB; 200 MB with STOQ_LONG=1) is uploaded
into the origin; no fetch may fail, and the new content is fetchable through the edge at once. An
edited second version sends only its changed chunks, a node that is not a publisher is refused with
a clear message, an upload cut off mid-way resumes without sending the stored chunks again, and a
local `stoq put --store` on the store the node holds says to use `--node`.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
from pathlib import Path

from conftest import Procs, User, content_id

LONG = os.environ.get("STOQ_LONG") == "1"
BIG = (200 if LONG else 40) * 1_000_000
SUMMARY = re.compile(r"in (\d+) chunks; uploaded (\d+) chunks .* dedup saved ([0-9.]+)%; ([0-9.]+) MB/s")


def node_id(user: User, name: str) -> str:
    cert, _ = user.cert(name)
    m = re.search(r"node id:\s+([0-9a-f]{64})", user.ok("certs", "show", cert).stdout)
    assert m, "stoq certs show printed no node id"
    return m.group(1)


def summary(stdout: str) -> tuple[int, int, float, float]:
    """(chunks, chunks uploaded, % dedup saved, MB/s) from put's summary (on stderr)."""
    m = SUMMARY.search(stdout)
    assert m, f"no upload summary in: {stdout[-1500:]}"
    return int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_upload_into_a_running_origin(user: User, procs: Procs, tmp_path: Path) -> None:
    rng = random.Random(13)
    publisher = node_id(user, "publisher")
    origin = user.node(procs, "up-origin", "--role", "origin", "--publisher", publisher)
    edge = user.node(procs, "up-edge", "--role", "edge", "--upstream", origin.address)
    tls = user.tls("publisher")
    key = origin.store / "publisher.key"

    # A first, small content, uploaded and then read through the edge in a loop.
    small = tmp_path / "small.bin"
    small.write_bytes(rng.randbytes(2_000_000))
    small_id = content_id(user.ok("put", small, "--node", origin.address, *tls).stdout)
    assert key.exists(), "the origin made its publisher key for the first upload"

    failures: list[str] = []
    fetches = [0]
    stop = threading.Event()

    def fetch_loop() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            out = tmp_path / f"loop-{i}.bin"
            r = user.run("get", small_id, "-o", out, "--peers", edge.address, "--store", tmp_path / f"loop-store-{i}",
                         "--publisher-key", key, *user.tls("reader"), timeout=120)
            if r.rc != 0 or sha256(out) != sha256(small):
                failures.append(f"exit {r.rc}: {r.stderr[-500:]}")
            fetches[0] += 1

    loop = threading.Thread(target=fetch_loop)
    loop.start()
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(rng.randbytes(BIG))
        put = user.ok("put", big, "--node", origin.address, *tls, timeout=900)
        chunks, sent, saved, rate = summary(put.stderr)
        big_id = content_id(put.stdout)
        assert sent == chunks and saved == 0.0, put.stderr
    finally:
        stop.set()
        loop.join()
    assert fetches[0] >= 1 and not failures, f"{len(failures)} of {fetches[0]} fetches failed during the upload: {failures[:3]}"
    print(f"\nupload: {BIG / 1e6:.0f} MB in {chunks} chunks at {rate} MB/s into a running origin; {fetches[0]} fetches through the edge meanwhile, 0 failed")

    # The new content is there at once, through the edge, without a restart.
    got = tmp_path / "big-out.bin"
    user.ok("get", big_id, "-o", got, "--peers", edge.address, "--store", tmp_path / "reader-big", "--publisher-key", key,
            *user.tls("reader"), timeout=600)
    assert sha256(got) == sha256(big)

    # A second, edited version sends only the chunks that changed.
    data = bytearray(big.read_bytes())
    data[BIG // 2: BIG // 2 + 100_000] = rng.randbytes(100_000)
    data += rng.randbytes(300_000)
    big.write_bytes(bytes(data))
    put2 = user.ok("put", big, "--node", origin.address, *tls, timeout=900)
    chunks2, sent2, saved2, _ = summary(put2.stderr)
    assert content_id(put2.stdout) != big_id
    assert saved2 > 95.0 and sent2 < chunks2 // 20, put2.stderr
    print(f"upload: the edited version sent {sent2} of {chunks2} chunks; dedup saved {saved2}% of the bytes")
    got2 = tmp_path / "big-out-2.bin"
    user.ok("get", content_id(put2.stdout), "-o", got2, "--peers", edge.address, "--store", tmp_path / "reader-big-2",
            "--publisher-key", key, *user.tls("reader"), timeout=600)
    assert sha256(got2) == sha256(big)

    # Anyone else is refused, with what to do.
    refused = user.run("put", small, "--node", origin.address, *user.tls("intruder"))
    assert refused.rc == 1, refused.stdout
    intruder = node_id(user, "intruder")
    assert re.search(r"^stoq: error: .*not a publisher of this origin.*; .*--publisher " + intruder, refused.stderr, re.M), refused.stderr

    # An upload cut off after 100 chunks resumes: the stored chunks are not sent again.
    third = tmp_path / "third.bin"
    third.write_bytes(rng.randbytes(8_000_000))
    cut = user.run("put", third, "--node", origin.address, *tls, "--concurrency", "1", "--exit-after-chunks", "100")
    assert cut.rc == 3, cut.stderr
    resumed = user.ok("put", third, "--node", origin.address, *tls)
    chunks3, sent3, _, _ = summary(resumed.stderr)
    assert sent3 <= chunks3 - 100, resumed.stderr
    got3 = tmp_path / "third-out.bin"
    user.ok("get", content_id(resumed.stdout), "-o", got3, "--peers", origin.address, "--store", tmp_path / "reader-third",
            "--publisher-key", key, *user.tls("reader"))
    assert sha256(got3) == sha256(third)

    # A local put into the store the running node holds says how to publish into it instead.
    local = user.run("put", small, "--store", origin.store, timeout=60)
    assert local.rc == 1 and "--node" in local.stderr and "stoq: error:" in local.stderr, local.stderr
