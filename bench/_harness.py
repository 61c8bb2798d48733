"""What bench/peers.py and bench/contention.py share: the machine's facts, synthetic models and the graphs each
engine needs, and worker processes (bench/_worker.py), one per engine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_worker.py"
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
         "amx_tile", "amx_int8", "amx_bf16")


def cpu_facts() -> dict:
    """The CPU's model name, family/model numbers and the vector flags that decide which kernels run."""
    sys.path.insert(0, str(HERE))
    from engines import cpu_description

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    first = dict((k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in info.split("\n\n")[0].splitlines() if ":" in ln))
    flags = set(first.get("flags", "").split())
    return {"cpu": cpu_description(), "model_name": first.get("model name", ""), "family": first.get("cpu family", ""),
            "model": first.get("model", ""), "flags": [f for f in FLAGS if f in flags], "cores": len(os.sched_getaffinity(0))}


def percentile(times: list[float], q: float) -> float:
    return round(float(np.percentile(times, q)), 3)


@dataclass
class Model:
    """One catalog variant as synthetic weights, and the files each engine reads."""

    name: str
    vocab: int
    quantized: bool
    repo: Path
    graphs: dict[str, Path] = field(default_factory=dict)  # engine -> file it runs ("ours" -> the repo)
    notes: dict[str, str] = field(default_factory=dict)  # engine -> what its graph is


def synth_model(name: str, workdir: Path, layers: int | None = None) -> tuple[Model, object]:
    """``name``'s shape at full size (``layers`` overrides the depth, for quick runs): its repo and BertModel."""
    import zoo
    from zoo.convert.repo import load_model
    from zoo.synth import SynthSpec, write_repo

    card = zoo.resolve(name)
    spec = SynthSpec.for_card(card, **({"layers": layers} if layers else {}))
    repo = write_repo(workdir / "repo", spec)
    return Model(name, spec.vocab_size, card.quantized, repo, {"ours": repo}), load_model(repo)


def export_fp32(model: Model, bert: object, workdir: Path) -> None:
    """onnxruntime fp32 reads zoo's export as it is (dynamic axes, as validation and engines.py use it)."""
    from zoo.convert.onnx_export import export

    path = workdir / "fp32.onnx"
    export(bert, path, quantized=False)  # type: ignore[arg-type]
    model.graphs["onnxruntime"] = path
    model.notes["onnxruntime"] = "zoo export fp32"


def worker_command(python: str, engine: str, path: Path, vocab: int, threads: int, runs: int, warmup: int,
                   batch: int = 1, seq: int = 128, wait: bool = False) -> list[str]:
    return [python, str(WORKER), engine, str(path), "--vocab", str(vocab), "--threads", str(threads), "--runs", str(runs),
            "--warmup", str(warmup), "--batch", str(batch), "--seq", str(seq)] + (["--wait"] if wait else [])


def worker_env() -> dict[str, str]:
    return {**os.environ, "NM_DISABLE_ANALYTICS": "1", "PYTHONPATH": ""}


def run_worker(cmd: list[str], timeout: float) -> dict:
    """One worker's JSON result, or ``{"error": ...}`` with the last line it printed."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=worker_env(), cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    return parse_result(done.stdout, done.stderr, done.returncode)


def parse_result(stdout: str, stderr: str, rc: int | None) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if rc != 0 or not lines:
        tail = [ln for ln in (stderr + stdout).strip().splitlines() if ln.strip()]
        return {"error": f"exit {rc}: {tail[-1][:300] if tail else 'no output'}"}
    result = json.loads(lines[-1])
    found = re.search(r"\(system=[^)]*\)", stderr)  # DeepSparse names the instruction set it uses
    result["log"] = ([found.group(0)] if found else []) + [ln.strip()[:300] for ln in stderr.splitlines() if "fall" in ln.lower()][:3]
    return result


def start_waiting(cmd: list[str]) -> subprocess.Popen:
    """A worker that compiles and warms up, says it is ready, then waits for ``go``."""
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty engine cannot block on a full stderr pipe
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=worker_env(), cwd=HERE.parent)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def gather(procs: list[subprocess.Popen], timeout: float) -> list[dict]:
    """Wait until every worker is ready, release them together, and collect their results."""
    for p in procs:
        line = p.stdout.readline() if p.stdout else ""
        if '"ready"' not in line:
            p.kill()
    for p in procs:
        if p.poll() is None and p.stdin:
            p.stdin.write("go\n")
            p.stdin.flush()
    results = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        p.log.seek(0)  # type: ignore[attr-defined]
        results.append(parse_result(out, p.log.read(), p.returncode))  # type: ignore[attr-defined]
        p.log.close()  # type: ignore[attr-defined]
    return results


def python_has(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True, env=worker_env()).returncode == 0


def pip_install(python: str, *requirements: str) -> str | None:
    """Install into ``python``'s environment; None on success, else pip's last error line."""
    done = subprocess.run([python, "-m", "pip", "install", "-q", *requirements], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    return lines[-1][:200] if lines else f"pip exited {done.returncode}"


def main_python() -> str:
    return sys.executable
