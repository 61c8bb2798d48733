"""The user's state database (``$ZOO_HOME/state.db``, SQLite through SQLAlchemy), separate from registry.db.

Holds what this machine did and measured: benchmark runs, exported artifacts, installed models with the
hash each file was verified against, hashes pinned on first use, and install-time validation verdicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, String, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from zoo import config
from zoo.errors import StateError


class StateBase(DeclarativeBase):
    pass


class BenchRun(StateBase):
    __tablename__ = "bench_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    synthetic: Mapped[bool]
    engine: Mapped[str]
    batch: Mapped[int]
    seq: Mapped[int]
    threads: Mapped[int]
    runs: Mapped[int]
    p50_ms: Mapped[float]
    p90_ms: Mapped[float]
    items_per_s: Mapped[float]
    speedup_vs_ort_fp32: Mapped[float | None]
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Artifact(StateBase):
    """A derived file (an exported ONNX graph) with the hash it was written with."""

    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(256), index=True)
    kind: Mapped[str]
    path: Mapped[str] = mapped_column(String(4096), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]


class Install(StateBase):
    """One installed catalog model: where it came from, at which commit, when it was last verified."""

    __tablename__ = "installs"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    repo: Mapped[str] = mapped_column(String(512))
    revision: Mapped[str] = mapped_column(String(256))
    commit: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1024))
    installed_at: Mapped[str] = mapped_column(String(32))
    verified_at: Mapped[str] = mapped_column(String(32))
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class Pin(StateBase):
    """A sha256 trusted on first use for a file the catalog has no hash for (repo, commit or revision, path)."""

    __tablename__ = "pins"
    repo: Mapped[str] = mapped_column(String(512), primary_key=True)
    revision: Mapped[str] = mapped_column(String(256), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]
    source: Mapped[str] = mapped_column(String(1024))
    pinned_at: Mapped[str] = mapped_column(String(32))


class Validation(StateBase):
    """An install-time check of the engine: outputs against the reference and latency against onnxruntime."""

    __tablename__ = "validations"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    record: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _row(obj: Any) -> dict[str, Any]:
    return {c.name: getattr(obj, c.name) for c in type(obj).__table__.columns if c.name != "id"}


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    # Several processes may install at once: wait for SQLite's write lock instead of failing at once.
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url, connect_args={"timeout": 60})
    for attempt in range(5):
        try:
            StateBase.metadata.create_all(engine)
            break
        except OperationalError:  # another process created a table between our check and our CREATE
            if attempt == 4:
                raise
    return engine


def path(home: Path | None = None) -> Path:
    """The state database of ``home`` (default: ``$ZOO_HOME`` read now)."""
    return (Path(home) if home is not None else config.zoo_home()) / "state.db"


def engine(home: Path | None = None) -> Engine:
    """The state database of ``home`` (default: ``$ZOO_HOME`` read now), created on first use."""
    db = path(home)
    with _guard(db):
        db.parent.mkdir(parents=True, exist_ok=True)
        return _engine(f"sqlite:///{db}")


@contextmanager
def _guard(db: Path) -> Iterator[None]:
    """A damaged or unusable state.db becomes one ``StateError`` naming the file. It is never deleted or rewritten
    here: it holds the hashes pinned on first use (security state)."""
    from sqlalchemy.exc import DatabaseError

    try:
        yield
    except DatabaseError as exc:
        reason = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
        raise StateError(f"the state database {db} is unusable ({reason})",
                         "another zoo process holds it; retry when it is done" if "locked" in reason else
                         "it is on a read-only file system or not ours to write: set ZOO_HOME or --home to a writable "
                         "directory" if "readonly" in reason or "read-only" in reason else
                         f"move it aside (mv {db} {db}.broken) and rerun: a fresh one is created, installed models are "
                         "re-verified, and the hashes pinned on first use are forgotten (keep the old file)") from None


@contextmanager
def _session(home: Path | None) -> Iterator[Session]:
    """A session on ``home``'s state database; database errors become ``StateError``."""
    with _guard(path(home)), Session(engine(home)) as db:
        yield db


