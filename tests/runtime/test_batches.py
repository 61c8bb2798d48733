"""Large and padded batches: the engine's sub-batches and the attention kernel's skipped padding keys change no output.

The attention kernel runs one query block at a time and visits only each sequence's attended keys (``keys``); on
every body this CPU has, its output is bit for bit the output over all keys, and matches numpy, for lengths on
both sides of the block edges, trailing padding, holes in the mask and a sequence with nothing attended.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.kernel_bodies import BODIES, ROOT, require
from zoo.convert.reference import MASK_VALUE, forward
from zoo.convert.repo import load_model
from zoo.runtime.engine import attended_keys, compile
from zoo.synth import SynthSpec, write_repo

SHAPES = ((3, 1, 2, 16), (3, 31, 2, 16), (3, 33, 1, 16), (2, 65, 2, 64), (3, 100, 2, 16), (2, 130, 1, 64))  # batch, seq, heads, d


def masks(b: int, s: int) -> np.ndarray:
    """1/0 masks: full, trailing padding, a hole then padding, nothing attended (as many as ``b`` allows)."""
    m = np.ones((b, s), np.int64)
    if b > 1:
        m[1, max(1, s // 3):] = 0
    if b > 2:
        m[2, s // 2:] = 0
        m[2, s // 4:s // 3] = 0
        if s > 60:
            m[0] = 0
    return m


def outputs() -> dict[str, np.ndarray]:
    """Attention over every shape without and with ``keys``, plain and with fake-quant points, in this process's body."""
    from zoo.runtime import _kernels as K

    rng = np.random.default_rng(2)
    quant = np.float32([0.02, 128, 0.02, 128, 0.05, 130, 1 / 255, 0, 0.02, 128, 0.01, 128])
    out = {}
    for b, s, h, d in SHAPES:
        qkv = rng.standard_normal((3 * h * d, b * s)).astype(np.float32)
        mask = masks(b, s)
        add = np.ascontiguousarray((1.0 - mask.astype(np.float32)) * np.float32(MASK_VALUE))
        keys = attended_keys(mask)
        for name, qp in (("plain", np.zeros(12, np.float32)), ("quant", quant)):
            for with_keys in (False, True):
                o = np.full((h * d, b * s), np.nan, np.float32)
                K.attention(qkv.ctypes.data, o.ctypes.data, add.ctypes.data, b, s, h, d, float(1 / np.sqrt(d)), qp.ctypes.data, 2,
                            *((keys.ctypes.data,) if with_keys else ()))
                out[f"{b}x{s}x{h}x{d}/{name}/{with_keys}"] = o
        out[f"{b}x{s}x{h}x{d}/qkv"] = qkv
    return out


@pytest.fixture(scope="module", params=BODIES)
def body(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    env = require(request.param)
    path = tmp_path_factory.mktemp(request.param) / "out.npz"
    code = "import sys, numpy as np\nfrom tests.runtime.test_batches import outputs\nnp.savez(sys.argv[1], **outputs())"
    subprocess.run([sys.executable, "-c", code, str(path)], env=env, cwd=ROOT, check=True)
    with np.load(path) as data:
        return dict(data)


def test_attended_keys() -> None:
    m = masks(3, 100)
    assert attended_keys(m).tolist() == [100, 33, 50]  # nothing attended: every key, as the reference
    assert attended_keys(np.ones((2, 7), np.int64)).tolist() == [7, 7]
    assert attended_keys(np.array([[1, 0, 1, 0, 0]])).tolist() == [3]


def test_skipping_padding_keys_changes_no_bit(body: dict) -> None:
    for b, s, h, d in SHAPES:
        for name in ("plain", "quant"):
            key = f"{b}x{s}x{h}x{d}/{name}"
            assert np.isfinite(body[f"{key}/True"]).all(), key
            assert np.array_equal(body[f"{key}/False"], body[f"{key}/True"]), key


def test_query_blocks_match_numpy(body: dict) -> None:
    for b, s, h, d in SHAPES:
        q, k, v = body[f"{b}x{s}x{h}x{d}/qkv"].astype(np.float64).reshape(3, h, d, b, s)
        scores = np.einsum("hcbi,hcbj->bhij", q, k) / np.sqrt(d) + ((1.0 - masks(b, s)) * MASK_VALUE)[:, None, None, :]
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        expected = np.einsum("hcbj,bhij->hcbi", v, weights / weights.sum(-1, keepdims=True)).reshape(h * d, b * s)
        got = body[f"{b}x{s}x{h}x{d}/plain/True"]
        seen = np.repeat(masks(b, s).any(1), s)  # with nothing attended, float32 scores - 10000 keep ~3 digits: not compared
        assert np.abs(got - expected)[:, seen].max() <= 1e-5 * max(1.0, float(np.abs(expected).max())), (b, s, h, d)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Wide enough that float results near a quantization step exist: unpadded (LANES 1), a sequence of this
    model's test batch gives other bits alone than in the batch on AVX2."""
    spec = SynthSpec(layers=2, hidden=256, heads=4, intermediate=512, vocab_size=1200, max_positions=256, sparsity=80,
                     pattern="block4", qat=True, seed=6)
    return load_model(write_repo(tmp_path_factory.mktemp("batches") / "m", spec))


def test_a_sequence_gives_the_same_bits_alone_unpadded_or_in_any_batch(model) -> None:  # noqa: ANN001
    """A QAT model (int8 kernels where the CPU has them): one pass or sub-batches of the token budget, a batch or
    each sequence alone cut to its attended length, every output bit is the same; and within a step of the reference."""
    engine = compile(model, threads=2, backend="sparse")
    rng = np.random.default_rng(1)
    count, width = 40, 200
    ids = rng.integers(0, 1200, (count, width))
    types = (np.arange(width)[None] > 30).repeat(count, 0).astype(np.int64)
    mask = (np.arange(width)[None] < rng.integers(5, width + 1, count)[:, None]).astype(np.int64)
    mask[3] = 0  # nothing attended
    engine.batch_tokens = 450  # two sequences per pass
    parts = engine(ids, mask, types)
    engine.batch_tokens = None
    whole = engine(ids, mask, types)
    lengths = [n if n else width for n in mask.sum(1)]
    alone = [engine(ids[i:i + 1, :n], mask[i:i + 1, :n], types[i:i + 1, :n]) for i, n in enumerate(lengths)]
    ref = forward(model, input_ids=ids, attention_mask=mask, token_type_ids=types)
    step = model.qa.input_q.scale * np.abs(model.qa.weight).sum(axis=1).max()
    for name in model.output_names:
        assert parts[name].shape == whole[name].shape == (count, width)
        assert np.array_equal(parts[name], whole[name]), name
        for i, n in enumerate(lengths):
            assert np.array_equal(alone[i][name][0], whole[name][i, :n]), (name, i)
        seen = mask.any(1)
        assert np.abs(parts[name] - ref[name])[seen].max() <= step, name


def test_the_engine_default_budget_is_positive(tmp_path: Path) -> None:
    from zoo.runtime.engine import BATCH_TOKENS, Engine

    assert BATCH_TOKENS >= 128 and Engine.batch_tokens == BATCH_TOKENS
