from __future__ import annotations

from pathlib import Path

import pytest

from zoo.synth import SynthSpec, write_repo

SMALL = dict(hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128)


@pytest.fixture(scope="session")
def repo_factory(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    cache: dict[SynthSpec, Path] = {}

    def make(**kw: object) -> Path:
        spec = SynthSpec(**{**SMALL, **kw})  # type: ignore[arg-type]
        if spec not in cache:
            cache[spec] = write_repo(tmp_path_factory.mktemp("repo"), spec)
        return cache[spec]

    return make
