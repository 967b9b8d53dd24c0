"""Several event loops on one address (`--event-loops N`, config key `eventLoops`): `stoq serve`
and `stoq node` bind N UDP sockets with SO_REUSEPORT and serve many clients at once."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import Procs, User


def test_serve_with_two_event_loops_serves_many_clients_at_once(user: User, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    payload = os.urandom(3_000_000)
    (www / "blob").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    cert, key = tmp_path / "www.pem", tmp_path / "www.key"
    user.ok("certs", "issue", "--ca", user.ca_dir, "--name", "www", "--dns", "localhost", "--ip", "::1",
            "--out", tmp_path)
    procs = Procs()
    try:
        server = user.start(procs, "serve-loops", "serve", www, "--listen", "[::1]:0", "--cert", cert, "--key", key,
                            "--event-loops", "2")
        port = server.wait_line(r"listening on \[[0-9a-f:]+\]:(\d+)").group(1)

        def fetch(i: int) -> str:
            out = tmp_path / f"got{i}.bin"
            r = user.ok("fetch", f"https://[::1]:{port}/blob", "-o", out, "--ca", user.ca, timeout=90)
            assert out.read_bytes() == payload, f"client {i} got {out.stat().st_size} bytes"
            return r.stdout

        with ThreadPoolExecutor(max_workers=6) as pool:
            outputs = list(pool.map(fetch, range(6)))
        assert all(digest in o for o in outputs), outputs
        assert server.terminate(timeout=20) == 0
    finally:
        procs.stop_all()

    bad = user.run("serve", www, "--listen", "[::1]:0", "--cert", cert, "--key", key, "--event-loops", "0", timeout=30)
    assert bad.rc != 0 and "event loops" in (bad.stderr + bad.stdout), bad.stderr + bad.stdout


def test_node_with_two_event_loops_answers_and_shows_its_setting(user: User) -> None:
    procs = Procs()
    try:
        node = user.node(procs, "loops-origin", "--event-loops", "2")
        # A few clients, each a new connection from a new port: each lands on one of the sockets.
        for _ in range(4):
            doc = json.loads(user.ok("status", "--node", node.address, *user.tls(), "--json", timeout=30).stdout)
            assert doc, doc
    finally:
        procs.stop_all()
    cert, key = user.cert("loops-origin")
    printed = user.ok("node", "--name", "x", "--listen", "[::1]:0", "--cert", cert, "--key", key, "--ca", user.ca,
                      "--store", user.home / "stores" / "x", "--event-loops", "3", "--print-config").stdout
    assert "eventLoops" in printed and "3" in printed.split("eventLoops", 1)[1].split("\n", 1)[0], printed
    bad = user.run("node", "--name", "y", "--listen", "[::1]:0", "--cert", cert, "--key", key, "--ca", user.ca,
                   "--store", user.home / "stores" / "y", "--event-loops", "65", timeout=60)
    assert bad.rc != 0 and "event loops must be 1 to 64" in (bad.stderr + bad.stdout), bad.stderr + bad.stdout
