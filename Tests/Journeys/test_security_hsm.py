"""Keys in hardware (issue 15, item 6): node and CA private keys in a PKCS#11 token (SoftHSM2).

One test, one token, two nodes' worth of work in well under 20 s:
- a SoftHSM2 token in a temporary directory (SOFTHSM2_CONF), PIN from STOQ_PKCS11_PIN;
- `stoq certs keygen` makes the CA key and a node key inside it (sensitive, never extractable);
- `stoq certs init-ca --key-uri` makes a CA whose key is in the token, and `stoq certs issue
  --ca-key … --key-uri …` certifies the node's token key (the CA signs in the token and sees only
  the node's public key); a plain client gets a key file from the same CA;
- a node runs with `--key 'pkcs11:…'`: mutual TLS with the plain client completes (a put and a get
  of a file); it renews its 8 s certificate on the same key from an issuer node whose CA key is in
  the token (`--ca-key`); then a reader whose own key is in the token reads the file (the token
  key as a client);
- no private key exists in a file anywhere in the CA's or the node's directories, and the token
  says the keys are CKA_SENSITIVE and CKA_NEVER_EXTRACTABLE (not CKA_EXTRACTABLE);
- a wrong PIN, a missing object and a key that is not the certificate's are refused clearly.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Procs, User, clean_env, content_id, run

PIN = "4321"
TOKEN = "pkcs11:token=stoq-test"


def _softhsm(base: Path) -> dict[str, str]:
    """A fresh SoftHSM2 token in `base`; the environment that finds it."""
    if not shutil.which("softhsm2-util") or not shutil.which("p11tool"):
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2 gnutls-bin; scripts/bootstrap.sh installs them)")
    tokens = base / "tokens"
    tokens.mkdir(parents=True)
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "stoq-test", "--pin", PIN, "--so-pin", "87654321"],
                   env=env, check=True, capture_output=True, text=True, timeout=30)
    return env


def _private_key_files(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            # publisher.key is the origin's content secret (32 bytes for HKDF), not a signing key.
            key_file = path.suffix == ".key" and path.name != "publisher.key"
            if path.is_file() and (key_file or b"PRIVATE KEY" in path.read_bytes()):
                found.append(str(path))
    return found


def test_keys_in_a_token(stoq: str, journey_dir: Path, procs: Procs, tmp_path: Path) -> None:
    base = journey_dir / "hsm"
    hsm_env = _softhsm(base)
    home = base / "home"
    home.mkdir()
    env = clean_env(home)
    env.update(SOFTHSM2_CONF=hsm_env["SOFTHSM2_CONF"], STOQ_PKCS11_PIN=PIN)
    logs = base / "logs"
    logs.mkdir()
    ca_dir, node_dir, client_dir, issuer_dir = base / "ca", base / "node", base / "client", base / "issuer"
    user = User(stoq=stoq, home=home, env=env, log_dir=logs, ca_dir=ca_dir)

    # Keys made in the token: the command prints the key's URI (stdout) and its node id (stderr).
    ca_uri = user.ok("certs", "keygen", "--token", TOKEN, "--label", "ca").stdout.strip()
    node_uri = user.ok("certs", "keygen", "--token", TOKEN, "--label", "node1").stdout.strip()
    reader_uri = user.ok("certs", "keygen", "--token", TOKEN, "--label", "reader").stdout.strip()
    for uri in (ca_uri, node_uri, reader_uri):
        assert uri.startswith("pkcs11:") and "type=private" in uri and PIN not in uri, uri

    # A CA whose key is in the token: only ca.pem is written.
    init = user.ok("certs", "init-ca", "--out", ca_dir, "--key-uri", ca_uri)
    assert (ca_dir / "ca.pem").exists() and not (ca_dir / "ca.key").exists(), init.stdout
    # Without --ca-key the CA directory says where its key is.
    nokey = user.run("certs", "issue", "--ca-dir", ca_dir, "--name", "x", "--out", client_dir)
    assert nokey.rc == 1 and "--ca-key" in nokey.stderr and "stoq: error:" in nokey.stderr, nokey.stderr

    # The CA signs in the token; the node's certificate certifies its token key.
    # 8-second certificate: the node renews it (same token key) from an issuer that signs in the token.
    issued = user.ok("certs", "issue", "--ca-dir", ca_dir, "--ca-key", ca_uri, "--name", "node1", "--ip", "::1",
                     "--out", node_dir, "--key-uri", node_uri, "--lifetime", "8s")
    node_id = re.search(r"id ([0-9a-f]{64})", issued.stdout).group(1)
    assert (node_dir / "node1.pem").exists() and not (node_dir / "node1.key").exists(), issued.stdout
    user.ok("certs", "issue", "--ca-dir", ca_dir, "--ca-key", ca_uri, "--name", "reader", "--out", node_dir,
            "--key-uri", reader_uri)
    # A plain client with a key file, from the same (token) CA.
    user.ok("certs", "issue", "--ca-dir", ca_dir, "--ca-key", ca_uri, "--name", "client", "--out", client_dir)
    client_id = re.search(r"node id:\s+([0-9a-f]{64})", user.ok("certs", "show", client_dir / "client.pem").stdout).group(1)
    verified = user.ok("certs", "verify", "--ca", ca_dir / "ca.pem", node_dir / "node1.pem")
    assert node_id in verified.stdout, verified.stdout

    # The issuer renews with the CA key in the token (--ca-key); its own key is a file elsewhere.
    user.ok("certs", "issue", "--ca-dir", ca_dir, "--ca-key", ca_uri, "--name", "issuer", "--out", issuer_dir)
    issuer = user.start(procs, "hsm-issuer", "node", "--name", "issuer", "--listen", "[::1]:0", "--cert", issuer_dir / "issuer.pem",
                        "--key", issuer_dir / "issuer.key", "--ca", ca_dir / "ca.pem", "--store", issuer_dir / "store",
                        "--role", "issuer", "--ca-dir", ca_dir, "--ca-key", ca_uri)
    issuer_address = issuer.wait_line(r"^ready (\S+) (\[[0-9a-fA-F:]+\]:\d+)", timeout=30).group(2)

    # A node whose key is in the token serves a normal client over mutual TLS.
    store = node_dir / "store"
    p = user.start(procs, "hsm-node", "node", "--name", "node1", "--listen", "[::1]:0", "--cert", node_dir / "node1.pem",
                   "--key", node_uri, "--ca", ca_dir / "ca.pem", "--store", store, "--role", "origin", "--publisher", client_id,
                   "--issuer", issuer_address)
    address = p.wait_line(r"^ready (\S+) (\[[0-9a-fA-F:]+\]:\d+)", timeout=30).group(2)
    data = os.urandom(300_000)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    client_tls = ["--cert", client_dir / "client.pem", "--key", client_dir / "client.key", "--ca", ca_dir / "ca.pem"]
    put = user.ok("put", src, "--node", address, *client_tls, timeout=60)
    cid = content_id(put.stdout)
    out = tmp_path / "out.bin"
    user.ok("get", cid, "-o", out, "--peers", address, "--store", tmp_path / "reader-store",
            "--publisher-key", store / "publisher.key", *client_tls, timeout=60)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    # Renewal on the token key: the issuer signs in the token, the node swaps the certificate in.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "certificate renewed" not in p.stderr():
        time.sleep(0.2)
    assert "certificate renewed" in p.stderr(), p.stderr()[-3000:]
    assert not (node_dir / "node1.key").exists()
    # The other way round, after the renewal: a reader whose own key is in the token (client side of mutual TLS).
    out2 = tmp_path / "out2.bin"
    user.ok("get", cid, "-o", out2, "--peers", address, "--store", tmp_path / "reader-store-2",
            "--publisher-key", store / "publisher.key", "--cert", node_dir / "reader.pem", "--key", reader_uri,
            "--ca", ca_dir / "ca.pem", timeout=60)
    assert out2.read_bytes() == data
    print(f"\nhsm: a node with its key in SoftHSM2 served {len(data)} bytes over mutual TLS "
          f"and renewed its certificate from an issuer whose CA key is in the token")

    # No private key in a file: the node's and the CA's directories hold none (the plain client's
    # own key file is in its own directory), and the token will not hand its keys out.
    assert _private_key_files(ca_dir, node_dir) == []
    listing = subprocess.run(["p11tool", "--login", "--list-all-privkeys", TOKEN], env=dict(hsm_env, GNUTLS_PIN=PIN),
                             capture_output=True, text=True, timeout=30).stdout
    objects = [o for o in listing.split("Object ")[1:]]
    assert len(objects) == 3, listing
    for o in objects:
        flags = re.search(r"Flags: (.*)", o).group(1)
        assert "CKA_SENSITIVE" in flags and "CKA_NEVER_EXTRACTABLE" in flags and "CKA_EXTRACTABLE" not in flags, o

    # Refusals people can act on.
    wrong_pin = dict(env, STOQ_PKCS11_PIN="0000")
    r = run([stoq, "certs", "issue", "--ca-dir", ca_dir, "--ca-key", ca_uri, "--name", "y", "--out", client_dir], wrong_pin, timeout=30)
    assert r.rc == 1 and "PIN" in r.stderr and "0000" not in r.stderr, r.stderr
    r = user.run("certs", "issue", "--ca-dir", ca_dir, "--ca-key", TOKEN + ";object=nosuch;type=private", "--name", "y", "--out", client_dir)
    assert r.rc == 1 and "stoq: error:" in r.stderr and "nosuch" in r.stderr, r.stderr
    r = user.run("node", "--name", "node1", "--listen", "[::1]:0", "--cert", node_dir / "node1.pem", "--key", reader_uri,
                 "--ca", ca_dir / "ca.pem", "--store", tmp_path / "mismatch", timeout=30)
    assert r.rc != 0 and "stoq: error:" in r.stderr and "do not match" in r.stderr, r.stderr
