"""The user's state database (``$ZOO_HOME/state.db``, SQLite through the stdlib ``sqlite3``), separate from registry.db.

Holds what this machine did and measured: benchmark runs, exported artifacts, installed models with the
hash each file was verified against, hashes pinned on first use, and install-time validation verdicts.

It is always a local SQLite file, so it does without SQLAlchemy (the catalog keeps it): importing SQLAlchemy and
its ORM cost every ``zoo download`` about 0.4 s. The schema is the one SQLAlchemy created, DDL text included, so
existing state.db files read and write unchanged: JSON columns hold ``json.dumps`` text, BOOLEAN columns 0 or 1.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zoo import config
from zoo.errors import StateError

# Column definitions exactly as SQLAlchemy wrote them; the DDL below is joined the way it joined them.
_TABLES: dict[str, tuple[str, ...]] = {
    "bench_runs": ("id INTEGER NOT NULL", "at VARCHAR(32) NOT NULL", "model VARCHAR(256) NOT NULL", "synthetic BOOLEAN NOT NULL",
                   "engine VARCHAR NOT NULL", "batch INTEGER NOT NULL", "seq INTEGER NOT NULL", "threads INTEGER NOT NULL",
                   "runs INTEGER NOT NULL", "p50_ms DOUBLE NOT NULL", "p90_ms DOUBLE NOT NULL", "items_per_s DOUBLE NOT NULL",
                   "speedup_vs_ort_fp32 DOUBLE", "extra JSON NOT NULL", "PRIMARY KEY (id)"),
    # A derived file (an exported ONNX graph) with the hash it was written with; one row per path.
    "artifacts": ("id INTEGER NOT NULL", "at VARCHAR(32) NOT NULL", "model VARCHAR(256) NOT NULL", "kind VARCHAR NOT NULL",
                  "path VARCHAR(4096) NOT NULL", "sha256 VARCHAR(64) NOT NULL", "size INTEGER NOT NULL", "PRIMARY KEY (id)"),
    # One installed catalog model: where it came from, at which commit, when it was last verified.
    "installs": ("name VARCHAR(256) NOT NULL", "repo VARCHAR(512) NOT NULL", "revision VARCHAR(256) NOT NULL", '"commit" VARCHAR(64)',
                 "source VARCHAR(1024) NOT NULL", "installed_at VARCHAR(32) NOT NULL", "verified_at VARCHAR(32) NOT NULL",
                 "files JSON NOT NULL", "PRIMARY KEY (name)"),
    # A sha256 trusted on first use for a file the catalog has no hash for (repo, commit or revision, path).
    "pins": ("repo VARCHAR(512) NOT NULL", "revision VARCHAR(256) NOT NULL", "path VARCHAR(1024) NOT NULL", "sha256 VARCHAR(64) NOT NULL",
             "size INTEGER NOT NULL", "source VARCHAR(1024) NOT NULL", "pinned_at VARCHAR(32) NOT NULL", "PRIMARY KEY (repo, revision, path)"),
    # An install-time check of the engine: outputs against the reference and latency against onnxruntime.
    "validations": ("id INTEGER NOT NULL", "at VARCHAR(32) NOT NULL", "model VARCHAR(256) NOT NULL", "record JSON NOT NULL",
                    "PRIMARY KEY (id)"),
}
_INDEXES = {"bench_runs": ("at", "model"), "artifacts": ("model", "path"), "validations": ("model", "at")}
# Each table, then its indexes: the order SQLAlchemy created them in, so a fresh file has the same page layout.
_DDL = "".join(f"CREATE TABLE IF NOT EXISTS {t} (\n\t" + ", \n\t".join(cols) + "\n);\n"
               + "".join(f"CREATE INDEX IF NOT EXISTS ix_{t}_{c} ON {t} ({c});\n" for c in _INDEXES.get(t, ())) for t, cols in _TABLES.items())
# Table -> column name -> declared type (id included: it is written by SQLite and never returned).
_COLUMNS = {t: {c.split()[0].strip('"'): c.split()[1] for c in cols if not c.startswith("PRIMARY KEY")} for t, cols in _TABLES.items()}
_DECODE: dict[str, Callable[[Any], Any]] = {"JSON": json.loads, "BOOLEAN": bool}  # declared type -> reader of the stored value

_created: set[Path] = set()  # databases whose tables this process has seen or made (the fact, never a connection)
# Several processes may install at once: a transaction waits up to LOCK_WAIT s for SQLite's lock instead of failing at
# once, in tries of BUSY_TRY s (SQLite sleeps in C inside a try, deaf to Ctrl-C; between tries Python hears it).
LOCK_WAIT, BUSY_TRY = 60.0, 0.2


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def path(home: Path | None = None) -> Path:
    """The state database of ``home`` (default: ``$ZOO_HOME`` read now)."""
    return (Path(home) if home is not None else config.zoo_home()) / "state.db"


@contextmanager
def _guard(db: Path) -> Iterator[None]:
    """A damaged or unusable state.db becomes one ``StateError`` naming the file. It is never deleted or rewritten
    here: it holds the hashes pinned on first use (security state)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        reason = str(exc).partition("\n")[0]
        raise StateError(f"the state database {db} is unusable ({reason})", _hint(db, exc)) from None


