"""The HTTP front door as curl and aioquic meet it (issue 12): an origin and an edge as `stoq node`
processes, the edge started with `--http '[::1]:0' --access-log FILE --access-log-format json` and
no publisher key of its own: the site is public (`stoq put --public`), so the edge learns its read
key from the origin. Debian's curl over HTTPS with HTTP/1.1 and HTTP/2 and aioquic over HTTP/3:
files bit-exact, a directory's index.html, ranges, HEAD, 304, 404, 400, 405, 403 for private
content (a private directory is not listed either), a published name with its version in the ETag,
and one access-log line per request.

Skipped (with the reason) when the binary has no HTTP protocol servers linked yet; the IPv4
refusal of `--http` is in Tests/CLITests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Node, Procs, User, content_id


# The cold-edge file: 64 MiB (the issue says 256 MiB; a quarter keeps the suite short, and the
# edge's read-ahead window is far smaller than either).
BIG = 64 << 20


@dataclass
class FrontDoor:
    origin: Node
    edge: Node
    base: str
    site: str
    private: str
    big: str
    big_path: Path
    edge_store: Path
    port: int
    files: dict[str, bytes]
    access_log: Path


@dataclass
class Reply:
    status: int
    version: str
    headers: dict[str, str]
    body: bytes


def curl(url: str, *args: str, http: str = "--http2", timeout: float = 60) -> Reply:
    """One request with Debian's curl (certificate not checked: the test CA is not in its store)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/bootstrap.sh installs it)")
    cmd = ["curl", "-sk", "-g", "--path-as-is", http, "-D", "-", "-o", "/dev/stderr", "-w", "\n%{http_code} %{http_version}",
           "--max-time", str(int(timeout)), *args, url]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
    assert p.returncode == 0, f"curl failed ({p.returncode}): {cmd}\n{p.stdout[-1000:]!r}"
    out = p.stdout.decode("latin-1")
    head, _, trailer = out.rpartition("\n")
    status, version = trailer.split()
    headers: dict[str, str] = {}
    for line in head.splitlines():
        if ":" in line and not line.startswith("HTTP/"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return Reply(status=int(status), version=version, headers=headers, body=p.stderr)


@pytest.fixture(scope="module")
def door(user: User, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("http")
    site = work / "site"
    (site / "media").mkdir(parents=True)
    files = {
        "index.html": b"<!DOCTYPE html><title>STOQ</title><script src=app.js></script>",
        "app.js": b"console.log('stoq')\n",
        "media/clip.bin": os.urandom(3_000_000),
    }
    for rel, data in files.items():
        (site / rel).write_bytes(data)
    origin_store = work / "stores" / "origin"
    cid = content_id(user.ok("put", "--public", site, "--store", origin_store).stdout)
    secret = work / "secret"
    (secret / "inner").mkdir(parents=True)
    (secret / "index.html").write_bytes(b"<title>private</title>")
    (secret / "inner" / "plan.txt").write_bytes(b"private plan\n" * 100)
    private_id = content_id(user.ok("put", secret, "--store", origin_store).stdout)
    # A large public file only the cold-edge test reads (so the edge has none of it before).
    big = work / "big.bin"
    with big.open("wb") as f:
        for _ in range(BIG // (1 << 20)):
            f.write(os.urandom(1 << 20))
    big_id = content_id(user.ok("put", "--public", big, "--store", origin_store).stdout)
    procs = Procs()
    try:
        origin = user.node(procs, "http-origin", "--role", "origin", store=origin_store)
        log = work / "access.log"
        cert, key = user.cert("http-edge")
        edge_store = work / "stores" / "http-edge"
        args = ["node", "--name", "http-edge", "--listen", "[::1]:0", "--cert", cert, "--key", key, "--ca", user.ca,
                "--store", edge_store, "--role", "edge", "--upstream", origin.address, "--http", "[::1]:0",
                "--access-log", log, "--access-log-format", "json"]
        p = user.start(procs, "http-edge", *args)
        deadline = time.monotonic() + 60
        http = None
        while time.monotonic() < deadline and http is None:
            http = next((re.match(r"^http \S+ (\[[0-9a-fA-F:]+\]:\d+)", line) for line in list(p.lines)
                         if line.startswith("http ")), None)
            if http is None and p.p.poll() is not None:
                if "no HTTP protocol servers" in p.stderr():
                    pytest.skip("this stoq binary has no HTTP protocol servers yet (HTTPSServer, HTTP3Server)")
                raise AssertionError(f"the edge exited ({p.p.poll()}): {p.stderr()[-2000:]}")
            time.sleep(0.05)
        assert http, f"the edge printed no 'http' line within 60 s: {p.stdout()[-2000:]} {p.stderr()[-2000:]}"
        ready = p.wait_line(r"^ready (\S+) (\[[0-9a-fA-F:]+\]:\d+)")
        edge = Node(name="http-edge", address=ready.group(2), proc=p, store=edge_store)
        yield FrontDoor(origin=origin, edge=edge, base=f"https://{http.group(1)}", site=cid, private=private_id, big=big_id, big_path=big, edge_store=edge_store,
                        port=int(http.group(1).rpartition(":")[2]), files=files, access_log=log)
    finally:
        procs.stop_all()


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_files_directories_and_ranges(door: FrontDoor, http: str) -> None:
    index = curl(f"{door.base}/stoq/{door.site}/", http=http)
    assert index.status == 200 and index.body == door.files["index.html"], index
    assert index.headers["content-type"].startswith("text/html")
    assert index.version == ("1.1" if http == "--http1.1" else "2")
    script = curl(f"{door.base}/stoq/{door.site}/app.js", http=http)
    assert script.body == door.files["app.js"] and script.headers["content-type"].startswith("text/javascript")
    clip = curl(f"{door.base}/stoq/{door.site}/media/clip.bin", http=http)
    assert clip.status == 200
    assert hashlib.sha256(clip.body).hexdigest() == hashlib.sha256(door.files["media/clip.bin"]).hexdigest()
    assert clip.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = clip.headers["etag"]
    part = curl(f"{door.base}/stoq/{door.site}/media/clip.bin", "-H", "Range: bytes=1000000-1000999", http=http)
    assert part.status == 206 and part.body == door.files["media/clip.bin"][1_000_000:1_001_000]
    assert part.headers["content-range"] == "bytes 1000000-1000999/3000000"
    head = curl(f"{door.base}/stoq/{door.site}/media/clip.bin", "-I", http=http)
    assert head.status == 200 and head.headers["content-length"] == "3000000"
    same = curl(f"{door.base}/stoq/{door.site}/media/clip.bin", "-H", f"If-None-Match: {etag}", http=http)
    assert same.status == 304 and same.body == b""
    beyond = curl(f"{door.base}/stoq/{door.site}/media/clip.bin", "-H", "Range: bytes=5000000-", http=http)
    assert beyond.status == 416


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_errors(door: FrontDoor, http: str) -> None:
    assert curl(f"{door.base}/stoq/stoq:{'a' * 52}", http=http).status == 404
    assert curl(f"{door.base}/stoq/{door.site}/nothing.html", http=http).status == 404
    assert curl(f"{door.base}/stoq/{door.site}/media/%2e%2e/%2e%2e/etc/passwd", http=http).status == 400
    assert curl(f"{door.base}/stoq/not-an-id", http=http).status == 400
    post = curl(f"{door.base}/stoq/{door.site}/", "-X", "POST", http=http)
    assert post.status == 405 and post.headers["allow"] == "GET, HEAD"


def test_a_published_name_and_the_access_log(user: User, door: FrontDoor, tmp_path: Path) -> None:
    # The operator publishes (an origin takes names only from itself, its operators, publishers, grant holders).
    user.ok("name", "publish", "http-site", door.site, "--node", door.origin.address, *user.tls(),
            "--store", tmp_path / "publisher", "--ttl", "300")
    page = curl(f"{door.base}/name/http-site/index.html")
    assert page.status == 200 and page.body == door.files["index.html"]
    assert page.headers["etag"].endswith('-v1"'), page.headers
    max_age = int(page.headers["cache-control"].rpartition("=")[2])
    assert 0 < max_age <= 300, page.headers
    # One JSON line per exchange, written once the exchange ended.
    deadline = time.monotonic() + 10
    lines: list[dict] = []
    while time.monotonic() < deadline:
        lines = [json.loads(l) for l in door.access_log.read_text().splitlines() if l.strip()]
        if any(l["path"] == "/name/http-site/index.html" for l in lines):
            break
        time.sleep(0.1)
    named = [l for l in lines if l["path"] == "/name/http-site/index.html"]
    assert named, lines[-5:]
    assert named[-1]["status"] == 200 and named[-1]["protocol"] == "h2" and named[-1]["content"] == door.site
    assert named[-1]["cache"] in ("hit", "miss") and named[-1]["bytes"] == len(door.files["index.html"])
    assert {"time", "client", "method", "duration"} <= set(named[-1])
    assert any(l["status"] == 206 for l in lines), "no range request in the access log"


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_private_content_is_403_and_not_listed(door: FrontDoor, http: str) -> None:
    """The edge holds no publisher key: private content, its files and its listing, answer 403."""
    for path in ("", "/", "/index.html", "/inner/", "/inner/plan.txt"):
        reply = curl(f"{door.base}/stoq/{door.private}{path}", http=http)
        assert reply.status == 403, (path, reply.status, reply.body[:200])
        assert b"plan.txt" not in reply.body and b"inner" not in reply.body, reply.body[:200]
    # The public site is still listed and served.
    listing = curl(f"{door.base}/stoq/{door.site}/media/", http=http)
    assert listing.status == 200 and b"clip.bin" in listing.body, listing


def h3(door: FrontDoor, *requests: str) -> list[dict]:
    """Requests over HTTP/3 with aioquic (Tests/HTTP3/h3client.py), all on one connection."""
    try:
        import aioquic  # noqa: F401
    except ImportError:
        pytest.skip("aioquic is not installed (scripts/bootstrap.sh installs it)")
    client = Path(__file__).resolve().parent.parent / "HTTP3" / "h3client.py"
    p = subprocess.run([sys.executable, str(client), "--port", str(door.port), "--timeout", "60", *requests],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]


def test_http3_from_the_edge(door: FrontDoor) -> None:
    clip = door.files["media/clip.bin"]
    base = f"/stoq/{door.site}"
    full, part, head, missing, private = h3(
        door, f"GET {base}/media/clip.bin", f"GET {base}/media/clip.bin|range: bytes=1000000-1000999",
        f"HEAD {base}/media/clip.bin", f"GET {base}/nothing.html", f"GET /stoq/{door.private}/inner/plan.txt")
    assert full["status"] == 200 and full["length"] == len(clip)
    assert full["sha256"] == hashlib.sha256(clip).hexdigest()
    assert part["status"] == 206 and part["sha256"] == hashlib.sha256(clip[1_000_000:1_001_000]).hexdigest()
    assert head["status"] == 200 and head["length"] == 0 and head["headers"]["content-length"] == str(len(clip))
    assert missing["status"] == 404 and private["status"] == 403
    etag = full["headers"]["etag"]
    (same,) = h3(door, f"GET {base}/media/clip.bin|if-none-match: {etag}")
    assert same["status"] == 304 and same["length"] == 0
    deadline = time.monotonic() + 10
    lines: list[dict] = []
    while time.monotonic() < deadline:
        lines = [json.loads(l) for l in door.access_log.read_text().splitlines() if l.strip()]
        if any(l["protocol"] == "h3" and l["status"] == 304 for l in lines):
            break
        time.sleep(0.1)
    mine = [l for l in lines if l["protocol"] == "h3"]
    assert {l["status"] for l in mine} >= {200, 206, 304, 403, 404}, mine[-10:]


def test_the_readme_commands_reach_the_edge(door: FrontDoor, tmp_path: Path) -> None:
    """README "From a browser": curl as written there (no -g), and ngtcp2's gtlsclient over HTTP/3."""
    port = door.port
    p = subprocess.run(["curl", "-k", "-s", f"https://[::1]:{port}/stoq/{door.site}/index.html"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == door.files["index.html"], p
    p = subprocess.run(["curl", "-k", "-s", f"https://[::1]:{port}/stoq/{door.site}/app.js", "-H", "Range: bytes=0-9"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == door.files["app.js"][:10], p
    gtlsclient = shutil.which("gtlsclient")
    if gtlsclient is None:
        pytest.skip("ngtcp2's gtlsclient is not installed (Debian ngtcp2-client)")
    r = subprocess.run([gtlsclient, "-q", "--exit-on-all-streams-close", f"--download={tmp_path}", "::1", str(port),
                        f"https://[::1]:{port}/stoq/{door.site}/media/clip.bin"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = (tmp_path / "clip.bin").read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(door.files["media/clip.bin"]).hexdigest()


def stored_bytes(store: Path) -> int:
    total = 0
    for root, _, names in os.walk(store):
        for n in names:
            try:
                total += os.path.getsize(os.path.join(root, n))
            except OSError:
                pass
    return total


def test_a_cold_edge_sends_the_first_byte_before_most_of_the_file_arrived(door: FrontDoor) -> None:
    """A 64 MiB public file the edge never saw: when curl has the first bytes, the edge's store
    holds well under half of the file; the whole file then arrives bit-exact."""
    before = stored_bytes(door.edge_store)
    cmd = ["curl", "-sk", "-g", "--http2", "--max-time", "300", f"{door.base}/stoq/{door.big}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(1)
        assert first, f"no byte came: {proc.stderr.read() if proc.stderr else b''}"
        at_first_byte = stored_bytes(door.edge_store) - before
        hasher = hashlib.sha256(first)
        length = 1
        while True:
            piece = proc.stdout.read(1 << 20)
            if not piece:
                break
            hasher.update(piece)
            length += len(piece)
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    expected = hashlib.sha256()
    with door.big_path.open("rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            expected.update(piece)
    assert length == BIG and hasher.hexdigest() == expected.hexdigest()
    print(f"cold edge: the first byte came with {at_first_byte} of {BIG} bytes in the edge's store")
    assert at_first_byte < BIG // 2, f"the edge held {at_first_byte} of {BIG} bytes before the first byte left"
