"""`zoo serve` under load, beside the pipeline called directly, in one run.

A full-size synthetic model shaped like the catalog entry (default obert-3l-80-quant) answers one short
SQuAD-style question per request through the task route. Server configurations, each its own process:
sparse engine with dynamic batching (--max-batch 32), the same with --max-batch 1, and onnxruntime with
batching; the load generator (asyncio + httpx, this process, 127.0.0.1 only) runs at concurrency 1, 16
and 64 for a bounded number of requests. Writes bench/results/serve.json and prints the table.

    python bench/serve.py [--model obert-3l-80-quant] [--requests 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from engines import cpu_description  # noqa: E402

QUESTION = "Which team won the game at Levi's Stadium?"
CONTEXT = ("The Denver Broncos defeated the Carolina Panthers 24-10 to win Super Bowl 50, played on February 7, 2016, at Levi's "
           "Stadium in Santa Clara, California. The game was the 50th Super Bowl and the Broncos' third title. Their defense, "
           "led by Von Miller, forced four turnovers.")
SERVERS = {"sparse, batching": ["--engine", "sparse"], "sparse, --max-batch 1": ["--engine", "sparse", "--max-batch", "1"],
           "onnxruntime, batching": ["--engine", "onnxruntime"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def pipeline_alone(repo: Path, threads: int, runs: int) -> dict:
    import zoo

    qa = zoo.load(str(repo), threads=threads, engine="sparse")
    for _ in range(5):
        qa(question=QUESTION, context=CONTEXT)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        qa(question=QUESTION, context=CONTEXT)
        times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(percentile(times, 99), 3),
            "answers_per_s": round(1000 / statistics.mean(times), 1)}


def start(repo: Path, args: list[str], threads: int, home: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "serve", str(repo), "--port", "0", "--threads", str(threads), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "ZOO_HOME": home})
    line = proc.stdout.readline()
    if not line.startswith("zoo serve: ready at "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split(" ready at ", 1)[1].split(": ", 1)[0].strip()


async def load(url: str, concurrency: int, total: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    body = {"inputs": {"question": QUESTION, "context": CONTEXT}}
    left = total

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            t = time.perf_counter()
            r = await client.post(url, json=body)
            latencies.append((time.perf_counter() - t) * 1000)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for _ in range(3):
            await client.post(url, json=body)  # warm connections and the server's first-call paths
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "answers_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(statistics.median(latencies), 3), "p99_ms": round(percentile(latencies, 99), 3)}


def main() -> None:
    from zoo.catalog import resolve
    from zoo.synth import SynthSpec, write_repo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="obert-3l-80-quant")
    parser.add_argument("--requests", type=int, default=200, help="requests per (server, concurrency) cell")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    args = parser.parse_args()

    card = resolve(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-serve-") as tmp:
        repo = write_repo(Path(tmp) / card.name, SynthSpec.for_card(card))
        alone = pipeline_alone(repo, args.threads, max(50, args.requests // 2))
        rows.append({"server": "pipeline alone (no HTTP)", "concurrency": 1, **alone})
        print(f"CPU: {cpu_description()}")
        print(f"{'server':<26} {'conc':>5} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        print(f"{rows[0]['server']:<26} {1:>5} {alone['answers_per_s']:>10.1f} {alone['p50_ms']:>8.2f} {alone['p99_ms']:>8.2f} {0:>6}")
        for label, flags in SERVERS.items():
            proc, url = start(repo, flags, args.threads, str(Path(tmp) / "home"))
            try:
                for c in args.concurrency:
                    cell = asyncio.run(load(f"{url}/models/{card.name}", c, args.requests if c > 1 else max(50, args.requests // 2)))
                    rows.append({"server": label, **cell})
                    print(f"{label:<26} {c:>5} {cell['answers_per_s']:>10.1f} {cell['p50_ms']:>8.2f} {cell['p99_ms']:>8.2f} "
                          f"{cell['errors']:>6}", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    by = {(r["server"], r["concurrency"]): r for r in rows}
    summary = {"overhead_ms_at_c1": round(by[("sparse, batching", 1)]["p50_ms"] - alone["p50_ms"], 3)}
    for c in args.concurrency:
        if c > 1:
            summary[f"batching_gain_c{c}"] = round(by[("sparse, batching", c)]["answers_per_s"] /
                                                  by[("sparse, --max-batch 1", c)]["answers_per_s"], 2)
    print(json.dumps(summary))
    args.out.parent.mkdir(exist_ok=True)
    meta = {"model": card.name, "synthetic": True, "threads": args.threads, "requests": args.requests, "cpu": cpu_description(),
            "date": time.strftime("%Y-%m-%d"), "context_chars": len(CONTEXT)}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
