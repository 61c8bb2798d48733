"""Where files come from: the Hugging Face Hub (through huggingface_hub), plain HTTP(S) mirrors, a local
directory, and the user's existing Hugging Face cache. Each source lists what it has (with hashes where it
knows them) and fetches one file into a partial file while hashing it.

The Hub is reached through huggingface_hub for everything but the byte stream: endpoint (``HF_ENDPOINT``),
token (``HF_TOKEN``), revision resolution and the per-file listing (sizes, LFS sha256, git blob ids). The
bytes themselves go through ``transfer.HttpFetcher`` so they are hashed as they arrive and resume into our
own content-addressed cache, instead of being written to the HF cache and read a second time to verify.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import FetchError, RemoteNotFoundError
from zoo.fetch import progress
from zoo.fetch.hashing import Expected
from zoo.fetch.transfer import Fetched, HttpFetcher, Limits, Progress, _noop, copy_file, etag_claim

HASHES_FILE = ".zoo-hashes.json"  # written by `zoo mirror pull`: {path: {"sha256": ..., "size": ...}}


@dataclass(frozen=True)
class Remote:
    """A file as a source describes it; ``None`` where the source does not say. ``authority`` says how: ``source``
    (a listing such as the Hub's API) or ``hashes-file`` (a mirror's ``.zoo-hashes.json``, the weakest claim)."""

    path: str
    size: int | None = None
    sha256: str | None = None
    git_oid: str | None = None
    authority: str = "source"


@dataclass(frozen=True)
class Listing:
    commit: str | None
    files: dict[str, Remote] | None  # None: the source cannot list (a plain HTTP mirror)


class Source(ABC):
    kind: str
    label: str
    remote = True
    header_hashes = True  # its responses may carry ETag / X-Linked-Etag content hashes

    @abstractmethod
    def listing(self, repo: str, revision: str, retries: int | None = None) -> Listing: ...

    @abstractmethod
    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> Fetched: ...


def read_capped(chunks: Iterable[bytes], cap: int, what: str) -> bytes:
    """The whole body, refusing (``FetchError``) once it passes ``cap`` bytes: a listing cannot exhaust memory."""
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > cap:
            raise FetchError(f"{what} is larger than {cap} bytes; refused", "raise ZOO_MAX_API_BYTES if this server is trusted")
    return bytes(out)


def _hub_listing(data: Any, what: str) -> Listing:
    """Model info JSON (``/api/models/<repo>/revision/<rev>?blobs=true``) -> per-file sizes, LFS sha256, blob ids."""
    try:
        files = {}
        for s in data.get("siblings") or []:
            lfs = s.get("lfs") or {}
            path, size = str(s["rfilename"]), s.get("size", lfs.get("size"))
            sha = lfs.get("sha256")
            files[path] = Remote(path, int(size) if size is not None else None, str(sha).lower() if sha else None,
                                 None if sha or not s.get("blobId") else str(s["blobId"]).lower())
        commit = data.get("sha")
        return Listing(str(commit) if commit else None, files)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise FetchError(f"{what}: malformed listing") from None


def _unreachable_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub's HTTP client raises for an endpoint it cannot talk to (refused, timed out, redirect loop):
    the base error of its HTTP library, which HfHubHTTPError derives from (httpx / httpx2 from 1.0 on), and requests'
    ``RequestException`` (0.x, whose ``ConnectionError`` is no ``HTTPError``)."""
    import requests
    from huggingface_hub.utils import HfHubHTTPError

    return (HfHubHTTPError.__bases__[0], requests.RequestException)


