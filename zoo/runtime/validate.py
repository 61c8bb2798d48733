"""Install-time validation: the compiled engine's outputs against the numpy reference, and its latency at
batch 1 / sequence 128 against onnxruntime fp32 on the same weights, timed in a child process (in one process
their thread pools disturb each other by 3-21%).

The verdict is one line (``obert-3l-80-quant  3.9 ms p50  3.8x onnxruntime-fp32  outputs match``);
``zoo.prepare`` records it in the state DB. The expected speedup is the catalog's figure for the variant on this
CPU's family (``[runtime.amx]``, ``[runtime.avx512-vnni]`` or ``[runtime.avx2]`` in its stub, measured by
bench/engines.py, with its source); without one, a sparse model is expected to beat onnxruntime fp32 (the
product's promise) and a dense one to stay within 10% of it. Below the expectation, the warning names the
likely cause.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.convert.bert import BertModel

SPARSE_EXPECTED = 1.0  # a sparse variant must be faster than onnxruntime fp32 on the same weights
DENSE_EXPECTED = 1 / 1.1  # a dense one no slower than 1.1x
FEED_SEED = 7  # the timed inputs, rebuilt by the onnxruntime timing child from the same seed


@dataclass(frozen=True)
class Verdict:
    model: str
    engine: str
    p50_ms: float
    ort_fp32_p50_ms: float
    speedup: float
    expected_speedup: float
    max_abs_diff: float
    tolerance: float
    outputs_match: bool
    threads: int
    cpu: str
    warning: str | None = None
    seconds: float = 0.0
    ort_timed_in: str = "same process"  # where onnxruntime fp32 was timed: "child process <pid>" for our engine

    def line(self) -> str:
        match = "outputs match" if self.outputs_match else f"OUTPUTS DIFFER (max {self.max_abs_diff:.2g} > {self.tolerance:.2g})"
        return f"{self.model}  {self.p50_ms:.1f} ms p50  {self.speedup:.1f}x onnxruntime-fp32  {match}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance(model: BertModel, ref: dict[str, np.ndarray]) -> float:
    """fp32: 1e-4 relative to the logits' scale; int8: one quantization step of the head's input."""
    head = model.head_linear
    if head is not None and head.input_q is not None:
        return float(head.input_q.scale * np.abs(head.weight).sum(axis=1).max())
    scale = max(1.0, max(float(np.abs(v).max()) for v in ref.values()))
    return 1e-4 * scale


def cpu_summary() -> str:
    from zoo.runtime import _kernels

    return ",".join(k for k, v in _kernels.features().items() if v) or "portable"


def cpu_family(flags: set[str] | None = None) -> str:
    """Which of the catalog's CPU families this CPU belongs to: "amx" (AMX-INT8), "avx512-vnni", "avx2", else
    "portable". From /proc/cpuinfo's flags (``flags`` for tests), else from the kernels this build runs."""
    if flags is None:
        cpuinfo = Path("/proc/cpuinfo")
        text = cpuinfo.read_text() if cpuinfo.exists() else ""
        flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
        if not flags:
            from zoo.runtime import _kernels

            kernels = {k for k, v in _kernels.features().items() if v}
            flags = {"avx2"} & kernels | ({"avx512_vnni"} if {"avx512", "vnni"} <= kernels else set()) | (
                {"amx_int8"} if "amx" in kernels else set())
    for family, flag in (("amx", "amx_int8"), ("avx512-vnni", "avx512_vnni"), ("avx2", "avx2")):
        if flag in flags:
            return family
    return "portable"


