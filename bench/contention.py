"""Ours against onnxruntime fp32 when the CPU is shared, p50 and p90, in one run on the same weights:

- idle: the engine alone;
- busy core: a bounded busy-loop process pinned to one core (the last this process may use) while it runs;
- two processes: two processes of the same engine timed at the same moment (two server workers on two cores).

Each engine runs in its own processes (bench/_worker.py), conditions and engines interleaved over rounds. For
every condition it prints ours/onnxruntime at p50 and p90 and that speedup as a share of the idle one (issue
16's target: at least 80%, and never slower than onnxruntime under the same load). Writes
bench/results/contention.json. Batch 1, sequence 128, 2 threads (each process).
    python bench/contention.py                       # obert-3l-80-quant and obert-12l-90, 3 rounds (about 6 minutes)
    python bench/contention.py --only obert-3l-80-quant --rounds 5
    python bench/contention.py --quick               # 1-layer obert-3l-80-quant, 1 round of 5 runs: checks the plumbing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import HERE, cpu_facts, export_fp32, gather, main_python, percentile, start_waiting, synth_model
from _harness import worker_command as command

VARIANTS = ("obert-3l-80-quant", "obert-12l-90")
ENGINES = ("ours", "onnxruntime")
CONDITIONS = ("idle", "busy core", "two processes")
TARGET = 0.8
BUSY = ("import os, sys, time\nos.sched_setaffinity(0, {int(sys.argv[1])})\nend = time.monotonic() + float(sys.argv[2])\n"
        "while time.monotonic() < end:\n    pass\n")


def busy_loop(seconds: float) -> subprocess.Popen:
    """A process spinning on one core (the last one this process may use) for at most ``seconds``."""
    core = max(os.sched_getaffinity(0))
    return subprocess.Popen([sys.executable, "-c", BUSY, str(core), str(seconds)])


def measure(condition: str, cmd: list[str], timeout: float) -> list[dict]:
    """The worker results of one engine under one condition (two results for two processes)."""
    procs = [start_waiting(cmd) for _ in range(2 if condition == "two processes" else 1)]
    spinner = busy_loop(timeout) if condition == "busy core" else None
    try:
        return gather(procs, timeout)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def stats(results: list[dict]) -> dict:
    times = [t for r in results if "times_ms" in r for t in r["times_ms"]]
    errors = [r["error"] for r in results if "error" in r]
    if not times:
        return {"error": errors[0] if errors else "no result"}
    return {"p50_ms": percentile(times, 50), "p90_ms": percentile(times, 90), "runs": len(times), "errors": errors}


def compare(row: dict) -> dict:
    """ours/onnxruntime per condition and percentile, and that as a share of the idle speedup."""
    out: dict = {}
    for condition in CONDITIONS:
        ours, ort = row[condition].get("ours", {}), row[condition].get("onnxruntime", {})
        for p in ("p50", "p90"):
            if f"{p}_ms" in ours and f"{p}_ms" in ort:
                out.setdefault(condition, {})[f"speedup_{p}"] = round(ort[f"{p}_ms"] / ours[f"{p}_ms"], 2)
    idle = out.get("idle", {})
    for s in out.values():
        for p in ("p50", "p90"):
            if f"speedup_{p}" in s and idle.get(f"speedup_{p}"):
                s[f"share_of_idle_{p}"] = round(s[f"speedup_{p}"] / idle[f"speedup_{p}"], 2)
    return out


def line(name: str, condition: str, row: dict) -> str:
    ours, ort, s = row[condition]["ours"], row[condition]["onnxruntime"], row["speedup"].get(condition, {})

    def ms(d: dict, p: str) -> str:
        return f"{d[p]:.2f}" if p in d else "-"

    def x(key: str, fmt: str = "{:.2f}x") -> str:
        return fmt.format(s[key]) if key in s else "-"

    return (f"{name:<20} {condition:<14} {ms(ours, 'p50_ms'):>9} {ms(ours, 'p90_ms'):>8} {ms(ort, 'p50_ms'):>9} {ms(ort, 'p90_ms'):>8} "
            f"{x('speedup_p50'):>6} {x('speedup_p90'):>6} {x('share_of_idle_p50', '{:.0%}'):>11} {x('share_of_idle_p90', '{:.0%}'):>5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), help="catalog names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40, help="timed runs per process per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, help="override every variant's depth (quick checks)")
    parser.add_argument("--quick", action="store_true", help="1-layer obert-3l-80-quant, 1 round of 5 runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "contention.json")
    args = parser.parse_args()
    if args.quick:
        args.only, args.layers, args.rounds, args.runs, args.warmup = ["obert-3l-80-quant"], 1, 1, 5, 2
    facts = cpu_facts()
    print(f"CPU: {facts['cpu']}; flags {' '.join(facts['flags'])}", flush=True)
    print(f"{'model':<20} {'condition':<14} {'ours p50':>9} {'p90':>8} {'ort p50':>9} {'p90':>8} {'x p50':>6} {'x p90':>6} "
          f"{'of idle p50':>11} {'p90':>5}")
    rows = []
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix="zoo-contention-") as tmp:
            model, bert = synth_model(name, Path(tmp), args.layers)
            export_fp32(model, bert, Path(tmp))
            raw: dict[str, dict[str, list[dict]]] = {c: {e: [] for e in ENGINES} for c in CONDITIONS}
            for r in range(args.rounds):
                for condition in CONDITIONS[r % 3:] + CONDITIONS[:r % 3]:
                    for engine in ENGINES if r % 2 == 0 else ENGINES[::-1]:
                        cmd = command(main_python(), engine, model.graphs[engine], model.vocab, args.threads, args.runs, args.warmup,
                                      wait=True)
                        raw[condition][engine] += measure(condition, cmd, timeout=900)
        row = {"model": name, "layers": args.layers} | {c: {e: stats(raw[c][e]) for e in ENGINES} for c in CONDITIONS}
        row["speedup"] = compare(row)
        rows.append(row)
        for condition in CONDITIONS:
            print(line(name, condition, row), flush=True)
            for e, d in row[condition].items():
                if d.get("error") or d.get("errors"):
                    print(f"  {condition} {e}: {d.get('error') or d['errors'][0]}", flush=True)
    args.out.parent.mkdir(exist_ok=True)
    meta = {"batch": 1, "seq": 128, "threads": args.threads, "rounds": args.rounds, "runs": args.runs, "layers_override": args.layers,
            **facts, "target_share_of_idle": TARGET, "date": time.strftime("%Y-%m-%d"),
            "method": "each engine in its own process(es); busy core = a busy-loop process pinned to the last core; two processes "
                      "= two workers released together; p50/p90 over all runs of all rounds (and both processes)"}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
