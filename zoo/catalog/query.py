"""Read the catalog: resolve names and aliases, filter, search, suggest. Returns ``ModelCard``s."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from zoo import config
from zoo.catalog.cards import HUB_URL, AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.errors import CatalogError, UnknownModelError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SORT_KEYS = ("name", "f1", "latency", "size")


@dataclass(frozen=True)
class Filters:
    """What ``zoo list`` narrows by; None means "any"."""

    layers: int | None = None
    sparsity: float | None = None
    pattern: str | None = None
    quantized: bool | None = None
    task: str | None = None
    min_f1: float | None = None


def catalog_url() -> str:
    """The configured catalog URL, or the bundled registry opened read-only."""
    url = config.catalog_url()
    if url:
        return url
    path = config.bundled_registry()
    if not path.exists():
        raise CatalogError(f"bundled catalog not found at {path}", "reinstall obert-zoo or run `zoo catalog build`")
    return f"sqlite:///file:{path}?mode=ro&uri=true"


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    from sqlalchemy import create_engine

    return create_engine(url)


def _card(m: Any) -> ModelCard:
    from zoo.catalog.models import card_values

    return ModelCard(
        **card_values(ModelCard, m),
        tags=tuple(t.name for t in m.tags),
        aliases=tuple(AliasInfo(**card_values(AliasInfo, a)) for a in m.aliases),
        files=tuple(FileSpec(repo=m.repo, revision=m.revision, **card_values(FileSpec, f)) for f in m.files),
        metrics=tuple(MetricValue(**card_values(MetricValue, x)) for x in m.metrics),
        recipe=RecipeInfo(**card_values(RecipeInfo, m.recipe)) if m.recipe else None,
    )


def check_version(url: str, found: str | None) -> None:
    """Refuse a catalog built for another schema: its columns may not mean what this zoo's cards expect."""
    from zoo.catalog.models import SCHEMA_VERSION

    if found == str(SCHEMA_VERSION):
        return
    newer = found is not None and found.isdigit() and int(found) > SCHEMA_VERSION
    hint = "upgrade obert-zoo (pip install -U obert-zoo)" if newer else "rebuild it with `zoo catalog build`"
    raise CatalogError(f"catalog at {url} has schema version {found or 'none'}, this zoo reads {SCHEMA_VERSION}", hint)


def _cards(where: list[Any] | None = None) -> list[ModelCard]:
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session, selectinload

    from zoo.catalog.models import File, Meta, Metric, Model, Recipe

    stmt = (
        select(Model)
        .options(
            selectinload(Model.tags), selectinload(Model.aliases),
            selectinload(Model.files).selectinload(File.size_source),
            selectinload(Model.metrics).selectinload(Metric.source),
            selectinload(Model.recipe).selectinload(Recipe.source),
        )
        .order_by(Model.name)
    )
    for clause in where or []:
        stmt = stmt.where(clause)
    url = catalog_url()
    try:
        with Session(_engine(url)) as session:
            check_version(url, session.scalar(select(Meta.value).where(Meta.key == "schema_version")))
            return [_card(m) for m in session.scalars(stmt)]
    except SQLAlchemyError as exc:
        reason = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
        hint = "check ZOO_CATALOG_URL or rebuild with `zoo catalog build`"
        raise CatalogError(f"cannot read the catalog at {url}: {reason}", hint) from None


def _sort(cards: list[ModelCard], sort: str) -> list[ModelCard]:
    if sort not in SORT_KEYS:
        raise CatalogError(f"unknown sort key {sort!r}", f"use one of: {', '.join(SORT_KEYS)}")
    inf = float("inf")
    keys = {
        "name": lambda c: (_natural(c.name),),
        "f1": lambda c: (c.f1 is None, -(c.f1 or 0.0), _natural(c.name)),
        "latency": lambda c: (c.relative_cost, _natural(c.name)),
        "size": lambda c: (c.checkpoint_size_mb is None, c.checkpoint_size_mb or inf, _natural(c.name)),
    }
    return sorted(cards, key=keys[sort])


def _natural(name: str) -> tuple[Any, ...]:
    """``obert-3l`` before ``obert-12l``: digits compare as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def list_models(filters: Filters | None = None, sort: str = "name") -> list[ModelCard]:
    """Catalog entries matching every given filter, sorted by ``sort`` (name, f1, latency or size)."""
    from sqlalchemy import and_, exists, select

    from zoo.catalog.models import Metric, Model

    f = filters or Filters()
    where: list[Any] = []
    if f.layers is not None:
        where.append(Model.layers == f.layers)
    if f.sparsity is not None:
        where.append(Model.sparsity == float(f.sparsity))
    if f.pattern is not None:
        where.append(Model.pattern == f.pattern)
    if f.quantized is not None:
        where.append(Model.quantization != "none" if f.quantized else Model.quantization == "none")
    if f.task is not None:
        where.append(Model.task == f.task)
    if f.min_f1 is not None:
        where.append(exists(select(Metric.id).where(and_(Metric.model_id == Model.id, Metric.name == "f1", Metric.value >= f.min_f1))))
    return _sort(_cards(where), sort)


def _normalize(name: str) -> str:
    text = name.strip()
    for prefix in (f"{HUB_URL}/", "hf.co/", "huggingface.co/"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    return text.rstrip("/").lower()


def _lookup_table(cards: list[ModelCard]) -> dict[str, str]:
    table: dict[str, str] = {}
    for c in cards:
        table[c.name.lower()] = c.name
        for a in c.aliases:
            table[a.name.lower()] = c.name
    return table


def suggestions(name: str, cards: list[ModelCard] | None = None, n: int = 5) -> list[str]:
    """Canonical names close to ``name`` (matched against names and aliases)."""
    table = _lookup_table(cards if cards is not None else _cards())
    close = difflib.get_close_matches(_normalize(name), list(table), n=n * 3, cutoff=0.6)
    return list(dict.fromkeys(table[c] for c in close))[:n]


def resolve(name_or_alias: str) -> ModelCard:
    """The entry named ``name_or_alias`` (canonical name, Hub repo id or URL, SparseZoo stub); case-insensitive."""
    from sqlalchemy import func

    from zoo.catalog.models import Alias, Model

    key = _normalize(name_or_alias)
    found = _cards([func.lower(Model.name) == key]) or _cards([Model.aliases.any(Alias.name_lower == key)])
    if found:
        return found[0]
    raise UnknownModelError(name_or_alias, suggestions(name_or_alias))


def search(text: str, filters: Filters | None = None, sort: str = "name") -> list[ModelCard]:
    """Entries whose name, alias, description, task, dataset or tag contains every word of ``text``."""
    words = text.lower().split()

    def haystack(c: ModelCard) -> str:
        return " ".join([c.name, c.description, c.task, c.dataset, c.repo, *c.tags, *(a.name for a in c.aliases)]).lower()

    return [c for c in list_models(filters, sort) if all(w in haystack(c) for w in words)]
