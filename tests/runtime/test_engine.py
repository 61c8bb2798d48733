"""The sparse engine against the numpy reference and onnxruntime, across shapes, patterns and lengths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.runtime.kernel_bodies import BODIES, require
from zoo.convert.onnx_export import export
from zoo.convert.reference import forward
from zoo.convert.repo import load_model
from zoo.runtime import _kernels
from zoo.runtime.engine import compile
from zoo.runtime.pack import _int8, int8_kernels_fast, pack, pack_linear, unpack
from zoo.synth import SynthSpec, prune, write_repo

SHAPES = {
    "h64": dict(hidden=64, heads=4, intermediate=128),
    "h96": dict(hidden=96, heads=3, intermediate=200),  # not a multiple of 64; FFN not a multiple of 16
}


def feed(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, seq))
    mask = np.ones_like(ids)
    if batch > 1:
        mask[-1, max(1, seq // 2):] = 0  # padded sequence
    types = (np.arange(seq)[None] >= seq // 2).astype(np.int64).repeat(batch, 0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    cache: dict[tuple, Path] = {}

    def make(shape: str, **kw: object) -> Path:
        key = (shape, tuple(sorted(kw.items())))
        if key not in cache:
            spec = SynthSpec(layers=2, vocab_size=1200, max_positions=512, **SHAPES[shape], **kw)  # type: ignore[arg-type]
            cache[key] = write_repo(tmp_path_factory.mktemp("rt"), spec)
        return cache[key]

    return make


FP32_CASES = [("h64", dict(pattern="dense")), ("h64", dict(sparsity=90, pattern="unstructured")),
              ("h96", dict(sparsity=80, pattern="unstructured")), ("h64", dict(sparsity=80, pattern="block4"))]


@pytest.mark.parametrize(("shape", "kw"), FP32_CASES)
@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (2, 7), (1, 128), (2, 384)])
def test_fp32_engine_matches_reference_and_onnxruntime(repos, tmp_path: Path, shape: str, kw: dict, batch: int, seq: int) -> None:  # noqa: ANN001
    repo = repos(shape, **kw)
    model = load_model(repo)
    engine = compile(model, threads=2, backend="sparse")
    inputs = feed(1200, batch, seq)
    ref = forward(model, **inputs)
    out = engine(**inputs)
    onnx_path = repo / "model.onnx"
    if not onnx_path.exists():
        export(model, onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_out = dict(zip(model.output_names, session.run(None, inputs), strict=True))
    for name in model.output_names:
        assert out[name].shape == ref[name].shape == (batch, seq)
        assert np.abs(out[name] - ref[name]).max() < 1e-4, name
        assert np.abs(out[name] - ort_out[name]).max() < 1e-4, name


@pytest.mark.parametrize("shape", ["h64", "h96"])
@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (2, 7), (1, 128), (2, 384)])
def test_int8_engine_within_one_step_of_fake_quant_reference(repos, shape: str, batch: int, seq: int) -> None:  # noqa: ANN001
    model = load_model(repos(shape, sparsity=80, pattern="block4", qat=True))
    engine = compile(model, threads=2)
    int8_kinds = {"int8-block4", "jit-int8"}
    assert (set(engine.kinds()) <= int8_kinds) if int8_kernels_fast() else not set(engine.kinds()) & int8_kinds
    inputs = feed(1200, batch, seq)
    ref = forward(model, **inputs)
    out = engine(**inputs)
    qa = model.qa
    step = qa.input_q.scale * np.abs(qa.weight).sum(axis=1).max()
    for name in model.output_names:
        assert np.abs(out[name] - ref[name]).max() <= step, name


def test_classification_engine(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "c", SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=64,
                                                sparsity=80, pattern="unstructured", task="text-classification"))
    model = load_model(repo)
    inputs = feed(1200, 3, 16)
    out = compile(model, threads=1)(**inputs)["logits"]
    assert out.shape == (3, 3) and np.abs(out - forward(model, **inputs)["logits"]).max() < 1e-4


@pytest.mark.parametrize("pattern", ["unstructured", "block4"])
def test_packing_round_trips(pattern: str) -> None:
    rng = np.random.default_rng(1)
    w = prune(rng.standard_normal((48, 64)).astype(np.float32), 85, pattern)
    b = rng.standard_normal(48).astype(np.float32)
    for kind in ("csr", "block4", "csr-rg8", "block4-rg8") if pattern == "block4" else ("csr", "csr-rg8"):
        p = pack("w", w, b, threads=1, kinds=(kind,))
        assert p.kind == kind and np.array_equal(unpack(p), w)
        assert p.nnz >= np.count_nonzero(w)
    assert pack("w", w, b, threads=1, kinds=("dense",)).kind == "csr"  # BLAS is never picked for a sparse weight
    dense = rng.standard_normal((48, 64)).astype(np.float32)
    assert np.array_equal(unpack(pack("d", dense, b, threads=1, kinds=("dense",))), dense)


def test_int8_packing_round_trips(repos) -> None:  # noqa: ANN001
    model = load_model(repos("h64", sparsity=80, pattern="block4", qat=True))
    layer = model.layers[0]
    if not int8_kernels_fast():
        pytest.skip("no fast int8 body on this CPU (neither VNNI nor AVX2): QAT Linears are packed fp32")
    fused = pack_linear([layer.query, layer.key, layer.value], threads=1)
    assert fused.kind in ("int8-block4", "jit-int8")
    expected = np.concatenate([x.weight_int8 for x in (layer.query, layer.key, layer.value)]).astype(np.float32)
    assert np.array_equal(unpack(fused), expected)


def test_generic_int8_kernel_agrees_with_fast_body() -> None:
    """The portable int8 body computes the same products as this CPU's fast one (VNNI or AVX2)."""
    rng = np.random.default_rng(2)
    w8 = prune(rng.integers(-128, 128, size=(32, 64)).astype(np.float32), 75, "block4").astype(np.int8)
    from zoo.convert.bert import Linear, QParams

    lin = Linear("l", w8.astype(np.float32) * 0.01, np.zeros(32, np.float32), QParams(0.01, 0, -128, 127), w8, QParams(0.05, 3, 0, 255))
    p = _int8("l", w8, lin.weight_q, lin.input_q, lin.bias, threads=1)
    x = rng.standard_normal((64, 37)).astype(np.float32)
    from zoo.runtime.workspace import Workspace

    fast = p(x, Workspace()).copy()
    x8 = np.empty((16, 37, 4), np.uint8)
    _kernels.quantize(x.ctypes.data, x8.ctypes.data, 64, 37, 0.05, 3.0, 1)
    slow = np.empty((32, 37), np.float32)
    a = p.arrays
    _kernels.spmm_i8(a["indptr"].ctypes.data, a["groups"].ctypes.data, a["wpk"].ctypes.data, a["scale"].ctypes.data,
                     a["offset"].ctypes.data, x8.ctypes.data, slow.ctypes.data, 32, 37, 1, 1)
    assert np.allclose(fast, slow, rtol=1e-6, atol=1e-6)  # same int32 sums; the final multiply-add may be fused or not
    xq = lin.input_q.fake(x)
    assert np.abs(fast - (lin.weight @ xq)).max() < 1e-4


