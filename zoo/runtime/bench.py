"""Side-by-side latency of our sparse engine and onnxruntime (fp32 and int8 dynamic) on the same weights,
in one process. Used by ``zoo bench`` and ``bench/engines.py``."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zoo.convert.bert import BertModel

ENGINES = ("sparse", "onnxruntime", "onnxruntime-int8")


@dataclass(frozen=True)
class BenchResult:
    engine: str
    batch: int
    seq: int
    threads: int
    runs: int
    p50_ms: float
    p90_ms: float
    items_per_s: float
    speedup_vs_ort_fp32: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def sample_inputs(vocab: int, batch: int, seq: int, seed: int = 0, pairs: bool = False) -> dict[str, np.ndarray]:
    """Random token ids; with ``pairs`` the second half of each row is segment 1 and the last row of a batch
    is half padding, as question/context batches are."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000 if vocab > 2000 else 0, vocab, size=(batch, seq))
    mask, types = np.ones_like(ids), np.zeros_like(ids)
    if pairs:
        types[:, seq // 2:] = 1
        if batch > 1:
            mask[-1, seq // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def time_runs(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def _ort_session(path: Path, threads: int):  # noqa: ANN202
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def runners(model: BertModel, engines: tuple[str, ...], threads: int, workdir: Path) -> dict[str, Callable[[dict], object]]:
    """A callable per engine, all over the same weights (ONNX graphs are exported into ``workdir``)."""
    out: dict[str, Callable[[dict], object]] = {}
    fp32 = workdir / "model.fp32.onnx"
    if any(e.startswith("onnxruntime") for e in engines):
        from zoo.convert.onnx_export import export

        export(model, fp32, quantized=False)
    if "sparse" in engines:
        from zoo.runtime.engine import compile

        engine = compile(model, threads=threads, workdir=workdir)
        out["sparse"] = lambda feed: engine(**feed)
    if "onnxruntime" in engines:
        session = _ort_session(fp32, threads)
        out["onnxruntime"] = lambda feed: session.run(None, feed)
    if "onnxruntime-int8" in engines:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing tip on every call
        int8 = workdir / "model.int8-dynamic.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        session8 = _ort_session(int8, threads)
        out["onnxruntime-int8"] = lambda feed: session8.run(None, feed)
    return out


def bench_model(model: BertModel, engines: tuple[str, ...] = ENGINES, batch: int = 1, seq: int = 128, threads: int = 2,
                runs: int = 30) -> list[BenchResult]:
    """p50/p90 latency per engine on identical inputs; speedups relative to onnxruntime fp32 when it ran."""
    unknown = set(engines) - set(ENGINES)
    if unknown:
        from zoo.errors import ZooError

        raise ZooError(f"unknown engine(s): {', '.join(sorted(unknown))}", f"choose from {', '.join(ENGINES)}")
    feed = sample_inputs(model.config.vocab_size, batch, min(seq, model.config.max_positions))
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        fns = runners(model, engines, threads, Path(tmp))
        raw = {name: time_runs(lambda fn=fn: fn(feed), runs) for name, fn in fns.items()}
    base = statistics.median(raw["onnxruntime"]) if "onnxruntime" in raw else None
    results = []
    for name in engines:
        times = sorted(raw[name])
        p50 = statistics.median(times)
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        results.append(BenchResult(name, batch, seq, threads, runs, round(p50, 3), round(p90, 3), round(batch * 1000 / p50, 1),
                                   round(base / p50, 2) if base else None))
    return results


def ort_p50_in_child(path: Path, threads: int, runs: int, vocab: int, seq: int, seed: int, timeout: float = 600) -> tuple[float, int]:
    """onnxruntime fp32's p50 on ``path`` timed in a child process (``python -m zoo.runtime.bench``), and the
    child's pid: its thread pool never shares a process with ours (in one process they disturb each other by
    3-21%). Raises ``RuntimeError`` with the child's last line when it fails."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "zoo.runtime.bench", str(path), "--threads", str(threads), "--runs", str(runs), "--vocab", str(vocab),
           "--seq", str(seq), "--seed", str(seed)]
    import os

    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this zoo, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"onnxruntime timing child ran past {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"onnxruntime timing child failed: {tail}")
    result = json.loads(lines[-1])
    return float(result["p50_ms"]), int(result["pid"])


def main() -> None:
    """Time onnxruntime on one ONNX file with validation's inputs and print ``{"p50_ms": ..., "pid": ...}``."""
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(prog="python -m zoo.runtime.bench", description=main.__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--vocab", type=int, required=True)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    session = _ort_session(args.model, args.threads)
    feed = sample_inputs(args.vocab, 1, args.seq, args.seed, pairs=True)
    p50 = statistics.median(time_runs(lambda: session.run(None, feed), args.runs))
    print(json.dumps({"p50_ms": p50, "pid": os.getpid()}), flush=True)


if __name__ == "__main__":
    main()
