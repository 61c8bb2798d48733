"""The sparse BERT engine: ``engine(input_ids, attention_mask, token_type_ids) -> {output name: logits}``.

Activations stay features x tokens ([hidden, batch*seq]) through the encoder so the sparse kernels
stream contiguous token vectors; attention runs per (sequence, head) in one C kernel (scores, masked
softmax, context; trailing padding keys skipped); LayerNorm reduces over the feature axis. QAT models
reproduce every fake-quant point of the reference (int8 kernels where the Linear allows, quantize-dequantize
elsewhere). A large batch runs as consecutive sub-batches of about ``BATCH_TOKENS`` tokens.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.config import default_threads
from zoo.convert.bert import AttentionQuant, BertModel, LayerNorm, Linear, QParams, fake_quant
from zoo.convert.reference import MASK_VALUE
from zoo.errors import InputError
from zoo.runtime import _kernels as K
from zoo.runtime import plan
from zoo.runtime.choices import Choices
from zoo.runtime.pack import PackedLinear, pack_linear
from zoo.runtime.workspace import Workspace, WorkspacePool

# Tokens per forward pass: a call with more runs as consecutive sub-batches of whole sequences (at least one), so the
# activation buffers a call takes stay bounded whatever its batch (the FFN's 3072 x 4096 floats: 50 MB). Not much
# smaller: a pass pays ~60 OpenMP fork/joins, and with 2 threads on a shared CPU, passes of one 384-token window ran
# ~30% slower than passes of eight (obert-3l-80-quant, Zen 3; at 1 thread the pass size made no clear difference).
# Pipelines batch up to this many padded tokens.
BATCH_TOKENS = 4096
# Sequences run padded to a multiple of this many positions (past the last attended key, so never attended; their
# outputs are cut off): the vector bodies take tokens 8 at a time and hand a remainder to the portable body, whose
# rounding differs (no FMA), so a token's result would depend on where its batch put it. Padded, every token of a
# QAT model takes the same arithmetic alone or in any batch, at ~1% more tokens on SQuAD-sized windows.
LANES = 8


def model_inputs(model: BertModel, input_ids: np.ndarray, attention_mask: np.ndarray | None,
                 token_type_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int64 [batch, seq] ids, mask and token types (defaults: all attended, segment 0), checked against the model:
    shapes, length, and ids inside the vocabulary (the C gather does no bounds checks). ``InputError`` otherwise."""
    try:
        ids = _integers(input_ids, "input_ids")
        if ids.ndim == 1:
            ids = ids[None]
        mask = np.ones_like(ids) if attention_mask is None else _integers(attention_mask, "attention_mask").reshape(ids.shape)
        types = np.zeros_like(ids) if token_type_ids is None else _integers(token_type_ids, "token_type_ids").reshape(ids.shape)
    except ValueError as exc:  # a reshape of another shape
        raise InputError(f"model inputs must share one [batch, sequence] shape: {exc}") from None
    if ids.ndim != 2 or 0 in ids.shape:
        raise InputError(f"input_ids must be a non-empty [batch, sequence] array, got shape {list(ids.shape)}")
    if ids.shape[1] > model.config.max_positions:
        raise InputError(f"sequence length {ids.shape[1]} exceeds the model's {model.config.max_positions} positions")
    cfg = model.config
    for name, v, limit in (("token ids", ids, cfg.vocab_size), ("token type ids", types, cfg.type_vocab_size)):
        if v.min() < 0 or v.max() >= limit:
            raise InputError(f"{name} must lie in [0, {limit}); got values in [{v.min()}, {v.max()}]",
                             "the tokenizer and the model's config disagree on the vocabulary")
    return np.ascontiguousarray(ids), np.ascontiguousarray(mask), np.ascontiguousarray(types)  # the C kernels read rows


