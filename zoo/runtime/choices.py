"""The packing each Linear measured fastest, kept in the home so later loads skip the measuring.

Packing a 12-layer model spends most of its time timing candidate packings per Linear. Their winner depends on the
weights, the CPU, the zoo version (its kernels) and the thread count, so the record is keyed by all four: a digest
of the Linear's packed arrays, and an identity (CPU model and flags, version, threads) the whole file carries; a
file of another identity is ignored and replaced. The file is JSON, written atomically (a temporary file renamed
over it), and a damaged or unreadable one only means measuring again: it never changes an answer, since every
packing computes the same Linear.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from zoo.runtime import _kernels as K
from zoo.version import __version__

MAX_BYTES = 4 << 20  # a choices file larger than this is not ours: ignored


def cpu_identity() -> str:
    """The CPU as the kernels see it: /proc/cpuinfo's model name, family, model and flags, and the active bodies."""
    fields: dict[str, str] = {}
    try:
        first = Path("/proc/cpuinfo").read_text(errors="replace").split("\n\n")[0]
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines()) if v}
    except OSError:
        pass
    parts = [fields.get(k, "") for k in ("model name", "cpu family", "model", "flags")]
    return hashlib.sha256(json.dumps([parts, sorted(K.features().items())]).encode()).hexdigest()[:16]


def digest(name: str, shape: tuple[int, int], arrays: list[np.ndarray]) -> str:
    """A Linear's identity: its name, shape and packed (index and value) arrays."""
    h = hashlib.sha256(f"{name}:{shape}".encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.hexdigest()[:32]


class Choices:
    """Linear digest -> packing label (``PackedLinear.label``; ``label|long`` when a long-input packing was kept too)."""

    def __init__(self, path: Path | None, threads: int) -> None:
        self.path, self.threads = path, threads
        self.identity = {"cpu": cpu_identity(), "zoo": __version__, "threads": threads}
        self._known: dict[str, str] = self._read()
        self._new: dict[str, str] = {}
        self._lock = threading.Lock()

    def _read(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            if not self.path.is_file() or self.path.stat().st_size > MAX_BYTES:
                return {}
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("identity") != self.identity or not isinstance(data.get("choices"), dict):
            return {}
        return {k: v for k, v in data["choices"].items() if isinstance(k, str) and isinstance(v, str) and len(v) < 100}

    def get(self, key: str) -> str | None:
        return self._known.get(key)

    def put(self, key: str, label: str) -> None:
        with self._lock:
            self._new[key] = label

    @property
    def hits(self) -> int:
        return len(self._known)

    def save(self) -> bool:
        """Write what was measured (merged with what the file holds now); False when the home refuses it."""
        if self.path is None or not self._new:
            return True
        merged = {**self._read(), **self._known, **self._new}
        text = json.dumps({"identity": self.identity, "choices": merged}, indent=0, sort_keys=True)
        if len(text) > MAX_BYTES:  # keep the newest only
            text = json.dumps({"identity": self.identity, "choices": self._new}, indent=0, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".choices.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            return False
        self._known, self._new = merged, {}
        return True
