"""The SQuAD v1.1 metric against hand-computed values, and `zoo eval` on a small file."""

from __future__ import annotations

import json

import pytest

from zoo.pipelines.squad import Example, evaluate, exact_match_score, f1_score, normalize_answer


@pytest.mark.parametrize(("text", "normal"), [
    ("The  Quick, brown fox!", "quick brown fox"),
    ("an apple a day", "apple day"),
    ("Theater and THEN", "theater and then"),  # articles only as whole words
    ("  U.S.A.  ", "usa"),
    ("", ""),
    ("Denver's", "denvers"),
])
def test_normalization(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_and_f1_hand_computed():
    assert exact_match_score("The Denver Broncos", "denver broncos!") == 1.0
    assert f1_score("the cat sat", "cat sat on mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # P=2/2, R=2/4
    assert f1_score("a", "the") == 0.0  # both normalize to nothing
    assert f1_score("cat cat", "cat") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # P=1/2, R=1/1


def test_evaluate_takes_the_best_truth_and_averages():
    examples = [
        Example("1", "q", "c", ("Denver Broncos", "Broncos")),
        Example("2", "q", "c", ("cat sat on mat",)),
        Example("3", "q", "c", ("Carolina",)),
    ]
    preds = {"1": "broncos", "2": "the cat sat", "3": "Panthers"}
    scores = evaluate(examples, preds)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)


def test_zoo_eval_on_a_squad_file(cli, qa_repo, tmp_path):
    context = "Denver Broncos defeated the Carolina Panthers in Santa Clara, California."
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "a", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]},
        {"id": "b", "question": "Where?", "answers": [{"text": "Santa Clara", "answer_start": 45}]},
        {"id": "c", "question": "Who lost?", "answers": [{"text": "Carolina Panthers", "answer_start": 28}]},
    ]}]}]}
    squad = tmp_path / "dev.json"
    squad.write_text(json.dumps(data))
    preds = tmp_path / "preds.json"
    res = cli("eval", str(qa_repo), "--squad", str(squad), "--limit", "2", "--predictions", str(preds), "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert out["count"] == 2
    answers = json.loads(preds.read_text())
    assert set(answers) == {"a", "b"}
    truths = {"a": "Denver Broncos", "b": "Santa Clara"}
    assert out["f1"] == pytest.approx(100 * sum(f1_score(answers[k], truths[k]) for k in answers) / 2)
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"no": 1}]}')
    err = cli("eval", str(qa_repo), "--squad", str(bad))
    assert err.code == 1 and "is not SQuAD v1.1 JSON" in err.err
