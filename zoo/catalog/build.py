"""Compile ``stubs/*.toml`` into a SQLite catalog, deterministically (same stubs, same bytes), and its cards beside it
(``cardcache.seed``: a home's first read of the catalog then needs no SQLAlchemy)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from zoo.catalog import cardcache
from zoo.catalog.cards import AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.catalog.fields import SCHEMA_VERSION, described
from zoo.catalog.models import Alias, Base, File, Meta, Metric, Model, Recipe, Source, Tag, read_cards
from zoo.catalog.schema import load_stubs

T = TypeVar("T")


def stubs_digest(directory: Path) -> str:
    """sha256 over every stub's name and bytes, in file-name order."""
    return digest((path.name, path.read_bytes()) for path in sorted(directory.glob("*.toml")))


def digest(files: Iterable[tuple[str, bytes]]) -> str:
    """sha256 over (file name, bytes) pairs, in the order given."""
    h = hashlib.sha256()
    for name, data in files:
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


class _Sources:
    """Deduplicates citation texts into ``Source`` rows."""

    def __init__(self) -> None:
        self.rows: dict[str, Source] = {}

    def __call__(self, text: str) -> Source:
        if text not in self.rows:
            self.rows[text] = Source(text=text)
        return self.rows[text]


def _row(table: type, card: type, record: dict[str, Any], cite: _Sources, **derived: Any) -> Any:
    """A ``table`` row holding ``card``'s described fields as read from a parsed stub record, plus ``derived``."""
    values = {}
    for d in described(card):
        if d.column.stub is not None:
            value = d.from_stub(record)
            values[d.name] = cite(value) if d.column.cite and value is not None else value
    return table(**values, **derived)


def _stages(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's modifier groups (every table that is not a described field), unset parameters dropped."""
    own = {d.column.stub for d in described(RecipeInfo)}
    return {k: {p: v for p, v in group.items() if v is not None} for k, group in recipe.items() if k not in own and group is not None}


def _model_row(file: str, stub: dict[str, Any], cite: _Sources) -> Model:
    model = _row(Model, ModelCard, stub, cite, stub_file=file)
    model.tags = [Tag(name=t) for t in dict.fromkeys(stub["tags"])]
    model.aliases = [_row(Alias, AliasInfo, a, cite, name_lower=a["name"].lower()) for a in stub["aliases"]]
    model.files = [_row(File, FileSpec, f, cite) for f in stub["files"]]
    model.metrics = [_row(Metric, MetricValue, m, cite) for m in stub["metrics"]]
    if stub["recipe"]:
        model.recipe = _row(Recipe, RecipeInfo, stub["recipe"], cite, stages=_stages(stub["recipe"]))
    return model


def add_models(session: Any, stubs: list[tuple[str, dict[str, Any]]]) -> None:
    """Add the rows of validated stubs (``load_stubs``' output) to ``session``, citations stored once."""
    cite = _Sources()
    session.add_all(_model_row(file, stub, cite) for file, stub in stubs)


def _create_schema(engine: Any) -> None:
    """Create tables, then their indexes in name order (``create_all`` orders indexes by set iteration)."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            conn.execute(CreateTable(table))
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(CreateIndex(index))


def build(stubs_dir: Path, out: Path) -> int:
    """Validate every stub and write the catalog to ``out`` atomically, then its seed (``cardcache.seed_file(out)``);
    returns the number of models."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    stubs = load_stubs(stubs_dir)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{tmp}")
    try:
        _create_schema(engine)
        with Session(engine) as session:
            add_models(session, stubs)
            session.add_all([Meta(key="schema_version", value=str(SCHEMA_VERSION)), Meta(key="stubs_digest", value=stubs_digest(stubs_dir))])
            session.commit()
    finally:
        engine.dispose()
    with sqlite3.connect(tmp) as conn:
        conn.execute("VACUUM")
    conn.close()
    cards = _reading(f"sqlite:///{tmp}", lambda session: read_cards(session, str(out)))
    os.replace(tmp, out)
    cardcache.seed(out, cards)
    return len(stubs)


def _reading(url: str, read: Callable[[Any], T]) -> T:
    """What ``read`` makes of a session on the catalog at ``url``."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return read(session)
    finally:
        engine.dispose()


def built_meta(url: str) -> dict[str, str]:
    """The build facts of the catalog at ``url`` (``schema_version``, ``stubs_digest``)."""
    from sqlalchemy import select

    return _reading(url, lambda session: {row.key: row.value for row in session.scalars(select(Meta))})


def is_fresh(db: Path, stubs_dir: Path) -> bool:
    """True when ``db`` was built, by this zoo's schema, from exactly the stubs now in ``stubs_dir`` (a file that is
    no catalog, or whose meta table is unreadable, was not)."""
    from sqlalchemy.exc import SQLAlchemyError

    if not db.is_file():
        return False
    try:
        meta = built_meta(f"sqlite:///{db}")
    except SQLAlchemyError:
        return False
    return meta.get("schema_version") == str(SCHEMA_VERSION) and meta.get("stubs_digest") == stubs_digest(stubs_dir)
