"""Access grants and revocation (issue 15 item 1) on the release binary over [::1].

An origin and an edge below it run with an operator (`--operator`, also the origin's publisher).
STATUS is refused to a foreign certificate of the network with ERROR 7 (the issue's "read any
node's STATUS JSON" is now a regression check) and allowed with a `status` grant the operator
issued; a publish grant narrowed offline to `site/blog` and to one peer lets that peer upload in
scope and is refused out of scope; PURGE on the edge needs a grant; an expired grant is refused; and a grant the operator revokes at
the origin is refused **at the edge** once the origin passed the signed revocation list down.
Nodes start once; the whole file takes a few seconds.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from conftest import Procs, User, content_id, run


def node_id(user: User, name: str) -> str:
    cert, _ = user.cert(name)
    m = re.search(r"node id:\s+([0-9a-f]{64})", user.ok("certs", "show", cert).stdout)
    assert m, "stoq certs show printed no node id"
    return m.group(1)


def test_grants_status_publish_expiry_and_revocation_at_an_edge(user: User, procs: Procs, tmp_path: Path) -> None:
    operator = node_id(user, "gr-operator")
    op_cert, op_key = user.cert("gr-operator")
    reader_cert, _ = user.cert("gr-reader")
    origin = user.node(procs, "gr-origin", "--role", "origin", "--publisher", operator, "--operator", operator)
    edge = user.node(procs, "gr-edge", "--role", "edge", "--upstream", origin.address, "--operator", operator)
    op_tls, reader_tls = user.tls("gr-operator"), user.tls("gr-reader")
    signer = ["--cert", op_cert, "--key", op_key]
    # A grant that expires in a second, made now and used after the steps below (no idle wait).
    short = user.ok("grant", "create", "--rights", "status", "--expires", "1s", *signer).stdout.strip()
    short_made = time.monotonic()

    # 1. A foreign certificate of the network no longer reads STATUS (before: the whole JSON); the operator does.
    refused = user.run("status", "--node", origin.address, *reader_tls, "--json")
    assert refused.rc != 0, refused.stdout
    assert re.search(r"^stoq: error: .*no grant: the request needs an access grant with right status for scope this node", refused.stderr, re.M), refused.stderr
    assert '"totals"' not in refused.stdout
    assert "totals" in json.loads(user.ok("status", "--node", origin.address, *op_tls, "--json").stdout)

    # 2. With a status grant (bound to the reader's certificate) the reader reads it.
    status_grant = tmp_path / "status.grant"
    user.ok("grant", "create", "--rights", "status", "--expires", "1h", "--peer", reader_cert, "-o", status_grant, *signer)
    doc = json.loads(user.ok("status", "--node", origin.address, *reader_tls, "--grant", status_grant, "--json").stdout)
    assert "totals" in doc
    # Bound to the reader: the same grant is useless to another certificate.
    other = user.run("status", "--node", origin.address, *user.tls("gr-other"), "--grant", status_grant, "--json")
    assert other.rc != 0 and "bound to node" in other.stderr, other.stderr
    shown = json.loads(user.ok("grant", "inspect", status_grant, "--ca", user.ca, "--json").stdout)
    assert shown["rights"] == ["status"] and shown["valid"] and shown["publisher"] == operator, shown

    # 3. A publish grant narrowed offline to site/blog and to the reader: in scope works, out of scope is refused.
    publish_grant = user.ok("grant", "create", "--rights", "publish,status", "--scope", "name:site/", *signer).stdout.strip()
    narrowed = user.ok("grant", "narrow", publish_grant, "--rights", "publish", "--scope", "name:site/blog/", "--peer", reader_cert).stdout.strip()
    inspected = json.loads(user.ok("grant", "inspect", narrowed, "--json").stdout)
    assert inspected["rights"] == ["publish"] and inspected["blocks"] == 2 and inspected["scopes"] == [["name:site/"], ["name:site/blog/"]], inspected
    for d in ("site/blog", "site/shop"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "page.html").write_text(f"<h1>{d}</h1>\n" * 100)
    put = run([user.stoq, "put", "site/blog/page.html", "--node", origin.address, *reader_tls, "--grant", narrowed], user.env, timeout=60, cwd=tmp_path)
    assert put.rc == 0 and put.stdout.startswith("stoq:"), put.stderr
    out = run([user.stoq, "put", "site/shop/page.html", "--node", origin.address, *reader_tls, "--grant", narrowed], user.env, timeout=60, cwd=tmp_path)
    assert out.rc != 0 and re.search(r"no grant: .*right publish for scope name 'site/shop/page.html'", out.stderr), out.stderr
    # Without a grant the reader is no publisher (unchanged message).
    plain = run([user.stoq, "put", "site/blog/page.html", "--node", origin.address, *reader_tls], user.env, timeout=60, cwd=tmp_path)
    assert plain.rc != 0 and "not a publisher of this origin" in plain.stderr, plain.stderr

    # 4. An expired grant is refused.
    time.sleep(max(0.0, 2.1 - (time.monotonic() - short_made)))
    expired = user.run("status", "--node", origin.address, *reader_tls, "--grant", short, "--json")
    assert expired.rc != 0 and "expired" in expired.stderr, expired.stderr

    # 5. Revocation reaches the edge: the grant works there, the operator revokes it at the origin,
    #    the origin passes the signed list down, and the edge refuses it.
    edge_grant = user.ok("grant", "create", "--rights", "status,purge", "--expires", "1h", *signer).stdout.strip()
    assert "totals" in json.loads(user.ok("status", "--node", edge.address, *reader_tls, "--grant", edge_grant, "--json").stdout)
    # PURGE on the edge (it lists the operator): refused without a grant, taken with one.
    content = put.stdout.strip().splitlines()[-1]
    no_purge = user.run("purge", content, "--node", edge.address, *reader_tls)
    assert no_purge.rc != 0 and "right purge for scope content" in no_purge.stderr, no_purge.stderr
    assert "purged " + content in user.ok("purge", content, "--node", edge.address, *reader_tls, "--grant", edge_grant).stdout
    gid = json.loads(user.ok("grant", "inspect", edge_grant, "--json").stdout)["id"]
    revoked = user.ok("grant", "revoke", gid, "--node", origin.address, *op_tls).stdout
    assert f"revoked grant {gid}" in revoked and "version 1" in revoked, revoked
    deadline = time.monotonic() + 8
    while True:
        r = user.run("status", "--node", edge.address, *reader_tls, "--grant", edge_grant, "--json")
        if r.rc != 0:
            assert "revoked" in r.stderr, r.stderr
            break
        assert time.monotonic() < deadline, "the edge still accepts a grant revoked at the origin"
        time.sleep(0.3)
    # The origin refuses it too, and keeps the list across a restart of its state (persisted).
    assert (origin.store / "revocations.json").exists()
    assert (edge.store / "revocations.json").exists()
    again = user.run("status", "--node", origin.address, *reader_tls, "--grant", edge_grant, "--json")
    assert again.rc != 0 and "revoked" in again.stderr, again.stderr


def test_closed_by_default_relay_names_and_revocation_pulled_on_connect(user: User, procs: Procs, tmp_path: Path) -> None:
    """STATUS closed on a node started without --operator; the relay right (role, grant, none);
    names under a publish grant's scope; a revocation an edge learns by asking its upstream when
    it connects after the revocation (it was never pushed to it)."""
    operator = node_id(user, "gr-operator")
    op_cert, op_key = user.cert("gr-operator")
    op_tls, reader_tls = user.tls("gr-operator"), user.tls("gr-reader")
    signer = ["--cert", op_cert, "--key", op_key]
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("relayed bytes\n" * 2000)
    origin_store = tmp_path / "stores" / "gr2-origin"
    cid = content_id(user.ok("put", source, "--store", origin_store).stdout)
    origin = user.node(procs, "gr2-origin", "--role", "origin", "--publisher", operator, "--operator", operator, store=origin_store)
    relay = user.node(procs, "gr2-relay", "--role", "relay", "--operator", operator)

    # 1. Closed by default: a node with no --operator answers STATUS to the client certificate
    #    beside its CA (the default operator, noted at start), not to another certificate.
    plain = user.node(procs, "gr2-plain")
    assert "client.pem" in plain.proc.stderr() and "operator:" in plain.proc.stderr(), plain.proc.stderr()[-2000:]
    refused = user.run("status", "--node", plain.address, *reader_tls, "--json")
    assert refused.rc != 0 and "no grant: the request needs an access grant with right status" in refused.stderr, refused.stderr
    assert "totals" in json.loads(user.ok("status", "--node", plain.address, *user.tls(), "--json").stdout)
    no_purge = user.run("purge", cid, "--node", plain.address, *reader_tls)
    assert no_purge.rc != 0 and "right purge" in no_purge.stderr, no_purge.stderr

    # 2. The relay right: a plain certificate is refused; a relay grant from the relay's operator is carried.
    def via(out: str, *extra: object):  # type: ignore[no-untyped-def]
        return user.run("get", cid, "-o", tmp_path / out, "--store", tmp_path / f"store-{out}", "--peers", origin.address,
                        "--via", relay.address, *reader_tls, "--publisher-key", origin_store / "publisher.key",
                        "--source-retry-seconds", "3", "--no-routing", *extra, timeout=60)
    denied = via("no-grant")
    assert denied.rc != 0 and "right relay" in denied.stderr, denied.stderr[-3000:]
    relay_grant = tmp_path / "relay.grant"
    user.ok("grant", "create", "--rights", "relay", "--expires", "10m", "--peer", user.cert("gr-reader")[0], "-o", relay_grant, *signer)
    carried = via("with-grant", "--grant", relay_grant)
    assert carried.rc == 0, carried.stderr[-3000:]
    assert (tmp_path / "with-grant" / "a.txt").read_text() == (source / "a.txt").read_text()
    # A status grant carries no relay right.
    status_only = tmp_path / "status-only.grant"
    user.ok("grant", "create", "--rights", "status", "--expires", "10m", "-o", status_only, *signer)
    wrong = via("wrong-right", "--grant", status_only)
    assert wrong.rc != 0 and "right relay" in wrong.stderr, wrong.stderr[-3000:]

    # 3. Names on an origin that lists publishers: the reader needs a publish grant covering the name.
    owner = tmp_path / "owner.pem"
    def publish(name: str, *extra: object):  # type: ignore[no-untyped-def]
        return user.run("name", "publish", name, cid, "--node", origin.address, "--owner-key", owner, *reader_tls, *extra)
    no_name = publish("site/blog/home")
    assert no_name.rc != 0 and "right publish for scope name 'site/blog/home'" in no_name.stderr, no_name.stderr
    names = user.ok("grant", "create", "--rights", "publish", "--scope", "name:site/blog/", "--expires", "10m", *signer).stdout.strip()
    assert "published site/blog/home v1" in publish("site/blog/home", "--grant", names).ok().stdout
    outside = publish("site/shop/home", "--grant", names)
    assert outside.rc != 0 and "right publish for scope name 'site/shop/home'" in outside.stderr, outside.stderr
    # The operator publishes without a grant.
    assert "published" in user.ok("name", "publish", "ops/home", cid, "--node", origin.address, "--owner-key", tmp_path / "op-owner.pem", *op_tls).stdout

    # 4. Revocation pulled on connect: revoke at the origin first, then start an edge below it.
    late = user.ok("grant", "create", "--rights", "status", "--expires", "10m", *signer).stdout.strip()
    gid = json.loads(user.ok("grant", "inspect", late, "--json").stdout)["id"]
    assert "version 1" in user.ok("grant", "revoke", gid, "--node", origin.address, *op_tls).stdout
    edge = user.node(procs, "gr2-edge", "--role", "edge", "--upstream", origin.address, "--operator", operator)
    deadline = time.monotonic() + 8
    while True:
        r = user.run("status", "--node", edge.address, *reader_tls, "--grant", late, "--json")
        if r.rc != 0:
            assert "revoked" in r.stderr, r.stderr
            break
        assert time.monotonic() < deadline, "an edge started after the revocation still accepts the grant"
        time.sleep(0.3)
    assert (edge.store / "revocations.json").exists()
