"""Moving bytes into a partial file: HTTP(S) with Range resume, retries and backoff, or a local copy.

Both hash as bytes arrive (``StreamHash``), so a completed file is verified without a second read.
A partial file only grows by appends of bytes the server sent for exactly that offset; a server that
ignores Range restarts it from zero. Disk errors become ``DiskFullError`` with the partial file kept.
"""

from __future__ import annotations

import email.utils
import errno
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from zoo.errors import DiskFullError, FetchError, RemoteNotFoundError
from zoo.fetch.hashing import CHUNK, Expected, StreamHash
from zoo.fetch.progress import status

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
HEX_DIGITS = {64: re.compile(r"[0-9a-f]{64}"), 40: re.compile(r"[0-9a-f]{40}")}  # a sha256, a git blob (or commit) id


@dataclass(frozen=True)
class Limits:
    """How hard a transfer tries and how long it may take; ``from_config()`` reads the ``ZOO_*`` variables now.

    A server cannot park the client: ``Retry-After`` is capped at ``max_retry_after`` seconds, all waiting between
    retries of one file at ``retry_budget``, and a body that moves fewer than ``min_rate`` bytes/s over
    ``stall_timeout`` seconds is dropped and resumed (a trickle never trips a per-read timeout)."""

    retries: int = 5
    backoff: float = 0.25
    read_timeout: float = 60.0
    max_retry_after: float = 60.0
    retry_budget: float = 600.0
    stall_timeout: float = 30.0
    min_rate: float = 1024.0
    lock_timeout: float = 900.0
    max_api_bytes: int = 64 * 2**20

    @classmethod
    def from_config(cls) -> Limits:
        from zoo import config

        return cls(**{k: type(getattr(cls, k))(v) for k, v in config.fetch_limits().items()})

    def backoff_wait(self, failures: int) -> float:
        return min(8.0, self.backoff * 2 ** max(0, failures - 1))

    def retry_after(self, header: str | None, now: float | None = None) -> float | None:
        """Seconds a ``Retry-After`` header asks for (delta or HTTP date), capped at ``max_retry_after``."""
        value = (header or "").strip()
        if not value:
            return None
        if value.isdigit():
            wait = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            wait = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, min(wait, self.max_retry_after))


@dataclass(frozen=True)
class Fetched:
    """A completed transfer: its running hash, and the hash the response's own headers claim (if any)."""

    hash: StreamHash
    header_sha256: str | None = None
    header_git_oid: str | None = None


def etag_claim(tag: str | None) -> tuple[str | None, str | None]:
    """(sha256, git blob id) an ETag-like value names: 64 hex digits a sha256, 40 a git blob id, else nothing."""
    value = (tag or "").strip().removeprefix("W/").strip('"').lower()
    if HEX_DIGITS[64].fullmatch(value):
        return value, None
    return (None, value) if HEX_DIGITS[40].fullmatch(value) else (None, None)


def header_claims(responses: Iterable[Any]) -> tuple[str | None, str | None]:
    """The content hash a Hub-style response chain vouches for, read as huggingface_hub reads it: ``X-Linked-Etag``
    (an LFS file's sha256, on the Hub's own redirect) first, else the first response's ``ETag`` (a sha256, or a
    small file's git blob id). Anything that is not 64 or 40 hex digits (e.g. a CDN's ETag) says nothing."""
    chain = list(responses)
    tags = [r.headers.get("X-Linked-Etag") for r in chain] + [chain[0].headers.get("ETag") if chain else None]
    return next((c for c in map(etag_claim, tags) if any(c)), (None, None))


