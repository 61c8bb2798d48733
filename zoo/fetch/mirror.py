"""``zoo mirror``: serve a directory of repos as a Hub-compatible endpoint, and fill one from the cache.

The served subset is every Hub call huggingface_hub's clients and the ``hf`` CLI make to read models (checked
against its 2.x client; the answers are built in ``hubapi``):

* ``GET /api/models``: the listing, with ``search``, ``author``, ``filter``/``pipeline_tag``, ``sort``,
  ``direction``, ``limit``, ``full``, ``config`` and ``expand``; pages of ``page_size`` linked by ``Link: rel="next"``;
* ``GET /api/models/<repo>[/revision/<rev>]``: model info with ``sha`` and ``siblings`` (size, blobId, lfs);
* ``GET /api/models/<repo>/refs``: the one branch, ``main``;
* ``GET /api/models/<repo>/tree/<rev>[/<dir>]``: folders and files (``recursive``, ``expand``);
* ``POST /api/models/<repo>/paths-info/<rev>``: entries for the ``paths`` given (form or JSON body, at most 1 MiB);
* ``HEAD|GET /<repo>/resolve/<rev>/<path>``: the file, with ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag``
  and ``X-Linked-Size`` (for LFS-style files), ``Accept-Ranges`` and single ``Range`` requests (several ranges
  get the whole file, 200);
* ``GET /``: an index page of the repos; ``GET /<repo>``: the model page (its JSON with ``Accept: application/json``);
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

import json
import os
import re
import shutil
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from zoo.errors import ZooError
from zoo.fetch import hubapi
from zoo.fetch.httpserver import BodyRefused, BoundedHandler, BoundedHTTPServer, Limits
from zoo.fetch.hubrepos import NAME_MAX, Catalog, FileInfo
from zoo.fetch.sources import HASHES_FILE

__all__ = ["Catalog", "FileInfo", "Handler", "MirrorHTTPServer", "pull", "serve"]

MAX_TARGET = 8 << 10  # characters in a request target (414 beyond)


class Handler(BoundedHandler):
    server: MirrorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_HEAD(self) -> None:
        self.route(head=True)

    def do_GET(self) -> None:
        self.route(head=False)

    def do_POST(self) -> None:
        self.reader.settle()
        parts = self.target()
        if parts is None:
            return None
        found = self.find_repo(parts[2:]) if parts[:2] == ["api", "models"] else None
        if found is None or len(found[1]) != 2 or found[1][0] != "paths-info":
            self.close_connection = True  # the body, if any, is not read
            return self.error(HTTPStatus.METHOD_NOT_ALLOWED if found is None and parts[:2] != ["api", "models"]
                              else HTTPStatus.NOT_FOUND, "no such POST route", "EntryNotFound")
        (repo_id, repo_dir), rest = found
        try:
            paths, expand = _paths_request(self.read_body(), self.headers.get("Content-Type", ""))
        except BodyRefused as exc:
            self.close_connection = True
            return self.error(exc.status, str(exc), "BadRequest")
        except ValueError as exc:
            return self.error(HTTPStatus.BAD_REQUEST, str(exc), "BadRequest")
        if not self.revision_ok(repo_dir, rest[1]):
            return None
        return self.send_json(hubapi.paths_info(hubapi.repo(self.server.catalog, repo_id, repo_dir), paths, expand), False)

    # -- routing -------------------------------------------------------------------------------------
    def target(self) -> list[str] | None:
        """The request path's components, or None once a refusal is sent (oversized, malformed, traversing)."""
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
        return parts

    def query(self) -> dict[str, list[str]] | None:
        try:
            return parse_qs(urlsplit(self.path).query, keep_blank_values=True, max_num_fields=200)
        except ValueError:
            return self.error(HTTPStatus.BAD_REQUEST, "malformed query", "BadRequest")

    def find_repo(self, parts: list[str]) -> tuple[tuple[str, Path], list[str]] | None:
        """((repo id, its directory), the path after it): ``<org>/<name>/...`` before ``<name>/...``."""
        for split in (2, 1):
            repo_dir = self.server.catalog.repo_dir("/".join(parts[:split]))
            if repo_dir is not None:
                return ("/".join(parts[:split]), repo_dir), parts[split:]
        return None

    def route(self, head: bool) -> None:
        self.reader.settle()
        parts = self.target()
        if parts is None:
            return None
        if parts == [""]:
            return self.send_page(hubapi.index_page(self.server.catalog), head)
        if parts[:2] == ["api", "models"]:
            return self.api(parts[2:], head)
        found = self.find_repo(parts)
        if found is None:
            return self.error(HTTPStatus.NOT_FOUND, "repository not found", "RepoNotFound")
        (repo_id, repo_dir), rest = found
        if not rest or rest == [""]:
            r = hubapi.repo(self.server.catalog, repo_id, repo_dir)
            if _wants_json(self.headers.get("Accept", "")):
                return self.send_json(hubapi.model_info(r), head)
            return self.send_page(hubapi.model_page(r), head)
        if len(rest) >= 3 and rest[0] == "resolve":
            if not self.revision_ok(repo_dir, unquote(rest[1])):
                return None
            return self.serve_file(repo_dir, "/".join(rest[2:]), head)
        if rest == [HASHES_FILE]:
            return self.send_json({f.path: {"sha256": f.sha256, "size": f.size} for f in self.server.catalog.files(repo_dir)}, head)
        return self.serve_file(repo_dir, "/".join(rest), head)

    def api(self, parts: list[str], head: bool) -> None:
        query = self.query()
        if query is None:
            return None
        if parts in ([], [""]):
            return self.list_models(query, head)
        found = self.find_repo(parts)
        if found is None:
            return self.error(HTTPStatus.NOT_FOUND, "repository not found", "RepoNotFound")
        (repo_id, repo_dir), rest = found
        if rest and rest[0] in ("revision", "tree") and len(rest) >= 2 and not self.revision_ok(repo_dir, rest[1]):
            return None
        r = hubapi.repo(self.server.catalog, repo_id, repo_dir)
        if not rest or rest[0] == "revision" and len(rest) == 2:
            return self.send_json(hubapi.model_info(r), head)
        if rest == ["refs"]:
            return self.send_json(hubapi.refs(r), head)
        if rest[0] == "tree" and len(rest) >= 2:
            truthy = ("1", "true", "True")
            return self.send_json(hubapi.tree(r, "/".join(rest[2:]), query.get("recursive", [""])[-1] in truthy,
                                              query.get("expand", [""])[-1] in truthy), head)
        return self.error(HTTPStatus.NOT_FOUND, "unknown API route", "EntryNotFound")

    def list_models(self, query: dict[str, list[str]], head: bool) -> None:
        """One page of the listing; a ``Link: <...cursor=N>; rel="next"`` header points at the next one."""
        try:
            entries = hubapi.listing(self.server.catalog, {k: v for k, v in query.items() if k != "cursor"})
            start = int(query.get("cursor", ["0"])[-1])
        except hubapi.BadQuery as exc:
            return self.error(HTTPStatus.BAD_REQUEST, str(exc), "BadRequest")
        except ValueError:
            return self.error(HTTPStatus.BAD_REQUEST, "cursor must be an integer", "BadRequest")
        end = start + self.server.page_size
        link = None
        if end < len(entries):
            host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
            link = f'<http://{host}/api/models?{urlencode({**query, "cursor": [str(end)]}, doseq=True)}>; rel="next"'
        return self.send_json(entries[max(0, start):end], head, {"Link": link} if link else {})

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

    def send_json(self, value: Any, head: bool, headers: dict[str, str] | None = None) -> None:
        self.send_body_bytes(json.dumps(value).encode(), "application/json", head, headers)

    def send_page(self, page: str, head: bool) -> None:
        self.send_body_bytes(page.encode(), "text/html; charset=utf-8", head)

    def send_body_bytes(self, body: bytes, content_type: str, head: bool, headers: dict[str, str] | None = None) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
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


def _wants_json(accept: str) -> bool:
    return "application/json" in accept and "text/html" not in accept


def _paths_request(body: bytes, content_type: str) -> tuple[list[str], bool]:
    """(paths, expand) from a paths-info body: a form (as huggingface_hub sends it) or a JSON object."""
    text = body.decode("utf-8", errors="strict")
    if content_type.split(";")[0].strip() == "application/json":
        value = json.loads(text)
        if not isinstance(value, dict) or not isinstance(value.get("paths", []), list):
            raise ValueError("a JSON body must be an object with a list of paths")
        paths, expand = value.get("paths", []), bool(value.get("expand", False))
    else:
        form = parse_qs(text, keep_blank_values=True, max_num_fields=10_000)
        paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
    if not all(isinstance(p, str) for p in paths):
        raise ValueError("paths must be strings")
    return paths, expand


class MirrorHTTPServer(BoundedHTTPServer):
    page_size = 1000  # models per /api/models page, as on the Hub
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
