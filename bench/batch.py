"""Batch scoring: answers per second for 10,000 QA pairs, one process vs Ray Data with 2 actors, on this machine.

A full-size synthetic model shaped like the catalog entry (default obert-3l-80-quant) answers pairs of a
one-line question and a 60-140 word context written to a JSON Lines file. The synthetic vocabulary spells
most of these words letter by letter, so a pair is ~590 tokens: 1.8 windows of 324 tokens on average (384 at
most, stride 128), three times the tokens of bench/serve.py's one-window pair (184). Each row is
``zoo.batch.run`` end to end (plan shards, load, score, write ``{"line", "id", "result"}`` in order):

  one process, 1 thread      the per-worker baseline
  one process, N threads     every core in one engine (N = --threads-total, default 2)
  Ray Data, N actors x 1     a local Ray (``ray.init``), N actors of one CPU each, each loading the model once

Columns: total seconds (ray.init, actor start-up and model loads included), start-up (until the first shard
is written), answers/s over the whole run and steady answers/s after the first shard. ``--setups`` picks the
rows. Then, at 1 thread on the first ``--stage-pairs`` pairs, where the time goes per answer (plan: tokenize
into windows; forward: the engine; finish: answers from logits) against the one-at-a-time pipeline on the
first ``--single`` pairs, the per-answer cost batching must not exceed. Writes bench/results/batch.json.
``--quick``: 200 pairs on a 64-wide model, only to check the script works.

    python bench/batch.py [--model obert-3l-80-quant] [--pairs 10000] [--batch-size 64] [--threads-total 2]
                          [--setups one,threads,ray] [--stage-pairs 200] [--single 100] [--quick]

What to expect on N machines (c cores each, actors of t threads): N*c/t actors, each paying its start-up once
(Ray worker + ``import zoo`` + load and compile the model, ~1-3 s on a 3-layer model; first use of a catalog
entry on a node also downloads and validates it), then scoring at the single-process rate for t threads,
since actors share nothing but the input file (each reads its own byte range: it must be on shared storage)
and the answers they send back. Throughput should so grow close to linearly with machines until one of the
shared parts saturates: the driver (one process decoding each shard's answer rows and appending them in
order, on the order of 10^5 answers/s for short answers, far above a few thousand per machine), the shared
filesystem, or head-of-line waits (order is preserved, so a slow shard holds back the writing, not the
scoring; Ray Data's backpressure bounds what waits). Per shard, a Ray task round trip (~ms) is spread over
``--batch-size`` answers; on one machine, actors of 1 thread beat one engine of N threads when the engine
does not scale perfectly with threads, at the price of N model copies in memory.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from engines import cpu_description  # noqa: E402

WORDS = ("the team won game season final city stadium coach player scored points during second half record crowd league title "
         "river bridge built century engineer design opened traffic north south station museum painting artist collection").split()


def write_pairs(path: Path, count: int, seed: int = 7) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140))) + "."
            question = "Which " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) + "?"
            f.write(json.dumps({"id": f"q{i}", "question": question, "context": context}) + "\n")
    return path


def score(label: str, repo: Path, pairs: Path, out: Path, batch_size: int, threads: int, home: Path, actors: int = 0) -> dict:
    from zoo.batch import Scoring, run
    from zoo.config import Settings

    scoring = Scoring(str(repo), pairs, out, batch_size=batch_size)
    settings = Settings.from_env(home=home, threads=threads)
    marks: list[tuple[float, int]] = []
    runner = None
    if actors:
        from zoo.integrations.ray_data import scorer

        runner = scorer("local", scoring, settings, actors=actors)
    started = time.perf_counter()
    result = run(scoring, settings, score=runner, progress=lambda done, total: marks.append((time.perf_counter(), done)))
    total = time.perf_counter() - started
    first_t, first_n = marks[1] if len(marks) > 1 else (time.perf_counter(), 0)
    steady = (result.scored - first_n) / (marks[-1][0] - first_t) if len(marks) > 2 and marks[-1][0] > first_t else 0.0
    return {"setup": label, "answers": result.scored, "workers": result.workers, "seconds": round(total, 2),
            "startup_s": round(first_t - started, 2), "answers_per_s": round(result.scored / total, 1), "steady_answers_per_s": round(steady, 1)}


def stages(repo: Path, pairs: Path, count: int, single: int, batch_size: int, home: Path) -> dict:
    """Where one thread's time goes, on the first ``count`` pairs scored as ``zoo.batch`` scores a shard (plan:
    tokenize into windows; forward: the engine; finish: answers from logits), and the one-at-a-time pipeline
    (``qa(question=, context=)``) on the first ``single`` pairs: the per-answer cost batching must not exceed."""
    from zoo.batch import plan, read_records
    from zoo.config import Settings
    from zoo.prepare import pipeline, prepare

    pipe = pipeline(prepare(str(repo), Settings.from_env(home=home, threads=1)))
    with open(pairs, "rb") as f:
        recs = [rec for _, rec in read_records(f)][:count]
    pipe(question=recs[0]["question"], context=recs[0]["context"])  # warm: workspaces, truncating tokenizer
    spent = dict.fromkeys(("plan", "forward", "finish"), 0.0)
    lengths: list[int] = []
    for at in range(0, len(recs), batch_size):
        t = time.perf_counter()
        jobs = [plan(pipe, rec, 1, "pair") for rec in recs[at:at + batch_size]]
        encodings = [e for j in jobs for e in j.encodings]
        lengths += [len(e.ids) for e in encodings]
        t1 = time.perf_counter()
        outs = pipe.forward(encodings)
        t2 = time.perf_counter()
        k = 0
        for j in jobs:
            j.finish(outs[k:k + len(j.encodings)])
            k += len(j.encodings)
        spent["plan"], spent["forward"], spent["finish"] = (spent["plan"] + t1 - t, spent["forward"] + t2 - t1,
                                                             spent["finish"] + time.perf_counter() - t2)
    t = time.perf_counter()
    for rec in recs[:single]:
        pipe(question=rec["question"], context=rec["context"])
    one_ms = 1000 * (time.perf_counter() - t) / max(1, min(single, len(recs)))
    per = {k: round(1000 * v / len(recs), 2) for k, v in spent.items()}
    batch_ms = sum(per.values())
    return {"pairs": len(recs), "windows_per_pair": round(len(lengths) / len(recs), 2), "mean_window_tokens": round(sum(lengths) / len(lengths)),
            "ms_per_answer": per, "batch_ms_per_answer": round(batch_ms, 2), "one_at_a_time_ms_per_answer": round(one_ms, 2),
            "one_at_a_time_pairs": min(single, len(recs)), "batch_vs_one_at_a_time": round(one_ms / batch_ms, 2)}


def main() -> None:
    from zoo.catalog import resolve
    from zoo.synth import SynthSpec, write_repo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="obert-3l-80-quant")
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads-total", type=int, default=2, help="cores used: one process with this many threads, or this many actors")
    parser.add_argument("--setups", default="one,threads,ray", help="which rows: one (1 thread), threads (N threads), ray (N actors)")
    parser.add_argument("--stage-pairs", type=int, default=200, help="pairs of the stage breakdown at 1 thread (0: none)")
    parser.add_argument("--single", type=int, default=100, help="pairs answered one at a time for the stage breakdown")
    parser.add_argument("--quick", action="store_true", help="200 pairs on a 64-wide model: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "batch.json")
    args = parser.parse_args()

    card = resolve(args.model)
    spec = SynthSpec.for_card(card)
    if args.quick:
        spec = SynthSpec.for_card(card, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=256)
        args.pairs = min(args.pairs, 200)
    n = args.threads_total
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-batch-") as tmp:
        tmp_path = Path(tmp)
        repo = write_repo(tmp_path / card.name, spec)
        pairs = write_pairs(tmp_path / "pairs.jsonl", args.pairs)
        print(f"CPU: {cpu_description()}; {args.pairs} pairs, {card.name} (synthetic{', quick' if args.quick else ''}), "
              f"batch size {args.batch_size}")
        print(f"{'setup':<26} {'answers':>8} {'seconds':>8} {'start-up s':>10} {'answers/s':>10} {'steady/s':>9}")
        setups = {"one": ("one process, 1 thread", 1, 0), "threads": (f"one process, {n} threads", n, 0),
                  "ray": (f"Ray Data, {n} actors x 1", 1, n)}
        chosen = [setups[k] for k in args.setups.split(",")]
        for i, (label, threads, actors) in enumerate(chosen):
            row = score(label, repo, pairs, tmp_path / f"out-{i}.jsonl", args.batch_size, threads, tmp_path / "home", actors)
            rows.append(row)
            print(f"{label:<26} {row['answers']:>8} {row['seconds']:>8.2f} {row['startup_s']:>10.2f} {row['answers_per_s']:>10.1f} "
                  f"{row['steady_answers_per_s']:>9.1f}", flush=True)
        answers = [[json.loads(line)["result"]["answer"] for line in (tmp_path / f"out-{i}.jsonl").read_text().splitlines()]
                   for i in range(len(chosen))]
        for label, other in zip([c[0] for c in chosen], answers, strict=True):
            assert len(other) == len(answers[0]), f"{label} wrote {len(other)} answers, not {len(answers[0])}"
        breakdown = stages(repo, pairs, args.stage_pairs, args.single, args.batch_size, tmp_path / "home") if args.stage_pairs else {}
    by = {row["setup"]: row for row in rows}
    one, many, ray = (by.get(setups[k][0]) for k in ("one", "threads", "ray"))
    summary = {}
    if ray and one:
        summary |= {"ray_vs_one_thread": round(ray["answers_per_s"] / one["answers_per_s"], 2),
                    "ray_steady_vs_one_thread": round(ray["steady_answers_per_s"] / max(one["steady_answers_per_s"], 1e-9), 2)}
    if ray and many:
        summary["ray_vs_threads"] = round(ray["answers_per_s"] / many["answers_per_s"], 2)
    if breakdown:
        per = breakdown["ms_per_answer"]
        print(f"stages at 1 thread, {breakdown['pairs']} pairs ({breakdown['windows_per_pair']} windows of {breakdown['mean_window_tokens']} "
              f"tokens on average each): plan {per['plan']} + forward {per['forward']} + finish {per['finish']} = "
              f"{breakdown['batch_ms_per_answer']} ms/answer batched; one at a time {breakdown['one_at_a_time_ms_per_answer']} ms/answer")
    print(json.dumps(summary))
    if args.quick:
        print("(--quick: nothing written)")
        return
    args.out.parent.mkdir(exist_ok=True)
    meta = {"model": card.name, "synthetic": True, "pairs": args.pairs, "batch_size": args.batch_size, "threads_total": n,
            "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "stages": breakdown, "summary": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
