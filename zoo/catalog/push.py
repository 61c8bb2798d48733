"""``zoo catalog push``: create, migrate and fill a catalog on a database server, in one transaction.

The server keeps every pushed stub's text (``stub_texts``); the catalog tables are derived from those texts
exactly as ``zoo catalog build`` derives ``registry.db`` from ``stubs/``. A push merges its stubs into the
stored ones (same name: replaced), validates the whole set (names and aliases unique, parents present),
and rewrites the derived tables; a push that changes nothing writes nothing, so pushing twice is a no-op.

Migration is SQLAlchemy's own ``create_all``/``drop_all``, not Alembic: the tables hold derived data only,
so a database of an older ``schema_version`` is migrated by dropping its derived tables and rebuilding
them from the stored stub texts under the new schema; hand-written Alembic revisions would restate, per
release, what ``column(...)`` on the cards already says once. A newer database is refused.

Concurrent pushes (two machines) are serialized on PostgreSQL by a transaction-scoped advisory lock taken
first; the second push then reads the first one's committed stubs, so both land and readers only ever see
one push's complete result (SQLite serializes writers by itself).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo.catalog import source
from zoo.errors import CatalogError

LOCK = 0x6F62657274  # pg_advisory_xact_lock key ("obert")


@dataclass(frozen=True)
class PushResult:
    url: str  # password masked
    models: int
    added: tuple[str, ...]
    updated: tuple[str, ...]
    unchanged: int
    schema_version: int
    migrated_from: int | None  # the older schema version this push migrated from
    revision: int  # counts the pushes that changed the catalog

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stub_files(dirs: list[Path]) -> dict[str, str]:
    """Stub name -> TOML text from every ``*.toml`` in ``dirs``; a name in two directories is an error."""
    found: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for directory in dirs:
        for path in sorted(Path(directory).glob("*.toml")):
            if path.stem in found:
                raise CatalogError(f"stub {path.stem!r} is in both {origin[path.stem]} and {directory}", "keep one of them")
            found[path.stem], origin[path.stem] = path.read_text(encoding="utf-8"), directory
    return found


def validated(texts: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """``load_stubs`` over the whole set: every stub valid, names and aliases unique, parents present."""
    from zoo.catalog.schema import load_stubs

    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        for name, text in texts.items():
            (Path(tmp) / f"{name}.toml").write_text(text, encoding="utf-8")
        return load_stubs(Path(tmp))


def _found_version(session: Any) -> int | None:
    from sqlalchemy import inspect, select

    from zoo.catalog.models import Meta

    tables = set(inspect(session.connection()).get_table_names())
    if "meta" not in tables:
        if "models" in tables:
            raise CatalogError("the database has a 'models' table but no zoo catalog 'meta' table", "push to an empty database")
        return None
    found = session.scalar(select(Meta.value).where(Meta.key == "schema_version"))
    return int(found) if found and found.isdigit() else 0


def _meta(session: Any) -> dict[str, str]:
    from sqlalchemy import select

    from zoo.catalog.models import Meta

    return {m.key: m.value for m in session.scalars(select(Meta))}


def _stored(session: Any) -> dict[str, str]:
    from sqlalchemy import inspect, select

    from zoo.catalog.models import StubText

    if not inspect(session.connection()).has_table(StubText.__tablename__):
        return {}
    return {s.name: s.text for s in session.scalars(select(StubText))}


def _rewrite(session: Any, texts: dict[str, str], revision: int, migrate: bool) -> None:
    from sqlalchemy import delete

    from zoo.catalog.build import add_models, digest
    from zoo.catalog.fields import SCHEMA_VERSION
    from zoo.catalog.models import Base, Meta, Pushed, StubText

    stubs = validated(texts)
    conn = session.connection()
    if migrate:
        Base.metadata.drop_all(conn)
    Base.metadata.create_all(conn)
    Pushed.metadata.create_all(conn)
    for table in reversed(Base.metadata.sorted_tables):
        session.execute(delete(table))
    session.execute(delete(StubText))
    add_models(session, stubs)
    session.add_all(StubText(name=n, text=t) for n, t in sorted(texts.items()))
    stamp = digest((f"{n}.toml", t.encode()) for n, t in sorted(texts.items()))
    session.add_all([Meta(key="schema_version", value=str(SCHEMA_VERSION)), Meta(key="stubs_digest", value=stamp),
                     Meta(key="revision", value=str(revision))])


def push(url: str, texts: dict[str, str]) -> PushResult:
    """Merge stubs (name -> TOML text) into the catalog at ``url`` in one transaction; see the module docstring."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from zoo.catalog.fields import SCHEMA_VERSION

    engine = source.engine(url, write=True)
    try:
        with Session(engine) as session, session.begin():
            if engine.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK})
            found = _found_version(session)
            if found is not None and found > SCHEMA_VERSION:
                raise CatalogError(f"catalog at {source.masked(url)} has schema version {found}, this zoo writes {SCHEMA_VERSION}",
                                   "upgrade obert-zoo (pip install -U obert-zoo) before pushing to it")
            migrate = found is not None and found < SCHEMA_VERSION
            stored = _stored(session) if found is not None else {}
            merged = {**stored, **texts}
            meta = _meta(session) if found is not None else {}
            revision = int(meta.get("revision", "0") or 0)
            if merged != stored or migrate or found is None:
                revision += 1
                _rewrite(session, merged, revision, migrate)
            added = tuple(sorted(set(texts) - set(stored)))
            updated = tuple(sorted(n for n in texts if n in stored and stored[n] != texts[n]))
            return PushResult(source.masked(url), len(merged), added, updated, len(texts) - len(added) - len(updated),
                              SCHEMA_VERSION, found if migrate else None, revision)
    except SQLAlchemyError as exc:
        raise CatalogError(f"cannot push to the catalog at {source.masked(url)}: {source.reason(exc, url)}",
                           "check the URL, the server and your rights to create tables") from None
