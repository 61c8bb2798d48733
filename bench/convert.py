"""Time and peak memory to convert full-size 12-layer oBERT-shaped checkpoints (~436 MB).

For each variant a synthetic repo is written with ``zoo.synth`` (not timed), then a fresh process
converts it (read the torch zip checkpoint safely + place every tensor + fold QAT) and, separately,
converts and exports ONNX. Peak memory is the child's max RSS. Targets: < 10 s and < 1.5 GB.
Writes bench/results/convert.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t = time.perf_counter()
from zoo.convert.repo import load_model
model = load_model(sys.argv[1])
stage = {"convert_s": time.perf_counter() - t}
if sys.argv[2] == "export":
    from zoo.convert.onnx_export import export
    t2 = time.perf_counter()
    export(model, sys.argv[3])
    stage["export_s"] = time.perf_counter() - t2
stage["total_s"] = time.perf_counter() - t
stage["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(stage))
"""

VARIANTS = {
    "obert-12l-90 (fp32, 90% unstructured)": dict(sparsity=90, pattern="unstructured"),
    "obert-12l-80-quant (int8 QAT, block4)": dict(sparsity=80, pattern="block4", qat=True),
}


def child(repo: Path, mode: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(repo), mode, str(out)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from zoo.synth import SynthSpec, write_repo

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, kw in VARIANTS.items():
            repo = write_repo(Path(tmp) / label.split()[0], SynthSpec(layers=args.layers, **kw))  # type: ignore[arg-type]
            size_mb = (repo / "pytorch_model.bin").stat().st_size / 1e6
            convert = child(repo, "convert", Path(tmp) / "x.onnx")
            exported = child(repo, "export", Path(tmp) / "x.onnx")
            rows.append({"model": label, "checkpoint_mb": round(size_mb, 1), "convert_s": round(convert["convert_s"], 2),
                         "convert_peak_mb": round(convert["peak_rss_mb"]), "export_s": round(exported["export_s"], 2),
                         "convert_export_s": round(exported["total_s"], 2), "convert_export_peak_mb": round(exported["peak_rss_mb"])})
    head = f"{'model':<40} {'ckpt MB':>8} {'convert s':>10} {'peak MB':>8} {'+ONNX s':>8} {'total s':>8} {'peak MB':>8}"
    print(head)
    for r in rows:
        print(f"{r['model']:<40} {r['checkpoint_mb']:>8} {r['convert_s']:>10} {r['convert_peak_mb']:>8} {r['export_s']:>8} "
              f"{r['convert_export_s']:>8} {r['convert_export_peak_mb']:>8}")
    print("targets: convert < 10 s, peak < 1500 MB")
    out = Path(__file__).parent / "results" / "convert.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
