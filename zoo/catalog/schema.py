"""The stub schema: what a ``stubs/*.toml`` file may hold, checked field by field.

A malformed stub raises ``StubError`` naming the file and the dotted field (``files[2].sha256``),
so a catalog edit fails at ``zoo catalog build`` time with a message that points at the fix.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import StubError

TASKS = ("question-answering", "text-classification", "fill-mask")
STAGES = ("downstream", "upstream", "upstream-finetuned")
PATTERNS = ("dense", "unstructured", "block4")
QUANT_SCHEMES = ("none", "int8-qat")
ALIAS_KINDS = ("hub", "hub-mirror", "sparsezoo", "short")
METRICS = ("f1", "exact_match", "accuracy", "accuracy_matched")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class F:
    """A scalar or list field: expected type(s), whether required, and an extra check."""

    types: tuple[type, ...]
    required: bool = False
    check: Check | None = None
    default: Any = None
    item: type | None = None  # element type when ``types`` is (list,)


@dataclass(frozen=True)
class Table:
    fields: dict[str, F | Table | Array]
    required: bool = False


@dataclass(frozen=True)
class Array:
    """An array of tables (``[[files]]``)."""

    table: Table
    required: bool = False
    default: list = field(default_factory=list)


def one_of(choices: Iterable[str]) -> Check:
    allowed = tuple(choices)
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}, got {v!r}"


def in_range(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}, got {v!r}"


def matches(pattern: re.Pattern[str], what: str) -> Check:
    return lambda v: None if pattern.match(v) else f"must be {what}, got {v!r}"


def repo_relative(v: str) -> str | None:
    """A file path inside a repo: relative, with no ``..``, empty, or backslash parts (it becomes a cache path)."""
    parts = v.split("/")
    if v.startswith("/") or any(p in ("", ".", "..") or "\\" in p or "\0" in p or ":" in p for p in parts):
        return f"must be a relative path inside the repo (no '..', no leading '/'), got {v!r}"
    return None


NUM = (int, float)
STR = (str,)
INT = (int,)
BOOL = (bool,)
LIST = (list,)
FRACTION = in_range(0.0, 1.0)
SCALARS = (str, int, float, bool)

RECIPE = Table(
    {
        "source": F(STR, required=True),
        "epochs": F(NUM, check=in_range(0, 1000)),
        "learning_rate": Table({"init_lr": F(NUM), "final_lr": F(NUM), "schedule": F(STR)}),
        "pruning": Table(
            {
                "modifier": F(STR),
                "held_from": F(STR),
                "init_sparsity": F(NUM, check=FRACTION),
                "final_sparsity": F(NUM, required=True, check=FRACTION),
                "start_epoch": F(NUM),
                "end_epoch": F(NUM),
                "update_frequency": F(NUM),
                "inter_func": F(STR),
                "global_sparsity": F(BOOL),
                "mask_type": F(STR, required=True, check=one_of(PATTERNS[1:])),
                "num_grads": F(INT),
                "fisher_block_size": F(INT),
                "damp": F(NUM),
                "grad_sampler_batch_size": F(INT),
                "params": F(LIST, item=str),
            }
        ),
        "distillation": Table(
            {
                "modifier": F(STR),
                "hardness": F(NUM, check=FRACTION),
                "temperature": F(NUM),
                "distill_output_keys": F(LIST, item=str),
            }
        ),
        "quantization": Table(
            {
                "modifier": F(STR),
                "quantize_embeddings": F(BOOL),
                "quantize_linear_activations": F(BOOL),
                "exclude_module_types": F(LIST, item=str),
                "submodules": F(LIST, item=str),
                "weight_bits": F(INT, check=one_of((8,))),
            }
        ),
    }
)

STUB = Table(
    {
        "name": F(STR, required=True, check=matches(NAME_RE, "lower-case letters, digits, '.' and '-'")),
        "description": F(STR, required=True),
        "task": F(STR, required=True, check=one_of(TASKS)),
        "dataset": F(STR, required=True),
        "stage": F(STR, default="downstream", check=one_of(STAGES)),
        "parent": F(STR),
        "tags": F(LIST, item=str, default=[]),
        "source": Table({"repo": F(STR, required=True), "revision": F(STR, default="main")}, required=True),
        "architecture": Table(
            {
                "layers": F(INT, required=True, check=in_range(1, 48)),
                "hidden": F(INT, required=True, check=in_range(1, 8192)),
                "heads": F(INT, required=True, check=in_range(1, 128)),
                "intermediate": F(INT, required=True, check=in_range(1, 32768)),
                "vocab_size": F(INT, required=True, check=in_range(1, 1_000_000)),
                "max_positions": F(INT, required=True, check=in_range(1, 65536)),
                "params_millions": F(NUM, check=in_range(0, 100_000)),
                "params_source": F(STR),
            },
            required=True,
        ),
        "sparsity": Table(
            {
                "target": F(NUM, required=True, check=in_range(0, 100)),
                "pattern": F(STR, required=True, check=one_of(PATTERNS)),
                "scope": F(STR),
            },
            required=True,
        ),
        "quantization": Table(
            {
                "scheme": F(STR, required=True, check=one_of(QUANT_SCHEMES)),
                "weights": F(STR),
                "activations": F(STR),
            },
            required=True,
        ),
        "aliases": Array(
            Table(
                {
                    "name": F(STR, required=True),
                    "kind": F(STR, required=True, check=one_of(ALIAS_KINDS)),
                    "verified": F(BOOL, default=False),
                }
            )
        ),
        "files": Array(
            Table(
                {
                    "path": F(STR, required=True, check=repo_relative),
                    "required": F(BOOL, default=True),
                    "size": F(INT, check=in_range(0, 1 << 45)),
                    "sha256": F(STR, check=matches(SHA256_RE, "64 lower-case hex digits")),
                    "approx_size_mb": F(NUM, check=in_range(0, 1 << 25)),
                    "size_source": F(STR),
                }
            ),
            required=True,
        ),
        "recipe": RECIPE,
        "runtime": Table(
            {
                "expected_speedup": F(NUM, required=True, check=in_range(0.01, 1000)),
                "speedup_source": F(STR, required=True),
            }
        ),
        "metrics": Array(
            Table(
                {
                    "name": F(STR, required=True, check=one_of(METRICS)),
                    "value": F(NUM, required=True, check=in_range(0, 100)),
                    "dataset": F(STR, required=True),
                    "source": F(STR, required=True),
                }
            )
        ),
    }
)


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _check_field(file: str, path: str, spec: F, value: Any) -> Any:
    if not _is(value, spec.types):
        raise StubError(file, path, f"expected {_type_name(spec.types)}, got {type(value).__name__}")
    if spec.item is not None:
        for i, item in enumerate(value):
            if not _is(item, (spec.item,)):
                raise StubError(file, f"{path}[{i}]", f"expected {_type_name((spec.item,))}")
    if spec.check is not None and (problem := spec.check(value)):
        raise StubError(file, path, problem)
    return value


def _check_table(file: str, prefix: str, spec: Table, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise StubError(file, prefix or "<top>", f"expected table, got {type(data).__name__}")
    unknown = sorted(set(data) - set(spec.fields))
    if unknown:
        raise StubError(file, f"{prefix}{unknown[0]}", "unknown key")
    out: dict[str, Any] = {}
    for key, sub in spec.fields.items():
        path = f"{prefix}{key}"
        if key not in data:
            if sub.required:
                raise StubError(file, path, "missing required field")
            out[key] = None if isinstance(sub, Table) else (list(sub.default) if isinstance(sub.default, list) else sub.default)
        elif isinstance(sub, Table):
            out[key] = _check_table(file, f"{path}.", sub, data[key])
        elif isinstance(sub, Array):
            if not isinstance(data[key], list):
                raise StubError(file, path, "expected array of tables")
            out[key] = [_check_table(file, f"{path}[{i}].", sub.table, t) for i, t in enumerate(data[key])]
        else:
            out[key] = _check_field(file, path, sub, data[key])
    return out


def _check_consistency(file: str, stub: dict[str, Any]) -> None:
    sp = stub["sparsity"]
    if (sp["pattern"] == "dense") != (sp["target"] == 0):
        raise StubError(file, "sparsity.target", f"pattern {sp['pattern']!r} does not fit target {sp['target']}")
    paths = [f["path"] for f in stub["files"]]
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise StubError(file, "files", f"path {dup!r} listed twice")
    if stub["stage"] == "upstream-finetuned" and not stub["parent"]:
        raise StubError(file, "parent", "required when stage is 'upstream-finetuned'")
    expected = Path(file).stem
    if expected != stub["name"]:
        raise StubError(file, "name", f"must match the file name {expected!r}, got {stub['name']!r}")


def parse_stub(path: Path, label: str | None = None) -> dict[str, Any]:
    """Read and validate one stub; returns it with defaults filled in."""
    file = label or path.name
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise StubError(file, "<toml>", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise StubError(file, "<toml>", "not UTF-8 text") from None
    stub = _check_table(file, "", STUB, raw)
    _check_consistency(file, stub)
    return stub


def load_stubs(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """Parse every stub in ``directory`` (sorted by file name) and check names are unique catalog-wide."""
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise StubError(str(directory), "<dir>", "no *.toml stubs found")
    seen: dict[str, str] = {}
    stubs: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        stub = parse_stub(path)
        names = [("name", stub["name"])] + [(f"aliases[{i}].name", a["name"]) for i, a in enumerate(stub["aliases"])]
        for where, name in names:
            key = name.lower()
            if key in seen:
                raise StubError(path.name, where, f"duplicate name or alias {name!r} (also in {seen[key]})")
            seen[key] = path.name
        stubs.append((path.name, stub))
    by_name = {s["name"] for _, s in stubs}
    for file, stub in stubs:
        if stub["parent"] and stub["parent"] not in by_name:
            raise StubError(file, "parent", f"unknown parent {stub['parent']!r}")
    return stubs
