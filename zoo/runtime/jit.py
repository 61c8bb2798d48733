"""Pattern-specialised machine-code kernels for sparse Linears (the emitter lives in ``_jit.h``).

``build_f32``/``build_int8`` turn a CSR or int8 block-4 packing into a capsule of emitted AVX-512 code, or return
None where this machine cannot run it: no AVX-512 (VNNI for int8), ``ZOO_NO_JIT=1``, or executable memory refused
(W^X hardening). Whatever the reason, one line on stderr says so, once per process, and the packer keeps the
generic kernels, which compute the same results.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from zoo.runtime import _kernels as K

# Rows per emitted block (accumulators held in zmm registers); the packer measures each and keeps the fastest.
ROW_BLOCKS = (24, 28)
PANEL = 16  # tokens per activation panel (one zmm)
F32, INT8 = 0, 1

_said: set[str] = set()
_lock = threading.Lock()


def _say_once(why: str) -> None:
    with _lock:
        if why in _said:
            return
        _said.add(why)
    print(f"zoo: machine-code kernels off ({why}); using the generic kernels", file=sys.stderr, flush=True)


def available(int8: bool = False) -> bool:
    """Whether emitted kernels can run here (saying why not, once, when the CPU could but something refuses)."""
    f = K.features()
    if f.get("jit_off"):
        _say_once("ZOO_NO_JIT is set")
        return False
    return bool(f.get("jit")) and (not int8 or bool(f.get("vnni")))


def _build(kind: int, rows: int, in_features: int, at: int, indptr: np.ndarray, cols: np.ndarray, vals: np.ndarray,
           bias: np.ndarray, scale: np.ndarray | None = None, offset: np.ndarray | None = None) -> object | None:
    arrays = [np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(cols, dtype=np.int32),
              np.ascontiguousarray(vals).view(np.int32), np.ascontiguousarray(bias, dtype=np.float32)]
    ip, cp, vp, bp = arrays
    if bp.size != rows or vp.size != cp.size:
        raise ValueError("refusing a packed pattern: array lengths disagree")
    sp = np.ascontiguousarray(scale, dtype=np.float32) if scale is not None else None
    op = np.ascontiguousarray(offset, dtype=np.float32) if offset is not None else None
    if kind == INT8 and (sp is None or op is None or sp.size != rows or op.size != rows):
        raise ValueError("refusing a packed pattern: int8 scale/offset must have one value per row")
    try:
        return K.jit_build(kind, rows, in_features, at, ip.ctypes.data, ip.size, cp.ctypes.data, vp.ctypes.data, cp.size,
                           bp.ctypes.data, 0 if sp is None else sp.ctypes.data, 0 if op is None else op.ctypes.data)
    except OSError as exc:
        _say_once(str(exc))
        return None


def build_f32(rows: int, in_features: int, at: int, arrays: dict[str, np.ndarray], bias: np.ndarray) -> object | None:
    """Emitted code for a CSR packing (``indptr``, ``cols``, ``vals``), or None where it cannot run."""
    if not available():
        return None
    return _build(F32, rows, in_features, at, arrays["indptr"], arrays["cols"], np.ascontiguousarray(arrays["vals"], np.float32), bias)


def build_int8(rows: int, in_features: int, at: int, arrays: dict[str, np.ndarray], bias: np.ndarray) -> object | None:
    """Emitted code for an int8 block-4 packing (``indptr``, ``groups``, ``wpk``, ``scale``, ``offset``), or None."""
    if not available(int8=True):
        return None
    return _build(INT8, rows, in_features, at, arrays["indptr"], arrays["groups"], arrays["wpk"], bias, arrays["scale"], arrays["offset"])


def panel_elements(in_features: int, tokens: int) -> int:
    """Scratch elements (floats for fp32, bytes for int8) the run call packs the input into."""
    return -(-tokens // PANEL) * PANEL * in_features
