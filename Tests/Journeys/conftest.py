"""Shared fixtures for the user journeys: the release `stoq`, a logging wrapper around it,
certificates, stores, `stoq node` processes on [::1], and cleanup that always kills them.

Every journey runs `stoq` the way a user types it, through a wrapper script that records each
command line in a log (`ARGV_LOG`); `test_zz_readme_coverage.py` fails when a subcommand of the
README's command table appears in no recorded command line.

Every wait has a deadline; every process a test starts is in the `Procs` registry of its fixture
and is stopped (SIGTERM, then SIGKILL) at teardown, and anything left is killed at session end.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
README = REPO / "README.md"

# Separators the wrapper writes between arguments and after each command line.
ARG_SEP = "\x1f"
REC_SEP = "\x1e"


def real_stoq() -> str | None:
    binary = os.environ.get("STOQ_BIN")
    if binary and os.access(binary, os.X_OK):
        return binary
    return None


# --------------------------------------------------------------------------- the wrapper


@pytest.fixture(scope="session")
def journey_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("journeys")


@pytest.fixture(scope="session")
def argv_log(journey_dir: Path) -> Path:
    """Where the wrapper records every command line. `STOQ_ARGV_LOG` names one shared file when the
    journeys run in several processes (`make journeys-test`: pytest-xdist workers, then the README
    coverage check on its own, reading what all of them ran)."""
    shared = os.environ.get("STOQ_ARGV_LOG")
    if shared:
        Path(shared).parent.mkdir(parents=True, exist_ok=True)
        return Path(shared)
    return journey_dir / "argv.log"


@pytest.fixture(scope="session")
def stoq(journey_dir: Path, argv_log: Path) -> str:
    """Path of a `stoq` that logs its argv, then execs the release binary (same pid)."""
    binary = real_stoq()
    if binary is None:
        pytest.skip("STOQ_BIN is not set to an executable stoq (run through `make test` or `make journeys-test`)")
    wrapper = journey_dir / "bin" / "stoq"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    # One write per command line (built first), so concurrent stoq processes do not interleave.
    wrapper.write_text(
        "#!/bin/sh\n"
        f"line=$(printf '%s\\037' \"$@\")\n"
        f"printf '%s\\036' \"$line\" >> {shlex.quote(str(argv_log))}\n"
        f"exec {shlex.quote(binary)} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def recorded_commands(log: Path) -> list[list[str]]:
    """Every command line the wrapper recorded (argv without the program name)."""
    if not log.exists():
        return []
    text = log.read_text(errors="replace")
    # Each record is every argument followed by ARG_SEP.
    return [rec.split(ARG_SEP)[:-1] for rec in text.split(REC_SEP) if rec != ""]


# --------------------------------------------------------------------------- processes


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    def ok(self) -> "Run":
        assert self.rc == 0, f"exit {self.rc}\nstdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}"
        return self


def clean_env(home: Path) -> dict[str, str]:
    """The environment of every stoq run: a private HOME, so nothing lands in the user's ~/.stoq."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    env.pop("STOQ_STORE", None)
    env.pop("STOQ_STORE_FORMAT", None)  # journeys see the default store format (packs for a new store)
    env.pop("STOQ_BLOCKS", None)
    env.setdefault("SWIFT_BACKTRACE", "enable=no")
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float = 180, cwd: Path | None = None) -> Run:
    """Runs a command to completion; on timeout its whole process group is killed and the test fails."""
    start = time.monotonic()
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env=env, cwd=cwd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=10)
        pytest.fail(f"timed out after {timeout} s: {shlex.join(str(c) for c in cmd)}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}")
    return Run(p.returncode, out, err, time.monotonic() - start)


