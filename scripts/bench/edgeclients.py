#!/usr/bin/env python3
"""One server, many clients at once, with 1 and with N event loops (`make bench`, part edgeclients).

`stoq serve --event-loops L` runs in a network namespace of its own; each of BENCH_EC_CLIENTS
(default 8) clients runs `stoq fetch` of the same file from a namespace of its own, joined to the
server's by a veth pair (MTU 1500, fd00:I::1 the server's side, fd00:I::2 the client's). All
clients start together; a run's aggregate rate is the bytes of all fetches over the wall time from
the first spawn to the last exit. Rows alternate run by run (1 loop, L loops, 1, L, ...) so that a
change in the machine's load hits both alike; each figure is the median of BENCH_RUNS runs.

Per row: aggregate Gbit/s, the server's CPU (cores kept busy = CPU-seconds / wall seconds), the
share of its two busiest SwiftNIO event loop threads (is the work spread over the loops?), the
clients' CPU together, CPU-seconds per GiB moved (server, and server + clients), and the whole
machine's busy cores during the run (from /proc/stat: other programs' work shows up there).

Mind the machine: the clients run on the same cores as the server. With C cores the server and
its clients together cannot keep more than C busy, and a client decrypts about as much as the
server encrypts, so the server's share is about half the machine whatever its loop count.

Environment: BENCH_EC_CLIENTS (8), BENCH_EC_MIB (MiB per client, 128), BENCH_RUNS (3),
BENCH_EC_LOOPS (the loop counts compared, "1,2"). Needs root (ip netns).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Tests" / "Interop"))
from interop_certs import make_certs  # noqa: E402

FETCHED = re.compile(r"fetched (\d+) bytes")
TICK = os.sysconf("SC_CLK_TCK")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class Lab:
    """The server's namespace and one namespace per client, each joined to it by a veth pair."""

    def __init__(self, clients: int) -> None:
        tag = f"ec{os.getpid() % 100000}"
        self.server = f"{tag}s"
        self.clients = [f"{tag}c{i}" for i in range(clients)]
        self.made: list[str] = []
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self) -> None:
        sh("ip", "netns", "add", self.server)
        self.made.append(self.server)
        sh("ip", "-n", self.server, "link", "set", "lo", "up")
        for i, ns in enumerate(self.clients, start=1):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            a, b = f"ecs{i}x{os.getpid() % 10000}", f"ecc{i}x{os.getpid() % 10000}"
            sh("ip", "link", "add", a, "netns", self.server, "type", "veth", "peer", "name", b, "netns", ns)
            sh("ip", "-n", self.server, "addr", "add", f"fd00:{i}::1/64", "dev", a, "nodad")
            sh("ip", "-n", ns, "addr", "add", f"fd00:{i}::2/64", "dev", b, "nodad")
            sh("ip", "-n", self.server, "link", "set", a, "up")
            sh("ip", "-n", ns, "link", "set", b, "up")

    def close(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.made = []


def proc_cpu(pid: int) -> float:
    """utime + stime of a live process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def loop_threads_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each SwiftNIO event loop thread (comm NIO-SGLTN-... or NIO-ELT-...) of a process, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith("NIO-"):
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, ValueError):
            continue
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def wait_listening(p: subprocess.Popen, log: Path, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(r"listening on \[[^\]]*\]:(\d+)", log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        if p.poll() is not None:
            raise RuntimeError(f"stoq serve exited {p.returncode}: {log.read_text()[-400:]}")
        time.sleep(0.05)
    raise RuntimeError("stoq serve did not start listening")


def one_run(stoq: str, lab: Lab, files: Path, name: str, size: int, certs, loops: int, logs: Path) -> dict:
    log = logs / f"serve-{loops}.log"
    with open(log, "w") as lf:
        server = subprocess.Popen(
            ["ip", "netns", "exec", lab.server, stoq, "serve", str(files), "--listen", "[::]:4433",
             "--cert", str(certs.server_cert), "--key", str(certs.server_key), "--alpn", "hq-interop",
             "--event-loops", str(loops)], stdout=lf, stderr=subprocess.STDOUT)
    try:
        port = wait_listening(server, log)
        cpu0 = proc_cpu(server.pid)
        threads0 = loop_threads_cpu(server.pid)
        busy0 = machine_busy()
        t0 = time.monotonic()
        clients = []
        for i, ns in enumerate(lab.clients, start=1):
            url = f"https://[fd00:{i}::1]:{port}/{name}"
            clients.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, stoq, "fetch", url, "-o", "/dev/null", "--insecure", "--alpn", "hq-interop"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        client_cpu = 0.0
        moved = 0
        failures = []
        pending = {c.pid: c for c in clients}
        deadline = time.monotonic() + 600
        while pending:
            pid, status, ru = os.wait4(-1, 0)
            c = pending.pop(pid, None)
            if c is None:
                continue
            client_cpu += ru.ru_utime + ru.ru_stime
            out = c.stdout.read() if c.stdout else ""
            m = FETCHED.search(out)
            if os.waitstatus_to_exitcode(status) != 0 or not m:
                failures.append(out.strip()[-300:])
            else:
                moved += int(m.group(1))
            if time.monotonic() > deadline:
                raise RuntimeError("clients took over 600 s")
        wall = time.monotonic() - t0
        busy1 = machine_busy()
        cpu = proc_cpu(server.pid) - cpu0
        threads1 = loop_threads_cpu(server.pid)
        per_loop = sorted((threads1[t] - threads0.get(t, 0.0) for t in threads1), reverse=True)
        if failures or moved != size * len(lab.clients):
            raise RuntimeError(f"{len(failures)} fetches failed, {moved} bytes moved: {failures[:2]}")
        ncpu = os.cpu_count() or 1
        machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * ncpu
        gib = moved / (1 << 30)
        return {
            "gbps": moved * 8 / wall / 1e9, "wall": wall, "server_cores": cpu / wall, "client_cores": client_cpu / wall,
            "busiest_loop": per_loop[0] / wall if per_loop else 0.0,
            "second_loop": per_loop[1] / wall if len(per_loop) > 1 else 0.0,
            "server_cpu_per_gib": cpu / gib, "total_cpu_per_gib": (cpu + client_cpu) / gib, "machine_cores": machine,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stoq", required=True, help="path to the release stoq binary")
    p.add_argument("--clients", type=int, default=env_int("BENCH_EC_CLIENTS", 8))
    p.add_argument("--mib", type=int, default=env_int("BENCH_EC_MIB", 128), help="MiB each client fetches")
    p.add_argument("--runs", type=int, default=env_int("BENCH_RUNS", 3))
    p.add_argument("--loops", default=os.environ.get("BENCH_EC_LOOPS", "1,2"))
    a = p.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("edgeclients: skipped (needs root and iproute2 for network namespaces)")
        return 0
    loops = [int(x) for x in a.loops.split(",")]
    size = a.mib << 20
    work = Path(tempfile.mkdtemp(prefix="stoq-edgeclients-"))
    lab = None
    try:
        certs = make_certs(work / "certs", a.stoq)
        files = work / "files"
        files.mkdir()
        with open(files / "blob", "wb") as f:
            left = size
            while left:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
        lab = Lab(a.clients)
        results: dict[int, list[dict]] = {n: [] for n in loops}
        for run in range(a.runs):
            for n in loops:
                r = one_run(a.stoq, lab, files, "blob", size, certs, n, work)
                results[n].append(r)
                print(f"run {run + 1} loops {n}: {r['gbps']:.2f} Gbit/s in {r['wall']:.2f} s, server {r['server_cores']:.2f} "
                      f"cores (loop threads {r['busiest_loop']:.2f} + {r['second_loop']:.2f}), clients {r['client_cores']:.2f}, machine {r['machine_cores']:.2f} busy", flush=True)
        med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
        base = med[loops[0]]["gbps"]
        print(f"\n{a.clients} clients x {a.mib} MiB from one `stoq serve` over veth (MTU 1500), medians of {a.runs} runs, "
              f"{os.cpu_count()} cores, load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print(f"{'loops':>5} {'Gbit/s':>7} {'ratio':>6} {'server cores':>12} {'loop threads':>12} {'client cores':>12} {'machine busy':>12} "
              f"{'server CPU-s/GiB':>16} {'all CPU-s/GiB':>13}")
        for n in loops:
            m = med[n]
            loops_text = f"{m['busiest_loop']:.2f}+{m['second_loop']:.2f}"
            print(f"{n:>5} {m['gbps']:>7.2f} {m['gbps'] / base:>6.2f} {m['server_cores']:>12.2f} {loops_text:>12} {m['client_cores']:>12.2f} "
                  f"{m['machine_cores']:>12.2f} {m['server_cpu_per_gib']:>16.2f} {m['total_cpu_per_gib']:>13.2f}")
        return 0
    finally:
        if lab:
            lab.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
