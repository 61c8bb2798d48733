"""Read and write torch's zip checkpoint format (``pytorch_model.bin``) without torch and without trust.

Reading: ``data.pkl`` is unpickled by an allow-list unpickler that admits only the globals torch writes
for a state dict (tensor rebuild functions, storage types, OrderedDict). Anything else raises
``UnsafeCheckpointError`` at the GLOBAL opcode, before any callable is invoked. Storages are
memory-mapped straight out of the (uncompressed) archive, shared between the tensors that view them,
and checked to hold every element a tensor's shape, stride and offset reach.
"""

from __future__ import annotations

import mmap
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import CheckpointError, UnsafeCheckpointError

# storage type name -> numpy dtype ("bfloat16" handled separately: numpy has no such dtype)
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "bfloat16",
    "CharStorage": "i1", "ByteStorage": "u1", "ShortStorage": "<i2", "IntStorage": "<i4",
    "LongStorage": "<i8", "BoolStorage": "?",
}
DTYPE_STORAGES = {v: k for k, v in STORAGE_DTYPES.items()}
MAX_PICKLE_BYTES = 256 << 20
MAX_COMPRESSION_RATIO = 200


@dataclass(frozen=True)
class StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only its element dtype matters."""

    name: str

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: str
    numel: int


class _Rebuilt:
    """Marker callables for the allowed torch functions; the unpickler calls these, never torch."""


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


class CheckpointReader:
    """One open checkpoint archive; ``state_dict()`` returns name -> read-only numpy array."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile:
            raise CheckpointError(f"{self.path.name}: not a torch zip checkpoint (truncated or corrupt archive)",
                                  "re-download it; legacy pre-1.6 torch files are not supported") from None
        except OSError as exc:
            raise CheckpointError(f"{self.path.name}: cannot open: {exc.strerror}") from None
        names = self._zip.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise CheckpointError(f"{self.path.name}: archive holds no data.pkl; not a torch checkpoint")
        self._prefix = pkl[0][: -len("data.pkl")]
        self._file = self.path.open("rb")
        size = self.path.stat().st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._storages: dict[str, np.ndarray] = {}

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- archive members -------------------------------------------------------------------------
    def _member(self, name: str) -> zipfile.ZipInfo:
        try:
            return self._zip.getinfo(self._prefix + name)
        except KeyError:
            raise CheckpointError(f"{self.path.name}: archive is missing '{name}' (truncated or corrupt)") from None

    def _read_small(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        if info.file_size > limit:
            raise CheckpointError(f"{self.path.name}: '{info.filename}' is {info.file_size} bytes, over the {limit} byte limit")
        self._check_ratio(info)
        try:
            return self._zip.read(info)
        except (zipfile.BadZipFile, EOFError, OSError, zlib_error()) as exc:
            raise CheckpointError(f"{self.path.name}: cannot read '{info.filename}': {exc}") from None

    def _check_ratio(self, info: zipfile.ZipInfo) -> None:
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise CheckpointError(f"{self.path.name}: '{info.filename}' expands {info.file_size // max(info.compress_size, 1)}x: "
                                  "refusing a likely zip bomb")

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        assert self._map is not None
        header = self._map[info.header_offset: info.header_offset + 30]
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{self.path.name}: bad local header for '{info.filename}' (corrupt archive)")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        return info.header_offset + 30 + name_len + extra_len

    def _storage(self, ref: StorageRef) -> np.ndarray:
        if ref.key in self._storages:
            return self._storages[ref.key]
        info = self._member(f"data/{ref.key}")
        raw_dtype = np.dtype("<u2") if ref.dtype == "bfloat16" else np.dtype(ref.dtype)
        count = info.file_size // raw_dtype.itemsize
        if count < ref.numel:
            raise CheckpointError(f"{self.path.name}: storage '{ref.key}' holds {count} elements, the pickle declares {ref.numel}")
        if info.compress_type == zipfile.ZIP_STORED and self._map is not None:
            offset = self._data_offset(info)
            if offset + info.file_size > len(self._map):
                raise CheckpointError(f"{self.path.name}: storage '{ref.key}' runs past the end of the file (truncated download?)")
            arr = np.frombuffer(self._map, dtype=raw_dtype, count=ref.numel, offset=offset)
        else:
            arr = np.frombuffer(self._read_small(info, 1 << 40), dtype=raw_dtype, count=ref.numel)
        if ref.dtype == "bfloat16":
            arr = _bf16_to_f32(arr)
        self._storages[ref.key] = arr
        return arr

    # -- the pickle ------------------------------------------------------------------------------
    def _rebuild_tensor(self, storage: StorageRef, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
        if not isinstance(storage, StorageRef):
            raise CheckpointError(f"{self.path.name}: tensor without a storage reference")
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise CheckpointError(f"{self.path.name}: tensor has invalid shape {size} / stride {stride}")
        base = self._storage(storage)
        extent = 1 + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) if all(size) else 0
        if offset < 0 or offset + extent > storage.numel:
            raise CheckpointError(f"{self.path.name}: tensor of shape {size} at offset {offset} reaches past its storage of {storage.numel}")
        if not all(size):
            return np.zeros(size, dtype=base.dtype)
        view = np.lib.stride_tricks.as_strided(base[offset:], shape=size, strides=tuple(s * base.itemsize for s in stride), writeable=False)
        return view

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every tensor of the checkpoint as a read-only numpy array (views into the mapped file)."""
        data = self._read_small(self._member("data.pkl"), MAX_PICKLE_BYTES)
        unpickler = _SafeUnpickler(data, self)
        try:
            obj = unpickler.load()
        except UnsafeCheckpointError:
            raise
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
            raise CheckpointError(f"{self.path.name}: data.pkl is corrupt: {exc}") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{self.path.name}: holds a {type(obj).__name__}, not a state dict")
        out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
        if not out:
            raise CheckpointError(f"{self.path.name}: state dict holds no tensors")
        return out


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


class _SafeUnpickler(pickle.Unpickler):
    """Admits exactly the globals torch writes for a state dict."""

    def __init__(self, data: bytes, reader: CheckpointReader) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._reader = reader

    def find_class(self, module: str, name: str) -> Any:
        allowed: dict[tuple[str, str], Callable[..., Any] | type] = {
            ("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): self._reader._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): self._reader._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch", "Size"): tuple,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        raise UnsafeCheckpointError(
            f"{self._reader.path.name}: refused to unpickle global '{module}.{name}' (not a tensor or state-dict type); nothing was executed",
            "only load checkpoints from sources you trust; a plain state dict never needs this",
        )

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)):
            raise CheckpointError(f"{self._reader.path.name}: unsupported persistent id in data.pkl")
        _, stype, key, _location, numel = pid
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self._reader.path.name}: malformed storage reference {pid!r}")
        return StorageRef(key=key, dtype=stype.dtype, numel=numel)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool = False, backward_hooks: Any = None) -> np.ndarray:
    return data


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Convenience: open ``path`` and return its state dict (arrays stay valid while referenced)."""
    return CheckpointReader(path).state_dict()
