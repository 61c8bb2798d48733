"""The content-addressed cache under ``ZOO_HOME``: blobs, partial downloads, locks, manifests, model dirs.

::

    blobs/sha256-<hex>        verified content, read-only; the name is the hash
    blobs/sha256-<hex>.ok     marker: size, mtime_ns, inode and ctime_ns when last fully hashed (else: re-hash)
    partial/<key>.part        a download in progress, kept across Ctrl-C / kill -9 and resumed
    locks/<key>.lock          one lock per file being fetched (flock: released by the kernel if the holder dies)
    locks/blob-<hex>.lock     held by a download from adopting (or reusing) a blob until its manifest is written
    manifests/<name>.json     written last, atomically: a model is installed iff its manifest exists
    models/<name>/<path>      symlinks into blobs: the Hub-style directory converters and pipelines read

Nothing is ever written at a final path except by ``os.replace`` of a complete, verified file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo import config
from zoo.catalog.fields import NAME_RE, repo_relative, shown
from zoo.errors import CatalogError, LockTimeoutError, NotInstalledError
from zoo.fetch import progress
from zoo.fetch.hashing import sha256_file

_TMP_NAME = re.compile(r"^\..+\.(\d+)\.(tmp|old)$")  # `.<name>.<pid>.tmp`: per-process temporary names


@dataclass(frozen=True)
class ManifestFile:
    path: str
    sha256: str
    size: int
    verified_by: str  # catalog | pinned | hub-lfs | git-oid | pinned-on-first-use
    origin: str  # where the bytes came from: hub, mirror URL, hf-cache, local dir, cache


@dataclass(frozen=True)
class Manifest:
    name: str
    repo: str
    revision: str
    commit: str | None
    source: str
    files: tuple[ManifestFile, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(**{**data, "files": tuple(ManifestFile(**f) for f in data["files"])})

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)  # what writing into a read-only ZOO_HOME fails with


def _fingerprint(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "ctime_ns": st.st_ctime_ns}


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Store:
    """One cache directory; every path the fetch stage touches is computed here."""

    def __init__(self, home: Path | None = None, lock_timeout: float | None = None) -> None:
        self.home = Path(home) if home else config.zoo_home()
        self.lock_timeout = lock_timeout

    # -- blobs -------------------------------------------------------------------------------------
    def blob(self, sha256: str) -> Path:
        return self.home / "blobs" / f"sha256-{sha256}"

    def _marker(self, sha256: str) -> Path:
        return self.home / "blobs" / f"sha256-{sha256}.ok"

    def is_verified(self, sha256: str) -> bool:
        """True when the blob exists and its marker matches its current size, mtime, inode and ctime (no re-hash).

        ctime cannot be set back by a user (``os.utime`` restores only atime/mtime), so bytes changed in place
        with the mtime restored still make the marker stale; only ``zoo verify`` re-reads fresh blobs."""
        try:
            st = self.blob(sha256).stat()
            mark = json.loads(self._marker(sha256).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(mark, dict) and mark == _fingerprint(st)

    def mark_verified(self, sha256: str) -> None:
        """Remember that the blob was hashed; on a read-only cache nothing is remembered (it is re-hashed next time)."""
        try:
            _atomic_write(self._marker(sha256), json.dumps(_fingerprint(self.blob(sha256).stat())))
        except OSError as exc:
            if exc.errno not in READ_ONLY:
                raise

    def ensure_verified(self, sha256: str) -> bool:
        """A blob is usable when its marker is fresh, or when re-hashing a present blob with a stale marker
        agrees (the marker is then refreshed); a blob that no longer matches its name is deleted."""
        if self.is_verified(sha256):
            return True
        blob = self.blob(sha256)
        if blob.exists():
            if sha256_file(blob) == sha256:
                self.mark_verified(sha256)
                return True
            self.drop_blob(sha256)
        return False

    def adopt(self, tmp: Path, sha256: str) -> Path:
        """Move a complete, verified file into the store under its hash (atomic; read-only afterwards)."""
        final = self.blob(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
        self.mark_verified(sha256)
        return final

    def drop_blob(self, sha256: str) -> None:
        for p in (self._marker(sha256), self.blob(sha256)):
            p.unlink(missing_ok=True)

    def blobs(self) -> list[Path]:
        root = self.home / "blobs"
        return sorted(p for p in root.glob("sha256-*") if not p.name.endswith(".ok")) if root.is_dir() else []

    # -- partial downloads and locks ---------------------------------------------------------------
    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]

    def partial(self, key: str) -> Path:
        path = self.home / "partial" / f"{key}.part"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def partials(self) -> list[dict[str, Any]]:
        root = self.home / "partial"
        out = []
        for part in sorted(root.glob("*.part")) if root.is_dir() else []:
            meta = part.with_suffix(".json")
            info = json.loads(meta.read_text()) if meta.exists() else {}
            out.append({"path": str(part), "bytes": part.stat().st_size, **info})
        return out

    def describe_partial(self, key: str, **info: Any) -> None:
        _atomic_write(self.partial(key).with_suffix(".json"), json.dumps(info))

    def drop_partial(self, key: str) -> None:
        part = self.partial(key)
        for p in (part, part.with_suffix(".json")):
            p.unlink(missing_ok=True)

    def _lock_path(self, name: str) -> Path:
        path = self.home / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def lock(self, key: str, label: str, timeout: float | None = None) -> Iterator[None]:
        from filelock import FileLock, Timeout

        path = self._lock_path(key)
        lock = FileLock(str(path))
        if timeout is None and self.lock_timeout is None:
            from zoo.fetch.transfer import Limits

            timeout = Limits.from_config().lock_timeout
        wait = timeout if timeout is not None else self.lock_timeout
        try:
            _acquire(lock, path, label, wait)
        except Timeout:
            raise LockTimeoutError(f"another process has been fetching {label} for over {wait:.0f} s (lock {path})",
                                   "wait for it, or stop it; a lock held by a dead process is released by the OS") from None
        try:
            yield
        finally:
            lock.release()

    def try_lock(self, stack: ExitStack, name: str) -> bool:
        """Take lock ``name`` exclusively without waiting (released when ``stack`` closes); False when a live
        process holds it (exclusively, or shared as a download holds a blob)."""
        import fcntl

        fh = stack.enter_context(open(self._lock_path(name), "a"))  # noqa: SIM115
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        stack.callback(fcntl.flock, fh, fcntl.LOCK_UN)
        return True

    def share_lock(self, stack: ExitStack, name: str) -> None:
        """Hold lock ``name`` shared until ``stack`` closes: many downloads may hold one blob, ``prune`` none of them."""
        import fcntl

        fh = stack.enter_context(open(self._lock_path(name), "a"))  # noqa: SIM115
        fcntl.flock(fh, fcntl.LOCK_SH)  # waits only while a prune holds it (briefly)

    # -- manifests and model directories -----------------------------------------------------------
    def manifest_path(self, name: str) -> Path:
        return self.home / "manifests" / f"{name}.json"

    def manifest(self, name: str) -> Manifest | None:
        path = self.manifest_path(name)
        try:
            return Manifest.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            return None  # a damaged manifest means "not installed"; the next download rewrites it

    def require(self, name: str) -> Manifest:
        found = self.manifest(name)
        if found is None:
            raise NotInstalledError(f"{name} is not installed in {self.home}", f"run `zoo download {name}`")
        return found

    def manifests(self) -> list[Manifest]:
        root = self.home / "manifests"
        found = (self.manifest(p.stem) for p in sorted(root.glob("*.json"))) if root.is_dir() else ()
        return [m for m in found if m is not None]

    def model_dir(self, name: str) -> Path:
        return self.home / "models" / name

    def install(self, manifest: Manifest) -> Path:
        """Link the model directory to its blobs, then write the manifest (the commit point). A name or path that
        would land outside the model's directory (``..``, ``/abs``) is refused before anything is written."""
        _inside_the_model(manifest)
        with self.lock(self.key("model", manifest.name), manifest.name):
            return self._install(manifest)

    def _install(self, manifest: Manifest) -> Path:
        target = self.model_dir(manifest.name)
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for f in manifest.files:
            link = staging / f.path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(self.blob(f.sha256), link.parent))
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
        _atomic_write(self.manifest_path(manifest.name), json.dumps(manifest.to_dict(), indent=2))
        return target

    def remove(self, name: str) -> Manifest:
        """Uninstall: manifest first (so a crash leaves 'not installed'), then the model directory."""
        manifest = self.require(name)
        self.manifest_path(name).unlink()
        shutil.rmtree(self.model_dir(name), ignore_errors=True)
        return manifest

    def prune(self, partials: bool = True, only: set[str] | None = None) -> tuple[int, int]:
        """Delete blobs no manifest references (``only``: of these sha256s) and partial downloads; returns (files, bytes) freed.

        What a live download holds is skipped: a partial file whose lock is held, and a blob whose lock is held
        (a download holds it from adopting or reusing the blob until its manifest is written). Stale temporary
        files of dead processes are removed too."""
        count = freed = 0
        with ExitStack() as stack:
            if partials:
                for info in self.partials():
                    part = Path(info["path"])
                    if not self.try_lock(stack, part.stem):
                        continue
                    freed += info["bytes"]
                    part.unlink(missing_ok=True)
                    part.with_suffix(".json").unlink(missing_ok=True)
                    count += 1
            blobs = [b for b in self.blobs() if (only is None or b.name.removeprefix("sha256-") in only)
                     and self.try_lock(stack, f"blob-{b.name.removeprefix('sha256-')}")]
            used = {f.sha256 for m in self.manifests() for f in m.files}  # read after the locks: no install slips past
            for blob in blobs:
                sha = blob.name.removeprefix("sha256-")
                if sha not in used and blob.exists():
                    freed += blob.stat().st_size
                    self.drop_blob(sha)
                    count += 1
        for folder in ("blobs", "manifests", "models", "partial"):
            count += clean_stale_tmp(self.home / folder)
        return count, freed


