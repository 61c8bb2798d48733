"""Configuration read from the environment, in one place.

``ZOO_HOME`` (cache and state, default ``~/.cache/obert-zoo``), ``ZOO_CATALOG_URL`` (any SQLAlchemy
URL; default: the bundled read-only ``registry.db``), ``ZOO_OFFLINE`` (no network at all).
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def zoo_home() -> Path:
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".cache" / "obert-zoo").expanduser()


def catalog_url() -> str | None:
    return os.environ.get("ZOO_CATALOG_URL") or None


def offline() -> bool:
    flags = (os.environ.get("ZOO_OFFLINE", ""), os.environ.get("HF_HUB_OFFLINE", ""))
    return any(f.strip().lower() in _TRUE for f in flags)


def project_root() -> Path:
    """The source checkout holding ``stubs/`` (meaningful for editable installs and CI)."""
    return Path(__file__).resolve().parent.parent


def bundled_registry() -> Path:
    """The registry shipped with the package: ``zoo/registry.db`` in a wheel, ``./registry.db`` in a checkout."""
    packaged = Path(__file__).resolve().parent / "registry.db"
    return packaged if packaged.exists() else project_root() / "registry.db"


def model_dir(name: str) -> Path:
    """Where an installed catalog model's repo files live: ``$ZOO_HOME/models/<name>``."""
    return zoo_home() / "models" / name