def _hint(db: Path, exc: sqlite3.DatabaseError | None = None) -> str:
    """What to do about ``exc`` (None: the file or a row of it is damaged), by SQLite's error code. Only a damaged
    file is worth moving aside (its pins are lost): a lock, an unwritable home or a full disk leave it intact (a
    failed write is rolled back)."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc):
        return f"another zoo process held it for over {LOCK_WAIT:g} s; retry when it is done"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "readonly" in str(exc):
        return "it is on a read-only file system or not ours to write: set ZOO_HOME or --home to a writable directory"
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
        return "the disk is full or failing; free some space (or check the disk) and rerun: the file was not changed"
    return (f"move it aside (mv {db} {db}.broken) and rerun: a fresh one is created, installed models are re-verified, and "
            "the hashes pinned on first use are forgotten (keep the old file)")


def _create(con: sqlite3.Connection, db: Path) -> None:
    """Create the missing tables once per process, in one transaction (few fsyncs on a fresh home). IF NOT EXISTS under
    the write lock makes a concurrent creation by another process harmless; a complete (even read-only) file is only read."""
    if db in _created:
        return
    if _TABLES.keys() - {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}:
        con.executescript(f"BEGIN EXCLUSIVE;\n{_DDL}COMMIT;")
    _created.add(db)


def _begin(con: sqlite3.Connection, db: Path, write: bool) -> None:
    """Open the transaction holding every lock it will need (a write: EXCLUSIVE; a read: SHARED, taken by reading the
    schema), so nothing after it waits; a busy database is tried again until ``LOCK_WAIT`` s have passed."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            _create(con, db)
            con.execute("BEGIN EXCLUSIVE" if write else "BEGIN")
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            if not str(exc).startswith("database is locked") or time.monotonic() > deadline:
                raise


@contextmanager
def _transaction(home: Path | None, write: bool = False) -> Iterator[sqlite3.Connection]:
    """One transaction on ``home``'s state database, on a connection of its own that is closed after (rolling back on
    an error); database errors become ``StateError``. A state.db that is not a regular file (a directory, a FIFO, a
    link to /dev/null) is refused before SQLite opens it: pins written there would be lost, or the open would block."""
    db = path(home)
    with _guard(db):
        db.parent.mkdir(parents=True, exist_ok=True)
        if db.exists() and not db.is_file():
            raise StateError(f"the state database {db} is unusable (not a regular file)", _hint(db))
        con = sqlite3.connect(db, timeout=BUSY_TRY, isolation_level=None)
        try:
            _begin(con, db, write)
            yield con
            con.execute("COMMIT")
        finally:
            con.close()


def _insert(con: sqlite3.Connection, table: str, row: dict[str, Any], conflict: str = "") -> None:
    """Insert ``row`` (JSON columns encoded), then ``conflict`` (an ON CONFLICT clause) if given."""
    types = _COLUMNS[table]
    if unknown := row.keys() - types.keys():
        raise ValueError(f"{table} has no column {', '.join(sorted(unknown))}")
    names = ", ".join(f'"{k}"' for k in row)
    values = [json.dumps(v) if types[k] == "JSON" else v for k, v in row.items()]
    con.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(row))}){conflict}", values)


def _select(table: str, where: dict[str, Any], order: str, home: Path | None, limit: int = -1) -> list[dict[str, Any]]:
    """Rows of ``table`` equal to ``where``, as dicts of this zoo's columns (not ``id``; columns a newer zoo added are
    not read) with JSON and BOOLEAN columns decoded; a value that does not decode is a ``StateError``."""
    names = [k for k in _COLUMNS[table] if k != "id"]
    # Qualified: SQLite reads an unknown "name" as the string 'name', so a table missing a column would match or return that.
    columns = ", ".join(f'{table}."{k}"' for k in names)
    clause = " WHERE " + " AND ".join(f'{table}."{k}" = ?' for k in where) if where else ""
    with _transaction(home) as con:
        rows = con.execute(f"SELECT {columns} FROM {table}{clause} ORDER BY {order} LIMIT ?", [*where.values(), limit]).fetchall()
    decode = {k: _DECODE.get(_COLUMNS[table][k]) for k in names}
    try:
        return [{k: _decoded(decode[k], v) for k, v in zip(names, row, strict=True)} for row in rows]
    except (ValueError, TypeError, RecursionError):  # JSON text that is not JSON, a number where text belongs
        db = path(home)
        raise StateError(f"the state database {db} is unusable (a row of {table} does not decode)", _hint(db)) from None


