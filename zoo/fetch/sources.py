"""Where files come from: the Hugging Face Hub (through huggingface_hub), plain HTTP(S) mirrors, a local
directory, and the user's existing Hugging Face cache. Each source lists what it has (with hashes where it
knows them) and fetches one file into a partial file while hashing it.

The Hub is reached as huggingface_hub reaches it: its endpoint (``HF_ENDPOINT``), token lookup and headers
(``HF_TOKEN``, the saved login), URLs and error headers. Both requests, the listing (revision -> commit, per-file
sizes, LFS sha256, git blob ids) and the bytes, go through one ``requests`` session of ``transfer.HttpFetcher``
(proxies and CA bundle from the environment, as huggingface_hub 0.x did): huggingface_hub's own HTTP stack
(httpx from 1.0 on) would cost a download ~0.3 s of imports and set-up for one small JSON request. The bytes are
hashed as they arrive and resume into our own content-addressed cache, instead of being written to the HF
cache and read a second time to verify.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from zoo.errors import FetchError, RemoteNotFoundError, ZooError
from zoo.fetch import progress
from zoo.fetch.hashing import Expected
from zoo.fetch.transfer import HEX_DIGITS, Fetched, HttpFetcher, Limits, Progress, _noop, copy_file, etag_claim, get_within, late, redact

HASHES_FILE = ".zoo-hashes.json"  # written by `zoo mirror pull`: {path: {"sha256": ..., "size": ...}}
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # what a token may hold to travel in a header as it is: visible ASCII


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


def read_capped(chunks: Iterable[bytes], cap: int, what: str, within: float | None = None, since: float | None = None) -> bytes:
    """The whole body, refusing (``FetchError``) once it passes ``cap`` bytes or, given ``within``, takes longer
    than that many seconds (counted from ``since``, a ``time.monotonic()``, default now): a listing can neither
    exhaust memory nor be drip-fed forever."""
    out = bytearray()
    deadline = None if within is None else (time.monotonic() if since is None else since) + within
    for chunk in chunks:
        out += chunk
        if len(out) > cap:
            raise FetchError(f"{what} is larger than {cap} bytes; refused", "raise ZOO_MAX_API_BYTES if this server is trusted")
        if deadline is not None and time.monotonic() > deadline:
            raise late(what, within or 0.0)
    return bytes(out)


def _json(body: bytes | str) -> Any:
    """``json.loads``, with nesting too deep for the parser (``RecursionError``) a ``ValueError`` like any bad JSON."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _size(value: Any) -> int | None:
    """A listed size: a whole number of bytes, not negative (a bool, float or string is a malformed listing)."""
    if value is None or (type(value) is int and value >= 0):
        return value
    raise ValueError(f"not a size: {value!r:.40}")


