"""The emitted machine-code kernels (zoo/runtime/_jit.h) and the native forward (_forward.h).

Emitted kernels must give the generic kernels' bits (fp32: the CSR kernel's summation order; int8: the same integer
sums) on random shapes, patterns and token counts; hostile packings are refused before any code is emitted; the
instructions decode as what the emitter means to write; a machine that refuses executable memory, or ZOO_NO_JIT=1,
falls back with one line; the native forward gives the op-by-op path's bits.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime.kernel_bodies import ROOT, cpu_name, env
from zoo.convert.bert import QParams
from zoo.convert.repo import load_model
from zoo.runtime import _kernels as K
from zoo.runtime import jit
from zoo.runtime.engine import compile
from zoo.runtime.pack import _csr, _int8, pack_linear
from zoo.synth import SynthSpec, write_repo

HAVE = K.features()
needs_jit = pytest.mark.skipif(not HAVE.get("jit"), reason=f"emitted kernels need AVX-512 on x86-64 Linux ({cpu_name()} lacks it)")
needs_vnni = pytest.mark.skipif(not (HAVE.get("jit") and HAVE.get("vnni")), reason=f"emitted int8 kernels need AVX-512 VNNI ({cpu_name()})")


def _sparse(rng: np.random.Generator, rows: int, cols: int, density: float) -> np.ndarray:
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[rng.random((rows, cols)) >= density] = 0
    return w


def _run_f32(native: object, x: np.ndarray, rows: int, act: int, threads: int = 2) -> np.ndarray:
    t = x.shape[1]
    y = np.full((rows, t), np.nan, np.float32)
    panels = np.full(jit.panel_elements(x.shape[0], t), np.nan, np.float32)  # every value read must be written first
    K.jit_run(native, x.ctypes.data, y.ctypes.data, t, panels.ctypes.data, threads, act)
    return y


def _csr_reference(a: dict, bias: np.ndarray, x: np.ndarray, rows: int, act: int) -> np.ndarray:
    y = np.empty((rows, x.shape[1]), np.float32)
    K.spmm_f32(0, a["indptr"].ctypes.data, a["cols"].ctypes.data, a["vals"].ctypes.data, bias.ctypes.data, x.ctypes.data,
               y.ctypes.data, rows, x.shape[0], x.shape[1], 2, act)
    return y


@needs_jit
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 70), cols=st.integers(1, 200), tokens=st.integers(1, 70), density=st.floats(0.0, 1.0),
       at=st.integers(1, 28), act=st.sampled_from([0, 1]), seed=st.integers(0, 2**31))
def test_emitted_fp32_gives_the_csr_kernels_bits(rows: int, cols: int, tokens: int, density: float, at: int, act: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w, bias = _sparse(rng, rows, cols, density), rng.standard_normal(rows).astype(np.float32)
    x = (rng.standard_normal((cols, tokens)) * 3).astype(np.float32)
    a = _csr(w)
    native = jit.build_f32(rows, cols, at, a, bias)
    assert native is not None
    got = _run_f32(native, x, rows, act)
    assert np.array_equal(got, _csr_reference(a, bias, x, rows, act))
    if not act:
        assert np.abs(got - (w.astype(np.float64) @ x + bias[:, None])).max() <= 1e-4 * max(1.0, float(np.abs(got).max()))


@needs_vnni
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 70), groups=st.integers(1, 64), tokens=st.integers(1, 70), density=st.floats(0.0, 1.0),
       at=st.integers(1, 28), act=st.sampled_from([0, 1]), zp=st.integers(0, 255), seed=st.integers(0, 2**31))
def test_emitted_int8_gives_the_vnni_kernels_integers(rows: int, groups: int, tokens: int, density: float, at: int, act: int, zp: int,
                                                      seed: int) -> None:
    rng = np.random.default_rng(seed)
    cols = 4 * groups
    keep = rng.random((rows, groups)) < density
    w8 = (rng.integers(-128, 128, (rows, groups, 4)) * keep[..., None]).reshape(rows, cols).astype(np.int8)
    bias = rng.standard_normal(rows).astype(np.float32)
    xq = QParams(0.03, zp, 0, 255)
    p = _int8("l", w8, QParams(0.02, 0, -128, 127), xq, bias, 2)
    x = (rng.standard_normal((cols, tokens)) * 4).astype(np.float32)
    native = jit.build_int8(rows, cols, at, p.arrays, bias)
    assert native is not None
    y = np.full((rows, tokens), np.nan, np.float32)
    panels = np.zeros(jit.panel_elements(cols, tokens), np.uint8)
    K.jit_run(native, x.ctypes.data, y.ctypes.data, tokens, panels.ctypes.data, 2, act, xq.scale, float(zp))
    x8 = np.empty((groups, tokens, 4), np.uint8)
    K.quantize(x.ctypes.data, x8.ctypes.data, cols, tokens, xq.scale, float(zp), 2)
    a = p.arrays
    ref = np.empty_like(y)
    K.spmm_i8(a["indptr"].ctypes.data, a["groups"].ctypes.data, a["wpk"].ctypes.data, a["scale"].ctypes.data, a["offset"].ctypes.data,
              x8.ctypes.data, ref.ctypes.data, rows, tokens, 2, 0, act)
    assert np.array_equal(y, ref)
    if not act:  # and those integers are the exact ones
        q = x8.transpose(0, 2, 1).reshape(cols, tokens).astype(np.int64)
        exact = (w8.astype(np.int64) @ q).astype(np.float64) * a["scale"][:, None] + a["offset"][:, None]
        assert np.abs(y - exact).max() <= 1e-5 * max(1.0, float(np.abs(exact).max()))


def _csr_args(a: dict, rows: int, cols: int, at: int = 8) -> tuple:
    bias = np.zeros(rows, np.float32)
    return (0, rows, cols, at, a["indptr"].ctypes.data, a["indptr"].size, a["cols"].ctypes.data, a["vals"].ctypes.data,
            a["cols"].size, bias.ctypes.data, 0, 0)


@needs_jit
@pytest.mark.parametrize("damage", ["column past the input", "negative column", "descending columns", "repeated column",
                                    "row pointers short", "row pointers decrease", "rows per block 0", "rows per block 29"])
def test_a_hostile_packed_pattern_is_refused_never_run(damage: str) -> None:
    rng = np.random.default_rng(3)
    rows, cols = 16, 32
    a = {k: v.copy() for k, v in _csr(_sparse(rng, rows, cols, 0.5)).items()}
    at = 8
    if damage == "column past the input":
        a["cols"][5] = cols
    elif damage == "negative column":
        a["cols"][0] = -1
    elif damage == "descending columns":
        r = int(np.argmax(np.diff(a["indptr"]) >= 2))
        s = int(a["indptr"][r])
        a["cols"][s], a["cols"][s + 1] = a["cols"][s + 1], a["cols"][s]
    elif damage == "repeated column":
        r = int(np.argmax(np.diff(a["indptr"]) >= 2))
        s = int(a["indptr"][r])
        a["cols"][s + 1] = a["cols"][s]
    elif damage == "row pointers short":
        a["indptr"][-1] -= 1
    elif damage == "row pointers decrease":
        a["indptr"][3] = a["indptr"][4] + 1
    else:
        at = int(damage.rsplit(" ", 1)[1])
    with pytest.raises(ValueError, match="refusing a packed pattern|out of range"):
        K.jit_build(*_csr_args(a, rows, cols, at))


@needs_vnni
def test_an_int8_group_index_outside_the_input_is_refused() -> None:
    w8 = np.zeros((4, 16), np.int8)
    w8[1, 4] = 3
    p = _int8("l", w8, QParams(0.1, 0, -128, 127), QParams(0.1, 0, 0, 255), np.zeros(4, np.float32), 1)
    groups = p.arrays["groups"].copy()
    groups[0] = 4  # 16 features are 4 groups: 0-3
    arrays = {**p.arrays, "groups": groups}
    with pytest.raises(ValueError, match="outside the input"):
        jit.build_int8(4, 16, 4, arrays, p.bias)


@needs_jit
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_emitted_instructions_decode_as_meant(tmp_path: Path) -> None:
    """objdump reads the code as the emitter means it: one broadcast of each row's bias, one activation load per used
    feature, one FMA per non-zero, with operands in the registers and offsets the emitter assigned, then the stores."""
    rng = np.random.default_rng(9)
    rows, cols, at = 30, 600, 28  # 600 features: displacements past the disp8 range, so the base registers move
    w = _sparse(rng, rows, cols, 0.3)
    a = _csr(w)
    native = jit.build_f32(rows, cols, at, a, np.zeros(rows, np.float32))
    code, _ = K.jit_code(native)
    (tmp_path / "k.bin").write_bytes(code)
    text = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64", str(tmp_path / "k.bin")], capture_output=True, text=True,
                          check=True).stdout
    ops = [line.split("\t")[2].split()[0] for line in text.splitlines() if line.count("\t") >= 2]
    assert "(bad)" not in ops
    assert ops.count("vfmadd231ps") == a["vals"].size
    assert ops.count("vbroadcastss") == rows
    first_block = w[:at] != 0
    assert ops.count("vmovups") == int(first_block.any(0).sum() + (w[at:] != 0).any(0).sum()) + rows  # loads + stores
    assert ops.count("ret") == 2 and ops.count("vzeroupper") == 2
    assert set(ops) <= {"vbroadcastss", "vmovups", "vfmadd231ps", "add", "vzeroupper", "ret"}
    fmas = [line for line in text.splitlines() if "vfmadd231ps" in line]
    assert all("{1to16}" in line and "(%rsi)" in line for line in fmas)


PLAN_SPEC = dict(hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = {}
    for name, kw in {"fp32": dict(sparsity=85, pattern="unstructured"), "qat": dict(sparsity=80, pattern="block4", qat=True)}.items():
        out[name] = load_model(write_repo(tmp_path_factory.mktemp(name), SynthSpec(layers=2, seed=4, **PLAN_SPEC, **kw)))
    return out


@pytest.mark.parametrize("kind", ["fp32", "qat"])
@pytest.mark.parametrize(("batch", "seq"), [(1, 5), (2, 24), (3, 40), (1, 128)])
def test_the_native_forward_gives_the_op_by_op_bits(models: dict, kind: str, batch: int, seq: int) -> None:
    engine = compile(models[kind], threads=2, backend="sparse")
    assert engine.plan is not None
    rng = np.random.default_rng(batch * seq)
    ids = rng.integers(0, 1200, (batch, seq))
    mask = np.ones_like(ids)
    mask[-1, max(1, seq // 3):] = 0
    types = (np.arange(seq)[None] >= seq // 2).astype(np.int64).repeat(batch, 0)
    native = engine(ids, mask, types)
    stepwise = dataclasses.replace(engine, native=False)
    assert stepwise.plan is None
    expected = stepwise(ids, mask, types)
    for name in expected:
        assert np.array_equal(native[name], expected[name]), name


@needs_vnni
@pytest.mark.parametrize("kind", ["fp32", "qat"])
@pytest.mark.parametrize("emitted", ["qkv ffn_in ffn_out", "qkv ffn_in", "ffn_out", "ffn_in", ""])
def test_every_mix_of_emitted_and_generic_linears_gives_the_op_by_op_bits(models: dict, kind: str, emitted: str) -> None:
    """The producers that write their consumer's panels (LayerNorm -> qkv / ffn_in, ffn_in -> ffn_out) and the
    consumers that write their own, in every arrangement the packer may choose."""
    model = models[kind]
    jit_kind, generic = ("jit-csr", "csr") if kind == "fp32" else ("jit-int8", "int8-block4")
    roles = ("qkv", "attn_out", "ffn_in", "ffn_out")
    layers = []
    for layer in model.layers:
        lins = {"qkv": [layer.query, layer.key, layer.value], "attn_out": layer.attn_out, "ffn_in": layer.ffn_in, "ffn_out": layer.ffn_out}
        packed = {r: pack_linear(lins[r], 2, kinds=(jit_kind if r in emitted.split() else generic,)) for r in roles}
        assert all((p.kind == jit_kind) == (r in emitted.split()) for r, p in packed.items())
        layers.append(packed)
    base = compile(model, threads=2, backend="sparse")
    engine = dataclasses.replace(base, layers=[dataclasses.replace(old, **new) for old, new in zip(base.layers, layers, strict=True)])
    stepwise = dataclasses.replace(engine, native=False)
    rng = np.random.default_rng(len(emitted))
    for batch, seq in ((1, 24), (2, 37)):
        ids = rng.integers(0, 1200, (batch, seq))
        a, b = engine(ids), stepwise(ids)
        for name in a:
            assert np.array_equal(a[name], b[name]), (name, batch, seq)


@needs_jit
def test_long_inputs_take_their_own_packing_in_the_native_forward(models: dict) -> None:
    """A Linear whose 128-token winner is CSR but whose emitted code wins on long inputs (batches) keeps both; the
    native forward switches at LONG_TOKENS and gives the op-by-op bits on either side."""
    from zoo.runtime.pack import LONG_TOKENS

    base = compile(models["fp32"], threads=2, backend="sparse")
    layers = []
    for layer, src in zip(base.layers, models["fp32"].layers, strict=True):
        short = pack_linear(src.ffn_in, 2, kinds=("csr",))
        short.long = pack_linear(src.ffn_in, 2, kinds=("jit-csr",))
        assert short.long.kind == "jit-csr"
        layers.append(dataclasses.replace(layer, ffn_in=short))
    engine = dataclasses.replace(base, layers=layers)
    assert engine.plan is not None and engine.plan.covers(10 * LONG_TOKENS)
    stepwise = dataclasses.replace(engine, native=False)
    rng = np.random.default_rng(5)
    for batch, seq in ((1, 100), (6, 100)):  # 104 and 624 padded tokens: below and above LONG_TOKENS
        ids = rng.integers(0, 1200, (batch, seq))
        a, b = engine(ids), stepwise(ids)
        for name in a:
            assert np.array_equal(a[name], b[name]), (name, batch)


def test_the_plan_refuses_linears_that_do_not_chain(models: dict) -> None:
    from zoo.runtime import plan

    engine = compile(models["fp32"], threads=1, backend="sparse")
    layer = engine.layers[0]
    keep: list[object] = []
    linears = [plan._linear(p, keep) for p in (layer.attn_out, layer.attn_out, layer.ffn_in, layer.ffn_out)]  # qkv of 64 rows
    row = (*linears, *layer.ln_attn.ptrs, layer.ln_attn.eps, *layer.ln_out.ptrs, layer.ln_out.eps, layer.attn_qparams.ctypes.data,
           (None,) * 4)
    with pytest.raises(ValueError, match="do not chain"):
        K.plan_new([row], *engine._table_ptrs, *engine._embed_norm.ptrs, 1e-12, 64, 4, 128, ())


CHILD = """
import json, sys, numpy as np
{pre}
from zoo.convert.repo import load_model
from zoo.runtime.engine import compile_sparse
m = load_model(sys.argv[1]); e = compile_sparse(m, 2, kinds=("jit-int8",))
out = e(np.arange(40).reshape(2, 20) % 1200)
np.savez(sys.argv[2], **out)
print(json.dumps(e.kinds()))
"""

MDWE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: no mapping may become executable
    print("MDWE-UNSUPPORTED"); raise SystemExit(0)
"""