def _hub_get(url: str, headers: dict[str, str], params: dict[str, Any], limits: Limits, what: str) -> bytes:
    """GET through huggingface_hub's own session, the body capped at ``limits.max_api_bytes``; an error answer is
    raised by ``hf_raise_for_status`` as the Hub's typed error (``RepositoryNotFoundError`` ...). The session is an
    httpx / httpx2 client from huggingface_hub 1.0 on and a ``requests.Session`` before: told apart by what it can do."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    session, read = get_session(), limits.read_timeout
    streams = callable(getattr(session, "stream", None))  # requests.Session.stream is a flag
    opened = (session.stream("GET", url, headers=headers, params=params, timeout=(10.0, read, read, read)) if streams
              else session.get(url, headers=headers, params=params, timeout=(10.0, read), stream=True))
    with opened as resp:
        chunks = resp.iter_bytes() if streams else resp.iter_content(1 << 16)
        if resp.status_code >= 400:
            body = read_capped(chunks, 1 << 16, "an error response") if resp.status_code < 600 else b""
            hf_raise_for_status(_with_body(resp, body))
        return read_capped(chunks, limits.max_api_bytes, what)


def _with_body(resp: Any, body: bytes) -> Any:
    """The error response with its (capped, already read) body in place, for ``hf_raise_for_status`` to quote."""
    if hasattr(resp, "iter_bytes"):
        return type(resp)(resp.status_code, headers=resp.headers, content=body, request=resp.request)
    resp._content = body  # requests: what .content, .text and .json() return once read
    return resp


class HubSource(Source):
    kind = "hub"

    def __init__(self, endpoint: str | None = None, token: str | None = None, limits: Limits | None = None) -> None:
        from zoo import config

        self.endpoint = (endpoint or config.hf_endpoint()).rstrip("/")
        self.token = token
        self.label = self.endpoint
        self.limits = limits or Limits.from_config()
        self._fetcher: HttpFetcher | None = None

    def _headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token, library_name="obert-zoo")

    def listing(self, repo: str, revision: str, retries: int | None = None) -> Listing:
        """The Hub's model info for ``repo@revision``; transient failures are retried, "no such repo/revision" is not."""
        from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        retries = self.limits.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                return _hub_listing(json.loads(self._info_body(repo, revision)), f"{self.label}: {repo}")
            except RevisionNotFoundError:
                raise RemoteNotFoundError(f"{self.label}: {repo} has no revision '{revision}'",
                                          "check --revision (a branch, tag or full commit id)", status=404) from None
            except RepositoryNotFoundError:
                raise RemoteNotFoundError(f"{self.label}: repository {repo} not found", "private or gated? set HF_TOKEN",
                                          status=404) from None
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if (status or 0) < 500 or attempt == retries:
                    raise FetchError(f"{self.label}: listing {repo} failed: HTTP {status}", status=status) from None
                reason = f"HTTP {status}"
            except _unreachable_errors() as exc:  # connect/read timeouts, refused connections, redirect loops: the endpoint is unusable
                if attempt == retries:
                    raise FetchError(f"{self.label}: cannot reach the Hub ({type(exc).__name__})") from None
                reason = f"cannot reach the Hub ({type(exc).__name__})"
            except ValueError:
                raise FetchError(f"{self.label}: listing {repo} is not JSON") from None
            wait = self.limits.backoff_wait(attempt + 1)
            progress.status(f"retry {attempt + 1}/{retries} in {wait:.1f} s: {self.label}: {reason}")
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _info_body(self, repo: str, revision: str) -> bytes:
        """GET the model info through huggingface_hub's session (proxies, CA bundle, endpoint), size-bounded."""
        from urllib.parse import quote

        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
        return _hub_get(url, self._headers(), {"blobs": True}, self.limits, f"{self.label}: the listing of {repo}")

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> Fetched:
        from huggingface_hub import hf_hub_url

        self._fetcher = self._fetcher or HttpFetcher(headers=self._headers(), limits=self.limits)
        url = hf_hub_url(repo, path, revision=revision, endpoint=self.endpoint)
        return self._fetcher.fetch(url, part, expected, progress, resumed)