def _hex(value: Any, digits: int) -> str | None:
    """A listed hash or commit id: exactly ``digits`` (64 or 40) hex digits, lowercased, as ``etag_claim`` reads them;
    None when absent. Anything else (a path, markup, escape codes) would reach file names and terminals, so it is a
    malformed listing."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isascii() and HEX_DIGITS[digits].fullmatch(value.lower()):
        return value.lower()
    raise ValueError(f"not {digits} hex digits: {value!r:.40}")


def _hub_listing(data: Any, what: str) -> Listing:
    """Model info JSON (``/api/models/<repo>/revision/<rev>?blobs=true``) -> per-file sizes, LFS sha256, blob ids;
    each value is checked for the form the Hub gives it."""
    try:
        files = {}
        for s in data.get("siblings") or []:
            lfs = s.get("lfs") or {}
            path, size = str(s["rfilename"]), _size(s.get("size", lfs.get("size")))
            sha = _hex(lfs.get("sha256"), 64)
            files[path] = Remote(path, size, sha, None if sha else _hex(s.get("blobId"), 40))
        return Listing(_hex(data.get("sha"), 40), files)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise FetchError(f"{what}: malformed listing") from None


def get_capped(session: Any, url: str, limits: Limits, what: str, headers: dict[str, str] | None = None,
               params: dict[str, Any] | None = None) -> tuple[Any, bytes]:
    """GET ``url`` through a ``requests`` session: the response and its body, capped at ``limits.max_api_bytes``
    and at ``limits.read_timeout`` seconds in all, status line and headers included (an error answer's body is not
    read: its status and headers say what it is). Connection failures, and a body that breaks off or is not encoded
    as its ``Content-Encoding`` says, raise ``requests.RequestException`` (as ``iter_content`` would)."""
    import requests
    import urllib3

    started, within = time.monotonic(), limits.read_timeout
    try:
        resp = get_within(session, url, within, headers=headers, params=params, timeout=(10.0, within))
    except TimeoutError:
        raise late(what, within) from None
    with resp:
        if resp.status_code >= 400:
            return resp, b""
        pieces = iter(lambda: resp.raw.read1(1 << 16, decode_content=True), b"")  # each as it arrives: a drip is timed
        try:
            return resp, read_capped(pieces, limits.max_api_bytes, what, within, started)
        except urllib3.exceptions.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from None
        except urllib3.exceptions.HTTPError as exc:  # broke off: a short body, a bad chunk, a read timeout
            raise requests.ConnectionError(exc) from None


def hub_error(status: int, headers: Any) -> str | None:
    """What a Hub error answer names, read as huggingface_hub's ``hf_raise_for_status`` reads the Hub's headers:
    ``revision`` (X-Error-Code RevisionNotFound), ``repo`` (RepoNotFound, GatedRepo, or a 401 that is not about the
    token: the Hub answers 401 alike for a missing, a private and a gated repo), else None (an HTTP error as such)."""
    code, message = headers.get("X-Error-Code"), headers.get("X-Error-Message")
    if code == "RevisionNotFound":
        return "revision"
    if code in ("RepoNotFound", "GatedRepo") or (status == 401 and message != "Invalid credentials in Authorization header"):
        return "repo"
    return None


class HubSource(Source):
    kind = "hub"

    def __init__(self, endpoint: str | None = None, token: str | None = None, limits: Limits | None = None) -> None:
        from zoo import config

        self.endpoint = (endpoint or config.hf_endpoint()).rstrip("/")
        self.token = token
        self.label = redact(self.endpoint)
        self.limits = limits or Limits.from_config()
        self._fetcher: HttpFetcher | None = None

    def _headers(self) -> dict[str, str]:
        """What huggingface_hub's ``build_hf_headers`` sends (its user agent, the token), without its coding-agent
        detection: from 2.x that asks the endpoint for a registry of agents, one more request with a 3 s timeout
        in every process that has not cached it, and zoo sends no telemetry."""
        import platform

        import huggingface_hub

        from zoo.version import __version__

        if self.token and not _HEADER_SAFE.fullmatch(self.token):
            raise ZooError("the Hugging Face token (HF_TOKEN or the saved login) holds a space, control or non-ASCII "
                           "character, which an HTTP header cannot carry", "check the token for a stray character")
        agent = f"obert-zoo/{__version__}; hf_hub/{huggingface_hub.__version__}; python/{platform.python_version()}"
        return {"user-agent": agent, **({"authorization": f"Bearer {self.token}"} if self.token else {})}

    def _http(self) -> HttpFetcher:
        """One ``requests`` session for the listing and the bytes (proxies and CA bundle from the environment)."""
        self._fetcher = self._fetcher or HttpFetcher(headers=self._headers(), limits=self.limits)
        return self._fetcher

    def listing(self, repo: str, revision: str, retries: int | None = None) -> Listing:
        """The Hub's model info for ``repo@revision``; transient failures are retried, "no such repo/revision" is not."""
        import requests

        retries = self.limits.retries if retries is None else retries
        url = f"{self.endpoint}/api/models/{repo}/revision/{_segment(revision)}"
        http = self._http()
        for attempt in range(retries + 1):
            try:
                resp, body = get_capped(http.session, url, self.limits, f"{self.label}: the listing of {repo}",
                                        http.headers, {"blobs": True})
            except requests.RequestException as exc:  # refused, timed out, a redirect loop: the endpoint is unusable
                if attempt == retries or not isinstance(exc, (requests.ConnectionError, requests.Timeout)):  # a loop, file://
                    raise FetchError(f"{self.label}: cannot reach the Hub ({type(exc).__name__})") from None
                reason = f"cannot reach the Hub ({type(exc).__name__})"
            else:
                status = resp.status_code
                if status == 200:  # a 204, or a 3xx with no Location, is no listing
                    try:
                        return _hub_listing(_json(body), f"{self.label}: {repo}")
                    except ValueError:
                        raise FetchError(f"{self.label}: listing {repo} is not JSON") from None
                named = hub_error(status, resp.headers)
                if named == "revision":
                    raise RemoteNotFoundError(f"{self.label}: {repo} has no revision '{revision}'",
                                              "check --revision (a branch, tag or full commit id)", status=404)
                if named == "repo":
                    raise RemoteNotFoundError(f"{self.label}: repository {repo} not found", "private or gated? set HF_TOKEN",
                                              status=404)
                if status < 500 or attempt == retries:
                    raise FetchError(f"{self.label}: listing {repo} failed: HTTP {status}", status=status)
                reason = f"HTTP {status}"
            wait = self.limits.backoff_wait(attempt + 1)
            progress.status(f"retry {attempt + 1}/{retries} in {wait:.1f} s: {self.label}: {reason}")
            time.sleep(wait)
        raise AssertionError("unreachable")

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> Fetched:
        url = f"{self.endpoint}/{repo}/resolve/{_segment(revision)}/{quote(path)}"  # as hf_hub_url builds it
        return self._http().fetch(url, part, expected, progress, resumed)


