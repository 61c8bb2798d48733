"""The repos a mirror serves: each directory under a root that holds ``config.json``, its visible files and their
hashes (computed once per size and mtime), and the rule that keeps dot-files and escaping symlinks out of reach."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zoo.fetch.hashing import StreamHash

LFS_MIN = 1 << 20
LFS_SUFFIXES = (".bin", ".safetensors", ".onnx", ".pt", ".pth", ".h5", ".msgpack", ".ot")
NAME_MAX = 255  # bytes in one path component, as in the file systems we serve from (414 beyond)


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    sha256: str
    git_oid: str
    mtime: float = 0.0

    @property
    def lfs(self) -> bool:
        return self.size >= LFS_MIN or self.path.endswith(LFS_SUFFIXES)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


class Catalog:
    """The repos under a root, with file hashes computed once per (size, mtime) and kept in memory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._hashes: dict[tuple[str, int, int], FileInfo] = {}
        self._lock = threading.Lock()

    def repo_dir(self, repo: str) -> Path | None:
        parts = repo.split("/")
        if not 1 <= len(parts) <= 2:
            return None
        return _inside(self.root, parts, lambda p: (p / "config.json").is_file())

    def file(self, repo_dir: Path, rel: str) -> Path | None:
        """The visible file ``rel`` inside a repo, or None when it does not exist, is hidden or would leave the repo."""
        return _inside(repo_dir, rel.split("/"), Path.is_file)

    def info(self, repo_dir: Path, path: Path, rel: str | None = None) -> FileInfo:
        """``path`` hashed, listed as ``rel`` (the name a symlink was found under) or its own place in the repo."""
        rel = rel or path.relative_to(repo_dir).as_posix()
        st = path.stat()
        key = (str(repo_dir), rel, st.st_size, st.st_mtime_ns)
        with self._lock:
            found = self._hashes.get(key)
        if found is None:
            h = StreamHash(st.st_size)
            h.feed_file(path)
            found = FileInfo(rel, st.st_size, h.sha256, h.git_oid or "", st.st_mtime)
            with self._lock:
                self._hashes[key] = found
        return found

    def files(self, repo_dir: Path) -> list[FileInfo]:
        """The repo's servable files; hidden directories are not even walked (a ``.git/`` may be large)."""
        found = []
        for top, dirs, names in os.walk(repo_dir):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                rel = Path(top, name).relative_to(repo_dir).as_posix()
                path = self.file(repo_dir, rel)
                if path is not None:
                    found.append(self.info(repo_dir, path, rel))
        return sorted(found, key=lambda f: f.path.split("/"))

    def commit(self, repo_dir: Path) -> str:
        text = "".join(f"{f.path}\0{f.sha256}\n" for f in self.files(repo_dir))
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def repos(self) -> list[str]:
        found = {p.parent.relative_to(self.root).as_posix() for pattern in ("*/config.json", "*/*/config.json")
                 for p in self.root.glob(pattern)}
        return sorted(r for r in found if self.repo_dir(r) is not None)


def _plain(part: str) -> bool:
    """A path component that names a visible entry of its directory, and nothing else."""
    return bool(part) and not part.startswith(".") and "\\" not in part and "\0" not in part and len(part.encode()) <= NAME_MAX


def _inside(base: Path, parts: list[str], wanted: Callable[[Path], bool]) -> Path | None:
    """``base/parts`` with symlinks resolved, when it is ``wanted`` and both the request and where it lands are
    visible and inside ``base``."""
    if not all(_plain(p) for p in parts):
        return None
    try:
        path = base.joinpath(*parts).resolve()
        ok = path.is_relative_to(base) and all(_plain(p) for p in path.relative_to(base).parts) and wanted(path)
    except (OSError, RuntimeError):  # a symlink loop, a name or path the file system refuses
        return None
    return path if ok else None