class HttpMirror(Source):
    """A plain web server holding ``<base>/<repo>/<path>`` (what `zoo mirror pull` lays out); it lists only when it
    has a ``.zoo-hashes.json``."""

    kind = "mirror"

    def __init__(self, base: str, limits: Limits | None = None) -> None:
        self.base = base.rstrip("/")
        self.label = self.base
        self.limits = limits or Limits.from_config()
        self._fetcher = HttpFetcher(limits=self.limits)

    def listing(self, repo: str, revision: str, retries: int | None = None) -> Listing:
        import requests

        url = f"{self.base}/{repo}/{HASHES_FILE}"
        try:
            with self._fetcher.session.get(url, timeout=(10.0, self.limits.read_timeout), stream=True) as resp:
                if resp.status_code != 200:
                    return Listing(None, None)
                body = read_capped(resp.iter_content(1 << 16), self.limits.max_api_bytes, f"{url}")
        except requests.RequestException as exc:
            raise FetchError(f"{self.label}: unreachable ({type(exc).__name__})") from None
        try:
            return Listing(None, _hashes_listing(json.loads(body)))
        except (ValueError, TypeError, KeyError, AttributeError):
            return Listing(None, None)

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> Fetched:
        return self._fetcher.fetch(f"{self.base}/{repo}/{path}", part, expected, progress, resumed)


def _hashes_listing(data: dict) -> dict[str, Remote]:
    return {p: Remote(p, int(v["size"]), str(v["sha256"]).lower(), authority="hashes-file") for p, v in data.items()}


class LocalDir(Source):
    """``--from DIR``: DIR is a repo (holds config.json) or a tree of ``<org>/<repo>/`` repos."""

    kind = "local"
    remote = False
    header_hashes = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.label = str(self.root)
        if not self.root.is_dir():
            raise FetchError(f"{self.root} is not a directory")

    def repo_dir(self, repo: str) -> Path:
        nested = self.root / repo
        if nested.is_dir():
            return nested
        if (self.root / "config.json").exists():
            return self.root
        raise FetchError(f"{self.root} holds neither {repo}/ nor a repo (config.json)")

    def listing(self, repo: str, revision: str, retries: int | None = None) -> Listing:
        base = self.repo_dir(repo)
        inside = base.resolve()
        files = {str(p.relative_to(base)): Remote(str(p.relative_to(base)), p.stat().st_size)
                 for p in base.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
                 and p.resolve().is_relative_to(inside)}  # like the mirror: no dot-files, nothing a symlink leads out to
        hashes = base / HASHES_FILE
        if hashes.exists():
            try:
                files.update(_hashes_listing(json.loads(hashes.read_text())))
            except (ValueError, TypeError, KeyError, AttributeError):
                raise FetchError(f"{hashes} is corrupt") from None
        return Listing(None, files)

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> Fetched:
        return Fetched(copy_file(self.repo_dir(repo) / path, part, expected, progress))


def hf_cached(repo: str, revision: str, path: str) -> Path | None:
    """The user's Hugging Face cache copy of a file (downloaded earlier by transformers or huggingface_hub)."""
    from huggingface_hub import try_to_load_from_cache

    from zoo import config

    found = try_to_load_from_cache(repo, path, revision=revision, cache_dir=config.hf_cache_dir())
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def hf_blob_claims(found: Path) -> tuple[str | None, str | None]:
    """What the Hugging Face cache vouches for a snapshot file: its blob is named by the ETag the Hub sent
    (sha256 for LFS files, git blob id for small ones); nothing when the snapshot is not a symlink."""
    return etag_claim(found.resolve().name) if found.is_symlink() else (None, None)


def default_sources(mirrors: list[str] | None = None, limits: Limits | None = None, endpoint: str | None = None,
                    token: str | None = None) -> list[Source]:
    """``--mirror`` URLs (or ``ZOO_MIRRORS``) in order, then the Hub at ``endpoint`` (default ``HF_ENDPOINT``)."""
    from zoo import config

    limits = limits or Limits.from_config()
    return [HttpMirror(m, limits) for m in (mirrors if mirrors is not None else config.mirrors())] + [
        HubSource(endpoint, token if token is not None else config.hf_token(), limits)]
