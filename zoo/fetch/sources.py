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
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import FetchError
from zoo.fetch.hashing import Expected, StreamHash
from zoo.fetch.transfer import BACKOFF_S, RETRIES, HttpFetcher, Progress, _noop, copy_file

HASHES_FILE = ".zoo-hashes.json"  # written by `zoo mirror pull`: {path: {"sha256": ..., "size": ...}}


@dataclass(frozen=True)
class Remote:
    """A file as a source describes it; ``None`` where the source does not say."""

    path: str
    size: int | None = None
    sha256: str | None = None
    git_oid: str | None = None


@dataclass(frozen=True)
class Listing:
    commit: str | None
    files: dict[str, Remote] | None  # None: the source cannot list (a plain HTTP mirror)


class Source(ABC):
    kind: str
    label: str
    remote = True

    @abstractmethod
    def listing(self, repo: str, revision: str) -> Listing: ...

    @abstractmethod
    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> StreamHash: ...


class HubSource(Source):
    kind = "hub"

    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        from zoo import config

        self.endpoint = (endpoint or config.hf_endpoint()).rstrip("/")
        self.token = token
        self.label = self.endpoint
        self._fetcher: HttpFetcher | None = None

    def _headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token, library_name="obert-zoo")

    def listing(self, repo: str, revision: str) -> Listing:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        api = HfApi(endpoint=self.endpoint, token=self.token, library_name="obert-zoo")
        for attempt in range(RETRIES + 1):
            try:
                info = api.model_info(repo, revision=revision, files_metadata=True)
                break
            except RevisionNotFoundError:
                raise FetchError(f"{self.label}: {repo} has no revision '{revision}'") from None
            except RepositoryNotFoundError:
                raise FetchError(f"{self.label}: repository {repo} not found", "private or gated? set HF_TOKEN") from None
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status < 500 or attempt == RETRIES:
                    raise FetchError(f"{self.label}: listing {repo} failed: HTTP {status}") from None
            except Exception as exc:  # httpx connect/timeout errors: the endpoint is unreachable
                if attempt == RETRIES or not _is_network_error(exc):
                    raise FetchError(f"{self.label}: cannot reach the Hub ({type(exc).__name__})") from None
            time.sleep(min(8.0, BACKOFF_S * 2**attempt))
        files = {s.rfilename: Remote(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None, None if s.lfs else s.blob_id)
                 for s in info.siblings or []}
        return Listing(commit=info.sha, files=files)

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> StreamHash:
        from huggingface_hub import hf_hub_url

        self._fetcher = self._fetcher or HttpFetcher(headers=self._headers())
        url = hf_hub_url(repo, path, revision=revision, endpoint=self.endpoint)
        return self._fetcher.fetch(url, part, expected, progress, resumed)


def _is_network_error(exc: Exception) -> bool:
    name = type(exc).__name__
    return isinstance(exc, OSError) or any(k in name for k in ("Connect", "Timeout", "Network", "Protocol", "Read"))


class HttpMirror(Source):
    """A plain web server holding ``<base>/<repo>/<path>`` (what `zoo mirror pull` lays out); no listing."""

    kind = "mirror"

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.label = self.base
        self._fetcher = HttpFetcher()

    def listing(self, repo: str, revision: str) -> Listing:
        url = f"{self.base}/{repo}/{HASHES_FILE}"
        try:
            resp = self._fetcher.session.get(url, timeout=10)
        except Exception as exc:  # noqa: BLE001  (requests' connection errors)
            raise FetchError(f"{self.label}: unreachable ({type(exc).__name__})") from None
        if resp.status_code != 200:
            return Listing(None, None)
        try:
            return Listing(None, _hashes_listing(resp.json()))
        except (ValueError, TypeError, KeyError):
            return Listing(None, None)

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> StreamHash:
        return self._fetcher.fetch(f"{self.base}/{repo}/{path}", part, expected, progress, resumed)


def _hashes_listing(data: dict) -> dict[str, Remote]:
    return {p: Remote(p, int(v["size"]), str(v["sha256"])) for p, v in data.items()}


class LocalDir(Source):
    """``--from DIR``: DIR is a repo (holds config.json) or a tree of ``<org>/<repo>/`` repos."""

    kind = "local"
    remote = False

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

    def listing(self, repo: str, revision: str) -> Listing:
        base = self.repo_dir(repo)
        files = {str(p.relative_to(base)): Remote(str(p.relative_to(base)), p.stat().st_size)
                 for p in base.rglob("*") if p.is_file() and p.name != HASHES_FILE}
        hashes = base / HASHES_FILE
        if hashes.exists():
            try:
                files.update(_hashes_listing(json.loads(hashes.read_text())))
            except (ValueError, TypeError, KeyError):
                raise FetchError(f"{hashes} is corrupt") from None
        return Listing(None, files)

    def fetch(self, repo: str, revision: str, path: str, part: Path, expected: Expected,
              progress: Progress = _noop, resumed: Progress = _noop) -> StreamHash:
        return copy_file(self.repo_dir(repo) / path, part, expected, progress)


def hf_cached(repo: str, revision: str, path: str) -> Path | None:
    """The user's Hugging Face cache copy of a file (downloaded earlier by transformers or huggingface_hub)."""
    from huggingface_hub import try_to_load_from_cache

    from zoo import config

    found = try_to_load_from_cache(repo, path, revision=revision, cache_dir=config.hf_cache_dir())
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def default_sources(mirrors: list[str] | None = None) -> list[Source]:
    """``--mirror`` URLs (or ``ZOO_MIRRORS``) in order, then the Hub at ``HF_ENDPOINT``."""
    from zoo import config

    return [HttpMirror(m) for m in (mirrors if mirrors is not None else config.mirrors())] + [HubSource(token=config.hf_token())]
