"""Headless Chromium against a real edge (issue 12 "Tests"): an origin and an edge as `stoq node`
processes of the release binary, the edge with `--http '[::1]:0'` and no publisher key; a public
site (`stoq put --public`, `stoq name publish --public`) with a page, its image, its script and a small
webm video made by ffmpeg. Chromium loads `https://stoq.test:PORT/name/site/index.html` once forced
onto QUIC (`nextHopProtocol == "h3"`) and once over HTTPS/TCP (`h2`), the edge's certificate pinned
by its SPKI and stoq.test mapped to [::1]. Each time the image and the script load, the video seeks
to its middle and plays (its range requests are in the access log), and the page's WebSocket gets
the push of a `stoq name publish` made while the page is open.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
ended by NUL on fds 3 and 4), so the test waits for real events instead of a virtual-time budget.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Node, Procs, User, content_id

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FFMPEG = shutil.which("ffmpeg")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>STOQ edge</title><script src="app.js"></script></head>
<body>
<img id="pixel" src="pixel.png" alt="">
<video id="clip" src="clip.webm" muted playsinline preload="metadata"></video>
<script>
window.stoq = {pushes: [], wsOpen: false, video: null, loaded: false};
const ws = new WebSocket("wss://" + location.host + "/ws/name/site");
ws.onopen = () => { window.stoq.wsOpen = true; };
ws.onmessage = (e) => { window.stoq.pushes.push(JSON.parse(e.data).version); };
ws.onerror = () => { window.stoq.wsError = true; };
const v = document.getElementById("clip");
v.addEventListener("error", () => { window.stoq.video = {error: v.error ? v.error.code : -1}; });
v.addEventListener("loadedmetadata", () => { v.currentTime = v.duration / 2; });
v.addEventListener("seeked", () => { v.play().catch((e) => { window.stoq.video = {error: String(e)}; }); });
v.addEventListener("timeupdate", () => {
  if (!v.paused && v.currentTime > v.duration / 2 + 0.3) {
    window.stoq.video = {played: true, at: v.currentTime, duration: v.duration};
  }
});
window.addEventListener("load", () => { window.stoq.loaded = true; });
window.report = () => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = {};
  for (const e of performance.getEntriesByType("resource")) res[e.name.split("/").pop()] = e.nextHopProtocol;
  const img = document.getElementById("pixel");
  return JSON.stringify(Object.assign({}, window.stoq, {
    page: nav ? nav.nextHopProtocol : null, resources: res,
    image: img.complete && img.naturalWidth === 1, script: window.scriptLoaded === true}));
};
</script>
</body></html>
"""


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


@dataclass
class Edge:
    origin: Node
    port: int
    site: str
    spki: str
    access_log: Path
    publisher: list[str]


def spki_of(cert: Path) -> str:
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True, check=True, timeout=30).stdout
    key = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der, capture_output=True, check=True, timeout=30).stdout
    return base64.b64encode(hashlib.sha256(key).digest()).decode()


@pytest.fixture(scope="module")
def edge(user: User, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/bootstrap.sh installs it)")
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed (scripts/bootstrap.sh installs it): no video to play")
    work = tmp_path_factory.mktemp("browser")
    site = work / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    (site / "app.js").write_text("window.scriptLoaded = true;\n")
    (site / "pixel.png").write_bytes(png())
    # A 12 s VP8 clip of about 1.5 MB (noise keeps it from compressing away): a seek to its middle
    # asks for a range.
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=12:size=320x240:rate=15,noise=alls=60:allf=t",
                    "-c:v", "libvpx", "-b:v", "1M", "-deadline", "realtime", "-cpu-used", "8", "-threads", "1",
                    str(site / "clip.webm")], check=True, timeout=240)
    origin_store = work / "stores" / "origin"
    cid = content_id(user.ok("put", "--public", site, "--store", origin_store).stdout)
    procs = Procs()
    try:
        # browser-publisher publishes the site's name: the origin lists it (names are closed by default).
        origin = user.node(procs, "browser-origin", "--role", "origin", "--publisher", user.cert("browser-publisher")[0], store=origin_store)
        publisher = ["--node", origin.address, *user.tls("browser-publisher"), "--store", str(work / "publisher")]
        user.ok("name", "publish", "site", cid, "--public", *publisher)
        log = work / "access.log"
        cert, key = user.cert("browser-edge")
        p = user.start(procs, "browser-edge", "node", "--name", "browser-edge", "--listen", "[::1]:0", "--cert", cert,
                       "--key", key, "--ca", user.ca, "--store", work / "stores" / "edge", "--role", "edge",
                       "--upstream", origin.address, "--http", "[::1]:0", "--access-log", log,
                       "--access-log-format", "json")
        http = p.wait_line(r"^http \S+ \[[0-9a-fA-F:]+\]:(\d+)")
        p.wait_line(r"^ready ")
        yield Edge(origin=origin, port=int(http.group(1)), site=cid, spki=spki_of(cert), access_log=log,
                   publisher=publisher)
    finally:
        procs.stop_all()


