"""Multi-host STOQ test in network namespaces (issue "network", item 7).

Four hosts on one machine: three sources and a client, each in its own network namespace,
joined by veth pairs to a bridge (in a fifth namespace) with IPv6 ULA addresses (fd00::/8).
One source's link is shaped slow with `tc tbf`; the swarm must give it proportionally less.
A second source is killed mid-fetch; the content must still arrive bit-identical.

Skips (with the reason) where network namespaces cannot be made (not root, no iproute2).
"""
import hashlib
import os
import re
import select
import shutil
import signal
import subprocess
import time
import uuid

import pytest
from bridged_hosts import bridged_hosts, sh, skip_reason, start_ready

STOQ = os.environ.get("STOQ_BIN")
PREFIX = "stq" + uuid.uuid4().hex[:5]
NET = "fd00:5710:"
FAST_RATE = None          # unshaped
SLOW_RATE = "40mbit"      # tc tbf on the slow source's egress


@pytest.fixture(scope="module")
def hosts():
    reason = skip_reason(PREFIX, tools=("ip", "tc"))
    if reason:
        pytest.skip(reason)
    if not STOQ or not os.access(STOQ, os.X_OK):
        pytest.skip("STOQ_BIN is not set to a built stoq")
    with bridged_hosts(PREFIX, NET, ["client", "src1", "src2", "src3"]) as bridge:
        addrs = {name: (h.ns, h.addr) for name, h in bridge.hosts.items()}
        # The slow source: a token-bucket filter on its egress.
        sh("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", SLOW_RATE, "burst", "64kb", "latency", "50ms",
           ns=addrs["src3"][0])
        yield addrs