def _integers(value: object, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iub":
        raise InputError(f"{name} must hold integers, got {arr.dtype}")
    try:
        return arr.astype(np.int64, casting="safe" if arr.dtype.kind != "u" or arr.dtype.itemsize < 8 else "unsafe")
    except TypeError:
        raise InputError(f"{name} does not fit int64") from None


@dataclass(frozen=True)
class Norm:
    """A LayerNorm's parameters as contiguous float32, with their addresses for the kernel."""

    gamma: np.ndarray
    beta: np.ndarray
    eps: float
    ptrs: tuple[int, int]

    @classmethod
    def of(cls, ln: LayerNorm) -> Norm:
        gamma, beta = (np.ascontiguousarray(v, dtype=np.float32) for v in (ln.gamma, ln.beta))
        return cls(gamma, beta, float(ln.eps), (gamma.ctypes.data, beta.ctypes.data))

    def __repr__(self) -> str:
        return f"Norm({self.gamma.size} features, eps={self.eps:g})"


def layer_norm_ft(x: np.ndarray, residual: np.ndarray | None, ln: Norm | LayerNorm, threads: int, ws: Workspace | None = None) -> np.ndarray:
    """``LayerNorm(x + residual)`` over the feature axis of [features, tokens] arrays, written into ``x``."""
    norm = ln if isinstance(ln, Norm) else Norm.of(ln)
    ptr = ws.ptr if ws is not None else (lambda a: a.ctypes.data)
    f, t = x.shape
    K.layernorm(ptr(x), 0 if residual is None else ptr(residual), ptr(x), *norm.ptrs, norm.eps, f, t, threads)
    return x


@dataclass(repr=False)
class EngineLayer:
    qkv: PackedLinear
    attn_out: PackedLinear
    ffn_in: PackedLinear
    ffn_out: PackedLinear
    ln_attn: Norm
    ln_out: Norm
    attn_qparams: np.ndarray  # scale/zero point of q, k, scores, probs, v, context (scale 0 = not quantized)

    def __repr__(self) -> str:
        linears = ", ".join(f"{role}={getattr(self, role).kind}" for role in ("qkv", "attn_out", "ffn_in", "ffn_out"))
        return f"EngineLayer({linears})"


@dataclass(repr=False)
class Engine:
    """A compiled model. Call it with int arrays [batch, seq]; returns outputs by ONNX output name.

    Concurrency: one engine may be called from many threads at once, and each call returns what it would return
    alone (bit for bit: every kernel sums in a fixed order whatever the scheduling). The packed weights are
    read-only after ``compile``; each call takes activation buffers of its own from ``workspaces`` and gives
    them back when it returns, and returned arrays never alias them. The kernels release the GIL, so calls
    overlap; each uses ``threads`` OpenMP threads, so N concurrent calls want N x ``threads`` cores.
    """

    model: BertModel
    threads: int
    layers: list[EngineLayer]
    compile_seconds: float = 0.0
    workspaces: WorkspacePool = field(default_factory=WorkspacePool, compare=False)
    batch_tokens: int | None = BATCH_TOKENS  # None: every call in one pass
    native: bool = True  # embeddings to the last layer in one native call (zoo.runtime.plan) where the packings allow
    tables: dict[str, np.ndarray] = field(init=False, repr=False)  # embedding tables, fake-quantized once (elementwise)

    def __post_init__(self) -> None:
        e = self.model.embeddings
        self.tables = {role: _fake_quantized(e.output_q.get(role), getattr(e, role), self.threads) for role in ("word", "position", "token_type")}
        self._table_ptrs = tuple(self.tables[role].ctypes.data for role in ("word", "position", "token_type"))
        self._embed_norm = Norm.of(e.ln)
        self.plan = plan.build(self) if self.native else None

    @property
    def output_names(self) -> list[str]:
        return self.model.output_names

    def kinds(self) -> dict[str, int]:
        """How many Linears took each packing (after Q/K/V fusion)."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            for p in (layer.qkv, layer.attn_out, layer.ffn_in, layer.ffn_out):
                counts[p.kind] = counts.get(p.kind, 0) + 1
        return counts

    def __repr__(self) -> str:
        c = self.model.config
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.kinds().items()))
        return (f"Engine({c.architecture}, {len(self.layers)} layers, hidden {c.hidden}, threads={self.threads}; "
                f"{kinds})")

    def _embed(self, ids: np.ndarray, types: np.ndarray, ws: Workspace) -> np.ndarray:
        t = self.tables
        (batch, seq), hidden = ids.shape, t["word"].shape[1]  # ids and types were bounds-checked by model_inputs
        x = ws.get("embeddings", (hidden, batch * seq))
        K.embed(*self._table_ptrs, ids.ctypes.data, types.ctypes.data, batch, seq, hidden, ws.ptr(x), self.threads)
        return layer_norm_ft(x, None, self._embed_norm, self.threads, ws)

    def _attention(self, qkv: np.ndarray, layer: EngineLayer, batch: int, seq: int, mask_add: np.ndarray, keys: np.ndarray,
                   ws: Workspace) -> np.ndarray:
        c = self.model.config
        d = c.hidden // c.heads
        out = ws.get("context", (c.hidden, batch * seq))
        K.attention(ws.ptr(qkv), ws.ptr(out), mask_add.ctypes.data, batch, seq, c.heads, d,
                    float(1.0 / np.sqrt(np.float32(d))), layer.attn_qparams.ctypes.data, self.threads, keys.ctypes.data)
        return out

    def _head(self, lin: Linear, x: np.ndarray) -> np.ndarray:
        """Small task heads run densely on [tokens, hidden], with their fake-quant input if any."""
        return fake_quant(lin.input_q, x) @ lin.weight.T + lin.bias

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                 token_type_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        ids, mask, types = model_inputs(self.model, input_ids, attention_mask, token_type_ids)
        seq, keys = ids.shape[1], attended_keys(mask)
        ids, mask, types = (lane_padded(a, self.model.config.max_positions) for a in (ids, mask, types))
        rows = max(1, self.batch_tokens // ids.shape[1]) if self.batch_tokens else len(ids)
        ws = self.workspaces.take()
        try:
            parts = [self._forward(ids[at:at + rows], mask[at:at + rows], types[at:at + rows], keys[at:at + rows], seq, ws)
                     for at in range(0, len(ids), rows)]
        finally:
            self.workspaces.give(ws)
        return parts[0] if len(parts) == 1 else {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _forward(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray, keys: np.ndarray, seq: int,
                 ws: Workspace) -> dict[str, np.ndarray]:
        """Outputs for the first ``seq`` positions of ``ids`` (the rest is lane padding, never attended)."""
        batch, width = ids.shape
        mask_add = np.ascontiguousarray((1.0 - mask.astype(np.float32)) * np.float32(MASK_VALUE), dtype=np.float32)
        if self.plan is not None and self.plan.covers(batch * width):
            x = self.plan.run(np.ascontiguousarray(ids), np.ascontiguousarray(types), mask_add, np.ascontiguousarray(keys),
                              self.model.config.hidden, ws)
        else:
            x = self._embed(ids, types, ws)
            for layer in self.layers:
                qkv = layer.qkv(x, ws)
                ctx = self._attention(qkv, layer, batch, width, mask_add, keys, ws)
                x = layer_norm_ft(layer.attn_out(ctx, ws), x, layer.ln_attn, self.threads, ws)
                hidden = layer.ffn_in(x, ws, gelu=True)
                x = layer_norm_ft(layer.ffn_out(hidden, ws), x, layer.ln_out, self.threads, ws)
        tokens = x.T.reshape(batch, width, -1)[:, :seq]
        m = self.model
        if m.head is None or m.head_linear is None:
            return {"last_hidden_state": tokens.copy()}  # a copy even when contiguous: ``tokens`` may view ``ws``
        if m.head.pooled:
            tokens = tokens[:, 0]
            if m.pooler is not None:
                tokens = np.tanh(self._head(m.pooler, tokens))
        return m.head.outputs_of(self._head(m.head_linear, tokens), lambda a, i: np.ascontiguousarray(a[..., i]))


def lane_padded(a: np.ndarray, limit: int) -> np.ndarray:
    """``a`` [batch, seq] with zero columns up to a multiple of ``LANES`` (not past ``limit`` positions)."""
    width = min(-(-a.shape[1] // LANES) * LANES, max(limit, a.shape[1]))
    return a if width == a.shape[1] else np.pad(a, ((0, 0), (0, width - a.shape[1])))


def attended_keys(mask: np.ndarray) -> np.ndarray:
    """Per sequence, how many leading keys the attention kernel must visit: up to the last attended one (the keys
    after it are padding whose softmax weight is 0); every key when none is attended, as the reference does."""
    attended = mask != 0
    last = mask.shape[1] - np.argmax(attended[:, ::-1], axis=1)
    return np.ascontiguousarray(np.where(attended.any(axis=1), last, mask.shape[1]), dtype=np.int64)


def _fake_quantized(q: QParams | None, table: np.ndarray, threads: int) -> np.ndarray:
    """``fake_quant(q, table)`` as contiguous float32, in C (the same arithmetic; numpy took ~0.5 s on a word table)."""
    src = np.ascontiguousarray(table, dtype=np.float32)
    if q is None:
        return src
    out = np.empty_like(src)
    K.fake_quant(src.ctypes.data, out.ctypes.data, src.size, float(np.float32(q.scale)), float(q.zero_point), float(q.qmin), float(q.qmax),
                 threads)
    return out


def _attention_qparams(aq: AttentionQuant | None) -> np.ndarray:
    points = [] if aq is None else [aq.qk[0], aq.qk[1], aq.qk[2], aq.pv[0], aq.pv[1], aq.pv[2]]
    flat = [v for q in points for v in (q.scale, q.zero_point)] or [0.0] * 12
    return np.asarray(flat, dtype=np.float32)


class OnnxRuntimeEngine:
    """The exported graph on onnxruntime, with the ``Engine`` call signature: the backend for dense encoders,
    where MLAS's dense GEMM beats any sparse format (there are no zeros to skip).

    Safe to call from many threads at once, like ``Engine`` (``InferenceSession.run`` is thread-safe). The graph
    is exported into ``workdir`` and kept there; without one it goes to a temporary directory that is removed
    as soon as the session has read it.
    """

    def __init__(self, model: BertModel, threads: int, workdir: Path | None = None) -> None:
        start = time.perf_counter()
        self.model, self.threads = model, threads
        if workdir is not None:
            self.session = _session(model, threads, workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="zoo-ort-") as scratch:
                self.session = _session(model, threads, Path(scratch))
        self.compile_seconds = time.perf_counter() - start

    def __repr__(self) -> str:
        c = self.model.config
        return f"OnnxRuntimeEngine({c.architecture}, {len(self.model.layers)} layers, hidden {c.hidden}, threads={self.threads})"

    @property
    def output_names(self) -> list[str]:
        return self.model.output_names

    def kinds(self) -> dict[str, int]:
        return {"onnxruntime": 4 * len(self.model.layers)}

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                 token_type_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        ids, mask, types = model_inputs(self.model, input_ids, attention_mask, token_type_ids)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return dict(zip(self.output_names, self.session.run(None, feed), strict=True))


def _session(model: BertModel, threads: int, workdir: Path):  # noqa: ANN202 - an onnxruntime.InferenceSession
    """An onnxruntime session over ``model`` exported into ``workdir`` (the session holds the graph in memory)."""
    import onnxruntime as ort

    from zoo.convert.onnx_export import export

    path = workdir / ("model.int8.onnx" if model.quantized else "model.onnx")
    export(model, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def encoder_density(model: BertModel) -> float:
    total = nonzero = 0
    for layer in model.layers:
        for lin in layer.linears:
            total += lin.weight.size
            nonzero += int(np.count_nonzero(lin.pruning_weight))
    return nonzero / max(total, 1)


DENSE_MODEL_ABOVE = 0.5  # encoder density above which the sparse formats cannot win (measured: bench/engines.py)


def compile(model: BertModel, threads: int | None = None, int8: bool = True, backend: str = "auto",  # noqa: A001
            workdir: Path | None = None, choices: Path | None = None,
            on_status: Callable[[str], None] | None = None) -> Engine | OnnxRuntimeEngine:
    """Compile ``model`` for this machine.

    ``backend="sparse"`` packs every encoder Linear (fastest packing per Linear, measured, or as the ``choices`` file
    kept it from an earlier load: see ``zoo.runtime.choices``); ``"onnxruntime"`` runs the exported graph; ``"auto"``
    takes onnxruntime for dense encoders and the sparse engine otherwise. The onnxruntime backend keeps its exported
    graph in ``workdir`` when one is given and leaves no file otherwise. ``on_status`` hears what a long compile does.
    """
    model.require_finite()
    threads = threads or default_threads()
    if backend not in ("auto", "sparse", "onnxruntime"):
        from zoo.errors import ZooError

        raise ZooError(f"unknown backend {backend!r}", "use auto, sparse or onnxruntime")
    if backend == "onnxruntime" or (backend == "auto" and encoder_density(model) > DENSE_MODEL_ABOVE):
        return OnnxRuntimeEngine(model, threads, workdir)
    return compile_sparse(model, threads, int8, choices=Choices(choices, threads) if choices is not None else None, on_status=on_status)


def compile_sparse(model: BertModel, threads: int, int8: bool = True, kinds: tuple[str, ...] | None = None,
                   choices: Choices | None = None, on_status: Callable[[str], None] | None = None) -> Engine:
    """Pack every encoder Linear of ``model`` (fastest packing per Linear, among ``kinds`` when given; as ``choices``
    kept them where it knows them) into an ``Engine``."""
    start = time.perf_counter()
    layers = []
    n = len(model.layers)
    kept = choices is not None and choices.hits > 0
    how = "with the packings kept from an earlier load" if kept else "measuring the fastest packing of each Linear"
    for i, layer in enumerate(model.layers):
        if on_status is not None and i and time.perf_counter() - start > 1.0:  # a status line once it takes a while
            on_status(f"packing the encoder for this CPU ({how}): layer {i + 1}/{n}, {time.perf_counter() - start:.1f} s")
        pack = lambda lin: pack_linear(lin, threads, int8, kinds, choices)  # noqa: E731
        layers.append(EngineLayer(
            qkv=pack([layer.query, layer.key, layer.value]), attn_out=pack(layer.attn_out), ffn_in=pack(layer.ffn_in),
            ffn_out=pack(layer.ffn_out), ln_attn=Norm.of(layer.ln_attn), ln_out=Norm.of(layer.ln_out),
            attn_qparams=_attention_qparams(layer.attn_q),
        ))
    if choices is not None and not choices.save() and on_status is not None:
        on_status(f"could not keep the measured packings in {choices.path} (the next load measures again)")
    return Engine(model, threads, layers, compile_seconds=time.perf_counter() - start)