def redact(url: str) -> str:
    """``url`` as it may be printed or recorded: a password in it (``http://user:pass@host``) shown as ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:  # not a URL urllib can split (a bad port, a broken IPv6 literal): nothing to find
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"))


def late(what: str, within: float) -> FetchError:
    """The error for an answer (``what``) that took longer than ``within`` seconds in all."""
    return FetchError(f"{what} took longer than {within:g} s to arrive; refused",
                      "the server is too slow or stalling; raise ZOO_READ_TIMEOUT if it is only slow")


def get_within(session: Any, url: str, within: float, **kwargs: Any) -> Any:
    """``session.get(url, stream=True, **kwargs)`` whose status line and headers have arrived ``within`` seconds, or
    ``TimeoutError``: a server dripping them a byte at a time never trips a per-read timeout. The request runs on a
    daemon thread; a late one is left to end on its own and its response is closed. A ``Location`` urllib cannot
    parse (``ValueError``) is raised as ``requests.exceptions.InvalidURL``, as requests raises other bad URLs."""
    import requests

    outcome: list[Any] = []
    guard = threading.Lock()
    abandoned = threading.Event()

    def run() -> None:
        try:
            got: Any = session.get(url, stream=True, **kwargs)
        except requests.RequestException as exc:
            got = exc
        except ValueError as exc:
            got = requests.exceptions.InvalidURL(str(exc))
        except BaseException as exc:  # noqa: BLE001  (handed to the calling thread)
            got = exc
        with guard:
            if abandoned.is_set():
                if not isinstance(got, BaseException):
                    got.close()
                return
            outcome.append(got)

    worker = threading.Thread(target=run, daemon=True, name="zoo-http-head")
    worker.start()
    worker.join(within)
    with guard:
        if not outcome:
            abandoned.set()
            raise TimeoutError(f"no answer within {within:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


Progress = Callable[[int], None]


def _noop(_: int) -> None:
    pass


def disk_error(exc: OSError, target: Path) -> DiskFullError | None:
    if exc.errno not in DISK_ERRNOS:
        return None
    free = shutil.disk_usage(target.parent).free
    return DiskFullError(f"no space left writing {target} ({free / 1e6:.1f} MB free)",
                         "free some space or set ZOO_HOME to a bigger disk; the partial download is kept and resumes")


def _write(fh: Any, data: bytes, part: Path) -> None:
    try:
        fh.write(data)
    except OSError as exc:
        raise (disk_error(exc, part) or exc) from None


def resume_hash(part: Path, expected: Expected, progress: Progress = _noop) -> StreamHash:
    """The running hash over what a partial file already holds (truncated when longer than expected)."""
    h = expected.stream()
    if part.exists():
        if expected.size is not None and part.stat().st_size > expected.size:
            os.truncate(part, 0)
        h.feed_file(part, progress=progress)
    return h


def copy_file(src: Path, part: Path, expected: Expected, progress: Progress = _noop) -> StreamHash:
    """Copy a local file into ``part`` while hashing it."""
    h = expected.stream()
    try:
        with open(src, "rb") as fin, open(part, "wb") as fout:
            while data := fin.read(CHUNK):
                _write(fout, data, part)
                h.update(data)
                progress(len(data))
    except FileNotFoundError:
        raise FetchError(f"{src} does not exist") from None
    return h


class Sink:
    """Appends chunks to a file and feeds them to a hash on two worker threads, so receiving, writing and
    hashing overlap (each releases the GIL). Leaving the ``with`` block waits for both; a write error is
    re-raised in the receiving thread. Memory is bounded by the queue depth (``DEPTH`` chunks)."""

    DEPTH = 32

    def __init__(self, part: Path, h: StreamHash) -> None:
        import queue
        import threading

        self.part, self.h = part, h
        self.error: BaseException | None = None
        self.queues: list[queue.Queue] = [queue.Queue(self.DEPTH), queue.Queue(self.DEPTH)]
        self.fh = open(part, "ab")  # noqa: SIM115  (closed in __exit__ after the writer thread is done)
        self.threads = [threading.Thread(target=self._run, args=(q, fn), daemon=True)
                        for q, fn in zip(self.queues, (self._write, h.update), strict=True)]
        for t in self.threads:
            t.start()

    def _write(self, data: bytes) -> None:
        _write(self.fh, data, self.part)

    def _run(self, q: Any, fn: Callable[[bytes], None]) -> None:
        while (data := q.get()) is not None:
            if self.error is None:
                try:
                    fn(data)
                except BaseException as exc:  # noqa: BLE001  (handed to the receiving thread)
                    self.error = exc

    def put(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        for q in self.queues:
            q.put(data)

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        for q in self.queues:
            q.put(None)
        for t in self.threads:
            t.join()
        self.fh.close()
        if self.error is not None and exc[0] is None:
            raise self.error


class HttpFetcher:
    """GETs one URL into a partial file, resuming with Range after drops and retrying 5xx with backoff, within
    ``Limits`` (capped Retry-After, a total wait budget, a minimum throughput)."""

    def __init__(self, session: Any = None, headers: Mapping[str, str] | None = None, limits: Limits | None = None) -> None:
        import requests

        self.session = session or requests.Session()
        self.headers = dict(headers or {})
        self.limits = limits or Limits.from_config()

    def fetch(self, url: str, part: Path, expected: Expected, progress: Progress = _noop, resumed: Progress = _noop) -> Fetched:
        h = resume_hash(part, expected, resumed)
        failures, waited = 0, 0.0
        claims: tuple[str | None, str | None] = (None, None)
        while True:
            if expected.size is not None and h.size == expected.size:
                return Fetched(h, *claims)
            try:
                done, said = self._attempt(url, part, h, progress)
                claims = said if any(said) else claims
            except _Retry as why:
                failures = 0 if why.progressed else failures + 1
                wait = why.wait if why.wait is not None else self.limits.backoff_wait(failures)
                if failures > self.limits.retries or waited + wait > self.limits.retry_budget:
                    spent = f"{self.limits.retries} retries" if failures > self.limits.retries else f"{waited:.0f} s of waiting"
                    raise FetchError(f"{redact(url)}: {why.reason} (gave up after {spent})",
                                     "check the source; rerun to resume from the partial download", status=why.status) from None
                status(f"retry {failures or 1}/{self.limits.retries} in {wait:.1f} s: {why.reason} ({redact(url)})")
                time.sleep(wait)
                waited += wait
                if why.restart:
                    h = expected.stream()
                    os.truncate(part, 0)
                continue
            if done:
                return Fetched(h, *claims)

    def _attempt(self, url: str, part: Path, h: StreamHash, progress: Progress) -> tuple[bool, tuple[str | None, str | None]]:
        import requests
        import urllib3

        offset, shown, within = h.size, redact(url), self.limits.read_timeout
        headers = {**self.headers, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = get_within(self.session, url, within, headers=headers, timeout=(10.0, within))
        except TimeoutError:
            raise _Retry(f"no status line and headers within {within:g} s") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retry(f"connection failed: {type(exc).__name__}") from None
        except requests.TooManyRedirects:
            raise FetchError(f"{shown}: redirect loop (more than {self.session.max_redirects} redirects)",
                             "the server is misconfigured; try another --mirror") from None
        except requests.RequestException as exc:  # a redirect to file://, a malformed Location, ...
            reason = str(exc).splitlines()[0] if str(exc) else ""
            raise FetchError(f"{shown}: refused to follow the server's answer ({type(exc).__name__}: {reason})",
                             "the server redirected somewhere zoo does not fetch from; try another --mirror") from None
        with resp:
            status = resp.status_code
            if status in RETRY_STATUS:
                raise _Retry(f"HTTP {status}", wait=self.limits.retry_after(resp.headers.get("Retry-After")), status=status)
            if status == 416 and offset:
                total = resp.headers.get("Content-Range", "").rpartition("/")[2]
                if total.isdigit() and int(total) == offset:
                    return True, (None, None)
                raise _Retry("HTTP 416 for a resume offset", restart=True, status=status)
            if status in (401, 403):
                raise FetchError(f"{shown}: HTTP {status} (access denied)", "set HF_TOKEN to a token that can read this repo",
                                 status=status)
            if status == 404:
                raise RemoteNotFoundError(f"{shown}: HTTP 404 (not at this source)", status=status)
            if status not in (200, 206):  # a 204, or a 3xx without a Location: its body is not the file
                raise FetchError(f"{shown}: HTTP {status}", status=status)
            if offset and status == 200:
                raise _Retry("server ignored the Range request", restart=True, wait=0)
            if status == 206 and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise _Retry(f"server answered a different range ({resp.headers.get('Content-Range')})", restart=True)
            length = resp.headers.get("Content-Length")
            want = int(length) if length and length.isdigit() else None
            got = 0
            try:
                with Sink(part, h) as sink:
                    got = self._receive(resp, sink, progress)
            except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                raise _Retry(f"connection dropped after {h.size} bytes ({type(exc).__name__})", progressed=h.size > offset) from None
            if want is not None and got < want:
                raise _Retry(f"connection closed after {h.size} bytes", progressed=got > 0)
            return True, header_claims([*resp.history, resp])

    def _receive(self, resp: Any, sink: Sink, progress: Progress) -> int:
        """Copy the body into ``sink``; a body slower than ``min_rate`` over ``stall_timeout`` is dropped (resumed)."""
        got = window_bytes = 0
        window_start = time.monotonic()
        # read1: whatever has arrived (up to CHUNK), so the partial file follows the network closely
        while data := resp.raw.read1(CHUNK, decode_content=False):
            sink.put(data)
            got += len(data)
            window_bytes += len(data)
            progress(len(data))
            elapsed = time.monotonic() - window_start
            if elapsed >= self.limits.stall_timeout:
                if window_bytes < self.limits.min_rate * elapsed:
                    raise _Retry(f"stalled: {window_bytes} bytes in {elapsed:.0f} s (below ZOO_MIN_RATE={self.limits.min_rate:g} B/s)")
                window_start, window_bytes = time.monotonic(), 0
        return got


class _Retry(Exception):
    def __init__(self, reason: str, *, progressed: bool = False, restart: bool = False, wait: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.progressed, self.restart, self.wait, self.status = reason, progressed, restart, wait, status
