"""``zoo mirror``: serve a directory of repos as a Hub-compatible endpoint, and fill one from the cache.

The served subset is what huggingface_hub's downloads use (checked against its 2.x client):

* ``GET /api/models/<repo>[/revision/<rev>]``: model info with ``sha`` and ``siblings`` (size, blobId, lfs);
* ``GET /api/models/<repo>/tree/<rev>[/<dir>]``: the file listing ``snapshot_download`` reads;
* ``HEAD|GET /<repo>/resolve/<rev>/<path>``: the file, with ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag``
  and ``X-Linked-Size`` (for LFS-style files), ``Accept-Ranges`` and single ``Range`` requests;
* ``GET /<repo>/<path>``: plain paths too, so the same server is also a plain HTTP mirror (``--mirror``).

A repo is any directory under DIR holding ``config.json`` (``DIR/<org>/<name>/`` or ``DIR/<name>/``). Each
repo has one revision, ``main``, whose commit id is derived from its content (sha1 over paths and hashes).
Files over 1 MiB or with a weights extension are described as LFS files (ETag = sha256, as on the Hub);
others carry their git blob id.

Only the repos' visible files are served: dot-files and dot-directories (``.git/``, ``.env``) at any depth, paths
that leave DIR (``..``, absolute) and symlinks that leave their repo or land on a dot-file are neither listed nor
served. Oversized request targets get 414, malformed ones 400, and the server underneath (``httpserver``) bounds
what a client can hold: time and bytes per request head, stalls, connections at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from zoo.errors import ZooError
from zoo.fetch.hashing import StreamHash
from zoo.fetch.httpserver import BoundedHandler, BoundedHTTPServer, Limits
from zoo.fetch.sources import HASHES_FILE

LFS_MIN = 1 << 20
LFS_SUFFIXES = (".bin", ".safetensors", ".onnx", ".pt", ".pth", ".h5", ".msgpack", ".ot")
MAX_TARGET = 8 << 10  # characters in a request target (414 beyond)
NAME_MAX = 255  # bytes in one path component, as in the file systems we serve from (414 beyond)


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    sha256: str
    git_oid: str

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
            found = FileInfo(rel, st.st_size, h.sha256, h.git_oid or "")
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


class Handler(BoundedHandler):
    server: MirrorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_HEAD(self) -> None:
        self.route(head=True)

    def do_GET(self) -> None:
        self.route(head=False)

    # -- routing -------------------------------------------------------------------------------------
    def route(self, head: bool) -> None:
        self.reader.settle()
        if len(self.path) > MAX_TARGET:
            return self.error(HTTPStatus.REQUEST_URI_TOO_LONG, f"request target over {MAX_TARGET} characters", "BadRequest")
        try:
            path = unquote(urlsplit(self.path).path)
        except ValueError:
            return self.error(HTTPStatus.BAD_REQUEST, "malformed request target", "BadRequest")
        parts = path.strip("/").split("/")
        if any(len(p.encode()) > NAME_MAX for p in parts):
            return self.error(HTTPStatus.REQUEST_URI_TOO_LONG, f"a path component over {NAME_MAX} bytes", "BadRequest")
        if "\0" in path or ".." in parts or "." in parts:
            return self.error(HTTPStatus.FORBIDDEN, "path outside the mirror", "EntryNotFound")
        if parts[:2] == ["api", "models"]:
            return self.api(parts[2:], head)
        for split in (2, 1):  # <org>/<name>/... before <name>/...
            repo = "/".join(parts[:split])
            repo_dir = self.server.catalog.repo_dir(repo)
            if repo_dir is None:
                continue
            rest = parts[split:]
            if len(rest) >= 3 and rest[0] == "resolve":
                if not self.revision_ok(repo_dir, unquote(rest[1])):
                    return None
                return self.serve_file(repo_dir, "/".join(rest[2:]), head)
            if rest == [HASHES_FILE]:
                return self.send_json({f.path: {"sha256": f.sha256, "size": f.size} for f in self.server.catalog.files(repo_dir)}, head)
            return self.serve_file(repo_dir, "/".join(rest), head)
        return self.error(HTTPStatus.NOT_FOUND, "repository not found", "RepoNotFound")

    def api(self, parts: list[str], head: bool) -> None:
        catalog = self.server.catalog
        for split in (2, 1):
            repo_dir = catalog.repo_dir("/".join(parts[:split]))
            if repo_dir is not None:
                break
        else:
            return self.error(HTTPStatus.NOT_FOUND, "repository not found", "RepoNotFound")
        repo, rest = "/".join(parts[:split]), parts[split:]
        if rest and rest[0] in ("revision", "tree") and len(rest) >= 2 and not self.revision_ok(repo_dir, rest[1]):
            return None
        files = catalog.files(repo_dir)
        if not rest or rest[0] == "revision":
            siblings = [{"rfilename": f.path, "size": f.size, "blobId": f.git_oid,
                         **({"lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}} if f.lfs else {})} for f in files]
            return self.send_json({"id": repo, "modelId": repo, "sha": catalog.commit(repo_dir), "private": False, "disabled": False,
                                   "gated": False, "tags": [], "siblings": siblings}, head)
        if rest[0] == "tree" and len(rest) >= 2:
            prefix = "/".join(rest[2:])
            chosen = [f for f in files if not prefix or f.path.startswith(prefix.rstrip("/") + "/")]
            return self.send_json([{"type": "file", "path": f.path, "size": f.size, "oid": f.git_oid,
                                    **({"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}} if f.lfs else {})}
                                   for f in chosen], head)
        return self.error(HTTPStatus.NOT_FOUND, "unknown API route", "EntryNotFound")

    def revision_ok(self, repo_dir: Path, revision: str) -> bool:
        if revision in ("main", self.server.catalog.commit(repo_dir)):
            return True
        self.error(HTTPStatus.NOT_FOUND, f"revision {revision} not found", "RevisionNotFound")
        return False

    # -- responses -----------------------------------------------------------------------------------
    def error(self, status: HTTPStatus, message: str, code: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", json.dumps(message)[1:-1])  # ASCII, no CR/LF: the path is the client's
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, value: Any, head: bool) -> None:
        body = json.dumps(value).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def serve_file(self, repo_dir: Path, rel: str, head: bool) -> None:
        path = self.server.catalog.file(repo_dir, rel)
        if path is None:
            return self.error(HTTPStatus.NOT_FOUND, f"{rel} not found", "EntryNotFound")
        try:
            info = self.server.catalog.info(repo_dir, path)
            fh = open(path, "rb")  # noqa: SIM115  (closed below, after the headers are out)
        except OSError:  # gone or unreadable since it was found
            return self.error(HTTPStatus.NOT_FOUND, f"{rel} not readable", "EntryNotFound")
        with fh:
            self.send_file(fh, repo_dir, info, head)
        return None

    def send_file(self, fh: Any, repo_dir: Path, info: FileInfo, head: bool) -> None:
        start, end = 0, info.size - 1
        status = HTTPStatus.OK
        parsed = _byte_range(self.headers.get("Range", ""), info.size)
        if parsed is not None:
            start, end = parsed
            if not 0 <= start <= end < info.size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{info.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{info.etag}"')
        self.send_header("X-Repo-Commit", self.server.catalog.commit(repo_dir))
        if info.lfs:
            self.send_header("X-Linked-Etag", f'"{info.sha256}"')
            self.send_header("X-Linked-Size", str(info.size))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{info.size}")
        self.end_headers()
        if not head and length:
            self.send_body(fh, start, length, info)

    def send_body(self, fh: Any, start: int, length: int, info: FileInfo) -> None:
        """Write ``length`` bytes from ``start`` (sendfile); tests override this to misbehave on purpose."""
        self.request.sendfile(fh, start, length)


_RANGE = re.compile(r"bytes=(?:(\d{1,20})-(\d{0,20})|-(\d{1,20}))", re.ASCII)


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The first and last byte a single ``Range`` asks for (maybe unsatisfiable: the caller answers 416), or None
    to ignore the header and send the whole file, as RFC 9110 allows for several ranges or a malformed one."""
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        return None
    first, last, suffix = m.groups()
    if suffix is not None:
        return max(0, size - int(suffix)), size - 1
    return int(first), min(int(last), size - 1) if last else size - 1