class Lease:
    """What one download holds until its manifest is written: each file it fetches (exclusive: one fetcher per
    file) and each blob it adopts or reuses (shared: ``prune`` cannot delete it meanwhile)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stack = ExitStack()
        self._held: set[str] = set()

    def file(self, key: str, label: str) -> None:
        if key not in self._held:
            self._stack.enter_context(self.store.lock(key, label))
            self._held.add(key)

    def blob(self, sha256: str) -> None:
        name = f"blob-{sha256}"
        if name not in self._held:  # a model may hold one blob under two paths
            self.store.share_lock(self._stack, name)
            self._held.add(name)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _inside_the_model(manifest: Manifest) -> None:
    """Refuse a manifest whose name or file paths would lead out of ``models/<name>/``: a path from a catalog must
    never place a file elsewhere in the home, or outside it."""
    if len(manifest.name) > 128 or not NAME_RE.match(manifest.name):
        raise CatalogError(f"{shown(manifest.name)} is not a model name; nothing was installed", "the catalog entry is wrong")
    for f in manifest.files:
        if problem := repo_relative(f.path):
            raise CatalogError(f"{manifest.name}: file path {problem}; nothing was installed", "the catalog entry is wrong")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(folder: Path) -> int:
    """Remove ``.<name>.<pid>.tmp`` / ``.old`` files and folders left by processes that died mid-write (a copy
    killed by Ctrl-C or kill -9); those of live processes are left alone. Returns how many were removed."""
    removed = 0
    for entry in folder.iterdir() if folder.is_dir() else ():
        found = _TMP_NAME.match(entry.name)
        if found is None or _alive(int(found.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def _acquire(lock: Any, path: Path, label: str, timeout: float) -> None:
    """Take ``lock``; when another process holds it, say so (a status line) before waiting up to ``timeout`` s."""
    from filelock import Timeout

    try:
        since = time.strftime("%H:%M:%S", time.localtime(path.stat().st_mtime))  # before our open touches it
    except OSError:
        since = None
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress.status(f"waiting for another zoo download of {label}" + (f" (lock held since {since})" if since else "")
                        + f"; giving up after {timeout:.0f} s")
        lock.acquire(timeout=timeout)
