"""Local journeys on the release binary: store maintenance (`ls`, `pin`, `unpin`, `gc`,
`store verify [--repair]`), `chunk --stats`, and plain QUIC file transfer (`serve`, `fetch`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from conftest import Procs, User, content_id, make_tree


def test_store_maintenance(user: User, tmp_path: Path) -> None:
    store = tmp_path / "store"
    tree = make_tree(tmp_path / "tree", seed=5, big=300_000)
    single = tmp_path / "single.txt"
    single.write_text("one file\n" * 1000)
    tree_id = content_id(user.ok("put", tree, "--store", store).stdout)
    file_id = content_id(user.ok("put", single, "--store", store).stdout)
    listing = user.ok("ls", "--store", store).stdout
    assert tree_id in listing and file_id in listing, listing

    user.ok("unpin", file_id, "--store", store)
    assert file_id not in user.ok("ls", "--store", store).stdout
    gc = user.ok("gc", "--store", store)
    assert re.search(r"removed [1-9]\d* chunks", gc.stdout), gc.stdout
    assert user.run("get", file_id, "-o", tmp_path / "gone.txt", "--store", store).rc != 0
    user.ok("pin", tree_id, "--name", "tree", "--store", store)
    assert "tree" in user.ok("ls", "--store", store).stdout

    verify = user.ok("store", "verify", "--store", store)
    assert "consistent" in verify.stdout, verify.stdout
    assert "consistent" in user.ok("store", "verify", "--repair", "--store", store).stdout
    user.ok("get", tree_id, "-o", tmp_path / "out", "--store", store)


def test_chunk_stats(user: User, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", seed=6, big=500_000)
    text = user.ok("chunk", "--stats", tree).stdout
    assert re.search(r"dedup ratio:\s+0\.\d+", text), text
    doc = json.loads(user.ok("chunk", "--stats", "--json", "--avg", "8192", tree).stdout)
    assert doc["files"] == 7 and doc["unique_bytes"] < doc["bytes"], doc
    fixed = json.loads(user.ok("chunk", "--stats", "--json", "--fixed", tree).stdout)
    assert fixed["bytes"] == doc["bytes"]


def test_serve_and_fetch(user: User, tmp_path: Path) -> None:
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    payload = os.urandom(2_000_000)
    (www / "sub" / "file.bin").write_bytes(payload)
    cert, key = tmp_path / "www.pem", tmp_path / "www.key"
    user.ok("certs", "issue", "--ca", user.ca_dir, "--name", "www", "--dns", "localhost", "--ip", "::1",
            "--out", tmp_path)
    procs = Procs()
    try:
        server = user.start(procs, "serve", "serve", www, "--listen", "[::1]:0", "--cert", cert, "--key", key)
        port = server.wait_line(r"listening on \[[0-9a-f:]+\]:(\d+)").group(1)
        out = tmp_path / "got.bin"
        r = user.ok("fetch", f"https://[::1]:{port}/sub/file.bin", "-o", out, "--ca", user.ca)
        assert out.read_bytes() == payload
        assert hashlib.sha256(payload).hexdigest() in r.stdout, r.stdout
        # A path outside the root is not served.
        escape = user.run("fetch", f"https://[::1]:{port}/../../etc/passwd", "-o", tmp_path / "x", "--ca", user.ca,
                          timeout=60)
        assert escape.rc != 0 or not (tmp_path / "x").exists() or (tmp_path / "x").read_bytes() != Path(
            "/etc/passwd").read_bytes()
        assert server.terminate(timeout=20) == 0
    finally:
        procs.stop_all()
