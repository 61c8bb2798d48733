"""The cards kept in ``$ZOO_HOME/catalog/cards/``: later reads skip SQLAlchemy, yet never show a stale, corrupt or
foreign catalog (a read-only home: tests/cli/test_pipes_and_mistakes.py)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zoo.catalog import list_models, query, resolve
from zoo.catalog.build import build
from zoo.catalog.cardcache import seed_file
from zoo.catalog.query import _read
from zoo.config import bundled_registry
from zoo.errors import CatalogError, UnknownModelError

from ..conftest import STUBS


def fresh_cards(url: str) -> list[dict]:
    """What the catalog at ``url`` holds, read through the ORM (no kept cards involved)."""
    return [c.to_dict() for c in _read(url)]


def kept(home: Path) -> list[Path]:
    return sorted((home / "catalog" / "cards").glob("*.json"))


def test_second_read_skips_sqlalchemy_and_equals_the_database(isolated_home: Path) -> None:
    first = [c.to_dict() for c in list_models()]
    assert len(kept(isolated_home)) == 1
    code = ("import sys, json; from zoo.catalog import list_models; cards = [c.to_dict() for c in list_models()]; "
            "print(json.dumps({'sqlalchemy': any(m.startswith('sqlalchemy') for m in sys.modules), 'cards': cards}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ).stdout)
    assert out["sqlalchemy"] is False
    assert out["cards"] == json.loads(json.dumps(first))
    # the kept cards rebuild equal cards, tuples and all
    assert sorted(list_models(), key=lambda c: c.name) == _read(f"sqlite:///{bundled_registry()}") != []


@pytest.mark.parametrize("garbage", [b"\x00\xff not json", b"[]garbage", b'[{"name": 5}]', b'{"a": 1}', b"[1, 2]", b"",
                                     b"[" * 100_000, b'[{"stages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]"])
def test_corrupt_kept_cards_are_read_afresh(isolated_home: Path, garbage: bytes) -> None:
    expected = [c.to_dict() for c in list_models()]
    (file,) = kept(isolated_home)
    file.write_bytes(garbage)
    assert [c.to_dict() for c in list_models()] == expected
    assert json.loads(file.read_text())  # rewritten whole


def test_a_rebuilt_catalog_is_never_read_stale(isolated_home: Path, tmp_path: Path, cli) -> None:  # noqa: ANN001
    stubs = tmp_path / "stubs"
    shutil.copytree(STUBS, stubs)
    db = tmp_path / "registry.db"
    build(stubs, db)
    env = {"ZOO_CATALOG_URL": f"sqlite:///{db}"}

    def listed() -> set[str]:  # each in its own process, as a user runs it
        res = cli("list", "--json", env=env)
        assert res.code == 0, res.err
        return {c["name"] for c in res.json()}

    before = listed()
    assert listed() == before and len(kept(isolated_home)) == 1
    gone = "obert-12l-80"
    for stub in stubs.glob("*.toml"):  # the entry, and those naming it as parent (they would not build without it)
        if stub.stem == gone or f'"{gone}"' in stub.read_text():
            stub.unlink()
    build(stubs, db)
    after = listed()
    assert gone in before and gone not in after and after == {c["name"] for c in fresh_cards(f"sqlite:///{db}")}
    assert len(kept(isolated_home)) == 1  # the earlier state's file is replaced, not piled up
    assert cli("show", gone, env=env).code != 0


def test_a_long_lived_process_sees_a_rebuilt_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = tmp_path / "stubs"
    shutil.copytree(STUBS, stubs)
    db = tmp_path / "registry.db"
    build(stubs, db)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{db}")
    assert resolve("obert-3l-90").name == "obert-3l-90"
    (stubs / "obert-3l-90.toml").unlink()
    build(stubs, db)
    with pytest.raises(UnknownModelError):  # not the pooled connection's view of the replaced file
        resolve("obert-3l-90")


def _set(key: str, value: Any) -> Callable[[dict], None]:
    def change(card: dict) -> None:
        card[key] = value
    return change


def _set_in(key: str, field: str, value: Any) -> Callable[[dict], None]:
    def change(card: dict) -> None:
        card[key][0][field] = value
    return change


# Valid JSON that the dataclasses would take as it is: each field of the wrong type (or one missing, as a kept file
# of a zoo whose cards had one field less would be) fails later, or shows what the catalog does not hold.
WRONG_SHAPES = {
    "sparsity as text": _set("sparsity", "90"), "name a number": _set("name", 5), "layers a float": _set("layers", 12.5),
    "quantized as bool": _set("quantization", False), "tags a string": _set("tags", "squad"), "tags of numbers": _set("tags", [1]),
    "metric value as text": _set_in("metrics", "value", "89.1"), "file size as text": _set_in("files", "size", "1"),
    "alias missing a field": lambda card: card["aliases"][0].pop("verified"),
    "stages a list": _set("recipe", {"source": "s", "epochs": 1.0, "stages": []}),
    "one field more": _set("speed", 1.0), "one field less": lambda card: card.pop("expected_speedup_avx2"),
    "recipe a string": _set("recipe", "none"), "null name": _set("name", None),
}


@pytest.mark.parametrize("change", WRONG_SHAPES.values(), ids=WRONG_SHAPES)
def test_kept_cards_of_the_wrong_types_are_read_afresh(isolated_home: Path, change: Callable[[dict], None]) -> None:
    expected = list_models()
    (file,) = kept(isolated_home)
    cards = json.loads(file.read_text())
    target = next(c for c in cards if c["metrics"] and c["files"] and c["aliases"] and c["recipe"])
    change(target)
    file.write_text(json.dumps(cards))
    assert list_models() == expected
    assert json.loads(file.read_text()) != cards  # rewritten from the catalog


def test_a_catalog_edited_in_place_with_its_size_and_time_kept_is_read_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a filesystem with whole-second times shows for two writes in one second, or ``cp -p``/``rsync -t --inplace``."""
    db = tmp_path / "registry.db"
    shutil.copyfile(bundled_registry(), db)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{db}")
    name = list_models()[0].name
    before = os.stat(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE models SET description = 'edited in place' WHERE name = ?", (name,))
    conn.close()
    os.utime(db, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(db)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert resolve(name).description == "edited in place"


def test_changes_held_in_a_write_ahead_log_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "registry.db"
    shutil.copyfile(bundled_registry(), db)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{db}")
    writer = sqlite3.connect(db)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        name = list_models()[0].name
        writer.execute("UPDATE models SET description = 'in the log' WHERE name = ?", (name,))
        writer.commit()  # the change is in registry.db-wal; registry.db is as it was
        assert resolve(name).description == "in the log"
    finally:
        writer.close()


def test_a_catalog_replaced_while_it_is_read_keeps_no_old_cards_under_its_new_identity(
        isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = tmp_path / "stubs"
    shutil.copytree(STUBS, stubs)
    db = tmp_path / "registry.db"
    build(stubs, db)
    seed_file(db).unlink()  # the first read goes through the ORM, and the rebuild lands during it
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{db}")
    read = query._read

    def read_then_rebuilt(url: str, home: Path | None = None) -> list:
        cards = read(url, home)
        (stubs / "obert-3l-90.toml").unlink()
        build(stubs, db)  # `zoo catalog build` in another process lands now
        return cards

    monkeypatch.setattr(query, "_read", read_then_rebuilt)
    assert "obert-3l-90" in {c.name for c in list_models()}  # this read began before the rebuild
    monkeypatch.setattr(query, "_read", read)
    assert "obert-3l-90" not in {c.name for c in list_models()}


def test_a_url_naming_another_file_than_its_path_is_never_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLAlchemy reads ``a%41.db`` as ``aA.db``: the cards of aA.db must not be kept under the identity of a%41.db."""
    (tmp_path / "a%41.db").write_bytes(bundled_registry().read_bytes())  # unchanged while aA.db goes
    shutil.copyfile(bundled_registry(), tmp_path / "aA.db")
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{tmp_path / 'a%41.db'}")
    assert list_models()
    (tmp_path / "aA.db").unlink()
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        list_models()


@pytest.mark.skipif(sys.platform != "linux", reason="a file name that is not UTF-8")
def test_a_catalog_path_that_is_not_utf8(isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Path(os.fsdecode(bytes(tmp_path) + b"/r\xe9gistre.db"))
    shutil.copyfile(bundled_registry(), db)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{db}")
    first = list_models()
    assert first and list_models() == first and len(kept(isolated_home)) == 1


def test_a_planted_temporary_name_is_not_written_through(isolated_home: Path, tmp_path: Path) -> None:
    """Kept cards are written to a fresh temporary file, never to a name another user of a shared home could guess."""
    victim = tmp_path / "victim"
    victim.write_text("mine")
    list_models()
    (file,) = kept(isolated_home)
    file.unlink()
    guessed = file.with_name(f".{file.name}.{os.getpid()}.tmp")  # the name an earlier version used
    guessed.symlink_to(victim)
    list_models()
    assert victim.read_text() == "mine" and len(kept(isolated_home)) == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_where_cards_are_kept_does_not_block(isolated_home: Path) -> None:
    list_models()
    (file,) = kept(isolated_home)
    file.unlink()
    os.mkfifo(file)
    code = "from zoo.catalog import list_models; print(len(list_models()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert out.returncode == 0 and int(out.stdout) > 0, out.stderr


@pytest.mark.parametrize("target", ["directory", "not sqlite"])
def test_a_catalog_url_naming_no_sqlite_file_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    where = tmp_path / target
    if target == "directory":
        where.mkdir()
    else:
        where.write_bytes(b"just text, " * 1000)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{where}")
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        list_models()


def test_a_huge_kept_file_is_not_read_whole(isolated_home: Path) -> None:
    """Valid cards followed by 20 MB of JSON whitespace: over the bound a sound file could reach, so read afresh."""
    expected = list_models()
    (file,) = kept(isolated_home)
    sound = file.read_bytes()
    file.write_bytes(sound + b" " * (20 << 20))
    assert list_models() == expected and file.read_bytes() == sound


def test_processes_keeping_the_same_cards_at_once(isolated_home: Path) -> None:
    code = "import json; from zoo.catalog import list_models; print(json.dumps([c.to_dict() for c in list_models()]))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ) for _ in range(4)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs) and all(o == outs[0] for o in outs) and outs[0]
    assert len(kept(isolated_home)) == 1 and not list((isolated_home / "catalog" / "cards").glob(".*"))  # no temporary left
    assert json.loads(json.dumps([c.to_dict() for c in list_models()])) == outs[0]