def _child(repo: Path, out: Path, pre: str = "", extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD.format(pre=pre), str(repo), str(out)], env={**env("avx512"), **(extra or {})},
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def qat_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("qatrepo"), SynthSpec(layers=1, seed=2, sparsity=80, pattern="block4", qat=True, **PLAN_SPEC))


@needs_jit
@pytest.mark.parametrize("how", ["ZOO_NO_JIT=1", "executable memory refused"])
def test_without_emitted_code_the_generic_kernels_give_the_same_answers(tmp_path: Path, qat_repo: Path, how: str) -> None:
    base = _child(qat_repo, tmp_path / "jit.npz")
    assert base.returncode == 0, base.stderr
    assert "jit-int8" in base.stdout and "machine-code" not in base.stderr
    if how == "ZOO_NO_JIT=1":
        proc = _child(qat_repo, tmp_path / "off.npz", extra={"ZOO_NO_JIT": "1"})
        reason = "ZOO_NO_JIT is set"
    else:
        proc = _child(qat_repo, tmp_path / "off.npz", pre=MDWE)
        if "MDWE-UNSUPPORTED" in proc.stdout:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3): cannot make it refuse executable memory")
        reason = "executable memory refused"
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "machine-code" in line]
    assert len(lines) == 1 and reason in lines[0] and "generic kernels" in lines[0], proc.stderr
    assert "jit" not in proc.stdout, proc.stdout
    with np.load(tmp_path / "jit.npz") as a, np.load(tmp_path / "off.npz") as b:
        for name in a.files:
            assert np.array_equal(a[name], b[name]), name  # int8 sums are exact whichever kernel computes them


def test_no_executable_and_writable_mapping_is_left(qat_repo: Path) -> None:
    """W^X: after packing, no mapping of the process is writable and executable at once."""
    compile(load_model(qat_repo), threads=1, backend="sparse")
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    assert not [line for line in maps.splitlines() if line.split()[1].startswith("rwx")]


@pytest.mark.parametrize("q", [(0.05, 7, 0, 255), (0.013, 128, 0, 255), (0.02, 0, -128, 127)])
def test_the_tables_fake_quantized_in_c_equal_qparams_fake(q: tuple) -> None:
    from zoo.runtime.engine import _fake_quantized

    params = QParams(*q)
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((501, 77)) * 4).astype(np.float32)
    x.flat[::13] = (np.float32(params.scale) * (np.arange(x.size)[::13] % 9 - 4.5)).astype(np.float32)  # exact ties: half to even
    assert np.array_equal(_fake_quantized(params, x, 2), params.fake(x))
