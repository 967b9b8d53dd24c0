"""Test certificates: a CA, a server and a client certificate, and a foreign CA with its own
client certificate. Made with `stoq certs` when STOQ_BIN has it (so peers read STOQ's own
PEM files), otherwise with openssl. All P-256; leaves carry SAN DNS:localhost, IP:::1.

Used by the interop tests (conftest.py) and by the transport bench (scripts/bench/).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


def help_mentions(binary: str, sub: str, needle: str) -> bool:
    try:
        r = subprocess.run([binary, *sub.split(), "--help"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # swift-argument-parser prints the root help (exit 0) for an unknown subcommand,
    # so the exit status alone does not prove the subcommand exists.
    return r.returncode == 0 and needle in (r.stdout + r.stderr) and f"stoq {sub}" in r.stdout


@dataclass(frozen=True)
class Certs:
    ca: Path            # CA certificate both sides trust
    server_cert: Path   # SAN DNS:localhost, IP:::1
    server_key: Path
    client_cert: Path   # issued by ca
    client_key: Path
    foreign_ca: Path    # an unrelated CA
    foreign_cert: Path  # client certificate issued by foreign_ca
    foreign_key: Path
    made_by: str


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr or r.stdout}")
    return r


def _openssl_ca(d: Path, name: str) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2",
          "-subj", f"/CN={name}",
          "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"])
    return d / "ca.pem", d / "ca.key"


def _openssl_leaf(ca_dir: Path, out: Path, name: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    key, csr, pem = out / f"{name}.key", out / f"{name}.csr", out / f"{name}.pem"
    ext = out / f"{name}.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n"
                   "subjectAltName=DNS:localhost,IP:::1\n")
    _run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"])
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.pem"),
          "-CAkey", str(ca_dir / "ca.key"), "-CAcreateserial", "-days", "2",
          "-out", str(pem), "-extfile", str(ext)])
    return pem, key


def _stoq_ca(binary: str, d: Path, name: str) -> tuple[Path, Path]:
    _run([binary, "certs", "init-ca", "--out", str(d), "--name", name])
    return d / "ca.pem", d / "ca.key"


def _stoq_leaf(binary: str, ca_dir: Path, out: Path, name: str) -> tuple[Path, Path]:
    _run([binary, "certs", "issue", "--ca-dir", str(ca_dir), "--name", name,
          "--dns", "localhost", "--ip", "::1", "--out", str(out)])
    return out / f"{name}.pem", out / f"{name}.key"


def make_certs(root: Path, binary: str | None = None) -> Certs:
    """Prefer `stoq certs` (binary, else STOQ_BIN) so STOQ's own certificates are what peers read."""
    binary = binary or os.environ.get("STOQ_BIN")
    use_stoq = bool(binary) and help_mentions(binary, "certs", "init-ca")
    if use_stoq:
        ca, leaf, made_by = (lambda d, n: _stoq_ca(binary, d, n)), \
            (lambda c, o, n: _stoq_leaf(binary, c, o, n)), f"stoq certs ({binary})"
    else:
        ca, leaf, made_by = _openssl_ca, _openssl_leaf, "openssl"
    ca_pem, _ = ca(root / "ca", "Interop Test CA")
    server_pem, server_key = leaf(root / "ca", root / "server", "server")
    client_pem, client_key = leaf(root / "ca", root / "client", "client")
    foreign_pem, _ = ca(root / "foreign-ca", "Foreign CA")
    foreign_cert, foreign_key = leaf(root / "foreign-ca", root / "foreign", "intruder")
    return Certs(ca_pem, server_pem, server_key, client_pem, client_key,
                 foreign_pem, foreign_cert, foreign_key, made_by)


