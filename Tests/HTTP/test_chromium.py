"""Headless Chromium loads a page over HTTPS/TCP from the listener: the page, its image and its
script arrive, over HTTP/2 (`nextHopProtocol`), with the node certificate pinned by its SPKI and
stoq.test mapped to [::1]. The page writes what it saw into itself; `--dump-dom` prints it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import Server


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def run_chromium(server: Server, profile: Path, url: str, *extra: str, seconds: int = 90) -> str:
    binary = chromium()
    if binary is None:
        pytest.fail("chromium is not installed (scripts/bootstrap.sh installs it)")
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={server.certs.spki_sha256_base64()}",
        f"--host-resolver-rules=MAP stoq.test [::1]",
        "--virtual-time-budget=15000", "--dump-dom", *extra, url,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"chromium did not finish in {seconds} s: {err[-2000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return out + "\n<!--stderr-->\n" + err


def page_result(dom: str) -> dict:
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert match, dom[-3000:]
    text = match.group(1).replace("&quot;", '"')
    assert text != "pending", "the page's load handler never ran:\n" + dom[-3000:]
    return json.loads(text)


def test_chromium_loads_the_page_its_image_and_script_over_https_tcp(server: Server, tmp_path: Path):
    dom = run_chromium(server, tmp_path / "profile", server.url("/index.html"), "--disable-quic")
    result = page_result(dom)
    assert result["page"] == "h2", result
    assert result["image"] is True and result["script"] is True, result
    assert result["resources"].get("pixel.png") == "h2" and result["resources"].get("app.js") == "h2", result
    assert result["pushes"] == [1, 2, 3], f"the page's WebSocket should receive the three pushes of 'tick': {result}"
    served = [l.split() for l in server.log_lines()]
    assert any(p == "h2" and t == "/index.html" and s == "200" for p, _, t, s, _ in served), served
    assert any(p == "h2" and t == "/pixel.png" and s == "200" for p, _, t, s, _ in served), served
