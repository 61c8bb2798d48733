"""Cards from plain data, checked: the one gate every card passes on its way in, whether from a catalog's rows
(``models.read_cards``) or from the JSON a home keeps and a build seeds (``cardcache``).

Plain data is what ``dataclasses.asdict`` makes of a card (lists for tuples). Each value must have its field's
type and pass its field's rules (``Described.problem``: range, choices, length, printable text); a number must be
finite; a recipe's stages must be named groups of named scalars (``zoo recipe`` writes them as YAML); an entry's
files must be distinct paths inside its repo, none a folder of another; names and aliases must be unique across
the catalog. A value that breaks one of these would pass the dataclass and fail, or mislead, much later: a
traceback in a table, a YAML line nobody wrote, a file written outside the model's directory.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from zoo.catalog.cards import ModelCard
from zoo.catalog.fields import MAX_ITEMS, NAME_RE, Described, described, shown, text_problem

Decode = Callable[[Any], Any]
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # a recipe's group and parameter names


class Malformed(ValueError):
    """Data that is not a card of this zoo: ``where`` it is wrong (``files[2].path``), and the ``problem``."""

    def __init__(self, problem: str, where: str = "") -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.problem, self.where = problem, where

    def within(self, part: str) -> Malformed:
        """The same problem seen one level up, from ``part`` (a field name, or ``[i]`` for an item)."""
        joint = "" if not self.where or self.where.startswith("[") else "."
        return Malformed(self.problem, f"{part}{joint}{self.where}")


def _got(v: Any) -> str:
    return "None" if v is None else f"{type(v).__name__} {shown(v)}"


def _number(v: float) -> float:
    if not math.isfinite(v):
        raise Malformed(f"must be a finite number, got {v!r}")
    return v


def _scalar(kind: type, optional: bool, rule: Callable[[Any], str | None] | None) -> Decode:
    """Values of ``kind`` (str, int, float or bool; an int where a float is due is taken as one), None if ``optional``."""

    def decode(v: Any) -> Any:
        if v is None and optional:
            return None
        if kind is float and type(v) is int:
            v = float(v) if abs(v) < 1 << 1000 else math.inf
        if type(v) is not kind:
            raise Malformed(f"expected {kind.__name__}{' or None' if optional else ''}, got {_got(v)}")
        if kind is float:
            _number(v)
        if rule is not None and (problem := rule(v)):
            raise Malformed(problem)
        return v
    return decode


def _items(item: Decode) -> Decode:
    """A list of at most ``MAX_ITEMS`` values, each decoded by ``item``, as a tuple."""

    def decode(v: Any) -> tuple[Any, ...]:
        if type(v) is not list:
            raise Malformed(f"expected a list, got {_got(v)}")
        if len(v) > MAX_ITEMS:
            raise Malformed(f"must have at most {MAX_ITEMS} items, got {len(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except Malformed as exc:
                raise exc.within(f"[{i}]") from None
        return tuple(out)
    return decode


def _named(value: Decode) -> Decode:
    """A mapping of at most ``MAX_ITEMS`` identifiers to values decoded by ``value``, copied."""

    def decode(v: Any) -> dict[str, Any]:
        if type(v) is not dict:
            raise Malformed(f"expected a mapping, got {_got(v)}")
        if len(v) > MAX_ITEMS:
            raise Malformed(f"must have at most {MAX_ITEMS} entries, got {len(v)}")
        out = {}
        for k, x in v.items():
            if type(k) is not str or not IDENTIFIER.match(k):
                raise Malformed(f"must be named by identifiers (letters, digits, '_'), got {shown(k)}")
            try:
                out[k] = value(x)
            except Malformed as exc:
                raise exc.within(k) from None
        return out
    return decode


def _parameter_scalar(v: Any) -> Any:
    if type(v) is str:
        if problem := text_problem(v):
            raise Malformed(problem)
        return v
    if type(v) in (bool, int):
        return v
    if type(v) is float:
        return _number(v)
    raise Malformed(f"expected text, a number or a boolean, got {_got(v)}")


def _parameter(v: Any) -> Any:
    return list(_items(_parameter_scalar)(v)) if type(v) is list else _parameter_scalar(v)


_STAGES = _named(_named(_parameter))  # the one dict field, ``RecipeInfo.stages``: group -> parameter -> value(s)


def _field(hint: Any, d: Described | None) -> Decode:
    """The decoder of a field typed ``hint`` (``d``: its description, for a described field)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = origin in (types.UnionType, typing.Union)  # "X | None"
    if optional:
        (hint,) = (a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (str, int, float, bool):
        return _scalar(hint, optional, d.problem if d else text_problem if hint is str else None)
    if optional:
        decode = _field(hint, d)
        return lambda v: None if v is None else decode(v)
    if origin is tuple:  # tuple[X, ...]
        return _items(_field(args[0], None))
    if hint is dict or origin is dict:
        return _STAGES
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint)
    raise TypeError(f"no decoder for card field type {hint!r}")


