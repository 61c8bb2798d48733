"""One description per catalog field: where it sits in a stub, how it is checked, how it is stored.

A card dataclass (``ModelCard``, ``FileSpec``, ``AliasInfo``, ``MetricValue``, ``RecipeInfo``) declares each
of its catalog fields once, with ``column(...)``. The stub schema (``schema.py``), the ORM tables
(``models.py``), the build (stub -> row) and the reader (row -> card) are all derived from those
declarations, so a new field needs no other edit and a forgotten mapping cannot silently read as None.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

Check = Callable[[Any], str | None]

TASKS = ("question-answering", "text-classification", "fill-mask")
STAGES = ("downstream", "upstream", "upstream-finetuned")
PATTERNS = ("dense", "unstructured", "block4")
QUANT_SCHEMES = ("none", "int8-qat")
ALIAS_KINDS = ("hub", "hub-mirror", "sparsezoo", "short")
METRICS = ("f1", "exact_match", "accuracy", "accuracy_matched")
SCHEMA_VERSION = 3  # bump when a table or column changes; readers refuse any other version
CPU_FAMILIES = ("amx", "avx512-vnni", "avx2")  # expected speedups are per family: AMX-INT8, AVX-512 VNNI, AVX2
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REPO_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")  # the Hub's ``org/name`` (or ``name``)
REVISION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,254}$")  # a branch, tag, commit or ``refs/pr/N``
MAX_TEXT = 2000  # characters in a text field without a column length (the longest catalogued citation has ~320)
MAX_ITEMS = 1000  # files, aliases, tags, metrics of one entry; groups and parameters of a recipe
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")  # controls, surrogates, bidi overrides

_KEY = "zoo.catalog.column"


@dataclass(frozen=True)
class Column:
    """What the catalog knows about one card field besides its name and Python type."""

    stub: str | None  # dotted key in the stub record ("architecture.layers"); None: derived by the build
    required: bool | None = None  # None: required unless the card type allows None or a default is given
    default: Any = None  # stored when the stub leaves the key out
    check: Check | None = None  # an extra rule on the value, run by the stub schema
    index: bool = False
    unique: bool = False
    length: int | None = None  # VARCHAR length for str columns
    cite: bool = False  # a citation text, stored once in the shared ``sources`` table


def column(stub: str | None, *, card_default: Any = dataclasses.MISSING, card_factory: Any = dataclasses.MISSING, **options: Any) -> Any:
    """A dataclass field described for the catalog (``options`` are ``Column``'s; the card's own default apart)."""
    return dataclasses.field(default=card_default, default_factory=card_factory, metadata={_KEY: Column(stub, **options)})


@dataclass(frozen=True)
class Described:
    """One described field of a card class, with its Python type resolved."""

    name: str
    type: type  # int, float, str, bool or dict; None stripped off
    optional: bool  # the card allows None
    column: Column

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (of this field's type) as a catalog value, or None: text too long or not
        printable, then the column's own check. The stub schema and the card decoder both ask this."""
        if isinstance(value, str) and (found := text_problem(value, self.column.length or MAX_TEXT)):
            return found
        return self.column.check(value) if self.column.check else None

    @property
    def required(self) -> bool:
        if self.column.required is not None:
            return self.column.required
        return not self.optional and self.column.default is None

    def from_stub(self, record: dict[str, Any]) -> Any:
        """This field's value in a parsed stub record (None where a section or key is absent)."""
        value: Any = record
        for key in (self.column.stub or "").split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return float(value) if self.type is float and value is not None else value


@cache
def described(card: type) -> tuple[Described, ...]:
    """The described fields of ``card`` in declaration order; fields without ``column(...)`` are structural."""
    hints = typing.get_type_hints(card)
    out = []
    for f in dataclasses.fields(card):
        if _KEY not in f.metadata:
            continue
        kind, optional = _unwrap(hints[f.name])
        out.append(Described(f.name, kind, optional, f.metadata[_KEY]))
    return tuple(out)


def _unwrap(hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"catalog field type {hint!r} must be one type or one type | None")
        return _unwrap(rest[0])[0], True
    return typing.get_origin(hint) or hint, False


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters: a hostile value must not make an error message huge."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}..." + (f" ({len(value)} characters)" if isinstance(value, str) else "")


def printable(text: str, limit: int = 300) -> str:
    """``text`` safe in a one-line message: what a terminal would obey written as escapes, cut to ``limit`` characters."""
    safe = _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)
    return safe if len(safe) <= limit else f"{safe[:limit]}..."


def text_problem(value: str, limit: int = MAX_TEXT) -> str | None:
    """Text longer than ``limit`` characters, or holding a control character, a lone surrogate or a bidi override
    (a terminal would obey, or fail to print, what a table shows), else None."""
    if len(value) > limit:
        return f"must be at most {limit} characters, got {len(value)}"
    if found := _UNPRINTABLE.search(value):
        return f"must be printable text, got {found.group()!r} at position {found.start()} of {shown(value)}"
    return None


def one_of(choices: tuple[str, ...] | tuple[int, ...]) -> Check:
    allowed = tuple(choices)
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(str, allowed))}, got {shown(v)}"


def in_range(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}, got {shown(v)}"


def matches(pattern: re.Pattern[str], what: str) -> Check:
    return lambda v: None if pattern.match(v) else f"must be {what}, got {shown(v)}"


def repo_relative(v: str) -> str | None:
    """A file path inside a repo: relative, with no ``..``, empty, or backslash parts, none over 255 bytes (it becomes
    a path in the model's directory, and part of a URL)."""
    parts = v.split("/")
    if v.startswith("/") or any(p in ("", ".", "..") or "\\" in p or "\0" in p or ":" in p for p in parts):
        return f"must be a relative path inside the repo (no '..', no leading '/'), got {shown(v)}"
    if any(len(p.encode("utf-8", "surrogatepass")) > 255 for p in parts):
        return f"must have no part longer than 255 bytes, got {shown(v)}"
    return None


def hub_repo(v: str) -> str | None:
    """A Hub repo id, ``org/name`` or ``name``: it becomes part of URLs and of folder names in caches."""
    if not REPO_RE.match(v) or ".." in v:
        return f"must be a repo id such as org/name (letters, digits, '_', '.', '-'), got {shown(v)}"
    return None


def git_revision(v: str) -> str | None:
    """A branch, tag, commit or ``refs/pr/N``: it becomes part of URLs and of paths in the Hugging Face cache."""
    if not REVISION_RE.match(v) or ".." in v or "//" in v or v.endswith("/"):
        return f"must be a branch, tag or commit (letters, digits, '_', '.', '-', '/'; no '..'), got {shown(v)}"
    return None
