"""One vocabulary (issue 14 §1), on the release binary: the new spellings are in `--help`, every old
spelling still parses and runs but is hidden from `--help`, `stoq bench --help` lists every part,
and `stoq get NAME` resolves both kinds of name and says on stderr which record it used: a name
published on an origin (asked of --peers), and a DHT name (through --bootstrap, also after the
peers did not know it). One origin that runs the DHT serves every check that needs a node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import Node, Procs, Run, User, assert_same_tree, content_id, make_tree

BENCH_PARTS = ["transport", "content", "store", "swarm", "edge", "routing", "dht", "relay", "block", "erasure"]

# Old command spellings: (argv, the usage line its --help shows). Each must parse, and none may be
# listed in the help of its parent.
OLD_COMMANDS = [
    (["bench-transport"], "stoq bench-transport"),
    (["bench-content"], "stoq bench-content"),
    (["bench-swarm"], "stoq bench-swarm"),
    (["bench-edge"], "stoq bench-edge"),
    (["dht", "bench"], "stoq dht bench"),
    (["relay", "bench"], "stoq relay bench"),
    (["block", "bench-net"], "stoq block bench-net"),
    (["block", "bench-erasure"], "stoq block bench-erasure"),
    (["publish"], "stoq publish"),
    (["published"], "stoq published"),
]

# (command, options its --help must show, old option spellings it must not show)
HELP = [
    (["get"], ["--peers", "--bootstrap", "--probe-interval", "--probe-timeout", "--probe-failures", "--ca", "--cert"], ["--dht"]),
    (["name", "set"], ["--bootstrap", "--record-version", "--owner"], ["--node <", "--version <"]),
    (["name", "get"], ["--bootstrap"], ["--node <"]),
    (["name", "show"], ["--node", "--ca"], ["--peers"]),
    (["name", "publish"], ["--node", "--ttl"], []),
    (["name", "sign"], ["--owner", "--service-node", "--record-version"], ["--key <", "--node <", "--version <"]),
    (["resolve"], ["--bootstrap", "--probe-interval"], ["--node <", "--interval-ms"]),
    (["block", "put"], ["--node <", "--bootstrap"], ["--nodes", "--dht"]),
    (["block", "repair"], ["--node <", "--bootstrap"], ["--nodes", "--dht"]),
    (["block", "plan"], ["--nodes-file"], ["--nodes <"]),
    (["certs", "issue"], ["--ca-dir"], ["--ca <"]),
    (["share"], ["--node", "--bootstrap", "--ca"], []),
    (["bench", "dht"], ["--join-by-lookup"], ["--bootstrap"]),
]


def subcommands(help_text: str) -> list[str]:
    """The subcommand names a `--help` lists."""
    section = help_text.split("SUBCOMMANDS:", 1)[1] if "SUBCOMMANDS:" in help_text else ""
    return re.findall(r"^  ([a-z][a-z0-9-]*)\s", section, re.M)


def refused_as_old_spelling(r: Run) -> None:
    """Both spellings of one option given: refused after parsing (so the old one parsed)."""
    assert r.rc != 0, r.stdout
    assert "Unknown option" not in r.stderr and "old spelling" in r.stderr, r.stderr


def test_help_shows_the_new_spellings_only(user: User) -> None:
    top = subcommands(user.ok("--help").stdout)
    for new in ("bench", "name", "get", "put", "share", "status"):
        assert new in top, top
    for old in ("bench-transport", "bench-content", "bench-swarm", "bench-edge", "publish", "published", "dht", "relay"):
        assert old not in top, f"`stoq --help` lists the old `{old}`: {top}"
    bench = user.ok("bench", "--help").stdout
    assert subcommands(bench) == BENCH_PARTS, bench
    name = subcommands(user.ok("name", "--help").stdout)
    assert name == ["publish", "show", "set", "get", "keygen", "sign", "verify", "claim", "transfer"], name
    block = subcommands(user.ok("block", "--help").stdout)
    assert "bench-net" not in block and "bench-erasure" not in block, block
    for argv, shown, hidden in HELP:
        text = user.ok(*argv, "--help").stdout
        for flag in shown:
            assert flag in text, f"`stoq {' '.join(argv)} --help` lacks {flag}:\n{text}"
        for flag in hidden:
            assert flag not in text, f"`stoq {' '.join(argv)} --help` shows the old {flag}:\n{text}"


@pytest.mark.parametrize("argv,usage", OLD_COMMANDS, ids=[" ".join(c[0]) for c in OLD_COMMANDS])
def test_old_command_spellings_still_parse(user: User, argv: list[str], usage: str) -> None:
    out = user.ok(*argv, "--help").stdout
    # ArgumentParser answers an unknown subcommand's --help with its parent's help.
    assert f"USAGE: {usage}" in out, out


def test_old_spellings_still_run(user: User, tmp_path: Path) -> None:
    # Old benchmark spellings run the benchmark (the quickest settings).
    r = user.ok("bench-edge", "--items", "2000", "--requests", "20000", "--capacities", "100")
    assert re.search(r"\d+\.\d+x", r.stdout), r.stdout
    r = user.ok("block", "bench-erasure", "--shard-size", "65536", "--seconds", "0.05")
    assert "encode_gbps=" in r.stdout, r.stdout
    # The old switch of the DHT benchmark parses (then the missing size is the complaint).
    for argv in (["bench", "dht", "--bootstrap"], ["dht", "bench", "--bootstrap"]):
        r = user.run(*argv)
        assert r.rc != 0 and "Unknown option" not in r.stderr and "--scale" in r.stderr, r.stderr
    # Offline name records: the old --key/--node of `name sign` (now --owner/--service-node).
    owner = tmp_path / "owner.pem"
    user.ok("name", "keygen", "--out", owner)
    user.ok("name", "sign", "old.example", "c" * 64, "--key", owner, "--record-version", "1", "--out", tmp_path / "a.bin")
    user.ok("name", "verify", tmp_path / "a.bin")
    user.ok("name", "sign", "svc.example", "--owner", owner, "--node", "d" * 64 + "@[::1]:4433", "--record-version", "2",
            "--out", tmp_path / "b.bin")
    assert "[::1]:4433" in user.ok("name", "verify", tmp_path / "b.bin").stdout
    # `certs issue --ca DIR` (now --ca-dir) still takes the CA directory.
    issued = user.ok("certs", "issue", "--ca", user.ca_dir, "--name", "vocab-old-ca", "--out", tmp_path / "certs")
    assert (tmp_path / "certs" / "vocab-old-ca.pem").exists(), issued.stdout
    # `block plan ID --nodes FILE` (now --nodes-file).
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("".join(f"{i:064x} region-{i % 4} {64 << 30}\n" for i in range(1, 21)))
    plan = user.ok("block", "plan", "e" * 64, "--nodes", nodes, "--blocks", tmp_path / "blocks")
    assert "region-" in plan.stdout, plan.stdout
    # Options whose old and new spellings name one thing: both at once is refused after parsing.
    tls = user.tls("vocab-client")
    refused_as_old_spelling(user.run("get", "stoq:" + "a" * 52, "-o", tmp_path / "x", "--bootstrap", "[::1]:1",
                                     "--dht", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("block", "put", nodes, "--node", "[::1]:1", "--nodes", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("block", "put", nodes, "--bootstrap", "[::1]:1", "--dht", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("block", "repair", "e" * 64, "--node", "[::1]:1", "--nodes", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("block", "repair", "e" * 64, "--bootstrap", "[::1]:1", "--dht", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("name", "get", "x.example", "--bootstrap", "[::1]:1", "--node", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("name", "set", "x.example", "stoq:" + "a" * 52, "--owner", owner,
                                     "--bootstrap", "[::1]:1", "--node", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("resolve", "x.example", "--interval-ms", "200", "--bootstrap", "[::1]:1",
                                     "--node", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("name", "show", "x", "--node", "[::1]:1", "--peers", "[::1]:1", *tls))
    refused_as_old_spelling(user.run("certs", "issue", "--ca-dir", user.ca_dir, "--ca", user.ca_dir, "--name", "n",
                                     "--out", tmp_path / "n"))
    # A name with neither --peers nor --bootstrap: says how to resolve it.
    r = user.run("get", "some-name", "-o", tmp_path / "y", "--store", tmp_path / "store-y")
    assert r.rc != 0 and "--peers" in r.stderr and "--bootstrap" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def origin(user: User, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An origin that runs the DHT too, holding one content."""
    work = tmp_path_factory.mktemp("vocab")
    source = make_tree(work / "data", seed=14, big=200_000)
    store = work / "origin"
    cid = content_id(user.ok("put", source, "--store", store).stdout)
    procs = Procs()
    try:
        # vocab-publisher publishes names below: the origin lists it (names are closed by default).
        node = user.node(procs, "vocab-origin", "--role", "origin", "--dht", "--publisher", user.cert("vocab-publisher")[0], store=store)
        node.proc.wait_line(r"^dht \S+ joined", timeout=60)
        yield node, cid, source
    finally:
        procs.stop_all()


