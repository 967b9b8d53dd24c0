#!/usr/bin/env python3
"""The datagram table of `make bench`: one connection, STOQ beside ngtcp2's example pair, on two paths.

  veth    two network namespaces joined by a veth pair at MTU 1500 (fd00:d6::1 → fd00:d6::2);
          the server runs in one, the client in the other
  lo      loopback [::1] (MTU 65536): STOQ takes its datagram size from the kernel's path MTU
          (65488-byte UDP payloads); ngtcp2's pair runs with its defaults (PMTUD up to 1452) and
          again with --max-udp-payload-size 65488, so large datagrams are compared with large

Rows (server → client, one file of BENCH_DATAGRAM_BYTES, default 512 MiB):
  stoq          `stoq serve` → `stoq fetch` (hq-interop), datagram size automatic
  stoq-1452     the same with STOQ_MAX_UDP_PAYLOAD=1452 (lo only: what the large datagrams buy)
  ngtcp2        Debian's gtlsserver → gtlsclient (ngtcp2 0.12 examples, HTTP/3)
  ngtcp2-large  the same with --max-udp-payload-size 65488 on both (lo only)

Each run is a new client process timed from spawn to exit (handshake plus transfer). Rows are
interleaved run by run so that the load of this shared machine hits every row alike; figures are
medians of BENCH_RUNS runs (default 3). CPU per GiB = client CPU (user + system, from wait4) plus
the server's CPU over the same run (from /proc/PID/stat), divided by the GiB moved.

The kernel caps socket buffers at net.core.rmem_max / wmem_max (4 MiB on a stock host); STOQ asks
for 8 MiB. BENCH_SYSCTL=1 (default) raises both to 16 MiB for the run and restores them after
(ngtcp2's examples do not set SO_RCVBUF and keep the kernel default either way).

Environment: BENCH_DATAGRAM_BYTES, BENCH_RUNS, BENCH_DATAGRAM_PATHS (comma list: veth,lo),
BENCH_SYSCTL, BENCH_VETH_MTU (default 1500; 9000 shows STOQ's 8952-byte datagrams on a jumbo link). Needs root and `ip` for the veth path (skipped, saying why, otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "Tests" / "Interop"))
sys.path.insert(0, str(HERE))
from interop_certs import make_certs  # noqa: E402
from transport import FETCHED, human_bytes, loadavg, make_file, stop_group  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
LARGE = 65488  # 65536 - 40 - 8
NS_A, NS_B = f"stoqdg{os.getpid()}a", f"stoqdg{os.getpid()}b"
ADDR_A, ADDR_B = "fd00:d6::1", "fd00:d6::2"
VETH_MTU = int(os.environ.get("BENCH_VETH_MTU", "").strip() or 1500)


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a running process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def sh(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


def free_port(host: str, ns: str | None) -> int:
    if ns is None:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind((host, 0, 0, 0))
        port = s.getsockname()[1]
        s.close()
        return port
    return 40000 + os.getpid() % 20000


class Veth:
    """Two namespaces and a veth pair at MTU 1500 (BENCH_VETH_MTU) between them."""

    def __init__(self) -> None:
        self.made = False

    def skip_reason(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root (network namespaces)"
        if not shutil.which("ip"):
            return "needs iproute2's ip"
        return None

    def up(self) -> None:
        sh("ip", "netns", "add", NS_A)
        sh("ip", "netns", "add", NS_B)
        self.made = True
        mtu = str(VETH_MTU)
        sh("ip", "link", "add", "dga", "netns", NS_A, "mtu", mtu, "type", "veth",
           "peer", "name", "dgb", "netns", NS_B, "mtu", mtu)
        for ns, dev, addr in ((NS_A, "dga", ADDR_A), (NS_B, "dgb", ADDR_B)):
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad", ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        # until both ends have carrier (addresses are usable at once: nodad)
        deadline = time.monotonic() + 10
        while not all("LOWER_UP" in sh("ip", "link", "show", dev, ns=ns).stdout
                      for ns, dev in ((NS_A, "dga"), (NS_B, "dgb"))):
            if time.monotonic() > deadline:
                raise RuntimeError("the veth pair did not come up")
            time.sleep(0.05)

    def down(self) -> None:
        if not self.made:
            return
        for ns in (NS_A, NS_B):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            sh("ip", "netns", "del", ns, check=False)


class Server:
    def __init__(self, name: str, argv: list, log: Path, ns: str | None, env: dict | None = None,
                 port: int | None = None, host: str = "::1") -> None:
        self.name = name
        self.log = open(log, "w")
        cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                  start_new_session=True, env={**os.environ, **(env or {})})
        self.port = port
        deadline = time.monotonic() + 30
        if port is None:  # stoq serve prints "listening on [addr]:port"
            pat = re.compile(r"listening on \[[0-9a-fA-F:]+\]:(\d+)")
            while self.port is None:
                line = self.p.stdout.readline()
                m = pat.search(line)
                if m:
                    self.port = int(m.group(1))
                elif (not line and self.p.poll() is not None) or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start (see {log})")
            # keep the pipe drained
            import threading
            threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()
        else:  # gtlsserver: wait until the port is bound
            while True:
                out = sh("ss", "-Hnlu", f"sport = :{port}", ns=ns, check=False).stdout
                if out.strip():
                    break
                if self.p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not bind port {port} (see {log})")
                time.sleep(0.05)

    def cpu(self) -> float:
        return proc_cpu(self.p.pid) or 0.0

    def stop(self) -> None:
        stop_group(self.p)
        self.log.close()


@dataclass
class Row:
    path: str      # veth / lo
    key: str
    label: str
    server: Server | None = None
    unavailable: str | None = None
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)     # client + server CPU seconds per run
    errors: list[str] = field(default_factory=list)


def run_client(argv: list, ns: str | None, timeout: float, env: dict | None = None) -> tuple[int, str, float, float]:
    """(exit code, output, wall seconds, CPU seconds of the client)."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, env={**os.environ, **(env or {})})
    out_chunks: list[str] = []
    import threading
    t = threading.Thread(target=lambda: out_chunks.append(p.stdout.read()), daemon=True)
    t.start()
    deadline = start + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(p.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.002)
    secs = time.perf_counter() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    t.join(5)
    return p.returncode, "".join(out_chunks), secs, ru.ru_utime + ru.ru_stime


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.out = Path(a.out).resolve()
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
        self.dl = Path(tempfile.mkdtemp(prefix="stoq-bench-dg-", dir=shm))
        self.gtlsserver = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
        self.gtlsclient = shutil.which("gtlsclient") or ""
        self.saved_sysctl: dict[str, str] = {}

    def raise_buffers(self) -> None:
        if os.environ.get("BENCH_SYSCTL", "1") != "1" or os.geteuid() != 0:
            return
        for k in ("net.core.rmem_max", "net.core.wmem_max"):
            r = subprocess.run(["sysctl", "-n", k], capture_output=True, text=True)
            if r.returncode == 0 and int(r.stdout.strip() or 0) < (16 << 20):
                self.saved_sysctl[k] = r.stdout.strip()
                subprocess.run(["sysctl", "-qw", f"{k}={16 << 20}"], capture_output=True)

    def restore_buffers(self) -> None:
        for k, v in self.saved_sysctl.items():
            subprocess.run(["sysctl", "-qw", f"{k}={v}"], capture_output=True)

    def rows(self, path: str) -> list[Row]:
        if path == "veth":
            return [Row(path, "stoq", "stoq serve → stoq fetch"),
                    Row(path, "ngtcp2", "gtlsserver → gtlsclient")]
        return [Row(path, "stoq", "stoq serve → stoq fetch (path MTU: 65488-byte datagrams)"),
                Row(path, "stoq-1452", "stoq serve → stoq fetch, STOQ_MAX_UDP_PAYLOAD=1452"),
                Row(path, "ngtcp2", "gtlsserver → gtlsclient (defaults: PMTUD to 1452)"),
                Row(path, "ngtcp2-large", "gtlsserver → gtlsclient --max-udp-payload-size 65488")]

    def start(self, r: Row, ns: str | None, host: str, files: Path) -> None:
        c = self.certs
        if r.key.startswith("stoq"):
            env = {"STOQ_MAX_UDP_PAYLOAD": "1452"} if r.key == "stoq-1452" else {}
            r.server = Server(f"stoq serve {r.path} {r.key}", [self.a.stoq, "serve", files, "--listen", f"[{host}]:0",
                                                                  "--cert", c.server_cert, "--key", c.server_key,
                                                                  "--alpn", "hq-interop"],
                              self.logs / f"datagram-{r.path}-{r.key}-server.log", ns, env=env)
        else:
            port = free_port(host, ns) + (1 if r.key == "ngtcp2-large" else 0)
            extra = [f"--max-udp-payload-size={LARGE}"] if r.key == "ngtcp2-large" else []
            r.server = Server(f"gtlsserver {r.path} {r.key}", [self.gtlsserver, "-q", *extra, "-d", files, host, port,
                                                                  c.server_key, c.server_cert],
                              self.logs / f"datagram-{r.path}-{r.key}-server.log", ns, port=port)

    def transfer(self, r: Row, ns: str | None, host: str, size: int, sha: str, name: str) -> None:
        assert r.server
        url = f"https://[{host}]:{r.server.port}/{name}"
        timeout = max(120.0, size * 8 / 20e6)
        before = r.server.cpu()
        if r.key.startswith("stoq"):
            env = {"STOQ_MAX_UDP_PAYLOAD": "1452"} if r.key == "stoq-1452" else {}
            trust = ["--ca", self.certs.ca] if host == "::1" else ["--insecure"]  # the test CA names ::1 only
            rc, out, secs, ccpu = run_client([self.a.stoq, "fetch", url, *trust, "--alpn", "hq-interop"],
                                             ns, timeout, env)
            m = FETCHED.search(out)
            err = None if rc == 0 and m and int(m.group(1)) == size and m.group(2) == sha else \
                f"stoq fetch exit {rc}: {out.strip()[-300:]}"
        else:
            d = self.dl / "ngtcp2"
            d.mkdir(exist_ok=True)
            extra = [f"--max-udp-payload-size={LARGE}"] if r.key == "ngtcp2-large" else []
            rc, out, secs, ccpu = run_client([self.gtlsclient, "-q", *extra, "--exit-on-all-streams-close",
                                              "--download", d, host, r.server.port, url], ns, timeout)
            got = d / name
            n = got.stat().st_size if got.exists() else 0
            shutil.rmtree(d, ignore_errors=True)
            err = None if rc == 0 and n == size else f"gtlsclient exit {rc}, {n} of {size} bytes: {out.strip()[-300:]}"
        scpu = r.server.cpu() - before
        if err:
            r.errors.append(err)
            print(f"  {r.path:<4} {r.label:<58} FAILED: {err}", flush=True)
            return
        r.seconds.append(secs)
        r.cpu.append(ccpu + scpu)
        print(f"  {r.path:<4} {r.label:<58} {secs:7.3f} s {size * 8 / secs / 1e9:7.3f} Gbit/s "
              f"cpu {ccpu:5.2f} + {scpu:5.2f} s", flush=True)

    def run(self) -> dict:
        a = self.a
        size = a.bytes
        files = self.out / "files"
        name = f"datagram-{size}.bin"
        sha = make_file(files / name, size)
        certs_dir = self.out / "certs-datagram"
        shutil.rmtree(certs_dir, ignore_errors=True)
        self.certs = make_certs(certs_dir, a.stoq)
        paths = [p.strip() for p in os.environ.get("BENCH_DATAGRAM_PATHS", "veth,lo").split(",") if p.strip()]
        results: list[Row] = []
        veth = Veth()
        self.raise_buffers()
        load_start = loadavg()
        try:
            for path in paths:
                rows = self.rows(path)
                ns_srv = ns_cli = None
                host = "::1"
                if path == "veth":
                    why = veth.skip_reason()
                    if why is None:
                        try:
                            veth.up()
                        except (RuntimeError, subprocess.CalledProcessError) as exc:
                            why = f"could not make the namespaces: {getattr(exc, 'stderr', '') or exc}"
                    if why:
                        for r in rows:
                            r.unavailable = why
                        results += rows
                        continue
                    ns_srv, ns_cli, host = NS_A, NS_B, ADDR_A
                for r in rows:
                    if not r.key.startswith("stoq") and not self.gtlsclient:
                        r.unavailable = "gtlsserver/gtlsclient not installed"
                    elif r.key.startswith("stoq") and not a.stoq:
                        r.unavailable = "no stoq binary"
                    else:
                        try:
                            self.start(r, ns_srv, host, files)
                        except RuntimeError as exc:
                            r.unavailable = str(exc)
                live = [r for r in rows if not r.unavailable]
                try:
                    for i in range(a.runs):
                        for r in live:
                            self.transfer(r, ns_cli, host, size, sha, name)
                finally:
                    for r in live:
                        if r.server:
                            r.server.stop()
                results += rows
        finally:
            veth.down()
            self.restore_buffers()
            shutil.rmtree(self.dl, ignore_errors=True)
        return self.report(results, size, load_start)

    def report(self, rows: list[Row], size: int, load_start: str) -> dict:
        def gbits(r: Row) -> float | None:
            return statistics.median(size * 8 / s / 1e9 for s in r.seconds) if r.seconds else None

        def cpu_gib(r: Row) -> float | None:
            return statistics.median(c / (size / (1 << 30)) for c in r.cpu) if r.cpu else None

        head = ("path", "server → client", "Gbit/s", "ratio", "CPU-s/GiB (client+server)", "runs")
        body = []
        out_rows = []
        for path in dict.fromkeys(r.path for r in rows):
            ref = next((r for r in rows if r.path == path and r.key == "ngtcp2"), None)
            ref_g = gbits(ref) if ref else None
            for r in (x for x in rows if x.path == path):
                g, c = gbits(r), cpu_gib(r)
                ratio = g / ref_g if g and ref_g else None
                if r.unavailable:
                    body.append((path, r.label, f"n/a ({r.unavailable})", "", "", ""))
                else:
                    body.append((path, r.label, f"{g:.3f}" if g else "failed", f"{ratio:.2f}×" if ratio else "—",
                                 f"{c:.2f}" if c else "—", f"{len(r.seconds)}/{self.a.runs}"))
                out_rows.append({"path": path, "key": r.key, "label": r.label, "unavailable": r.unavailable,
                                 "gbits_median": g, "ratio_to_ngtcp2": ratio, "cpu_s_per_gib_median": c,
                                 "seconds": r.seconds, "cpu_s": r.cpu, "errors": r.errors})
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        fmt = lambda row: "| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |"  # noqa: E731
        lines = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body), ""]
        lines.append(f"{human_bytes(size)} per run, one connection; ratio = Gbit/s / the default ngtcp2 pair's on the "
                     f"same path. Median of {self.a.runs} interleaved runs, each a new client timed spawn → exit.")
        lines.append(f"veth: namespaces joined by a veth pair at MTU {VETH_MTU} (stoq fetch --insecure there: the test "
                     f"CA names ::1 only). Socket buffer caps raised to 16 MiB for the run: "
                     f"{'yes' if self.saved_sysctl else 'no (already or not root)'}.")
        lines.append(f"Load average at start {load_start}, at end {loadavg()} ({os.cpu_count()} cores, shared).")
        for r in rows:
            for e in r.errors[:2]:
                lines.append(f"error: {r.path} {r.label}: {e}")
        text = "\n".join(lines)
        print(text, flush=True)
        result = {"bytes": size, "runs": self.a.runs, "rows": out_rows}
        (self.out / "datagram.json").write_text(json.dumps(result, indent=1))
        (self.out / "datagram.txt").write_text(text + "\n")
        return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stoq", help="path to the release stoq binary")
    p.add_argument("--out", default=str(REPO / "bench-out"))
    p.add_argument("--bytes", type=int, default=env_int("BENCH_DATAGRAM_BYTES", 512 << 20))
    p.add_argument("--runs", type=int, default=env_int("BENCH_RUNS", 3))
    a = p.parse_args()
    if a.stoq and not os.access(a.stoq, os.X_OK):
        a.stoq = None
    result = Bench(a).run()
    failed = [r for r in result["rows"] if not r["unavailable"] and r["gbits_median"] is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