BODY_MODELS = {"csr": ("h96", dict(sparsity=80, pattern="unstructured")), "block4": ("h64", dict(sparsity=80, pattern="block4")),
               "int8": ("h64", dict(sparsity=80, pattern="block4", qat=True))}


@pytest.mark.parametrize("model_kind", list(BODY_MODELS))
@pytest.mark.parametrize("body", BODIES)
def test_every_kernel_body_matches_reference(tmp_path: Path, repos, body: str, model_kind: str) -> None:  # noqa: ANN001
    """The whole engine on each kernel body this CPU has (portable, AVX2, AVX-512; forced by ZOO_NO_AVX512 /
    ZOO_NO_AVX2 in a subprocess) against the numpy reference: fp32 within 1e-4 of the logits' scale, int8 within
    one step. Where no fast int8 body exists (portable), QAT Linears must stay fp32."""
    env = require(body)
    shape, kw = BODY_MODELS[model_kind]
    repo = repos(shape, **kw)
    inputs = feed(1200, 2, 23)  # 46 tokens: a tail past every 8- and 16-token step
    np.savez(tmp_path / "in.npz", **inputs)
    code = (
        "import json, sys, numpy as np\nfrom zoo.convert.repo import load_model\nfrom zoo.runtime.engine import compile\n"
        "from zoo.runtime import _kernels\nm = load_model(sys.argv[1]); e = compile(m, 2, backend='sparse')\n"
        "out = e(**dict(np.load(sys.argv[2]))); np.savez(sys.argv[3], **out)\n"
        "print(json.dumps({'features': _kernels.features(), 'kinds': e.kinds()}))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(repo), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], env=env,
                          capture_output=True, text=True, check=True)
    info = json.loads(proc.stdout.splitlines()[-1])
    assert (info["features"]["avx512"], info["features"]["avx2"]) == (body == "avx512", body != "portable"), info
    assert bool({"int8-block4", "jit-int8"} & set(info["kinds"])) == (model_kind == "int8" and body != "portable"), info
    model = load_model(repo)
    ref = forward(model, **inputs)
    out = np.load(tmp_path / "out.npz")
    head = model.qa
    step = head.input_q.scale * np.abs(head.weight).sum(axis=1).max() if head.input_q is not None else 0.0
    for name in model.output_names:
        scale = max(1.0, float(np.abs(ref[name]).max()))
        assert np.abs(out[name] - ref[name]).max() <= (step if model_kind == "int8" else 1e-4 * scale), (body, name)


