"""State that survives restarts (issue 13 §2) and the edge registry (§4), on the release binary:
an origin and two edges as `stoq node` processes; the edges register with the origin (with
`--location`, regions from their certificates); a name is published and read through both edges;
the origin restarts and `stoq publish` still tells both edges, which serve the new version at
once; `stoq edges` lists both, nearest first; an edge restarts on a new port, re-registers, and
still knows its name records (it serves the last known record while the origin is down).
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

from conftest import Procs, User, content_id

PARIS = "48.85,2.35"
NEW_YORK = "40.71,-74.01"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def edges_json(user: User, origin: str, *extra: str) -> list[dict]:
    out = user.ok("edges", "--node", origin, *user.tls("rs-client"), "--json", *extra, timeout=60)
    doc = json.loads(out.stdout)
    assert doc["origin"] == origin, doc
    return doc["edges"]


def wait_edges(user: User, origin: str, want: set[str], timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    listed: list[dict] = []
    while time.monotonic() < deadline:
        listed = edges_json(user, origin)
        if {e["address"] for e in listed} >= want:
            return listed
        time.sleep(0.3)
    raise AssertionError(f"{origin} lists {listed}, not every one of {want}, after {timeout} s")


def published(user: User, name: str, peer: str) -> str:
    out = user.ok("name", "show", name, "--node", peer, *user.tls("rs-client"), timeout=60)
    return content_id(out.stdout)


def test_publish_reaches_every_edge_after_an_origin_restart(user: User, procs: Procs, tmp_path: Path) -> None:
    stores = tmp_path / "stores"
    contents = []
    for version in range(3):
        src = tmp_path / f"site-v{version}"
        src.mkdir()
        (src / "index.html").write_text(f"<h1>version {version}</h1>\n" * 50)
        contents.append(content_id(user.ok("put", src, "--store", stores / "origin").stdout))

    origin_address = f"[::1]:{free_udp_port()}"

    def start_origin():
        # rs-publisher publishes the name: the origin lists it (names are closed to other certificates).
        return user.node(procs, "rs-origin", "--role", "origin", "--listen", origin_address, "--publisher", user.cert("rs-publisher")[0],
                         store=stores / "origin", region="eu-central")

    origin = start_origin()
    assert origin.address == origin_address
    edge_paris = user.node(procs, "rs-edge-paris", "--role", "edge", "--upstream", origin_address, "--location", PARIS,
                           store=stores / "paris", region="eu-west")
    edge_ny = user.node(procs, "rs-edge-ny", "--role", "edge", "--upstream", origin_address, "--location", NEW_YORK,
                        store=stores / "ny", region="us-east")

    # Both edges register (node id from their certificate, region from it too, location from the flag).
    listed = wait_edges(user, origin_address, {edge_paris.address, edge_ny.address})
    by_address = {e["address"]: e for e in listed}
    assert by_address[edge_paris.address]["region"] == "eu-west", listed
    assert by_address[edge_ny.address]["region"] == "us-east", listed
    assert abs(by_address[edge_paris.address]["latitude"] - 48.85) < 1e-9, listed

    name = "restart.example"
    tls_pub = [*user.tls("rs-publisher"), "--store", tmp_path / "publisher"]
    pub = user.ok("name", "publish", name, contents[0], "--node", origin_address, *tls_pub)
    assert " v1 " in pub.stdout, pub.stdout
    for edge in (edge_paris, edge_ny):
        assert published(user, name, edge.address) == contents[0]

    # The origin restarts (same address, same store): it kept its subscribers and its edge registry.
    assert origin.proc.terminate() == 0, origin.proc.stderr()
    origin = start_origin()
    pub = user.ok("name", "publish", name, contents[1], "--node", origin_address, *tls_pub)
    assert re.search(r"\b2 edges told", pub.stdout), pub.stdout + origin.proc.stderr()
    # Both serve the new version at once: no TTL (300 s) to wait out.
    for edge in (edge_paris, edge_ny):
        assert published(user, name, edge.address) == contents[1]

    # `stoq edges` after the restart: both, nearest to the asker first.
    from_paris = edges_json(user, origin_address, "--location", PARIS)
    assert [e["address"] for e in from_paris] == [edge_paris.address, edge_ny.address], from_paris
    assert from_paris[0]["distance_km"] < 1 and 5000 < from_paris[1]["distance_km"] < 6500, from_paris
    from_ny = edges_json(user, origin_address, "--location", NEW_YORK)
    assert [e["address"] for e in from_ny] == [edge_ny.address, edge_paris.address], from_ny
    # Without a location, the asker's region (from --region) comes first; the text form is one line per edge.
    text = user.ok("edges", "--node", origin_address, *user.tls("rs-client"), "--region", "us-east").stdout.splitlines()
    assert len(text) == 2 and text[0].startswith(edge_ny.address), text

    # The Paris edge restarts on a new port: it re-registers from there and still knows its names.
    assert edge_paris.proc.terminate() == 0, edge_paris.proc.stderr()
    edge_paris = user.node(procs, "rs-edge-paris", "--role", "edge", "--upstream", origin_address, "--location", PARIS,
                           store=stores / "paris", region="eu-west")
    listed = wait_edges(user, origin_address, {edge_paris.address, edge_ny.address})
    assert len(listed) == 2, listed  # the same node id: the old address is replaced, not added
    status = json.loads(user.ok("status", "--node", edge_paris.address, *user.tls(), "--json").stdout)
    assert status["names"]["cached_names"] >= 1, status["names"]

    # A publish after the edge's restart reaches it at its new address.
    pub = user.ok("name", "publish", name, contents[2], "--node", origin_address, *tls_pub)
    assert re.search(r"\b2 edges told", pub.stdout), pub.stdout + origin.proc.stderr()
    assert published(user, name, edge_paris.address) == contents[2]

    # With the origin gone, the restarted edge still answers with the record it knows.
    assert origin.proc.terminate() == 0
    assert edge_paris.proc.terminate() == 0
    edge_paris = user.node(procs, "rs-edge-paris", "--role", "edge", "--upstream", origin_address, "--location", PARIS,
                           store=stores / "paris", region="eu-west")
    assert published(user, name, edge_paris.address) == contents[2]
