"""The node configuration file cannot mislead (issue 14 §3) and `stoq node` has sensible defaults (§6).

docs/CONFIG.md and the code are kept in step: the keys `stoq node --print-config` prints and the
flags `stoq node --help` shows must be the document's tables. Then: an unknown key and a wrong type
are one line naming the key (exit 2), relative paths resolve against the file, old keys are read
with a warning, `--print-config` round-trips, flags override the file, and after `stoq init a` a
`stoq node a` needs no other flag. Two nodes start; the rest are quick runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import REPO, Procs, Proc, User, clean_env, run

DOC = REPO / "docs" / "CONFIG.md"
SWIFT_DUMP = re.compile(r"DecodingError|typeMismatch|keyNotFound|CodingKeys|Swift\.|Optional\(|\w+Error\.")


def doc_tables() -> tuple[dict[str, str], set[str]]:
    """The document's keys (key → flag cell) and the flags it lists as having no key."""
    text = DOC.read_text(encoding="utf-8")
    keys_section = text[text.index("## Keys"):text.index("## Flags without a key")]
    keys = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", keys_section, re.M)}
    flagless = text[text.index("## Flags without a key"):text.index("## Old keys")]
    return keys, set(re.findall(r"`(--[a-z-]+)`", flagless))


def help_flags(stoq: str, env: dict[str, str]) -> set[str]:
    r = run([stoq, "node", "--help"], env).ok()
    options = r.stdout[r.stdout.index("OPTIONS:"):]
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", options, re.M)) - {"--help", "--version"}


def print_config(stoq: str, env: dict[str, str], *args: object, cwd: Path | None = None) -> tuple[dict, str, str]:
    r = run([stoq, "node", *[str(a) for a in args], "--print-config"], env, cwd=cwd)
    assert r.rc == 0, f"exit {r.rc}: {r.stderr}"
    return json.loads(r.stdout), r.stdout, r.stderr


def refused(stoq: str, env: dict[str, str], *args: object) -> str:
    """Runs `stoq node ARGS`, which must fail with one `stoq: error:` line and exit code 2."""
    r = run([stoq, "node", *[str(a) for a in args]], env, timeout=30)
    assert r.rc == 2, f"exit {r.rc}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert r.stdout == "", r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stoq: error: "), r.stderr
    assert not SWIFT_DUMP.search(r.stderr), r.stderr
    return lines[0]


