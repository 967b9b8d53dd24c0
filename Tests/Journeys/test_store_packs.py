"""The pack-file store on the release binary (the default for a new store): put and get, the files a
store uses, a torn pack tail cut on open, gc compaction, verify, and `stoq store migrate` of a
store of chunk files (an upgraded node's store keeps its content), and a store of a user who is not root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import User, assert_same_tree, content_id, make_tree, real_stoq


def files_under(p: Path) -> list[Path]:
    return [f for f in p.rglob("*") if f.is_file()]


def test_pack_store_journey(user: User, tmp_path: Path) -> None:
    store = tmp_path / "packs-store"
    tree = make_tree(tmp_path / "tree", seed=31, big=2_000_000)
    other = tmp_path / "other.bin"
    other.write_bytes(bytes(range(256)) * 8000)
    tree_id = content_id(user.ok("put", tree, "--store", store).stdout)  # a new store: packs by default
    other_id = content_id(user.ok("put", other, "--store", store, "--store-format", "packs").stdout)
    assert not (store / "chunks").exists(), "no file per chunk"
    packs = sorted((store / "packs").glob("*.pack"))
    assert len(packs) == 1, packs  # the second put continued the first put's pack
    user.ok("get", tree_id, "-o", tmp_path / "out", "--store", store)
    assert_same_tree(tree, tmp_path / "out")

    # A torn record at the tail (a crash mid-write): cut on the next open, the command says so.
    last = packs[-1]
    last.chmod(0o644)
    with open(last, "ab") as f:
        f.write(b"STQR\x00\x00\x10\x00" + b"\x01" * 20)
    verify = user.ok("store", "verify", "--store", store)
    assert "cut 28 bytes of torn" in verify.stderr, verify.stderr
    assert "consistent" in verify.stdout, verify.stdout

    # gc: the unpinned content goes, its pack space is compacted away.
    user.ok("unpin", other_id, "--store", store)
    gc = user.ok("gc", "--store", store)
    assert re.search(r"removed [1-9]\d* chunks", gc.stdout), gc.stdout
    assert "consistent" in user.ok("store", "verify", "--store", store).stdout
    user.ok("get", tree_id, "-o", tmp_path / "out2", "--store", store)
    assert_same_tree(tree, tmp_path / "out2")
    # A store with packs refuses to be opened as files.
    assert user.run("ls", "--store", store, "--store-format", "files").rc != 0


def test_store_of_chunk_files_is_migrated(user: User, tmp_path: Path) -> None:
    store = tmp_path / "old-store"
    tree = make_tree(tmp_path / "tree", seed=32, big=500_000)
    tree_id = content_id(user.ok("put", tree, "--store", store, "--store-format", "files").stdout)
    n = len(files_under(store / "chunks"))
    assert n > 5
    # An existing store of chunk files keeps its layout when no format is given (never converted silently).
    extra = tmp_path / "extra.txt"
    extra.write_text("a store of chunk files stays one\n" * 2000)
    user.ok("put", extra, "--store", store)
    assert not (store / "packs").exists()
    assert len(files_under(store / "chunks")) > n
    n = len(files_under(store / "chunks"))
    out = user.ok("store", "migrate", "--store", store).stdout
    assert f"moved {n} chunk files into packs" in out, out
    assert not files_under(store / "chunks")
    assert "consistent" in user.ok("store", "verify", "--store", store).stdout
    user.ok("get", tree_id, "-o", tmp_path / "out", "--store", store)
    assert_same_tree(tree, tmp_path / "out")


def test_pack_store_of_a_user_who_is_not_root() -> None:
    """Packs are read-only on disk (0444): their owner, not only root, reopens them, appends to the
    last one and reads them back (journeys run as root, which ignores file modes)."""
    binary = real_stoq()
    if binary is None or os.geteuid() != 0:
        pytest.skip("needs the stoq binary and root (to run it as nobody); as any other user every journey covers this")
    work = Path(tempfile.mkdtemp(prefix="stoq-nobody-"))
    try:
        os.chmod(work, 0o755)
        shutil.copy(binary, work / "stoq")
        os.chmod(work / "stoq", 0o755)
        home = work / "home"
        home.mkdir()
        (work / "a.txt").write_bytes(os.urandom(200_000))
        (work / "b.txt").write_bytes(b"the second put continues the first put's pack\n" * 3000)
        for p in (work, home, work / "a.txt", work / "b.txt"):
            os.chown(p, 65534, 65534)

        def run(*args: object) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(work / "stoq"), *map(str, args)], user=65534, group=65534, extra_groups=[],
                                  env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)

        store = work / "store"
        a = run("put", work / "a.txt", "--store", store)
        assert a.returncode == 0, a.stderr
        b = run("put", work / "b.txt", "--store", store)
        assert b.returncode == 0, b.stderr
        assert [p.name for p in (store / "packs").glob("*.pack")] == ["00000001.pack"]
        assert oct((store / "packs" / "00000001.pack").stat().st_mode & 0o777) == "0o444"
        for name, out in (("a.txt", a.stdout), ("b.txt", b.stdout)):
            got = run("get", content_id(out), "-o", work / f"{name}.out", "--store", store)
            assert got.returncode == 0, got.stderr
            assert (work / f"{name}.out").read_bytes() == (work / name).read_bytes()
        verify = run("store", "verify", "--store", store)
        assert verify.returncode == 0 and "consistent" in verify.stdout, verify.stdout + verify.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)
