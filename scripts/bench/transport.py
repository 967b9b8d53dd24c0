#!/usr/bin/env python3
"""The transport table of `make bench`: STOQ beside ngtcp2's example pair and aioquic.

One connection, one file over [::1], for each pair (server → client):

  stoq → stoq        `stoq serve` + `stoq fetch`, ALPN hq-interop
  ngtcp2 → ngtcp2    Debian's gtlsserver + gtlsclient (ngtcp2 0.12 examples, HTTP/3, GnuTLS)
  stoq → aioquic     `stoq serve` + our aioquic hq-interop client
  aioquic → aioquic  our aioquic hq-interop server + client (reference for the row above)

Each run is timed as the wall clock of the client process, from spawn to exit (a new
connection: handshake plus transfer), and the received bytes are checked (size, and
SHA-256 where the client reports it). Rows are interleaved run by run so that a change
of machine load hits every row alike; the figure is the median of BENCH_RUNS runs, also
given as a ratio to the ngtcp2 pair. The server's peak RSS (VmHWM) is read from /proc
before it is stopped. A second table gives the time to the first byte of a new
connection: BENCH_TTFB_FETCHES fetches of a 1 KiB file, each in a new client process
(for the aioquic client, the in-process time from connect to the first stream byte).

A third table holds BENCH_IDLE_CONNS idle connections (aioquic, scripts/bench/idle_conns.py)
to each server and gives the growth of the server's anonymous RSS per connection, with the
handshake rate of that (Python, so client-bound) opener as a lower bound.

Environment: BENCH_TRANSPORT_BYTES (default 1 GiB), BENCH_AIOQUIC_BYTES (default 64 MiB:
aioquic moves tens of Mbit/s, a 1 GiB run would take minutes), BENCH_RUNS (3),
BENCH_TTFB_FETCHES (50), BENCH_IDLE_CONNS (500; 0 skips), BENCH_ONLY (comma list of row keys:
stoq,stoq-inproc,ngtcp2,stoq-aioquic,aioquic). The stoq-inproc row runs `stoq bench transport`
(the transport's own in-process bench, stoq/1) when the binary has it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO / "Tests" / "Interop"
sys.path.insert(0, str(INTEROP))
from interop_certs import help_mentions, make_certs  # noqa: E402

AIOQUIC_HQ = INTEROP / "aioquic_hq.py"
IDLE_CONNS = Path(__file__).resolve().parent / "idle_conns.py"
PY = sys.executable
FETCHED = re.compile(r"fetched (\d+) bytes sha256 ([0-9a-f]{64}) in ([0-9.eE+-]+) s")
TINY = 1024
# `stoq bench transport` (both endpoints in one process, ALPN stoq/1): its two result lines
BENCH_TRANSPORT_RESULT = re.compile(r"STOQ one connection: (\d+) MB in ([0-9.]+) s = ([0-9.]+) Gbit/s")
BENCH_TRANSPORT_FIRST_BYTE = re.compile(
    r"new connection to first byte: median ([0-9.]+) ms, p90 ([0-9.]+) ms \((\d+) runs\)")


BENCH_TRANSPORT_IDLE = re.compile(
    r"memory per idle connection \(client \+ server side\): ([0-9.]+) KiB over (\d+) connections")


def parse_bench_transport(text: str) -> dict | None:
    """{'bytes', 'seconds', 'gbits', and if printed 'median_ms', 'p90_ms', 'runs'} or None."""
    m = BENCH_TRANSPORT_RESULT.search(text)
    if not m:
        return None
    out: dict = {"bytes": int(m.group(1)) << 20, "seconds": float(m.group(2)), "gbits": float(m.group(3))}
    f = BENCH_TRANSPORT_FIRST_BYTE.search(text)
    if f:
        out.update(median_ms=float(f.group(1)), p90_ms=float(f.group(2)), runs=int(f.group(3)))
    i = BENCH_TRANSPORT_IDLE.search(text)
    if i:
        out.update(idle_kib_per_conn=float(i.group(1)), idle_conns=int(i.group(2)))
    return out

# if `stoq fetch` reports its first-byte time (any "first byte … N ms" wording), it is used
STOQ_FIRST_BYTE = re.compile(r"first[ -]byte\D{0,20}?([0-9]+(?:\.[0-9]+)?) ?(ms|s)\b", re.I)
# first STREAM frame received on request stream 0 (1-RTT), in a gtlsclient log line
NGTCP2_FIRST_BYTE = re.compile(r"^I(\d{8}) \S+ frm rx \d+ 1RTT STREAM\(0x0[89a-f]\) id=0x0 ", re.M)


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B" if n < 10_000_000 else f"{n / 1e6:.0f} MB"


def free_port() -> int:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::1", 0, 0, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_file(path: Path, size: int) -> str:
    """Random bytes, made once; returns the SHA-256 (cached beside the file)."""
    sidecar = path.with_suffix(path.suffix + ".sha256")
    if path.exists() and path.stat().st_size == size and sidecar.exists():
        return sidecar.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 << 20))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    sidecar.write_text(h.hexdigest() + "\n")
    return h.hexdigest()


def status_kib(pid: int, key: str) -> int | None:
    """A kB figure from /proc/PID/status (VmHWM, RssAnon, …)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def vm_hwm_kib(pid: int) -> int | None:
    return status_kib(pid, "VmHWM")


