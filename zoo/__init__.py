"""obert-zoo: the oBERT sparse BERT family as a catalog, a verified downloader and a sparse CPU runtime.

The public API mirrors the CLI: ``zoo.load`` (a ready pipeline), ``zoo.download``, ``zoo.verify``,
``zoo.list_models``, ``zoo.search``, ``zoo.show``, ``zoo.resolve``.
Submodules load lazily so ``import zoo`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.version import __version__

if TYPE_CHECKING:
    from zoo.catalog import Filters, ModelCard

__all__ = ["ZooError", "__version__", "download", "list_models", "load", "resolve", "search", "show", "verify"]


def load(name_or_dir: str, **kwargs: Any) -> Any:
    """A ready pipeline (question answering or classification) for a catalog name or a local repo directory.

    Keywords: ``engine="auto"|"sparse"|"onnxruntime"``, ``threads``, ``revision``, ``offline``, ``validate``,
    ``home`` (default ``$ZOO_HOME``), or a whole ``settings=zoo.config.Settings(...)``. The pipeline may be
    called from many threads at once.
    """
    from zoo.prepare import load as _load

    return _load(name_or_dir, **kwargs)


def download(name: str, **kwargs: Any) -> Any:
    """Fetch, verify and install a catalog model; returns an ``InstallResult`` (see ``zoo download --help``).

    Keywords as ``zoo.fetch.download`` (``revision``, ``sources``, ``mirrors``, ``offline``, ``home``, ...).
    """
    from zoo.fetch import download as _download

    return _download(name, **kwargs)


def verify(*names: str) -> Any:
    """Re-hash installed models (default: all) against their manifests; returns one result per model."""
    from zoo.fetch import verify as _verify

    return _verify(list(names) or None)


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
