"""Write a state dict in torch's zip checkpoint format, without torch (used by ``zoo.synth``).

The pickle is emitted opcode by opcode exactly as ``torch.save`` lays it out (protocol 2, an
``OrderedDict`` of ``torch._utils._rebuild_tensor_v2`` calls over persistent storage ids), and every
storage is stored uncompressed at a 64-byte aligned offset, so ``torch.load`` and our reader both accept it.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np

from zoo.convert.torchzip import DTYPE_STORAGES

ALIGN = 64


def _unicode(s: str) -> bytes:
    data = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    return b"\x8a\x08" + struct.pack("<q", n)  # LONG1 with 8 bytes


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _storage_dtype(arr: np.ndarray) -> tuple[str, np.ndarray]:
    key = arr.dtype.newbyteorder("<").str if arr.dtype.itemsize > 1 else arr.dtype.str.replace("|", "")
    key = {"b1": "?"}.get(key, key)
    if key not in DTYPE_STORAGES:
        raise TypeError(f"cannot store dtype {arr.dtype}")
    return DTYPE_STORAGES[key], np.require(arr.astype(arr.dtype.newbyteorder("<"), copy=False), requirements="C")


def pickle_state_dict(tensors: dict[str, np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    """The ``data.pkl`` bytes and the storages it references (one per tensor, key = index)."""
    out = io.BytesIO()
    out.write(b"\x80\x02" + _global("collections", "OrderedDict") + b")R(")
    storages: list[np.ndarray] = []
    for name, arr in tensors.items():
        storage_type, data = _storage_dtype(np.asarray(arr))
        key = str(len(storages))
        storages.append(data)
        strides = [s // data.itemsize for s in data.strides] if data.ndim else []
        pid = _tuple([_unicode("storage"), _global("torch", storage_type), _unicode(key), _unicode("cpu"), _int(data.size)])
        args = _tuple([
            pid + b"Q", _int(0), _tuple([_int(d) for d in data.shape]), _tuple([_int(s) for s in strides]),
            b"\x89", _global("collections", "OrderedDict") + b")R",
        ])
        out.write(_unicode(name) + _global("torch._utils", "_rebuild_tensor_v2") + args + b"R")
    out.write(b"u.")
    return out.getvalue(), storages


class _AlignedZip(zipfile.ZipFile):
    def write_aligned(self, name: str, data: bytes | memoryview) -> None:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        info.create_system = 0
        start = self.fp.tell()  # type: ignore[union-attr]
        base = start + 30 + len(name.encode())
        pad = (-(base + 4)) % ALIGN
        info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        with self.open(info, "w", force_zip64=len(data) > (1 << 31)) as fh:
            fh.write(data)


def save_state_dict(tensors: dict[str, np.ndarray], path: Path, archive: str = "archive") -> None:
    """Write ``tensors`` to ``path`` as torch.save would (readable by torch.load without torch here)."""
    pkl, storages = pickle_state_dict(tensors)
    path = Path(path)
    with _AlignedZip(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.write_aligned(f"{archive}/data.pkl", pkl)
        zf.write_aligned(f"{archive}/byteorder", b"little")
        for key, data in enumerate(storages):
            zf.write_aligned(f"{archive}/data/{key}", memoryview(data.reshape(-1)).cast("B") if data.size else b"")
        zf.write_aligned(f"{archive}/version", b"3\n")
