"""The seed ``zoo catalog build`` writes beside a catalog (``registry.cards.json``): a fresh home's first read needs
no SQLAlchemy, yet a stale, missing or hostile seed is never shown, only read past."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from zoo.catalog import cardcache, list_models, query, resolve
from zoo.catalog.build import build
from zoo.catalog.cardcache import seed_file
from zoo.config import bundled_registry

from ..conftest import STUBS
from .test_card_cache import kept

# The CLI's own entry point, then whether SQLAlchemy was imported on the way (on stderr, after the command's own lines).
DRIVER = ("import sys; from zoo.cli import main; main(sys.argv[1:]); "
          "print('sqlalchemy' if any(m.split('.')[0] == 'sqlalchemy' for m in sys.modules) else 'no sqlalchemy', file=sys.stderr)")


def zoo(*args: str, home: Path, catalog: Path | None = None) -> tuple[str, bool]:
    """What ``zoo ARGS`` prints in a process of its own with ``home`` (and ``catalog``), and whether it imported SQLAlchemy."""
    env = {**os.environ, "ZOO_HOME": str(home), "COLUMNS": "200"}
    env.pop("ZOO_CATALOG_URL", None)
    if catalog is not None:
        env["ZOO_CATALOG_URL"] = f"sqlite:///{catalog}"
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr.splitlines()[-1] == "sqlalchemy"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A copy of the bundled catalog with its seed beside it."""
    db = tmp_path / "catalog" / "registry.db"
    db.parent.mkdir()
    shutil.copyfile(bundled_registry(), db)
    shutil.copyfile(seed_file(bundled_registry()), seed_file(db))
    return db


def fresh(db: Path) -> list:
    """The cards of ``db`` read through the ORM, by name."""
    return query._read(f"sqlite:///{db}")


def listed() -> list:
    """The cards this process lists, by name as ``fresh`` gives them (``list_models`` sorts ``3l`` before ``12l``)."""
    return sorted(list_models(), key=lambda c: c.name)


@pytest.mark.parametrize("args", [("show", "obert-3l-80-quant"), ("list",)], ids=["show", "list"])
def test_a_fresh_home_reads_the_bundled_seed_without_sqlalchemy(tmp_path: Path, catalog: Path, args: tuple[str, ...]) -> None:
    bundled, imported = zoo(*args, home=tmp_path / "fresh")
    assert not imported and len(kept(tmp_path / "fresh")) == 1
    assert zoo(*args, home=tmp_path / "fresh") == (bundled, False)  # then from the cards the first run kept
    seed_file(catalog).unlink()
    unseeded, imported = zoo(*args, home=tmp_path / "unseeded", catalog=catalog)
    assert imported and unseeded == bundled and "obert-3l-80-quant" in bundled


