"""The cards of a SQLite catalog file, kept as JSON in ``$ZOO_HOME/catalog/cards/`` so that reading the catalog
again (every ``zoo list``, ``show``, ``download``) needs neither SQLAlchemy nor the ORM: importing them costs
~0.6 s on a slow CPU, the whole command otherwise ~0.2 s.

A kept file is named for the catalog file's path and the digest of its bytes (with the schema version and the
shape of the cards), so a rebuilt, edited, replaced or upgraded catalog is read afresh even when its size and
modification time are what they were (a copy that keeps times, a filesystem with whole-second times, a reused
inode); hashing a catalog costs well under a millisecond per MB. A catalog whose write-ahead log holds changes
its bytes do not show, or whose URL means another file than its path reads (``%``, ``#``), is never kept.

Anything unreadable, malformed or unwritable (a read-only home) is ignored: the catalog is read as usual. A kept
file is decoded against the cards' field types, so one of the wrong shape (hand-edited, truncated, from another
zoo) is read afresh and rewritten, never shown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import stat
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from zoo.catalog.cards import AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.catalog.fields import SCHEMA_VERSION

FORMAT = 2  # bump when the JSON below changes shape or meaning; field names and types are part of the key anyway
SQLITE_MAGIC = b"SQLite format 3\0"
_SHAPE = repr([(c.__name__, [(f.name, f.type) for f in dataclasses.fields(c)])
               for c in (ModelCard, AliasInfo, FileSpec, MetricValue, RecipeInfo)])


@dataclasses.dataclass(frozen=True)
class Kept:
    """Where the cards of a catalog file as it is now are kept, and the most bytes a sound file there could hold."""

    file: Path
    limit: int


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


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


def _content(db: Path) -> tuple[str, int] | None:
    """The sha256 of ``db``'s bytes and their number, or None when ``db`` is not a plain SQLite file (a FIFO, a
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
        return hashlib.file_digest(f, "sha256").hexdigest(), os.fstat(f.fileno()).st_size


def path(home: Path, db: Path) -> Kept | None:
    """Where the cards of ``db`` as it is now are kept, or None when they cannot be kept (see ``_content``)."""
    try:
        real = db.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (before Python 3.13)
        return None
    content = _content(real)
    if content is None:
        return None
    digest, size = content
    identity = f"{digest}:{SCHEMA_VERSION}:{FORMAT}:{_SHAPE}".encode()
    return Kept(Path(home) / "catalog" / "cards" / f"{_digest(os.fsencode(real))}-{_digest(identity)}.json", 8 * size + (1 << 20))


class _Malformed(ValueError):
    """A kept value that is not of the type its card field holds."""


def _of(kind: type, value: Any) -> Any:
    if type(value) is not kind:
        raise _Malformed(f"{kind.__name__} expected, got {type(value).__name__}")
    return value


_SCALARS: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (int, float), bool: (bool,), Any: ()}


def _scalar(tp: Any) -> tuple[type, ...] | None:
    """The JSON types a value of scalar type ``tp`` (``str``, ``float | None`` ...) may have, () for any; else None."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        inner = [_scalar(a) for a in typing.get_args(tp) if a is not type(None)]
        return None if None in inner else () if () in inner else (type(None), *(t for i in inner for t in i))  # type: ignore[union-attr]
    return _SCALARS.get(tp)


@functools.cache
def _decoder(tp: Any) -> Callable[[Any], Any]:
    """A function that turns the JSON of a ``tp`` (a card, or a field's non-scalar type) back into one, or raises
    ``_Malformed``: a field of the wrong type would pass the dataclass and fail (or mislead) much later."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):  # "X | None" of a non-scalar X
        (inner,) = (a for a in args if a is not type(None))
        decode = _decoder(inner)
        return lambda v: None if v is None else decode(v)
    if origin is tuple:  # tuple[X, ...]
        allowed = _scalar(args[0])
        if allowed is not None:
            return lambda v: tuple(x if type(x) in allowed else _of(allowed[0], x) for x in _of(list, v))
        item = _decoder(args[0])
        return lambda v: tuple(item(x) for x in _of(list, v))
    if origin is dict:  # dict[str, Any]: JSON's keys are strings, its values anything
        return lambda v: _of(dict, v)
    if not dataclasses.is_dataclass(tp):
        raise TypeError(f"no JSON decoder for card field type {tp!r}")
    hints = typing.get_type_hints(tp)
    names = {f.name for f in dataclasses.fields(tp)}
    simple = [(n, a) for n in names if (a := _scalar(hints[n])) is not None and a]
    nested = [(n, _decoder(hints[n])) for n in names if _scalar(hints[n]) is None]

    def card(v: Any) -> Any:
        if type(v) is not dict or v.keys() != names:
            raise _Malformed(f"{tp.__name__} expected")
        for name, allowed in simple:
            if type(v[name]) not in allowed:
                raise _Malformed(f"{tp.__name__}.{name}: {type(v[name]).__name__}")
        for name, decode in nested:
            v[name] = decode(v[name])
        return tp(**v)
    return card


def load(kept: Kept) -> list[ModelCard] | None:
    """The cards kept in ``kept.file``, or None when there are none (or they cannot be used)."""
    f = _open_regular(kept.file)
    if f is None:
        return None
    try:
        with f:
            if os.fstat(f.fileno()).st_size > kept.limit:
                return None
            data = json.loads(f.read(kept.limit + 1))
        card = _decoder(ModelCard)
        return [card(c) for c in _of(list, data)]
    except (OSError, ValueError, RecursionError):  # ValueError: not JSON, not UTF-8, or _Malformed
        return None


def save(kept: Kept, cards: list[ModelCard]) -> None:
    """Keep ``cards`` in ``kept.file``, replacing what was kept of an earlier state of the same catalog path."""
    directory = kept.file.parent
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps([dataclasses.asdict(c) for c in cards]).encode()
        if len(data) > kept.limit:
            return  # load would refuse it
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".cards-", suffix=".tmp")
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, kept.file)
        for old in directory.glob(f"{kept.file.name.split('-')[0]}-*.json"):
            if old != kept.file:
                old.unlink(missing_ok=True)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
