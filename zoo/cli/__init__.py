"""The ``zoo`` command: parses arguments, calls the API, prints with rich (or JSON with ``--json``).

``app`` (the root group) lives in the leaf module ``zoo.cli.app``; each stage's commands live in their
own module and are registered here, explicitly, in the order ``zoo --help`` lists them.
"""

from __future__ import annotations

import errno
import sys

import click

from zoo.cli import catalog, convert, fetch, pipelines, runtime, serve
from zoo.cli.app import ACTIVE, app
from zoo.errors import ZooError
from zoo.fetch.progress import statuses

for _module in (catalog, fetch, convert, pipelines, runtime, serve):
    for _command in _module.COMMANDS:
        app.add_command(_command)


FETCHING = {"download", "run", "eval", "mirror"}  # commands that may be downloading when interrupted


def interrupted(command: str) -> str:
    """What Ctrl-C stopped, said plainly (a partial download is mentioned only where one may exist)."""
    what = f"interrupted zoo {command}" if command else "interrupted"
    return what + (": partial downloads are kept and resume on the next run" if command in FETCHING else "")


def unwritable(exc: OSError) -> str:
    """One line for a write refused by the file system (a read-only or someone else's ZOO_HOME)."""
    return (f"cannot write {exc.filename or 'to the cache'}: {exc.strerror or exc} (this command writes to ZOO_HOME; "
            "set ZOO_HOME or --home to a writable directory)")


def _status_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: any ``ZooError`` becomes one line on stderr and exit status 1."""
    try:
        with statuses(_status_line):
            app.main(args=argv, prog_name="zoo", standalone_mode=False)
    except ZooError as exc:
        sys.stderr.write(f"error: {exc.one_line()}\n")
        sys.exit(1)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        sys.stderr.write(f"error: {unwritable(exc)}\n")
        sys.exit(1)
    except click.exceptions.Abort:
        sys.stderr.write(interrupted(ACTIVE[0] if ACTIVE else "") + "\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
__all__ = ["app", "main"]
