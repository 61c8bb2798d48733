"""Download progress: rich bars (one per file and a total, with speed and ETA) on a terminal, silence otherwise;
and status lines (a retry, a wait for another process's lock) that deep layers raise with ``status(text)`` and
the edge (the CLI) chooses to show with ``statuses(sink)``: a library caller sees none."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_SINKS: list[Callable[[str], None]] = []


@contextmanager
def statuses(sink: Callable[[str], None]) -> Iterator[None]:
    """Send status lines raised while the block runs to ``sink`` (the CLI: one line on stderr each)."""
    _SINKS.append(sink)
    try:
        yield
    finally:
        _SINKS.remove(sink)


def status(text: str) -> None:
    """Tell the user what a long wait is (``"retry 2/5 in 1.0 s: connection refused"``), if an edge listens."""
    if _SINKS:
        _SINKS[-1](text)


class Quiet:
    """The reporter used when output is not a terminal or ``--quiet`` was given."""

    def __enter__(self) -> Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start(self, total: int | None) -> None:
        pass

    def file(self, label: str, size: int | None, done: int = 0) -> Any:
        return lambda n: None

    def finish(self, handle: Any) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class Bars(Quiet):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}", justify="left"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        self.total: Any = None

    def __enter__(self) -> Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, total: int | None) -> None:
        self.total = self.progress.add_task("[bold]total", total=total)

    def file(self, label: str, size: int | None, done: int = 0) -> Any:
        task = self.progress.add_task(label, total=size, completed=done)

        def advance(n: int) -> None:
            self.progress.advance(task, n)
            if self.total is not None:
                self.progress.advance(self.total, n)

        advance.task = task  # type: ignore[attr-defined]
        return advance

    def finish(self, handle: Any) -> None:
        task = getattr(handle, "task", None)
        if task is not None:
            t = self.progress.tasks[task]
            self.progress.update(task, total=t.completed)

    def note(self, text: str) -> None:
        self.progress.console.print(text)


def reporter(quiet: bool = False) -> Quiet:
    return Quiet() if quiet or not sys.stderr.isatty() else Bars()