def _segment(revision: str) -> str:
    """``revision`` as one URL path segment, '/' included (``refs/pr/1``), as hf_hub_url quotes it. '.' and '..'
    would not stay one: the client resolves them, asking for another URL (``/revision/..`` is the repo's default)."""
    if revision in (".", ".."):
        raise ZooError(f"'{revision}' is not a revision", "give a branch, tag or full commit id with --revision")
    return quote(revision, safe="")


class HttpMirror(Source):
    """A plain web server holding ``<base>/<repo>/<path>`` (what `zoo mirror pull` lays out); it lists only when it
    has a ``.zoo-hashes.json``."""

    kind = "mirror"

    def __init__(self, base: str, limits: Limits | None = None) -> None:
        self.base = base.rstrip("/")
        self.label = redact(self.base)
        self.limits = limits or Limits.from_config()
        self._fetcher = HttpFetcher(limits=self.limits)

    def listing(self, repo: str, revision: str, retries: int | None = None) -> Listing:
        import requests

        url = f"{self.base}/{repo}/{HASHES_FILE}"
        try:
            resp, body = get_capped(self._fetcher.session, url, self.limits, redact(url))
        except requests.RequestException as exc:
            raise FetchError(f"{self.label}: unreachable ({type(exc).__name__})") from None
        if resp.status_code != 200:
            return Listing(None, None)
        try:
            return Listing(None, _hashes_listing(_json(body)))
        except (ValueError, TypeError, KeyError, AttributeError):
            return Listing(None, None)

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> Fetched:
        return self._fetcher.fetch(f"{self.base}/{repo}/{path}", part, expected, progress, resumed)


def _hashes_listing(data: dict) -> dict[str, Remote]:
    """A ``.zoo-hashes.json`` -> its claims, each in the form `zoo mirror pull` writes (else ``ValueError``)."""
    return {p: Remote(p, _size(v["size"]), _hex(v["sha256"], 64), authority="hashes-file") for p, v in data.items()}


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
                files.update(_hashes_listing(_json(hashes.read_text())))
            except (ValueError, TypeError, KeyError, AttributeError):
                raise FetchError(f"{hashes} is corrupt") from None
        return Listing(None, files)

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> Fetched:
        return Fetched(copy_file(self.repo_dir(repo) / path, part, expected, progress))


def hf_cached(repo: str, revision: str, path: str) -> Path | None:
    """The user's Hugging Face cache copy of a file (downloaded earlier by transformers or huggingface_hub). The
    lookup is huggingface_hub's; a repo with no folder in the cache (``models--ORG--NAME``) has nothing there, which
    spares a download the ~0.2 s of importing huggingface_hub's file module."""
    from zoo import config

    cache = config.hf_cache_dir()
    if not (cache / f"models--{repo.replace('/', '--')}").is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, path, revision=revision, cache_dir=cache)
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
    endpoint = endpoint or config.hf_endpoint()  # checked before the token lookup imports huggingface_hub, which parses it
    return [HttpMirror(m, limits) for m in (mirrors if mirrors is not None else config.mirrors())] + [
        HubSource(endpoint, token if token is not None else config.hf_token(), limits)]
