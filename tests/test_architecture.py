"""The layer contract: the edge (CLI, demo) composes through ``zoo.prepare``; no stage reaches up or sideways.

The contracts live in pyproject.toml ([tool.importlinter]); this runs them, and checks what they cannot say:
that no module inside the package imports the ``zoo`` facade itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_nothing_inside_the_package_imports_the_facade() -> None:
    graph = grimp.build_graph("zoo", cache_dir=None)
    offenders = sorted(m for m in graph.find_modules_that_directly_import("zoo") if m != "zoo.__main__")
    assert offenders == [], f"modules importing the zoo facade (use the stage module instead): {offenders}"


def test_the_runtime_does_not_reach_the_state_database_even_indirectly() -> None:
    graph = grimp.build_graph("zoo", cache_dir=None)
    for low in ("zoo.runtime", "zoo.convert", "zoo.pipelines"):
        for high in ("zoo.state", "zoo.fetch", "zoo.catalog", "zoo.prepare", "zoo.cli"):
            chain = graph.find_shortest_chain(importer=low, imported=high, as_packages=True)
            assert chain is None, f"{low} reaches {high} through {' -> '.join(chain)}"
