#!/usr/bin/env python3
"""The front door's benchmarks (issue 12), each beside its peer from the same run, over [::1]:

  http3  a 1 GB file over HTTP/3 from an edge's cache (`stoq node --role edge --http`, warmed
         first) beside ngtcp2's `gtlsserver` serving the same file; `gtlsclient` is the client for
         both. Gbit/s (median of runs, sides interleaved) and the ratio.
  small  requests per second for 10 KB files over HTTP/2 from the warm edge beside Debian's nginx
         serving the same files over HTTP/2 with TLS (the edge's own P-256 certificate for both),
         `h2load` driving both with the same clients and streams; latency p50 and p99.
  ttfb   time to first byte (curl's time_starttransfer, HTTP/2) of the 1 GB file on a cold edge
         (nothing cached: the edge fills from its origin) and on the warm edge.

Beside each STOQ figure: the edge's CPU time per byte served (utime + stime from /proc, in
nanoseconds per byte) and its peak RSS (VmHWM). The machine may be shared: the load average is
printed with the figures; read them as noisy.

    python3 scripts/bench/frontdoor.py --stoq /abs/release/stoq [--bytes N] [--runs N] [--parts http3,small,ttfb]

Skips a part, saying why, when a tool is missing (nginx-light, nghttp2-client, ngtcp2-client,
ngtcp2-server, curl: scripts/bootstrap.sh installs them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
CONTENT_ID = re.compile(r"stoq:[a-z2-7]{52}")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port(kind: int) -> int:
    import socket
    with socket.socket(socket.AF_INET6, kind) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process in its own process group whose stdout lines are collected by a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.err = open(log, "wb") if log else subprocess.DEVNULL
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, text=True, env=env,
                                  start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.p.poll() is not None:
                raise RuntimeError(f"exited ({self.p.returncode}) before printing /{pattern}/: {self.lines[-20:]}")
            time.sleep(0.05)
        raise RuntimeError(f"no line /{pattern}/ within {timeout:.0f} s: {self.lines[-20:]}")

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self.err is not subprocess.DEVNULL:
            self.err.close()


def run(cmd: list[object], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))}… failed ({r.returncode}): {r.stderr[-800:]}")
    return r.stdout


class Edge:
    """An origin holding the site and an edge above it with --http, as `stoq node` processes."""

    def __init__(self, stoq: str, work: Path, env: dict[str, str], site_id: str, origin_store: Path,
                 cache_bytes: int) -> None:
        self.stoq, self.work, self.env = stoq, work, env
        ca = work / "certs"
        common = ["--ca", ca / "ca.pem"]
        self.origin = Proc([str(c) for c in [stoq, "node", "--name", "bench-origin", "--listen", "[::1]:0",
                                              "--cert", ca / "bench-origin.pem", "--key", ca / "bench-origin.key",
                                              *common, "--store", origin_store, "--role", "origin",
                                              "--log-level", "error"]],
                           env, work / "origin.log")
        origin_addr = self.origin.wait_line(r"^ready \S+ (\[[0-9a-fA-F:]+\]:\d+)", 120).group(1)
        self.edge = Proc([str(c) for c in [stoq, "node", "--name", "bench-edge", "--listen", "[::1]:0",
                                            "--cert", ca / "bench-edge.pem", "--key", ca / "bench-edge.key",
                                            *common, "--store", work / "stores" / "edge", "--role", "edge",
                                            "--upstream", origin_addr, "--cache-bytes", cache_bytes,
                                            "--http", "[::1]:0", "--publisher-key", origin_store / "publisher.key",
                                            "--log-level", "error"]],
                         env, work / "edge.log")
        http = self.edge.wait_line(r"^http \S+ (\[[0-9a-fA-F:]+\]:(\d+))", 120)
        self.edge.wait_line(r"^ready ", 120)
        self.port = int(http.group(2))
        self.base = f"https://[::1]:{self.port}/stoq/{site_id}"

    @property
    def pid(self) -> int:
        return self.edge.p.pid

    def stop(self) -> None:
        self.edge.stop()
        self.origin.stop()


def curl_ttfb(url: str, timeout: float) -> tuple[float, float, str]:
    """(time_starttransfer, time_total, failure) of one HTTP/2 GET whose body is thrown away;
    failure is "" when the whole body arrived, else what curl said (the first byte may still have)."""
    r = subprocess.run(["curl", "-sSk", "-g", "--http2", "-o", "/dev/null", "--max-time", str(int(timeout)),
                        "-w", "%{http_code} %{time_starttransfer} %{time_total}", url],
                       capture_output=True, text=True, timeout=timeout + 10)
    fields = r.stdout.split()
    if len(fields) != 3 or fields[0] != "200":
        raise RuntimeError(f"GET {url} failed (curl exit {r.returncode}, status {fields[:1]}): {r.stderr.strip()[-300:]}")
    failure = "" if r.returncode == 0 else f"curl exit {r.returncode}: {r.stderr.strip()[-200:]}"
    return float(fields[1]), float(fields[2]), failure


def warm(url: str, timeout: float, attempts: int = 3) -> None:
    """Fetches the whole file until one fetch succeeds (the edge then holds every chunk)."""
    failure = ""
    for _ in range(attempts):
        _, _, failure = curl_ttfb(url, timeout)
        if not failure:
            return
    raise RuntimeError(f"the edge did not serve {url} whole in {attempts} tries ({failure})")


def gtls_fetch(port: int, url: str, timeout: float) -> float:
    start = time.monotonic()
    r = subprocess.run(["gtlsclient", "-q", "--exit-on-all-streams-close", "::1", str(port), url],
                       capture_output=True, timeout=timeout)
    elapsed = time.monotonic() - start
    if r.returncode != 0:
        raise RuntimeError(f"gtlsclient failed ({r.returncode}): {r.stderr.decode(errors='replace')[-500:]}")
    return elapsed


H2LOAD_RPS = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")
H2LOAD_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored")


def h2load(urls: list[str], requests: int, clients: int, streams: int, timeout: float) -> dict[str, float]:
    """One h2load run over HTTP/2 (TLS, ALPN h2); requests per second and latency p50/p99 in ms
    (from the per-request log h2load writes with --log-file)."""
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as logf:
        # h2load writes an IPv6 literal into :authority without brackets, which nginx answers 400.
        authority = re.match(r"https://(\[[0-9a-fA-F:]+\]:\d+)/", urls[0])
        assert authority is not None
        out = run(["h2load", "-n", requests, "-c", clients, "-m", streams, "-t", "1", "--log-file", logf.name,
                   "-H", f":authority: {authority.group(1)}", *urls],
                  timeout=timeout)
        m, d = H2LOAD_RPS.search(out), H2LOAD_DONE.search(out)
        if not m or not d:
            raise RuntimeError(f"h2load printed no result: {out[-800:]}")
        if int(d.group(4)) != requests:
            raise RuntimeError(f"h2load {urls[0]}: only {d.group(4)} of {requests} requests succeeded: {out[-800:]}")
        lat: list[int] = []  # microseconds; log lines: start(us) status duration(us)
        for line in Path(logf.name).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "200":
                lat.append(int(parts[2]))
        if not lat:
            raise RuntimeError("h2load logged no successful request")
        lat.sort()
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000  # noqa: E731
        codes = re.search(r"status codes: (\d+) 2xx", out)
        if not codes or int(codes.group(1)) != requests:
            raise RuntimeError(f"h2load: not every answer was 2xx: {out[-800:]}")
        return {"rps": float(m.group(1)), "p50": pct(0.50), "p99": pct(0.99)}


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    sendfile on;
    server {{
        listen [::1]:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stoq", default=os.environ.get("STOQ_BIN", ""))
    ap.add_argument("--bytes", type=int, default=int(os.environ.get("BENCH_FRONTDOOR_BYTES", 1_000_000_000)))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 3)))
    ap.add_argument("--small-files", type=int, default=100)
    ap.add_argument("--small-requests", type=int, default=int(os.environ.get("BENCH_FRONTDOOR_REQUESTS", 20000)))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--parts", default=os.environ.get("BENCH_FRONTDOOR_PARTS", "ttfb,http3,small"))
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if not args.stoq or not os.access(args.stoq, os.X_OK):
        print("frontdoor: skipped (no stoq binary: --stoq /abs/path/to/release/stoq)")
        return 0
    status = 0
    with tempfile.TemporaryDirectory(prefix="stoq-frontdoor-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # nginx's worker runs as nobody when started by root: it must read the site
        env = dict(os.environ, HOME=str(work), SWIFT_BACKTRACE="enable=no")
        env.pop("STOQ_STORE", None)
        site = work / "site"
        (site / "small").mkdir(parents=True)
        big = site / "big.bin"
        with open(big, "wb") as f:
            left = args.bytes
            while left > 0:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
        for i in range(args.small_files):
            (site / "small" / f"{i}.bin").write_bytes(os.urandom(10_000))
        ca = work / "certs"
        run([args.stoq, "certs", "init-ca", "--out", ca], env)
        for name in ("bench-origin", "bench-edge"):
            run([args.stoq, "certs", "issue", "--ca", ca, "--name", name, "--out", ca], env)
        origin_store = work / "stores" / "origin"
        t0 = time.monotonic()
        site_id_m = CONTENT_ID.search(run([args.stoq, "put", site, "--store", origin_store], env, timeout=1800))
        if not site_id_m:
            print("frontdoor: FAILED (stoq put printed no content id)")
            return 1
        site_id = site_id_m.group(0)
        print(f"Front door over [::1], {args.bytes / 1e6:.0f} MB file and {args.small_files} × 10 KB files "
              f"(put in {time.monotonic() - t0:.0f} s); load {load()} on {os.cpu_count()} cores: figures are noisy")
        edge: Edge | None = None
        procs: list[Proc] = []
        timeout = max(300.0, args.bytes / 2e6)
        try:
            edge = Edge(args.stoq, work, env, site_id, origin_store, cache_bytes=args.bytes * 2 + (256 << 20))
            big_url = f"{edge.base}/big.bin"

            # --- time to first byte, cold then warm (the cold fetch also warms the cache) ---
            if "ttfb" in parts and shutil.which("curl"):
                c0 = cpu_seconds(edge.pid)
                cold, cold_total, cold_failure = curl_ttfb(big_url, timeout)
                if cold_failure:
                    warm(big_url, timeout)
                c1 = cpu_seconds(edge.pid)
                warm_runs = [curl_ttfb(big_url, timeout) for _ in range(args.runs)]
                c2 = cpu_seconds(edge.pid)
                wt = statistics.median(t for t, _, _ in warm_runs)
                wtotal = statistics.median(t for _, t, _ in warm_runs)
                warm_failures = [f for _, _, f in warm_runs if f]
                print(f"\nTime to first byte, {args.bytes / 1e6:.0f} MB over HTTP/2 (curl time_starttransfer), load {load()}")
                whole = "BODY FAILED (" + cold_failure + ")" if cold_failure else \
                    f"whole file {args.bytes * 8 / cold_total / 1e9:.3f} Gbit/s"
                print(f"  cold edge (fills from origin)  {cold * 1000:8.1f} ms   {whole}"
                      + ("" if cold_failure else f"   edge CPU {(c1 - c0) * 1e9 / args.bytes:.1f} ns/B"))
                whole = f"BODY FAILED {len(warm_failures)}× ({warm_failures[0]})" if warm_failures else \
                    f"whole file {args.bytes * 8 / wtotal / 1e9:.3f} Gbit/s"
                print(f"  warm edge (median of {args.runs})      {wt * 1000:8.1f} ms   {whole}"
                      f"   edge CPU {(c2 - c1) * 1e9 / (args.bytes * args.runs):.1f} ns/B")
                print(f"  edge peak RSS {peak_rss_mib(edge.pid):.0f} MiB")
                if cold_failure or warm_failures:
                    status = 1
            elif "ttfb" in parts:
                print("\nttfb: skipped (curl is not installed)")
            # Warm the cache (whole file) whatever ran before.
            warm(big_url, timeout)

            # --- HTTP/3, 1 GB from the edge's cache vs gtlsserver ---
            if "http3" in parts:
                missing = [t for t in ("gtlsclient", "gtlsserver") if shutil.which(t) is None]
                if missing:
                    print(f"\nhttp3: skipped ({', '.join(missing)} not installed; Debian ngtcp2-client/ngtcp2-server)")
                else:
                    gport = free_port(__import__("socket").SOCK_DGRAM)
                    www = work / "www"
                    www.mkdir()
                    os.link(big, www / "big.bin")
                    gtls = Proc(["gtlsserver", "-q", "-d", str(www), "::1", str(gport),
                                 str(ca / "bench-edge.key"), str(ca / "bench-edge.pem")])
                    procs.append(gtls)
                    time.sleep(1)
                    times: dict[str, list[float]] = {"stoq": [], "gtls": []}
                    cpu = {"stoq": 0.0, "gtls": 0.0}
                    for _ in range(args.runs):
                        c0 = cpu_seconds(edge.pid)
                        times["stoq"].append(gtls_fetch(edge.port, big_url, timeout))
                        cpu["stoq"] += cpu_seconds(edge.pid) - c0
                        c0 = cpu_seconds(gtls.p.pid)
                        times["gtls"].append(gtls_fetch(gport, f"https://localhost:{gport}/big.bin", timeout))
                        cpu["gtls"] += cpu_seconds(gtls.p.pid) - c0
                    rate = {k: args.bytes * 8 / statistics.median(v) / 1e9 for k, v in times.items()}
                    nspb = {k: v * 1e9 / (args.bytes * args.runs) for k, v in cpu.items()}
                    print(f"\nHTTP/3 download, {args.bytes / 1e6:.0f} MB, gtlsclient as client, median of {args.runs}, load {load()}")
                    print(f"  STOQ edge (cache, --http)   {rate['stoq']:7.3f} Gbit/s   server CPU {nspb['stoq']:6.1f} ns/B"
                          f"   peak RSS {peak_rss_mib(edge.pid):.0f} MiB")
                    print(f"  ngtcp2 gtlsserver           {rate['gtls']:7.3f} Gbit/s   server CPU {nspb['gtls']:6.1f} ns/B"
                          f"   peak RSS {peak_rss_mib(gtls.p.pid):.0f} MiB")
                    print(f"  ratio STOQ / gtlsserver     {rate['stoq'] / rate['gtls']:7.2f}   (goal ≥ 1)")
                    gtls.stop()

            # --- small objects over HTTP/2: warm edge vs nginx, h2load for both ---
            if "small" in parts:
                missing = [t for t in ("nginx", "h2load") if shutil.which(t) is None
                           and not os.access(f"/usr/sbin/{t}", os.X_OK)]
                if missing:
                    print(f"\nsmall: skipped ({', '.join(missing)} not installed; Debian nginx-light, nghttp2-client)")
                else:
                    nport = free_port(__import__("socket").SOCK_STREAM)
                    ntmp = work / "nginx"
                    ntmp.mkdir()
                    (ntmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=ntmp, port=nport, cert=ca / "bench-edge.pem",
                                                                       key=ca / "bench-edge.key", root=site))
                    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
                    nginx = Proc([nginx_bin, "-e", str(ntmp / "nginx-error.log"), "-c", str(ntmp / "nginx.conf")])
                    procs.append(nginx)
                    deadline = time.monotonic() + 30
                    while not (ntmp / "nginx.pid").exists() and time.monotonic() < deadline:
                        if nginx.p.poll() is not None:
                            raise RuntimeError(f"nginx exited: {(ntmp / 'nginx-error.log').read_text()[-800:]}")
                        time.sleep(0.05)
                    nworker = [int(p) for p in run(["pgrep", "-P", str(int((ntmp / 'nginx.pid').read_text()))]).split()]
                    stoq_urls = [f"{edge.base}/small/{i}.bin" for i in range(args.small_files)]
                    nginx_urls = [f"https://[::1]:{nport}/small/{i}.bin" for i in range(args.small_files)]
                    # Warm the edge: every small file once (each is its own content below the site).
                    h2load(stoq_urls, args.small_files, 1, 1, 300)
                    h2load(nginx_urls, args.small_files, 1, 1, 300)
                    res: dict[str, list[dict[str, float]]] = {"stoq": [], "nginx": []}
                    cpu = {"stoq": 0.0, "nginx": 0.0}
                    pids = {"stoq": [edge.pid], "nginx": nworker}
                    for _ in range(args.runs):
                        for side, urls in (("stoq", stoq_urls), ("nginx", nginx_urls)):
                            c0 = sum(cpu_seconds(p) for p in pids[side])
                            res[side].append(h2load(urls, args.small_requests, args.clients, args.streams, 600))
                            cpu[side] += sum(cpu_seconds(p) for p in pids[side]) - c0
                    med = {s: {k: statistics.median(r[k] for r in v) for k in ("rps", "p50", "p99")} for s, v in res.items()}
                    nspr = {s: cpu[s] * 1e6 / (args.small_requests * args.runs) for s in cpu}
                    print(f"\nSmall objects, 10 KB over HTTP/2 + TLS (P-256), h2load -c {args.clients} -m {args.streams}, "
                          f"{args.small_requests} requests, median of {args.runs}, load {load()}")
                    print(f"  STOQ edge (warm)  {med['stoq']['rps']:9.0f} req/s   p50 {med['stoq']['p50']:7.2f} ms   p99 {med['stoq']['p99']:7.2f} ms"
                          f"   server CPU {nspr['stoq']:6.0f} µs/req ({nspr['stoq'] * 1e3 / 10_000:.1f} ns/B)"
                          f"   peak RSS {peak_rss_mib(edge.pid):.0f} MiB")
                    print(f"  nginx             {med['nginx']['rps']:9.0f} req/s   p50 {med['nginx']['p50']:7.2f} ms   p99 {med['nginx']['p99']:7.2f} ms"
                          f"   server CPU {nspr['nginx']:6.0f} µs/req ({nspr['nginx'] * 1e3 / 10_000:.1f} ns/B)")
                    print(f"  ratio STOQ / nginx {med['stoq']['rps'] / med['nginx']['rps']:8.2f}   (goal ≥ 0.5)")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"frontdoor: FAILED ({e})")
            for log in ("edge.log", "origin.log"):
                p = work / log
                if p.exists() and p.stat().st_size:
                    print(f"  {log}: {p.read_text(errors='replace')[-1500:]}")
            status = 1
        finally:
            for p in procs:
                p.stop()
            if edge is not None:
                edge.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
