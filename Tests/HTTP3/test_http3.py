"""HTTP/3 from clients nobody here wrote: aioquic's HTTP/3 stack and ngtcp2's gtlsclient
(nghttp3 underneath) fetch from STOQHTTP's HTTP3Server over real QUIC on [::1]."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Files, h3

GTLSCLIENT = shutil.which("gtlsclient")


def test_files_arrive_bit_exact_concurrently(server, files: Files) -> None:
    s = server()
    names = ["/empty.bin", "/one.txt", "/index.html", "/100k.bin", "/5mb.bin", "/dir/name%20with%20space.txt"]
    results = h3(s.port, *(f"GET {n}" for n in names))
    for name, r in zip(names, results):
        key = name.replace("%20", " ")
        assert r["status"] == 200, (name, r)
        assert r["reset"] is None, (name, r)
        assert r["sha256"] == files.sha[key], name
        assert r["headers"]["content-length"] == str(len(files.data[key]))
        assert "date" in r["headers"]


def test_single_range_and_suffix_range_and_unsatisfiable(server, files: Files) -> None:
    s = server()
    body = files.data["/5mb.bin"]
    r206, suffix, r416 = h3(s.port, "GET /5mb.bin|range: bytes=1000-1999999", "GET /5mb.bin|range: bytes=-100",
                            "GET /5mb.bin|range: bytes=6000000-")
    assert r206["status"] == 206
    assert r206["headers"]["content-range"] == f"bytes 1000-1999999/{len(body)}"
    assert r206["sha256"] == hashlib.sha256(body[1000:2_000_000]).hexdigest()
    assert suffix["status"] == 206 and suffix["sha256"] == hashlib.sha256(body[-100:]).hexdigest()
    assert r416["status"] == 416


def test_head_sends_the_length_but_no_body(server, files: Files) -> None:
    s = server()
    (r,) = h3(s.port, "HEAD /5mb.bin")
    assert r["status"] == 200 and r["length"] == 0 and r["reset"] is None
    assert r["headers"]["content-length"] == "5000000"
    # The server never pulled the body: it reports 0 body bytes for the HEAD exchange.
    assert any(l.startswith("finished 200 0 HEAD /5mb.bin") for l in s.wait_finished(1))


def test_if_none_match_answers_304_without_a_body(server, files: Files) -> None:
    s = server()
    (first,) = h3(s.port, "GET /100k.bin")
    etag = first["headers"]["etag"]
    (again,) = h3(s.port, f"GET /100k.bin|if-none-match: {etag}")
    assert again["status"] == 304 and again["length"] == 0 and again["reset"] is None


def test_missing_file_is_404_and_other_methods_405(server) -> None:
    s = server()
    missing, post = h3(s.port, "GET /nothing-here", "POST /one.txt")
    assert missing["status"] == 404 and missing["length"] > 0
    assert post["status"] == 405 and post["headers"].get("allow") == "GET, HEAD"


def test_a_body_failing_midway_resets_the_stream(server, files: Files) -> None:
    s = server("--fail-after", "200000")
    failing, fine = h3(s.port, "GET /fail/5mb.bin", "GET /100k.bin")
    # The client must never take a truncated body for a whole one: the stream is reset
    # with H3_INTERNAL_ERROR instead of ending.
    assert failing["reset"] == 0x102, failing
    assert failing["length"] < 5_000_000
    # The connection and its other requests are unharmed.
    assert fine["status"] == 200 and fine["sha256"] == files.sha["/100k.bin"]


def test_oversized_header_section_is_431_and_the_server_lives_on(server, files: Files) -> None:
    s = server()
    big = "a" * 20_000
    too_large, ok = h3(s.port, f"GET /one.txt|x-big: {big}", "GET /one.txt")
    assert too_large["status"] == 431 and too_large["reset"] is None
    assert too_large["length"] == int(too_large["headers"]["content-length"]) > 0
    assert ok["status"] == 200 and ok["sha256"] == files.sha["/one.txt"]
    assert s.alive()


def test_many_concurrent_requests_beyond_the_stream_limit(server, files: Files) -> None:
    # 300 requests on one connection, three times the 100 concurrent streams allowed: the
    # transport makes the client wait for stream credit, and every request is answered.
    s = server()
    results = h3(s.port, *(["GET /index.html"] * 300), timeout=120)
    assert all(r["status"] == 200 and r["sha256"] == files.sha["/index.html"] for r in results)
    assert len(s.wait_finished(300)) == 300


@pytest.mark.skipif(GTLSCLIENT is None, reason="ngtcp2's gtlsclient is not installed (Debian ngtcp2-client)")
def test_ngtcp2_gtlsclient_downloads_bit_exact(server, files: Files, tmp_path: Path) -> None:
    s = server()
    out = tmp_path / "dl"
    out.mkdir()
    names = ["index.html", "100k.bin", "5mb.bin"]
    urls = [f"https://localhost:{s.port}/{n}" for n in names]
    r = subprocess.run([GTLSCLIENT, "-q", "--exit-on-all-streams-close", f"--download={out}", "::1", str(s.port), *urls],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    for n in names:
        assert hashlib.sha256((out / n).read_bytes()).hexdigest() == files.sha["/" + n], n


CHROMIUM = shutil.which("chromium")

PAGE = """<!doctype html><html><head><title>stoq h3</title><script src="/app.js"></script></head>
<body><img id="img" src="/pixel.png"><p id="out">pending</p></body></html>
"""

# Runs after load: the protocol of the page and of each sub-resource, and a range fetch.
SCRIPT = """
window.addEventListener('load', async () => {
  const out = {page: performance.getEntriesByType('navigation')[0].nextHopProtocol, resources: {}};
  for (const e of performance.getEntriesByType('resource')) out.resources[new URL(e.name).pathname] = e.nextHopProtocol;
  out.img = document.getElementById('img').naturalWidth;
  try {
    const r = await fetch('/100k.bin', {headers: {Range: 'bytes=10-19'}});
    out.range = [r.status, (await r.arrayBuffer()).byteLength];
  } catch (e) { out.range = String(e); }
  document.getElementById('out').textContent = 'RESULT' + JSON.stringify(out) + 'END';
});
"""


def _png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"\x00\xff\x00\x00"  # one red pixel, filter byte first
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_chromium_forced_onto_quic_loads_a_page_and_its_resources_over_h3(server, files: Files, cert, tmp_path: Path) -> None:
    import json
    import re
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    (site / "app.js").write_text(SCRIPT)
    (site / "pixel.png").write_bytes(_png())
    (site / "100k.bin").write_bytes(files.data["/100k.bin"])
    s = server("--root", str(site))
    spki = subprocess.run(f"openssl x509 -in {cert[0]} -pubkey -noout | openssl pkey -pubin -outform der"
                          " | openssl dgst -sha256 -binary | base64", shell=True, capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
    r = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                        f"--origin-to-force-quic-on=stoq.test:{s.port}", "--host-resolver-rules=MAP stoq.test [::1]",
                        f"--ignore-certificate-errors-spki-list={spki}", "--virtual-time-budget=10000", "--dump-dom",
                        f"https://stoq.test:{s.port}/index.html"],
                       capture_output=True, text=True, timeout=120, start_new_session=True)
    m = re.search(r"RESULT(.*?)END", r.stdout)
    assert m, f"the page did not run its script: stdout={r.stdout[-1500:]!r} stderr={r.stderr[-1500:]!r}"
    result = json.loads(m.group(1).replace("&quot;", '"'))
    assert result["page"] == "h3", result
    assert result["resources"].get("/app.js") == "h3" and result["resources"].get("/pixel.png") == "h3", result
    assert result["img"] == 1, result
    assert result["range"] == [206, 10], result
    served = s.wait_finished(4)
    assert any(" GET /index.html" in l for l in served) and any(" GET /100k.bin" in l for l in served), served


HOSTILE = Path(__file__).resolve().parent / "h3hostile.py"


def hostile(port: int, scenario: str) -> dict:
    import json
    import sys
    r = subprocess.run([sys.executable, str(HOSTILE), "--port", str(port), scenario],
                       capture_output=True, text=True, timeout=60)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines, f"h3hostile {scenario} failed ({r.returncode}): {r.stderr[-2000:]}"
    return json.loads(lines[-1])


def test_a_data_frame_on_the_control_stream_closes_that_connection_only(server, files: Files) -> None:
    s = server()
    result = hostile(s.port, "control-data")
    assert result["closed"] and result["error_code"] == 0x105, result  # H3_FRAME_UNEXPECTED
    (ok,) = h3(s.port, "GET /one.txt")
    assert ok["status"] == 200 and s.alive()


def test_garbage_requests_resets_and_unread_responses_never_hurt_the_server(server, files: Files) -> None:
    s = server()
    for scenario in ("garbage-request", "reset-request", "stop-reading", "unread"):
        hostile(s.port, scenario)
        assert s.alive(), scenario
        (ok,) = h3(s.port, "GET /100k.bin")
        assert ok["status"] == 200 and ok["sha256"] == files.sha["/100k.bin"], scenario
