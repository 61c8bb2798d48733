"""The native forward: a plan of the packed encoder, built once per engine, run in one call into the C extension.

``build`` describes every Linear, LayerNorm and attention of an engine to ``_kernels.plan_new``; ``Plan.run`` then
computes embeddings to the last layer's hidden state in one OpenMP region (``_forward.h``), with the same kernels,
the same work split and so the same bits as the op-by-op path. Packings the native forward does not run (dense
BLAS, the row-group kinds used for long inputs, fp32 kernels behind a fake-quantized input) keep the op-by-op path:
``build`` returns None for such an engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.runtime import _kernels as K
from zoo.runtime.pack import LONG_TOKENS, PackedLinear, chunks
from zoo.runtime.workspace import Workspace

Engine = Any  # zoo.runtime.engine.Engine, which imports this module (no import back: the runtime has no cycles)

# the C plan's Linear kinds (_forward.h: LK_*)
CODES = {"csr": 0, "block4": 1, "csr-chunked": 2, "int8-block4": 3, "jit-csr": 4, "jit-int8": 4}


@dataclass
class Plan:
    capsule: object
    threads: int
    long_tokens: int | None  # from this many tokens on some Linear runs another packing: the op-by-op path then
    keep: list[object] = field(default_factory=list, repr=False)  # arrays the plan points into

    def covers(self, tokens: int) -> bool:
        return self.long_tokens is None or tokens < self.long_tokens

    def run(self, ids: np.ndarray, types: np.ndarray, mask_add: np.ndarray, keys: np.ndarray, hidden: int, ws: Workspace,
            stamps: np.ndarray | None = None) -> np.ndarray:
        """The last layer's hidden state [hidden, batch * seq] (a workspace buffer) for int64 ids/types [batch, seq].
        ``stamps`` (int64), when given, receives the time in ns of the start and of every step's end (``profile``)."""
        batch, seq = ids.shape
        x = ws.get("plan.hidden", (hidden, batch * seq))
        arena = ws.get("plan.arena", (K.plan_arena(self.capsule, batch, seq, self.threads),), np.uint8)
        at, n = (stamps.ctypes.data, stamps.size) if stamps is not None else (0, 0)
        K.forward(self.capsule, ids.ctypes.data, types.ctypes.data, mask_add.ctypes.data, keys.ctypes.data, batch, seq, ws.ptr(x),
                  ws.ptr(arena), arena.size, self.threads, at, n)
        return x


def _linear(p: PackedLinear, keep: list[object]) -> tuple | None:
    code = CODES.get(p.kind)
    if code is None or (p.input_q is not None and p.kind not in ("int8-block4", "jit-int8")):
        return None
    a = p.ptrs()
    q = p.input_q
    qs, qz = (float(q.scale), float(q.zero_point)) if q is not None else (0.0, 0.0)
    if p.kind == "csr-chunked":
        parts = chunks(p.arrays)
        tables = [np.asarray([c[k].ctypes.data for c in parts], dtype=np.int64) for k in ("indptr", "cols", "vals")]
        keep += tables
        ptrs = [t.ctypes.data for t in tables]
        return (code, len(parts), p.out_features, p.in_features, *ptrs, a["bias"], 0, 0, qs, qz, None)
    if p.kind in ("int8-block4", "jit-int8"):
        return (code, 1, p.out_features, p.in_features, a["indptr"], a["groups"], a["wpk"], a["bias"], a["scale"], a["offset"], qs, qz,
                p.native)
    return (code, 1, p.out_features, p.in_features, a["indptr"], a["cols"], a["vals"], a["bias"], 0, 0, qs, qz, p.native)


