"""transformers' pipeline parameters through ``zoo serve``: booleans for QA, function_to_apply for classification."""

from __future__ import annotations

from pathlib import Path

import zoo
from tests.serve.conftest import Served, clf_server, mnli_repo, qa_repo, qa_server  # noqa: F401

CONTEXT = ("Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina Panthers 24–10 to earn "
           "their third Super Bowl title. The game was played at Levi's Stadium in Santa Clara, California.")


def test_qa_route_takes_align_to_words_and_handle_impossible_answer(qa_server: Served, qa_repo: Path) -> None:  # noqa: F811
    params = {"top_k": 4, "align_to_words": False, "handle_impossible_answer": True, "max_seq_len": 32, "doc_stride": 8}
    r = qa_server.post(f"/models/{qa_repo.name}", json={"inputs": {"question": "Who won?", "context": CONTEXT}, "parameters": params})
    assert r.status_code == 200, r.text
    expected = zoo.load(str(qa_repo), engine="sparse", validate=False, threads=1)(question="Who won?", context=CONTEXT, **params)
    assert [(a["answer"], a["start"], a["end"]) for a in r.json()] == [(a["answer"], a["start"], a["end"]) for a in expected]
    bad = qa_server.post(f"/models/{qa_repo.name}", json={"inputs": {"question": "q", "context": CONTEXT},
                                                         "parameters": {"align_to_words": 1}})
    assert bad.status_code == 400 and "true or false" in bad.text


def test_classify_route_takes_function_to_apply(clf_server: Served, mnli_repo: Path) -> None:  # noqa: F811
    body = {"inputs": {"text": "a cat", "text_pair": "an animal"}, "parameters": {"top_k": 3, "function_to_apply": "sigmoid"}}
    r = clf_server.post(f"/models/{mnli_repo.name}", json=body)
    assert r.status_code == 200, r.text
    scores = [x["score"] for x in r.json()]
    assert len(scores) == 3 and sum(scores) > 1.2  # sigmoids, not a softmax that sums to 1
    bad = clf_server.post(f"/models/{mnli_repo.name}", json={**body, "parameters": {"function_to_apply": "tanh"}})
    assert bad.status_code == 400 and "softmax" in bad.text
