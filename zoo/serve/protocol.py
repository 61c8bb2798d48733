"""The Open Inference Protocol (KServe v2) over HTTP: tensors in and out, JSON or the binary-data extension.

Clients such as ``tritonclient.http`` send inputs as binary by default: the JSON header is the first
``Inference-Header-Content-Length`` bytes of the body, and each input whose ``parameters.binary_data_size``
is set takes that many bytes of what follows, in order (BYTES elements as a 4-byte little-endian length
then the bytes). Outputs are returned the same way when the request asks for it
(``parameters.binary_data_output``, or ``parameters.binary_data`` on a requested output).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.errors import InputError

DTYPES = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
          "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32,
          "FP64": np.float64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
HEADER = "Inference-Header-Content-Length"
MAX_ELEMENTS = 1 << 24  # a tensor's declared shape may not ask for more elements than this


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray  # object array of bytes for BYTES


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] | None = None

    @property
    def binary_output(self) -> bool:
        if self.outputs:
            return any((o.get("parameters") or {}).get("binary_data") for o in self.outputs)
        return bool(self.parameters.get("binary_data_output"))

    def requested(self, available: list[str]) -> list[str]:
        if not self.outputs:
            return available
        names = [o.get("name") for o in self.outputs]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise InputError(f"unknown output {unknown[0]!r}; this model has {', '.join(available)}")
        return names  # type: ignore[return-value]


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ELEMENTS for d in value):
        raise InputError(f"input {name!r}: shape must be a list of non-negative integers")
    count = int(np.prod(value, dtype=np.int64)) if value else 1
    if count > MAX_ELEMENTS:
        raise InputError(f"input {name!r}: shape {value} holds more than {MAX_ELEMENTS} elements")
    return value


def _bytes_elements(raw: bytes, name: str) -> list[bytes]:
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise InputError(f"input {name!r}: binary BYTES data ends inside an element length")
        (n,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + n > len(raw):
            raise InputError(f"input {name!r}: binary BYTES element of {n} bytes runs past the data")
        items.append(raw[at:at + n])
        at += n
    return items


def _json_elements(data: Any, datatype: str, name: str) -> np.ndarray:
    flat: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                walk(x)
        else:
            flat.append(v)

    walk(data)
    if datatype == "BYTES":
        if not all(isinstance(x, str | bytes) for x in flat):
            raise InputError(f"input {name!r}: BYTES data must be strings")
        return np.array([x.encode("utf-8") if isinstance(x, str) else x for x in flat] or [], dtype=object)
    try:
        if any(isinstance(x, str | list | dict) or x is None for x in flat):
            raise TypeError
        return np.array(flat, dtype=DTYPES[datatype])
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"input {name!r}: data is not a list of {datatype} numbers") from None


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """A v2 inference request from its body (JSON, or JSON header + binary tensors); ``InputError`` if malformed."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InputError(f"{HEADER} {header_length!r} does not fit a {len(body)}-byte body")
        head, rest = body[:int(header_length)], body[int(header_length):]
    else:
        head, rest = body, b""
    try:
        doc = json.loads(head)
    except (ValueError, RecursionError):
        raise InputError("request body is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InputError("request must be a JSON object with a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    outputs = doc.get("outputs")
    if not isinstance(params, dict) or (outputs is not None and not (isinstance(outputs, list) and all(isinstance(o, dict) for o in outputs))):
        raise InputError("'parameters' must be an object and 'outputs' a list of objects")
    tensors: dict[str, Tensor] = {}
    at = 0
    for spec in doc["inputs"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InputError("each input must be an object with a 'name'")
        name, datatype = spec["name"], spec.get("datatype")
        if datatype != "BYTES" and datatype not in DTYPES:
            raise InputError(f"input {name!r}: unknown datatype {datatype!r}")
        shape = _shape(spec.get("shape"), name)
        size = ((spec.get("parameters") or {}) if isinstance(spec.get("parameters"), dict) else {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or at + size > len(rest):
                raise InputError(f"input {name!r}: binary_data_size {size!r} runs past the request body")
            raw = rest[at:at + size]
            at += size
            if datatype == "BYTES":
                data = np.array(_bytes_elements(raw, name), dtype=object)
            else:
                item = np.dtype(DTYPES[datatype]).itemsize
                if len(raw) % item:
                    raise InputError(f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype} elements")
                data = np.frombuffer(raw, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<")).astype(DTYPES[datatype])
        elif "data" in spec:
            data = _json_elements(spec["data"], datatype, name)
        else:
            raise InputError(f"input {name!r} has neither 'data' nor binary data")
        expected = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if data.size != expected:
            raise InputError(f"input {name!r}: shape {shape} needs {expected} elements, got {data.size}")
        tensors[name] = Tensor(name, datatype, shape, data.reshape(shape) if shape else data)
    request_id = doc.get("id")
    return InferRequest(request_id if isinstance(request_id, str) else None, tensors, params, outputs)


def output_tensor(name: str, values: np.ndarray | list[Any]) -> Tensor:
    """A response tensor: strings become BYTES, numbers keep their dtype."""
    arr = np.asarray(values, dtype=object) if (isinstance(values, list) and values and isinstance(values[0], str)) else np.asarray(values)
    if arr.dtype == object:
        return Tensor(name, "BYTES", list(arr.shape), arr)
    return Tensor(name, NAMES[arr.dtype], list(arr.shape), arr)


def encode_response(model: str, request: InferRequest, tensors: list[Tensor]) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or JSON header + binary tensors when the request asked for binary."""
    doc: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": []}
    if request.id is not None:
        doc["id"] = request.id
    chunks: list[bytes] = []
    binary = request.binary_output
    for t in tensors:
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if binary:
            raw = (b"".join(struct.pack("<I", len(v)) + v for v in (x if isinstance(x, bytes) else str(x).encode() for x in t.data.ravel()))
                   if t.datatype == "BYTES" else np.ascontiguousarray(t.data, dtype=np.dtype(DTYPES[t.datatype]).newbyteorder("<")).tobytes())
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            flat = t.data.ravel()
            out["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat] if t.datatype == "BYTES" else flat.tolist()
        doc["outputs"].append(out)
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not binary:
        return head, {"content-type": "application/json"}
    return head + b"".join(chunks), {"content-type": "application/octet-stream", HEADER: str(len(head))}


def strings(t: Tensor) -> list[str]:
    """A BYTES tensor's elements as text; ``InputError`` for non-UTF-8 bytes or another datatype."""
    if t.datatype != "BYTES":
        raise InputError(f"input {t.name!r} must be BYTES (text), got {t.datatype}")
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in t.data.ravel()]
    except UnicodeDecodeError:
        raise InputError(f"input {t.name!r} is not UTF-8 text") from None
