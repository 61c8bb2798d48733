"""The root ``zoo`` group and the helpers every command module shares (a leaf: imports no command module).

Built on click (typer's own base: typer itself now imports pydantic on every call, which alone would
spend a quarter of the start-up budget). Heavy modules are imported inside commands so ``zoo --help``
stays fast. Commands are defined in ``zoo/cli/<stage>.py`` and registered in ``zoo/cli/__init__.py``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from zoo.config import Settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="obert-zoo", prog_name="zoo")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Cache and state directory for this command (default: $ZOO_HOME, else ~/.cache/obert-zoo).")
@click.option("--offline", is_flag=True, default=None,
              help="No network: a server catalog (ZOO_CATALOG_URL) is read from its snapshot in the home (same as ZOO_OFFLINE=1).")
@click.pass_context
def app(ctx: click.Context, home: Path | None, offline: bool | None) -> None:
    """obert-zoo: the oBERT sparse BERT family: a catalog, verified downloads and a sparse CPU runtime.

    \b
    Start with:
      zoo demo                          the whole flow offline, on a synthetic model
      zoo list --layers 3 --sort f1     browse the catalog
      zoo show obert-3l-80-quant        everything about one model
      zoo download obert-3l-80-quant    fetch, verify, install (then zoo cache list)
    """
    ctx.obj = Settings.from_env(home=home, offline=offline)
    ACTIVE[:] = [ctx.invoked_subcommand or ""]


ACTIVE: list[str] = []  # the subcommand this process runs (``main`` names it when Ctrl-C interrupts it)


def settings(**overrides: object) -> Settings:
    """The settings built by the root group for this invocation (with per-command overrides applied)."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    return (root if isinstance(root, Settings) else Settings.from_env()).with_(**overrides)


THREADS = click.option("--threads", type=click.IntRange(min=1), default=None,
                       help="Engine threads (default: $ZOO_THREADS, else every core this process may use).")


def json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")(fn)


def wide_option(fn: Any) -> Any:
    return click.option("--wide", is_flag=True, help="Every column, however wide the terminal (lines may wrap).")(fn)


UNLIMITED = 100_000


class _Rstrip:
    """stdout without the spaces rich pads table cells with at the end of each line (for pipes and files)."""

    def __init__(self, out: Any) -> None:
        self.out, self.pending = out, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        if lines:
            self.out.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.pending.strip(" "):
            self.out.write(self.pending.rstrip(" "))
        self.pending = ""
        self.out.flush()

    def isatty(self) -> bool:
        return False


def console(wide: bool = False) -> Any:
    """A rich console for stdout: a terminal's own width (or ``$COLUMNS``); piped without ``$COLUMNS``, or with
    ``wide``, unlimited, so a table row stays one line. Piped output carries no trailing padding."""
    import os

    from rich.console import Console

    con = Console()
    if con.is_terminal:
        return Console(width=UNLIMITED) if wide else con
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and not wide else UNLIMITED
    return Console(file=_Rstrip(sys.stdout), width=width, color_system=None, soft_wrap=False)


def fits(con: Any) -> int | None:
    """The width tables must fit on ``con`` (None: unlimited)."""
    return None if con.width >= UNLIMITED else con.width


def emit_json(value: Any) -> None:
    def default(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return o.to_dict() if hasattr(o, "to_dict") else dataclasses.asdict(o)
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serializable: {type(o).__name__}")

    sys.stdout.write(json.dumps(value, default=default, indent=2) + "\n")


def emit_json_line(value: Any) -> None:
    """One compact JSON object on its own line, flushed at once (JSON Lines, for pipes)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()