def test_sequence_longer_than_positions_is_an_error(repos) -> None:  # noqa: ANN001
    model = load_model(repos("h64", pattern="dense"))
    with pytest.raises(ValueError, match="exceeds"):
        compile(model, threads=1)(np.zeros((1, 600), dtype=np.int64))


def test_auto_backend_follows_density(repos) -> None:  # noqa: ANN001
    from zoo.runtime.engine import Engine, OnnxRuntimeEngine

    dense = load_model(repos("h64", pattern="dense"))
    auto = compile(dense, threads=1)
    assert isinstance(auto, OnnxRuntimeEngine)
    inputs = feed(1200, 2, 9)
    assert np.abs(auto(**inputs)["start_logits"] - forward(dense, **inputs)["start_logits"]).max() < 1e-4
    assert isinstance(compile(load_model(repos("h64", sparsity=90, pattern="unstructured")), threads=1), Engine)
    from zoo.errors import ZooError

    with pytest.raises(ZooError, match="unknown backend"):
        compile(dense, backend="gpu")


@pytest.mark.parametrize("tokens", [100, 37, 256])
def test_int8_token_tiles_give_identical_sums(tokens: int) -> None:
    """Every token-tile width (128/64/32-token bodies and the masked tail) and the portable body agree exactly."""
    rng = np.random.default_rng(3)
    w8 = prune(rng.integers(-128, 128, size=(40, 96)).astype(np.float32), 70, "block4").astype(np.int8)
    from zoo.convert.bert import Linear, QParams

    lin = Linear("l", w8.astype(np.float32) * 0.02, rng.standard_normal(40).astype(np.float32), QParams(0.02, 0, -128, 127), w8,
                 QParams(0.04, 7, 0, 255))
    a = _int8("l", w8, lin.weight_q, lin.input_q, lin.bias, threads=2).arrays
    x8 = rng.integers(0, 256, size=(24, tokens, 4)).astype(np.uint8)
    outs = []
    for generic, tile in ((0, 128), (0, 64), (0, 32), (0, 16), (1, 0)):
        y = np.full((40, tokens), np.nan, np.float32)
        _kernels.spmm_i8(a["indptr"].ctypes.data, a["groups"].ctypes.data, a["wpk"].ctypes.data, a["scale"].ctypes.data,
                         a["offset"].ctypes.data, x8.ctypes.data, y.ctypes.data, 40, tokens, 2, generic, 0, tile)
        outs.append(y)
    sums = w8.astype(np.int64) @ x8.transpose(0, 2, 1).reshape(96, tokens).astype(np.int64)
    expected = sums * np.float32(0.04 * 0.02) + a["offset"][:, None]
    for y in outs:
        assert not np.isnan(y).any()
        assert np.allclose(y, expected, rtol=1e-5, atol=1e-4)
        assert np.allclose(y, outs[0], rtol=1e-6, atol=1e-6)