def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs this process reads through the ORM from now on."""
    urls: list[str] = []
    read = query._read

    def counted(url: str, home: Path | None = None) -> list:
        urls.append(url)
        return read(url, home)
    monkeypatch.setattr(query, "_read", counted)
    return urls


def test_the_seed_gives_the_cards_the_database_holds(catalog: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{catalog}")
    expected = fresh(catalog)
    urls = reads(monkeypatch)
    assert listed() == expected != [] and urls == []
    assert json.loads(kept(isolated_home)[0].read_text()) == json.loads(seed_file(catalog).read_text())["cards"]


def test_a_catalog_edited_without_its_seed_is_read_afresh(tmp_path: Path, catalog: Path) -> None:
    with sqlite3.connect(catalog) as conn:
        conn.execute("UPDATE models SET description = 'edited after the build' WHERE name = 'obert-3l-80-quant'")
    conn.close()
    out, imported = zoo("show", "obert-3l-80-quant", home=tmp_path / "home", catalog=catalog)
    assert imported and "edited after the build" in out


def test_a_catalog_rebuilt_beside_an_old_seed_is_read_afresh(tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = tmp_path / "stubs"
    shutil.copytree(STUBS, stubs)
    db = tmp_path / "registry.db"
    build(stubs, db)
    old = seed_file(db).read_bytes()
    (stubs / "obert-3l-90.toml").unlink()
    build(stubs, db)
    seed_file(db).write_bytes(old)  # a rebuilt catalog shipped with the seed of its earlier state
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{db}")
    assert "obert-3l-90" not in {c.name for c in list_models()}
    assert listed() == fresh(db)


def _spoiled(change: Callable[[dict], object]) -> Callable[[bytes], bytes]:
    """The seed with ``change`` made to what it holds (its identity still this catalog's unless ``change`` says)."""
    def spoil(seed: bytes) -> bytes:
        data = json.loads(seed)
        change(data)
        return json.dumps(data).encode()
    return spoil


# Seeds that must be read past: what they hold is not the cards of this catalog as it is now, or not cards at all.
HOSTILE: dict[str, Callable[[bytes], bytes]] = {
    "not json": lambda seed: b"\x00\xff not json",
    "empty": lambda seed: b"",
    "a bare list of cards": lambda seed: json.dumps(json.loads(seed)["cards"]).encode(),
    "identity missing": _spoiled(lambda data: data.pop("identity")),
    "identity of another catalog": _spoiled(lambda data: data.update(identity="0" * 64)),
    "identity in a list": _spoiled(lambda data: data.update(identity=[data["identity"]])),
    "one key more": _spoiled(lambda data: data.update(note=1)),
    "cards an object": _spoiled(lambda data: data.update(cards={"x": data["cards"]})),
    "a layer count as text": _spoiled(lambda data: data["cards"][0].update(layers="12")),
    "a card missing a field": _spoiled(lambda data: data["cards"][0].pop("task")),
    "a metric of no value": _spoiled(lambda data: next(c for c in data["cards"] if c["metrics"])["metrics"][0].update(value=None)),
    "nested too deep": lambda seed: b'{"identity": "x", "cards": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "sound, then 20 MB of blanks": lambda seed: seed + b" " * (20 << 20),
}


@pytest.mark.parametrize("spoil", HOSTILE.values(), ids=HOSTILE)
def test_a_hostile_seed_is_read_past(catalog: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch,
                                     spoil: Callable[[bytes], bytes]) -> None:
    seed_file(catalog).write_bytes(spoil(seed_file(catalog).read_bytes()))
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{catalog}")
    expected = fresh(catalog)
    urls = reads(monkeypatch)
    assert listed() == expected and urls == [f"sqlite:///{catalog}"]
    assert resolve("obert-3l-80-quant") == next(c for c in expected if c.name == "obert-3l-80-quant")
    assert len(kept(isolated_home)) == 1 and cardcache.load(cardcache.path(isolated_home, catalog)) == expected  # not the seed's


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
@pytest.mark.parametrize("kind", ["fifo", "symlink to /dev/zero", "directory"])
def test_a_seed_that_is_no_regular_file_does_not_block(tmp_path: Path, catalog: Path, kind: str) -> None:
    expected, _ = zoo("list", home=tmp_path / "expected", catalog=catalog)
    seed = seed_file(catalog)
    seed.unlink()
    {"fifo": os.mkfifo, "symlink to /dev/zero": lambda p: p.symlink_to("/dev/zero"), "directory": Path.mkdir}[kind](seed)
    out, imported = zoo("list", home=tmp_path / "home", catalog=catalog)  # zoo()'s timeout: a blocked read fails
    assert imported and out == expected


@pytest.mark.parametrize("who", ["group-writable", "world-writable", "another owner"])
def test_a_seed_someone_else_may_have_written_is_read_past(catalog: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                           who: str) -> None:
    """A shared or sticky directory lets anyone create the seed of a catalog that has none: a seed is trusted only as
    the catalog is, so one of another owner, or writable by others who may not write the catalog, is read past."""
    seed = seed_file(catalog)
    seed.write_bytes(_spoiled(lambda data: data["cards"][0].update(description="planted"))(seed.read_bytes()))
    os.chmod(catalog, 0o644)
    if who == "another owner":
        if os.geteuid() != 0:
            pytest.skip("only root can make a file of another owner")
        os.chown(seed, 65534, 65534)
        os.chmod(seed, 0o644)
    else:
        os.chmod(seed, 0o664 if who == "group-writable" else 0o646)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{catalog}")
    expected = fresh(catalog)
    urls = reads(monkeypatch)
    assert listed() == expected and urls == [f"sqlite:///{catalog}"]
    assert "planted" not in {c.description for c in expected}


def test_a_seed_as_writable_as_its_catalog_is_read(catalog: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.chmod(catalog, 0o664)  # a team's catalog, and its seed, writable by the group
    os.chmod(seed_file(catalog), 0o664)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{catalog}")
    expected = fresh(catalog)
    urls = reads(monkeypatch)
    assert listed() == expected and urls == []
