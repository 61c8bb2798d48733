"""Question answering: engines agree on spans, windows are searched for the best span, batches work."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.pipelines.qa import QuestionAnswering, best_spans

CONTEXT = ("Super Bowl 50 was an American football game to determine the champion of the National Football League. "
           "The American Football Conference champion Denver Broncos defeated the National Football Conference champion "
           "Carolina Panthers 24 to 10 to earn their third Super Bowl title. The game was played in the state of California.")


def test_sparse_engine_and_onnxruntime_give_the_same_spans(qa_repo):
    sparse = zoo.load(str(qa_repo), engine="sparse")
    ort = zoo.load(str(qa_repo), engine="onnxruntime")
    assert type(sparse.engine).__name__ == "Engine" and type(ort.engine).__name__ == "OnnxRuntimeEngine"
    for question in ("Who won Super Bowl 50?", "Where was the game played?"):
        a = sparse(question=question, context=CONTEXT, top_k=5, max_seq_len=64, doc_stride=16)
        b = ort(question=question, context=CONTEXT, top_k=5, max_seq_len=64, doc_stride=16)
        assert [(x["start"], x["end"], x["answer"]) for x in a] == [(x["start"], x["end"], x["answer"]) for x in b]
        assert np.allclose([x["score"] for x in a], [x["score"] for x in b], rtol=1e-3, atol=1e-6)
        for x in a:
            assert CONTEXT[x["start"]:x["end"]] == x["answer"]


class PointAt:
    """A stand-in engine whose logits peak on one token id: the answer must be that token, wherever it is."""

    def __init__(self, token_id: int) -> None:
        self.token_id = token_id
        self.calls = 0

    def __call__(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN204
        self.calls += 1
        hit = (input_ids == self.token_id).astype(np.float32)
        logits = hit * 8.0 - 4.0
        return {"start_logits": logits, "end_logits": logits}


def test_stride_windows_find_the_best_span_in_a_later_window(qa_repo):
    base = zoo.load(str(qa_repo), engine="sparse")
    target = "denver"
    token_id = base.tokenizer.token_to_id(target)
    assert token_id is not None
    context = " ".join(["the team played football in the city"] * 30) + " and denver won the title."
    engine = PointAt(token_id)
    qa = QuestionAnswering(name="t", path=base.path, engine=engine, tokenizer=base.tokenizer, config=base.config)
    windows = qa.windows("who won?", context, doc_stride=8, max_seq_len=32, max_question_len=64)
    assert len(windows) > 5
    assert sum(token_id in w.ids for w in windows) >= 1 and token_id not in windows[0].ids
    out = qa(question="who won?", context=context, max_seq_len=32, doc_stride=8)
    assert out["answer"] == "denver"
    assert context[out["start"]:out["end"]] == "denver" and out["start"] == context.index("denver")


def test_best_spans_respects_order_and_max_answer_len():
    start = np.array([0.0, 5.0, 0.0, 0.0, 0.0])
    end = np.array([0.0, 0.0, 0.0, 0.0, 6.0])
    undesired = np.array([True, False, False, False, False])
    spans = best_spans(start, end, undesired, top_k=3, max_answer_len=4)
    assert spans[0][:2] == (1, 4)
    assert all(s <= e < s + 4 and s >= 1 for s, e, _ in spans)
    assert [round(x, 9) for _, _, x in spans] == sorted((round(x, 9) for _, _, x in spans), reverse=True)
    short = best_spans(start, end, undesired, top_k=1, max_answer_len=2)
    assert short[0][1] - short[0][0] <= 1  # 1..4 is too long now


def test_batches_and_input_forms(qa_repo):
    qa = zoo.load(str(qa_repo))
    single = qa(question="Who won?", context=CONTEXT)
    assert set(single) == {"answer", "score", "start", "end"}
    many = qa(question=["Who won?", "Who lost?"], context=CONTEXT)
    assert len(many) == 2 and many[0] == single
    dicts = qa([{"question": "Who won?", "context": CONTEXT}])
    assert dicts == [single]
    with pytest.raises(zoo.ZooError, match="non-empty"):
        qa(question=" ", context=CONTEXT)
