"""The state database on the stdlib sqlite3: a state.db written by the SQLAlchemy version reads and writes unchanged,
a fresh one gets the very same schema, concurrent processes share one, and a damaged one is kept and reported."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import pytest

from zoo import state
from zoo.errors import StateError
from zoo.runtime.bench import BenchResult

# sqlite_master.sql of a state.db created by the SQLAlchemy ORM version of zoo.state, in the order of its pages.
OLD_DDL = [
    "CREATE TABLE bench_runs (\n\tid INTEGER NOT NULL, \n\tat VARCHAR(32) NOT NULL, \n\tmodel VARCHAR(256) NOT NULL, "
    "\n\tsynthetic BOOLEAN NOT NULL, \n\tengine VARCHAR NOT NULL, \n\tbatch INTEGER NOT NULL, \n\tseq INTEGER NOT NULL, "
    "\n\tthreads INTEGER NOT NULL, \n\truns INTEGER NOT NULL, \n\tp50_ms DOUBLE NOT NULL, \n\tp90_ms DOUBLE NOT NULL, "
    "\n\titems_per_s DOUBLE NOT NULL, \n\tspeedup_vs_ort_fp32 DOUBLE, \n\textra JSON NOT NULL, \n\tPRIMARY KEY (id)\n)",
    "CREATE INDEX ix_bench_runs_at ON bench_runs (at)",
    "CREATE INDEX ix_bench_runs_model ON bench_runs (model)",
    "CREATE TABLE artifacts (\n\tid INTEGER NOT NULL, \n\tat VARCHAR(32) NOT NULL, \n\tmodel VARCHAR(256) NOT NULL, "
    "\n\tkind VARCHAR NOT NULL, \n\tpath VARCHAR(4096) NOT NULL, \n\tsha256 VARCHAR(64) NOT NULL, \n\tsize INTEGER NOT NULL, "
    "\n\tPRIMARY KEY (id)\n)",
    "CREATE INDEX ix_artifacts_model ON artifacts (model)",
    "CREATE INDEX ix_artifacts_path ON artifacts (path)",
    "CREATE TABLE installs (\n\tname VARCHAR(256) NOT NULL, \n\trepo VARCHAR(512) NOT NULL, \n\trevision VARCHAR(256) NOT NULL, "
    '\n\t"commit" VARCHAR(64), \n\tsource VARCHAR(1024) NOT NULL, \n\tinstalled_at VARCHAR(32) NOT NULL, '
    "\n\tverified_at VARCHAR(32) NOT NULL, \n\tfiles JSON NOT NULL, \n\tPRIMARY KEY (name)\n)",
    "CREATE TABLE pins (\n\trepo VARCHAR(512) NOT NULL, \n\trevision VARCHAR(256) NOT NULL, \n\tpath VARCHAR(1024) NOT NULL, "
    "\n\tsha256 VARCHAR(64) NOT NULL, \n\tsize INTEGER NOT NULL, \n\tsource VARCHAR(1024) NOT NULL, "
    "\n\tpinned_at VARCHAR(32) NOT NULL, \n\tPRIMARY KEY (repo, revision, path)\n)",
    "CREATE TABLE validations (\n\tid INTEGER NOT NULL, \n\tat VARCHAR(32) NOT NULL, \n\tmodel VARCHAR(256) NOT NULL, "
    "\n\trecord JSON NOT NULL, \n\tPRIMARY KEY (id)\n)",
    "CREATE INDEX ix_validations_model ON validations (model)",
    "CREATE INDEX ix_validations_at ON validations (at)",
]
# Rows as SQLAlchemy stored them: JSON as json.dumps text (", " and ": " separators, ASCII escapes), booleans as 0/1.
OLD_ROWS = """
INSERT INTO bench_runs VALUES (1, '2025-01-02T03:04:05+00:00', 'm1', 1, 'zoo', 1, 128, 2, 10, 1.5, 2.0, 600.0, 1.2, '{"k": [1, "\\u00e9"]}');
INSERT INTO bench_runs VALUES (2, '2025-01-02T03:04:05+00:00', 'm2', 0, 'ort', 1, 128, 2, 10, 2.5, 3.0, 400.0, NULL, '{}');
INSERT INTO artifacts VALUES (1, '2025-01-02T03:04:05+00:00', 'm1', 'onnx', '/p/a.onnx', 'aa', 10);
INSERT INTO installs VALUES ('m1', 'o/r', 'main', NULL, 'hf', 't0', 't0', '[{"path": "x", "sha256": "s"}]');
INSERT INTO pins VALUES ('o/r', 'main', 'x', 's1', 5, 'hf', 't0');
INSERT INTO validations VALUES (1, '2025-01-02T03:04:05+00:00', 'm1', '{"ok": true, "max_abs": 1e-06}');
"""


def _schema(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [sql for (sql,) in con.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rootpage")]


def _old_state_db(home: Path) -> Path:
    db = home / "state.db"
    with sqlite3.connect(db) as con:
        con.executescript(";\n".join(OLD_DDL) + ";\n" + OLD_ROWS)
    con.close()
    return db


def test_a_fresh_state_db_has_the_schema_sqlalchemy_made(tmp_path: Path):
    assert state.installs(home=tmp_path) == []
    assert _schema(tmp_path / "state.db") == OLD_DDL


def test_a_state_db_written_by_sqlalchemy_reads_and_writes_unchanged(tmp_path: Path):
    db = _old_state_db(tmp_path)
    at = "2025-01-02T03:04:05+00:00"
    assert state.bench_history(home=tmp_path) == [
        {"at": at, "model": "m2", "synthetic": False, "engine": "ort", "batch": 1, "seq": 128, "threads": 2, "runs": 10,
         "p50_ms": 2.5, "p90_ms": 3.0, "items_per_s": 400.0, "speedup_vs_ort_fp32": None, "extra": {}},
        {"at": at, "model": "m1", "synthetic": True, "engine": "zoo", "batch": 1, "seq": 128, "threads": 2, "runs": 10,
         "p50_ms": 1.5, "p90_ms": 2.0, "items_per_s": 600.0, "speedup_vs_ort_fp32": 1.2, "extra": {"k": [1, "é"]}}]
    assert state.bench_history("m1", home=tmp_path)[0]["synthetic"] is True
    assert state.installs(home=tmp_path) == [{"name": "m1", "repo": "o/r", "revision": "main", "commit": None, "source": "hf",
                                              "installed_at": "t0", "verified_at": "t0", "files": [{"path": "x", "sha256": "s"}]}]
    assert state.pinned("o/r", "main", "x", home=tmp_path) == {"repo": "o/r", "revision": "main", "path": "x", "sha256": "s1",
                                                               "size": 5, "source": "hf", "pinned_at": "t0"}
    assert state.validations("m1", home=tmp_path) == [{"at": at, "model": "m1", "record": {"ok": True, "max_abs": 1e-6}}]

    state.pin("o/r", "main", "x", "s2", 6, "mirror", home=tmp_path)  # an existing pin is never overwritten
    assert state.pinned("o/r", "main", "x", home=tmp_path)["sha256"] == "s1"
    assert state.pinned("o/r", "main", "y", home=tmp_path) is None
    state.record_install({"name": "m1", "repo": "o/r", "revision": "v2", "commit": "c" * 40, "source": "mirror",
                          "installed_at": "t1", "verified_at": "t1"}, home=tmp_path)  # upsert; files kept
    state.record_install({"name": "m0", "repo": "o/q", "revision": "main", "commit": None, "source": "hf",
                          "installed_at": "t2", "verified_at": "t2"}, home=tmp_path)  # insert; files default to []
    state.touch_verified("m0", [{"path": "y"}], home=tmp_path)
    state.touch_verified("absent", home=tmp_path)
    assert [(r["name"], r["revision"], r["commit"], r["files"]) for r in state.installs(home=tmp_path)] == [
        ("m0", "main", None, [{"path": "y"}]), ("m1", "v2", "c" * 40, [{"path": "x", "sha256": "s"}])]
    assert state.installs("m0", home=tmp_path)[0]["verified_at"] != "t2"
    state.forget_install("m0", home=tmp_path)
    assert [r["name"] for r in state.installs(home=tmp_path)] == ["m1"]

    state.record_artifact("m2", "onnx", "/p/b.onnx", "bb", 11, home=tmp_path)
    state.record_artifact("m3", "onnx", "/p/a.onnx", "cc", 12, home=tmp_path)  # same path: the old row goes
    assert [(a["model"], a["path"]) for a in state.artifacts(home=tmp_path)] == [("m2", "/p/b.onnx"), ("m3", "/p/a.onnx")]
    assert [a["sha256"] for a in state.artifacts("m3", home=tmp_path)] == ["cc"]

    result = BenchResult("zoo", 1, 128, 2, 10, 1.0, 2.0, 3.0)
    state.record_bench("m1", False, [result, replace(result, engine="ort")], {"note": "é"}, home=tmp_path)
    state.record_validation("m1", {"ok": False}, home=tmp_path)
    assert [(r["engine"], r["synthetic"], r["extra"]) for r in state.bench_history("m1", limit=3, home=tmp_path)] == [
        ("ort", False, {"note": "é"}), ("zoo", False, {"note": "é"}), ("zoo", True, {"k": [1, "é"]})]
    assert [v["record"] for v in state.validations(home=tmp_path)] == [{"ok": False}, {"ok": True, "max_abs": 1e-6}]

    with sqlite3.connect(db) as con:  # what another (older) zoo would read back: SQLAlchemy's encodings
        assert con.execute("SELECT synthetic, extra FROM bench_runs WHERE id = 3").fetchone() == (0, '{"note": "\\u00e9"}')
        assert con.execute("SELECT files FROM installs WHERE name = 'm1'").fetchone() == ('[{"path": "x", "sha256": "s"}]',)
    con.close()
    assert _schema(db) == OLD_DDL


def _install_many(home: Path, worker: int) -> None:
    for i in range(10):
        state.pin("o/r", "main", f"{worker}/{i}", f"{worker}", i, "hf", home=home)
        state.pin("o/r", "main", "shared", f"{worker}", i, "hf", home=home)
        state.record_install({"name": f"m{worker}", "repo": "o/r", "revision": "main", "commit": None, "source": "hf",
                              "installed_at": "t", "verified_at": "t", "files": [{"i": i}]}, home=home)
        state.record_validation(f"m{worker}", {"i": i}, home=home)


def test_processes_share_a_fresh_state_db(tmp_path: Path):
    home = tmp_path / "home"  # created by the first writer, tables by whichever comes first
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        list(pool.map(_install_many, [home] * 4, range(4)))
    assert [r["files"] for r in state.installs(home=home)] == [[{"i": 9}]] * 4
    assert len(state.validations(limit=-1, home=home)) == 40
    assert state.pinned("o/r", "main", "shared", home=home)["sha256"] in {"0", "1", "2", "3"}
    with sqlite3.connect(home / "state.db") as con:
        assert con.execute("SELECT count(*) FROM pins").fetchone() == (41,)
    con.close()


@pytest.mark.parametrize("content", [b"not a database, just text" * 1000, bytes(range(256)) * 64])
def test_a_damaged_state_db_is_one_state_error_and_kept(tmp_path: Path, content: bytes):
    db = tmp_path / "state.db"
    db.write_bytes(content)
    for call in (lambda: state.installs(home=tmp_path), lambda: state.pin("o/r", "main", "x", "s", 1, "hf", home=tmp_path)):
        with pytest.raises(StateError, match=r"state database .* is unusable \(file is not a database\)") as err:
            call()
        assert "move it aside" in err.value.hint and "\n" not in err.value.one_line()
    assert db.read_bytes() == content


def test_importing_the_state_module_leaves_sqlalchemy_alone():
    code = "import sys, zoo.state; assert 'sqlalchemy' not in sys.modules, sorted(m for m in sys.modules if 'sqlalchemy' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)

