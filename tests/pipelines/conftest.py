from __future__ import annotations

from pathlib import Path

import pytest

from tests.fetch.conftest import mirror, mirror_tree  # noqa: F401  (the local Hub mirror fixtures)
from zoo.synth import SynthSpec, write_repo

SMALL = dict(hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128)


@pytest.fixture(scope="session")
def qa_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("qa") / "qa-90", SynthSpec(layers=2, sparsity=90, pattern="unstructured", seed=3, **SMALL))


@pytest.fixture(scope="session")
def mnli_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("clf") / "mnli", SynthSpec(layers=2, sparsity=80, pattern="block4", seed=4,
                                                                         task="text-classification", **SMALL))