@functools.cache
def _dataclass(tp: type) -> Decode:
    """The decoder of the card class ``tp``: a mapping with exactly its fields, each decoded."""
    hints = typing.get_type_hints(tp)
    rules = {d.name: d for d in described(tp)}
    fields = [(f.name, _field(hints[f.name], rules.get(f.name))) for f in dataclasses.fields(tp)]
    names = {name for name, _ in fields}

    def decode(v: Any) -> Any:
        if type(v) is not dict:
            raise Malformed(f"expected {tp.__name__}, got {_got(v)}")
        if v.keys() != names:
            odd = sorted(map(str, names ^ v.keys()))
            raise Malformed(f"{tp.__name__} fields do not match: {', '.join(shown(n, 30) for n in odd[:3])}")
        values = {}
        for name, field in fields:
            try:
                values[name] = field(v[name])
            except Malformed as exc:
                raise exc.within(name) from None
        return tp(**values)
    return decode


def _entry(card: ModelCard) -> ModelCard:
    """``card``, once its files are of its repo and revision, at distinct paths, none a folder of another."""
    paths: set[str] = set()
    for i, f in enumerate(card.files):
        if (f.repo, f.revision) != (card.repo, card.revision):
            raise Malformed(f"names {shown(f.repo)} @ {shown(f.revision)}, not the entry's repo and revision", f"files[{i}]")
        if f.path in paths:
            raise Malformed(f"path {shown(f.path)} is listed twice", f"files[{i}]")
        paths.add(f.path)
    folders = {p.rsplit("/", k)[0] for p in paths for k in range(1, p.count("/") + 1)}
    if both := sorted(paths & folders):
        raise Malformed(f"{shown(both[0])} is both a file and the folder of another file", "files")
    return card


def _label(item: Any, i: int) -> str:
    name = item.get("name") if type(item) is dict else None
    return repr(name) if type(name) is str and len(name) <= 128 and NAME_RE.match(name) else f"number {i + 1}"


def _unique(cards: list[ModelCard]) -> None:
    """Every name and alias (case aside) names one entry once: a lookup must never pick one of two."""
    owner: dict[str, str] = {}
    for c in cards:
        for what, name in (("name", c.name), *(("alias", a.name) for a in c.aliases)):
            key = name.lower()
            if key in owner:
                raise Malformed(f"model {c.name!r}: {what} {name!r} is already {owner[key]}")
            owner[key] = f"the name of {c.name!r}" if what == "name" else f"an alias of {c.name!r}"


def cards(data: Any) -> list[ModelCard]:
    """The entries in ``data`` (a list of plain cards), each checked field by field, then all together; raises
    ``Malformed``, naming the entry, the field and what is wrong with it."""
    if type(data) is not list:
        raise Malformed(f"expected a list of entries, got {_got(data)}")
    decode = _dataclass(ModelCard)
    out = []
    for i, item in enumerate(data):
        try:
            out.append(_entry(decode(item)))
        except Malformed as exc:
            raise Malformed(f"model {_label(item, i)}: {exc}") from None
    _unique(out)
    return out