def _latest(table: Any, model: str | None, limit: int, home: Path | None = None) -> list[dict[str, Any]]:
    """The newest rows of a per-model history table (bench runs, validations), newest first."""
    stmt = select(table).order_by(table.id.desc()).limit(limit)
    if model:
        stmt = stmt.where(table.model == model)
    with _session(home) as session:
        return [_row(r) for r in session.scalars(stmt)]


def record_bench(model: str, synthetic: bool, results: list[Any], extra: dict[str, Any] | None = None, home: Path | None = None) -> None:
    at = now()
    with _session(home) as session:
        session.add_all(BenchRun(at=at, model=model, synthetic=synthetic, extra=extra or {}, **r.to_dict()) for r in results)
        session.commit()


def bench_history(model: str | None = None, limit: int = 50, home: Path | None = None) -> list[dict[str, Any]]:
    return _latest(BenchRun, model, limit, home)


def record_artifact(model: str, kind: str, path: str, sha256: str, size: int, home: Path | None = None) -> None:
    """Record (or refresh) a derived file; one row per path."""
    from sqlalchemy import delete

    with _session(home) as session:
        session.execute(delete(Artifact).where(Artifact.path == path))
        session.add(Artifact(at=now(), model=model, kind=kind, path=path, sha256=sha256, size=size))
        session.commit()


def artifacts(model: str | None = None, home: Path | None = None) -> list[dict[str, Any]]:
    stmt = select(Artifact).order_by(Artifact.id)
    if model:
        stmt = stmt.where(Artifact.model == model)
    with _session(home) as session:
        return [_row(a) for a in session.scalars(stmt)]


def record_install(record: dict[str, Any], home: Path | None = None) -> None:
    """Insert or replace the install row for ``record['name']`` (keys as in ``Install``)."""
    from sqlalchemy.dialects.sqlite import insert

    stmt = insert(Install).values(**record)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={k: v for k, v in record.items() if k != "name"})
    with _session(home) as session:
        session.execute(stmt)
        session.commit()


def touch_verified(name: str, files: list[dict[str, Any]] | None = None, home: Path | None = None) -> None:
    with _session(home) as session:
        row = session.get(Install, name)
        if row is not None:
            row.verified_at = now()
            if files is not None:
                row.files = files
            session.commit()


def forget_install(name: str, home: Path | None = None) -> None:
    from sqlalchemy import delete

    with _session(home) as session:
        session.execute(delete(Install).where(Install.name == name))
        session.commit()


def installs(name: str | None = None, home: Path | None = None) -> list[dict[str, Any]]:
    stmt = select(Install).order_by(Install.name)
    if name:
        stmt = stmt.where(Install.name == name)
    with _session(home) as session:
        return [_row(r) for r in session.scalars(stmt)]


def pinned(repo: str, revision: str, path: str, home: Path | None = None) -> dict[str, Any] | None:
    with _session(home) as session:
        row = session.get(Pin, (repo, revision, path))
        return _row(row) if row else None


def pin(repo: str, revision: str, path: str, sha256: str, size: int, source: str, home: Path | None = None) -> None:
    """Pin a hash on first use; an existing pin is never overwritten (a mismatch is the caller's error)."""
    from sqlalchemy.dialects.sqlite import insert

    stmt = insert(Pin).values(repo=repo, revision=revision, path=path, sha256=sha256, size=size, source=source, pinned_at=now())
    with _session(home) as session:
        session.execute(stmt.on_conflict_do_nothing())
        session.commit()


def record_validation(model: str, record: dict[str, Any], home: Path | None = None) -> None:
    with _session(home) as session:
        session.add(Validation(at=now(), model=model, record=record))
        session.commit()


def validations(model: str | None = None, limit: int = 20, home: Path | None = None) -> list[dict[str, Any]]:
    return _latest(Validation, model, limit, home)
