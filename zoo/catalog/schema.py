"""The stub schema: what a ``stubs/*.toml`` file may hold, checked field by field.

A malformed stub raises ``StubError`` naming the file and the dotted field (``files[2].sha256``),
so a catalog edit fails at ``zoo catalog build`` time with a message that points at the fix.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.catalog.cards import AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.catalog.fields import PATTERNS, Check, described, in_range, one_of
from zoo.errors import StubError


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


NUM = (int, float)
STR = (str,)
INT = (int,)
BOOL = (bool,)
LIST = (list,)
FRACTION = in_range(0.0, 1.0)


def record(card: type, extra: dict[str, F | Table | Array] | None = None, required: bool = False) -> Table:
    """The stub table of ``card``'s described fields (dotted keys become sub-tables), then ``extra``'s keys.

    A sub-table is required when it holds a field the card cannot do without.
    """
    kinds = {int: INT, float: NUM, str: STR, bool: BOOL}
    root: dict[str, Any] = {}
    essential: set[str] = set()
    for d in described(card):
        if d.column.stub is None:
            continue
        *sections, key = d.column.stub.split(".")
        node = root
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = F(kinds[d.type], required=d.required, check=d.problem, default=d.column.default)
        if d.required and not d.optional:
            essential.update(".".join(sections[: i + 1]) for i in range(len(sections)))

    def table(node: dict[str, Any], prefix: str, required: bool) -> Table:
        return Table(
            {k: table(v, f"{prefix}{k}", f"{prefix}{k}" in essential) if isinstance(v, dict) else v for k, v in node.items()},
            required=required,
        )

    return table({**root, **(extra or {})}, "", required)


RECIPE = record(
    RecipeInfo,
    {
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

STUB = record(
    ModelCard,
    {
        "tags": F(LIST, item=str, default=[]),
        "aliases": Array(record(AliasInfo)),
        "files": Array(record(FileSpec), required=True),
        "recipe": RECIPE,
        "metrics": Array(record(MetricValue)),
    },
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
