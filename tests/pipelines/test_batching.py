"""Batching never changes an answer: many questions of mixed lengths (one window, several windows) answered in
one call, in buckets of any size or token budget, give what each gives alone (bit for bit on a QAT model; to the
last float bits elsewhere); the length buckets themselves; the band-only span search picks what the full
start x end matrix picks."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest

import zoo
from zoo.pipelines.base import length_batches
from zoo.pipelines.qa import _best_in_band, _best_of_all, span_probabilities
from zoo.synth import SynthSpec, write_repo

FACTS = ("The Denver Broncos beat the Carolina Panthers 24 to 10 in Santa Clara.", "Von Miller was the most valuable player.",
         "The game was played on February 7, 2016.", "Lady Gaga sang the national anthem before the kickoff.")


def pairs(n: int) -> list[tuple[str, str]]:
    """Questions over contexts from one sentence to several 128-token windows, in no order of length."""
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        repeat = int(rng.choice([1, 1, 2, 3, 6, 12]))
        sentences = [FACTS[(i + k) % len(FACTS)] for k in range(repeat)]
        out.append((f"Who won game {i}?" if i % 2 else "Who sang?", f"Game {i} was played on day {i}. " + " ".join(sentences)))
    return out


def same(got: dict, expected: dict) -> bool:
    return {k: v for k, v in got.items() if k != "score"} == {k: v for k, v in expected.items() if k != "score"} and \
        abs(got["score"] - expected["score"]) < 1e-6


def with_budget(qa, batch_size: int, tokens: int | None):  # noqa: ANN001, ANN201
    engine = copy.copy(qa.engine)
    engine.batch_tokens = tokens
    return replace(qa, engine=engine, batch_size=batch_size)


@pytest.fixture(scope="module")
def qa(qa_repo):  # noqa: ANN001, ANN201
    return zoo.load(str(qa_repo), engine="sparse", threads=1)


@pytest.fixture(scope="module")
def alone(qa) -> list[dict]:  # noqa: ANN001
    return [qa(question=q, context=c) for q, c in pairs(24)]


def test_mixed_lengths_span_one_and_several_windows(qa) -> None:  # noqa: ANN001
    counts = [len(qa.plan_answer(q, c).encodings) for q, c in pairs(24)]
    assert min(counts) == 1 and max(counts) >= 3
    assert len({len(e.ids) for q, c in pairs(24) for e in qa.plan_answer(q, c).encodings}) > 10


@pytest.mark.parametrize(("batch_size", "tokens"), [(8, 512), (64, 512), (64, None), (3, None), (64, 100), (1, None)])
def test_answers_in_one_call_equal_answers_alone(qa, alone: list[dict], batch_size: int, tokens: int | None) -> None:  # noqa: ANN001
    """Any bucketing (sequences per batch, padded tokens per batch) leaves every answer as it is alone."""
    batched = with_budget(qa, batch_size, tokens)
    got = batched(question=[q for q, _ in pairs(24)], context=[c for _, c in pairs(24)])
    assert len(got) == len(alone)
    for g, e in zip(got, alone, strict=True):
        assert same(g, e), (g, e)


@pytest.fixture(scope="module")
def qat(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    spec = SynthSpec(layers=2, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128, sparsity=80, pattern="block4",
                     qat=True, seed=6)
    return zoo.load(str(write_repo(tmp_path_factory.mktemp("qat") / "qa-quant", spec)), engine="sparse", threads=2)


@pytest.mark.parametrize(("batch_size", "tokens"), [(8, 512), (64, None), (64, 100)])
def test_qat_answers_in_one_call_are_bit_identical_to_answers_alone(qat, batch_size: int, tokens: int | None) -> None:  # noqa: ANN001
    """Every token takes the same arithmetic in any batch (lane padding, skipped padding keys): scores equal exactly."""
    items = pairs(24)
    alone = [qat(question=q, context=c, top_k=2) for q, c in items]
    got = with_budget(qat, batch_size, tokens)(question=[q for q, _ in items], context=[c for _, c in items], top_k=2)
    assert got == alone


def test_top_k_answers_in_one_call_equal_answers_alone(qa) -> None:  # noqa: ANN001
    items = pairs(10)
    one = [qa(question=q, context=c, top_k=4) for q, c in items]
    jobs = [qa.plan_answer(q, c, top_k=4) for q, c in items]
    for got, expected in zip(with_budget(qa, 64, 512).run_jobs(jobs), one, strict=True):
        assert len(got) == len(expected) and all(same(g, e) for g, e in zip(got, expected, strict=True))


def test_forward_pads_each_bucket_only_to_its_longest(qa) -> None:  # noqa: ANN001
    """The engine sees sorted buckets within the budget, and outputs come back in input order, cut to length."""
    seen: list[tuple[int, int]] = []
    engine = qa.engine

    def spy(ids, mask, types):  # noqa: ANN001, ANN202
        seen.append(ids.shape)
        assert (mask.sum(1) == ids.shape[1]).any()  # the longest of the bucket is not padded
        return engine(ids, mask, types)

    spy.batch_tokens = 200  # type: ignore[attr-defined]
    encodings = [e for q, c in pairs(12) for e in qa.plan_answer(q, c).encodings]
    outs = replace(qa, engine=spy, batch_size=8).forward(encodings)
    assert all(rows * width <= 200 or rows == 1 for rows, width in seen) and sum(r for r, _ in seen) == len(encodings)
    for e, out in zip(encodings, outs, strict=True):
        alone = engine(np.array([e.ids]), np.array([e.attention_mask]), np.array([e.type_ids]))
        assert out["start_logits"].shape == (len(e.ids),)
        assert np.abs(out["start_logits"] - alone["start_logits"][0]).max() < 1e-5


def test_classification_in_one_call_equals_alone(mnli_repo) -> None:  # noqa: ANN001
    clf = zoo.load(str(mnli_repo), engine="sparse", threads=1)
    texts = [" ".join(FACTS[: 1 + i % 4]) * (1 + i % 3) for i in range(12)]
    one = [clf(t, top_k=None) for t in texts]
    for got, expected in zip(with_budget(clf, 64, 512)(texts, top_k=None), one, strict=True):
        assert [g["label"] for g in got] == [e["label"] for e in expected]
        assert np.allclose([g["score"] for g in got], [e["score"] for e in expected], atol=1e-6)


def test_length_batches_sort_cap_and_cover_every_input() -> None:
    lengths = [5, 300, 40, 40, 128, 7, 600, 128, 128, 2]
    batches = length_batches(lengths, size=3, tokens=256)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [i for b in batches for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths) and flat[3:5] == [2, 3]  # shortest first, ties in input order
    assert all(len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 256) for b in batches)
    assert [6] in batches and [1] in batches  # longer than the budget: alone
    assert length_batches(lengths, size=4) == [[9, 0, 5, 2], [3, 4, 7, 8], [1, 6]]
    assert length_batches([], size=8, tokens=512) == []


def test_band_search_picks_what_the_full_matrix_picks() -> None:
    """Random logits, ties included: where the band answers, it is exactly the full selection (spans, scores, order)."""
    rng = np.random.default_rng(3)
    answered = 0
    for trial in range(600):
        n = int(rng.integers(1, 200))
        start, end = (rng.standard_normal(n) * rng.choice([0.5, 4.0, 20.0]) for _ in range(2))
        if trial % 5 == 0:
            start = np.round(start)  # equal scores
        undesired = rng.random((1, n)) < rng.choice([0.0, 0.5, 0.95])
        p_start, p_end = span_probabilities(start, end, undesired)
        p_start[0, 0] = p_end[0, 0] = 0.0
        top_k, longest = int(rng.choice([1, 2, 12])), int(rng.choice([1, 4, 15]))
        band = _best_in_band(p_start[0], p_end[0], top_k, longest)
        if band is not None:
            answered += 1
            for a, b in zip(_best_of_all(p_start, p_end, top_k, longest), band, strict=True):
                assert np.array_equal(a, b), trial
    assert answered > 300
