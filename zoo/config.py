"""Configuration read from the environment, in one place, and the ``Settings`` built from it at the edge.

``ZOO_HOME`` (cache and state, default ``~/.cache/obert-zoo``), ``ZOO_CATALOG_URL`` (any SQLAlchemy
URL; default: the bundled read-only ``registry.db``), ``ZOO_OFFLINE`` (no network at all), ``ZOO_MIRRORS``,
``ZOO_THREADS``, ``ZOO_TRUST_ON_FIRST_USE``.

Every function here reads the environment when called, never at import. The CLI and ``zoo.load`` build
one ``Settings`` (``Settings.from_env(home=...)``) and pass it down; lower layers take the values they
need as parameters, so one process can serve two homes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
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
    """``HF_TOKEN`` (or the token saved by ``hf auth login``, ``huggingface-cli login`` before huggingface_hub 0.34),
    via huggingface_hub's own lookup, read at call time."""
    from huggingface_hub import get_token

    return get_token()


def hf_endpoint() -> str:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it once at import), default the public Hub: an http(s) URL,
    perhaps with a path prefix, that the Hub's paths are appended to (a query or fragment would swallow them)."""
    from urllib.parse import urlsplit

    url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"  # no strip: huggingface_hub would not strip it either
    try:
        parts = urlsplit(url)
        bad = parts.scheme not in ("http", "https") or not parts.hostname or parts.port == 0 or parts.query or parts.fragment
    except ValueError:  # a port out of range, a broken IPv6 literal
        bad = True
    if bad:
        from zoo.errors import ZooError

        raise ZooError("HF_ENDPOINT is not the http(s) URL of a Hub (scheme, host and optional port and path; no query)",
                       "e.g. https://huggingface.co or http://127.0.0.1:8080; unset it for the public Hub")
    return url.rstrip("/")


def hf_cache_dir() -> Path:
    """The user's Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), read now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def threads() -> int | None:
    """``ZOO_THREADS``: threads for the engines (unset: every core this process may run on)."""
    value = os.environ.get("ZOO_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        from zoo.errors import ZooError

        raise ZooError(f"ZOO_THREADS={value!r} is not a positive whole number", "unset it to use every core")
    return int(value)


def default_threads() -> int:
    """Every core this process may run on (its affinity mask), the engines' default."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """Everything the stages below the edge need to know about where and how to work.

    Built once by the CLI or the API (``Settings.from_env``), passed down explicitly; ``with_(...)``
    derives a variant (``zoo demo`` runs in its own home without touching ``os.environ``).
    """

    home: Path = field(default_factory=zoo_home)
    offline: bool = False
    catalog_url: str | None = None
    mirrors: tuple[str, ...] = ()
    threads: int | None = None
    trust_on_first_use: bool = False

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment; keyword overrides whose value is None keep the environment's."""
        base = cls(home=zoo_home(), offline=offline(), catalog_url=catalog_url(), mirrors=tuple(mirrors()),
                   threads=threads(), trust_on_first_use=trust_on_first_use())
        return base.with_(**overrides)

    def with_(self, **overrides: object) -> Settings:
        given = {k: v for k, v in overrides.items() if v is not None}
        if "home" in given:
            given["home"] = Path(given["home"]).expanduser().resolve()  # type: ignore[arg-type]
        if "mirrors" in given:
            given["mirrors"] = tuple(given["mirrors"])  # type: ignore[arg-type]
        return replace(self, **given)  # type: ignore[arg-type]

    @property
    def engine_threads(self) -> int:
        return self.threads or default_threads()

    def model_dir(self, name: str) -> Path:
        return self.home / "models" / name


def _number(var: str, default: float) -> float:
    raw = os.environ.get(var, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        from zoo.errors import ZooError

        raise ZooError(f"{var}={raw!r} is not a number", f"unset {var} or give a number") from None


def trust_on_first_use() -> bool:
    """``ZOO_TRUST_ON_FIRST_USE``: install (and pin) files no catalog, pin, listing or header vouches for."""
    return os.environ.get("ZOO_TRUST_ON_FIRST_USE", "").strip().lower() in _TRUE


FETCH_VARIABLES = {"retries": "ZOO_RETRIES", "backoff": "ZOO_RETRY_BACKOFF", "read_timeout": "ZOO_READ_TIMEOUT",
                   "max_retry_after": "ZOO_MAX_RETRY_AFTER", "retry_budget": "ZOO_RETRY_BUDGET", "stall_timeout": "ZOO_STALL_TIMEOUT",
                   "min_rate": "ZOO_MIN_RATE", "lock_timeout": "ZOO_LOCK_TIMEOUT", "max_api_bytes": "ZOO_MAX_API_BYTES"}


def fetch_limits() -> dict[str, float]:
    """How hard a download tries and how long it waits, as set in the environment now, by
    ``zoo.fetch.transfer.Limits`` field (unset variables are left out: ``Limits`` holds the defaults)."""
    return {field: _number(var, 0.0) for field, var in FETCH_VARIABLES.items() if os.environ.get(var, "").strip()}
