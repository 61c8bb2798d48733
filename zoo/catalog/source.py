"""Where a catalog lives: any SQLAlchemy URL (the bundled ``registry.db``, a team's PostgreSQL, another database).

A URL is opened with a driver we ship as an extra (``postgresql://`` means psycopg 3, ``pip install
'obert-zoo[postgres]'``), a SQLite file is opened read-only for reading (a mistyped path says "no such file"
instead of creating an empty catalog), and every URL a user may see has its password masked. libpq
settings (``PGPASSFILE``/``~/.pgpass``, ``PGSSLMODE``, ``PGSSLROOTCERT`` ...) reach the server through psycopg
untouched: a URL without a password is completed from ``.pgpass`` as ``psql`` would.
"""

from __future__ import annotations

import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from zoo.catalog.fields import printable
from zoo.errors import CatalogError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}  # SQLAlchemy's default is psycopg2
EXTRAS = {"psycopg": "obert-zoo[postgres]", "psycopg2": "obert-zoo[postgres] (and a postgresql+psycopg:// URL)"}
UNREADABLE_HINT = "check ZOO_CATALOG_URL or rebuild with `zoo catalog build`"


def _parse(url: str) -> URL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise CatalogError(f"catalog URL {masked(url)!r} is not a database URL",
                           "use a SQLAlchemy URL such as postgresql://user@host/db or sqlite:////path/registry.db") from None


def masked(url: str) -> str:
    """``url`` with its password shown as ``***`` (SQLAlchemy's ``render_as_string(hide_password=True)``)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL may still hold a secret: show only its scheme
        return f"{url.split(':', 1)[0]}://<unparsable URL>" if "://" in url else "<unparsable URL>"


def is_file(url: str) -> bool:
    """True for a SQLite file catalog (local: no server to be down, no snapshot needed)."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme.replace("+", "").replace("_", "").isalnum():  # the backend is the scheme's part before "+"
        return scheme.split("+", 1)[0].lower() == "sqlite"
    return _parse(url).get_backend_name() == "sqlite"


def sqlite_file(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` catalog URL (no driver or query options), else None."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix) or any(c in url for c in "?%#"):
        return None  # options, or a path SQLAlchemy decodes ('%XX') or parses ('#'): the file opened may not be this one
    return Path(url[len(prefix):])


def driver_url(url: str, *, write: bool = False) -> URL:
    """The URL SQLAlchemy is given: our PostgreSQL driver; a SQLite file read-only unless ``write``."""
    parsed = _parse(url)
    if parsed.drivername in DRIVERS:
        parsed = parsed.set(drivername=DRIVERS[parsed.drivername])
    db = parsed.database
    if parsed.get_backend_name() == "sqlite" and not write and db and db != ":memory:" and not db.startswith("file:"):
        parsed = parsed.set(database="file:" + quote(db, safe="/", errors="surrogateescape"), query={**parsed.query, "mode": "ro", "uri": "true"})
    return parsed


@lru_cache(maxsize=8)
def engine(url: str, write: bool = False) -> Engine:
    """One engine per URL and mode for the life of the process: pooled connections to a server; a SQLite file is
    opened afresh for each session (microseconds), so a catalog rebuilt or replaced since is what the next read sees."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.pool import NullPool

    _regular(url)
    target = driver_url(url, write=write)
    server = target.get_backend_name() != "sqlite"
    args = {"connect_timeout": 10} if target.get_backend_name() == "postgresql" else {"timeout": 60}
    try:
        return create_engine(target, connect_args=args, **({"pool_pre_ping": True} if server else {"poolclass": NullPool}))
    except ModuleNotFoundError as exc:
        module = (exc.name or "the driver").split(".")[0]
        extra = EXTRAS.get(module, module)
        raise CatalogError(f"the catalog at {masked(url)} needs the '{module}' database driver, which is not installed",
                           f"pip install '{extra}'") from None
    except NoSuchModuleError:
        raise CatalogError(f"catalog URL {masked(url)}: SQLAlchemy has no dialect {target.drivername!r}",
                           "use postgresql://, sqlite:/// or another SQLAlchemy dialect") from None
    except ArgumentError as exc:
        raise CatalogError(f"catalog URL {masked(url)}: {str(exc).splitlines()[0]}") from None


def _regular(url: str) -> None:
    """Refuse a SQLite catalog path that exists but is no regular file before SQLite opens it: opening a FIFO with
    no writer blocks forever, a device may never end."""
    parsed = _parse(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return
    try:
        mode = os.stat(db).st_mode
    except (OSError, ValueError):
        return  # missing or unnameable: SQLite says so
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise CatalogError(f"cannot read the catalog at {masked(url)}: it is {kind}, not a file", UNREADABLE_HINT)


def reason(exc: BaseException, url: str) -> str:
    """The first line of a database error, the password (if any) blanked out, made printable and cut short (a driver
    quotes the bytes it could not decode; a server says what it likes)."""
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split("\n")[0].split()) or type(cause).__name__
    secret = _parse(url).password
    return printable(text.replace(str(secret), "***") if secret else text)


def unreachable(exc: BaseException, url: str, hint: str | None = None) -> CatalogError:
    """A one-line error for a catalog that could not be read (server down, refused login, no such file)."""
    return CatalogError(f"cannot read the catalog at {masked(url)}: {reason(exc, url)}",
                        hint or UNREADABLE_HINT)
