"""Public content and purge, as a publisher, a reader and an operator meet them.

An origin holds one public tree (`stoq put --public`) and one private file; two edges in a chain
(origin <- edge-1 <- edge-2). A reader with no publisher key reads the public tree through edge-2
(the edges obtain its read key from upstream and keep it on disk); the private file stays closed
to everyone but its publisher; `stoq name publish --public` refuses private content; `stoq purge`
through a published name drops the tree's cached chunks on edge-1 and on edge-2 below it; a
restarted edge still opens the public tree with the key it kept while its upstream is gone.
"""

from __future__ import annotations

import json
import os
import random
import re
import stat
from pathlib import Path

from conftest import Procs, Run, User, assert_same_tree, content_id


def make_site(root: Path) -> Path:
    rng = random.Random(12)
    (root / "img").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>stoq</title><img src=img/pic.bin>\n")
    (root / "img" / "pic.bin").write_bytes(rng.randbytes(600_000))
    (root / "notes.txt").write_text("\n".join(f"line {i} of the public notes" for i in range(5000)))
    return root


def get_once(user: User, cid: str, out: Path, peer: str, store: Path) -> Run:
    """`stoq get --peers PEER`, once: a fill across two tiers of edges must not stall."""
    return user.run("get", cid, "-o", out, "--peers", peer, "--store", store, *user.tls("reader")).ok()


def status(user: User, address: str) -> dict:
    return json.loads(user.ok("status", "--node", address, "--json", *user.tls()).stdout)


def test_public_content_through_edges_then_purge(user: User, tmp_path: Path, procs: Procs) -> None:
    site = make_site(tmp_path / "site")
    secret = tmp_path / "secret.txt"
    secret.write_text("for the publisher's eyes only\n" * 100)
    origin_store = tmp_path / "stores" / "origin"

    put = user.ok("put", "--public", site, "--store", origin_store)
    public_id = content_id(put.stdout)
    assert "(public)" in put.stderr, put.stderr
    private_id = content_id(user.ok("put", secret, "--store", origin_store).stdout)
    keyring = origin_store / "public.keys"
    assert keyring.stat().st_size == 64, "one public content: one 64-byte record"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600

    # The publisher reads both from its own store.
    user.ok("get", public_id, "-o", tmp_path / "own-public", "--store", origin_store)
    assert_same_tree(site, tmp_path / "own-public")

    # The publisher is listed: it publishes the name below (names are closed to other certificates).
    origin = user.node(procs, "pub-origin", "--role", "origin", "--publisher", user.cert("publisher")[0], store=origin_store)
    edge1 = user.node(procs, "pub-edge-1", "--role", "edge", "--upstream", origin.address)
    # edge-2 sits below edge-1 (and may also fill from the origin).
    edge2 = user.node(procs, "pub-edge-2", "--role", "edge", "--upstream", edge1.address, "--upstream", origin.address)

    # A reader without any publisher key: the edge hands out the public content's key.
    got = user.ok("get", public_id, "-o", tmp_path / "via-edge-1", "--peers", edge1.address, "--store", tmp_path / "reader-0",
                  *user.tls("reader"))
    assert "is public" in got.stderr, got.stderr
    assert_same_tree(site, tmp_path / "via-edge-1")
    got = get_once(user, public_id, tmp_path / "via-edge", edge2.address, tmp_path / "reader")
    assert "is public" in got.stderr, got.stderr
    assert_same_tree(site, tmp_path / "via-edge")
    for edge in (edge1, edge2):
        learnt = edge.store / "learnt-public.keys"
        assert learnt.exists() and learnt.stat().st_size == 64, f"{edge.name} kept the key it learnt"
        assert stat.S_IMODE(learnt.stat().st_mode) == 0o600

    # Private content: no node hands its key out; a reader without the publisher key cannot read it.
    closed = user.run("get", private_id, "-o", tmp_path / "closed", "--peers", edge2.address,
                      "--store", tmp_path / "reader-2", *user.tls("reader"))
    assert closed.rc != 0, closed.stdout
    assert "key table did not open" in closed.stderr, closed.stderr
    assert not (tmp_path / "closed").exists()
    s2 = status(user, edge2.address)
    assert s2["content_access"]["refused_private"] >= 1, s2["content_access"]
    assert s2["content_access"]["public_keys_held"] == 1

    # publish --public refuses private content and accepts public content.
    publisher = [*user.tls("publisher"), "--store", origin_store]
    refused = user.run("name", "publish", "site", private_id, "--public", "--node", origin.address, *publisher)
    assert refused.rc != 0 and "is private" in refused.stderr, refused.stderr
    published = user.ok("name", "publish", "site", public_id, "--public", "--node", origin.address, *publisher)
    assert "public" in published.stdout, published.stdout

    # Purge by name on edge-1: edge-1 and edge-2 (below it, subscribed) drop the tree's chunks.
    before1 = status(user, edge1.address)["store"]["chunks"]
    before2 = status(user, edge2.address)["store"]["chunks"]
    assert before1 > 0 and before2 > 0
    purge = user.ok("purge", "site", "--node", edge1.address, *user.tls())
    m = re.search(r"dropped (\d+) chunks \(.*?\) there; (\d+) edges? below dropped (\d+) chunks", purge.stdout)
    assert m, purge.stdout
    here, edges_below, below = (int(g) for g in m.groups())
    assert here > 0 and edges_below == 1 and below > 0, purge.stdout
    # What stays is the private file's chunks (its failed get above fetched them through the edges).
    assert status(user, edge1.address)["store"]["chunks"] == before1 - here
    assert status(user, edge2.address)["store"]["chunks"] == before2 - below
    # Nothing left: a second purge drops nothing.
    again = user.ok("purge", public_id, "--node", edge1.address, *user.tls())
    assert "dropped 0 chunks" in again.stdout and "below dropped 0 chunks" in again.stdout, again.stdout

    # The edges fill again from the origin.
    get_once(user, public_id, tmp_path / "refilled", edge2.address, tmp_path / "reader-3")
    assert_same_tree(site, tmp_path / "refilled")

    # A restarted edge-2 still opens the public tree with the key it kept, its upstream gone.
    assert edge2.proc.terminate() == 0
    edge1.proc.terminate()
    origin.proc.terminate()
    edge2b = user.node(procs, "pub-edge-2", "--role", "edge", "--upstream", edge1.address, store=edge2.store)
    kept = user.ok("get", public_id, "-o", tmp_path / "kept", "--peers", edge2b.address, "--store", tmp_path / "reader-4",
                   *user.tls("reader"), "--no-probe")
    assert "is public" in kept.stderr, kept.stderr
    assert_same_tree(site, tmp_path / "kept")
    assert os.path.getsize(edge2.store / "learnt-public.keys") == 64