def _decoded(decode: Callable[[Any], Any] | None, value: Any) -> Any:
    return value if value is None or decode is None else decode(value)


def _latest(table: str, model: str | None, limit: int, home: Path | None = None) -> list[dict[str, Any]]:
    """The newest rows of a per-model history table (bench runs, validations), newest first."""
    return _select(table, {"model": model} if model else {}, "id DESC", home, limit)


def record_bench(model: str, synthetic: bool, results: list[Any], extra: dict[str, Any] | None = None, home: Path | None = None) -> None:
    at = now()
    with _transaction(home, write=True) as con:
        for r in results:
            _insert(con, "bench_runs", {"at": at, "model": model, "synthetic": synthetic, "extra": extra or {}, **r.to_dict()})


def bench_history(model: str | None = None, limit: int = 50, home: Path | None = None) -> list[dict[str, Any]]:
    return _latest("bench_runs", model, limit, home)


def record_artifact(model: str, kind: str, path: str, sha256: str, size: int, home: Path | None = None) -> None:
    """Record (or refresh) a derived file; one row per path."""
    with _transaction(home, write=True) as con:
        con.execute("DELETE FROM artifacts WHERE path = ?", (path,))
        _insert(con, "artifacts", {"at": now(), "model": model, "kind": kind, "path": path, "sha256": sha256, "size": size})


def forget_artifact(path: str, home: Path | None = None) -> None:
    """Drop the record of a derived file that is gone (a data file a re-export removed)."""
    with _transaction(home, write=True) as con:
        con.execute("DELETE FROM artifacts WHERE path = ?", (path,))


def artifacts(model: str | None = None, home: Path | None = None) -> list[dict[str, Any]]:
    return _select("artifacts", {"model": model} if model else {}, "id", home)


def record_install(record: dict[str, Any], home: Path | None = None) -> None:
    """Insert or replace the install row for ``record['name']`` (keys as the ``installs`` columns)."""
    update = ", ".join(f'"{k}" = excluded."{k}"' for k in record if k != "name")
    with _transaction(home, write=True) as con:
        _insert(con, "installs", {"files": [], **record}, f' ON CONFLICT ("name") DO {f"UPDATE SET {update}" if update else "NOTHING"}')


def touch_verified(name: str, files: list[dict[str, Any]] | None = None, home: Path | None = None) -> None:
    sets = {"verified_at": now()} | ({"files": json.dumps(files)} if files is not None else {})
    with _transaction(home, write=True) as con:
        con.execute(f"UPDATE installs SET {', '.join(f'{k} = ?' for k in sets)} WHERE name = ?", [*sets.values(), name])


def forget_install(name: str, home: Path | None = None) -> None:
    with _transaction(home, write=True) as con:
        con.execute("DELETE FROM installs WHERE name = ?", (name,))


def installs(name: str | None = None, home: Path | None = None) -> list[dict[str, Any]]:
    return _select("installs", {"name": name} if name else {}, "name", home)


def pinned(repo: str, revision: str, path: str, home: Path | None = None) -> dict[str, Any] | None:
    rows = _select("pins", {"repo": repo, "revision": revision, "path": path}, "repo", home)
    return rows[0] if rows else None


def pin(repo: str, revision: str, path: str, sha256: str, size: int, source: str, home: Path | None = None) -> None:
    """Pin a hash on first use; an existing pin is never overwritten (a mismatch is the caller's error)."""
    row = {"repo": repo, "revision": revision, "path": path, "sha256": sha256, "size": size, "source": source, "pinned_at": now()}
    with _transaction(home, write=True) as con:
        _insert(con, "pins", row, " ON CONFLICT DO NOTHING")


def record_validation(model: str, record: dict[str, Any], home: Path | None = None) -> None:
    with _transaction(home, write=True) as con:
        _insert(con, "validations", {"at": now(), "model": model, "record": record})


def validations(model: str | None = None, limit: int = 20, home: Path | None = None) -> list[dict[str, Any]]:
    return _latest("validations", model, limit, home)
