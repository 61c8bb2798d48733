"""One engine and one pipeline called from 8 threads at once give exactly the sequential results; compiling leaves
no temporary files behind; reprs stay short."""

from __future__ import annotations

import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import zoo
from zoo.convert.repo import load_model
from zoo.runtime.engine import Engine, OnnxRuntimeEngine, compile
from zoo.synth import SynthSpec, write_repo

THREADS = 8
ROUNDS = 4
SMALL = dict(hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128)
# (batch, seq): several shapes, each more than once, so same-shape and different-shape calls interleave.
SHAPES = [(1, 16), (2, 16), (1, 48), (3, 8), (1, 16), (2, 40), (1, 128), (3, 8), (2, 16), (1, 48)]
CONTEXT = ("Super Bowl 50 was an American football game to determine the champion of the National Football League. "
           "The American Football Conference champion Denver Broncos defeated the National Football Conference champion "
           "Carolina Panthers 24 to 10 to earn their third Super Bowl title. The game was played in the state of California.")
QUESTIONS = ["Who won Super Bowl 50?", "Where was the game played?", "What was the score?", "Which title was it?",
             "Who lost the game?", "What does the game determine?"]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    cache: dict[tuple, Path] = {}

    def make(**kw: Any) -> Path:
        key = tuple(sorted(kw.items()))
        if key not in cache:
            cache[key] = write_repo(tmp_path_factory.mktemp("conc"), SynthSpec(layers=2, seed=5, **SMALL, **kw))
        return cache[key]

    return make


def feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for batch, seq in SHAPES:
        ids = rng.integers(0, SMALL["vocab_size"], size=(batch, seq))
        mask = np.ones_like(ids)
        mask[-1, max(1, seq // 2):] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": (np.arange(seq)[None] >= seq // 3).astype(np.int64)
                    .repeat(batch, 0)})
    return out


def hammer(call: Callable[[int], Any], n: int, same: Callable[[Any, int], bool], rounds: int = ROUNDS) -> list[tuple[int, int]]:
    """Call ``call(i)`` for every i from THREADS threads started together (each in its own rotated order, ``rounds``
    times); the (thread, i) pairs whose result ``same`` rejects, and re-raises the first exception."""
    barrier = threading.Barrier(THREADS)
    bad: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                for j in range(n):
                    i = (j + k) % n
                    if not same(call(i), i):
                        bad.append((k, i))
        except BaseException as exc:  # noqa: BLE001  (reported on the main thread)
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads between nearly every few bytecodes, not only inside the kernels
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(interval)
    if errors:
        raise errors[0]
    return bad


def equal_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kw", [dict(sparsity=90, pattern="unstructured"), dict(sparsity=80, pattern="block4", qat=True)],
                         ids=["fp32-csr", "int8-block4"])
def test_engine_shared_by_threads_matches_sequential_calls(repos, kw: dict) -> None:  # noqa: ANN001
    # Every kernel gives each output row to one OpenMP thread and sums in a fixed order, so results do not depend on
    # scheduling: a correct engine agrees with sequential calls bit for bit.
    engine = compile(load_model(repos(**kw)), threads=2, backend="sparse")
    assert isinstance(engine, Engine)
    inputs = feeds()
    expected = [{k: v.copy() for k, v in engine(**f).items()} for f in inputs]
    bad = hammer(lambda i: engine(**inputs[i]), len(inputs), lambda out, i: equal_outputs(out, expected[i]))
    assert not bad, f"{len(bad)} of {THREADS * ROUNDS * len(inputs)} threaded calls differ from sequential ones"


def test_onnxruntime_engine_shared_by_threads_matches_sequential_calls(repos) -> None:  # noqa: ANN001
    engine = compile(load_model(repos(pattern="dense")), threads=2, backend="onnxruntime")
    assert isinstance(engine, OnnxRuntimeEngine)
    inputs = feeds()
    expected = [engine(**f) for f in inputs]
    bad = hammer(lambda i: engine(**inputs[i]), len(inputs), lambda out, i: equal_outputs(out, expected[i]))
    assert not bad


def test_pipeline_shared_by_threads_matches_sequential_calls(repos) -> None:  # noqa: ANN001
    qa = zoo.load(str(repos(sparsity=80, pattern="block4", qat=True)), engine="sparse", threads=2)
    # Windows of different sizes per call: the tokenizer's truncation must not leak from one call into another.
    calls = [dict(question=q, context=CONTEXT, top_k=3, max_seq_len=seq, doc_stride=stride)
             for q in QUESTIONS for seq, stride in ((48, 16), (128, 64))]
    expected = [qa(**c) for c in calls]
    bad = hammer(lambda i: qa(**calls[i]), len(calls), lambda out, i: out == expected[i])
    assert not bad, f"{len(bad)} of {THREADS * ROUNDS * len(calls)} threaded answers differ from sequential ones"


def test_question_windows_from_threads_match_sequential_ones(repos) -> None:  # noqa: ANN001
    # Tokenization alone, so that a truncation setting changed by one call under another is caught densely.
    qa = zoo.load(str(repos(sparsity=80, pattern="block4", qat=True)), engine="sparse", threads=1)
    calls = [(q, CONTEXT * 2, stride, seq) for q in QUESTIONS for seq, stride in ((32, 8), (48, 16), (128, 64))]

    def windows(i: int) -> list[tuple[list[int], list[tuple[int, int]]]]:
        q, c, stride, seq = calls[i]
        return [(w.ids, w.offsets) for w in qa.windows(q, c, doc_stride=stride, max_seq_len=seq, max_question_len=64)]

    expected = [windows(i) for i in range(len(calls))]
    bad = hammer(windows, len(calls), lambda out, i: out == expected[i], rounds=4 * ROUNDS)
    assert not bad, f"{len(bad)} of {THREADS * 4 * ROUNDS * len(calls)} threaded tokenizations differ from sequential ones"


def test_classification_pipeline_shared_by_threads_matches_sequential_calls(repos) -> None:  # noqa: ANN001
    clf = zoo.load(str(repos(sparsity=80, pattern="block4", task="text-classification")), engine="sparse", threads=2)
    calls = [(CONTEXT[:n], q, n // 4) for q in QUESTIONS for n in (60, 200, 400)]
    expected = [clf(text, pair, top_k=None, max_length=width) for text, pair, width in calls]
    bad = hammer(lambda i: clf(calls[i][0], calls[i][1], top_k=None, max_length=calls[i][2]), len(calls),
                 lambda out, i: out == expected[i])
    assert not bad


def test_auto_backend_on_a_dense_model_leaves_no_temporary_files(repos, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model = load_model(repos(pattern="dense"))
    engine = compile(model, threads=1, backend="auto")
    assert isinstance(engine, OnnxRuntimeEngine)
    assert list(scratch.iterdir()) == []
    assert engine(**feeds()[0])["start_logits"].shape == (1, 16)  # the session does not need the file


def test_reprs_are_short(repos) -> None:  # noqa: ANN001
    path = repos(sparsity=80, pattern="block4", qat=True)
    engine = compile(load_model(path), threads=1, backend="sparse")
    assert isinstance(engine, Engine)
    layer = engine.layers[0]
    for obj in (engine, layer, layer.qkv, layer.ln_attn, compile(load_model(repos(pattern="dense")), threads=1),
                zoo.load(str(path), engine="sparse", threads=1)):
        text = repr(obj)
        assert len(text) < 400, f"{type(obj).__name__}: {len(text)} characters"
        assert "array(" not in text
    assert "qkv" in repr(layer) and layer.qkv.kind in repr(layer.qkv)
