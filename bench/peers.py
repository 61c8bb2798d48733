"""Ours beside the real peers on the same synthetic weights: onnxruntime fp32 and int8 dynamic, DeepSparse 1.8
(fp32, and int8 on onnxruntime's QOperator static quantization of the Linears) and OpenVINO (f32 forced, its
default precision, bf16 asked for, and int8). Each engine runs in its own process (bench/_worker.py); rounds
are interleaved and each round rotates the engine order. Batch 1, sequence 128, 2 threads.

DeepSparse 1.8 pins numpy 1.26 and onnx 1.14.1, so it lives in its own venv (.venv-deepsparse, created here
when missing); OpenVINO is the `[peers]` extra (installed here when missing). A peer that cannot be installed
is skipped with one line saying why. Writes bench/results/peers.json and prints the median of the per-round
p50s with their range.
    python bench/peers.py                                # the 7 variants of issue 16, 5 rounds (about 25 minutes)
    python bench/peers.py --only obert-3l-80-quant --rounds 3
    python bench/peers.py --quick                        # 1-layer obert-3l-80-quant, 1 round of 5 runs: checks the plumbing
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import HERE, Model, cpu_facts, export_fp32, main_python, percentile, pip_install, python_has, run_worker, synth_model
from _harness import worker_command as command

ROOT = HERE.parent
VARIANTS = ("obert-3l-80-quant", "obert-3l-90", "obert-6l-90-quant", "obert-12l-90", "obert-12l-97", "obert-12l-80-quant",
            "obert-12l-90-quant")
ENGINES = ("ours", "onnxruntime", "onnxruntime-int8", "deepsparse", "deepsparse-int8", "openvino-f32", "openvino-default",
           "openvino-bf16", "openvino-int8")
DEEPSPARSE = "deepsparse==1.8.0"
LABELS = {"ours": "ours", "onnxruntime": "ort fp32", "onnxruntime-int8": "ort int8", "deepsparse": "DS fp32",
          "deepsparse-int8": "DS int8", "openvino-f32": "OV f32", "openvino-default": "OV dflt", "openvino-bf16": "OV bf16",
          "openvino-int8": "OV int8"}


def deepsparse_python(venv: Path) -> tuple[str | None, str]:
    """The DeepSparse venv's python (created on first use), or None and why it cannot be had."""
    python = venv / "bin" / "python"
    if python.exists() and python_has(str(python), "deepsparse"):
        return str(python), f"{venv}"
    print(f"creating the DeepSparse venv {venv} (python -m venv; pip install {DEEPSPARSE}): once, a minute or two", flush=True)
    import subprocess

    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"python -m venv failed: {(made.stderr.strip().splitlines() or ['?'])[-1]}"
    error = pip_install(str(python), DEEPSPARSE)
    return (None, f"pip install {DEEPSPARSE} failed: {error}") if error else (str(python), f"{venv} (created now)")


def openvino_python() -> tuple[str | None, str]:
    if python_has(main_python(), "openvino"):
        return main_python(), "installed"
    print("installing openvino (the [peers] extra) into this environment", flush=True)
    error = pip_install(main_python(), "openvino")
    return (None, f"pip install openvino failed: {error}") if error else (main_python(), "installed now")


