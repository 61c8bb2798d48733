"""The kernel bodies (portable, AVX2, AVX-512) a test can force, and which of them this CPU can run.

The body is chosen once, when ``_kernels`` loads, from the CPU and the ``ZOO_NO_AVX512`` / ``ZOO_NO_AVX2``
switches, so a test that wants a given body runs it in a subprocess with ``env(body)``.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BODIES = ("portable", "avx2", "avx512")
SWITCHES = {"portable": {"ZOO_NO_AVX512": "1", "ZOO_NO_AVX2": "1"}, "avx2": {"ZOO_NO_AVX512": "1"}, "avx512": {}}
LABEL = {"avx2": "AVX2+FMA", "avx512": "AVX-512"}


def env(body: str) -> dict[str, str]:
    """The process environment that makes ``_kernels`` pick ``body`` (on a CPU that has it)."""
    base = {k: v for k, v in os.environ.items() if k not in ("ZOO_NO_AVX512", "ZOO_NO_AVX2")}
    return {**base, **SWITCHES[body], "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def features(body: str) -> dict[str, bool]:
    """``_kernels.features()`` in a process started with ``env(body)``."""
    code = "from zoo.runtime import _kernels; print(_kernels.features())"
    out = subprocess.run([sys.executable, "-c", code], env=env(body), capture_output=True, text=True, check=True).stdout
    return {k: v == "True" for k, v in re.findall(r"'(\w+)': (True|False)", out)}


@functools.cache
def cpu_features() -> dict[str, bool]:
    return features("avx512")


def cpu_name() -> str:
    """e.g. "AMD EPYC, family 25 model 1" from /proc/cpuinfo (the platform string elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines()[:30]) if v}
    return f"{field.get('model name', '?')}, family {field.get('cpu family', '?')} model {field.get('model', '?')}"


def require(body: str) -> dict[str, str]:
    """``env(body)``; skips the test, saying which CPU lacks what, when this CPU cannot run ``body``."""
    have = cpu_features()
    if body != "portable" and not have.get(body):
        best = "avx512" if have.get("avx512") else "avx2" if have.get("avx2") else None
        pytest.skip(f"{LABEL[body]} not on this CPU ({cpu_name()}: {LABEL[best] + ' only' if best else 'portable kernels only'})")
    return env(body)
