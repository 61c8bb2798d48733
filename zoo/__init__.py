"""obert-zoo: the oBERT sparse BERT family as a catalog, a verified downloader and a sparse CPU runtime.

The public API mirrors the CLI: ``zoo.list_models``, ``zoo.search``, ``zoo.show``, ``zoo.resolve``.
Submodules load lazily so ``import zoo`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.catalog import Filters, ModelCard

__version__ = "0.1.0"
__all__ = ["ZooError", "list_models", "resolve", "search", "show"]


def list_models(filters: Filters | None = None, sort: str = "name", **kwargs: object) -> list[ModelCard]:
    """Catalog entries; filter with a ``Filters`` or keywords (``layers=3, quantized=True, min_f1=85``)."""
    from zoo.catalog import Filters
    from zoo.catalog import list_models as _list

    return _list(filters or Filters(**kwargs), sort=sort)  # type: ignore[arg-type]


def search(text: str, sort: str = "name", **kwargs: object) -> list[ModelCard]:
    """Entries whose names, aliases, descriptions or tags contain every word of ``text``."""
    from zoo.catalog import Filters
    from zoo.catalog import search as _search

    return _search(text, Filters(**kwargs), sort=sort)  # type: ignore[arg-type]


def resolve(name_or_alias: str) -> ModelCard:
    """The entry for a canonical name, Hub repo id (or URL) or SparseZoo stub; raises ``UnknownModelError``."""
    from zoo.catalog import resolve as _resolve

    return _resolve(name_or_alias)


def show(name: str) -> ModelCard:
    """Everything the catalog knows about ``name`` (same as ``resolve``; named after ``zoo show``)."""
    return resolve(name)
