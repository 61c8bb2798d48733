"""The cards kept in ``$ZOO_HOME/catalog/cards/``: later reads skip SQLAlchemy, yet never show a stale, corrupt or
foreign catalog (a read-only home: tests/cli/test_pipes_and_mistakes.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.catalog import list_models, resolve
from zoo.catalog.build import build
from zoo.catalog.query import _read
from zoo.config import bundled_registry
from zoo.errors import UnknownModelError

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


@pytest.mark.parametrize("garbage", [b"\x00\xff not json", b"[]garbage", b'[{"name": 5}]', b'{"a": 1}', b"[1, 2]", b""])
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