def make_dataset(path, mib):
    os.makedirs(path, exist_ok=True)
    seed = hashlib.sha256(b"stoq netns").digest()
    with open(os.path.join(path, "payload.bin"), "wb") as f:
        block = seed
        for _ in range(mib * 1024 * 1024 // 32):
            block = hashlib.sha256(block).digest()
            f.write(block)
    with open(os.path.join(path, "readme.txt"), "w") as f:
        f.write("STOQ across network namespaces\n" * 1000)


def start_node(ns, name, addr, certs, store, logdir):
    return start_ready(
        ns, [STOQ, "node", "--name", name, "--listen", f"[{addr}]:4433",
             "--cert", f"{certs}/{name}.pem", "--key", f"{certs}/{name}.key", "--ca", f"{certs}/ca.pem",
             "--store", store, "--role", "origin"], os.path.join(logdir, f"{name}.log"), seconds=30)


def prepare(hosts, tmp_path, sources):
    """Certificates, a 24 MiB data set put into src1's store and copied to the other sources' stores,
    and the sources started; returns (data dir, content id, origin store, {name: process})."""
    certs = str(tmp_path / "certs")
    subprocess.run([STOQ, "certs", "init-ca", "--out", certs], check=True, capture_output=True)
    for name in ["client"] + sources:
        subprocess.run([STOQ, "certs", "issue", "--ca", certs, "--name", name, "--out", certs], check=True, capture_output=True)
    data = str(tmp_path / "data")
    make_dataset(data, mib=24)
    origin_store = str(tmp_path / "store-src1")
    put = subprocess.run([STOQ, "put", data, "--store", origin_store], check=True, capture_output=True, text=True)
    cid = re.search(r"stoq:[a-z0-9]+", put.stdout).group(0)
    # Every source holds the same chunks: copies of one store.
    for name in sources[1:]:
        shutil.copytree(origin_store, str(tmp_path / f"store-{name}"), ignore=shutil.ignore_patterns("lock"))
    procs = {}
    try:
        for name in sources:
            procs[name] = start_node(hosts[name][0], name, hosts[name][1], certs, str(tmp_path / f"store-{name}"), str(tmp_path))
    except BaseException:
        stop_all(procs)
        raise
    return data, cid, origin_store, procs


def stop_all(procs):
    for p in procs.values():
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass


def get_with_fault(hosts, tmp_path, cid, origin_store, sources, fault, extra=()):
    """Runs `stoq get` in the client namespace from `sources`; calls `fault()` once the client reports
    20 % of the bytes (read from its progress bar). Returns (stdout, stderr, whether the fault ran)."""
    certs = str(tmp_path / "certs")
    peers = ",".join(f"[{hosts[n][1]}]:4433" for n in sources)
    client = subprocess.Popen(
        ["ip", "netns", "exec", hosts["client"][0], STOQ, "get", cid, "-o", str(tmp_path / "out"), "--store", str(tmp_path / "store-client"),
         "--peers", peers, "--cert", f"{certs}/client.pem", "--key", f"{certs}/client.key", "--ca", f"{certs}/ca.pem",
         "--publisher-key", os.path.join(origin_store, "publisher.key"), "--progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    err = bytearray()
    fired = False
    os.set_blocking(client.stderr.fileno(), False)
    deadline = time.time() + 240
    while client.poll() is None and time.time() < deadline:
        chunk = client.stderr.read() or b""
        err += chunk
        if not fired:
            done = [float(x) for x in re.findall(rb"(\d+\.\d) %", bytes(err))]
            if done and done[-1] >= 20.0:
                fault()
                fired = True
        if not chunk:
            select.select([client.stderr], [], [], 0.05)
    if client.poll() is None:
        client.kill()
        raise AssertionError("the fetch did not finish within 240 s")
    stdout = client.stdout.read().decode()
    stderr = (bytes(err) + (client.stderr.read() or b"")).decode(errors="replace")
    assert client.returncode == 0, f"get failed: {stderr}\n{stdout}"
    for line in stderr.splitlines():
        if "stoq: health" in line or " down " in line:
            print(line.split("\r")[-1])
    return stdout, stderr, fired


def assert_identical(data, out):
    for f in ["payload.bin", "readme.txt"]:
        a = hashlib.sha256(open(os.path.join(data, f), "rb").read()).hexdigest()
        b = hashlib.sha256(open(os.path.join(out, f), "rb").read()).hexdigest()
        assert a == b, f"{f} differs"


def delivered_bytes(output):
    """Bytes per source from the `fetched N chunks … from [A]:P N B, …` summary (on stderr)."""
    lines = [l for l in output.replace("\r", "\n").splitlines() if "fetched " in l and " from " in l]
    m = re.search(r"from (.*)$", lines[0].strip()) if lines else None
    assert m, output
    return {k: int(v) for k, v in re.findall(r"\[([0-9a-f:]+)\]:\d+ (\d+) B", m.group(1))}


def test_swarm_across_namespaces(hosts, tmp_path):
    sources = ["src1", "src2", "src3"]
    data, cid, origin_store, procs = prepare(hosts, tmp_path, sources)
    try:
        # Health probing runs with its defaults (1 s, 100 ms, 3 misses). Measured here (debug build,
        # load 6-8 on 2 cores, probes every 100-200 ms): PING srtt 15-35 ms on the tbf link and 18-26 ms
        # on the others. PONGs travel on control-priority streams and tbf queues at most 50 ms ahead
        # of them: a probe over 100 ms was as rare on the shaped link (1 of 84) as on an unshaped one
        # (4 of 84) - CPU load, not the queue - and none of 75 exceeded it while the shaped link was
        # saturated as the only source (test below). One late probe is not a miss streak, so this
        # test needs no longer --probe-timeout.
        def kill_src2():
            os.killpg(procs["src2"].pid, signal.SIGKILL)
        stdout, stderr, killed = get_with_fault(hosts, tmp_path, cid, origin_store, sources, kill_src2)
        if not killed:
            kill_src2()
        assert_identical(data, str(tmp_path / "out"))
        # Per-source bytes: the slow source got less than the fast one that survived.
        delivered = delivered_bytes(stdout + "\n" + stderr)
        fast, slow = delivered.get(hosts["src1"][1], 0), delivered.get(hosts["src3"][1], 0)
        print(f"delivered: src1 {fast} B, src2 (killed) {delivered.get(hosts['src2'][1], 0)} B, src3 (slow, {SLOW_RATE}) {slow} B")
        assert fast > slow, f"the slow source was not given less: fast {fast} B, slow {slow} B"
    finally:
        stop_all(procs)


def test_get_marks_a_stopped_source_down(hosts, tmp_path):
    """`stoq get --peers` probes every peer: one stopped with SIGSTOP (its connection open, its
    process silent) is reported down during the fetch and its requests go to the other."""
    # src3 (the shaped one, 40 Mbit/s) survives: the rest of the fetch then lasts seconds, time
    # enough for the probes to notice the stop on any machine.
    sources = ["src1", "src2", "src3"]
    data, cid, origin_store, procs = prepare(hosts, tmp_path, sources)
    try:
        def stop_src2():
            os.killpg(procs["src2"].pid, signal.SIGSTOP)
        # Probes every 200 ms (the default 100 ms timeout and 3 misses): down within ~0.7 s of the
        # stop, while the rest of the 24 MiB is still coming (the default 1 s interval would take
        # ~3 s, about as long as what remains of the fetch: a race, not a test).
        stdout, stderr, stopped = get_with_fault(
            hosts, tmp_path, cid, origin_store, ["src2", "src3"], stop_src2, extra=["--probe-interval", "200"])
        assert stopped, "the fetch ended before 20 %"
        src2 = f"[{hosts['src2'][1]}]:4433"
        assert f"source {src2} is down (health probes unanswered)" in stderr, stderr
        assert re.search(rf"stoq: health \[{hosts['src2'][1]}\]:4433 down: ", stderr), stderr
        assert_identical(data, str(tmp_path / "out"))
        delivered = delivered_bytes(stdout + "\n" + stderr)
        print(f"delivered: src2 (stopped) {delivered.get(hosts['src2'][1], 0)} B, src3 (slow) {delivered.get(hosts['src3'][1], 0)} B")
        # What src2 sent before the stop depends on how far ahead of the progress bar its requests
        # ran (an unshaped source can send megabytes between two updates), so the shares are not
        # compared: the content arrived whole (above) with src2 stopped, so the rest came from src3.
        assert delivered.get(hosts["src3"][1], 0) > 0
    finally:
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGCONT)
            except OSError:
                pass
        stop_all(procs)
