"""A local Hub-compatible mirror (``zoo mirror serve``'s server) that can misbehave on purpose, serving
small synthetic oBERT repos named like the catalog's, plus helpers that read what it served."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from zoo.catalog import resolve
from zoo.fetch.mirror import FileInfo, Handler, MirrorHTTPServer
from zoo.fetch.sources import HASHES_FILE
from zoo.synth import SynthSpec, write_repo

MODEL = "obert-3l-80-quant"
SMALL = dict(hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128)


@dataclass
class Faults:
    """What the server does wrong. Counters record what it actually sent."""

    fail_first: int = 0  # answer this many file GETs with HTTP 500 first
    drop_after: dict[str, int] = field(default_factory=dict)  # path suffix -> close the connection after N body bytes (once)
    flip: dict[str, int] = field(default_factory=dict)  # path suffix -> serve with one bit flipped this many times (-1: always)
    delay: float = 0.0  # seconds between 16 KiB pieces of a body (a slow link)
    bare_listing: bool = False  # /api/models listings carry no lfs.sha256 and no blobId
    hash_headers: bool = True  # file responses carry ETag / X-Linked-Etag content hashes
    hashes_file: bool = True  # serve .zoo-hashes.json (False: a plain web server)
    answer: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)  # file -> always this status and headers
    trickle: float = 0.0  # seconds between single bytes of a body (a server that never quite stops)
    listing_padding: int = 0  # bytes of junk added to every /api/models listing
    body_bytes: Counter = field(default_factory=Counter)  # file name -> body bytes sent
    gets: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header) of each file GET
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def faulty_handler(faults: Faults) -> type[Handler]:
    class Faulty(Handler):
        def route(self, head: bool) -> None:
            if not faults.hashes_file and self.path.split("?")[0].endswith(HASHES_FILE):
                return self.error(404, "not here", "EntryNotFound")  # type: ignore[arg-type]
            return super().route(head)

        def send_json(self, value: Any, head: bool) -> None:
            if isinstance(value, dict) and "siblings" in value:
                if faults.bare_listing:
                    value = {**value, "siblings": [{"rfilename": s["rfilename"], "size": s["size"]} for s in value["siblings"]]}
                if faults.listing_padding:
                    value = {**value, "padding": "x" * faults.listing_padding}
            return super().send_json(value, head)

        def send_header(self, keyword: str, value: str) -> None:
            if faults.hash_headers or keyword not in ("ETag", "X-Linked-Etag"):
                super().send_header(keyword, value)

        def serve_file(self, repo_dir: Path, rel: str, head: bool) -> None:
            if rel in faults.answer:
                status, headers = faults.answer[rel]
                with faults.lock:
                    faults.gets.append((rel, self.headers.get("Range")))
                    faults.statuses[status] += 1
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if not head:
                with faults.lock:
                    faults.gets.append((rel, self.headers.get("Range")))
                    fail = faults.fail_first > 0
                    faults.fail_first -= fail
                if fail:
                    faults.statuses[500] += 1
                    return self.error(500, "injected failure", "Internal")
            return super().serve_file(repo_dir, rel, head)

        def send_body(self, fh: Any, start: int, length: int, info: FileInfo) -> None:
            name = info.path
            fh.seek(start)
            data = bytearray(fh.read(length))
            with faults.lock:
                drop = faults.drop_after.pop(name, None)
                flips = faults.flip.get(name, 0)
                if flips:
                    faults.flip[name] = flips - 1 if flips > 0 else flips
            if flips:
                data[len(data) // 2] ^= 0x10
            limit = len(data) if drop is None else min(drop, len(data))
            sent = 0
            if faults.trickle:
                for i in range(limit):
                    self.wfile.write(bytes(data[i:i + 1]))
                    self.wfile.flush()
                    time.sleep(faults.trickle)
                return
            while sent < limit:
                piece = bytes(data[sent:min(limit, sent + 16384)])
                self.wfile.write(piece)
                sent += len(piece)
                with faults.lock:
                    faults.body_bytes[name] += len(piece)
                if faults.delay:
                    time.sleep(faults.delay)
            if drop is not None:
                self.close_connection = True
                self.request.shutdown(2)

    return Faulty


@dataclass
class Mirror:
    root: Path
    url: str
    faults: Faults
    server: MirrorHTTPServer

    def repo_dir(self, name: str = MODEL) -> Path:
        return self.root / resolve(name).repo

    def sha256(self, name: str, path: str) -> str:
        return hashlib.sha256((self.repo_dir(name) / path).read_bytes()).hexdigest()

    def size(self, name: str, path: str) -> int:
        return (self.repo_dir(name) / path).stat().st_size

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def mirror_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic repos at the catalog's repo ids: a 3-layer block4 QAT model and a 3-layer 90% unstructured one."""
    root = tmp_path_factory.mktemp("mirror")
    write_repo(root / resolve(MODEL).repo, SynthSpec(layers=3, sparsity=80, pattern="block4", qat=True, **SMALL))
    write_repo(root / resolve("obert-3l-90").repo, SynthSpec(layers=3, sparsity=90, pattern="unstructured", seed=1, **SMALL))
    return root


def start_mirror(root: Path) -> Mirror:
    faults = Faults()
    server = MirrorHTTPServer(root, handler=faulty_handler(faults)).start()
    return Mirror(root, server.url, faults, server)


@pytest.fixture
def mirror(mirror_tree: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The mirror on 127.0.0.1, with HF_ENDPOINT pointing at it (the CLI subprocesses inherit it)."""
    m = start_mirror(mirror_tree)
    monkeypatch.setenv("HF_ENDPOINT", m.url)
    yield m
    m.stop()


@pytest.fixture
def private_tree(mirror_tree: Path, tmp_path: Path) -> Path:
    """A copy of the mirror tree that a test may modify."""
    import shutil

    dst = tmp_path / "tree"
    shutil.copytree(mirror_tree, dst)
    return dst
