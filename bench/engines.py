"""Every SQuAD variant shape at full size (hidden 768), built with zoo.synth, through our sparse engine,
onnxruntime fp32 and onnxruntime int8 (dynamic), side by side in one process.

Batch 1, sequence 128, 2 threads by default. Writes bench/results/engines.json and prints the table.
    python bench/engines.py                     # all 27 variants (about 15 minutes on 2 cores)
    python bench/engines.py --only obert-3l-80-quant obert-12l-90
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

TARGETS_MS = {"obert-12l-90": 20.0, "obert-3l-80-quant": 3.0, "obert-12l-80-quant": 12.0}


def cpu_description() -> str:
    """e.g. "AMD EPYC (family 26), 2 cores, avx512+vnni": enough to tell machines apart in results and sources."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    name = fields.get("model name\t", "").strip() or platform.processor() or platform.machine()
    family = fields.get("cpu family\t", "").strip()
    from zoo.runtime import _kernels

    feats = "+".join(k for k, v in _kernels.features().items() if v) or "portable kernels"
    return f"{name}{f' (family {family})' if family else ''}, {len(os.sched_getaffinity(0))} cores, {feats}"


def main() -> None:
    import zoo
    from zoo.catalog import Filters
    from zoo.convert.repo import load_model
    from zoo.runtime import _kernels
    from zoo.runtime.bench import bench_model
    from zoo.synth import SynthSpec, write_repo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="catalog names to run (default: the 27 SQuAD variants)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engines.json")
    args = parser.parse_args()

    cards = [zoo.resolve(n) for n in args.only] if args.only else [
        c for c in zoo.list_models(Filters(task="question-answering"), sort="name") if c.stage == "downstream"]
    rows = []
    print(f"{'model':<22} {'sparse ms':>10} {'ort fp32':>9} {'ort int8':>9} {'vs fp32':>8} {'vs int8':>8}  packing")
    for card in cards:
        with tempfile.TemporaryDirectory(prefix="zoo-engines-") as tmp:
            t = time.perf_counter()
            repo = write_repo(Path(tmp) / card.name, SynthSpec.for_card(card))
            model = load_model(repo)
            results = {r.engine: r for r in bench_model(model, batch=args.batch, seq=args.seq, threads=args.threads, runs=args.runs)}
            from zoo.runtime.engine import compile

            kinds = compile(model, threads=args.threads).kinds()
        sparse, fp32, int8 = results["sparse"], results["onnxruntime"], results["onnxruntime-int8"]
        row = {"model": card.name, "layers": card.layers, "sparsity": card.sparsity, "pattern": card.pattern, "quantized": card.quantized,
               "sparse_p50_ms": sparse.p50_ms, "sparse_p90_ms": sparse.p90_ms, "ort_fp32_p50_ms": fp32.p50_ms,
               "ort_int8_p50_ms": int8.p50_ms, "speedup_vs_ort_fp32": round(fp32.p50_ms / sparse.p50_ms, 2),
               "speedup_vs_ort_int8": round(int8.p50_ms / sparse.p50_ms, 2), "packing": kinds,
               "target_ms": TARGETS_MS.get(card.name), "wall_s": round(time.perf_counter() - t, 1)}
        rows.append(row)
        print(f"{card.name:<22} {sparse.p50_ms:>10.2f} {fp32.p50_ms:>9.2f} {int8.p50_ms:>9.2f} {row['speedup_vs_ort_fp32']:>7.2f}x "
              f"{row['speedup_vs_ort_int8']:>7.2f}x  {','.join(f'{k}:{v}' for k, v in kinds.items())}", flush=True)
    args.out.parent.mkdir(exist_ok=True)
    if args.only and args.out.exists():  # re-measured rows replace their old ones; the rest are kept
        fresh = {r["model"] for r in rows}
        rows = [r for r in json.loads(args.out.read_text())["rows"] if r["model"] not in fresh] + rows
    meta = {"batch": args.batch, "seq": args.seq, "threads": args.threads, "runs": args.runs, "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "kernels": _kernels.features(), "cpu": cpu_description(),
            "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
