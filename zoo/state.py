"""The user's state database (``$ZOO_HOME/state.db``, SQLite through SQLAlchemy), separate from registry.db.

Holds what this machine measured: benchmark runs now; installs and verifications as the fetch stage lands.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, String, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from zoo import config


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


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    engine = create_engine(url)
    StateBase.metadata.create_all(engine)
    return engine


def engine() -> Engine:
    home = config.zoo_home()
    home.mkdir(parents=True, exist_ok=True)
    return _engine(f"sqlite:///{home / 'state.db'}")


def record_bench(model: str, synthetic: bool, results: list[Any], extra: dict[str, Any] | None = None) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with Session(engine()) as session:
        session.add_all(BenchRun(at=now, model=model, synthetic=synthetic, extra=extra or {}, **r.to_dict()) for r in results)
        session.commit()


def bench_history(model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    stmt = select(BenchRun).order_by(BenchRun.id.desc()).limit(limit)
    if model:
        stmt = stmt.where(BenchRun.model == model)
    with Session(engine()) as session:
        return [{c.name: getattr(r, c.name) for c in BenchRun.__table__.columns if c.name != "id"} for r in session.scalars(stmt)]


def record_artifact(model: str, kind: str, path: str, sha256: str, size: int) -> None:
    """Record (or refresh) a derived file; one row per path."""
    from sqlalchemy import delete

    now = datetime.now(UTC).isoformat(timespec="seconds")
    with Session(engine()) as session:
        session.execute(delete(Artifact).where(Artifact.path == path))
        session.add(Artifact(at=now, model=model, kind=kind, path=path, sha256=sha256, size=size))
        session.commit()


def artifacts(model: str | None = None) -> list[dict[str, Any]]:
    stmt = select(Artifact).order_by(Artifact.id)
    if model:
        stmt = stmt.where(Artifact.model == model)
    with Session(engine()) as session:
        return [{c.name: getattr(a, c.name) for c in Artifact.__table__.columns if c.name != "id"} for a in session.scalars(stmt)]
