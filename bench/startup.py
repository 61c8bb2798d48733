"""Start-up latency of the `zoo` command: `zoo --help` (target < 0.3 s) and `zoo list` (target < 0.5 s).

Runs the installed console script directly (not through a version-manager shim, which adds its own
~0.1 s), N times each, and prints min/median; writes bench/results/startup.json.
Also checks that none of the heavy runtime modules (numpy, numba, onnx, onnxruntime) is imported.
Rows marked "first read" run each time with an empty ZOO_HOME, so the catalog's kept cards
(``$ZOO_HOME/catalog/cards``) do not exist yet: what the first command after an install or a rebuilt catalog
costs. The other rows are the steady state. The CPU is named in the table and the JSON.
"""

from __future__ import annotations

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

TARGETS = {("--help",): 0.3, ("list",): 0.5, ("show", "obert-3l-80-quant"): 0.5}
FIRST_READ = (("list",), ("show", "obert-3l-80-quant"))
HEAVY = ("numpy", "numba", "onnx", "onnxruntime")


def script() -> list[str]:
    candidate = Path(sys.executable).with_name("zoo")
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("zoo")
    return [found] if found else [sys.executable, "-m", "zoo"]


def heavy_imports(args: tuple[str, ...]) -> list[str]:
    code = (
        f"import sys\nfrom zoo.cli import main\ntry:\n    main({list(args)!r})\nexcept SystemExit:\n    pass\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return [m for m in proc.stderr.strip().splitlines()[-1].split(",") if m] if proc.stderr.strip() else []


def timed(cmd: list[str], runs: int, first_read: bool) -> list[float]:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "ZOO_HOME": home} if first_read else None
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, env=env)
            times.append(time.perf_counter() - t)
    return times


def main(runs: int = 15) -> None:
    cmd = script()
    rows = []
    for args, target in TARGETS.items():
        for first_read in (False, True) if args in FIRST_READ else (False,):
            times = timed([*cmd, *args], runs, first_read)
            name = "zoo " + " ".join(args) + (" (first read)" if first_read else "")
            rows.append({"command": name, "min_s": min(times), "median_s": statistics.median(times), "target_s": target,
                         "meets": statistics.median(times) < target, "heavy_imports": heavy_imports(args)})
    facts = cpu_facts()
    print(f"CPU: {facts['cpu']}; flags {' '.join(facts['flags'])}")
    print(f"{'command':<40} {'min':>7} {'median':>7} {'target':>7}  ok   heavy imports")
    for r in rows:
        ok = "yes" if r["meets"] else "NO"
        heavy = ",".join(r["heavy_imports"]) or "-"
        print(f"{r['command']:<40} {r['min_s']:7.3f} {r['median_s']:7.3f} {r['target_s']:7.2f}  {ok:<4} {heavy}")
    out = Path(__file__).parent / "results" / "startup.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"script": cmd, "cpu": facts["cpu"], "cpu_facts": facts,
                               "cpus": os.cpu_count(), "runs": runs, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
