"""Time one engine on one model in this process and print one JSON line: used by bench/peers.py and
bench/contention.py, which start one worker process per engine so no two engines' thread pools share a process.

It imports only numpy and the engine it runs (DeepSparse's venv has no zoo). ``ours`` takes a model directory
(a checkpoint repo), every other engine an ONNX file. With ``--wait`` it compiles and warms up, prints
``{"ready": true}``, and starts timing when a line arrives on stdin, so a parent can start several at once.
    python bench/_worker.py ENGINE MODEL --vocab 30522 [--batch 1 --seq 128 --threads 2 --runs 30 --warmup 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ENGINES = ("ours", "onnxruntime", "onnxruntime-int8", "deepsparse", "deepsparse-int8", "openvino-f32", "openvino-default",
           "openvino-bf16", "openvino-int8")
Feed = dict[str, np.ndarray]


def feed(vocab: int, batch: int, seq: int) -> Feed:
    """The inputs every engine gets: seeded token ids, a question/context split, no padding."""
    ids = np.random.default_rng(0).integers(1000 if vocab > 2000 else 0, vocab, size=(batch, seq)).astype(np.int64)
    types = np.zeros_like(ids)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}


def ours(path: Path, threads: int) -> tuple[Callable[[Feed], object], dict]:
    from zoo.convert.repo import load_model
    from zoo.runtime.engine import compile

    engine = compile(load_model(path), threads=threads)
    return (lambda f: engine(**f)), {"packing": engine.kinds()}


def onnxruntime(path: Path, threads: int) -> tuple[Callable[[Feed], object], dict]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return (lambda f: session.run(None, f)), {"version": ort.__version__}


def deepsparse(path: Path, threads: int) -> tuple[Callable[[Feed], object], dict]:
    import deepsparse as ds
    import onnx

    names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    engine = ds.compile_model(str(path), batch_size=1, num_cores=threads)
    return (lambda f: engine.run([f[n] for n in names])), {"version": ds.__version__}


def openvino(path: Path, threads: int, precision: str | None) -> tuple[Callable[[Feed], object], dict]:
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]
    info = {"version": ov.__version__, "asked": precision or "default",
            "precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}
    return (lambda f: request.infer({n: f[n] for n in names})), info


def load(engine: str, path: Path, threads: int) -> tuple[Callable[[Feed], object], dict]:
    if engine == "ours":
        return ours(path, threads)
    if engine.startswith("onnxruntime"):
        return onnxruntime(path, threads)
    if engine.startswith("deepsparse"):
        return deepsparse(path, threads)
    return openvino(path, threads, {"openvino-f32": "f32", "openvino-bf16": "bf16"}.get(engine))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("model", type=Path)
    parser.add_argument("--vocab", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--wait", action="store_true", help="after warm-up, print a ready line and wait for one on stdin")
    args = parser.parse_args()
    started = time.perf_counter()
    run, info = load(args.engine, args.model, args.threads)
    inputs = feed(args.vocab, args.batch, args.seq)
    for _ in range(args.warmup):
        run(inputs)
    compile_s = time.perf_counter() - started
    if args.wait:
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        run(inputs)
        times.append(round((time.perf_counter() - t) * 1e3, 4))
    print(json.dumps({"engine": args.engine, "times_ms": times, "p50_ms": float(np.median(times)), "compile_s": round(compile_s, 2),
                      "info": info}), flush=True)


if __name__ == "__main__":
    main()
