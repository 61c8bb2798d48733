"""Write each variant's expected speedup for one CPU family into its stub (``[runtime.<family>]``) from a
bench/engines.py results file.

The install-time check (``zoo download``, first ``zoo.load``) compares the engine with onnxruntime fp32 and
warns below the catalog's figure for the CPU family it runs on: ``amx`` (AMX-INT8), ``avx512-vnni`` or
``avx2``. The family is read from the results' CPU flags or kernels (``--family`` overrides). The figure is a
fraction (default 80%) of the speedup measured over onnxruntime fp32 on the same weights, so ordinary
run-to-run noise does not warn. Variants that were not benchmarked (classification, upstream) take the figure
of the benchmarked variant with the same encoder (layers, sparsity, pattern, quantization), and their source
says so. Other families' sections are kept. Run `zoo catalog build` afterwards.
    python bench/expectations.py [--results bench/results/engines.json] [--family avx2] [--fraction 0.8]
A results file's ``meta.source`` (default bench/engines.py) and ``meta.note`` are cited in the source text.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("amx", "avx512-vnni", "avx2")  # zoo.catalog.fields.CPU_FAMILIES, in the order stubs list them
SECTION = re.compile(r"\n*\[runtime(?:\.[\w-]+)?\]\n(?:(?!\[)[^\n]*\n?)*")


def encoder_key(stub: dict) -> tuple:
    return (stub["architecture"]["layers"], float(stub["sparsity"]["target"]), stub["sparsity"]["pattern"],
            stub["quantization"]["scheme"] != "none")


def family_of(meta: dict) -> str:
    """The CPU family a results file was measured on, from its flags (peers/contention) or kernels (engines)."""
    flags, kernels = set(meta.get("flags", [])), {k for k, v in meta.get("kernels", {}).items() if v}
    if "amx_int8" in flags or "amx" in kernels:
        return "amx"
    if "avx512_vnni" in flags or {"avx512", "vnni"} <= kernels:
        return "avx512-vnni"
    if "avx2" in flags or "avx2" in kernels:
        return "avx2"
    raise SystemExit(f"cannot tell the CPU family of {meta.get('cpu', 'this results file')}: pass --family")


def runtime_sections(tables: dict) -> str:
    """The ``[runtime.<family>]`` sections of a stub, in FAMILIES order."""
    out = []
    for family in FAMILIES:
        if family in tables:
            t = tables[family]
            out.append(f"[runtime.{family}]\nexpected_speedup = {t['expected_speedup']}\nspeedup_source = {json.dumps(t['speedup_source'])}\n")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "engines.json")
    parser.add_argument("--stubs", type=Path, default=ROOT / "stubs")
    parser.add_argument("--family", choices=FAMILIES, help="the CPU family the results were measured on (default: read from them)")
    parser.add_argument("--fraction", type=float, default=0.8)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    meta = results["meta"]
    family = args.family or family_of(meta)
    cpu = meta.get("cpu") or meta.get("machine", "unknown CPU")
    cited = meta.get("source", "bench/engines.py")
    note = f"; {meta['note']}" if meta.get("note") else ""
    measured = {r["model"]: r for r in results["rows"]}
    stubs = {p: tomllib.loads(p.read_text()) for p in sorted(args.stubs.glob("*.toml"))}
    by_encoder = {encoder_key(s): s["name"] for s in stubs.values() if s["name"] in measured}
    written = 0
    for path, stub in stubs.items():
        tables = {f: t for f, t in stub.get("runtime", {}).items() if isinstance(t, dict)}
        source_name = stub["name"] if stub["name"] in measured else by_encoder.get(encoder_key(stub))
        if source_name is None and not tables:
            continue
        if source_name is not None:
            row = measured[source_name]
            on = "" if source_name == stub["name"] else f" on {source_name} (same encoder)"
            tables[family] = {
                "expected_speedup": round(args.fraction * row["speedup_vs_ort_fp32"], 2),
                "speedup_source": f"{cited}{on}: {row['speedup_vs_ort_fp32']:.2f}x onnxruntime fp32 measured at batch {meta['batch']}, "
                                  f"sequence {meta['seq']}, {meta['threads']} threads on {cpu} ({meta.get('date', 'date not recorded')}); "
                                  f"expectation = {args.fraction:.0%} of that, for run-to-run noise" + note}
            written += 1
        text = SECTION.sub("", path.read_text()).rstrip("\n")
        path.write_text(f"{text}\n\n{runtime_sections(tables)}")
    print(f"wrote [runtime.{family}] into {written} of {len(stubs)} stubs; now run `zoo catalog build`")


if __name__ == "__main__":
    main()