def decompose_layer_norm(graph_path: Path, out: Path, batch: int, seq: int) -> None:
    """Opset 13 with each LayerNormalization spelt as ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add (DeepSparse 1.8 has no
    opset-17 LayerNormalization; onnxruntime gives identical outputs), static input shapes, IR 8 (onnx 1.14)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(graph_path))
    nodes, extra = [], []
    for n in proto.graph.node:
        if n.op_type != "LayerNormalization":
            nodes.append(n)
            continue
        x, gamma, beta = n.input
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        p = n.name
        two, e = f"{p}_two", f"{p}_eps"
        extra += [numpy_helper.from_array(np.float32(2.0), two), numpy_helper.from_array(np.float32(eps), e)]
        nodes += [helper.make_node("ReduceMean", [x], [f"{p}_mean"], axes=[-1], keepdims=1, name=f"{p}_rm1"),
                  helper.make_node("Sub", [x, f"{p}_mean"], [f"{p}_d"], name=f"{p}_sub"),
                  helper.make_node("Pow", [f"{p}_d", two], [f"{p}_sq"], name=f"{p}_pow"),
                  helper.make_node("ReduceMean", [f"{p}_sq"], [f"{p}_var"], axes=[-1], keepdims=1, name=f"{p}_rm2"),
                  helper.make_node("Add", [f"{p}_var", e], [f"{p}_vare"], name=f"{p}_addeps"),
                  helper.make_node("Sqrt", [f"{p}_vare"], [f"{p}_std"], name=f"{p}_sqrt"),
                  helper.make_node("Div", [f"{p}_d", f"{p}_std"], [f"{p}_norm"], name=f"{p}_div"),
                  helper.make_node("Mul", [f"{p}_norm", gamma], [f"{p}_scaled"], name=f"{p}_mul"),
                  helper.make_node("Add", [f"{p}_scaled", beta], list(n.output), name=f"{p}_add")]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(extra)
    for tensor in proto.graph.input:
        for dim, size in zip(tensor.type.tensor_type.shape.dim, (batch, seq), strict=False):
            dim.ClearField("dim_param")
            dim.dim_value = size
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid("", 13)])
    proto.ir_version = 8
    proto = onnx.shape_inference.infer_shapes(proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def quantize_qoperator(fp32_static: Path, out: Path, vocab: int, batch: int, seq: int) -> None:
    """onnxruntime's static QOperator quantization of the Linears (MatMuls with a weight), attention products left
    fp32: the graph DeepSparse's int8 path is built for. Calibrated on a few seeded random inputs."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    proto = onnx.load(str(fp32_static))
    weights = {i.name for i in proto.graph.initializer}
    attention = [n.name for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] not in weights]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.feeds = iter([{"input_ids": rng.integers(1000, vocab, size=(batch, seq)).astype(np.int64),
                                "attention_mask": np.ones((batch, seq), np.int64),
                                "token_type_ids": (np.arange(seq)[None] >= seq // 2).astype(np.int64).repeat(batch, 0)} for _ in range(4)])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(fp32_static), str(out), Reader(), quant_format=QuantFormat.QOperator, op_types_to_quantize=["MatMul"],
                    nodes_to_exclude=attention, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    quantized = onnx.load(str(out))
    quantized.ir_version = 8
    onnx.save(quantized, str(out))


def prepare(name: str, workdir: Path, engines: tuple[str, ...], layers: int | None, batch: int, seq: int) -> Model:
    """Synthetic weights for ``name`` and every graph ``engines`` read (DeepSparse and OpenVINO get static shapes)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from zoo.convert.onnx_export import export

    model, bert = synth_model(name, workdir, layers)
    export_fp32(model, bert, workdir)
    if "onnxruntime-int8" in engines:
        logging.getLogger().setLevel(logging.ERROR)
        quantize_dynamic(str(model.graphs["onnxruntime"]), str(workdir / "int8-dynamic.onnx"), weight_type=QuantType.QInt8)
        model.graphs["onnxruntime-int8"], model.notes["onnxruntime-int8"] = workdir / "int8-dynamic.onnx", "quantize_dynamic QInt8"
    export(bert, workdir / "fp32-static.onnx", quantized=False, static=(batch, seq))  # type: ignore[arg-type]
    decompose_layer_norm(workdir / "fp32-static.onnx", workdir / "fp32-ds.onnx", batch, seq)
    for engine in ("deepsparse", "openvino-f32", "openvino-default", "openvino-bf16"):
        model.graphs[engine], model.notes[engine] = workdir / "fp32-ds.onnx", "zoo export fp32, static, LayerNorm decomposed"
    ptq = "" if model.quantized else " (post-training: another accuracy)"
    if {"deepsparse-int8", "openvino-int8"} & set(engines):
        quantize_qoperator(workdir / "fp32-ds.onnx", workdir / "int8-qoperator.onnx", model.vocab, batch, seq)
        model.graphs["deepsparse-int8"] = model.graphs["openvino-int8"] = workdir / "int8-qoperator.onnx"
        model.notes["deepsparse-int8"] = model.notes["openvino-int8"] = f"ORT quantize_static QOperator, Linears only{ptq}"
    if model.quantized and "openvino-int8" in engines:  # the QAT graph itself: every fake-quant point as QDQ
        export(bert, workdir / "int8-qdq-static.onnx", quantized=True, static=(batch, seq))  # type: ignore[arg-type]
        decompose_layer_norm(workdir / "int8-qdq-static.onnx", workdir / "int8-qdq.onnx", batch, seq)
        model.graphs["openvino-int8"], model.notes["openvino-int8"] = workdir / "int8-qdq.onnx", "zoo export int8 QDQ (QAT), static"
    return model


def summarize(results: list[dict]) -> dict:
    """Median and range of the per-round p50s, p90 over every run."""
    good = [r for r in results if "times_ms" in r]
    if not good:
        return {"error": results[-1].get("error", "no result") if results else "not run"}
    p50s = [statistics.median(r["times_ms"]) for r in good]
    pooled = [t for r in good for t in r["times_ms"]]
    return {"p50_ms": round(statistics.median(p50s), 3), "p50_min_ms": round(min(p50s), 3), "p50_max_ms": round(max(p50s), 3),
            "p90_ms": percentile(pooled, 90), "rounds": len(good), "info": good[-1].get("info", {}), "log": good[-1].get("log", []),
            "errors": [r["error"] for r in results if "error" in r]}


def cell(s: dict) -> str:
    if "p50_ms" not in s:
        return "-"
    spread = f"{s['p50_min_ms']:.1f}-{s['p50_max_ms']:.1f}" if s["rounds"] > 1 else ""
    return f"{s['p50_ms']:.2f}" + (f" ({spread})" if spread else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), help="catalog names")
    parser.add_argument("--engines", nargs="*", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per engine per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, help="override every variant's depth (quick checks)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-deepsparse")
    parser.add_argument("--quick", action="store_true", help="1-layer obert-3l-80-quant, 1 round of 5 runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "peers.json")
    args = parser.parse_args()
    if args.quick:
        args.only, args.layers, args.rounds, args.runs, args.warmup = ["obert-3l-80-quant"], 1, 1, 5, 2
    batch, seq = 1, 128
    engines = tuple(args.engines)
    pythons: dict[str, str] = {}
    peers: dict[str, str] = {}
    if any(e.startswith("deepsparse") for e in engines):
        python, why = deepsparse_python(args.venv)
        peers["deepsparse"] = why if python else f"skipped: {why}"
        if python:
            pythons.update({e: python for e in engines if e.startswith("deepsparse")})
    if any(e.startswith("openvino") for e in engines):
        python, why = openvino_python()
        peers["openvino"] = why if python else f"skipped: {why}"
        if python:
            pythons.update({e: python for e in engines if e.startswith("openvino")})
    pythons.update({e: main_python() for e in engines if e in ("ours", "onnxruntime", "onnxruntime-int8")})
    for peer, state in peers.items():
        print(f"{peer}: {state}", flush=True)
    engines = tuple(e for e in engines if e in pythons)
    facts = cpu_facts()
    print(f"CPU: {facts['cpu']}; flags {' '.join(facts['flags'])}", flush=True)
    rows = []
    header = f"{'model':<20}" + "".join(f" {LABELS[e]:>17}" for e in engines) + "  ours vs best peer"
    print(header)
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix="zoo-peers-") as tmp:
            t = time.perf_counter()
            model = prepare(name, Path(tmp), engines, args.layers, batch, seq)
            raw: dict[str, list[dict]] = {e: [] for e in engines}
            for r in range(args.rounds):
                order = engines[r % len(engines):] + engines[:r % len(engines)]
                for engine in order:
                    cmd = command(pythons[engine], engine, model.graphs[engine], model.vocab, args.threads, args.runs, args.warmup, batch, seq)
                    raw[engine].append(run_worker(cmd, timeout=900))
            stats = {e: summarize(raw[e]) for e in engines}
        peer_p50 = [s["p50_ms"] for e, s in stats.items() if e not in ("ours",) and not e.startswith("onnxruntime") and "p50_ms" in s]
        best = min(peer_p50) if peer_p50 else None
        ours = stats.get("ours", {}).get("p50_ms")
        versus = round(best / ours, 2) if best and ours else None
        rows.append({"model": name, "layers": args.layers, "quantized": model.quantized, "graphs": model.notes, "engines": stats,
                     "ours_vs_best_peer": versus, "wall_s": round(time.perf_counter() - t, 1)})
        print(f"{name:<20}" + "".join(f" {cell(stats[e]):>17}" for e in engines) + (f"  {versus:.2f}x" if versus else "  -"), flush=True)
        write(args, rows, batch, seq, peers, facts)  # after every model: an interrupted run keeps what it measured
        for e, s in stats.items():
            if "error" in s or s.get("errors"):
                print(f"  {e}: {s.get('error') or s['errors'][0]}", flush=True)
    for e in ("openvino-default", "openvino-bf16"):
        infos = [r["engines"][e].get("info", {}) for r in rows if e in r["engines"]]
        if infos and infos[0]:
            print(f"{e}: precision asked {infos[0].get('asked')}, compiled as {infos[0].get('precision')} "
                  f"(CPU capabilities: {','.join(infos[0].get('capabilities', []))})")
    write(args, rows, batch, seq, peers, facts)


def write(args: argparse.Namespace, rows: list[dict], batch: int, seq: int, peers: dict, facts: dict) -> None:
    args.out.parent.mkdir(exist_ok=True)
    meta = {"batch": batch, "seq": seq, "threads": args.threads, "rounds": args.rounds, "runs": args.runs, "layers_override": args.layers,
            "peers": peers, **facts, "date": time.strftime("%Y-%m-%d"),
            "method": "each engine in its own process; rounds interleaved, engine order rotated per round; p50 = median of "
                      "per-round p50s, range = their min-max; p90 over all runs"}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
