"""Moving bytes into a partial file: HTTP(S) with Range resume, retries and backoff, or a local copy.

Both hash as bytes arrive (``StreamHash``), so a completed file is verified without a second read.
A partial file only grows by appends of bytes the server sent for exactly that offset; a server that
ignores Range restarts it from zero. Disk errors become ``DiskFullError`` with the partial file kept.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zoo.errors import DiskFullError, FetchError
from zoo.fetch.hashing import CHUNK, Expected, StreamHash

RETRIES = int(os.environ.get("ZOO_RETRIES", "5"))
BACKOFF_S = float(os.environ.get("ZOO_RETRY_BACKOFF", "0.25"))
TIMEOUT = (10.0, float(os.environ.get("ZOO_READ_TIMEOUT", "60")))
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

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
    """GETs one URL into a partial file, resuming with Range after drops and retrying 5xx with backoff."""

    def __init__(self, session: Any = None, headers: Mapping[str, str] | None = None, retries: int = RETRIES) -> None:
        import requests

        self.session = session or requests.Session()
        self.headers = dict(headers or {})
        self.retries = retries

    def fetch(self, url: str, part: Path, expected: Expected, progress: Progress = _noop, resumed: Progress = _noop) -> StreamHash:
        h = resume_hash(part, expected, resumed)
        failures = 0
        while True:
            if expected.size is not None and h.size == expected.size:
                return h
            try:
                done = self._attempt(url, part, h, progress)
            except _Retry as why:
                failures = 0 if why.progressed else failures + 1
                if failures > self.retries:
                    raise FetchError(f"{url}: {why.reason} (gave up after {self.retries} retries)",
                                     "check the source; rerun to resume from the partial download") from None
                time.sleep(why.wait if why.wait is not None else min(8.0, BACKOFF_S * 2 ** (failures - 1)))
                if why.restart:
                    h = expected.stream()
                    os.truncate(part, 0)
                continue
            if done:
                return h

    def _attempt(self, url: str, part: Path, h: StreamHash, progress: Progress) -> bool:
        import requests
        import urllib3

        offset = h.size
        headers = {**self.headers, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = self.session.get(url, headers=headers, stream=True, timeout=TIMEOUT)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retry(f"connection failed: {type(exc).__name__}") from None
        with resp:
            status = resp.status_code
            if status in RETRY_STATUS:
                retry_after = resp.headers.get("Retry-After", "")
                raise _Retry(f"HTTP {status}", wait=float(retry_after) if retry_after.isdigit() else None)
            if status == 416 and offset:
                total = resp.headers.get("Content-Range", "").rpartition("/")[2]
                if total.isdigit() and int(total) == offset:
                    return True
                raise _Retry("HTTP 416 for a resume offset", restart=True)
            if status in (401, 403):
                raise FetchError(f"{url}: HTTP {status} (access denied)", "set HF_TOKEN to a token that can read this repo")
            if status == 404:
                raise FetchError(f"{url}: HTTP 404 (not at this source)")
            if status >= 400:
                raise FetchError(f"{url}: HTTP {status}")
            if offset and status == 200:
                raise _Retry("server ignored the Range request", restart=True, wait=0)
            if status == 206 and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise _Retry(f"server answered a different range ({resp.headers.get('Content-Range')})", restart=True)
            length = resp.headers.get("Content-Length")
            want = int(length) if length and length.isdigit() else None
            got = 0
            try:
                with Sink(part, h) as sink:
                    # read1: whatever has arrived (up to CHUNK), so the partial file follows the network closely
                    while data := resp.raw.read1(CHUNK, decode_content=False):
                        sink.put(data)
                        got += len(data)
                        progress(len(data))
            except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                raise _Retry(f"connection dropped after {h.size} bytes ({type(exc).__name__})", progressed=got > 0) from None
            if want is not None and got < want:
                raise _Retry(f"connection closed after {h.size} bytes", progressed=got > 0)
            return True


class _Retry(Exception):
    def __init__(self, reason: str, *, progressed: bool = False, restart: bool = False, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.progressed, self.restart, self.wait = reason, progressed, restart, wait
