"""Sources shown to users are things a user can open: a URL, a paper, a repository path, a file in this repo."""

from __future__ import annotations

import re
from pathlib import Path

import zoo

ROOT = Path(__file__).resolve().parent.parent.parent
PRIVATE_NOTES = ("obert-facts.md", "sparseml-qat.md", "perf-baseline.md", "DESIGN.md")


def _sources(card) -> list[str]:  # noqa: ANN001
    found = [m.source for m in card.metrics] + [f.size_source for f in card.files if f.size_source]
    found += [s for s in (card.params_source, card.recipe.source if card.recipe else None) if s] + [s for _, s in card.speedups.values()]
    return found


def test_no_source_cites_notes_users_cannot_open() -> None:
    cited = [(c.name, s) for c in zoo.list_models() for s in _sources(c) if any(n in s for n in PRIVATE_NOTES)]
    assert cited == []


def test_files_of_this_repository_cited_as_sources_exist() -> None:
    for card in zoo.list_models():
        for source in _sources(card):
            for path in re.findall(r"\b(bench/[\w./-]+\.py)", source):
                assert (ROOT / path).exists(), f"{card.name}: source cites {path}, which is not in the repository"