def test_config(user: User, tmp_path: Path, procs: Procs) -> None:
    stoq = user.stoq
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home)

    # --- the document and the code agree
    keys, flagless = doc_tables()
    printed, text, _ = print_config(stoq, env)
    assert list(printed) == list(keys), f"--print-config keys {list(printed)} != docs/CONFIG.md {list(keys)}"
    documented_flags = {f for cell in keys.values() for f in re.findall(r"`(--[a-z-]+)`", cell)}
    for key, cell in keys.items():
        flags = re.findall(r"`(--[a-z-]+)`", cell)
        if flags:  # a key's flag is the key in kebab case
            assert flags[0] == "--" + re.sub(r"([A-Z])", lambda m: "-" + m.group(1).lower(), key), (key, cell)
    shown = help_flags(stoq, env)
    assert shown == documented_flags | flagless, (
        f"in --help, not in docs/CONFIG.md: {sorted(shown - documented_flags - flagless)}; "
        f"in docs/CONFIG.md, not in --help: {sorted((documented_flags | flagless) - shown)}")
    for old in ("--upstream", "--peer ", "--health-interval"):
        assert old not in run([stoq, "node", "--help"], env).stdout, f"{old} should be hidden"

    # --- defaults: the files `stoq init` writes, the store under ~/.stoq/NAME, role origin
    assert printed["name"] == "node" and printed["role"] == ["origin"] and printed["listen"] == "[::1]:4433"
    named, _, _ = print_config(stoq, env, "alpha")
    assert named["cert"] == f"{home}/.stoq/certs/alpha.pem" and named["key"] == f"{home}/.stoq/certs/alpha.key"
    assert named["ca"] == f"{home}/.stoq/certs/ca.pem" and named["store"] == f"{home}/.stoq/alpha"
    line = refused(stoq, env, "alpha")
    assert "stoq init alpha" in line, line

    # --- round trip: the output is a config file that prints the same
    edge_args = ["--name", "e1", "--role", "edge", "--peers", "[::1]:4433,[::1]:4434", "--cache-bytes", "1048576",
                 "--probe-interval", "500", "--no-routing", "--admin", "9464", "--location", "48.85,2.35"]
    first, first_text, _ = print_config(stoq, env, *edge_args)
    assert first["peers"] == ["[::1]:4433", "[::1]:4434"] and first["cacheBytes"] == 1048576 and first["noRouting"] is True
    web, _, _ = print_config(stoq, env, "--http", "[::1]:8443", "--access-log", "-", "--http-cert", "web.pem", cwd=tmp_path)
    assert web["http"] == "[::1]:8443" and web["accessLog"] == "-" and web["httpCert"] == str(tmp_path / "web.pem")
    saved = tmp_path / "printed.json"
    saved.write_text(first_text)
    again, again_text, again_err = print_config(stoq, env, "--config", saved)
    assert again_text == first_text and again_err == "", again_err

    # --- flags override the file
    over, _, _ = print_config(stoq, env, "--config", saved, "--cache-bytes", "2048", "--peers", "[::1]:5000")
    assert over["cacheBytes"] == 2048 and over["peers"] == ["[::1]:5000"] and over["role"] == ["edge"]

    # --- old flags are hidden aliases
    old, _, _ = print_config(stoq, env, "--upstream", "[::1]:4433", "--peer", "[::1]:4440", "--health-interval", "700",
                             "--health-timeout", "70", "--health-failures", "5")
    assert old["peers"] == ["[::1]:4433"] and old["watch"] == ["[::1]:4440"]
    assert (old["probeInterval"], old["probeTimeout"], old["probeFailures"]) == (700, 70, 5)

    # --- unknown key, wrong type, bad address, broken JSON: one line, exit 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "cache_bytes": 5}))
    line = refused(stoq, env, "--config", bad)
    assert f"config {bad}: unknown key 'cache_bytes' (did you mean 'cacheBytes'?)" in line and "docs/CONFIG.md" in line, line
    bad.write_text(json.dumps({"cacheBytes": "1GiB"}))
    line = refused(stoq, env, "--config", bad)
    assert "key 'cacheBytes' must be an integer (bytes), not a string" in line, line
    bad.write_text(json.dumps({"role": "edge", "peers": ["127.0.0.1:4433"]}))
    line = refused(stoq, env, "--config", bad)
    assert "key 'peers'" in line and "127.0.0.1:4433" in line and "IPv6" in line, line
    bad.write_text(json.dumps({"publicRead": "yes"}))
    assert "key 'publicRead' must be true or false, not a string" in refused(stoq, env, "--config", bad)
    bad.write_text(json.dumps({"health": {"intervalMs": 5}, "upstream": []}))
    assert "unknown key 'health.intervalMs'" in refused(stoq, env, "--config", bad)
    bad.write_text(json.dumps({"location": "north"}))
    assert "key 'location': the location 'north' is not LAT,LON" in refused(stoq, env, "--config", bad)
    bad.write_text(json.dumps({"accessLog": "access.log"}))
    assert "need --http" in refused(stoq, env, "--config", bad, "--cert", bad, "--key", bad, "--ca", bad)
    bad.write_text('{"name": "x",')
    assert "not valid JSON" in refused(stoq, env, "--config", bad)
    bad.write_text(json.dumps({"cert": "a.pem", "certificate": "b.pem"}))
    assert "'certificate' (old name) and 'cert' both given" in refused(stoq, env, "--config", bad)
    line = refused(stoq, env, "--config", tmp_path / "missing.json")
    assert "cannot read the config file" in line, line

    # --- a real short path: `stoq init a`, then `stoq node a` with one flag (a free port)
    run([stoq, "init", "cfg-a"], env).ok()
    short = procs.add(Proc("cfg-a", [stoq, "node", "cfg-a", "--listen", "[::1]:0"], env, user.log_dir))
    m = short.wait_line(r"^ready cfg-a (\[[0-9a-fA-F:]+\]:\d+) roles=origin", timeout=30)
    origin = m.group(1)
    assert (home / ".stoq" / "cfg-a").is_dir()

    # --- an old-style file with relative paths, read from another directory: warnings, then it runs
    confdir = tmp_path / "etc"
    (confdir / "certs").mkdir(parents=True)
    run([stoq, "init", "cfg-b", "--dir", confdir / "certs"], env).ok()
    legacy = confdir / "cfg-b.json"
    legacy.write_text(json.dumps({
        "name": "cfg-b", "listen": "[::1]:0", "certificate": "certs/cfg-b.pem", "key": "certs/cfg-b.key",
        "ca": "certs/ca.pem", "store": "stores/cfg-b", "roles": ["edge"], "upstream": [origin],
        "peers": ["[::1]:9"], "health": {"intervalMilliseconds": 800}, "rateLimitBytesPerSecond": 50000000,
    }))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    effective, _, warnings = print_config(stoq, env, "--config", "../etc/cfg-b.json", cwd=elsewhere)
    assert effective["cert"] == str(confdir / "certs" / "cfg-b.pem") and effective["store"] == str(confdir / "stores" / "cfg-b")
    assert effective["peers"] == [origin] and effective["watch"] == ["[::1]:9"] and effective["role"] == ["edge"]
    assert effective["probeInterval"] == 800 and effective["rateLimit"] == 50000000
    warned = [w for w in warnings.splitlines() if w]
    assert len(warned) == 6 and all(w.startswith("stoq: config ../etc/cfg-b.json: key") for w in warned), warnings
    for key in ("'certificate'", "'roles'", "'upstream'", "'peers' next to 'upstream'", "'health'", "'rateLimitBytesPerSecond'"):
        assert any(key in w for w in warned), (key, warnings)
    edge = procs.add(Proc("cfg-b", [stoq, "node", "--config", str(legacy)], env, user.log_dir))
    edge.wait_line(r"^ready cfg-b \[[0-9a-fA-F:]+\]:\d+ roles=edge", timeout=30)
    assert (confdir / "stores" / "cfg-b").is_dir()
    assert "deprecated" in edge.stderr()
