"""Write a stub: the TOML text of a stub record, checked by the same schema ``zoo catalog build`` uses."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from zoo.catalog.schema import parse_stub


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def _table(data: dict[str, Any], prefix: str) -> list[str]:
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if v is not None and not isinstance(v, dict) and not _tables(v)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{prefix}{k}]", *_table(v, f"{prefix}{k}.")]
        elif _tables(v):
            for item in v:
                lines += ["", f"[[{prefix}{k}]]", *_table(item, f"{prefix}{k}.")]
    return lines


def _tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(stub: dict[str, Any], comment: str = "") -> str:
    """TOML text for a stub record (nested dicts are tables, lists of dicts arrays of tables, None left out)."""
    head = [f"# {line}" for line in comment.splitlines()]
    return "\n".join([*head, *_table(stub, "")]) + "\n"


def checked(text: str, name: str) -> dict[str, Any]:
    """Parse ``text`` as the stub ``<name>.toml`` would be parsed; raises ``StubError`` naming the field."""
    with tempfile.TemporaryDirectory(prefix="zoo-stub-") as tmp:
        path = Path(tmp) / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return parse_stub(path)
