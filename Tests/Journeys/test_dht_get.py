"""Finding sources without --peers (issue 13 §4), on the release binary: two DHT nodes, an origin
and an edge that joined through them; `stoq get ID --bootstrap` with no --peers finds the origin
and the edge that cached the content, fetches and verifies it; a purge on the edge withdraws its
provider record; `stoq get NAME --bootstrap` resolves a Nexus name first; an origin restarted on
another port is found at its new address."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from conftest import Procs, Run, User, assert_same_tree, content_id, make_tree

FOUND = re.compile(r"found (\d+) providers? of (stoq:\S+) through Nexus in ([0-9.]+) ms \((\d+) requests, (\d+) rounds\)(?:: (.*))?")


def providers(run: Run) -> tuple[int, str, float]:
    """(count, the provider list, lookup ms) from `stoq get --bootstrap`'s stderr."""
    m = FOUND.search(run.stderr)
    assert m, f"no provider line in: {run.stderr[-2000:]}"
    return int(m.group(1)), m.group(6) or "", float(m.group(3))


def test_get_by_content_id_through_the_dht(user: User, tmp_path: Path, procs: Procs) -> None:
    source = make_tree(tmp_path / "data", seed=31, big=400_000)
    origin_store = tmp_path / "stores" / "origin"
    cid = content_id(user.ok("put", source, "--store", origin_store).stdout)
    key = origin_store / "publisher.key"
    tls = user.tls("dht-reader")

    first = user.node(procs, "dhtget-1", "--dht", store=tmp_path / "stores" / "dht-1")
    second = user.node(procs, "dhtget-2", "--bootstrap", first.address, store=tmp_path / "stores" / "dht-2")
    second.proc.wait_line(r"^dht \S+ joined", timeout=60)
    origin = user.node(procs, "dhtget-origin", "--role", "origin", "--bootstrap", first.address, store=origin_store)
    joined = origin.proc.wait_line(r"^dht \S+ joined .*; (\d+) content ids provided", timeout=60)
    assert int(joined.group(1)) >= 1, joined.group(0)
    edge = user.node(procs, "dhtget-edge", "--role", "edge", "--upstream", origin.address,
                     "--bootstrap", first.address, store=tmp_path / "stores" / "edge")
    edge.proc.wait_line(r"^dht \S+ joined", timeout=60)

    def get(target: str, out: Path, *extra: object) -> Run:
        # A store of its own each time: chunks a reader already holds are not fetched again.
        return user.ok("get", target, "-o", out, "--store", tmp_path / "readers" / out.name, "--bootstrap", first.address,
                       "--publisher-key", key, *tls, *extra, timeout=120)

    # Only the origin has it yet: found through the DHT, with no --peers.
    r = get(cid, tmp_path / "out-1")
    count, listed, ms = providers(r)
    assert count == 1 and origin.address in listed, r.stderr
    assert_same_tree(source, tmp_path / "out-1")
    print(f"provider lookup through 4 DHT nodes: {ms:.1f} ms")

    # A reader fetches through the edge: the edge caches the manifest and announces it (batched,
    # one flush a second); the next reader finds both and fetches from both.
    user.ok("get", cid, "-o", tmp_path / "warm", "--store", tmp_path / "readers" / "warm", "--peers", edge.address,
            "--publisher-key", key, *tls, timeout=120)
    deadline = time.monotonic() + 30
    while True:
        r = get(cid, tmp_path / "out-2")
        count, listed, _ = providers(r)
        if count == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert count == 2 and origin.address in listed and edge.address in listed, r.stderr
    assert_same_tree(source, tmp_path / "out-2")

    # Eviction (here a purge) withdraws the edge's provider record. The lookups below use a reader
    # store that already holds the content (out-2's): a reader that fetched through the edge
    # while the withdrawal was still on its way would make the edge cache and announce it again.
    user.ok("purge", cid, "--node", edge.address, *user.tls())  # the operator purges (issue 15)
    deadline = time.monotonic() + 30
    while True:
        r = user.ok("get", cid, "-o", tmp_path / "out-3", "--store", tmp_path / "readers" / "out-2",
                    "--bootstrap", first.address, "--publisher-key", key, *tls, timeout=120)
        count, listed, _ = providers(r)
        if count == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert count == 1 and edge.address not in listed and origin.address in listed, r.stderr
    assert_same_tree(source, tmp_path / "out-3")

    # A Nexus name feeds `get`: resolved (saying so on stderr), then fetched the same way.
    owner = tmp_path / "owner.pem"
    user.ok("name", "keygen", "--out", owner)
    user.ok("name", "set", "dhtget.example", cid, "--owner", owner, "--record-version", "1", "--bootstrap", second.address, *tls)
    user.ok("name", "set", "dhtget.example", cid, "--owner", owner, "--record-version", "2", "--bootstrap", first.address, *tls)
    r = get("dhtget.example", tmp_path / "out-4")
    assert "(DHT record v2" in r.stderr, r.stderr
    assert_same_tree(source, tmp_path / "out-4")

    # The origin restarts on another port: its new record replaces the old one.
    old = origin.address
    assert origin.proc.terminate(timeout=20) == 0
    origin = user.node(procs, "dhtget-origin", "--role", "origin", "--bootstrap", first.address, store=origin_store)
    origin.proc.wait_line(r"^dht \S+ joined", timeout=60)
    assert origin.address != old
    r = get(cid, tmp_path / "out-5")
    count, listed, _ = providers(r)
    assert origin.address in listed and old not in listed, r.stderr
    assert_same_tree(source, tmp_path / "out-5")

    # Without --cert the DHT cannot be asked: a clear error, before anything runs.
    bad = user.run("get", cid, "-o", tmp_path / "out-6", "--store", tmp_path / "readers" / "out-6", "--bootstrap", first.address)
    assert bad.rc != 0 and "--cert" in bad.stderr, bad.stderr


