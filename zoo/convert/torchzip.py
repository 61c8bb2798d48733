"""Read and write torch's zip checkpoint format (``pytorch_model.bin``) without torch and without trust.

Reading: ``data.pkl`` is unpickled by an allow-list unpickler that admits only the globals torch writes
for a state dict (tensor rebuild functions, storage types, OrderedDict). Anything else raises
``UnsafeCheckpointError`` at the GLOBAL opcode, before any callable is invoked. Storages are
memory-mapped straight out of the (uncompressed) archive, shared between the tensors that view them,
and checked to hold every element a tensor's shape, stride and offset reach.

A hostile file must not crash, hang or balloon the reader: the pickle's nesting depth is bounded before
it is unpickled (a deeply nested key would overflow the C stack while being hashed), every view is
checked against the real length of its archive entry, and the bytes all views materialize together are
bounded by the file's size (stride-0 or aliased views cannot turn a small file into gigabytes).
"""

from __future__ import annotations

import mmap
import pickle
import pickletools
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
MAX_PICKLE_BYTES = 32 << 20  # a state dict of 100k tensors pickles to ~20 MB
MAX_COMPRESSION_RATIO = 200
MAX_PICKLE_DEPTH = 100  # a state dict nests ~6 deep
MAX_DIMS = 32
MAX_VIEW_FACTOR = 4  # all views together may materialize this many times the file's size (tied weights: 2x) ...
VIEW_SLACK = 64 << 20  # ... plus this (small expanded buffers)
COMPRESSIONS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


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
        except (zipfile.BadZipFile, EOFError, ValueError, struct.error):
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
        self._view_budget = MAX_VIEW_FACTOR * size + VIEW_SLACK

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
            info = self._zip.getinfo(self._prefix + name)
        except KeyError:
            raise CheckpointError(f"{self.path.name}: archive is missing '{name}' (truncated or corrupt)") from None
        if info.compress_type not in COMPRESSIONS:
            raise CheckpointError(f"{self.path.name}: '{info.filename}' uses zip compression method {info.compress_type}, "
                                  "which no torch checkpoint uses", "re-save it with torch.save")
        return info

    def _read_small(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        if info.file_size > limit:
            raise CheckpointError(f"{self.path.name}: '{info.filename}' is {info.file_size} bytes, over the {limit} byte limit")
        self._check_ratio(info)
        try:
            return self._zip.read(info)
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, ValueError, zlib_error()) as exc:
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
        """The whole archive entry ``data/<key>`` as a 1-d array, read once; its length is the entry's real length."""
        arr = self._storages.get(ref.key)
        if arr is None:
            arr = self._read_storage(ref)
            self._storages[ref.key] = arr
        elif arr.dtype != (np.float32 if ref.dtype == "bfloat16" else np.dtype(ref.dtype)):
            raise CheckpointError(f"{self.path.name}: storage '{ref.key}' is declared as {arr.dtype} and as {ref.dtype}")
        if arr.size < ref.numel:
            raise CheckpointError(f"{self.path.name}: storage '{ref.key}' holds {arr.size} elements, the pickle declares {ref.numel}")
        return arr

    def _read_storage(self, ref: StorageRef) -> np.ndarray:
        info = self._member(f"data/{ref.key}")
        raw_dtype = np.dtype("<u2") if ref.dtype == "bfloat16" else np.dtype(ref.dtype)
        count = info.file_size // raw_dtype.itemsize
        if info.compress_type == zipfile.ZIP_STORED and self._map is not None:
            offset = self._data_offset(info)
            if offset + info.file_size > len(self._map):
                raise CheckpointError(f"{self.path.name}: storage '{ref.key}' runs past the end of the file (truncated download?)")
            arr = np.frombuffer(self._map, dtype=raw_dtype, count=count, offset=offset)
        else:
            data = self._read_small(info, 1 << 40)
            arr = np.frombuffer(data, dtype=raw_dtype, count=min(count, len(data) // raw_dtype.itemsize))
        return _bf16_to_f32(arr) if ref.dtype == "bfloat16" else arr

    # -- the pickle ------------------------------------------------------------------------------
    def _rebuild_tensor(self, storage: StorageRef, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
        if not isinstance(storage, StorageRef):
            raise CheckpointError(f"{self.path.name}: tensor without a storage reference")
        if not (_ints(size) and _ints(stride) and _ints((offset,))) or len(size) != len(stride) or len(size) > MAX_DIMS \
                or min((*size, *stride, offset), default=0) < 0:
            raise CheckpointError(f"{self.path.name}: tensor has invalid shape {size!r} / stride {stride!r} / offset {offset!r}")
        base = self._storage(storage)
        extent = 1 + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) if all(size) else 0
        if offset + extent > min(storage.numel, base.size):
            raise CheckpointError(f"{self.path.name}: tensor of shape {size} at offset {offset} reaches past its storage "
                                  f"'{storage.key}' of {min(storage.numel, base.size)} elements")
        numel = _product(size)
        self._view_budget -= numel * base.itemsize
        if self._view_budget < 0:
            raise CheckpointError(f"{self.path.name}: its tensors would materialize far more bytes than the file holds "
                                  f"(a {size} view of storage '{storage.key}' with stride {stride}); refusing repeated or aliased views")
        if not numel:
            return np.zeros(size, dtype=base.dtype)
        return np.lib.stride_tricks.as_strided(base[offset:], shape=size, strides=tuple(s * base.itemsize for s in stride),
                                               writeable=False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every tensor of the checkpoint as a read-only numpy array (views into the mapped file)."""
        self._check_byteorder()
        data = self._read_small(self._member("data.pkl"), MAX_PICKLE_BYTES)
        try:
            depth = pickle_depth(data, MAX_PICKLE_DEPTH)
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{self.path.name}: data.pkl is corrupt: {exc}") from None
        if depth > MAX_PICKLE_DEPTH:
            raise CheckpointError(f"{self.path.name}: data.pkl nests objects more than {MAX_PICKLE_DEPTH} deep; "
                                  "a state dict never does (refusing a likely crash attempt)")
        unpickler = _SafeUnpickler(data, self)
        try:
            obj = unpickler.load()
        except (UnsafeCheckpointError, CheckpointError):
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError, OverflowError,
                RecursionError, MemoryError) as exc:
            raise CheckpointError(f"{self.path.name}: data.pkl is corrupt: {type(exc).__name__}: {exc}"[:300]) from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{self.path.name}: holds a {type(obj).__name__}, not a state dict")
        out = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)}
        if not out:
            raise CheckpointError(f"{self.path.name}: state dict holds no tensors")
        return out


    def _check_byteorder(self) -> None:
        if self._prefix + "byteorder" in self._zip.NameToInfo:
            order = self._read_small(self._member("byteorder"), 16).strip()
            if order != b"little":
                raise CheckpointError(f"{self.path.name}: storages are {order.decode('ascii', 'replace')!r}-endian; only little-endian is read")


def _ints(values: Any) -> bool:
    return isinstance(values, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _product(size: tuple[int, ...]) -> int:
    n = 1
    for d in size:
        n *= d
    return n


def pickle_depth(data: bytes, limit: int) -> int:
    """How deep the objects a pickle builds nest (stops counting past ``limit``), found by walking its opcodes.

    Each stack slot carries the depth of the object it holds; containers are one deeper than what they hold.
    Deep nesting must be refused before unpickling: CPython hashes a nested tuple key recursively in C.
    """
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[Any, int] = {}
    deepest = 0
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name == "MARK":
            marks.append(len(stack))
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
            continue
        if name == "DUP":
            stack.append(stack[-1])
            continue
        popped: list[int] = []
        in_slice = False  # items listed between a mark and its stackslice were popped with the slice
        for item in reversed(op.stack_before):
            if item is pickletools.stackslice:
                start = marks.pop()
                popped += stack[start:]
                del stack[start:]
                in_slice = True
            elif item is pickletools.markobject:
                in_slice = False
            elif not in_slice:
                popped.append(stack.pop())
        inner = 1 + max(popped, default=0) if popped else 1
        if name in ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"):
            container = popped[-1]  # the first of stack_before: the object modified in place
            inner = max(container, 1 + max(popped[:-1], default=0))
        stack.extend([inner] * len(op.stack_after))
        deepest = max(deepest, inner)
        if deepest > limit:
            break
    return deepest


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
