"""One error hierarchy: every user-facing failure is a ``ZooError`` with a one-line message and a hint.

The CLI catches ``ZooError`` and prints ``error: <message> (<hint>)``; anything else is a bug.
Subclasses also derive from the stdlib error they resemble, so callers may catch either.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class for errors meant for the user."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class StubError(ZooError, ValueError):
    """A catalog stub file is malformed; the message names the file and the field."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        self.file, self.field, self.problem = file, field, problem
        super().__init__(f"{file}: field '{field}': {problem}")


class UnknownModelError(ZooError, LookupError):
    """A name or alias is not in the catalog."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name, self.suggestions = name, suggestions
        hint = f"did you mean: {', '.join(suggestions)}" if suggestions else "try `zoo list` or `zoo search TEXT`"
        super().__init__(f"unknown model '{name}'", hint)

    def __str__(self) -> str:
        return self.one_line()


class CatalogError(ZooError, RuntimeError):
    """The catalog database is missing, unreadable or stale."""


class CheckpointError(ZooError, ValueError):
    """A checkpoint is corrupt, truncated, or disagrees with its config."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked for a global outside the allow-list; nothing was executed."""


class InputError(ZooError, ValueError):
    """Model inputs the engine cannot take: token ids outside the vocabulary, a sequence longer than the positions."""


class ExportError(ZooError, RuntimeError):
    """The ONNX export failed a check."""


class IntegrityError(ZooError, ValueError):
    """A file's size or hash is not what the catalog, the source or the pinned record says."""


class UnvouchedError(IntegrityError):
    """Nothing (catalog, pin, listing, response header, hashes file) vouches for a file's hash; it was not installed."""


class FetchError(ZooError, ConnectionError):
    """A source could not deliver a file (HTTP error, refused connection, retries exhausted).

    ``status`` is the HTTP status when a server answered (None for network failures)."""

    def __init__(self, message: str, hint: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class RemoteNotFoundError(FetchError, LookupError):
    """The source answered that the repository, revision or file does not exist (HTTP 404 and the Hub's kin)."""


class OfflineError(ZooError, ConnectionError):
    """The network is off (ZOO_OFFLINE / HF_HUB_OFFLINE) and what was asked for is not cached."""


class DiskFullError(ZooError, OSError):
    """Not enough free space to write a download; nothing in the cache was damaged."""


class NotInstalledError(ZooError, LookupError):
    """A catalog model is not in the cache."""


class LockTimeoutError(ZooError, TimeoutError):
    """Another process held a download lock for too long."""


class StateError(ZooError, RuntimeError):
    """The state database (``$ZOO_HOME/state.db``: pins, installs, history) is unreadable; nothing was changed."""
