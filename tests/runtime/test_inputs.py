"""Both engines check their inputs the same way: bad shapes, types or ids are one InputError, never a crash."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from zoo.convert.repo import load_model
from zoo.errors import InputError
from zoo.runtime.engine import compile
from zoo.runtime.workspace import WorkspacePool
from zoo.synth import SynthSpec, write_repo


@pytest.fixture(scope="module", params=["sparse", "onnxruntime"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    spec = SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=32, sparsity=80,
                     pattern="unstructured")
    model = load_model(write_repo(tmp_path_factory.mktemp("inputs"), spec))
    return compile(model, threads=1, backend=request.param)


@pytest.mark.parametrize(("ids", "kw", "message"), [
    (np.array([[2, 1200, 3]]), {}, "token ids must lie in [0, 1200)"),
    (np.array([[2, -1, 3]]), {}, "token ids must lie in [0, 1200)"),
    (np.array([[2, 5, 3]]), {"token_type_ids": np.array([[0, 2, 0]])}, "token type ids must lie in [0, 2)"),
    (np.zeros((0, 4), dtype=np.int64), {}, "non-empty"),
    (np.zeros((2, 0), dtype=np.int64), {}, "non-empty"),
    (np.array([[2.5, 3.0]]), {}, "must hold integers"),
    (np.array([["a", "b"]]), {}, "must hold integers"),
    (np.array([[2, 3]]), {"attention_mask": np.ones((1, 3), dtype=np.int64)}, "share one [batch, sequence] shape"),
    (np.ones((1, 40), dtype=np.int64), {}, "exceeds the model's 32 positions"),
    (np.array([[2, 2**63 + 5]], dtype=np.uint64), {}, "token ids must lie in"),
])
def test_bad_inputs_are_one_input_error(engine, ids: np.ndarray, kw: dict, message: str) -> None:  # noqa: ANN001
    with pytest.raises(InputError) as err:
        engine(ids, **kw)
    assert message in err.value.message


def test_good_inputs_of_any_integer_type_give_the_same_answer(engine) -> None:  # noqa: ANN001
    ids = np.array([[2, 17, 18, 3]])
    expected = engine(ids.astype(np.int64))
    for dtype in (np.int32, np.uint16, np.int8):
        out = engine(ids.astype(dtype))
        for name in expected:
            np.testing.assert_array_equal(out[name], expected[name])


def test_workspace_memory_is_bounded_by_the_largest_call_not_by_how_many_shapes(tmp_path) -> None:  # noqa: ANN001
    """A server or batch run meets hundreds of padded lengths: buffers grow to the largest, never one set per shape."""
    spec = SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=64, sparsity=80,
                     pattern="unstructured")
    model = load_model(write_repo(tmp_path, spec))
    many = compile(model, threads=1, backend="sparse")
    one = dataclasses.replace(many, workspaces=WorkspacePool())  # the same packings (chosen by timing), fresh buffers
    rng = np.random.default_rng(0)
    outputs = {}
    for seq in range(1, 61):
        ids = rng.integers(4, 1200, size=(2, seq))
        outputs[seq] = (ids, many(ids))
    largest = rng.integers(4, 1200, size=(2, 60))
    expected = one(largest)

    def held(engine) -> int:  # noqa: ANN001
        return sum(flat.nbytes for ws in engine.workspaces._free for flat in ws._flat.values())

    assert held(many) == held(one) > 0
    again = many(largest)
    for name in expected:
        np.testing.assert_array_equal(again[name], expected[name])
    for ids, out in outputs.values():  # answers handed out earlier were not overwritten by later calls
        again = one(ids)
        for name in out:
            np.testing.assert_array_equal(out[name], again[name])
