"""Hashes computed while bytes stream, and what a file is expected to hash to (with who said so)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import IntegrityError

CHUNK = 1 << 20


VOUCHED_BY = {  # authority -> what ``verified_by`` says, strongest first (the order claims are trusted in)
    "catalog": "catalog",
    "pinned": "pinned",
    "source": "source {what}, pinned on first use",
    "header": "response header {what}, pinned on first use",
    "hashes-file": "source {what} (a mirror's hashes file), pinned on first use",
    "trust-on-first-use": "NOTHING vouched: trusted on first use (--trust-on-first-use), pinned",
}


@dataclass(frozen=True)
class Expected:
    """What a file must be. ``authority`` names who vouches for the hash (a key of ``VOUCHED_BY``): ``catalog`` or
    ``pinned`` (trusted earlier on this machine), ``source`` (a listing), ``header`` (the response's ETag),
    ``hashes-file`` (a mirror's ``.zoo-hashes.json``), ``trust-on-first-use`` (explicitly nobody), or None.
    ``git_oid`` is the Hub's git blob id of a small non-LFS file, a real content hash too (sha1 over
    ``blob <size>\\0`` + content)."""

    size: int | None = None
    sha256: str | None = None
    authority: str | None = None
    git_oid: str | None = None

    def stream(self) -> StreamHash:
        """A fresh hash for this file (with the git blob id too when that is what the source vouches with)."""
        return StreamHash(self.size if self.git_oid else None)

    @property
    def trusted(self) -> bool:
        """True when the hash comes from the catalog or an earlier pin, not from the source being checked."""
        return self.authority in ("catalog", "pinned")

    @property
    def vouched(self) -> bool:
        """True when someone (even the source itself) names the content hash, so a flipped bit cannot pass."""
        return bool(self.sha256 or self.git_oid)

    @property
    def verified_by(self) -> str:
        if self.authority in VOUCHED_BY:
            return VOUCHED_BY[self.authority].format(what="sha256" if self.sha256 else "git oid")
        return "size only: unvouched" if self.size is not None else "unvouched"


class StreamHash:
    """sha256 (and the git blob id when the final size is known up front) over bytes fed in order."""

    def __init__(self, git_size: int | None = None) -> None:
        self.sha = hashlib.sha256()
        self.git = hashlib.sha1(f"blob {git_size}\0".encode(), usedforsecurity=False) if git_size is not None else None
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self.sha.update(data)
        if self.git is not None:
            self.git.update(data)
        self.size += len(data)

    def feed_file(self, path: Path, limit: int | None = None, progress: Callable[[int], None] | None = None) -> None:
        """Hash the first ``limit`` bytes (all when None) of an existing file, e.g. a partial download."""
        remaining = limit
        with open(path, "rb") as fh:
            while remaining is None or remaining > 0:
                data = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not data:
                    break
                self.update(data)
                if remaining is not None:
                    remaining -= len(data)
                if progress:
                    progress(len(data))

    @property
    def sha256(self) -> str:
        return self.sha.hexdigest()

    @property
    def git_oid(self) -> str | None:
        return self.git.hexdigest() if self.git is not None else None


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = StreamHash()
    h.feed_file(path, progress=progress)
    return h.sha256


def git_oid_file(path: Path) -> str:
    """The git blob id of a file (for a small file whose id a header named after the bytes had arrived)."""
    h = StreamHash(path.stat().st_size)
    h.feed_file(path)
    return h.git_oid or ""


def check(label: str, expected: Expected, got: StreamHash, git_oid: str | None = None) -> None:
    """Raise ``IntegrityError`` naming the file, the expected and the actual value, when they differ. ``git_oid``
    is the file's blob id when it was computed apart from ``got``."""
    if expected.size is not None and got.size != expected.size:
        raise IntegrityError(f"{label}: size mismatch: expected {expected.size} bytes, got {got.size}")
    if expected.sha256 and got.sha256 != expected.sha256:
        raise IntegrityError(f"{label}: sha256 mismatch: expected {expected.sha256} ({expected.verified_by}), got {got.sha256}")
    actual_git = got.git_oid or git_oid
    if expected.git_oid and not expected.sha256 and actual_git != expected.git_oid:
        raise IntegrityError(f"{label}: git blob id mismatch: expected {expected.git_oid}, got {actual_git}")
