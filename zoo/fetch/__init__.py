"""Fetch: catalog entry -> verified files in a content-addressed cache (Hub, HTTP mirrors, local dirs)."""

from zoo.fetch.cache import report, verify
from zoo.fetch.install import InstallResult, download

__all__ = ["InstallResult", "download", "report", "verify"]
