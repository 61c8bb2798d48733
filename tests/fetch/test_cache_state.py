"""The cache and the state database survive each other: prune beside a live download, a corrupt state.db,
stale temporary files, the free-space arithmetic of a resume, and stub paths that would leave the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import STUBS
from zoo.catalog.schema import parse_stub
from zoo.errors import StubError


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "C:\\x"])
def test_stub_file_path_must_stay_inside_the_repo(tmp_path: Path, bad: str):
    stub = tmp_path / "obert-3l-80-quant.toml"
    shutil.copy(STUBS / stub.name, stub)
    text = stub.read_text()
    assert 'path = "vocab.txt"' in text
    stub.write_text(text.replace('path = "vocab.txt"', f"path = {bad!r}", 1))
    with pytest.raises(StubError, match=r"files\[\d+\]\.path.*relative path inside the repo"):
        parse_stub(stub)
