"""The cache and the state database survive each other: prune beside a live download, a corrupt state.db,
stale temporary files, the free-space arithmetic of a resume, and stub paths that would leave the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import STUBS
from zoo.catalog.schema import parse_stub
from zoo.errors import StubError


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "C:\\x"])
def test_stub_file_path_must_stay_inside_the_repo(tmp_path: Path, bad: str):
    stub = tmp_path / "obert-3l-80-quant.toml"
    shutil.copy(STUBS / stub.name, stub)
    text = stub.read_text()
    assert 'path = "vocab.txt"' in text
    stub.write_text(text.replace('path = "vocab.txt"', f"path = {bad!r}", 1))
    with pytest.raises(StubError, match=r"files\[\d+\]\.path.*relative path inside the repo"):
        parse_stub(stub)


# -- the cache beside a live download -----------------------------------------------------------------
def test_prune_during_a_download_keeps_what_the_download_holds(cli, mirror, isolated_home):
    import subprocess
    import sys

    from tests.fetch.conftest import MODEL
    from tests.fetch.test_faults import _wait_for_partial

    mirror.faults.delay = 0.1  # config.json and friends land first; the checkpoint takes many seconds
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "download", MODEL, "--no-validate"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_partial(isolated_home, proc, minimum=64 * 1024)
    adopted = {p.name for p in (isolated_home / "blobs").glob("sha256-*") if not p.name.endswith(".ok")}
    assert adopted  # at least one small file is already a blob, referenced by no manifest yet
    pruned = cli("cache", "prune", "--json")
    assert pruned.code == 0, pruned.err
    assert adopted <= {p.name for p in (isolated_home / "blobs").iterdir()}
    assert list((isolated_home / "partial").glob("*.part"))
    mirror.faults.delay = 0
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert cli("verify", MODEL).code == 0


@pytest.mark.parametrize("damage", ["random", "directory", "half-zeroed"])
def test_a_corrupt_state_db_is_one_line_and_kept(cli, mirror, isolated_home, damage):
    import os

    from tests.fetch.conftest import MODEL

    db = isolated_home / "state.db"
    if damage == "random":
        db.write_bytes(os.urandom(16384))
    elif damage == "directory":
        db.mkdir()
    else:
        assert cli("download", MODEL, "--no-validate").code == 0
        data = bytearray(db.read_bytes())
        data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
        db.write_bytes(bytes(data))
        shutil.rmtree(isolated_home / "manifests")  # so the download has to read its pins
    before = db.read_bytes() if db.is_file() else None
    for args in (("download", MODEL, "--no-validate"), ("cache", "list")):
        res = cli(*args)
        assert res.code == 1 and res.err.count("\n") == 1 and "Traceback" not in res.err, res.err
        assert f"the state database {db} is unusable" in res.err and "move it aside" in res.err
    assert (db.read_bytes() if db.is_file() else None) == before  # pins are security state: never dropped silently


def test_stale_temporary_files_of_dead_processes_are_cleaned(cli, mirror, isolated_home, tmp_path):
    import os
    import subprocess

    from tests.fetch.conftest import MODEL

    assert cli("download", MODEL, "--no-validate").code == 0
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    to = tmp_path / "pulled"
    assert cli("mirror", "pull", MODEL, "--to", str(to)).code == 0
    repo = next(p.parent for p in to.rglob("config.json"))
    stale = [repo / f".pytorch_model.bin.{dead.pid}.tmp", isolated_home / "blobs" / f".x.ok.{dead.pid}.tmp",
             isolated_home / "models" / f".{MODEL}.{dead.pid}.tmp"]
    live = repo / f".vocab.txt.{os.getpid()}.tmp"
    for p in [*stale, live]:
        p.write_bytes(b"half a copy")
    assert cli("mirror", "pull", MODEL, "--to", str(to)).code == 0
    assert cli("cache", "prune").code == 0
    assert not any(p.exists() for p in stale) and live.exists()


def test_a_resume_that_fits_is_not_refused(mirror, isolated_home, monkeypatch):
    from collections import namedtuple

    from tests.fetch.conftest import MODEL
    from zoo.catalog import resolve
    from zoo.fetch import download
    from zoo.fetch.mirror import Catalog
    from zoo.fetch.store import Store

    card = resolve(MODEL)
    repo_dir = mirror.repo_dir(MODEL)
    commit = Catalog(mirror.root).commit(repo_dir)
    store = Store(isolated_home)
    sizes = {p.name: p.stat().st_size for p in repo_dir.iterdir() if p.is_file()}
    for name, size in sizes.items():  # every file already fetched but its last byte
        store.partial(store.key(card.repo, commit, name)).write_bytes((repo_dir / name).read_bytes()[:size - 1])
    remaining = len(sizes)
    free = int(remaining * 1.02 + 16 * 2**20) + 4096  # enough for what is missing, far from enough for whole files
    assert free < sum(sizes.values()) * 1.02 + 16 * 2**20
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**12, 10**12 - free, free))
    result = download(MODEL)
    assert {f.action for f in result.files} == {"resume"}
