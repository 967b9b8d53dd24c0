"""An operator's view (issue 14 §5): `stoq --version`, JSON logs, and a `# HELP` line on every
metric a node exports, on the release binary."""

from __future__ import annotations

import json
import re
import time
import urllib.request

from conftest import Procs, User


def test_version_is_one_line(user: User) -> None:
    out = user.ok("--version")
    assert re.fullmatch(r"stoq \d+\.\d+\.\d+ \(stoq/1\)\n", out.stdout), out.stdout


def test_json_logs_and_metric_help(user: User, procs: Procs) -> None:
    node = user.node(procs, "json-logger", "--log-format", "json", "--log-level", "debug", "--admin", "0")
    admin = re.search(r"admin=(\[[0-9a-fA-F:]+\]:\d+)", node.proc.stdout())
    assert admin, node.proc.stdout()
    with urllib.request.urlopen(f"http://{admin.group(1)}/metrics", timeout=5) as r:
        text = r.read().decode()
    lines = text.splitlines()
    types = [i for i, line in enumerate(lines) if line.startswith("# TYPE ")]
    assert types, text
    for i in types:
        name = lines[i].split()[2]
        assert i > 0 and lines[i - 1].startswith(f"# HELP {name} "), f"no HELP for {name}:\n{text}"
    node.proc.terminate()
    time.sleep(0.2)
    stderr = node.proc.stderr().splitlines()
    logged = [line for line in stderr if line.startswith("{")]
    assert logged, "the node logged nothing at debug level:\n" + "\n".join(stderr)
    for line in logged:
        record = json.loads(line)  # one JSON object per line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
    text_lines = [line for line in stderr
                  if re.match(r"^\d{4}-\d\d-\d\dT\S+ (trace|debug|info|notice|warning|error|critical) ", line)]
    assert not text_lines, text_lines


def test_a_wrong_log_format_is_one_clear_line(user: User, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert, key = user.cert("bad-format")
    out = user.run("node", "--name", "bad-format", "--listen", "[::1]:0", "--cert", cert, "--key", key,
                   "--ca", user.ca, "--store", tmp_path / "s", "--log-format", "xml")
    assert out.rc != 0
    assert "--log-format takes text or json" in out.stderr, out.stderr


def test_a_node_without_store_uses_home(user: User, procs: Procs) -> None:
    """`stoq node` without --store keeps its store under ~/.stoq/NAME (it used to die with an
    argument-parser internal error)."""
    cert, key = user.cert("storeless")
    p = user.start(procs, "storeless", "node", "--name", "storeless", "--listen", "[::1]:0", "--cert", cert,
                   "--key", key, "--ca", user.ca)
    p.wait_line(r"^ready storeless ", timeout=60)
    assert (user.home / ".stoq" / "storeless").is_dir()
    assert "parsable argument" not in p.stderr()


def test_init_makes_a_network_s_certificates_in_one_command(user: User, procs: Procs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`stoq init NAME… --dir D`: a CA once, a certificate per node (and a client), kept on a re-run;
    a node starts on them."""
    d = tmp_path / "net"
    out = user.ok("init", "origin", "edge-1@eu-west", "--dir", d, "--lifetime", "2h", "--ip", "::1")
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["origin", "edge-1", "client"], out.stdout
    assert all(len(line.split()) == 4 and len(line.split()[1]) == 64 for line in lines), out.stdout
    ca = (d / "ca.pem").read_bytes()
    origin = (d / "origin.pem").read_bytes()
    again = user.ok("init", "edge-2", "--dir", d)
    assert [line.split()[0] for line in again.stdout.splitlines()] == ["edge-2", "client"]
    assert (d / "ca.pem").read_bytes() == ca and (d / "origin.pem").read_bytes() == origin
    assert "eu-west" in user.ok("certs", "show", d / "edge-1.pem").stdout
    bad = user.run("init", "bad name", "--dir", tmp_path / "other")
    assert bad.rc != 0 and "is not a node name" in bad.stderr and not (tmp_path / "other").exists()
    p = user.start(procs, "init-origin", "node", "--name", "origin", "--listen", "[::1]:0", "--cert", d / "origin.pem",
                   "--key", d / "origin.key", "--ca", d / "ca.pem", "--store", tmp_path / "store")
    p.wait_line(r"^ready origin ", timeout=60)