class Proc:
    """A long-running `stoq` child (a node, a server). stdout is drained by a thread for the
    whole life of the process (a chatty child never blocks); stderr goes to a file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.lines: list[str] = []
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
                                  start_new_session=True, env=env)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.p.pid

    def stdout(self) -> str:
        return "\n".join(self.lines)

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        try:
            return self.stderr_path.read_text(errors="replace")[-20_000:]
        except OSError:
            return ""

    def wait_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first stdout line matching `pattern` (a regex), waiting at most `timeout` s."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.p.poll() is not None:
                time.sleep(0.2)  # let the reader take the last lines
                for line in list(self.lines):
                    m = rx.search(line)
                    if m:
                        return m
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{self.name} printed no line matching {pattern!r} within {timeout} s "
                             f"(exit {self.p.poll()}): {shlex.join(self.cmd)}\nstdout: {self.stdout()[-2000:]}\n"
                             f"stderr: {self.stderr()[-2000:]}")

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        self.signal(signal.SIGKILL)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._close()

    def terminate(self, timeout: float = 15) -> int | None:
        """SIGTERM and wait up to `timeout` s; returns the exit status (None: it had to be killed)."""
        self.signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._close()
        return rc

    def _close(self) -> None:
        self._reader.join(timeout=5)
        if not self._stderr.closed:
            self._stderr.close()


class Procs:
    """The processes one fixture or test started; `stop_all` always runs at its teardown."""

    def __init__(self) -> None:
        self.started: list[Proc] = []

    def add(self, p: Proc) -> Proc:
        self.started.append(p)
        _ALL.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.started):
            if p.p.poll() is None:
                p.terminate(timeout=10)
            else:
                p._close()


_ALL: list[Proc] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Whatever a crashed fixture left behind: killed by pid, one at a time.
    for p in _ALL:
        if p.p.poll() is None:
            p.kill()


# --------------------------------------------------------------------------- a user's machine


@dataclass
class User:
    """What a user has: the stoq command, a home directory, and a CA with certificates."""

    stoq: str
    home: Path
    env: dict[str, str]
    log_dir: Path
    ca_dir: Path
    issued: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, *args: object, timeout: float = 180) -> Run:
        return run([self.stoq, *[str(a) for a in args]], self.env, timeout=timeout)

    def ok(self, *args: object, timeout: float = 180) -> Run:
        return self.run(*args, timeout=timeout).ok()

    @property
    def ca(self) -> Path:
        return self.ca_dir / "ca.pem"

    def cert(self, name: str, region: str | None = None) -> tuple[Path, Path]:
        """NAME.pem and NAME.key, issued by `stoq certs issue` the first time they are asked for."""
        with self.lock:
            if name not in self.issued:
                args = ["certs", "issue", "--ca-dir", self.ca_dir, "--name", name, "--out", self.ca_dir]
                if region:
                    args += ["--region", region]
                self.ok(*args)
                self.issued.add(name)
        return self.ca_dir / f"{name}.pem", self.ca_dir / f"{name}.key"

    def tls(self, name: str = "client") -> list[str]:
        """--cert/--key/--ca for a client called `name`."""
        cert, key = self.cert(name)
        return ["--cert", str(cert), "--key", str(key), "--ca", str(self.ca)]

    def start(self, procs: Procs, name: str, *args: object) -> Proc:
        return procs.add(Proc(name, [self.stoq, *[str(a) for a in args]], self.env, self.log_dir))

    def node(self, procs: Procs, name: str, *extra: object, store: Path | None = None, region: str | None = None,
             timeout: float = 60) -> "Node":
        """`stoq node --name NAME --listen '[::1]:0' ...` until it prints `ready NAME [::1]:PORT`."""
        cert, key = self.cert(name, region)
        store = store or (self.home / "stores" / name)
        args = ["node", "--name", name, "--listen", "[::1]:0", "--cert", cert, "--key", key, "--ca", self.ca,
                "--store", store, *extra]
        p = self.start(procs, name, *args)
        m = p.wait_line(r"^ready (\S+) (\[[0-9a-fA-F:]+\]:\d+)", timeout=timeout)
        return Node(name=name, address=m.group(2), proc=p, store=store)


@dataclass
class Node:
    name: str
    address: str
    proc: Proc
    store: Path


@pytest.fixture(scope="session")
def user(stoq: str, journey_dir: Path) -> User:
    home = journey_dir / "home"
    home.mkdir()
    logs = journey_dir / "logs"
    logs.mkdir()
    env = clean_env(home)
    ca_dir = home / "certs"
    u = User(stoq=stoq, home=home, env=env, log_dir=logs, ca_dir=ca_dir)
    out = u.ok("certs", "init-ca", "--out", ca_dir)
    assert (ca_dir / "ca.pem").exists() and (ca_dir / "ca.key").exists(), out.stdout
    # The user's own certificate, beside the CA as `stoq init` makes it: every node started with this
    # CA takes it as its operator (STATUS, PURGE, relaying; docs/SECURITY.md), so `user.tls()` is the
    # operator's identity and other names are plain certificates of the network.
    u.cert("client")
    return u


@pytest.fixture
def procs():  # type: ignore[no-untyped-def]
    """Processes of one test, stopped at its teardown."""
    ps = Procs()
    yield ps
    ps.stop_all()


# --------------------------------------------------------------------------- trees


def make_tree(root: Path, seed: int, big: int = 3_000_000) -> Path:
    """A directory a user might publish: nested directories, random and text files, an empty
    file, and files with different modes. Deterministic from `seed`."""
    import random

    rng = random.Random(seed)
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "media").mkdir()
    (root / "media" / "video.bin").write_bytes(rng.randbytes(big))
    (root / "media" / "video-copy.bin").write_bytes((root / "media" / "video.bin").read_bytes())
    words = ["stoq", "quic", "edge", "chunk", "origin", "cache", "ipv6", "swarm", "the", "a", "of"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(20_000))
    (root / "docs" / "manual.txt").write_text(text)
    (root / "docs" / "deep" / "deeper" / "note.txt").write_text("a note\n")
    (root / "docs" / "empty.txt").write_bytes(b"")
    tool = root / "run.sh"
    tool.write_text("#!/bin/sh\necho stoq\n")
    tool.chmod(0o755)
    secret = root / "docs" / "private.txt"
    secret.write_text("only for me\n")
    secret.chmod(0o600)
    return root


def tree_digest(root: Path) -> dict[str, tuple[str, int, str]]:
    """path -> (kind, permission bits, sha256 or link target) for everything under root."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, "")
            else:
                out[rel] = ("file", mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    da, db = tree_digest(a), tree_digest(b)
    missing = sorted(set(da) - set(db))
    extra = sorted(set(db) - set(da))
    differ = sorted(k for k in set(da) & set(db) if da[k] != db[k])
    assert not missing and not extra and not differ, (
        f"{b} differs from {a}: missing {missing[:10]}, extra {extra[:10]}, "
        f"different {[(k, da[k], db[k]) for k in differ[:10]]}")


CONTENT_ID = re.compile(r"stoq:[a-z2-7]{52}")


def reader_home(user: "User", tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """A reader with a home of its own and a reader key made there (`stoq reader key`): its home,
    the environment that points HOME at it, and the file holding its public key."""
    home = tmp_path / "reader"
    home.mkdir()
    env = dict(user.env, HOME=str(home))
    made = run([user.stoq, "reader", "key"], env, cwd=home)
    assert made.rc == 0, made.stderr
    public = tmp_path / "r.pub"
    public.write_text(made.stdout)
    return home, env, public


def content_id(text: str) -> str:
    m = CONTENT_ID.search(text)
    assert m, f"no content id in: {text[-2000:]}"
    return m.group(0)


# --------------------------------------------------------------------------- the small CDN


@dataclass
class CDN:
    """An origin holding `content` (put from `source`) and two edges, as `stoq node` processes."""

    origin: Node
    edges: list[Node]
    source: Path
    content: str
    procs: Procs

    @property
    def publisher_key(self) -> Path:
        """The key `stoq put` keeps beside the origin's store; readers need it (`--publisher-key`)."""
        return self.origin.store / "publisher.key"

    @property
    def peers(self) -> str:
        return ",".join([self.origin.address] + [e.address for e in self.edges])


@pytest.fixture(scope="module")
def cdn(user: User, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """`stoq put` into the origin's store, then an origin and two edges (upstream: the origin)."""
    work = tmp_path_factory.mktemp("cdn")
    source = make_tree(work / "data", seed=11)
    origin_store = work / "stores" / "origin"
    put = user.ok("put", source, "--store", origin_store)
    cid = content_id(put.stdout)
    procs = Procs()
    try:
        origin = user.node(procs, "origin", "--role", "origin", store=origin_store, region="eu-central")
        edges = [user.node(procs, name, "--role", "edge", "--upstream", origin.address, store=work / "stores" / name,
                           region=region)
                 for name, region in (("edge-1", "eu-west"), ("edge-2", "us-east"))]
        yield CDN(origin=origin, edges=edges, source=source, content=cid, procs=procs)
    finally:
        procs.stop_all()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # The README coverage check reads what every other journey ran: it goes last.
    last = [i for i in items if "readme_coverage" in i.nodeid]
    items[:] = [i for i in items if "readme_coverage" not in i.nodeid] + last
