"""Hosts in network namespaces joined by one bridge: what the tests of this folder share.

Each host is a namespace with `lo` up and an `eth0` (one end of a veth pair) holding an IPv6 ULA
address (fd00::/8); the other end of each pair is a port of the bridge `br0`, which lives in a
namespace of its own. Taking a host's bridge port down cuts it off; taking it up heals it.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass


def sh(*args, check=True, ns=None, **kw):
    """Runs a command (in namespace `ns` if given), bounded to 60 s; returns the completed process."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60, **kw)


def skip_reason(prefix, tools=("ip",)):
    """Why namespaces cannot be made here (a missing tool, not root, `ip netns add` refused), or None."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"iproute2 ({', '.join(tools)}) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = prefix + "probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip netns add failed: " + r.stderr.strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Host:
    ns: str
    """The host's namespace."""
    addr: str
    """Its IPv6 address on eth0."""
    port: str
    """Its port on the bridge (in the bridge's namespace)."""


@dataclass
class Bridge:
    namespace: str
    """The namespace that holds br0 and the hosts' ports."""
    hosts: dict
    """name -> Host."""


@contextlib.contextmanager
def bridged_hosts(prefix, net, names):
    """Makes a bridge and one host per name (addresses `{net}:1`, `{net}:2`, ...), yields the
    ``Bridge``, and on the way out kills every process left in the namespaces and deletes them."""
    bridge = Bridge(prefix + "br", {})
    made = []
    try:
        sh("ip", "netns", "add", bridge.namespace)
        made.append(bridge.namespace)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=bridge.namespace)
        sh("ip", "link", "set", "br0", "up", ns=bridge.namespace)
        for i, name in enumerate(names, start=1):
            ns = prefix + name
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            host_if, br_if = f"{prefix}h{i}", f"{prefix}b{i}"
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", br_if)
            sh("ip", "link", "set", host_if, "netns", ns)
            sh("ip", "link", "set", br_if, "netns", bridge.namespace)
            sh("ip", "link", "set", br_if, "master", "br0", ns=bridge.namespace)
            sh("ip", "link", "set", br_if, "up", ns=bridge.namespace)
            sh("ip", "link", "set", host_if, "name", "eth0", ns=ns)
            addr = f"{net}:{i}"
            sh("ip", "-6", "addr", "add", f"{addr}/64", "dev", "eth0", "nodad", ns=ns)
            sh("ip", "link", "set", "eth0", "up", ns=ns)
            bridge.hosts[name] = Host(ns, addr, br_if)
        yield bridge
    finally:
        for ns in reversed(made):
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)



def start_ready(ns, argv, log_path, seconds):
    """Starts `argv` (a `stoq node ...`) in namespace `ns`, in a session of its own, its stderr to
    `log_path`, and waits up to `seconds` for the line `ready` on its stdout; kills it and fails
    the test when it does not come."""
    log = open(log_path, "w")
    p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE, stderr=log, text=True,
                         start_new_session=True)
    deadline = time.time() + seconds
    while time.time() < deadline:
        line = p.stdout.readline()
        if line.startswith("ready"):
            return p
        if not line and p.poll() is not None:
            break
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    raise AssertionError(f"{argv[0]} {' '.join(argv[1:4])} did not start; see {log_path}")
