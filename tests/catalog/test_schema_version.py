"""A catalog built for another schema version is refused on read with one clear line, never misread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zoo.catalog import list_models, resolve
from zoo.catalog.build import build, is_fresh
from zoo.catalog.fields import SCHEMA_VERSION
from zoo.errors import CatalogError

from ..conftest import STUBS


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("catalog") / "registry.db"
    build(STUBS, db)
    return db


def with_version(built: Path, tmp_path: Path, version: str | None) -> Path:
    db = tmp_path / "registry.db"
    db.write_bytes(built.read_bytes())
    with sqlite3.connect(db) as conn:
        if version is None:
            conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
        else:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.close()
    return db


def test_matching_version_reads(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{built}")
    assert resolve("obert-3l-80-quant").layers == 3
    assert is_fresh(built, STUBS)


@pytest.mark.parametrize(
    ("version", "shown", "hint"),
    [
        (str(SCHEMA_VERSION - 1), str(SCHEMA_VERSION - 1), "rebuild it with `zoo catalog build`"),
        (str(SCHEMA_VERSION + 1), str(SCHEMA_VERSION + 1), "upgrade obert-zoo"),
        (None, "none", "rebuild it with `zoo catalog build`"),
    ],
    ids=["older", "newer", "missing"],
)
def test_other_version_is_refused(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str | None, shown: str, hint: str) -> None:
    db = with_version(built, tmp_path, version)
    url = f"sqlite:///{db}"
    monkeypatch.setenv("ZOO_CATALOG_URL", url)
    for read in (list_models, lambda: resolve("obert-3l-80-quant")):
        with pytest.raises(CatalogError) as info:
            read()
        line = info.value.one_line()
        assert line.startswith(f"catalog at {url} has schema version {shown}, this zoo reads {SCHEMA_VERSION} ({hint}")
        assert "\n" not in line
    assert not is_fresh(db, STUBS)  # same stubs, other schema: `zoo catalog check` calls it stale


def test_cli_prints_one_line_for_a_newer_catalog(built: Path, tmp_path: Path, cli) -> None:  # noqa: ANN001
    db = with_version(built, tmp_path, str(SCHEMA_VERSION + 1))
    result = cli("list", env={"ZOO_CATALOG_URL": f"sqlite:///{db}"})
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        f"error: catalog at sqlite:///{db} has schema version {SCHEMA_VERSION + 1}, this zoo reads {SCHEMA_VERSION} "
        "(upgrade obert-zoo (pip install -U obert-zoo))"
    ]