def _cause(threads: int, model: BertModel) -> str:
    cpu = cpu_summary()
    causes = []
    if model.config.hidden * model.config.layers < 768 * 3:
        causes.append(f"a small model ({model.config.layers} layers x {model.config.hidden} wide): fixed per-call costs dominate")
    kernels = set(cpu.split(","))
    if not kernels & {"avx512", "avx2"}:
        causes.append(f"neither AVX-512 nor AVX2 kernels are active ({cpu}), so the portable kernels ran")
    elif "avx512" not in kernels:
        causes.append(f"this CPU lacks AVX-512 ({cpu}), so the AVX2 kernels ran (half the vector width)")
    elif "vnni" not in kernels and "avx2" in kernels and model.quantized:
        causes.append(f"this CPU lacks VNNI ({cpu}), so int8 products ran on AVX2 (no dot-product instructions)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads < cores:
        causes.append(f"threads limited to {threads} of {cores} cores")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.75 * cores:
        causes.append(f"the CPU is busy (load average {load:.1f} on {cores} cores)")
    return "; ".join(causes) or "no obvious cause: rerun `zoo bench` on an idle machine"


def default_expectation(model: BertModel) -> tuple[float, str]:
    """The rule for models the catalog has no figure for: sparse beats onnxruntime fp32, dense stays within 10%."""
    from zoo.runtime.engine import encoder_density

    if encoder_density(model) > 0.5:
        return DENSE_EXPECTED, "default for dense encoders: no slower than 1.1x onnxruntime fp32"
    return SPARSE_EXPECTED, "default for sparse encoders: faster than onnxruntime fp32"


def _ort_fp32_p50(model: BertModel, threads: int, runs: int, feed: dict[str, np.ndarray]) -> tuple[float, str]:
    """onnxruntime fp32's p50 on ``model``'s exported graph, timed in a child process so its thread pool and ours
    never share one; in this process only when the child cannot run (said in the second value)."""
    from zoo.convert.onnx_export import export
    from zoo.runtime.bench import _ort_session, ort_p50_in_child, time_runs

    ids = feed["input_ids"]
    with tempfile.TemporaryDirectory(prefix="zoo-validate-") as tmp:
        path = Path(tmp) / "fp32.onnx"
        export(model, path, quantized=False)
        try:
            p50, pid = ort_p50_in_child(path, threads, runs, model.config.vocab_size, ids.shape[1], FEED_SEED)
            return p50, f"child process {pid}"
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            session = _ort_session(path, threads)
            return statistics.median(time_runs(lambda: session.run(None, feed), runs)), f"same process ({exc})"


def validate(name: str, model: BertModel, engine: Any, threads: int, runs: int = 20,
             expected: tuple[float, str] | None = None) -> Verdict:
    """Outputs against the reference, latency against onnxruntime fp32; ``expected`` is (speedup, its source),
    by default ``default_expectation``. The caller records the verdict (``zoo.prepare`` does)."""
    import time

    from zoo.convert.reference import forward
    from zoo.runtime.bench import sample_inputs, time_runs
    from zoo.runtime.engine import OnnxRuntimeEngine

    started = time.perf_counter()
    cfg = model.config
    worst, tol = 0.0, float("inf")
    for seed, (batch, seq) in enumerate(((1, 16), (2, 48))):
        feed = sample_inputs(cfg.vocab_size, batch, min(seq, cfg.max_positions), seed, pairs=True)
        ref = forward(model, **feed)
        out = engine(**feed)
        tol = min(tol, tolerance(model, ref))
        worst = max(worst, *(float(np.abs(out[k] - ref[k]).max()) for k in ref))
    feed = sample_inputs(cfg.vocab_size, 1, min(128, cfg.max_positions), FEED_SEED, pairs=True)
    p50 = statistics.median(time_runs(lambda: engine(**feed), runs))
    if isinstance(engine, OnnxRuntimeEngine):  # the engine is onnxruntime: nothing else shares its process
        ort_p50, timed_in = statistics.median(time_runs(lambda: engine.session.run(None, feed), runs)), "same process"
    else:
        ort_p50, timed_in = _ort_fp32_p50(model, threads, runs, feed)
    speedup = ort_p50 / p50
    expected, why = expected or default_expectation(model)
    kinds = engine.kinds()
    label = "onnxruntime" if isinstance(engine, OnnxRuntimeEngine) else "sparse(" + ",".join(sorted(kinds)) + ")"
    warning = None
    if speedup < expected:
        warning = (f"{name}: {speedup:.2f}x onnxruntime-fp32 is below the {expected:.2f}x expected for this variant "
                   f"({why}); likely cause: {_cause(threads, model)}")
    verdict = Verdict(name, label, round(p50, 3), round(ort_p50, 3), round(speedup, 2), round(expected, 2), worst, tol,
                      worst <= tol, threads, cpu_summary(), warning, round(time.perf_counter() - started, 2), timed_in)
    return verdict
