"""The real ``zoo serve`` in a subprocess on 127.0.0.1 (port 0), and the synthetic repos it serves."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.fetch.conftest import mirror, mirror_tree  # noqa: F401  (the local Hub mirror fixtures)
from tests.pipelines.conftest import mnli_repo, qa_repo  # noqa: F401  (shared synthetic repos)


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    log: list[str] = field(default_factory=list)

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("http://")

    def get(self, path: str, **kw) -> requests.Response:  # noqa: ANN003
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:  # noqa: ANN003
        return requests.post(self.url + path, timeout=60, **kw)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stderr(self) -> str:
        return "".join(self.log)


class HeldRequest:
    """A JSON POST sent all but its body's last byte: the server holds it in flight, deterministically, until ``answer``."""

    def __init__(self, url: str, path: str, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        where = urlsplit(url)
        self.conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
        self.conn.putrequest("POST", path)
        self.conn.putheader("Content-Type", "application/json")
        self.conn.putheader("Content-Length", str(len(body)))
        self.conn.endheaders(body[:-1])
        self.rest = body[-1:]

    def answer(self, send_rest: bool = True) -> tuple[int, Any]:
        """The status and JSON body, after sending the last byte (or without it: what the server says to a request it cuts)."""
        if send_rest:
            self.conn.send(self.rest)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())


def start_server(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> Served:
    """Start ``zoo serve ARGS --port 0`` and wait for its ready banner (stdout, flushed)."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "serve", *args, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("zoo serve: ready at "):
            url = line.split(" ready at ", 1)[1].split(": ", 1)[0].strip()
            return Served(proc, url, log)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"zoo serve did not become ready: rc={proc.poll()} stdout={line!r} stderr={''.join(log)[-3000:]}")


@pytest.fixture(scope="module")
def qa_server(qa_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:  # noqa: F811
    home = str(tmp_path_factory.mktemp("serve-home"))
    served = start_server(str(qa_repo), "--threads", "1", "--max-wait-ms", "30", env={"ZOO_HOME": home})
    yield served
    served.stop()


@pytest.fixture(scope="module")
def clf_server(mnli_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:  # noqa: F811
    home = str(tmp_path_factory.mktemp("serve-home"))
    served = start_server(str(mnli_repo), "--threads", "1", env={"ZOO_HOME": home})
    yield served
    served.stop()
