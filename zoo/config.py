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


def mirrors() -> list[str]:
    """``ZOO_MIRRORS``: comma-separated base URLs tried in order before the Hub."""
    return [m.strip() for m in os.environ.get("ZOO_MIRRORS", "").split(",") if m.strip()]


def hf_token() -> str | None:
    """``HF_TOKEN`` (or the token saved by ``hf auth login``), via huggingface_hub's own lookup."""
    from huggingface_hub import get_token

    return get_token()


def hf_endpoint() -> str:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it once at import), default the public Hub."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hf_cache_dir() -> Path:
    """The user's Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), read now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"