def test_gelu_epilogue_and_kernel_match_reference() -> None:
    """The fused GELU (Linear epilogue) and the standalone kernel follow the reference erf GELU to ~1e-6."""
    from zoo.convert.reference import gelu
    from zoo.runtime.workspace import Workspace

    x = np.concatenate([np.linspace(-12, 12, 4001, dtype=np.float32), np.float32([0.0, -0.0, 1e-8, -1e-8, 40.0, -40.0])])
    y = x.copy()
    _kernels.gelu(y.ctypes.data, y.size, 2)
    assert np.abs(y - gelu(x)).max() < 2e-6
    rng = np.random.default_rng(4)
    w = prune(rng.standard_normal((48, 64)).astype(np.float32), 80, "unstructured")
    xin = rng.standard_normal((64, 45)).astype(np.float32) * 3
    for kind in ("csr", "dense"):
        p = pack("w", w if kind == "csr" else rng.standard_normal((48, 64)).astype(np.float32), np.ones(48, np.float32), 2, kinds=(kind,))
        plain = p(xin, Workspace()).copy()
        fused = p(xin, Workspace(), gelu=True)
        assert np.abs(fused - gelu(plain)).max() < 1e-5


@pytest.mark.parametrize("tokens", [1, 19, 128])
def test_layernorm_kernel_adds_residual_and_normalizes_features(tokens: int) -> None:
    from zoo.convert.bert import LayerNorm
    from zoo.convert.reference import layer_norm
    from zoo.runtime.engine import layer_norm_ft

    rng = np.random.default_rng(5)
    x, r = (rng.standard_normal((72, tokens)).astype(np.float32) * 4 + 1 for _ in range(2))
    ln = LayerNorm(rng.standard_normal(72).astype(np.float32), rng.standard_normal(72).astype(np.float32), 1e-12)
    expected = layer_norm((x + r).T, ln).T
    assert np.abs(layer_norm_ft(x.copy(), r, ln, 2) - expected).max() < 1e-5
    assert np.abs(layer_norm_ft(x + r, None, ln, 2) - expected).max() < 1e-5


def test_out_of_range_ids_are_refused(repos) -> None:  # noqa: ANN001
    model = load_model(repos("h64", sparsity=80, pattern="unstructured"))
    engine = compile(model, threads=1, backend="sparse")
    vocab = model.config.vocab_size
    for ids, types in (([[1, vocab]], None), ([[-1, 2]], None), ([[1, 2]], [[0, 2]])):
        with pytest.raises(ValueError, match="must lie in"):
            engine(np.array(ids), token_type_ids=None if types is None else np.array(types))
    assert engine(np.array([[1, vocab - 1]]))["start_logits"].shape == (1, 2)


@pytest.mark.parametrize("gelu", [False, True])
def test_chunked_csr_accumulates_chunks_and_applies_gelu_once(gelu: bool) -> None:
    """An input-feature-chunked CSR Linear equals the whole product; GELU applies to the sum, not per chunk."""
    from zoo.convert.reference import gelu as ref_gelu
    from zoo.runtime.pack import PackedLinear, _csr_chunked
    from zoo.runtime.workspace import Workspace

    rng = np.random.default_rng(6)
    w = prune(rng.standard_normal((40, 1100)).astype(np.float32), 90, "unstructured")
    b = rng.standard_normal(40).astype(np.float32)
    p = PackedLinear("w", "csr-chunked", 40, 1100, b, _csr_chunked(w, 3), threads=2)
    assert np.array_equal(unpack(p), w) and p.nnz == np.count_nonzero(w)
    for tokens in (128, 21):
        x = rng.standard_normal((1100, tokens)).astype(np.float32)
        expected = w @ x + b[:, None]
        expected = ref_gelu(expected) if gelu else expected
        assert np.abs(p(x, Workspace(), gelu=gelu) - expected).max() < 1e-4