def stop_group(p: subprocess.Popen) -> None:
    """Stops a process started in its own process group: SIGTERM, then SIGKILL after 5 s."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=5)
    except ProcessLookupError:
        pass


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


class Server:
    def __init__(self, name: str, cmd: list[str], log: Path, port: int | None = None,
                 ready: str = "listening on", timeout: float = 30) -> None:
        self.name = name
        self.log = open(log, "w")
        self.p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=self.log,
                                  text=True, bufsize=1, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.peak_anon_kib = 0
        self._stopping = threading.Event()
        threading.Thread(target=self._sample_memory, daemon=True).start()
        self.port = port if port is not None else self._wait_port(ready, timeout)
        if port is not None:
            self._wait_bound(port, timeout)

    def _drain(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:  # keep the pipe empty for the server's whole life
            self.lines.append(line)

    def _wait_port(self, ready: str, timeout: float) -> int:
        """Waits for "READY [addr]:port" on the server's stdout or in its stderr log."""
        pattern = re.compile(re.escape(ready) + r" \[[0-9a-fA-F:.]+\]:(\d+)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.flush()
            text = "".join(self.lines) + Path(self.log.name).read_text(errors="replace")
            m = pattern.search(text)
            if m:
                return int(m.group(1))
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready within {timeout} s (see {self.log.name})")

    def _wait_bound(self, port: int, timeout: float) -> None:
        """gtlsserver prints nothing useful when ready: wait until its UDP port is taken."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited early (see {self.log.name})")
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                s.bind(("::1", port, 0, 0))
            except OSError:
                return
            finally:
                s.close()
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not bind [::1]:{port}")

    def _sample_memory(self) -> None:
        """Polls RssAnon: VmHWM also counts file pages a server maps (gtlsserver maps the
        whole file it serves), so the anonymous peak is the figure to compare."""
        while self.p.poll() is None and not self._stopping.is_set():
            anon = status_kib(self.p.pid, "RssAnon")
            if anon is not None and anon > self.peak_anon_kib:
                self.peak_anon_kib = anon
            self._stopping.wait(0.05)

    def peak_rss_kib(self) -> int | None:
        return vm_hwm_kib(self.p.pid)

    def stop(self) -> None:
        self._stopping.set()
        stop_group(self.p)
        self.log.close()


@dataclass
class Sample:
    seconds: float
    bytes: int
    reported_seconds: float | None = None


@dataclass
class Row:
    key: str
    label: str
    proto: str
    size: int
    path: str
    sha: str
    server: Server | None = None
    unavailable: str | None = None
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    peak_rss_kib: int | None = None
    peak_anon_kib: int | None = None
    ttfb_proc: list[float] = field(default_factory=list)    # whole client process, spawn → exit
    ttfb_inproc: list[float] = field(default_factory=list)  # connect → first response byte, client's own clock
    idle: dict | None = None  # idle-connection phase: n, failed, anon_before/after_kib, handshakes_per_s
    first_byte_summary: dict | None = None  # stoq bench transport: median_ms, p90_ms, runs

    def gbits(self) -> float | None:
        if not self.samples:
            return None
        return statistics.median(s.bytes * 8 / s.seconds / 1e9 for s in self.samples)


def run_client(cmd: list[str], timeout: float) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=5)
        return -9, out, err + f"\n(killed after {timeout:.0f} s)", time.perf_counter() - start
    return p.returncode, out, err, time.perf_counter() - start


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out).resolve()
        self.files = self.out / "files"
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
        self.dl = Path(tempfile.mkdtemp(prefix="stoq-bench-dl-", dir=shm))
        self.stoq = args.stoq if args.stoq and os.access(args.stoq, os.X_OK) else None
        self.stoq_reason = ""
        self.stoq_idle_option = False
        if not self.stoq:
            self.stoq_reason = "no stoq binary"
        elif not (help_mentions(self.stoq, "serve", "--listen") and help_mentions(self.stoq, "fetch", "--insecure")):
            self.stoq_reason = "stoq serve not available"
        self.has_ngtcp2 = bool(shutil.which("gtlsserver") or Path("/usr/sbin/gtlsserver").exists()) \
            and bool(shutil.which("gtlsclient"))
        self.gtlsserver = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
        self.gtlsclient = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"

    # ------------------------------------------------------------------ setup
    def setup(self) -> list[Row]:
        a = self.args
        certs_dir = self.out / "certs"
        if certs_dir.exists():
            shutil.rmtree(certs_dir)
        self.certs = make_certs(certs_dir, self.stoq if self.stoq and help_mentions(self.stoq, "certs", "init-ca") else None)
        big, small = a.bytes, a.aioquic_bytes
        sha_big = make_file(self.files / f"transport-{big}.bin", big)
        sha_small = make_file(self.files / f"transport-{small}.bin", small)
        self.tiny_sha = make_file(self.files / "tiny-1k.bin", TINY)
        rows = [
            Row("stoq", "stoq → stoq", "hq-interop", big, f"/transport-{big}.bin", sha_big),
            Row("stoq-inproc", "stoq → stoq, one process (stoq bench transport)", "stoq/1",
                max(1, big >> 20) << 20, "", ""),
            Row("ngtcp2", "ngtcp2 → ngtcp2 (gtlsserver/gtlsclient)", "h3", big, f"/transport-{big}.bin", sha_big),
            Row("stoq-aioquic", "stoq → aioquic client", "hq-interop", small, f"/transport-{small}.bin", sha_small),
            Row("aioquic", "aioquic → aioquic", "hq-interop", small, f"/transport-{small}.bin", sha_small),
        ]
        only = {k.strip() for k in os.environ.get("BENCH_ONLY", "").split(",") if k.strip()}
        for r in rows:
            if only and r.key not in only:
                r.unavailable = "skipped (BENCH_ONLY)"
            elif r.key == "stoq-inproc":
                if not self.stoq:
                    r.unavailable = "no stoq binary"
                elif not help_mentions(self.stoq, "bench transport", "--megabytes"):
                    r.unavailable = "stoq bench transport not available"
                else:
                    self.stoq_idle_option = help_mentions(self.stoq, "bench transport", "--idle-connections")
            elif r.key.startswith("stoq") and self.stoq_reason:
                r.unavailable = self.stoq_reason
            elif r.key == "ngtcp2" and not self.has_ngtcp2:
                r.unavailable = "gtlsserver/gtlsclient not installed (Debian ngtcp2-server, ngtcp2-client)"
        return rows

    def start_servers(self, rows: list[Row]) -> None:
        c = self.certs
        stoq_server: Server | None = None
        for r in rows:
            if r.unavailable:
                continue
            try:
                if r.key in ("stoq", "stoq-aioquic"):
                    if stoq_server is None:
                        stoq_server = Server("stoq-serve", [self.stoq, "serve", self.files, "--listen", "[::1]:0",
                                                            "--cert", c.server_cert, "--key", c.server_key,
                                                            "--alpn", "hq-interop"], self.logs / "stoq-serve.log")
                    r.server = stoq_server
                elif r.key == "ngtcp2":
                    port = free_port()
                    r.server = Server("gtlsserver", [self.gtlsserver, "-q", "-d", self.files, "::1", port,
                                                     c.server_key, c.server_cert], self.logs / "gtlsserver.log",
                                      port=port)
                elif r.key == "aioquic":
                    r.server = Server("aioquic-server", [PY, AIOQUIC_HQ, "server", "-q", "--root", self.files,
                                                         "--listen", "[::1]:0", "--cert", c.server_cert,
                                                         "--key", c.server_key], self.logs / "aioquic-server.log")
            except RuntimeError as exc:
                r.unavailable = f"server failed to start: {exc}"

    # ------------------------------------------------------------------ one transfer
    def transfer(self, r: Row, path: str, size: int, sha: str, timeout: float,
                 ttfb: bool = False) -> tuple[Sample | None, str | None, float | None]:
        """Returns (sample, error, in-process ttfb seconds if the client reports it)."""
        if r.key == "stoq-inproc":
            # Its first run also times the new-connection handshakes (they need no second process).
            handshakes = max(1, self.args.ttfb_fetches) if r.first_byte_summary is None else 1
            extra = ["--idle-connections", "0"] if self.stoq_idle_option else []
            rc, out, err, _ = run_client([self.stoq, "bench", "transport", "--megabytes", str(size >> 20),
                                          "--handshakes", str(handshakes), *extra], timeout)
            parsed = parse_bench_transport(out + err)
            if rc != 0 or not parsed:
                return None, f"stoq bench transport exit {rc}: {(err or out).strip()[-300:]}", None
            if parsed["bytes"] != size:
                return None, f"stoq bench transport moved {parsed['bytes']} of {size} bytes", None
            if handshakes > 1 and "median_ms" in parsed:
                r.first_byte_summary = {k: parsed[k] for k in ("median_ms", "p90_ms", "runs")}
            return Sample(parsed["seconds"], parsed["bytes"], parsed["seconds"]), None, None
        assert r.server is not None
        url = f"https://[::1]:{r.server.port}{path}"
        c = self.certs
        if r.key == "stoq":
            dest = self.dl / "stoq.out"
            rc, out, err, secs = run_client([self.stoq, "fetch", url, "-o", dest, "--ca", c.ca,
                                             "--alpn", "hq-interop"], timeout)
            dest.unlink(missing_ok=True)
            if rc != 0:
                return None, f"stoq fetch exit {rc}: {(err or out).strip()[-300:]}", None
            m = FETCHED.search(out + err)
            if not m:
                return None, f"stoq fetch printed no 'fetched' line: {out.strip()[-200:]}", None
            if int(m.group(1)) != size or m.group(2) != sha:
                return None, f"stoq fetch got {m.group(1)} bytes sha256 {m.group(2)[:16]}…, expected {size}", None
            fb = STOQ_FIRST_BYTE.search(out + err)
            first = (float(fb.group(1)) / (1e3 if fb.group(2) == "ms" else 1.0)) if fb else None
            return Sample(secs, size, float(m.group(3))), None, first
        if r.key == "ngtcp2":
            d = self.dl / "ngtcp2"
            d.mkdir(exist_ok=True)
            # For first-byte runs the client logs (ngtcp2's log lines carry milliseconds since
            # the connection was created), so the connection's own first-byte time can be read.
            verbosity = ["--no-quic-dump", "--no-http-dump"] if ttfb else ["-q"]
            rc, out, err, secs = run_client([self.gtlsclient, *verbosity, "--exit-on-all-streams-close",
                                             "--download", d, "::1", r.server.port, url], timeout)
            first = None
            if ttfb:
                m = NGTCP2_FIRST_BYTE.search(out + err)
                first = int(m.group(1)) / 1e3 if m else None
            got = d / Path(path).name
            n = got.stat().st_size if got.exists() else 0
            ok_sha = True
            if n == size and (size <= TINY or not r.samples):  # the first big run is hashed too (untimed)
                h = hashlib.sha256()
                with open(got, "rb") as f:
                    for block in iter(lambda: f.read(8 << 20), b""):
                        h.update(block)
                ok_sha = h.hexdigest() == sha
            shutil.rmtree(d, ignore_errors=True)
            if rc != 0 or n != size or not ok_sha:
                what = "SHA-256 mismatch" if n == size and not ok_sha else f"{n} of {size} bytes"
                return None, f"gtlsclient exit {rc}, {what}: {err.strip()[-300:]}", None
            return Sample(secs, size), None, first
        # aioquic client (against stoq serve or the aioquic server)
        report = self.dl / "aioquic.json"
        rc, out, err, secs = run_client([PY, AIOQUIC_HQ, "client", url, "--ca", c.ca, "--quiet",
                                         "--json", report, "--timeout", str(timeout - 5)], timeout)
        data = json.loads(report.read_text()) if report.exists() else {}
        report.unlink(missing_ok=True)
        if rc != 0 or not data.get("ok"):
            return None, f"aioquic client exit {rc}: {(err or out).strip()[-300:]}", None
        if data["bytes"] != size or data["sha256"] != sha:
            return None, f"aioquic client got {data['bytes']} bytes, expected {size}", None
        return Sample(secs, size, data["seconds"]), None, data.get("ttfb_s")

    # ------------------------------------------------------------------ idle connections
    def idle_phase(self, r: Row, n: int) -> None:
        """Holds n idle aioquic connections to r's server; records its RssAnon before/after."""
        if r.key == "stoq-inproc":  # the command measures it itself (both sides in one process)
            rc, out, err, _ = run_client([self.stoq, "bench", "transport", "--megabytes", "1", "--handshakes", "1",
                                          "--idle-connections", str(n)], 120 + n / 10)
            parsed = parse_bench_transport(out + err)
            if rc != 0 or not parsed or "idle_kib_per_conn" not in parsed:
                r.errors.append(f"idle connections: stoq bench transport exit {rc}: {(err or out).strip()[-200:]}")
            else:
                r.idle = {"n": parsed["idle_conns"], "failed": 0, "kib_per_conn": parsed["idle_kib_per_conn"],
                          "both_sides": True}
            return
        assert r.server is not None
        pid = r.server.p.pid
        alpn = "h3" if r.key == "ngtcp2" else "hq-interop"
        before = status_kib(pid, "RssAnon")
        log = open(self.logs / f"idle-{r.key}.log", "w")
        p = subprocess.Popen([PY, IDLE_CONNS, "--port", str(r.server.port), "--alpn", alpn,
                              "--ca", str(self.certs.ca), "-n", str(n)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                             start_new_session=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in p.stdout], daemon=True).start()  # type: ignore[union-attr]
        try:
            line = lines.get(timeout=60 + n / 5)
            m = re.search(r"established (\d+) connections in ([0-9.]+) s \(([0-9.]+) handshakes/s\) failed (\d+)", line)
            if not m:
                r.errors.append(f"idle connections: unexpected output {line.strip()!r}")
                return
            time.sleep(1.0)  # let the server finish its handshake bookkeeping
            after = status_kib(pid, "RssAnon")
            r.idle = {"n": int(m.group(1)), "failed": int(m.group(4)), "anon_before_kib": before,
                      "anon_after_kib": after, "handshakes_per_s": float(m.group(3))}
            if int(m.group(1)) == 0:
                r.errors.append("idle connections: none established")
        except queue.Empty:
            r.errors.append(f"idle connections: not all {n} established within {60 + n / 5:.0f} s")
        finally:
            try:
                p.stdin.close()  # type: ignore[union-attr]
                p.wait(timeout=20)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            log.close()

    # ------------------------------------------------------------------ runs
    def run(self) -> dict:
        a = self.args
        rows = self.setup()
        print(f"transport bench: {a.runs} runs, load average {loadavg()}, "
              f"certificates by {self.certs.made_by}", flush=True)
        self.start_servers(rows)
        live = [r for r in rows if not r.unavailable]
        load_start = loadavg()
        try:
            for i in range(a.runs):
                for r in live:
                    timeout = max(120.0, r.size * 8 / 5e6)  # never slower than 5 Mbit/s
                    sample, error, _ = self.transfer(r, r.path, r.size, r.sha, timeout)
                    if sample:
                        r.samples.append(sample)
                        print(f"  run {i + 1}/{a.runs} {r.label:<48} {human_bytes(r.size):>8} "
                              f"{sample.seconds:8.3f} s  {sample.bytes * 8 / sample.seconds / 1e9:7.3f} Gbit/s",
                              flush=True)
                    else:
                        r.errors.append(error or "?")
                        print(f"  run {i + 1}/{a.runs} {r.label:<48} FAILED: {error}", flush=True)
            for r in live:
                r.peak_rss_kib = r.server.peak_rss_kib() if r.server else None
                r.peak_anon_kib = r.server.peak_anon_kib if r.server else None
            # time to first byte of a new connection
            ttfb_rows = [r for r in live if r.key in ("stoq", "ngtcp2", "stoq-aioquic", "aioquic")]
            for i in range(a.ttfb_fetches):
                for r in ttfb_rows:
                    sample, error, inproc = self.transfer(r, "/tiny-1k.bin", TINY, self.tiny_sha, 30.0, ttfb=True)
                    if sample is None:
                        r.errors.append(f"ttfb: {error}")
                        continue
                    r.ttfb_proc.append(sample.seconds)
                    if inproc is not None:
                        r.ttfb_inproc.append(inproc)
            # memory per idle connection (one measurement per distinct server)
            if a.idle_conns > 0:
                for r in live:
                    if r.key in ("stoq", "ngtcp2", "aioquic") or (r.key == "stoq-inproc" and self.stoq_idle_option):
                        print(f"  idle: holding {a.idle_conns} connections to {r.label}", flush=True)
                        self.idle_phase(r, a.idle_conns)
        finally:
            stopped = set()
            for r in rows:
                if r.server and id(r.server) not in stopped:
                    stopped.add(id(r.server))
                    r.server.stop()
            shutil.rmtree(self.dl, ignore_errors=True)
        return self.report(rows, load_start)

    # ------------------------------------------------------------------ output
    def report(self, rows: list[Row], load_start: str) -> dict:
        ref = next((r for r in rows if r.key == "ngtcp2"), None)
        ref_g = ref.gbits() if ref else None
        ref_t = statistics.median(ref.ttfb_proc) if ref and ref.ttfb_proc else None

        def cell_ratio(v: float | None, base: float | None) -> str:
            return f"{v / base:.2f}×" if v and base else "—"

        lines = []
        head = ("peer (server → client)", "ALPN", "size", "Gbit/s", "ratio", "server peak RSS (anon)", "runs")
        body = []
        for r in rows:
            if r.unavailable:
                body.append((r.label, r.proto, human_bytes(r.size), f"n/a ({r.unavailable})", "", "", ""))
                continue
            g = r.gbits()
            body.append((r.label, r.proto, human_bytes(r.size),
                         f"{g:.3f}" if g else "failed", cell_ratio(g, ref_g),
                         (f"{r.peak_rss_kib / 1024:.1f} MiB ({(r.peak_anon_kib or 0) / 1024:.1f} MiB)"
                          if r.peak_rss_kib else "— (no separate server)" if r.key == "stoq-inproc" else "?"),
                         f"{len(r.samples)}/{self.args.runs}"))
        lines += table(head, body)
        lines.append("")
        head2 = ("peer (server → client)", "new connection, 1 KiB: client process median", "p99", "ratio",
                 "connect → first byte median", "p99", "fetches")
        body2 = []

        def ms(v: list[float], q: float) -> str:
            if not v:
                return "—"
            x = statistics.median(v) if q == 50 else sorted(v)[max(0, -(-int(q) * len(v) // 100) - 1)]
            return f"{x * 1e3:.1f} ms"

        for r in rows:
            if r.unavailable:
                body2.append((r.label, f"n/a ({r.unavailable})", "", "", "", "", ""))
                continue
            if r.key == "stoq-inproc":
                f = r.first_byte_summary
                body2.append((r.label, "—", "", "", f"{f['median_ms']:.1f} ms" if f else "failed",
                              f"(p90) {f['p90_ms']:.1f} ms" if f else "", str(f["runs"]) if f else "0"))
                continue
            if not r.ttfb_proc:
                body2.append((r.label, "failed", "", "", "", "", "0"))
                continue
            body2.append((r.label, ms(r.ttfb_proc, 50), ms(r.ttfb_proc, 99),
                          cell_ratio(statistics.median(r.ttfb_proc), ref_t),
                          ms(r.ttfb_inproc, 50), ms(r.ttfb_inproc, 99), str(len(r.ttfb_proc))))
        lines += table(head2, body2)
        lines.append("")
        if self.args.idle_conns > 0:
            ref_idle = per_conn(ref.idle) if ref else None
            head3 = ("server", "idle connections held", "server RssAnon before → after", "per connection",
                     "ratio", "handshakes/s (aioquic client-bound)")
            body3 = []
            for r in rows:
                if r.key == "stoq-aioquic" or (r.key == "stoq-inproc" and not r.idle):
                    continue
                if r.key == "stoq-inproc":
                    body3.append(("stoq bench transport (client + server, one process)", str(r.idle["n"]), "",
                                  f"{r.idle['kib_per_conn']:.1f} KiB (both sides)", "—", ""))
                    continue
                label = r.label.split(" → ")[0] + (" serve" if r.key == "stoq" else
                                                    " gtlsserver" if r.key == "ngtcp2" else " server")
                if r.unavailable:
                    body3.append((label, f"n/a ({r.unavailable})", "", "", "", ""))
                elif not r.idle:
                    body3.append((label, "failed", "", "", "", ""))
                else:
                    i = r.idle
                    pc = per_conn(i)
                    body3.append((label, f"{i['n']} (failed {i['failed']})",
                                  f"{(i['anon_before_kib'] or 0) / 1024:.1f} → {(i['anon_after_kib'] or 0) / 1024:.1f} MiB",
                                  f"{pc:.1f} KiB" if pc is not None else "?", cell_ratio(pc, ref_idle),
                                  f"{i['handshakes_per_s']:.0f}"))
            lines += table(head3, body3)
            lines.append("")
        lines.append("ratio = figure / ngtcp2's in the same run (Gbit/s: higher is better; first byte and memory: "
                     "lower is better). The stoq serve rows share one `stoq serve` process.")
        lines.append("stoq bench transport: both endpoints in one process, ALPN stoq/1, a unidirectional stream; "
                     "its time is its own (server side, first stream to FIN), the others are client spawn → exit.")
        lines.append("client process = spawn → exit of a new client fetching 1 KiB (includes process start-up); "
                     "connect → first byte = the client's own clock (ngtcp2: its log, 1 ms resolution; "
                     "aioquic: perf_counter; stoq fetch: its own report if it prints one).")
        lines.append("server peak RSS = VmHWM while it served every run (file pages it maps count: gtlsserver maps "
                     "the file); (anon) = peak RssAnon sampled every 50 ms, the figure to compare.")
        lines.append(f"Median of {self.args.runs} runs, interleaved; each run is a new connection timed from client "
                     f"spawn to exit. Load average at start {load_start}, at end {loadavg()} ({os.cpu_count()} cores).")
        errs = [(r.label, e) for r in rows for e in r.errors]
        for label, e in errs[:12]:
            lines.append(f"error: {label}: {e}")
        text = "\n".join(lines)
        print(text, flush=True)
        result = {
            "load_start": load_start, "load_end": loadavg(), "runs": self.args.runs,
            "rows": [{"key": r.key, "label": r.label, "alpn": r.proto, "bytes": r.size,
                      "unavailable": r.unavailable, "gbits_median": r.gbits(),
                      "ratio_to_ngtcp2": (r.gbits() / ref_g) if r.gbits() and ref_g else None,
                      "samples_s": [s.seconds for s in r.samples],
                      "reported_s": [s.reported_seconds for s in r.samples],
                      "server_peak_rss_kib": r.peak_rss_kib, "server_peak_anon_kib": r.peak_anon_kib,
                      "ttfb_process_s": r.ttfb_proc, "ttfb_inprocess_s": r.ttfb_inproc,
                      "idle": r.idle, "first_byte_summary": r.first_byte_summary,
                      "errors": r.errors} for r in rows],
        }
        (self.out / "transport.json").write_text(json.dumps(result, indent=1))
        (self.out / "transport.txt").write_text(text + "\n")
        return result


def per_conn(idle: dict | None) -> float | None:
    if idle and "kib_per_conn" in idle:
        return None  # both sides of the connection: not comparable with a server-only figure
    if not idle or not idle.get("n") or idle.get("anon_after_kib") is None or idle.get("anon_before_kib") is None:
        return None
    return (idle["anon_after_kib"] - idle["anon_before_kib"]) / idle["n"]


def table(head: tuple, body: list[tuple]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    def fmt(row: tuple) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"
    return [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stoq", help="path to the (release) stoq binary")
    p.add_argument("--out", default=str(REPO / "bench-out"))
    p.add_argument("--bytes", type=int, default=env_int("BENCH_TRANSPORT_BYTES", 1 << 30))
    p.add_argument("--aioquic-bytes", type=int, default=env_int("BENCH_AIOQUIC_BYTES", 64 << 20))
    p.add_argument("--runs", type=int, default=env_int("BENCH_RUNS", 3))
    p.add_argument("--ttfb-fetches", type=int, default=env_int("BENCH_TTFB_FETCHES", 50))
    p.add_argument("--idle-conns", type=int, default=env_int("BENCH_IDLE_CONNS", 500),
                   help="idle connections held per server for memory per connection (0: skip)")
    args = p.parse_args()
    result = Bench(args).run()
    failed = [r for r in result["rows"] if not r["unavailable"] and r["gbits_median"] is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
