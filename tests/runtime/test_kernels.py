"""Every kernel body this CPU can run (portable, AVX2, AVX-512) against numpy, on token counts that leave tails
(not multiples of 8 or 16) so the vector steps, the masked or portable tails and the token tiling all run.

Each body runs in its own process (the body is fixed when ``_kernels`` loads); the child computes every kernel's
output on the inputs of ``cases()`` and the parent checks them against numpy in float64.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.runtime.kernel_bodies import BODIES, ROOT, env, features, require
from zoo.convert.reference import gelu
from zoo.synth import prune

TOKENS = (1, 7, 13, 37, 64, 71, 128, 133, 200)
GELU, ACCUMULATE = 1, 2
FLAGS = (0, GELU, ACCUMULATE, ACCUMULATE | GELU)
ATTENTION = ((2, 1, 2, 16), (2, 13, 2, 16), (2, 37, 2, 16), (1, 50, 1, 64), (1, 128, 2, 64))  # batch, seq, heads, d
ROWS, IN = 24, 96


def cases() -> dict[str, np.ndarray]:
    """The kernels' inputs, the same in parent and child (seeded)."""
    rng = np.random.default_rng(11)
    c: dict[str, np.ndarray] = {
        "w/csr": prune(rng.standard_normal((ROWS, IN)).astype(np.float32), 85, "unstructured"),
        "w/block4": prune(rng.standard_normal((ROWS, IN)).astype(np.float32), 75, "block4"),
        "w8": prune(rng.integers(-128, 128, size=(ROWS, IN)).astype(np.float32), 70, "block4").astype(np.int8),
        "bias": rng.standard_normal(ROWS).astype(np.float32),
        "gamma": rng.standard_normal(72).astype(np.float32), "beta": rng.standard_normal(72).astype(np.float32),
        "gelu": np.concatenate([np.linspace(-12, 12, 9001, dtype=np.float32), np.float32([0.0, -0.0, 1e-8, 40.0, -40.0])]),
    }
    for t in TOKENS:
        c[f"x/{t}"] = rng.standard_normal((IN, t)).astype(np.float32) * 2
        c[f"y0/{t}"] = rng.standard_normal((ROWS, t)).astype(np.float32)
        c[f"x8/{t}"] = rng.integers(0, 256, size=(IN // 4, t, 4)).astype(np.uint8)
        c[f"ln/{t}"] = rng.standard_normal((2, 72, t)).astype(np.float32) * 4 + 1
    for b, s, h, d in ATTENTION:
        c[f"qkv/{b}x{s}x{h}x{d}"] = rng.standard_normal((3 * h * d, b * s)).astype(np.float32)
        mask = np.zeros((b, s), np.float32)
        mask[-1, max(1, s // 2):] = -10000.0  # the last sequence is half padding
        c[f"mask/{b}x{s}x{h}x{d}"] = mask
    return c


def _packed(kind: str, w: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    from zoo.runtime.pack import pack

    return pack("w", w, bias, threads=1, kinds=(kind,)).arrays


def outputs() -> dict[str, np.ndarray]:
    """Every kernel on ``cases()``, with whichever body this process loaded."""
    from zoo.convert.bert import Linear, QParams
    from zoo.runtime import _kernels as K
    from zoo.runtime.pack import _int8

    c, out = cases(), {}
    for kind, code in (("csr", 0), ("block4", 1)):
        a = _packed(kind, c[f"w/{kind}"], c["bias"])
        for t in TOKENS:
            for flags in FLAGS:
                y = c[f"y0/{t}"].copy()
                K.spmm_f32(code, a["indptr"].ctypes.data, a["cols"].ctypes.data, a["vals"].ctypes.data, c["bias"].ctypes.data,
                           c[f"x/{t}"].ctypes.data, y.ctypes.data, ROWS, IN, t, 2, flags)
                out[f"spmm/{kind}/{t}/{flags}"] = y
    for kind, nw in (("csr-rg8", 1), ("block4-rg8", 4)):
        a = _packed(kind, c[f"w/{kind.split('-')[0]}"], c["bias"])
        for t in TOKENS:
            xp = np.full(-(-t // 16) * 16 * IN, np.nan, np.float32)  # scratch: every value read must be written first
            for flags in FLAGS:
                y = c[f"y0/{t}"].copy()
                K.spmm_rg(nw, a["gptr"].ctypes.data, a["rows"].ctypes.data, a["cols"].ctypes.data, a["vals"].ctypes.data,
                          c["bias"].ctypes.data, c[f"x/{t}"].ctypes.data, y.ctypes.data, a["gptr"].size - 1, IN, t, xp.ctypes.data,
                          2, flags)
                out[f"spmm/{kind}/{t}/{flags}"] = y
    wq, xq = QParams(0.02, 0, -128, 127), QParams(0.04, 7, 0, 255)
    lin = Linear("l", c["w8"].astype(np.float32) * 0.02, c["bias"], wq, c["w8"], xq)
    a = _int8("l", c["w8"], wq, xq, lin.bias, 2).arrays
    for t in TOKENS:
        for act in (0, GELU):
            y = np.full((ROWS, t), np.nan, np.float32)
            K.spmm_i8(a["indptr"].ctypes.data, a["groups"].ctypes.data, a["wpk"].ctypes.data, a["scale"].ctypes.data,
                      a["offset"].ctypes.data, c[f"x8/{t}"].ctypes.data, y.ctypes.data, ROWS, t, 2, 0, act)
            out[f"int8/{t}/{act}"] = y
        x = c[f"x/{t}"]
        x8 = np.zeros((IN // 4, t, 4), np.uint8)
        K.quantize(x.ctypes.data, x8.ctypes.data, IN, t, 0.04, 7.0, 2)
        out[f"quantize/{t}"] = x8
        xs, rs = c[f"ln/{t}"]
        for residual in (True, False):
            o = np.empty_like(xs)
            K.layernorm(xs.ctypes.data, rs.ctypes.data if residual else 0, o.ctypes.data, c["gamma"].ctypes.data,
                        c["beta"].ctypes.data, 1e-12, 72, t, 2)
            out[f"layernorm/{t}/{residual}"] = o
    qp = np.zeros(12, np.float32)
    for b, s, h, d in ATTENTION:
        key = f"{b}x{s}x{h}x{d}"
        o = np.full((h * d, b * s), np.nan, np.float32)
        K.attention(c[f"qkv/{key}"].ctypes.data, o.ctypes.data, c[f"mask/{key}"].ctypes.data, b, s, h, d,
                    float(1 / np.sqrt(d)), qp.ctypes.data, 2)
        out[f"attention/{key}"] = o
    g = c["gelu"].copy()
    K.gelu(g.ctypes.data, g.size, 2)
    out["gelu"] = g
    return out


@pytest.fixture(scope="module", params=BODIES)
def body(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The outputs of one kernel body, computed in a subprocess that forces it."""
    name = request.param
    env = require(name)
    active = features(name)
    assert active["avx512"] == (name == "avx512") and active["avx2"] == (name != "portable"), active
    path = tmp_path_factory.mktemp(name) / "out.npz"
    code = "import sys, numpy as np\nfrom tests.runtime.test_kernels import outputs\nnp.savez(sys.argv[1], **outputs())"
    subprocess.run([sys.executable, "-c", code, str(path)], env=env, cwd=ROOT, check=True)
    with np.load(path) as data:
        return dict(data)


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return cases()


def _close(got: np.ndarray, expected: np.ndarray, tol: float) -> bool:
    return bool(np.isfinite(got).all() and np.abs(got - expected).max() <= tol * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("kind", ["csr", "block4", "csr-rg8", "block4-rg8"])
def test_sparse_linear_bias_gelu_and_accumulate(body: dict, inputs: dict, kind: str) -> None:
    """``Y = W X + b`` (ACCUMULATE: ``Y += W X``, no bias), GELU applied once to the result; the row-group packings
    (24 rows: three groups of 8 with padded entries) over token counts that leave partial tiles."""
    w = inputs[f"w/{kind.split('-')[0]}"].astype(np.float64)
    for t in TOKENS:
        product = w @ inputs[f"x/{t}"].astype(np.float64)
        for flags in FLAGS:
            expected = product + (inputs[f"y0/{t}"] if flags & ACCUMULATE else inputs["bias"][:, None])
            expected = gelu(expected) if flags & GELU else expected
            assert _close(body[f"spmm/{kind}/{t}/{flags}"], expected, 1e-5), (kind, t, flags)


def test_int8_block4_sums_exactly(body: dict, inputs: dict) -> None:
    from zoo.convert.bert import QParams
    from zoo.runtime.pack import _int8

    a = _int8("l", inputs["w8"], QParams(0.02, 0, -128, 127), QParams(0.04, 7, 0, 255), inputs["bias"], 1).arrays
    for t in TOKENS:
        x = inputs[f"x8/{t}"].transpose(0, 2, 1).reshape(IN, t).astype(np.int64)
        expected = (inputs["w8"].astype(np.int64) @ x) * np.float64(a["scale"][0]) + a["offset"][:, None]
        assert _close(body[f"int8/{t}/0"], expected, 1e-6), t
        assert _close(body[f"int8/{t}/{GELU}"], gelu(expected), 1e-6), t


def test_quantize_interleaves_four_features(body: dict, inputs: dict) -> None:
    for t in TOKENS:
        x = inputs[f"x/{t}"]
        q = np.clip(np.rint(x / np.float32(0.04)) + 7, 0, 255).astype(np.uint8)
        assert np.array_equal(body[f"quantize/{t}"], q.reshape(IN // 4, 4, t).transpose(0, 2, 1)), t


def test_layernorm_with_and_without_residual(body: dict, inputs: dict) -> None:
    for t in TOKENS:
        xs, rs = inputs[f"ln/{t}"].astype(np.float64)
        for residual in (True, False):
            s = xs + rs if residual else xs
            norm = (s - s.mean(0)) / np.sqrt(s.var(0) + 1e-12)
            expected = norm * inputs["gamma"][:, None] + inputs["beta"][:, None]
            assert _close(body[f"layernorm/{t}/{residual}"], expected, 1e-5), (t, residual)


def test_attention_masked_softmax(body: dict, inputs: dict) -> None:
    """Both products (odd sequence lengths: column and row tails) and the masked column softmax."""
    for b, s, h, d in ATTENTION:
        key = f"{b}x{s}x{h}x{d}"
        qkv, mask = inputs[f"qkv/{key}"].astype(np.float64), inputs[f"mask/{key}"]
        expected = np.empty((h * d, b * s))
        for i in range(b):
            for j in range(h):
                q, k, v = (qkv[(part * h + j) * d:(part * h + j + 1) * d, i * s:(i + 1) * s] for part in range(3))
                scores = q.T @ k / np.sqrt(d) + mask[i][None, :]
                p = np.exp(scores - scores.max(1, keepdims=True))
                expected[j * d:(j + 1) * d, i * s:(i + 1) * s] = v @ (p / p.sum(1, keepdims=True)).T
        assert _close(body[f"attention/{key}"], expected, 1e-5), key


def test_gelu_span(body: dict, inputs: dict) -> None:
    x = inputs["gelu"]
    assert np.abs(body["gelu"] - gelu(x.astype(np.float64))).max() < 2e-6


@pytest.mark.parametrize(("given", "effective"), [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "active"}, "ACTIVE")])
def test_openmp_threads_sleep_unless_the_user_chose(given: dict, effective: str) -> None:
    """Spinning OpenMP threads collapse the engine when another process shares a core: zoo.runtime makes libgomp's
    wait policy passive before the kernels load it, and leaves a user's own setting alone."""
    base = {k: v for k, v in env("avx512").items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    proc = subprocess.run([sys.executable, "-c", "import zoo.runtime.engine"], env={**base, **given, "OMP_DISPLAY_ENV": "TRUE"},
                          capture_output=True, text=True, check=True)
    if "OMP_WAIT_POLICY" not in proc.stderr:
        pytest.skip("the kernels' OpenMP runtime is not libgomp (no OMP_DISPLAY_ENV report)")
    assert f"OMP_WAIT_POLICY = '{effective}'" in proc.stderr
