"""Per-call scratch memory for the engine: a Workspace holds one flat buffer per role, a WorkspacePool hands one
to each concurrent call."""

from __future__ import annotations

import numpy as np


class Workspace:
    """Reusable output buffers, one per role: no page faults from fresh large allocations per call.

    Each role keeps one flat buffer as large as the largest shape it was asked for, and hands out a view of its
    prefix, so memory is bounded by the largest call, not by how many different shapes were ever seen (a server
    or a batch run meets hundreds of padded lengths). The last view per role is kept, so repeated calls of one
    shape get the same array, and its address, back.
    """

    def __init__(self) -> None:
        self._flat: dict[tuple[str, str], np.ndarray] = {}
        self._views: dict[tuple[str, str], np.ndarray] = {}
        self._ptrs: dict[int, tuple[np.ndarray, int]] = {}

    def get(self, key: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        k = (key, np.dtype(dtype).str)
        view = self._views.get(k)
        if view is not None and view.shape == shape:
            return view
        size = int(np.prod(shape, dtype=np.int64))
        flat = self._flat.get(k)
        if flat is None or flat.size < size:
            flat = self._flat[k] = np.empty(max(size, 1), dtype=dtype)
        if view is not None:
            self._ptrs.pop(id(view), None)
        view = self._views[k] = flat[:size].reshape(shape)
        self._ptrs[id(view)] = (view, flat.ctypes.data)
        return view

    def ptr(self, arr: np.ndarray) -> int:
        """The data address of ``arr``: remembered for this workspace's buffers (``.ctypes`` costs a microsecond)."""
        hit = self._ptrs.get(id(arr))
        return hit[1] if hit is not None and hit[0] is arr else arr.ctypes.data


class WorkspacePool:
    """Workspaces for concurrent calls: a call takes one of its own and gives it back when done, so calls from
    several threads never share a buffer, and sequential calls keep reusing the same warm one.

    ``take`` and ``give`` are single ``list.pop``/``list.append`` calls, atomic in CPython, so no lock is needed;
    the pool grows to as many workspaces as calls ever ran at once.
    """

    def __init__(self) -> None:
        self._free: list[Workspace] = []

    def take(self) -> Workspace:
        try:
            return self._free.pop()
        except IndexError:
            return Workspace()

    def give(self, ws: Workspace) -> None:
        self._free.append(ws)

    def __len__(self) -> int:
        return len(self._free)