@pytest.mark.parametrize("kind", ["csr-rg8", "block4-rg8"])
def test_row_group_packing_matches_numpy_and_is_thread_count_exact(kind: str) -> None:
    """37 rows (the last group of 8 is part padding), row lengths that differ, token counts around the 16-token
    tile: the product is the reference's within 1e-4 and bit for bit the same on 1 and 2 threads."""
    from zoo.convert.reference import gelu as ref_gelu
    from zoo.runtime.workspace import Workspace

    rng = np.random.default_rng(8)
    w = prune(rng.standard_normal((37, 120)).astype(np.float32), 85, "block4" if kind.startswith("block4") else "unstructured")
    w[5] = 0.0  # an empty row
    b = rng.standard_normal(37).astype(np.float32)
    one, two = (pack("w", w, b, threads=n, kinds=(kind,)) for n in (1, 2))
    assert one.kind == kind and np.array_equal(unpack(one), w)
    for tokens in (1, 15, 16, 17, 133, 600):
        x = rng.standard_normal((120, tokens)).astype(np.float32)
        for gelu in (False, True):
            expected = w.astype(np.float64) @ x + b[:, None]
            expected = ref_gelu(expected) if gelu else expected
            a, c = one(x, Workspace(), gelu=gelu).copy(), two(x, Workspace(), gelu=gelu)
            assert np.abs(a - expected).max() < 1e-4 and np.array_equal(a, c), (tokens, gelu)


def test_long_inputs_take_the_row_group_packing() -> None:
    """A Linear whose 128-token winner is not a row-group packing keeps the row-group one for long inputs when that
    measured faster there; either way long and short inputs give the reference's product."""
    from zoo.runtime.pack import LONG_TOKENS, ROW_GROUP
    from zoo.runtime.workspace import Workspace

    rng = np.random.default_rng(9)
    w = prune(rng.standard_normal((64, 96)).astype(np.float32), 90, "unstructured")
    b = rng.standard_normal(64).astype(np.float32)
    p = pack("w", w, b, threads=2, kinds=("csr", "csr-rg8"))
    if p.kind == "csr" and p.long is None:  # the measurement kept CSR for long inputs too: exercise the switch anyway
        p.long = pack("w", w, b, threads=2, kinds=("csr-rg8",))
    assert p.kind in ROW_GROUP or p.long is None or p.long.kind == "csr-rg8"
    for tokens in (LONG_TOKENS - 1, LONG_TOKENS + 3):
        x = rng.standard_normal((96, tokens)).astype(np.float32)
        assert np.abs(p(x, Workspace()) - (w.astype(np.float64) @ x + b[:, None])).max() < 1e-4


@pytest.mark.parametrize(("batch", "seq"), [(1, 1024), (8, 128)])
def test_long_inputs_match_reference(tmp_path: Path, batch: int, seq: int) -> None:
    """1024 tokens in one call (a 4 KiB token stride) through every packing the engine may pick: the reference's
    answer within 1e-4."""
    spec = SynthSpec(layers=1, vocab_size=600, max_positions=1024, sparsity=90, pattern="unstructured", **SHAPES["h64"])
    model = load_model(write_repo(tmp_path, spec))
    inputs = feed(600, batch, seq)
    engine = compile(model, threads=2, backend="sparse")
    expected = forward(model, **inputs)
    for name, got in engine(**inputs).items():
        assert np.abs(got - expected[name]).max() < 1e-4, name
