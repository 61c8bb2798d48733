"""The kernels are compiled once, by the package build: starting an engine compiles nothing and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import zoo.runtime._kernels as kernels

CHILD = r"""
import json, sys, time
t = time.perf_counter()
import zoo.runtime._kernels as k
imported = time.perf_counter() - t
from zoo.convert.repo import load_model
from zoo.runtime.engine import compile
import numpy as np
engine = compile(load_model(sys.argv[1]), threads=1)
engine(np.ones((1, 8), dtype=np.int64))
print(json.dumps({"file": k.__file__, "import_s": imported}))
"""


def _tree_state(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_a_fresh_process_uses_the_prebuilt_extension_and_writes_nothing(tmp_path, isolated_home):
    from zoo.synth import SynthSpec, write_repo

    repo = write_repo(tmp_path / "m", SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200,
                                                max_positions=128, sparsity=90, pattern="unstructured"))
    package = Path(kernels.__file__).parent
    before = _tree_state(package), _tree_state(isolated_home)
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(repo)], capture_output=True, text=True, check=True,
                                      env=os.environ.copy()).stdout) for _ in range(2)]
    assert all(r["file"].endswith(".so") and Path(r["file"]) == Path(kernels.__file__) for r in runs)
    assert (_tree_state(package), _tree_state(isolated_home)) == before  # no kernel cache, no rebuilt module
