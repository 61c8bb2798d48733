"""Read the catalog: resolve names and aliases, filter, search, suggest. Returns ``ModelCard``s."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import config
from zoo.catalog import cardcache, snapshot, source, user
from zoo.catalog.cards import HUB_URL, ModelCard
from zoo.catalog.fields import SCHEMA_VERSION, shown
from zoo.config import Settings
from zoo.errors import CatalogError, UnknownModelError

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

    def matches(self, c: ModelCard) -> bool:
        return ((self.layers is None or c.layers == self.layers)
                and (self.sparsity is None or c.sparsity == float(self.sparsity))
                and (self.pattern is None or c.pattern == self.pattern)
                and (self.quantized is None or c.quantized == self.quantized)
                and (self.task is None or c.task == self.task)
                and (self.min_f1 is None or any(m.name == "f1" and m.value >= self.min_f1 for m in c.metrics)))


def catalog_url(settings: Settings | None = None) -> str:
    """The configured catalog URL (``settings.catalog_url``, default ``ZOO_CATALOG_URL``), else the bundled registry."""
    url = (settings or Settings.from_env()).catalog_url
    if url:
        return url
    path = config.bundled_registry()
    if not path.exists():
        raise CatalogError(f"bundled catalog not found at {path}", "reinstall obert-zoo or run `zoo catalog build`")
    return f"sqlite:///{path}"


def check_version(url: str, found: str | None) -> None:
    """Refuse a catalog built for another schema: its columns may not mean what this zoo's cards expect."""
    if found == str(SCHEMA_VERSION):
        return
    number = found if isinstance(found, str) and found.isascii() and found.isdigit() and len(found) <= 9 else None
    if number is not None and int(number) > SCHEMA_VERSION:
        hint = "upgrade obert-zoo (pip install -U obert-zoo)"
    else:
        hint = "rebuild it with `zoo catalog build`" if source.is_file(url) else "migrate it with `zoo catalog push URL`"
    said = number or ("none" if found is None else shown(found))
    raise CatalogError(f"catalog at {source.masked(url)} has schema version {said}, this zoo reads {SCHEMA_VERSION}", hint)


def _read(url: str, home: Path | None = None) -> list[ModelCard]:
    """Every card of the catalog at ``url``; a server catalog also refreshes the snapshot in ``home``."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from zoo.catalog.models import Meta, read_cards

    try:
        with Session(source.engine(url)) as session:
            check_version(url, session.scalar(select(Meta.value).where(Meta.key == "schema_version")))
            cards = read_cards(session, source.masked(url))
            if home is not None and (url, home) not in _kept:
                snapshot.keep(url, session.connection(), home)
                _kept.add((url, home))
            return cards
    except SQLAlchemyError as exc:
        hint = None
        if home is not None and snapshot.path(home).exists():
            hint = f"is the server up? `zoo --offline ...` (or ZOO_OFFLINE=1) reads the snapshot in {snapshot.path(home).parent}"
        raise source.unreachable(exc, url, hint) from None


_kept: set[tuple[str, Path]] = set()  # server catalogs whose snapshot this process already checked


def _read_file(url: str, home: Path) -> list[ModelCard]:
    """Every card of a file catalog: those kept in ``home`` for it as it is now, else its seed's when the seed is of it
    as it is now (a fresh home reading the bundled catalog), else read afresh; the latter two are kept.

    Cards read afresh are kept only when the file is the same after the read as before it: a catalog replaced
    while it was read must not leave its old cards under its new identity."""
    db = source.sqlite_file(url)
    kept = cardcache.path(home, db) if db is not None else None
    if kept is None:
        return _read(url)
    cards = cardcache.load(kept)
    if cards is not None:
        return cards
    cards = cardcache.seeded(kept)
    if cards is None:
        cards = _read(url)
        if cardcache.path(home, db) != kept:
            return cards
    cardcache.save(kept, cards)
    return cards


def _cards(settings: Settings | None = None) -> list[ModelCard]:
    """Every entry: the catalog's (a server's, its snapshot offline, or a file's) and the user's own stubs'."""
    s = settings or Settings.from_env()
    url = catalog_url(s)
    if source.is_file(url):
        cards = _read_file(url, s.home)
    elif s.offline:
        cards = _read_file(snapshot.use(url, s.home), s.home)
    else:
        cards = _read(url, s.home)
    mine_url = user.compiled(s.home)
    if mine_url is None:
        return cards
    mine = _read_file(mine_url, s.home)
    taken = _lookup_table(cards)
    clashes = {k: name for k, name in _lookup_table(mine).items() if k in taken}
    if clashes:
        raise user.clash(s.home, clashes, source.masked(url))
    return sorted(cards + mine, key=lambda c: c.name)


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


def list_models(filters: Filters | None = None, sort: str = "name", settings: Settings | None = None) -> list[ModelCard]:
    """Catalog entries matching every given filter, sorted by ``sort`` (name, f1, latency or size)."""
    f = filters or Filters()
    return _sort([c for c in _cards(settings) if f.matches(c)], sort)


def _normalize(name: str) -> str:
    text = name.strip()
    for prefix in (f"{HUB_URL}/", "hf.co/", "huggingface.co/"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    return text.rstrip("/").lower()


def _lookup_table(cards: list[ModelCard]) -> dict[str, str]:
    """Lower-case names and aliases -> canonical names (a name wins over another entry's alias)."""
    return {a.name.lower(): c.name for c in cards for a in c.aliases} | {c.name.lower(): c.name for c in cards}


def suggestions(name: str, cards: list[ModelCard] | None = None, n: int = 5, settings: Settings | None = None) -> list[str]:
    """Canonical names close to ``name`` (matched against names and aliases)."""
    table = _lookup_table(cards if cards is not None else _cards(settings))
    close = difflib.get_close_matches(_normalize(name), list(table), n=n * 3, cutoff=0.6)
    return list(dict.fromkeys(table[c] for c in close))[:n]


def resolve(name_or_alias: str, settings: Settings | None = None) -> ModelCard:
    """The entry named ``name_or_alias`` (canonical name, Hub repo id or URL, SparseZoo stub); case-insensitive."""
    cards = _cards(settings)
    key = _normalize(name_or_alias)
    by_name = {c.name: c for c in cards}
    found = by_name.get(_lookup_table(cards).get(key, ""))
    if found is not None:
        return found
    raise UnknownModelError(name_or_alias, suggestions(name_or_alias, cards))


def search(text: str, filters: Filters | None = None, sort: str = "name", settings: Settings | None = None) -> list[ModelCard]:
    """Entries whose name, alias, description, task, dataset or tag contains every word of ``text``."""
    words = text.lower().split()

    def haystack(c: ModelCard) -> str:
        return " ".join([c.name, c.description, c.task, c.dataset, c.repo, *c.tags, *(a.name for a in c.aliases)]).lower()

    return [c for c in list_models(filters, sort, settings) if all(w in haystack(c) for w in words)]
