"""Nexus journeys on the release binary: a three-node DHT (`stoq node --dht`, `--bootstrap`),
signed names (`name keygen/set/get`, `name sign/verify` offline), service resolution
(`resolve`), and the certificate-transparency log (`certs issue --ct-log`, `ct ...`)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import Procs, User


def node_id(user: User, name: str) -> str:
    cert, _ = user.cert(name)
    m = re.search(r"node id:\s+([0-9a-f]{64})", user.ok("certs", "show", cert).stdout)
    assert m
    return m.group(1)


def test_dht_names_and_resolve(user: User, tmp_path: Path) -> None:
    procs = Procs()
    try:
        first = user.node(procs, "dht-1", "--dht", store=tmp_path / "dht-1")
        rest = [user.node(procs, name, "--bootstrap", first.address, store=tmp_path / name)
                for name in ("dht-2", "dht-3")]
        for n in rest:
            n.proc.wait_line(r"^dht \S+ joined", timeout=60)
        owner = tmp_path / "owner.pem"
        user.ok("name", "keygen", "--out", owner)
        content = "stoq:" + "a" * 52
        r = user.ok("name", "set", "site.example", content, "--owner", owner, "--record-version", "7",
                    "--bootstrap", first.address, *user.tls("client"))
        assert "version 7" in r.stdout, r.stdout
        # Asked of another node: found through the DHT, signature and expiry checked.
        got = user.ok("name", "get", "site.example", "--bootstrap", rest[1].address, *user.tls("client"))
        assert "version 7" in got.stdout and "verified" in got.stdout, got.stdout
        # A higher version wins; a lower one is refused.
        user.ok("name", "set", "site.example", content, "--owner", owner, "--record-version", "8",
                "--bootstrap", rest[0].address, *user.tls("client"))
        assert "version 8" in user.ok("name", "get", "site.example", "--bootstrap", first.address,
                                      *user.tls("client")).stdout
        stale = user.run("name", "set", "site.example", content, "--owner", owner, "--record-version", "3",
                         "--bootstrap", first.address, *user.tls("client"))
        assert stale.rc != 0 or "version 8" in user.ok("name", "get", "site.example", "--bootstrap", first.address,
                                                       *user.tls("client")).stdout
        # A name that was never set: a clear failure, not a hang.
        missing = user.run("name", "get", "nothing.example", "--bootstrap", first.address, *user.tls("client"), timeout=60)
        assert missing.rc != 0
        # A service of two nodes: resolve picks a healthy one.
        services = [f"{node_id(user, n.name)}@{n.address}" for n in rest]
        args = ["name", "set", "svc.example", "--owner", owner, "--bootstrap", first.address, *user.tls("client")]
        for s in services:
            args += ["--service-node", s]
        user.ok(*args)
        resolved = user.ok("resolve", "svc.example", "--rounds", "2", "--probe-interval", "200", "--bootstrap", first.address,
                           *user.tls("client"), timeout=60)
        assert any(n.address in resolved.stdout for n in rest), resolved.stdout
        for n in [first, *rest]:
            assert n.proc.terminate(timeout=20) == 0, f"{n.name} did not exit 0 on SIGTERM: {n.proc.stderr()[-1000:]}"
    finally:
        procs.stop_all()


def test_signed_record_offline(user: User, tmp_path: Path) -> None:
    owner = tmp_path / "owner.pem"
    user.ok("name", "keygen", "--out", owner)
    record = tmp_path / "record.bin"
    user.ok("name", "sign", "docs.example", "b" * 64, "--owner", owner, "--record-version", "1", "--out", record)
    assert record.stat().st_size > 0
    user.ok("name", "verify", record)
    damaged = tmp_path / "damaged.bin"
    data = bytearray(record.read_bytes())
    data[-1] ^= 0x01
    damaged.write_bytes(bytes(data))
    assert user.run("name", "verify", damaged).rc != 0


def test_certificate_transparency_log(user: User, tmp_path: Path) -> None:
    log = tmp_path / "ct"
    for name in ("ct-a", "ct-b"):
        r = user.ok("certs", "issue", "--ca", user.ca_dir, "--name", name, "--out", tmp_path, "--ct-log", log)
        assert "ct log" in r.stdout, r.stdout
    head = user.ok("ct", "head", "--log", log)
    assert re.search(r"tree size:\s+2", head.stdout), head.stdout
    proof = tmp_path / "inclusion.json"
    user.ok("ct", "prove", "--log", log, "0", "--out", proof)
    key = log / "log-key.pub.pem"
    assert "OK" in user.ok("ct", "verify", proof, "--key", key, "--cert", tmp_path / "ct-a.pem").stdout
    # The proof is for ct-a, not for ct-b.
    assert user.run("ct", "verify", proof, "--key", key, "--cert", tmp_path / "ct-b.pem").rc != 0
    user.ok("ct", "append", user.ca, "--log", log)
    user.ok("ct", "head", "--log", log)
    consistency = tmp_path / "consistency.json"
    user.ok("ct", "consistency", "--log", log, "2", "--out", consistency)
    assert "OK" in user.ok("ct", "verify", consistency, "--key", key).stdout
    assert "OK" in user.ok("ct", "verify", "--log", log).stdout
