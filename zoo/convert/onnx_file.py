"""An ONNX model written to disk one tensor at a time: its initializers go from the arrays that hold them (often
views of a model's weights) straight to the file, never into one in-memory ``ModelProto``, whose serialized copy
and the checker's copy of it would triple the weights in memory.

A model within protobuf's 2 GB limit becomes one ``.onnx`` file, byte for byte what ``onnx.save`` writes (protobuf's
wire format is written around the tensor bytes: fields in number order, lengths known beforehand). A larger one,
or any on request, keeps its weights as ONNX external data in a file beside the graph. onnx.checker (full) checks a
copy of the graph whose weights point at the bytes already written; the files appear, atomically, only after it.

Any array goes: transposed or otherwise strided (written in slices, never copied whole), big-endian or other
non-native byte orders (ONNX stores little-endian), empty. Temporary files get names of their own (never the output's:
ONNX refuses a data file name holding ``..`` or not UTF-8), are removed on an error, Ctrl-C or SIGTERM, and the
data file's final name is checked before anything is written. A one-file export removes the data file an earlier
external-data export left at that name (a regular file only: a link or directory there is left, and said so).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ExportError

SINGLE_FILE_LIMIT = (1 << 31) - 1  # bytes protobuf parses in one message: a larger graph keeps its weights in a data file
EXTERNAL_ABOVE = 1024  # bytes (onnx's own threshold): smaller initializers (scales, shapes) stay inline, also in the check
ALIGN, ALIGN_ABOVE = 1 << 16, 1 << 20  # data-file offsets of tensors from 1 MiB up are 64 KiB multiples, so they can be mapped
SLICE = 16 << 20  # bytes of a strided or non-native array made contiguous at a time


@dataclass(frozen=True)
class ModelParts:
    """An ONNX model in two parts: everything but the initializers (small), and the initializers as arrays, in order."""

    proto: object  # onnx.ModelProto, its graph's initializer field empty
    inits: list[tuple[str, np.ndarray]]

    def with_tensors(self, where: dict[str, tuple[int, int]] | None = None, location: str = ""):  # noqa: ANN201 - onnx.ModelProto
        """The whole ``ModelProto``: the initializers named in ``where`` as external data, ``(offset, length)`` in
        ``location`` (relative to the .onnx file's directory), the others inline."""
        from onnx import TensorProto, numpy_helper

        where = where or {}
        out = type(self.proto)()
        out.CopyFrom(self.proto)  # type: ignore[arg-type]
        for name, arr in self.inits:
            if name not in where:
                out.graph.initializer.append(numpy_helper.from_array(arr.astype(arr.dtype.newbyteorder("="), copy=False), name))
                continue
            tensor = TensorProto.FromString(_header(name, arr))
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", where[name][0]), ("length", where[name][1])):
                tensor.external_data.add(key=key, value=str(value))
            out.graph.initializer.append(tensor)
        return out


@dataclass(frozen=True)
class Exported:
    """A written ONNX file (path, sha256, bytes) and, in the external-data layout, its weights file. A one-file
    export names the data file an earlier export left beside it: ``removed``, or why it was left (``kept``, one line)."""

    path: Path
    sha256: str
    size: int
    data: Exported | None = None
    removed: Path | None = None
    kept: str | None = None


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def _key(number: int, length: int) -> bytes:
    """The tag and length that open a length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(length)


def _split(message, number: int) -> tuple[bytes, bytes]:  # noqa: ANN001 - a protobuf message
    """``message`` serialized as its fields numbered below ``number``, and as those above it: with field ``number``
    written between the two, that is protobuf's canonical order, what ``SerializeToString`` writes."""
    halves = []
    for below in (True, False):
        half = type(message)()
        half.CopyFrom(message)
        for field, _ in message.ListFields():
            if field.number == number or (field.number < number) != below:
                half.ClearField(field.name)
        halves.append(half.SerializeToString())
    return halves[0], halves[1]


def _header(name: str, arr: np.ndarray) -> bytes:
    """A TensorProto's fields before ``raw_data`` (dims, data_type, name), serialized."""
    from onnx import TensorProto, helper

    try:
        data_type = helper.np_dtype_to_tensor_dtype(arr.dtype.newbyteorder("="))
    except (ValueError, KeyError, TypeError):
        raise ExportError(f"initializer {name!r}: ONNX has no tensor type for numpy {arr.dtype}") from None
    return TensorProto(dims=arr.shape, data_type=data_type, name=name).SerializeToString()


def _single_file(parts: ModelParts) -> tuple[list, int]:
    """The one-file layout as pieces in order (bytes, and (name, array) whose bytes go between them), and its size."""
    from onnx import GraphProto, ModelProto, TensorProto

    model_before, model_after = _split(parts.proto, ModelProto.GRAPH_FIELD_NUMBER)
    graph_before, graph_after = _split(parts.proto.graph, GraphProto.INITIALIZER_FIELD_NUMBER)  # type: ignore[attr-defined]
    graph: list = [graph_before]
    for name, arr in parts.inits:
        tensor = _header(name, arr) + _key(TensorProto.RAW_DATA_FIELD_NUMBER, arr.nbytes)
        graph += [_key(GraphProto.INITIALIZER_FIELD_NUMBER, len(tensor) + arr.nbytes) + tensor, (name, arr)]
    graph.append(graph_after)
    graph_size = sum(len(p) if isinstance(p, bytes) else p[1].nbytes for p in graph)
    pieces = [model_before + _key(ModelProto.GRAPH_FIELD_NUMBER, graph_size), *graph, model_after]
    return pieces, len(pieces[0]) + graph_size + len(model_after)


class _Sink:
    """A new temporary file in ``directory``, hashed as it is written. Its name is random and its own (never derived
    from the output's); it is created exclusively (never an existing file, nor a link planted under a guessable name)
    and listed in ``made`` at once, for the caller to remove."""

    def __init__(self, directory: Path, role: str, made: list[Path]) -> None:
        self.path = directory / f".zoo-export-{os.urandom(6).hex()}.{role}.tmp"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        made.append(self.path)
        self.file, self.hash, self.size = open(fd, "wb"), hashlib.sha256(), 0

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def write(self, data: bytes | np.ndarray) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def tensor(self, arr: np.ndarray, align: int = 1) -> tuple[int, int]:
        """Writes ``arr`` as ONNX stores it (C order, little-endian) at a multiple of ``align``; returns (offset, length)."""
        self.write(b"\0" * (-self.size % align))
        start = self.size
        for piece in _little_endian_bytes(arr):
            self.write(piece)
        return start, self.size - start


def _little_endian_bytes(arr: np.ndarray) -> Iterator[np.ndarray]:
    """``arr``'s bytes in C order and little-endian, as flat uint8 arrays: the array itself when it is already so
    laid out, else slices of at most ``SLICE`` bytes made contiguous one at a time (a transposed 2 GB weight is never
    copied whole)."""
    little = arr.dtype.newbyteorder("<")
    if arr.ndim == 0 or (arr.flags.c_contiguous and arr.dtype == little) or arr.size == 0:
        yield np.ascontiguousarray(arr, dtype=little).reshape(-1).view(np.uint8)
        return
    rows = max(1, SLICE // max(1, arr[0].nbytes))
    for i in range(0, len(arr), rows):
        yield np.ascontiguousarray(arr[i:i + rows], dtype=little).reshape(-1).view(np.uint8)


def _stream_single(pieces: list, sink: _Sink) -> dict[str, tuple[int, int]]:
    """Writes the one-file layout; returns where the bytes of each initializer from ``EXTERNAL_ABOVE`` up lie."""
    where = {}
    for piece in pieces:
        if isinstance(piece, bytes):
            sink.write(piece)
        elif piece[1].nbytes >= EXTERNAL_ABOVE:
            where[piece[0]] = sink.tensor(piece[1])
        else:
            sink.tensor(piece[1])
    return where


def _stream_data(parts: ModelParts, sink: _Sink) -> dict[str, tuple[int, int]]:
    """Writes the initializers from ``EXTERNAL_ABOVE`` up into a data file; returns where each lies."""
    return {name: sink.tensor(arr, ALIGN if arr.nbytes >= ALIGN_ABOVE else 1) for name, arr in parts.inits if arr.nbytes >= EXTERNAL_ABOVE}


def text(value: str) -> str:
    """``value`` as text that UTF-8 (protobuf strings, JSON, SQLite, a terminal) takes: the undecodable bytes of a
    name from a non-UTF-8 filesystem, which Python holds as lone surrogates, shown as escapes."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _utf8(value: str) -> bool:
    return text(value) == value


def _check(skeleton, directory: Path, made: list[Path]) -> None:  # noqa: ANN001 - onnx.ModelProto
    """onnx.checker (full) on ``skeleton``, whose weights are external data; written to a file in ``directory`` so
    that they resolve."""
    import onnx

    with _Sink(directory, "check", made) as file:
        file.write(skeleton.SerializeToString())
    try:
        onnx.checker.check_model(str(file.path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"exported graph failed onnx.checker: {str(exc).splitlines()[0]}") from None


def _refuse(out: Path, data_path: Path | None, size: int) -> None:
    """Refuse, before anything is written, an output no file can be written to or no ONNX reader would load."""
    for path in (out, data_path):
        if path is not None and path.is_dir():
            raise ExportError(f"cannot write {text(str(path))}: it is a directory", "name the .onnx file to write")
    if not _utf8(str(out.parent)):
        raise ExportError(f"cannot export into {text(str(out.parent))}: onnx.checker opens only UTF-8 paths")
    if data_path is None:
        if size > SINGLE_FILE_LIMIT:
            raise ExportError(f"the graph is {size / 1e9:.2f} GB, over protobuf's 2 GB limit for one file",
                              "keep its weights as external data")
    elif data_path == out:
        raise ExportError(f"the weights' data file cannot be the graph's own file {text(str(out))}")
    elif ".." in data_path.name or not _utf8(data_path.name):
        raise ExportError(f"cannot keep the weights in '{text(data_path.name)}': ONNX readers refuse a data file name that holds '..' "
                          "or is not UTF-8", "choose another output name")


def _remove_unused(data_path: Path) -> tuple[Path | None, str | None]:
    """Removes the data file at ``data_path``, the name this graph's weights would have in the external-data layout,
    which a one-file graph no longer reads: (the removed path, None), or (None, why it is left) for anything but a
    regular file there (a link, a directory: not one zoo wrote); (None, None) when nothing is there."""
    try:
        mode = data_path.lstat().st_mode
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot look at {text(str(data_path))}: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        what = "a link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        return None, f"left {text(str(data_path))} alone: it is {what}, not a data file zoo wrote; the new graph does not read it"
    try:
        data_path.unlink()
    except OSError as exc:
        return None, f"cannot remove the unused data file {text(str(data_path))}: {exc.strerror or exc}"
    return data_path, None


@contextlib.contextmanager
def _terminable() -> Iterator[None]:
    """SIGTERM ends the process by ``SystemExit`` meanwhile, so that ``finally`` blocks remove temporary files (its
    default ends the process on the spot, leaving gigabytes in hidden files); only in the main thread, and only where
    nothing else handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def write(parts: ModelParts, out: Path, external_data: bool | None = None, data_name: str | None = None) -> Exported:
    """``parts`` checked by onnx.checker and written to ``out`` atomically: one file when it fits protobuf's 2 GB
    limit; else, or with ``external_data``, the graph in ``out`` and the weights in ``data_name`` beside it
    (default: ``out``'s name + ``.data``). A one-file graph then removes a data file an earlier export left at that
    name, which it does not read (``Exported.removed``), a regular file only (else ``Exported.kept`` says why not)."""
    pieces, size = _single_file(parts)
    external = size > SINGLE_FILE_LIMIT if external_data is None else external_data
    out = Path(out)
    data_path = out.with_name(data_name or f"{out.name}.data")
    _refuse(out, data_path if external else None, size)
    made: list[Path] = []
    data, removed, kept = None, None, None
    try:
        with _terminable():
            out.parent.mkdir(parents=True, exist_ok=True)
            if external:
                with _Sink(out.parent, "data", made) as weights:
                    where = _stream_data(parts, weights)
                data = Exported(data_path, weights.hash.hexdigest(), weights.size)
                with _Sink(out.parent, "graph", made) as graph:
                    graph.write(parts.with_tensors(where, data_path.name).SerializeToString())
            else:
                with _Sink(out.parent, "graph", made) as graph:
                    where = _stream_single(pieces, graph)
            _check(parts.with_tensors(where, (weights if external else graph).path.name), out.parent, made)
            if external:
                os.replace(weights.path, data_path)
            os.replace(graph.path, out)
            if not external and data_path != out:
                removed, kept = _remove_unused(data_path)
    except OSError as exc:
        raise ExportError(f"cannot write {text(str(out))}: {exc.strerror or exc}") from None
    finally:
        for path in made:
            with contextlib.suppress(OSError):  # an unwritable directory holds none of them
                path.unlink(missing_ok=True)
    return Exported(out, graph.hash.hexdigest(), graph.size, data, removed, kept)