def test_get_name_says_which_kind_it_used(user: User, origin: tuple[Node, str, Path], tmp_path: Path) -> None:
    node, cid, source = origin
    tls = user.tls("vocab-client")
    publisher = [*user.tls("vocab-publisher"), "--store", tmp_path / "publisher"]
    key = node.store / "publisher.key"

    # A name published on the origin: `name publish`, then `name show`, then `get NAME --peers`.
    r = user.ok("name", "publish", "vocab-site", cid, "--node", node.address, *publisher)
    assert "v1" in r.stdout, r.stdout
    shown = user.ok("name", "show", "vocab-site", "--node", node.address, *tls)
    assert cid in shown.stdout and shown.stdout.count(cid) == 1, shown.stdout
    r = user.ok("get", "vocab-site", "-o", tmp_path / "by-origin-name", "--store", tmp_path / "r1", "--peers", node.address,
                "--publisher-key", key, *tls)
    assert f"stoq: name 'vocab-site' → {cid} (origin record v1 from {node.address})" in r.stderr, r.stderr
    assert_same_tree(source, tmp_path / "by-origin-name")
    # The old spellings: `publish` (version 2) and `published --peers`.
    r = user.ok("publish", "vocab-site", cid, "--node", node.address, *publisher)
    assert "v2" in r.stdout, r.stdout
    assert cid in user.ok("published", "vocab-site", "--peers", node.address, *tls).stdout

    # A DHT name: `name set --bootstrap`, then `get NAME --bootstrap` (no peer asked).
    owner = tmp_path / "owner.pem"
    user.ok("name", "keygen", "--out", owner)
    user.ok("name", "set", "vocab.example", cid, "--owner", owner, "--record-version", "3", "--bootstrap", node.address, *tls)
    assert "version 3" in user.ok("name", "get", "vocab.example", "--bootstrap", node.address, *tls).stdout
    # The old --node (now --bootstrap) of `name get`.
    assert "version 3" in user.ok("name", "get", "vocab.example", "--node", node.address, *tls).stdout
    r = user.ok("get", "vocab.example", "-o", tmp_path / "by-dht-name", "--store", tmp_path / "r2",
                "--bootstrap", node.address, "--publisher-key", key, *tls)
    assert re.search(rf"stoq: name 'vocab\.example' → {cid} \(DHT record v3\b", r.stderr), r.stderr
    assert_same_tree(source, tmp_path / "by-dht-name")
    # Both given: the peers do not know the DHT name, so the DHT answers, and stderr says both.
    r = user.ok("get", "vocab.example", "-o", tmp_path / "both", "--store", tmp_path / "r3",
                "--peers", node.address, "--dht", node.address, "--publisher-key", key, *tls)
    assert "is not a published name on --peers" in r.stderr, r.stderr
    assert re.search(rf"name 'vocab\.example' → {cid} \(DHT record v3\b", r.stderr), r.stderr
    assert_same_tree(source, tmp_path / "both")
    # Neither kind knows it: one error naming both.
    r = user.run("get", "nothing.example", "-o", tmp_path / "none", "--store", tmp_path / "r4",
                 "--peers", node.address, "--bootstrap", node.address, *tls)
    assert r.rc != 0 and "published name" in r.stderr and "DHT" in r.stderr, r.stderr
