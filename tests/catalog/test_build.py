"""registry.db is built deterministically from stubs/, with its seed of cards (registry.cards.json) beside it, and a
stale one (or a seed that is not the catalog's) is caught."""

from __future__ import annotations

import shutil
from pathlib import Path

from zoo.catalog import cardcache
from zoo.catalog.build import build, is_fresh
from zoo.catalog.cardcache import seed_file
from zoo.catalog.query import _read

from ..conftest import ROOT, STUBS


def test_build_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    assert build(STUBS, a) == build(STUBS, b) == len(list(STUBS.glob("*.toml")))
    assert a.read_bytes() == b.read_bytes()
    assert seed_file(a).read_bytes() == seed_file(b).read_bytes()


def test_committed_registry_is_fresh(tmp_path: Path) -> None:
    db = ROOT / "registry.db"
    assert is_fresh(db, STUBS), "registry.db is stale: run `zoo catalog build` and commit it"
    kept = cardcache.path(tmp_path, db)
    assert kept is not None and kept.seed == ROOT / "registry.cards.json"
    assert cardcache.seeded(kept) == _read(f"sqlite:///{db}"), \
        "registry.cards.json is not the seed of registry.db as it is: run `zoo catalog build` and commit both"


def test_registry_content_matches_a_fresh_build(tmp_path: Path) -> None:
    import sqlite3

    fresh = tmp_path / "fresh.db"
    build(STUBS, fresh)

    def dump(path: Path) -> list[str]:
        with sqlite3.connect(path) as conn:
            return list(conn.iterdump())

    assert dump(ROOT / "registry.db") == dump(fresh)
    assert seed_file(ROOT / "registry.db").read_bytes() == seed_file(fresh).read_bytes()


def test_edited_stub_makes_registry_stale(tmp_path: Path, cli) -> None:  # noqa: ANN001
    stubs = tmp_path / "stubs"
    shutil.copytree(STUBS, stubs)
    db = tmp_path / "registry.db"
    assert cli("catalog", "build", "--stubs", str(stubs), "--out", str(db)).code == 0
    ok = cli("catalog", "check", "--stubs", str(stubs), "--db", str(db), "--json")
    assert ok.code == 0 and ok.json()["fresh"] is True
    path = stubs / "obert-3l-80-quant.toml"
    path.write_text(path.read_text().replace("value = 82.04", "value = 82.05"))
    assert not is_fresh(db, stubs)
    stale = cli("catalog", "check", "--stubs", str(stubs), "--db", str(db))
    assert stale.code == 1 and "stale" in stale.err and len(stale.err.strip().splitlines()) == 1


def test_build_reports_bad_stub_in_one_line(tmp_path: Path, cli) -> None:  # noqa: ANN001
    stubs = tmp_path / "stubs"
    shutil.copytree(STUBS, stubs)
    path = stubs / "obert-6l-90.toml"
    path.write_text(path.read_text().replace("heads = 12", "heads = 12.5"))
    out = tmp_path / "out.db"
    result = cli("catalog", "build", "--stubs", str(stubs), "--out", str(out))
    assert result.code == 1
    assert result.err.strip() == "error: obert-6l-90.toml: field 'architecture.heads': expected integer, got float"
    assert not out.exists() and not seed_file(out).exists() and not list(tmp_path.glob(".out.*"))