class Browser:
    """One headless Chromium driven over `--remote-debugging-pipe`."""

    def __init__(self, profile: Path, *flags: str) -> None:
        assert CHROMIUM
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        # Chromium reads commands on fd 3 and answers on fd 4; bash moves the pipe ends there.
        self.proc = subprocess.Popen(
            ["bash", "-c", 'exec 3<&"$1" 4>&"$2"; shift 2; exec "$@"', "bash", str(to_chrome_r), str(from_chrome_w), CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}", "--remote-debugging-pipe",
             *flags, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(to_chrome_r, from_chrome_w), start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        os.set_blocking(self.from_chrome, False)
        self.buffer = b""
        self.next_id = 0
        self.session: str | None = None

    def call(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        msg: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self.buffer:
                raw, _, self.buffer = self.buffer.partition(b"\0")
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    assert "error" not in reply, reply
                    return reply["result"]
            assert self.proc.poll() is None, f"chromium exited: {self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}"
            try:
                data = os.read(self.from_chrome, 1 << 16)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            assert data, "chromium closed its DevTools pipe"
            self.buffer += data
        raise AssertionError(f"chromium did not answer {method} within {timeout} s")

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def state(self) -> dict:
        text = self.evaluate("typeof window.report === 'function' ? window.report() : null")
        return json.loads(text) if isinstance(text, str) else {}

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        os.close(self.to_chrome)
        os.close(self.from_chrome)


def wait_for(browser: Browser, what: str, ok, seconds: float = 90) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    state: dict = {}
    while time.monotonic() < deadline:
        state = browser.state()
        if ok(state):
            return state
        time.sleep(0.25)
    raise AssertionError(f"the page never got {what} within {seconds} s: {state}")


@pytest.mark.parametrize("transport", ["h3", "h2"])
def test_chromium_loads_the_site_from_the_edge(user: User, edge: Edge, transport: str, tmp_path: Path) -> None:
    host = f"stoq.test:{edge.port}"
    flags = [f"--host-resolver-rules=MAP stoq.test [::1]", f"--ignore-certificate-errors-spki-list={edge.spki}"]
    flags += [f"--origin-to-force-quic-on={host}"] if transport == "h3" else ["--disable-quic"]
    browser = Browser(tmp_path / "profile", *flags)
    try:
        browser.open(f"https://{host}/name/site/index.html")
        state = wait_for(browser, "its load event and an open WebSocket", lambda s: s.get("loaded") and s.get("wsOpen"))
        assert state["page"] == transport, state
        assert state["image"] and state["script"], state
        assert state["resources"].get("pixel.png") == transport and state["resources"].get("app.js") == transport, state
        # A new version of the name while the page is open: the edge pushes it down the WebSocket.
        user.ok("name", "publish", "site", edge.site, "--public", *edge.publisher)
        state = wait_for(browser, "a WebSocket push", lambda s: s.get("pushes"))
        assert all(isinstance(v, int) and v >= 2 for v in state["pushes"]), state
        state = wait_for(browser, "its video playing from the middle", lambda s: s.get("video"))
        assert state["video"].get("played") is True, state
        print(f"chromium over {transport}: {json.dumps(state)}")
    finally:
        browser.close()
    protocol = "h3" if transport == "h3" else "h2"
    deadline = time.monotonic() + 10
    video: list[dict] = []
    while time.monotonic() < deadline and not video:
        lines = [json.loads(l) for l in edge.access_log.read_text().splitlines() if l.strip()]
        video = [l for l in lines if l["path"] == "/name/site/clip.webm" and l["protocol"] == protocol and l["status"] == 206]
        time.sleep(0.2)
    assert video, f"no {protocol} range request for the video in the access log"
    print(f"video range requests over {protocol}: {[(l['status'], l['bytes']) for l in video]}")
    assert any(l["path"] == "/name/site/index.html" and l["protocol"] == protocol and l["status"] == 200 for l in lines)
