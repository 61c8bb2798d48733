"""Fetch: catalog entry -> verified files in a content-addressed cache (Hub, HTTP mirrors, local dirs).

The names below are imported on first use, so ``zoo.fetch.progress`` (which the CLI's entry point uses on every
call) costs no database or HTTP imports.
"""

from typing import Any

__all__ = ["InstallResult", "download", "report", "verify"]


def __getattr__(name: str) -> Any:
    if name in ("report", "verify"):
        from zoo.fetch import cache

        return getattr(cache, name)
    if name in ("InstallResult", "download"):
        from zoo.fetch import install

        return getattr(install, name)
    raise AttributeError(f"module 'zoo.fetch' has no attribute {name!r}")