class MirrorHTTPServer(BoundedHTTPServer):
    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, handler: type[Handler] = Handler,
                 verbose: bool = False, limits: Limits = Limits()) -> None:
        self.catalog = Catalog(root)
        self.verbose = verbose
        super().__init__((host, port), handler, limits)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MirrorHTTPServer:
        """Serve in a daemon thread (tests, ``zoo demo``); ``shutdown()`` stops it."""
        threading.Thread(target=self.serve_forever, daemon=True, name="zoo-mirror").start()
        return self


def serve(root: Path, host: str = "127.0.0.1", port: int = 0, verbose: bool = False,
          limits: Limits = Limits()) -> MirrorHTTPServer:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ZooError(f"{root} is not a directory", "give the directory that holds <org>/<repo>/ folders")
    try:
        return MirrorHTTPServer(root, host, port, verbose=verbose, limits=limits)
    except OSError as exc:
        raise ZooError(f"cannot listen on {host}:{port}: {exc.strerror}", "choose another --port") from None


def pull(names: list[str], to: Path) -> list[dict[str, Any]]:
    """Copy installed, verified models into ``to/<repo>/`` with a hashes file, for an offline site's mirror."""
    from zoo.catalog import resolve
    from zoo.fetch.store import Store, clean_stale_tmp

    store = Store()
    out = []
    for name in names:
        manifest = store.require(resolve(name).name)
        target = Path(to).expanduser() / manifest.repo
        target.mkdir(parents=True, exist_ok=True)
        hashes = {}
        for f in manifest.files:
            if not store.ensure_verified(f.sha256):
                raise ZooError(f"{manifest.name}/{f.path} failed verification in the cache", f"run `zoo download {manifest.name}`")
            dest = target / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            clean_stale_tmp(dest.parent)  # copies an earlier pull left behind when it was killed
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(store.blob(f.sha256), tmp)
            os.replace(tmp, dest)
            hashes[f.path] = {"sha256": f.sha256, "size": f.size}
        (target / HASHES_FILE).write_text(json.dumps(hashes, indent=2) + "\n")
        out.append({"name": manifest.name, "repo": manifest.repo, "path": str(target), "files": len(hashes),
                    "bytes": sum(h["size"] for h in hashes.values())})
    return out
