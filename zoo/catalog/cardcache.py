"""The cards of a SQLite catalog file, kept as JSON in ``$ZOO_HOME/catalog/cards/`` so that reading the catalog
again (every ``zoo list``, ``show``, ``download``) needs neither SQLAlchemy nor the ORM: importing them costs
~0.6 s on a slow CPU, the whole command otherwise ~0.2 s.

A kept file is named for the catalog file's path and the digest of its bytes (with the schema version and the
shape of the cards), so a rebuilt, edited, replaced or upgraded catalog is read afresh even when its size and
modification time are what they were (a copy that keeps times, a filesystem with whole-second times, a reused
inode); hashing a catalog costs well under a millisecond per MB. A catalog whose write-ahead log holds changes
its bytes do not show, or whose URL means another file than its path reads (``%``, ``#``), is never kept.

A home's first read of a catalog takes its cards from the seed ``zoo catalog build`` wrote beside it
(``registry.db`` -> ``registry.cards.json``, shipped with the package), when the seed names the identity the
catalog has now (its bytes' digest, the schema version, the shape of the cards): a catalog rebuilt or edited
without its seed is read afresh. Whoever can write the seed can write the catalog, so it is trusted as much: no more.
A seed is only read when that holds: it belongs to the catalog file's owner and no one else may write it who may not
write the catalog (a shared or sticky directory lets anyone create a seed beside a catalog that has none).

Anything unreadable, malformed or unwritable (a read-only home) is ignored: the catalog is read as usual. A kept
file or seed is decoded and checked as the catalog's rows are (``decoder.cards``), so one of the wrong shape or
holding what no card may (hand-edited, truncated, crafted, from another zoo) is read past, never shown: the catalog
itself is read (and refused, when its rows are no better), and a kept file rewritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from zoo.catalog import decoder
from zoo.catalog.cards import AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.catalog.fields import SCHEMA_VERSION

FORMAT = 2  # bump when the JSON below changes shape or meaning; field names and types are part of the key anyway
SQLITE_MAGIC = b"SQLite format 3\0"
_SHAPE = repr([(c.__name__, [(f.name, f.type) for f in dataclasses.fields(c)])
               for c in (ModelCard, AliasInfo, FileSpec, MetricValue, RecipeInfo)])


@dataclasses.dataclass(frozen=True)
class Kept:
    """Where the cards of a catalog file as it is now are kept, the most bytes a sound file there (or seed) could
    hold, the identity of those cards, and where its seed would be."""

    file: Path
    limit: int
    identity: str
    seed: Path
    writers: tuple[int, int]  # the catalog file's owner and its group/other write bits: who may write its seed


def seed_file(db: Path) -> Path:
    """Where ``zoo catalog build`` leaves the cards of the catalog file ``db``: ``registry.db`` -> ``registry.cards.json``."""
    return db.with_suffix(".cards.json")


def _open_regular(file: Path) -> BinaryIO | None:
    """``file`` open for reading when it is a regular file (never blocking on a FIFO or reading a device), else None."""
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return open(fd, "rb")


def _content(db: Path) -> tuple[str, os.stat_result] | None:
    """The sha256 of ``db``'s bytes and its status, or None when ``db`` is not a plain SQLite file (a FIFO, a
    device, a directory, not SQLite at all) or has a write-ahead log with changes its bytes do not show yet."""
    with contextlib.suppress(OSError):
        if os.stat(f"{db}-wal").st_size > 0:
            return None
    f = _open_regular(db)
    if f is None:
        return None
    with f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return None
        f.seek(0)
        return hashlib.file_digest(f, "sha256").hexdigest(), os.fstat(f.fileno())


def _identity(db: Path) -> tuple[Path, str, os.stat_result] | None:
    """``db`` resolved, the identity of its cards as it is now (sha256 over its bytes' digest, the schema version,
    ``FORMAT`` and the cards' shape) and its status; None when it has none (see ``_content``)."""
    try:
        real = db.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (before Python 3.13)
        return None
    content = _content(real)
    if content is None:
        return None
    digest, st = content
    return real, hashlib.sha256(f"{digest}:{SCHEMA_VERSION}:{FORMAT}:{_SHAPE}".encode()).hexdigest(), st


def path(home: Path, db: Path) -> Kept | None:
    """Where the cards of ``db`` as it is now are kept, or None when they cannot be kept (see ``_content``)."""
    found = _identity(db)
    if found is None:
        return None
    real, identity, st = found
    name = f"{hashlib.sha256(os.fsencode(real)).hexdigest()[:16]}-{identity[:16]}.json"
    return Kept(Path(home) / "catalog" / "cards" / name, 8 * st.st_size + (1 << 20), identity, seed_file(real),
                (st.st_uid, st.st_mode & 0o022))


def _cards_in(file: Path, limit: int, unwrap: Callable[[Any], Any], writers: tuple[int, int] | None = None) -> list[ModelCard] | None:
    """The cards in the JSON ``file`` (``unwrap`` takes their list out of it), or None when it is not a regular file of
    at most ``limit`` bytes (given ``writers``, owned by that uid and writable by no group or other the bits do not
    name), or what it holds is not cards."""
    f = _open_regular(file)
    if f is None:
        return None
    try:
        with f:
            st = os.fstat(f.fileno())
            if st.st_size > limit or (writers is not None and (st.st_uid != writers[0] or st.st_mode & 0o022 & ~writers[1])):
                return None
            data = json.loads(f.read(limit + 1))
        return decoder.cards(unwrap(data))
    except (OSError, ValueError, RecursionError):  # ValueError: not JSON, not UTF-8, or not cards (decoder.Malformed)
        return None


def load(kept: Kept) -> list[ModelCard] | None:
    """The cards kept in ``kept.file``, or None when there are none (or they cannot be used)."""
    return _cards_in(kept.file, kept.limit, lambda data: data)


def seeded(kept: Kept) -> list[ModelCard] | None:
    """The cards in the catalog's seed when it names ``kept.identity``, or None (no seed, another state's, unusable)."""

    def cards(data: Any) -> Any:
        if type(data) is not dict or data.keys() != {"identity", "cards"} or data["identity"] != kept.identity:
            raise decoder.Malformed("not the seed of this catalog as it is now")
        return data["cards"]
    return _cards_in(kept.seed, kept.limit, cards, kept.writers)


def _replace(file: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``file`` whole through a fresh temporary file beside it (never a name someone else could plant first)."""
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _plain(cards: list[ModelCard]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(c) for c in cards]


def seed(db: Path, cards: list[ModelCard]) -> None:
    """Write ``cards``, those of the catalog file ``db`` as it is now, beside it (``seed_file``) with its identity and
    its permissions; nothing when it has no identity (see ``_content``)."""
    found = _identity(db)
    if found is not None:
        real, identity, st = found
        _replace(seed_file(real), json.dumps({"identity": identity, "cards": _plain(cards)}).encode(), stat.S_IMODE(st.st_mode))


def save(kept: Kept, cards: list[ModelCard]) -> None:
    """Keep ``cards`` in ``kept.file``, replacing what was kept of an earlier state of the same catalog path."""
    directory = kept.file.parent
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps(_plain(cards)).encode()
        if len(data) > kept.limit:
            return  # load would refuse it
        _replace(kept.file, data)
        for old in directory.glob(f"{kept.file.name.split('-')[0]}-*.json"):
            if old != kept.file:
                old.unlink(missing_ok=True)
