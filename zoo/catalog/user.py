"""Your own entries: stubs in ``$ZOO_HOME/stubs/`` (written by ``zoo catalog add``), merged with the catalog.

They are compiled, like ``stubs/``, into a SQLite file (``$ZOO_HOME/catalog/user.db``, rebuilt whenever the
stubs change), so every query runs unchanged against both. A user entry whose name or alias is already in
the catalog is an error, never a silent override.
"""

from __future__ import annotations

from pathlib import Path

from zoo.errors import CatalogError, StubError


def stubs_dir(home: Path) -> Path:
    return Path(home) / "stubs"


def database(home: Path) -> Path:
    return Path(home) / "catalog" / "user.db"


def compiled(home: Path) -> str | None:
    """The URL of the compiled user stubs (built now when stale), or None when there are none."""
    directory = stubs_dir(home)
    if not any(directory.glob("*.toml")):
        return None  # the common case: no builder (schema, TOML parser) imported at all
    from zoo.catalog.build import build, is_fresh

    db = database(home)
    if not is_fresh(db, directory):
        db.parent.mkdir(parents=True, exist_ok=True)
        try:
            build(directory, db)
        except StubError as exc:
            raise StubError(str(directory / exc.file), exc.field, exc.problem) from None
    return f"sqlite:///{db}"


def clash(home: Path, names: dict[str, str], where: str) -> CatalogError:
    """The error for user stubs whose names (lower-case name -> stub name) are also in the catalog at ``where``."""
    taken, stub = next(iter(names.items()))
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return CatalogError(f"{stubs_dir(home) / (stub + '.toml')}: name {taken!r} is already in the catalog at {where}{more}",
                        "a user entry must not shadow a catalog entry: add it again under another --name, or delete the stub")
