"""Write each variant's expected speedup into its stub (``[runtime]``) from bench/results/engines.json.

The install-time check (``zoo download``, first ``zoo.load``) warns when the engine falls below this figure.
It is a fraction (default 80%) of the speedup bench/engines.py measured over onnxruntime fp32 on the same
weights, so ordinary run-to-run noise does not warn. Variants that were not benchmarked (classification,
upstream) take the figure of the benchmarked variant with the same encoder (layers, sparsity, pattern,
quantization), and their source says so. Run `zoo catalog build` afterwards.
    python bench/expectations.py [--results bench/results/engines.json] [--fraction 0.8]
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = re.compile(r"\n*\[runtime\]\n(?:(?!\[)[^\n]*\n?)*")


def encoder_key(stub: dict) -> tuple:
    return (stub["architecture"]["layers"], float(stub["sparsity"]["target"]), stub["sparsity"]["pattern"],
            stub["quantization"]["scheme"] != "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "engines.json")
    parser.add_argument("--stubs", type=Path, default=ROOT / "stubs")
    parser.add_argument("--fraction", type=float, default=0.8)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    meta = results["meta"]
    cpu = meta.get("cpu") or meta.get("machine", "unknown CPU")
    measured = {r["model"]: r for r in results["rows"]}
    stubs = {p: tomllib.loads(p.read_text()) for p in sorted(args.stubs.glob("*.toml"))}
    by_encoder = {encoder_key(s): s["name"] for s in stubs.values() if s["name"] in measured}
    written = 0
    for path, stub in stubs.items():
        source_name = stub["name"] if stub["name"] in measured else by_encoder.get(encoder_key(stub))
        if source_name is None:
            continue
        row = measured[source_name]
        figure = round(args.fraction * row["speedup_vs_ort_fp32"], 2)
        on = "" if source_name == stub["name"] else f" on {source_name} (same encoder)"
        source = (f"bench/engines.py{on}: {row['speedup_vs_ort_fp32']:.2f}x onnxruntime fp32 measured at batch {meta['batch']}, "
                  f"sequence {meta['seq']}, {meta['threads']} threads on {cpu} ({meta.get('date', 'date not recorded')}); "
                  f"expectation = {args.fraction:.0%} of that, for run-to-run noise")
        text = SECTION.sub("", path.read_text()).rstrip("\n")
        path.write_text(f"{text}\n\n[runtime]\nexpected_speedup = {figure}\nspeedup_source = {json.dumps(source)}\n")
        written += 1
    print(f"wrote [runtime] into {written} of {len(stubs)} stubs; now run `zoo catalog build`")


if __name__ == "__main__":
    main()
