"""The package version, in a leaf module: pyproject.toml reads it (``dynamic = ["version"]``), and code below the
facade (a download's user agent) reads it without importing the facade or package metadata."""

__version__ = "0.1.0"
