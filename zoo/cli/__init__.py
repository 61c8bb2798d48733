"""The ``zoo`` command: parses arguments, calls the API, prints with rich (or JSON with ``--json``).

``app`` (the root group) lives in the leaf module ``zoo.cli.app``; each stage's commands live in their
own module and are registered here, explicitly, in the order ``zoo --help`` lists them.
"""

from __future__ import annotations

import sys

import click

from zoo.cli import catalog, convert, fetch, pipelines, runtime, serve
from zoo.cli.app import app
from zoo.errors import ZooError

for _module in (catalog, fetch, convert, pipelines, runtime, serve):
    for _command in _module.COMMANDS:
        app.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: any ``ZooError`` becomes one line on stderr and exit status 1."""
    try:
        app.main(args=argv, prog_name="zoo", standalone_mode=False)
    except ZooError as exc:
        sys.stderr.write(f"error: {exc.one_line()}\n")
        sys.exit(1)
    except click.exceptions.Abort:
        sys.stderr.write("interrupted (partial downloads are kept and resume on the next run)\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
__all__ = ["app", "main"]
