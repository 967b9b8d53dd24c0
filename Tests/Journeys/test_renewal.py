"""Certificate renewal without restarts (issue 13 §3): an issuer (`stoq ca serve`), an origin and an
edge on short-lived certificates that they renew with `--issuer`, while a fetch loop runs through
the edge. No fetch may fail and no connection may drop. Then: a node whose issuer is gone warns,
and once its certificate expires it says so clearly and peers refuse it. And a SIGHUP reload.

The short variant (9 s certificates for about 30 s, ~5 renewals per node) always runs; the
issue's full variant (30 s certificates for 5 minutes, ~15 renewals each) runs with STOQ_LONG=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import Procs, User, content_id, run

LONG = os.environ.get("STOQ_LONG") == "1"


def admin_status(admin: str) -> dict:
    with urllib.request.urlopen(f"http://{admin}/status", timeout=5) as r:
        return json.loads(r.read())


def admin_metric(admin: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def short_cert(user: User, out: Path, name: str, lifetime: str, region: str | None = None) -> tuple[Path, Path]:
    """A certificate of `lifetime` in its own directory (renewal rewrites it)."""
    args = ["certs", "issue", "--ca", user.ca_dir, "--name", name, "--lifetime", lifetime, "--out", out,
            "--ip", "::1"]
    if region:
        args += ["--region", region]
    user.ok(*args)
    return out / f"{name}.pem", out / f"{name}.key"


def start_issuer(user: User, procs: Procs, max_lifetime: str, *extra: object):  # type: ignore[no-untyped-def]
    p = user.start(procs, "issuer", "ca", "serve", "--ca-dir", user.ca_dir, "--listen", "[::1]:0",
                   "--max-lifetime", max_lifetime, "--admin", "0", *extra)
    m = p.wait_line(r"^ready issuer (\[[0-9a-fA-F:]+\]:\d+)", timeout=60)
    return p, m.group(1)


def start_node(user: User, procs: Procs, name: str, cert: tuple[Path, Path], store: Path, *extra: object):  # type: ignore[no-untyped-def]
    p = user.start(procs, name, "node", "--name", name, "--listen", "[::1]:0", "--cert", cert[0], "--key", cert[1],
                   "--ca", user.ca, "--store", store, "--admin", "0", *extra)
    m = p.wait_line(r"^ready (\S+) (\[[0-9a-fA-F:]+\]:\d+) .*admin=(\[[0-9a-fA-F:]+\]:\d+)", timeout=60)
    return p, m.group(2), m.group(3)


def test_renewal_under_a_fetch_loop(user: User, procs: Procs, tmp_path: Path) -> None:
    lifetime, duration = ("30s", 300.0) if LONG else ("9s", 30.0)
    certs = tmp_path / "certs"
    source = tmp_path / "data"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(300_000))
    (source / "b.txt").write_text("renewal " * 5000)
    origin_store = tmp_path / "origin-store"
    cid = content_id(user.ok("put", source, "--store", origin_store).stdout)

    ct_log = tmp_path / "ct"
    issuer, issuer_addr = start_issuer(user, procs, lifetime, "--ct-log", ct_log)
    origin_cert = short_cert(user, certs, "origin", lifetime, region="eu-central")
    edge_cert = short_cert(user, certs, "edge", lifetime, region="eu-west")
    origin, origin_addr, origin_admin = start_node(user, procs, "origin", origin_cert, origin_store,
                                                   "--role", "origin", "--issuer", issuer_addr)
    edge, edge_addr, edge_admin = start_node(user, procs, "edge", edge_cert, tmp_path / "edge-store",
                                             "--role", "edge", "--upstream", origin_addr, "--issuer", issuer_addr)
    first_not_after = {n: admin_status(a)["certificate"]["not_after"] for n, a in (("origin", origin_admin), ("edge", edge_admin))}

    # The fetch loop: a new client process (and connection) each time, through the edge only.
    fetches, failures = 0, []
    start = time.monotonic()
    while time.monotonic() - start < duration:
        out, store = tmp_path / "out", tmp_path / "client-store"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        r = user.run("get", cid, "-o", out, "--store", store, "--peers", edge_addr, *user.tls("client"),
                     "--publisher-key", origin_store / "publisher.key", timeout=60)
        fetches += 1
        if r.rc != 0:
            failures.append((round(time.monotonic() - start, 1), r.rc, r.stderr[-600:]))
        elif (out / "a.bin").read_bytes() != (source / "a.bin").read_bytes():
            failures.append((round(time.monotonic() - start, 1), "content differs", ""))

    status = {n: admin_status(a) for n, a in (("origin", origin_admin), ("edge", edge_admin))}
    issuer_status = admin_status(re.search(r"admin=(\S+)", issuer.stdout()).group(1)) if "admin=" in issuer.stdout() else {}
    renewals = {n: s["certificate"]["renewals"] for n, s in status.items()}
    print(f"\nrenewal run: {lifetime} certificates for {duration:.0f} s; {fetches} fetches, {len(failures)} failed; "
          f"renewals per node {renewals}; issuer {issuer_status.get('issuer', {})}")
    assert not failures, f"{len(failures)} of {fetches} fetches failed: {failures[:3]}"
    assert fetches >= 5, f"only {fetches} fetches in {duration} s"
    # About one renewal per two thirds of a lifetime.
    per = float(lifetime.rstrip("s")) * 2 / 3
    expected = int(duration / per)
    for name, s in status.items():
        cert = s["certificate"]
        assert cert["renewals"] >= max(1, expected - 2), f"{name} renewed {cert['renewals']} times in {duration} s (expected ~{expected}): {cert}"
        assert cert["state"] == "ok" and "warning" not in cert, f"{name}: {cert}"
        assert cert["not_after"] != first_not_after[name]
    # No connection dropped: the edge dialled the origin once and kept that connection through
    # every renewal of both (the origin accepted exactly one connection: the edge's), and the
    # edge never saw its upstream go down.
    assert admin_metric(origin_admin, "stoq_connections_accepted_total") == 1, "the edge's connection to the origin was re-established"
    assert admin_metric(edge_admin, 'stoq_peer_state_changes_total{peer="%s",state="down"}' % origin_addr) == 0
    # The certificate files were rewritten: a restart uses the renewed certificate.
    shown = user.ok("certs", "show", origin_cert[0]).stdout
    assert "region:    eu-central" in shown
    verify = user.ok("certs", "verify", "--ca", user.ca, origin_cert[0]).stdout
    assert verify.startswith("ok:"), verify
    assert "certificate renewed" in origin.stderr() and "certificate renewed" in edge.stderr()
    # Every renewed certificate went into the network's CT log.
    head = user.ok("ct", "head", "--log", ct_log).stdout
    size = int(re.search(r"tree size:\s+(\d+)", head).group(1))
    assert size >= sum(renewals.values()), f"CT log holds {size} entries for {renewals}: {head}"
    human = user.ok("status", "--node", edge_addr, *user.tls("client")).stdout
    assert re.search(r"^cert\s+ok, valid until .* renewal\(s\)", human, re.M), human


def test_issuer_gone_then_expiry(user: User, procs: Procs, tmp_path: Path) -> None:
    # This time the issuer is a node with the issuer role.
    issuer, issuer_addr, _ = start_node(user, procs, "issuer-node", user.cert("issuer-node"), tmp_path / "issuer-store",
                                        "--role", "issuer", "--ca-dir", user.ca_dir, "--max-lifetime", "24s")
    cert = short_cert(user, tmp_path / "certs", "lonely", "24s")
    node, addr, admin = start_node(user, procs, "lonely", cert, tmp_path / "store", "--role", "origin",
                                   "--issuer", issuer_addr)
    # The issuer goes away before the first renewal (at 16 s); attempts give up after 1.25 s. The
    # 8 s between the first failures and expiry leave room for the warning on a busy machine
    # (the journeys run three at a time).
    issuer.terminate()
    deadline = time.monotonic() + 30
    warned = None
    while time.monotonic() < deadline:
        c = admin_status(admin)["certificate"]
        if "warning" in c and c["state"] == "renewal failing":
            warned = c
            break
        time.sleep(0.3)
    assert warned, f"no renewal warning in /status: {admin_status(admin)['certificate']}\n{node.stderr()[-2000:]}"
    assert "certificate renewal keeps failing" in node.stderr()
    human = user.ok("status", "--node", addr, *user.tls("client")).stdout
    assert "warning: certificate renewal keeps failing" in human, human
    # Expiry: a clear line in the log, and peers refuse new connections.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "was not renewed" not in node.stderr():
        time.sleep(0.3)
    log = node.stderr()
    assert re.search(r"stoq: error: the certificate of lonely .* expired at .* and was not renewed", log), log[-3000:]
    assert admin_status(admin)["certificate"]["state"] == "expired"
    # (X.509 times have whole seconds: a handshake in the second of expiry may still pass.)
    deadline = time.monotonic() + 10
    while True:
        refused = user.run("status", "--node", addr, *user.tls("client"), timeout=60)
        if refused.rc != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert refused.rc != 0, f"a peer still trusts the expired node: {refused.stdout[-500:]}"
    assert "expired" in refused.stderr.lower() or "handshake" in refused.stderr.lower() or "certificate" in refused.stderr.lower(), refused.stderr


def test_sighup_reloads_the_certificate(user: User, procs: Procs, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    cert = short_cert(user, certs, "hup", "1h")
    node, addr, admin = start_node(user, procs, "hup", cert, tmp_path / "store", "--role", "origin")
    before = admin_status(admin)["certificate"]
    assert before["issuer"] == "none"
    # An operator renews by other means (a longer certificate, same name), then sends SIGHUP.
    short_cert(user, certs, "hup", "2d")
    node.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and admin_status(admin)["certificate"]["not_after"] == before["not_after"]:
        time.sleep(0.2)
    after = admin_status(admin)["certificate"]
    assert after["not_after"] != before["not_after"] and after["lifetime_s"] > 100_000, after
    assert "reloaded the certificate" in node.stderr()
    # New handshakes use it; a broken file on SIGHUP is refused and the node keeps serving.
    user.ok("status", "--node", addr, *user.tls("client"))
    cert[0].write_text("not a certificate\n")
    node.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "could not reload the certificate" not in node.stderr():
        time.sleep(0.2)
    assert "could not reload the certificate" in node.stderr(), node.stderr()[-2000:]
    assert admin_status(admin)["certificate"]["not_after"] == after["not_after"]
    user.ok("status", "--node", addr, *user.tls("client"))
