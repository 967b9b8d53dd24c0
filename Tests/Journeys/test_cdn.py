"""The README's CDN journey on the release binary: certificates, `put`, an origin and two edges
as `stoq node` processes, `stoq get --peers` (20 in a row, bit-identical), a mutable name
(`name publish`, `get NAME`, `name show`), `status --json`, an edge killed with `kill -9` mid-fetch,
and SIGTERM of every node.

The 20 fetches are the regression test of the release-only crash of `stoq get --peers`
(issue 11, item 1: a SIGILL in 4 to 121 of every 126 runs before the fix).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import CDN, Procs, User, assert_same_tree, content_id, make_tree, tree_digest


def test_certificates_show_and_verify(user: User) -> None:
    cert, _ = user.cert("origin", region="eu-central")
    show = user.ok("certs", "show", cert)
    assert re.search(r"node id:\s+[0-9a-f]{64}", show.stdout), show.stdout
    verify = user.ok("certs", "verify", "--ca", user.ca, cert)
    assert "ok" in verify.stdout
    # A certificate of another network's CA is refused.
    other = user.home / "other-ca"
    user.ok("certs", "init-ca", "--out", other)
    user.ok("certs", "issue", "--ca-dir", other, "--name", "stranger", "--out", other)
    refused = user.run("certs", "verify", "--ca", user.ca, other / "stranger.pem")
    assert refused.rc != 0, refused.stdout


def get_peers(user: User, cdn: CDN, out: Path, store: Path, *extra: object, peers: str | None = None,
              timeout: float = 180):  # type: ignore[no-untyped-def]
    return user.run("get", cdn.content, "-o", out, "--store", store, "--peers", peers or cdn.peers,
                    *user.tls("client"), "--publisher-key", cdn.publisher_key, *extra, timeout=timeout)


def test_twenty_gets_from_origin_and_edges_are_bit_identical(user: User, cdn: CDN, tmp_path: Path) -> None:
    crashes, failures = [], []
    for i in range(20):
        out, store = tmp_path / f"out-{i}", tmp_path / f"store-{i}"
        r = get_peers(user, cdn, out, store)
        if r.rc < 0 or r.rc >= 128:
            crashes.append((i, r.rc, r.stderr[-500:]))
            continue
        if r.rc != 0:
            failures.append((i, r.rc, r.stderr[-800:]))
            continue
        assert "fetched" in r.stderr and not r.stdout.strip(), (r.stdout, r.stderr[-800:])
        assert_same_tree(cdn.source, out)
        # Keep the disk small: only the trees, not 20 stores.
        subprocess.run(["rm", "-rf", str(store), str(out)], check=False, timeout=60)
    assert not crashes, f"stoq get --peers crashed in {len(crashes)} of 20 runs: {crashes[:3]}"
    assert not failures, f"stoq get --peers failed in {len(failures)} of 20 runs: {failures[:3]}"


def test_get_from_the_local_store_keeps_modes(user: User, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", seed=3, big=200_000)
    store = tmp_path / "store"
    cid = content_id(user.ok("put", source, "--store", store).stdout)
    user.ok("get", cid, "-o", tmp_path / "out", "--store", store)
    assert_same_tree(source, tmp_path / "out")


def test_symlinks_and_empty_directories_round_trip(user: User, tmp_path: Path) -> None:
    """README: `get` restores directories bit-identical. Issue 11 (8): symlinks as links, empty
    directories kept (a link restored as a link with its target as written)."""
    source = tmp_path / "src"
    (source / "empty" / "also-empty").mkdir(parents=True)
    (source / "file.txt").write_text("target\n")
    (source / "link").symlink_to("file.txt")
    store = tmp_path / "store"
    cid = content_id(user.ok("put", source, "--store", store).stdout)
    user.ok("get", cid, "-o", tmp_path / "out", "--store", store)
    assert tree_digest(tmp_path / "out") == tree_digest(source)
    assert (tmp_path / "out" / "link").is_symlink() and (tmp_path / "out" / "link").readlink() == Path("file.txt")
    assert (tmp_path / "out" / "empty" / "also-empty").is_dir()


def test_publish_then_fetch_by_name(user: User, cdn: CDN, tmp_path: Path) -> None:
    name = "videos.example"
    # The operator publishes (the client certificate beside the CA): an origin takes names only from
    # itself, its operators, its publishers and grant holders.
    pub = user.ok("name", "publish", name, cdn.content, "--node", cdn.origin.address, *user.tls(),
                  "--store", tmp_path / "publisher")
    assert name in pub.stdout, pub.stdout
    edge = cdn.edges[0]
    shown = user.ok("name", "show", name, "--node", edge.address, *user.tls("client"))
    assert cdn.content in shown.stdout, shown.stdout
    out = tmp_path / "by-name"
    user.ok("get", name, "-o", out, "--store", tmp_path / "store", "--peers", edge.address, *user.tls("client"),
            "--publisher-key", cdn.publisher_key)
    assert_same_tree(cdn.source, out)
    # name:NAME is the same name.
    out2 = tmp_path / "by-name-2"
    user.ok("get", f"name:{name}", "-o", out2, "--store", tmp_path / "store-2", "--peers", cdn.edges[1].address,
            *user.tls("client"), "--publisher-key", cdn.publisher_key)
    assert_same_tree(cdn.source, out2)


def test_get_through_a_relay(user: User, cdn: CDN, tmp_path: Path) -> None:
    """`stoq get --peers EDGE --via RELAY`: every stream to the edge is carried by a relay node."""
    procs = Procs()
    try:
        relay = user.node(procs, "relay-1", "--role", "relay", store=tmp_path / "relay")
        out = tmp_path / "via-relay"
        r = get_peers(user, cdn, out, tmp_path / "store", "--via", relay.address, peers=cdn.edges[0].address)
        assert r.rc == 0, r.stderr[-2000:]
        assert_same_tree(cdn.source, out)
        assert relay.proc.terminate(timeout=20) == 0
    finally:
        procs.stop_all()


def test_status_json(user: User, cdn: CDN) -> None:
    for node in [cdn.origin, *cdn.edges]:
        r = user.ok("status", "--node", node.address, *user.tls("client"), "--json")
        doc = json.loads(r.stdout)
        assert isinstance(doc, dict) and doc, r.stdout[:500]
        text = json.dumps(doc)
        assert node.name in text, f"status of {node.name} does not name it: {text[:500]}"
        human = user.ok("status", "--node", node.address, *user.tls("client"))
        assert human.stdout.strip(), "status printed nothing"


def test_edge_killed_mid_fetch(user: User, cdn: CDN, tmp_path: Path) -> None:
    """Two edges of their own, limited to 6 MB/s each so the fetch lasts a few seconds; one is
    killed with SIGKILL once the client's progress bar passes 30 %. The fetch completes and the
    tree is bit-identical."""
    procs = Procs()
    try:
        source = make_tree(tmp_path / "big", seed=21, big=12_000_000)
        origin_store = tmp_path / "origin-store"
        cid = content_id(user.ok("put", source, "--store", origin_store).stdout)
        origin = user.node(procs, "origin-k", "--role", "origin", store=origin_store)
        edges = [user.node(procs, name, "--role", "edge", "--upstream", origin.address,
                           "--serve-rate", "6000000", store=tmp_path / name)
                 for name in ("edge-k1", "edge-k2")]
        victim = edges[1]
        out = tmp_path / "out"
        cmd = [user.stoq, "get", cid, "-o", str(out), "--store", str(tmp_path / "client"),
               "--peers", ",".join(e.address for e in edges), *user.tls("client"),
               "--publisher-key", str(origin_store / "publisher.key"), "--progress"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=user.env,
                             start_new_session=True)
        stderr: list[bytes] = []
        killed_at: list[float] = []

        def watch() -> None:
            assert p.stderr is not None
            buf = b""
            while True:
                data = p.stderr.read1(4096) if hasattr(p.stderr, "read1") else p.stderr.read(1)
                if not data:
                    return
                stderr.append(data)
                buf = (buf + data)[-200:]
                percents = re.findall(rb"(\d+\.\d) %", buf)
                if not killed_at and percents and float(percents[-1]) >= 30.0:
                    victim.proc.kill()
                    killed_at.append(float(percents[-1]))

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            stdout, _ = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail("the fetch did not complete within 240 s after an edge was killed")
        t.join(timeout=10)
        err = b"".join(stderr).decode(errors="replace")
        assert p.returncode == 0, f"exit {p.returncode}: {err[-2000:]}"
        assert killed_at, f"the fetch ended before 30 % was shown; nothing was killed: {err[-1000:]}"
        assert_same_tree(source, out)
    finally:
        procs.stop_all()


def test_sigterm_stops_every_node(user: User, cdn: CDN) -> None:
    """Last in this module: every node exits 0, promptly, on SIGTERM."""
    slow = []
    for node in [*cdn.edges, cdn.origin]:
        started = time.monotonic()
        rc = node.proc.terminate(timeout=20)
        took = time.monotonic() - started
        assert rc == 0, f"{node.name} exited {rc} on SIGTERM; stderr: {node.proc.stderr()[-1500:]}"
        slow.append((node.name, round(took, 2)))
    print("SIGTERM to exit:", slow)
