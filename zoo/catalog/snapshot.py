"""The last catalog read from a server, kept in ``$ZOO_HOME/catalog/snapshot.db`` for ``--offline`` work.

Each successful read from a server catalog compares the server's ``meta`` rows (schema version, push
revision, stubs digest) with the snapshot's and, when they differ, copies every catalog table into a new
SQLite file that replaces the old one atomically. Offline, the snapshot is read instead of the server and
a notice says so (on the ``zoo.catalog`` logger, which prints to stderr when nothing else is configured).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.catalog import source
from zoo.errors import CatalogError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger("zoo.catalog")
OF, TAKEN = "snapshot_of", "snapshot_taken"  # extra meta rows of a snapshot, not compared with the server's
_noticed: set[str] = set()


def path(home: Path) -> Path:
    return Path(home) / "catalog" / "snapshot.db"


def _meta(conn: Connection) -> dict[str, str]:
    from sqlalchemy import select

    from zoo.catalog.models import Meta

    return {m.key: m.value for m in conn.execute(select(Meta)) if m.key not in (OF, TAKEN)}


def _snapshot_meta(file: Path) -> dict[str, str]:
    import sqlite3

    if not file.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as conn:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        conn.close()
        return rows
    except sqlite3.Error:
        return {}


def keep(url: str, conn: Connection, home: Path) -> bool:
    """Refresh the snapshot of ``url`` from ``conn`` when the server changed since; True when it was rewritten."""
    from sqlalchemy import create_engine, select

    from zoo.catalog.models import Base, Meta

    file = path(home)
    server = _meta(conn)
    have = _snapshot_meta(file)
    if have.get(OF) == source.masked(url) and {k: v for k, v in have.items() if k not in (OF, TAKEN)} == server:
        return False
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    out = create_engine(f"sqlite:///{tmp}")
    try:
        with out.begin() as dst:
            Base.metadata.create_all(dst)
            for table in Base.metadata.sorted_tables:
                rows = [dict(r._mapping) for r in conn.execute(select(table))]
                if rows:
                    dst.execute(table.insert(), rows)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
            dst.execute(Meta.__table__.insert(), [{"key": OF, "value": source.masked(url)}, {"key": TAKEN, "value": stamp}])
    finally:
        out.dispose()
    os.replace(tmp, file)
    return True


def use(url: str, home: Path) -> str:
    """The snapshot's URL to read instead of ``url`` (offline); says so once per process."""
    file = path(home)
    meta = _snapshot_meta(file)
    if not meta:
        raise CatalogError(f"offline, and no snapshot of the catalog at {source.masked(url)} in {file.parent}",
                           "run any `zoo list` once online: it keeps a snapshot for offline use")
    if meta.get(OF) != source.masked(url):
        raise CatalogError(f"offline, and the snapshot in {file.parent} is of {meta.get(OF)}, not {source.masked(url)}",
                           "run `zoo list` once online with this ZOO_CATALOG_URL")
    if url not in _noticed:
        _noticed.add(url)
        log.warning(f"catalog: offline, using the snapshot of {source.masked(url)} taken {meta.get(TAKEN)} ({file})")
    return f"sqlite:///{file}"
