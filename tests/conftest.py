"""Shared fixtures: the project's stubs, a CLI runner, and an isolated ZOO_HOME per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "stubs"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):  # noqa: ANN201
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("zoo-home")
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.delenv("ZOO_CATALOG_URL", raising=False)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    for var in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "ZOO_MIRRORS", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))  # never the user's own HF cache
    monkeypatch.setenv("ZOO_RETRY_BACKOFF", "0.02")  # backoff between retries; tests never assert timing
    return home


@pytest.fixture
def cli():  # noqa: ANN201
    """Run the real ``zoo`` entry point in a subprocess (exit codes and stderr as a user sees them)."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, input=input,
            env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=600,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def raw_stubs() -> dict[str, dict]:
    """The stubs parsed with plain tomllib, independent of the project's schema code."""
    return {p.stem: tomllib.loads(p.read_text()) for p in sorted(STUBS.glob("*.toml"))}
