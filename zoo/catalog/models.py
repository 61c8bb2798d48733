"""SQLAlchemy 2.0 ORM tables of the catalog (``registry.db``): models, aliases, files, metrics, recipes, sources.

The columns that hold card fields are not written here: ``columns_of(Card)`` derives them from the card's
one description (``cards.py``); a table adds only its keys, relationships and derived columns.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from sqlalchemy import JSON, Boolean, Double, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import SAWarning
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, declared_attr, mapped_column, relationship, selectinload

from zoo.catalog import decoder
from zoo.catalog.cards import AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.catalog.fields import Described, described, printable
from zoo.errors import CatalogError

FIRST, LAST = -1, 1 << 10  # ``sort_order`` of a table's own columns: keys first, card columns by position, then these

_SQL_TYPES: dict[type, Any] = {int: Integer, float: Double, bool: Boolean, dict: JSON}


class Base(DeclarativeBase):
    pass


def columns_of(card: type) -> type:
    """A declarative mixin with one column per described field of ``card``, in card order (``sort_order`` = position).

    A cited field ``x`` becomes ``x_id`` (a key into ``sources``) and a relationship ``x`` to its ``Source``.
    """
    attrs: dict[str, Any] = {}
    for position, d in enumerate(described(card)):
        c = d.column
        if c.cite:
            attrs[f"{d.name}_id"] = mapped_column(ForeignKey("sources.id"), nullable=d.optional, sort_order=position)
            attrs[d.name] = declared_attr(lambda cls: relationship(Source))
        else:
            kind = String(c.length) if d.type is str else _SQL_TYPES[d.type]()
            attrs[d.name] = mapped_column(kind, nullable=d.optional, index=c.index, unique=c.unique, sort_order=position)
    return type(f"{card.__name__}Columns", (), attrs)


def card_values(card: type, row: Any) -> dict[str, Any]:
    """``card``'s described fields read back from an ORM row (citations as their text)."""
    return {d.name: _value(d, getattr(row, d.name)) for d in described(card)}


def _value(d: Described, value: Any) -> Any:
    if d.column.cite:
        return value.text if value is not None else None
    return value


class Source(Base):
    """A citation: where a number or recipe comes from. Shared by metrics and recipes."""

    __tablename__ = "sources"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String, unique=True)


class Model(columns_of(ModelCard), Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=FIRST)
    stub_file: Mapped[str] = mapped_column(sort_order=LAST)

    aliases: Mapped[list[Alias]] = relationship(back_populates="model", cascade="all, delete-orphan", order_by="Alias.id")
    files: Mapped[list[File]] = relationship(back_populates="model", cascade="all, delete-orphan", order_by="File.id")
    metrics: Mapped[list[Metric]] = relationship(back_populates="model", cascade="all, delete-orphan", order_by="Metric.id")
    tags: Mapped[list[Tag]] = relationship(back_populates="model", cascade="all, delete-orphan", order_by="Tag.id")
    recipe: Mapped[Recipe | None] = relationship(back_populates="model", cascade="all, delete-orphan")


class Alias(columns_of(AliasInfo), Base):
    __tablename__ = "aliases"
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=FIRST)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True, sort_order=FIRST)
    name_lower: Mapped[str] = mapped_column(String(256), unique=True, index=True, sort_order=1)  # right after ``name``
    model: Mapped[Model] = relationship(back_populates="aliases")


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("model_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[Model] = relationship(back_populates="tags")


class File(columns_of(FileSpec), Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("model_id", "path"),)
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=FIRST)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True, sort_order=FIRST)
    model: Mapped[Model] = relationship(back_populates="files")


class Metric(columns_of(MetricValue), Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("model_id", "name", "dataset"),)
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=FIRST)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True, sort_order=FIRST)
    model: Mapped[Model] = relationship(back_populates="metrics")


class Recipe(columns_of(RecipeInfo), Base):
    """The training recipe; ``stages`` maps a modifier group to its parameters."""

    __tablename__ = "recipes"
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=FIRST)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), unique=True, sort_order=FIRST)
    model: Mapped[Model] = relationship(back_populates="recipe")


class Meta(Base):
    """Build facts: schema version and the digest of the stubs the database was built from."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str]


def _plain(m: Model) -> dict[str, Any]:
    """The card of the row ``m`` as plain data (``dataclasses.asdict``'s shape), for ``decoder.cards`` to check."""
    return {
        **card_values(ModelCard, m),
        "tags": [t.name for t in m.tags],
        "aliases": [card_values(AliasInfo, a) for a in m.aliases],
        "files": [{"repo": m.repo, "revision": m.revision, **card_values(FileSpec, f)} for f in m.files],
        "metrics": [card_values(MetricValue, x) for x in m.metrics],
        "recipe": card_values(RecipeInfo, m.recipe) if m.recipe else None,
    }


def _rows(session: Session) -> list[dict[str, Any]]:
    """Every model of the catalog as plain data, by name. Raises ``decoder.Malformed`` for what SQLAlchemy cannot
    decode (``recipes.stages`` that is no JSON) or map (two recipes of one model: it would warn and take either)."""
    statement = (
        select(Model)
        .options(
            selectinload(Model.tags), selectinload(Model.aliases),
            selectinload(Model.files).selectinload(File.size_source),
            selectinload(Model.metrics).selectinload(Metric.source),
            selectinload(Model.recipe).selectinload(Recipe.source),
        )
        .order_by(Model.name)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SAWarning)
            return [_plain(m) for m in session.scalars(statement)]
    except RecursionError:
        raise decoder.Malformed("recipes.stages is nested too deeply") from None
    except (ValueError, SAWarning) as exc:
        said = printable(" ".join(str(exc).split()))
        raise decoder.Malformed(f"recipes.stages is not JSON ({said})" if isinstance(exc, json.JSONDecodeError)
                                else f"rows that make no card ({said})") from None


def read_cards(session: Session, where: str) -> list[ModelCard]:
    """Every card of the catalog ``session`` reads (``where``, as the user knows it), by name: what ``zoo catalog
    build`` seeds, what a query reads. Rows that are not cards of this zoo (hand-edited, crafted, another program's)
    raise ``CatalogError`` naming the entry, the field and what is wrong; no card of such a catalog is returned."""
    try:
        return decoder.cards(_rows(session))
    except decoder.Malformed as exc:
        raise CatalogError(f"catalog at {where}: {exc}",
                           "rebuild it (`zoo catalog build`) or push it again (`zoo catalog push`), or check ZOO_CATALOG_URL") from None


class Pushed(DeclarativeBase):
    """Tables only a pushed catalog (``zoo catalog push``) has; not part of ``registry.db``."""


class StubText(Pushed):
    """Each entry's stub as pushed: the source every push rebuilds the catalog tables from (and migrates with)."""

    __tablename__ = "stub_texts"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
