"""Keys in hardware (issue 15, item 6), the signatures beyond TLS: a node whose key is in a
PKCS#11 token (SoftHSM2) signs in the token everything else it signs, and others accept it.

- its routing adverts: a plain node gossiping with it holds its entry, from its signed advert,
  with no bad signature, and the token node's status counts adverts it signed;
- its DHT node record: published on the plain DHT node (which stores only records whose
  signature verifies against the key the record's id names);
- its audit heads: `stoq audit verify --ca` checks the head signed when it stops;
- its HTTPS front door (swift-nio-ssl over TCP): TLS 1.3 and TLS 1.2 handshakes complete, signed in
  the token, presenting the node's certificate;
- `stoq ca serve --ca-key 'pkcs11:…'`: the network's issuer signs in the token (its own
  certificate and the token node's renewal), with no CA key file anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from conftest import Procs, User, clean_env, content_id
from test_security_hsm import PIN, TOKEN, _private_key_files, _softhsm


def _status(user: User, address: str, tls: list[object]) -> dict:
    return json.loads(user.ok("status", "--node", address, "--json", *tls).stdout)


def _entry(doc: dict, node_id: str) -> dict | None:
    rid = "r%x" % int.from_bytes(bytes.fromhex(node_id)[:8], "big")
    return next((n for n in (doc.get("routing") or {}).get("nodes", []) if n["id"] == rid), None)


def test_a_token_key_signs_routing_dht_audit_and_the_issuer(stoq: str, journey_dir: Path, procs: Procs, tmp_path: Path) -> None:
    base = journey_dir / "hsm-signing"
    hsm_env = _softhsm(base)
    home = base / "home"
    home.mkdir()
    env = clean_env(home)
    env.update(SOFTHSM2_CONF=hsm_env["SOFTHSM2_CONF"], STOQ_PKCS11_PIN=PIN)
    logs = base / "logs"
    logs.mkdir()
    ca_dir, node_dir, plain_dir = base / "ca", base / "node", base / "plain"
    user = User(stoq=stoq, home=home, env=env, log_dir=logs, ca_dir=ca_dir)

    ca_uri = user.ok("certs", "keygen", "--token", TOKEN, "--label", "ca").stdout.strip()
    node_uri = user.ok("certs", "keygen", "--token", TOKEN, "--label", "node1").stdout.strip()
    user.ok("certs", "init-ca", "--out", ca_dir, "--key-uri", ca_uri)

    # The network's issuer, signing in the token.
    issuer = user.start(procs, "hsm-ca-serve", "ca", "serve", "--ca-dir", ca_dir, "--ca-key", ca_uri, "--listen", "[::1]:0",
                        "--max-lifetime", "1h")
    issuer_address = issuer.wait_line(r"^ready issuer (\[[0-9a-fA-F:]+\]:\d+)", timeout=30).group(1)
    assert not (ca_dir / "ca.key").exists()

    # The token node: 6 s certificate (renewed by `ca serve`), key in the token.
    issued = user.ok("certs", "issue", "--ca-dir", ca_dir, "--ca-key", ca_uri, "--name", "node1", "--ip", "::1",
                     "--out", node_dir, "--key-uri", node_uri, "--lifetime", "6s")
    node_id = re.search(r"id ([0-9a-f]{64})", issued.stdout).group(1)
    for name in ("plain", "client"):
        user.ok("certs", "issue", "--ca-dir", ca_dir, "--ca-key", ca_uri, "--name", name, "--ip", "::1", "--out", plain_dir)
    client_tls = ["--cert", plain_dir / "client.pem", "--key", plain_dir / "client.key", "--ca", ca_dir / "ca.pem"]
    client_id = re.search(r"node id:\s+([0-9a-f]{64})", user.ok("certs", "show", plain_dir / "client.pem").stdout).group(1)

    # A plain node (key file), first of the DHT.
    fast = ["--gossip-interval", "200", "--probe-interval", "200"]
    plain = user.start(procs, "hsm-plain", "node", "--name", "plain", "--listen", "[::1]:0", "--cert", plain_dir / "plain.pem",
                       "--key", plain_dir / "plain.key", "--ca", ca_dir / "ca.pem", "--store", plain_dir / "store", "--dht", "--operator", client_id, *fast)
    plain_address = plain.wait_line(r"^ready (\S+) (\[[0-9a-fA-F:]+\]:\d+)", timeout=30).group(2)

    store = node_dir / "store"
    p = user.start(procs, "hsm-signer", "node", "--name", "node1", "--listen", "[::1]:0", "--cert", node_dir / "node1.pem",
                   "--key", node_uri, "--ca", ca_dir / "ca.pem", "--store", store, "--role", "origin", "--publisher", client_id,
                   "--operator", client_id, "--issuer", issuer_address, "--bootstrap", plain_address, "--peers", plain_address, "--http", "[::1]:0", *fast)
    address = p.wait_line(r"^ready (\S+) (\[[0-9a-fA-F:]+\]:\d+)", timeout=30).group(2)
    https_port = int(p.wait_line(r"^http node1 \[[0-9a-fA-F:]+\]:(\d+)", timeout=10).group(1))

    # HTTPS over TCP: the handshake's signature is made in the token (TLS 1.3, then TLS 1.2 ECDHE-ECDSA).
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def spki(cert: "x509.Certificate") -> bytes:
        return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    node_key = spki(x509.load_pem_x509_certificate((node_dir / "node1.pem").read_bytes()))
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the key is what is checked, not the 6 s validity
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("::1", https_port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
            assert spki(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))) == node_key, version
    # DHT: the plain node stored the record signed in the token (it verifies before it stores).
    joined = p.wait_line(r"^dht node1 joined .*node record on (\d+) nodes", timeout=30)
    assert int(joined.group(1)) >= 1, joined.group(0)
    assert "cannot sign" not in p.stderr() and "unsigned" not in p.stderr(), p.stderr()[-2000:]

    # Routing: the plain node holds the token node's entry from its signed advert.
    deadline = time.monotonic() + 15
    doc = _status(user, plain_address, client_tls)
    while time.monotonic() < deadline and not _entry(doc, node_id):
        time.sleep(0.3)
        doc = _status(user, plain_address, client_tls)
    assert _entry(doc, node_id), f"the plain node never took the token node's signed advert: {doc.get('routing')}"
    signed = doc["routing"]["signed"]
    assert signed["bad_signatures"] == 0 and signed["signature_checks"] >= 1, signed
    own = _status(user, address, client_tls)["routing"]["signed"]
    assert own["adverts_signed"] >= 1, own

    # A transfer for the audit log; the renewal from `ca serve` (signed in the token).
    data = os.urandom(100_000)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    cid = content_id(user.ok("put", src, "--node", address, *client_tls, timeout=60).stdout)
    out = tmp_path / "out.bin"
    user.ok("get", cid, "-o", out, "--peers", address, "--store", tmp_path / "reader", "--publisher-key", store / "publisher.key",
            *client_tls, timeout=60)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "certificate renewed" not in p.stderr():
        time.sleep(0.2)
    assert "certificate renewed" in p.stderr(), p.stderr()[-3000:]

    # Audit: the head signed as the node stops verifies against the CA (signed in the token).
    p.terminate()
    report = json.loads(user.ok("audit", "verify", store, "--ca", ca_dir / "ca.pem", "--json").stdout)
    assert report["ok"] and report["records"] >= 1 and report["signed_heads"] >= 1, report
    assert report["node_id"] == node_id and report["unsigned_records"] == 0, report
    assert "could not sign" not in p.stderr(), p.stderr()[-2000:]

    # No CA key and no node key in a file (ca_dir holds the issuer's own TLS key, issuer.key).
    assert not (ca_dir / "ca.key").exists() and _private_key_files(node_dir) == []
    print(f"\nhsm signing: a token-key node's advert, DHT record (on {joined.group(1)} nodes) and audit head were "
          f"accepted; `ca serve` renewed its certificate from the token")
