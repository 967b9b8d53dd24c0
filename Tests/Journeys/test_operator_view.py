"""An operator's view (issue 14 §5): `stoq --version`, JSON logs, and a `# HELP` line on every
metric a node exports, on the release binary."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request

from conftest import Procs, User, content_id


def test_version_is_one_line(user: User) -> None:
    out = user.ok("--version")
    assert re.fullmatch(r"stoq \d+\.\d+\.\d+ \(stoq/1\)\n", out.stdout), out.stdout


def test_json_logs_and_metric_help(user: User, procs: Procs) -> None:
    node = user.node(procs, "json-logger", "--log-format", "json", "--log-level", "debug", "--admin", "0")
    admin = re.search(r"admin=(\[[0-9a-fA-F:]+\]:\d+)", node.proc.stdout())
    assert admin, node.proc.stdout()
    with urllib.request.urlopen(f"http://{admin.group(1)}/metrics", timeout=5) as r:
        text = r.read().decode()
    lines = text.splitlines()
    types = [i for i, line in enumerate(lines) if line.startswith("# TYPE ")]
    assert types, text
    for i in types:
        name = lines[i].split()[2]
        assert i > 0 and lines[i - 1].startswith(f"# HELP {name} "), f"no HELP for {name}:\n{text}"
    node.proc.terminate()
    time.sleep(0.2)
    stderr = node.proc.stderr().splitlines()
    logged = [line for line in stderr if line.startswith("{")]
    assert logged, "the node logged nothing at debug level:\n" + "\n".join(stderr)
    for line in logged:
        record = json.loads(line)  # one JSON object per line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
    text_lines = [line for line in stderr
                  if re.match(r"^\d{4}-\d\d-\d\dT\S+ (trace|debug|info|notice|warning|error|critical) ", line)]
    assert not text_lines, text_lines


def test_a_wrong_log_format_is_one_clear_line(user: User, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert, key = user.cert("bad-format")
    out = user.run("node", "--name", "bad-format", "--listen", "[::1]:0", "--cert", cert, "--key", key,
                   "--ca", user.ca, "--store", tmp_path / "s", "--log-format", "xml")
    assert out.rc != 0
    assert "--log-format takes text or json" in out.stderr, out.stderr


def test_a_node_without_store_uses_home(user: User, procs: Procs) -> None:
    """`stoq node` without --store keeps its store under ~/.stoq/NAME (it used to die with an
    argument-parser internal error)."""
    cert, key = user.cert("storeless")
    p = user.start(procs, "storeless", "node", "--name", "storeless", "--listen", "[::1]:0", "--cert", cert,
                   "--key", key, "--ca", user.ca)
    p.wait_line(r"^ready storeless ", timeout=60)
    assert (user.home / ".stoq" / "storeless").is_dir()
    assert "parsable argument" not in p.stderr()


def test_init_makes_a_network_s_certificates_in_one_command(user: User, procs: Procs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`stoq init NAME… --dir D`: a CA once, a certificate per node (and a client), kept on a re-run;
    a node starts on them."""
    d = tmp_path / "net"
    out = user.ok("init", "origin", "edge-1@eu-west", "--dir", d, "--lifetime", "2h", "--ip", "::1")
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["origin", "edge-1", "client"], out.stdout
    assert all(len(line.split()) == 4 and len(line.split()[1]) == 64 for line in lines), out.stdout
    ca = (d / "ca.pem").read_bytes()
    origin = (d / "origin.pem").read_bytes()
    again = user.ok("init", "edge-2", "--dir", d)
    assert [line.split()[0] for line in again.stdout.splitlines()] == ["edge-2", "client"]
    assert (d / "ca.pem").read_bytes() == ca and (d / "origin.pem").read_bytes() == origin
    assert "eu-west" in user.ok("certs", "show", d / "edge-1.pem").stdout
    bad = user.run("init", "bad name", "--dir", tmp_path / "other")
    assert bad.rc != 0 and "is not a node name" in bad.stderr and not (tmp_path / "other").exists()
    p = user.start(procs, "init-origin", "node", "--name", "origin", "--listen", "[::1]:0", "--cert", d / "origin.pem",
                   "--key", d / "origin.key", "--ca", d / "ca.pem", "--store", tmp_path / "store")
    p.wait_line(r"^ready origin ", timeout=60)


