"""The cards of a SQLite catalog file, kept as JSON in ``$ZOO_HOME/catalog/cards/`` so that reading the catalog
again (every ``zoo list``, ``show``, ``download``) needs neither SQLAlchemy nor the ORM: importing them costs
~0.6 s on a slow CPU, the whole command otherwise ~0.2 s.

A kept file is named for the catalog file's path and its identity (inode, size, modification time) and the
schema version, so a rebuilt, replaced or upgraded catalog is read afresh; one file per catalog path is kept.
Anything unreadable, malformed or unwritable (a read-only home) is ignored: the catalog is read as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from zoo.catalog.cards import AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.catalog.fields import SCHEMA_VERSION

FORMAT = 1  # bump when the JSON below changes shape


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def path(home: Path, db: Path) -> Path | None:
    """Where the cards of ``db`` as it is now are kept, or None when ``db`` cannot be looked at."""
    try:
        real = db.resolve()
        st = real.stat()
    except OSError:
        return None
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{SCHEMA_VERSION}:{FORMAT}"
    return Path(home) / "catalog" / "cards" / f"{_digest(str(real))}-{_digest(identity)}.json"


def _card(d: dict[str, Any]) -> ModelCard:
    recipe = d.pop("recipe")
    return ModelCard(**d | {
        "tags": tuple(d["tags"]),
        "aliases": tuple(AliasInfo(**a) for a in d["aliases"]),
        "files": tuple(FileSpec(**f) for f in d["files"]),
        "metrics": tuple(MetricValue(**m) for m in d["metrics"]),
        "recipe": RecipeInfo(**recipe) if recipe is not None else None,
    })


def load(home: Path, db: Path) -> list[ModelCard] | None:
    """The kept cards of ``db``, or None when there are none (or they cannot be used)."""
    file = path(home, db)
    if file is None:
        return None
    try:
        return [_card(d) for d in json.loads(file.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def save(home: Path, db: Path, cards: list[ModelCard]) -> None:
    """Keep ``cards`` as read from ``db``, replacing what was kept of an earlier state of the same file."""
    file = path(home, db)
    if file is None:
        return
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps([dataclasses.asdict(c) for c in cards]), encoding="utf-8")
        os.replace(tmp, file)
        for old in file.parent.glob(f"{file.name.split('-')[0]}-*.json"):
            if old != file:
                old.unlink(missing_ok=True)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
