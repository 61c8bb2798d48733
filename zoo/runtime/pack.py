"""Pack each encoder Linear for the kernels: dense (BLAS), CSR fp32, block-4 CSR fp32 (each also in row groups), or
int8 block-4, each sparse one also as emitted machine code (``jit-csr``, ``jit-int8``: see ``zoo.runtime.jit``).

fp32 Linears are packed every way their weights allow and the fastest on this machine is kept
(measured on a 128-token input), so the choice follows speed, not the model's name. QAT Linears whose
weights are int8 per-tensor symmetric take the int8 path: uint8 activations x int8 weights summed in
int32 (VNNI), then one multiply-add per output folds the scales, the activation zero point and the bias.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from zoo.convert.bert import Linear, QParams
from zoo.runtime import _kernels as K
from zoo.runtime import jit
from zoo.runtime.choices import Choices, digest
from zoo.runtime.workspace import Workspace

# BLAS keeps its own spinning thread pool, which fights the kernels' OpenMP threads for the cores; dense BLAS is
# therefore only a candidate when a weight is mostly non-zero (dense models, where it wins by a wide margin).
DENSE_ABOVE = 0.6
# Kernel flags (see _kernels.c): GELU in the epilogue; ACCUMULATE adds into Y (CSR chunks after the first).
GELU, ACCUMULATE = 1, 2
# A CSR Linear whose input (features x 128 tokens, fp32) exceeds this is also tried split into input-feature
# chunks that each fit (one product per chunk, accumulating): the FFN output Linear, whose 3072 x 128 input
# does not fit a core's L2, runs ~15% faster in 3 chunks; inputs that fit gain nothing (measured).
CHUNK_BYTES = 512 << 10
# The row-group packings (``csr-rg8``, ``block4-rg8``): rows sorted by non-zero count, RG at a time, interleaved (see
# _kernels.c). RG and the widest token tile must match the kernel's RG and RG_TT.
RG, RG_TT = 8, 16
ROW_GROUP = {"csr-rg8": "csr", "block4-rg8": "block4"}
# From this many tokens on (batches, long sequences) a Linear runs its row-group packing where that one, measured on
# 2 x LONG_TOKENS tokens, beats the 128-token winner: the CSR kernels stream activation rows whose stride reaches
# 4 KiB at 1024 tokens (cache-set aliasing: 6x the L2 misses in cachegrind), the row-group kernel reads packed token
# tiles (Zen 3, 2 threads, 1024 tokens: 1.2-2x faster on BERT shapes at 90% unstructured; CSR wins at 128 there).
LONG_TOKENS = 512
# every fp32 packing (the candidates pack() times by default)
FP32_KINDS = ("dense", "csr", "csr-chunked", "block4", "csr-rg8", "block4-rg8", "jit-csr")


@dataclass(repr=False)
class PackedLinear:
    """One Linear (or fused Q/K/V) ready for ``Y[out, T] = W X[in, T] + b``."""

    name: str
    kind: str
    out_features: int
    in_features: int
    bias: np.ndarray
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    input_q: QParams | None = None
    threads: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    long: PackedLinear | None = None  # the packing used from LONG_TOKENS tokens on, when it is another one
    native: object | None = None  # jit kinds: the capsule of emitted code (owns its code and weight stream)
    rows_per_block: int = 0  # jit kinds: output rows per emitted block
    _ptrs: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def ptrs(self) -> dict[str, int]:
        """Data addresses of the packed arrays and bias (fixed once packed; built whole, then published, so a
        concurrent first call never sees a half-filled table)."""
        if not self._ptrs:
            self._ptrs = {**{k: v.ctypes.data for k, v in self.arrays.items()}, "bias": self.bias.ctypes.data}
        return self._ptrs

    def __repr__(self) -> str:
        return f"PackedLinear({self.name!r}, {self.label}, {self.out_features}x{self.in_features}, nnz={self.nnz})"

    @property
    def label(self) -> str:
        """The kind, with the rows per block for emitted code (``jit-csr/28``): what timings are keyed by."""
        return f"{self.kind}/{self.rows_per_block}" if self.native is not None else self.kind

    @property
    def nnz(self) -> int:
        return KINDS[self.kind].nnz(self.arrays)

    def __call__(self, x: np.ndarray, ws: Workspace, gelu: bool = False) -> np.ndarray:
        """``W x + b`` (then GELU, fused into the kernel's epilogue) into a workspace buffer."""
        t = x.shape[1]
        if self.long is not None and t >= LONG_TOKENS:
            return self.long(x, ws, gelu)
        y = ws.get(self.name, (self.out_features, t))
        kind = KINDS[self.kind]
        if self.input_q is not None and not kind.quantizes_input:
            x = np.ascontiguousarray(self.input_q.fake(x))
        kind.run(self, x, y, ws, GELU if gelu else 0)
        return y


@dataclass(frozen=True)
class Kind:
    """One packing, as the engine meets it: how to run it, count its stored weights, and turn it back into the dense
    weight it stands for (round-trip checks)."""

    run: Callable[[PackedLinear, np.ndarray, np.ndarray, Workspace, int], None]  # (linear, x, y, workspace, epilogue flags)
    nnz: Callable[[dict[str, np.ndarray]], int]
    unpack: Callable[[PackedLinear], np.ndarray]
    quantizes_input: bool = False  # the kernel quantizes its fp32 input itself (no fake-quant copy first)


def _run_dense(p: PackedLinear, x: np.ndarray, y: np.ndarray, ws: Workspace, act: int) -> None:
    np.matmul(p.arrays["weight"], x, out=y)
    y += p.bias[:, None]
    if act:
        K.gelu(ws.ptr(y), y.size, p.threads)


def _run_csr(p: PackedLinear, x: np.ndarray, y: np.ndarray, ws: Workspace, act: int) -> None:
    a = p.ptrs()
    K.spmm_f32(0 if p.kind == "csr" else 1, a["indptr"], a["cols"], a["vals"], a["bias"], ws.ptr(x), ws.ptr(y), p.out_features,
               p.in_features, x.shape[1], p.threads, act)


def _run_chunked(p: PackedLinear, x: np.ndarray, y: np.ndarray, ws: Workspace, act: int) -> None:
    a, n = p.ptrs(), len(p.arrays) // 3
    for j in range(n):
        flags = (ACCUMULATE if j else 0) | (act if j == n - 1 else 0)
        K.spmm_f32(0, a[f"indptr{j}"], a[f"cols{j}"], a[f"vals{j}"], a["bias"], ws.ptr(x), ws.ptr(y), p.out_features,
                   p.in_features, x.shape[1], p.threads, flags)


def _run_row_groups(p: PackedLinear, x: np.ndarray, y: np.ndarray, ws: Workspace, act: int) -> None:
    a, t = p.ptrs(), x.shape[1]
    xp = ws.get(p.name + ".xp", (-(-t // RG_TT) * RG_TT * p.in_features,))
    K.spmm_rg(1 if p.kind == "csr-rg8" else 4, a["gptr"], a["rows"], a["cols"], a["vals"], a["bias"], ws.ptr(x), ws.ptr(y),
              p.arrays["gptr"].size - 1, p.in_features, t, ws.ptr(xp), p.threads, act)


def _run_int8(p: PackedLinear, x: np.ndarray, y: np.ndarray, ws: Workspace, act: int) -> None:
    q, a, t = p.input_q, p.ptrs(), x.shape[1]
    assert q is not None
    x8 = ws.get(p.name + ".x8", (p.in_features // 4, t, 4), np.uint8)
    K.quantize(ws.ptr(x), ws.ptr(x8), p.in_features, t, float(q.scale), float(q.zero_point), p.threads)
    K.spmm_i8(a["indptr"], a["groups"], a["wpk"], a["scale"], a["offset"], ws.ptr(x8), ws.ptr(y), p.out_features, t, p.threads, 0, act)


def _run_jit(p: PackedLinear, x: np.ndarray, y: np.ndarray, ws: Workspace, act: int) -> None:
    t = x.shape[1]
    if p.kind == "jit-int8":
        q = p.input_q
        assert q is not None
        panels = ws.get(p.name + ".panels8", (jit.panel_elements(p.in_features, t),), np.uint8)
        K.jit_run(p.native, ws.ptr(x), ws.ptr(y), t, ws.ptr(panels), p.threads, act, float(q.scale), float(q.zero_point))
    else:
        panels = ws.get(p.name + ".panels", (jit.panel_elements(p.in_features, t),))
        K.jit_run(p.native, ws.ptr(x), ws.ptr(y), t, ws.ptr(panels), p.threads, act)


def _rows(p: PackedLinear) -> np.ndarray:
    """The output row of every stored entry of a row-major (CSR-like) packing."""
    return np.repeat(np.arange(p.out_features), np.diff(p.arrays["indptr"]))


def _unpack_csr(p: PackedLinear) -> np.ndarray:
    w = np.zeros((p.out_features, p.in_features), dtype=np.float32)
    w[_rows(p), p.arrays["cols"]] = p.arrays["vals"]
    return w


def _unpack_blocks(p: PackedLinear, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
    w = np.zeros((p.out_features, p.in_features), dtype=np.float32)
    rows = _rows(p)
    for j in range(4):
        w[rows, cols + j] = vals[:, j]
    return w


def _unpack_chunked(p: PackedLinear) -> np.ndarray:
    return sum((_unpack_csr(PackedLinear(p.name, "csr", p.out_features, p.in_features, p.bias, c)) for c in chunks(p.arrays)),
               np.zeros((p.out_features, p.in_features), dtype=np.float32))


def _unpack_row_groups(p: PackedLinear) -> np.ndarray:
    a, nw = p.arrays, 1 if p.kind == "csr-rg8" else 4
    w = np.zeros((p.out_features, p.in_features), dtype=np.float32)
    group = np.repeat(np.arange(a["gptr"].size - 1), np.diff(a["gptr"]) * RG)
    rows = a["rows"][group * RG + np.arange(a["cols"].size) % RG]
    keep = rows >= 0
    vals = a["vals"].reshape(-1, nw)
    for j in range(nw):
        np.add.at(w, (rows[keep], a["cols"][keep] + j), vals[keep, j])
    return w


def _block_count(a: dict[str, np.ndarray]) -> int:
    return int(a["indptr"][-1]) * 4


def _unpack_int8(p: PackedLinear) -> np.ndarray:
    return _unpack_blocks(p, p.arrays["groups"] * 4, p.arrays["wpk"].view(np.int8).reshape(-1, 4))


KINDS: dict[str, Kind] = {
    "dense": Kind(_run_dense, lambda a: int(np.count_nonzero(a["weight"])), lambda p: p.arrays["weight"].copy()),
    "csr": Kind(_run_csr, lambda a: int(a["vals"].size), _unpack_csr),
    "csr-chunked": Kind(_run_chunked, lambda a: sum(int(c["vals"].size) for c in chunks(a)), _unpack_chunked),
    "block4": Kind(_run_csr, _block_count, lambda p: _unpack_blocks(p, p.arrays["cols"], p.arrays["vals"].reshape(-1, 4))),
    "csr-rg8": Kind(_run_row_groups, lambda a: int(np.count_nonzero(a["vals"])), _unpack_row_groups),
    "block4-rg8": Kind(_run_row_groups, lambda a: int(np.count_nonzero(a["vals"])), _unpack_row_groups),
    "int8-block4": Kind(_run_int8, _block_count, _unpack_int8, quantizes_input=True),
    "jit-csr": Kind(_run_jit, lambda a: int(a["vals"].size), _unpack_csr),
    "jit-int8": Kind(_run_jit, _block_count, _unpack_int8, quantizes_input=True),
}


def _csr(w: np.ndarray) -> dict[str, np.ndarray]:
    nz = w != 0
    return {"indptr": np.concatenate([[0], np.cumsum(nz.sum(1))]).astype(np.int64),
            "cols": np.ascontiguousarray(np.nonzero(nz)[1], dtype=np.int32), "vals": np.ascontiguousarray(w[nz], dtype=np.float32)}


def _blocks(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """indptr over rows, (row, group) of every block holding a non-zero."""
    out_f, in_f = w.shape
    if w.dtype == np.int8 and w.flags.c_contiguous:  # a block of 4 int8 weights is one 32-bit word: zero or not
        keep = w.view(np.int32) != 0
    else:
        keep = (w.reshape(out_f, in_f // 4, 4) != 0).any(-1)
    rows, groups = np.nonzero(keep)
    return np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64), rows, groups


def _csr_chunked(w: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """``n`` CSR matrices over consecutive input-feature ranges (column indices stay absolute)."""
    edges = np.linspace(0, w.shape[1], n + 1).astype(int)
    out: dict[str, np.ndarray] = {}
    for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        part = np.zeros_like(w)
        part[:, lo:hi] = w[:, lo:hi]
        out.update({f"{k}{j}": v for k, v in _csr(part).items()})
    return out


def chunks(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The per-chunk CSR arrays of a ``csr-chunked`` packing."""
    return [{k: arrays[f"{k}{j}"] for k in ("indptr", "cols", "vals")} for j in range(len(arrays) // 3)]


def _block4(w: np.ndarray) -> dict[str, np.ndarray] | None:
    if w.shape[1] % 4:
        return None
    indptr, rows, groups = _blocks(w)
    vals = w.reshape(w.shape[0], -1, 4)[rows, groups]
    cols = np.ascontiguousarray(groups * 4, dtype=np.int32)
    return {"indptr": indptr, "cols": cols, "vals": np.ascontiguousarray(vals.reshape(-1), dtype=np.float32)}


def _row_groups(a: dict[str, np.ndarray], nw: int) -> dict[str, np.ndarray]:
    """A CSR (nw 1) or block-4 CSR (nw 4) packing regrouped for ``spmm_rg``: rows sorted by entry count (longest
    first, so dynamic scheduling hands out the heaviest work first), RG per group, entries interleaved, short rows
    padded with zero weights on column 0; ``rows`` holds each slot's output row (-1: no row)."""
    counts = np.diff(a["indptr"])
    order = np.argsort(-counts, kind="stable")
    n_groups = -(-counts.size // RG)
    rows = np.full(n_groups * RG, -1, dtype=np.int32)
    rows[:counts.size] = order
    lengths = np.zeros(n_groups * RG, dtype=np.int64)
    lengths[:counts.size] = counts[order]
    gptr = np.concatenate([[0], np.cumsum(lengths.reshape(n_groups, RG).max(1))]).astype(np.int64)
    slot = np.empty(counts.size, dtype=np.int64)
    slot[order] = np.arange(counts.size)
    row_of = np.repeat(np.arange(counts.size), counts)
    k = np.arange(row_of.size) - a["indptr"][row_of]
    s = slot[row_of]
    dest = (gptr[s // RG] + k) * RG + s % RG
    cols = np.zeros(int(gptr[-1]) * RG, dtype=np.int32)
    cols[dest] = a["cols"]
    vals = np.zeros((int(gptr[-1]) * RG, nw), dtype=np.float32)
    vals[dest] = a["vals"].reshape(-1, nw)
    return {"gptr": gptr, "rows": rows, "cols": cols, "vals": vals.reshape(-1)}


def int8_ready(lin: Linear) -> bool:
    return (lin.weight_int8 is not None and lin.weight_q is not None and lin.weight_q.zero_point == 0 and lin.input_q is not None
            and lin.weight.shape[1] % 4 == 0)


def int8_kernels_fast() -> bool:
    """Whether an int8 body that beats fp32 fake-quant runs here: VNNI or AVX2 (measured ~2x faster on AMD Zen 3).
    The portable int8 body is 4-8x slower than fp32 fake-quant, so CPUs with neither keep QAT Linears in fp32."""
    f = K.features()
    return bool(f.get("vnni") or f.get("avx2"))


def _int8(name: str, w8: np.ndarray, wq: QParams, xq: QParams, bias: np.ndarray, threads: int) -> PackedLinear:
    indptr, rows, groups = _blocks(w8)
    blocks = np.ascontiguousarray(w8.reshape(w8.shape[0], -1, 4)[rows, groups])
    scale = np.float32(xq.scale) * np.float32(wq.scale)
    rowsum = w8.astype(np.int64).sum(1)
    arrays = {
        "indptr": indptr, "groups": np.ascontiguousarray(groups, dtype=np.int32), "wpk": blocks.view(np.int32).reshape(-1).copy(),
        "scale": np.full(w8.shape[0], scale, dtype=np.float32),
        "offset": (bias.astype(np.float64) - float(scale) * xq.zero_point * rowsum).astype(np.float32),
    }
    return PackedLinear(name, "int8-block4", w8.shape[0], w8.shape[1], bias, arrays, xq, threads)


def _time(fn: Callable[[], object], reps: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _fp32_candidates(name: str, w: np.ndarray, b: np.ndarray, csr: dict[str, np.ndarray], threads: int, kinds: tuple[str, ...],
                     tokens: int) -> dict[str, Callable[[], PackedLinear | None]]:
    """Label -> how to build that packing. Where emitted code runs, only CSR (its reference) and the emitted kinds are
    candidates: the row-group and chunked packings exist for what token panels already fix (long inputs, inputs
    larger than L2), and timing them made up most of a model's load time."""
    out_f, in_f = w.shape
    nnz = int(csr["vals"].size)
    dense = nnz / w.size >= DENSE_ABOVE
    new = lambda kind, arrays: PackedLinear(name, kind, out_f, in_f, b, arrays, threads=threads)  # noqa: E731
    found: dict[str, Callable[[], PackedLinear | None]] = {}
    if "dense" in kinds and dense:
        found["dense"] = lambda: new("dense", {"weight": w})
    emitted = "jit-csr" in kinds and not dense and jit.available()
    if "csr" in kinds:
        found["csr"] = lambda: new("csr", csr)
    if emitted:
        for at in jit.ROW_BLOCKS:
            found[f"jit-csr/{at}"] = lambda at=at: _one_emitted(name, "jit-csr", out_f, in_f, b, csr, threads, at)
        return found
    if not dense and (arrays := _block4(w)) is not None and arrays["vals"].size <= 1.15 * nnz:
        if "block4" in kinds:
            found["block4"] = lambda: new("block4", arrays)
        if "block4-rg8" in kinds:
            found["block4-rg8"] = lambda: new("block4-rg8", _row_groups(arrays, 4))
    if "csr-rg8" in kinds and not dense:
        found["csr-rg8"] = lambda: new("csr-rg8", _row_groups(csr, 1))
    n_chunks = -(-in_f * tokens * 4 // CHUNK_BYTES)
    if "csr-chunked" in kinds and not dense and n_chunks > 1:
        found["csr-chunked"] = lambda: new("csr-chunked", _csr_chunked(w, n_chunks))
    if not found:  # CSR is always valid, so it is the fallback too
        found["csr"] = lambda: new("csr", csr)
    return found


def _from_label(label: str, found: dict[str, Callable[[], PackedLinear | None]]) -> PackedLinear | None:
    """The packing a kept choice names (``label`` or ``label|long``), or None when this machine cannot build it now."""
    main, _, long = label.partition("|")
    if main not in found or (long and long not in found):
        return None
    best = found[main]()
    if best is not None and long:
        best.long = found[long]()
    return best


def pack(name: str, weight: np.ndarray, bias: np.ndarray, threads: int, kinds: tuple[str, ...] = FP32_KINDS, tokens: int = 128,
         choices: Choices | None = None) -> PackedLinear:
    """The fastest fp32 packing of ``weight`` among ``kinds`` (measured on ``tokens`` tokens, or as ``choices`` kept it)."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    b = np.ascontiguousarray(bias, dtype=np.float32)
    csr = _csr(w)
    found = _fp32_candidates(name, w, b, csr, threads, kinds, tokens)
    key = digest(name, w.shape, [csr["indptr"], csr["cols"], csr["vals"], b]) if choices is not None else None
    if key is not None and choices is not None and (label := choices.get(key)) and (kept := _from_label(label, found)) is not None:
        return kept
    candidates = [c for c in (make() for make in found.values()) if c is not None]
    candidates = candidates or [PackedLinear(name, "csr", w.shape[0], w.shape[1], b, csr, threads=threads)]
    best = fastest(candidates, tokens)
    # for long inputs (batches) the emitted code, or else a row-group packing, may beat the 128-token winner
    longer = [c for c in candidates if c.native is not None] or [c for c in candidates if c.kind in ROW_GROUP]
    if best.kind not in ROW_GROUP and best.native is None and longer:
        ws = Workspace()
        rg = min(longer, key=lambda c: best.timings[c.label])
        x_long = np.random.default_rng(0).standard_normal((w.shape[1], 2 * LONG_TOKENS), dtype=np.float32)
        if _time(lambda: rg(x_long, ws), reps=1) < _time(lambda: best(x_long, ws), reps=1):
            best.long = rg
    if key is not None and choices is not None and len(candidates) > 1:
        choices.put(key, best.label + (f"|{best.long.label}" if best.long is not None else ""))
    return best


def _one_emitted(name: str, kind: str, out_f: int, in_f: int, bias: np.ndarray, arrays: dict[str, np.ndarray], threads: int, at: int,
                 input_q: QParams | None = None) -> PackedLinear | None:
    build = jit.build_int8 if kind == "jit-int8" else jit.build_f32
    native = build(out_f, in_f, at, arrays, bias)
    if native is None:
        return None
    return PackedLinear(name, kind, out_f, in_f, bias, arrays, input_q, threads, native=native, rows_per_block=at)


def fastest(candidates: list[PackedLinear], tokens: int = 128) -> PackedLinear:
    """The candidate that runs a random ``tokens``-token input fastest (timings of all kept on it)."""
    if len(candidates) == 1:
        return candidates[0]
    x = np.random.default_rng(0).standard_normal((candidates[0].in_features, tokens), dtype=np.float32)
    ws = Workspace()
    timings = {c.label: _time(lambda c=c: c(x, ws)) for c in candidates}
    best = min(candidates, key=lambda c: timings[c.label])
    best.timings = timings
    return best


def _with_emitted(p: PackedLinear, kinds: tuple[str, ...] | None, choices: Choices | None) -> PackedLinear:
    """An int8 block-4 packing, or its emitted-code form where that measures faster (``kinds``: the allowed ones; the
    generic packing stays when none of them can be had)."""
    found: dict[str, Callable[[], PackedLinear | None]] = {"int8-block4": lambda: p}
    if (kinds is None or "jit-int8" in kinds) and jit.available(int8=True):
        for at in jit.ROW_BLOCKS:
            found[f"jit-int8/{at}"] = lambda at=at: _one_emitted(p.name, "jit-int8", p.out_features, p.in_features, p.bias, p.arrays,
                                                                  p.threads, at, p.input_q)
    if kinds is not None:
        found = {k: v for k, v in found.items() if k.split("/")[0] in kinds} or {"int8-block4": lambda: p}
    a = p.arrays
    key = digest(p.name, (p.out_features, p.in_features), [a[k] for k in ("indptr", "groups", "wpk", "scale", "offset")]) if choices else None
    if key is not None and choices is not None and (label := choices.get(key)) and (kept := _from_label(label, found)) is not None:
        return kept
    candidates = [c for c in (make() for make in found.values()) if c is not None] or [p]  # emitted code refused: generic
    best = fastest(candidates)
    if key is not None and choices is not None and len(candidates) > 1:
        choices.put(key, best.label)
    return best


def pack_linear(lin: Linear | list[Linear], threads: int, int8: bool = True, kinds: tuple[str, ...] | None = None,
                choices: Choices | None = None) -> PackedLinear:
    """Pack one Linear, or several sharing one input (Q/K/V) as one fused product. ``kinds`` limits the candidates
    (CSR, or int8 block-4 for QAT Linears, stays the fallback whatever it says)."""
    lins = lin if isinstance(lin, list) else [lin]
    name = "+".join(x.name.rsplit(".", 1)[-1] if len(lins) > 1 else x.name for x in lins)
    bias = np.concatenate([x.bias for x in lins]).astype(np.float32)
    int8 = int8 and int8_kernels_fast()
    if int8 and all(int8_ready(x) for x in lins) and len({(x.input_q, x.weight_q) for x in lins}) == 1:
        w8 = np.concatenate([x.weight_int8 for x in lins])  # type: ignore[misc]
        return _with_emitted(_int8(name, w8, lins[0].weight_q, lins[0].input_q, bias, threads), kinds, choices)  # type: ignore[arg-type]
    if int8 and all(int8_ready(x) for x in lins):  # shared input, different weight scales: fold per row
        packed = [_int8(x.name, x.weight_int8, x.weight_q, x.input_q, x.bias, threads) for x in lins]  # type: ignore[arg-type]
        return _with_emitted(_concat_int8(name, packed, bias, threads), kinds, choices)
    weight = np.concatenate([x.weight for x in lins])
    packed = pack(name, weight, bias, threads, kinds if kinds is not None else FP32_KINDS, choices=choices)
    packed.input_q = lins[0].input_q  # fp32 path of a QAT Linear still fake-quantizes its input
    if packed.long is not None:
        packed.long.input_q = packed.input_q
    return packed


def _concat_int8(name: str, parts: list[PackedLinear], bias: np.ndarray, threads: int) -> PackedLinear:
    offsets = np.cumsum([0] + [int(p.arrays["indptr"][-1]) for p in parts[:-1]])
    indptr = np.concatenate([[0]] + [p.arrays["indptr"][1:] + off for p, off in zip(parts, offsets, strict=True)]).astype(np.int64)
    arrays = {"indptr": indptr, **{k: np.concatenate([p.arrays[k] for p in parts]) for k in ("groups", "wpk", "scale", "offset")}}
    return PackedLinear(name, "int8-block4", sum(p.out_features for p in parts), parts[0].in_features, bias, arrays, parts[0].input_q, threads)


def unpack(p: PackedLinear) -> np.ndarray:
    """The dense weight a packing stands for (int8: the integer weights as float): for round-trip checks."""
    return KINDS[p.kind].unpack(p)