def build(engine: Engine) -> Plan | None:
    """The native plan of ``engine``, or None where one of its packings needs the op-by-op path."""
    keep: list[object] = []
    layers = []
    op_by_op_from_long = False  # a long-input packing the native forward does not run: long inputs go op by op
    for layer in engine.layers:
        roles = (layer.qkv, layer.attn_out, layer.ffn_in, layer.ffn_out)
        linears = [_linear(p, keep) for p in roles]
        if any(d is None for d in linears):
            return None
        longs = []
        for p in roles:
            described = _linear(p.long, keep) if p.long is not None else None
            op_by_op_from_long |= p.long is not None and described is None
            longs.append(None if described is None else (described, LONG_TOKENS))
        keep.append(layer.attn_qparams)
        layers.append((*linears, *layer.ln_attn.ptrs, layer.ln_attn.eps, *layer.ln_out.ptrs, layer.ln_out.eps,
                       layer.attn_qparams.ctypes.data, tuple(longs)))
    c = engine.model.config
    natives = [q.native for layer in engine.layers for p in (layer.qkv, layer.attn_out, layer.ffn_in, layer.ffn_out)
               for q in (p, p.long) if q is not None and q.native is not None]
    capsule = K.plan_new(layers, *engine._table_ptrs, *engine._embed_norm.ptrs, engine._embed_norm.eps, c.hidden, c.heads,
                         c.intermediate, tuple(natives))
    return Plan(capsule, engine.threads, LONG_TOKENS if op_by_op_from_long else None, keep)


def _linear_steps(role: str, p: PackedLinear, ready: bool = False) -> list[str]:
    if p.kind in ("jit-csr", "jit-int8"):
        own = [] if ready else [f"{role} panels" if p.kind == "jit-csr" else f"{role} quantize"]
        return [*own, f"{role} ({p.label})"]
    if p.kind == "int8-block4":
        return [f"{role} quantize", f"{role} ({p.kind})"]
    n = len(chunks(p.arrays)) if p.kind == "csr-chunked" else 1
    return [f"{role} ({p.kind})"] * n


def _emitted(p: PackedLinear) -> bool:
    return p.native is not None


def step_names(engine: Engine, tokens: int = 128) -> list[str]:
    """What each barrier of the native forward over ``tokens`` tokens ends, in order (``_forward.h``'s step sequence:
    a LayerNorm or ffn_in that writes its emitted consumer's input panels spares that consumer its own panel pass)."""
    names = ["embeddings", "embeddings LayerNorm"]
    for layer in engine.layers:
        if tokens >= LONG_TOKENS:
            layer = dataclasses.replace(layer, **{r: getattr(layer, r).long for r in ("qkv", "attn_out", "ffn_in", "ffn_out")
                                                  if getattr(layer, r).long is not None})
        fused_out = _emitted(layer.ffn_in) and _emitted(layer.ffn_out) and (
            layer.ffn_out.kind == "jit-csr" or layer.ffn_in.rows_per_block % 4 == 0)
        names += _linear_steps("qkv", layer.qkv, _emitted(layer.qkv)) + ["attention"] + _linear_steps("attn_out", layer.attn_out)
        names += ["residual + LayerNorm"] + _linear_steps("ffn_in + GELU", layer.ffn_in, _emitted(layer.ffn_in))
        names += _linear_steps("ffn_out", layer.ffn_out, fused_out) + ["residual + LayerNorm"]
    return names


def profile(engine: Engine, ids: np.ndarray, types: np.ndarray, mask_add: np.ndarray, keys: np.ndarray) -> dict[str, float]:
    """Seconds per step kind of one native forward (summed over layers), from the barrier times thread 0 records."""
    p = engine.plan
    if p is None:
        raise ValueError("this engine runs op by op (no native plan)")
    names = step_names(engine, ids.size)
    stamps = np.zeros(len(names) + 1, dtype=np.int64)
    p.run(ids, types, mask_add, keys, engine.model.config.hidden, Workspace(), stamps)
    out: dict[str, float] = {}
    for name, dt in zip(names, np.diff(stamps) / 1e9, strict=True):
        out[name] = out.get(name, 0.0) + float(dt)
    return out
