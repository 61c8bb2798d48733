"""`zoo download` throughput against curl (and huggingface_hub's own downloader) on a 1 GiB file.

A Hub-style repo with a 1 GiB checkpoint (random bytes: throughput does not depend on content) is served
by `zoo mirror serve` on 127.0.0.1 in a separate process. Each run starts from an empty cache:

* curl        `curl -sS -o FILE URL` (no hashing: the ceiling of the transport);
* zoo         `zoo download NAME --no-validate` with a brand-new ZOO_HOME: fetch + sha256 while streaming +
              verify + atomic install, end to end as a user runs it (CLI start-up included), the first
              command ever run in that home (the catalog's cards and state.db are created on the way);
* zoo (used)  the same into a home zoo has been used in before (`zoo list` and `zoo cache list` ran there:
              the catalog's cards are kept and state.db exists), i.e. any download after the first;
* hf_hub      `huggingface_hub.hf_hub_download` of the same file into a fresh HF cache;
* transfer    zoo's transfer stage alone, in this process (HttpFetcher: receive, write, sha256 on
              overlapping threads), i.e. without the CLI's fixed start-up (imports, listing, install).

Fairness: zoo's bytecode is compiled first, as `pip install` does (under PYTHONDONTWRITEBYTECODE every edited
module of a checkout would otherwise be recompiled in every run, which no installed copy pays); one untimed
warm-up round; the order of the downloaders rotates from round to round; dirty pages are flushed before each
run. Median (and min) of --runs. Target: zoo >= 90% of curl's throughput. Writes bench/results/download.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import cpu_facts

ROOT = Path(__file__).resolve().parent.parent
MODEL = "obert-12l-90"


def build_repo(root: Path, size: int) -> str:
    from zoo.catalog import resolve
    from zoo.synth import SynthSpec, write_repo

    card = resolve(MODEL)
    repo = root / card.repo
    write_repo(repo, SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128))
    block = os.urandom(1 << 20)
    with open(repo / "pytorch_model.bin", "wb") as fh:
        for _ in range(size >> 20):
            fh.write(block)
    return card.repo


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "mirror", "serve", str(root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()  # the server prints its URL as the first stdout line


def used_home(path: Path, env: dict[str, str]) -> Path:
    """A home zoo has been used in: its catalog cards kept (`zoo list`) and state.db created (`zoo cache list`)."""
    for args in (["list"], ["cache", "list"]):
        subprocess.run([sys.executable, "-m", "zoo", *args], check=True, env={**env, "ZOO_HOME": str(path)}, stdout=subprocess.DEVNULL)
    return path


def timed(cmd: list[str] | str, env: dict[str, str], work: Path) -> float:
    if isinstance(cmd, str):  # the in-process transfer stage: cmd is the URL
        from zoo.fetch.hashing import Expected
        from zoo.fetch.transfer import HttpFetcher

        fetcher = HttpFetcher()
        t = time.perf_counter()
        got = fetcher.fetch(cmd, work / "out.part", Expected())
        elapsed = time.perf_counter() - t
        assert got.hash.size == (work / "out.part").stat().st_size
        return elapsed
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "download.json")
    args = ap.parse_args()
    size = args.size_mib << 20
    import compileall

    compileall.compile_dir(ROOT / "zoo", quiet=1)
    with tempfile.TemporaryDirectory(prefix="zoo-dl-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        tmpdir = Path(tmp)
        repo = build_repo(tmpdir / "mirror", size)
        server, url = start_server(tmpdir / "mirror")
        # the first request hashes the file server-side (ETag); warm it so no runner pays for it
        subprocess.run(["curl", "-sSI", f"{url}/{repo}/resolve/main/pytorch_model.bin"], check=True, stdout=subprocess.DEVNULL)
        env = {**os.environ, "HF_ENDPOINT": url}
        used = used_home(tmpdir / "used-home", env)
        hf_code = ("import sys; from huggingface_hub import hf_hub_download; "
                   "hf_hub_download(sys.argv[1], 'pytorch_model.bin', endpoint=sys.argv[2], cache_dir=sys.argv[3])")
        zoo_cmd = [sys.executable, "-m", "zoo", "download", MODEL, "--no-validate", "-q"]

        def in_used_home(work: Path) -> list[str]:
            shutil.copytree(used, work / "zoo")  # untimed: only the download is
            return zoo_cmd

        runners = {
            "curl": lambda d: ["curl", "-sS", "-o", str(d / "out.bin"), f"{url}/{repo}/resolve/main/pytorch_model.bin"],
            "zoo download": lambda d: zoo_cmd,
            "zoo (used home)": in_used_home,
            "hf_hub_download": lambda d: [sys.executable, "-c", hf_code, repo, url, str(d / "hf")],
            "zoo transfer only": lambda d: f"{url}/{repo}/resolve/main/pytorch_model.bin",
        }
        names = list(runners)
        times: dict[str, list[float]] = {k: [] for k in runners}
        try:
            for round_ in range(args.runs + 1):  # round 0 warms up (page cache, first requests) and is not counted
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    work = tmpdir / "work"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir()
                    cmd = runners[name](work)
                    os.sync()  # flush the previous run's dirty pages so no runner pays for another's writeback
                    elapsed = timed(cmd, {**env, "ZOO_HOME": str(work / "zoo")}, work)
                    if round_:
                        times[name].append(elapsed)
        finally:
            server.terminate()
    curl = statistics.median(times["curl"])
    rows = []
    facts = cpu_facts()
    print(f"{facts['cpu']}; flags {' '.join(facts['flags'])}; {args.runs} runs after a warm-up round, {args.size_mib} MiB")
    print(f"{'downloader':<20}{'median s':>10}{'min s':>8}{'MB/s':>8}{'vs curl':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"downloader": name, "median_s": round(med, 3), "min_s": round(min(ts), 3), "runs_s": [round(t, 3) for t in ts],
                     "mb_per_s": round(size / med / 1e6, 1), "vs_curl": round(curl / med, 3)})
        print(f"{name:<20}{med:>10.2f}{min(ts):>8.2f}{size / med / 1e6:>8.0f}{curl / med:>9.0%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": facts["cpu"], "cpu": facts, "size_bytes": size, "runs": args.runs, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