def _status(user: User, node: str) -> dict:
    return json.loads(user.ok("status", "--node", node, *user.tls(), "--json", timeout=30).stdout)


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_live_transfers_names_log_lines_and_counters_across_a_restart(user: User, procs: Procs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 14 §5: during a fetch through an edge from a slowed origin, `stoq status` on the origin
    shows one live transfer with its rate and the edge by name, and the edge shows its fill from
    the origin by name; each node logs one info line per content it served or filled; after a
    restart the origin's served totals (status and Prometheus) continue from the saved ones."""
    data = tmp_path / "big.bin"
    data.write_bytes(os.urandom(6_000_000))
    origin_store = tmp_path / "origin"
    cid = content_id(user.ok("put", data, "--store", origin_store).stdout)
    # The origin serves at most 1.5 MB/s, so the 6 MB fetch takes about 4 s: long enough to watch.
    origin = user.node(procs, "opv-origin", "--role", "origin", "--serve-rate", "1500000", "--log-format", "json",
                       store=origin_store)
    edge = user.node(procs, "opv-edge", "--role", "edge", "--upstream", origin.address, "--log-format", "json",
                     store=tmp_path / "edge")
    get = user.start(procs, "opv-get", "get", cid, "-o", tmp_path / "out", "--store", tmp_path / "client",
                     "--peers", edge.address, *user.tls("opv-client"), "--publisher-key", origin_store / "publisher.key")

    live_origin = live_edge = None
    deadline = time.monotonic() + 30
    while get.p.poll() is None and time.monotonic() < deadline and not (live_origin and live_edge):
        if not live_origin:
            doc = _status(user, origin.address)
            moving = [t for t in doc["transfers"] if t["bytes"] > 0 and t["rate_bytes_per_second"] > 0]
            if moving:
                live_origin = (doc, user.ok("status", "--node", origin.address, *user.tls(), timeout=30).stdout)
        if not live_edge:
            doc = _status(user, edge.address)
            if any(t["direction"] == "fetch" and t["bytes"] > 0 for t in doc["transfers"]):
                live_edge = (doc, user.ok("status", "--node", edge.address, *user.tls(), timeout=30).stdout)
        time.sleep(0.1)
    assert live_origin, f"the origin never showed a live transfer during the fetch:\n{_status(user, origin.address)}"
    doc, human = live_origin
    assert len(doc["transfers"]) == 1, doc["transfers"]
    t = doc["transfers"][0]
    assert t["direction"] == "serve" and t["content"] == cid and t["peer"].startswith("opv-edge ("), t
    assert re.search(r"^transfers 1 active$", human, re.M), human
    assert '["' not in human and "[:]" not in human, "a Swift dictionary in the status:\n" + human
    assert re.search(rf"^  serve {cid} to opv-edge \([0-9a-f]{{16}}\) .* \d[\d.]* [KM]?i?B/s ", human, re.M), human
    assert live_edge, "the edge never showed its fill from the origin"
    doc, human = live_edge
    fills = [t for t in doc["transfers"] if t["direction"] == "fetch"]
    assert len(fills) == 1 and fills[0]["content"] == cid and fills[0]["peers"][0].startswith("opv-origin ("), fills
    assert f"fetch {cid} from opv-origin (" in human, human
    # Peers and routing nodes by name: the edge probes its upstream, the origin.
    up = [p for p in doc.get("peers", []) if p["address"] == origin.address]
    assert up and up[0]["name"].startswith("opv-origin ("), doc.get("peers")
    assert re.search(r"^  opv-origin \([0-9a-f]{16}\) at ", human, re.M), human

    assert get.p.wait(timeout=60) == 0, get.stderr()

    def lines(node, message: str) -> list[dict]:
        return [r for r in _json_lines(node.proc.stderr()) if r.get("message") == message and r.get("content") == cid]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (lines(origin, "served content") and lines(edge, "served content")
                                               and lines(edge, "fetched content from upstream")):
        time.sleep(0.2)
    time.sleep(1.5)  # a second line, if any, would come within a sweep
    served = lines(origin, "served content")
    assert len(served) == 1, served
    assert served[0]["peer"].startswith("opv-edge (") and int(served[0]["bytes"]) >= 6_000_000, served
    assert float(served[0]["seconds"]) > 1 and int(served[0]["rate_bytes_per_second"]) > 0, served
    to_client = lines(edge, "served content")
    assert len(to_client) == 1 and to_client[0]["peer"].startswith("opv-client ("), to_client
    filled = lines(edge, "fetched content from upstream")
    assert len(filled) == 1 and filled[0]["peers"].startswith("opv-origin (") and int(filled[0]["bytes"]) >= 6_000_000, filled
    assert all(r["level"] == "info" for r in served + to_client + filled)

    # Totals survive a restart: counters.json is written at shutdown and read at start.
    served_bytes = _status(user, origin.address)["totals"]["served_bytes"]
    assert served_bytes >= 6_000_000
    origin.proc.terminate()
    edge.proc.terminate()
    saved = json.loads((origin_store / "counters.json").read_text())
    assert saved["servedBytes"] == served_bytes, saved
    assert json.loads((tmp_path / "edge" / "counters.json").read_text())["cacheMisses"] > 0
    again = user.node(procs, "opv-origin", "--role", "origin", "--admin", "0", store=origin_store)
    totals = _status(user, again.address)["totals"]
    assert totals["served_bytes"] == served_bytes and totals["served_chunks"] == saved["servedChunks"], totals
    admin = re.search(r"admin=(\[[0-9a-fA-F:]+\]:\d+)", again.proc.stdout())
    assert admin, again.proc.stdout()
    with urllib.request.urlopen(f"http://{admin.group(1)}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    m = re.search(r"^stoq_served_bytes_total (\d+(?:\.\d+)?)", metrics, re.M)
    assert m and float(m.group(1)) == served_bytes, metrics
    # A corrupt file is not fatal: the node starts at zero and says so.
    again.proc.terminate()
    (origin_store / "counters.json").write_text("{not json")
    third = user.node(procs, "opv-origin", "--role", "origin", store=origin_store)
    assert _status(user, third.address)["totals"]["served_bytes"] == 0
    assert "ignoring a corrupt state file" in third.proc.stderr()