def test_finding_providers_on_40_nodes(user: User, tmp_path: Path, procs: Procs) -> None:
    """STOQ_LONG=1: 40 DHT node processes; the time to find a content's providers from a client.
    (Always run: the same measurement in simulation, NexusTests' findingProvidersOn40Nodes.)"""
    import pytest

    if os.environ.get("STOQ_LONG") != "1":
        pytest.skip("40 node processes: set STOQ_LONG=1")
    source = make_tree(tmp_path / "data", seed=32, big=100_000)
    origin_store = tmp_path / "stores" / "origin"
    cid = content_id(user.ok("put", source, "--store", origin_store).stdout)
    first = user.node(procs, "dht40-0", "--dht", store=tmp_path / "stores" / "n0")
    nodes = [first]
    for i in range(1, 39):
        nodes.append(user.node(procs, f"dht40-{i}", "--bootstrap", nodes[(i * 7) % i].address,
                               store=tmp_path / "stores" / f"n{i}"))
    for n in nodes[1:]:
        n.proc.wait_line(r"^dht \S+ joined", timeout=120)
    origin = user.node(procs, "dht40-origin", "--role", "origin", "--bootstrap", nodes[20].address, store=origin_store)
    origin.proc.wait_line(r"^dht \S+ joined", timeout=120)
    times = []
    for i in range(0, 39, 4):
        r = user.ok("get", cid, "-o", tmp_path / f"out-{i}", "--store", tmp_path / "readers" / str(i), "--bootstrap", nodes[i].address,
                    "--publisher-key", origin_store / "publisher.key", *user.tls("dht40-reader"), timeout=120)
        count, listed, ms = providers(r)
        assert count >= 1 and origin.address in listed, r.stderr
        times.append(ms)
    times.sort()
    print(f"provider lookup on 40 node processes: median {times[len(times) // 2]:.1f} ms, max {times[-1]:.1f} ms")
