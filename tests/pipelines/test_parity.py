"""zoo's pipelines answer as transformers' pipelines do: same text, start, end, labels; scores to 1e-4.

Checked against transformers' answers recorded on the same weights (every run, see parity_cases.py), and against
transformers itself, live, where a version with the question-answering pipeline (4.x) and torch are importable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import zoo
from tests.pipelines.parity_cases import CLASSIFY_CASES, QA_CASES, RECORDED, fingerprint, transformers_answers, write_repos

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_repos(tmp_path_factory.mktemp("parity"))


@pytest.fixture(scope="module")
def zoo_answers(repos: dict[str, Path]) -> dict[str, Any]:
    qa = zoo.load(str(repos["qa"]), engine="sparse", validate=False)
    clfs = {name: zoo.load(str(repos[name]), engine="sparse", validate=False) for name in ("mnli", "one-label", "multi-label")}
    clf_out = []
    for case in CLASSIFY_CASES:
        kwargs = {k: v for k, v in case.items() if k not in ("model", "inputs")}
        clf_out.append(clfs[case["model"]](case["inputs"], **kwargs))
    return {"question_answering": [qa(**case) for case in QA_CASES], "text_classification": clf_out}


def _rows(result: Any) -> list[dict[str, Any]]:
    return result if isinstance(result, list) else [result]


def assert_same_answers(ours: list[Any], theirs: list[Any], keys: tuple[str, ...]) -> None:
    assert len(ours) == len(theirs)
    for n, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        a_rows, b_rows = _rows(a), _rows(b)
        assert [tuple(r[k] for k in keys) for r in a_rows] == [tuple(r[k] for k in keys) for r in b_rows], f"case {n}"
        for x, y in zip(a_rows, b_rows, strict=True):
            assert abs(x["score"] - y["score"]) <= TOLERANCE, f"case {n}: score {x['score']} vs {y['score']}"


def test_recorded_answers_are_for_these_weights(repos):
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    assert recorded["models"] == fingerprint(repos), "zoo.synth's output changed: re-record with parity_cases.py (see its docstring)"
    assert len(recorded["question_answering"]) == len(QA_CASES) and len(recorded["text_classification"]) == len(CLASSIFY_CASES)


def test_question_answering_matches_recorded_transformers(zoo_answers):
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    assert_same_answers(zoo_answers["question_answering"], recorded["question_answering"], ("answer", "start", "end"))


def test_text_classification_matches_recorded_transformers(zoo_answers):
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    theirs = [r[0] if case.get("top_k", "") == 1 else r for case, r in zip(CLASSIFY_CASES, recorded["text_classification"], strict=True)]
    assert_same_answers(zoo_answers["text_classification"], theirs, ("label",))


def test_answers_snap_to_words_and_add_up_like_transformers(zoo_answers):
    """The behaviours the old pipeline lacked: whole words by default, subwords only with align_to_words=False."""
    words = _rows(zoo_answers["question_answering"][1])
    pieces = _rows(zoo_answers["question_answering"][2])
    assert all(r["answer"] == QA_CASES[1]["context"][r["start"]:r["end"]] for r in words + pieces)
    context = QA_CASES[1]["context"]
    assert all((r["start"] == 0 or not context[r["start"] - 1].isalnum()) and (r["end"] == len(context) or not context[r["end"]].isalnum())
               for r in words)
    assert any(context[r["start"] - 1].isalnum() or context[r["end"]].isalnum() for r in pieces)
    impossible = _rows(zoo_answers["question_answering"][-1])
    assert [(r["start"], r["end"]) for r in impossible if r["answer"] == ""] == [(0, 0)]


def _live_transformers() -> None:
    pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0, then transformers<5)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'transformers>=4.40,<5')")
    if not hasattr(transformers, "QuestionAnsweringPipeline"):
        pytest.skip(f"transformers {transformers.__version__} has no question-answering pipeline (removed in 5.0); "
                    "the recorded answers are checked instead")


def test_live_transformers_give_the_same_answers(repos, zoo_answers):
    _live_transformers()
    theirs = transformers_answers(repos)
    assert_same_answers(zoo_answers["question_answering"], theirs["question_answering"], ("answer", "start", "end"))
    clf = [r[0] if case.get("top_k", "") == 1 else r for case, r in zip(CLASSIFY_CASES, theirs["text_classification"], strict=True)]
    assert_same_answers(zoo_answers["text_classification"], clf, ("label",))
