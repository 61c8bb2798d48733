"""`zoo mirror serve` against hostile clients and planted files: it serves the repos' files and nothing else,
answers every request (never a traceback), and no client can hold its threads or connections."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.fetch.conftest import MODEL
from zoo.catalog import resolve
from zoo.fetch.httpserver import Limits
from zoo.fetch.mirror import MirrorHTTPServer, serve

REPO = resolve(MODEL).repo
SECRET = "hf_SECRET_TOKEN_do_not_serve"
BIG = "big.bin"  # 32 MiB: more than loopback socket buffers hold, so a client that stops reading stalls the server


@pytest.fixture(scope="module")
def hostile_tree(tmp_path_factory: pytest.TempPathFactory, mirror_tree: Path) -> Path:
    """The mirror tree with secrets planted where a careless server would serve them."""
    root = tmp_path_factory.mktemp("hostile") / "tree"
    shutil.copytree(mirror_tree, root)
    repo = root / REPO
    for rel in (".git/config", ".env", "sub/.hidden/token.txt", ".cache/huggingface/token"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(f"[remote]\n url = https://user:{SECRET}@example.org/x\n")
    (repo / "sub" / "notes.txt").write_text("a plain file in a subfolder\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text(SECRET)
    (root / ".hidden-repo").mkdir()
    (root / ".hidden-repo" / "config.json").write_text("{}")
    (root.parent / "outside.txt").write_text(SECRET)
    (repo / "escape.txt").symlink_to(root.parent / "outside.txt")
    (repo / "env-link.txt").symlink_to(repo / ".env")  # inside the repo, but a dot-file under another name
    (repo / "loop.txt").symlink_to(repo / "loop.txt")
    (repo / "outdir").symlink_to(root.parent, target_is_directory=True)
    with open(repo / BIG, "wb") as fh:
        fh.truncate(32 << 20)
    return root


@dataclass
class Served:
    """A `zoo mirror serve` subprocess; its stderr goes to a file the tests read."""

    url: str
    stderr: Path
    proc: subprocess.Popen
    mark: int = 0

    def log(self) -> str:
        """What the server wrote to stderr since the current test began."""
        return self.stderr.read_text()[self.mark:]


@pytest.fixture
def served(server_process: Served) -> Served:
    server_process.mark = len(server_process.stderr.read_text())
    return server_process


@pytest.fixture(scope="module")
def server_process(hostile_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`zoo mirror serve TREE --port 0` with stdout and stderr to files, as a script would start it."""
    logs = tmp_path_factory.mktemp("served")
    out, err = logs / "stdout", logs / "stderr"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "zoo", "mirror", "serve", str(hostile_tree), "--port", "0"],
                                stdout=fo, stderr=fe, env={**os.environ, "PYTHONUNBUFFERED": ""})
    try:
        url = _banner_url([out, err], proc)
        yield Served(url, err, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _banner_url(files: list[Path], proc: subprocess.Popen, within: float = 60.0) -> str:
    """The URL from the first 'serving ... at URL' line in any of ``files``, while the server keeps running."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for f in files:
            for line in f.read_text().splitlines():
                if line.startswith("serving ") and " at http://" in line:
                    return line.rsplit(" at ", 1)[1].strip()
        assert proc.poll() is None, f"the server exited: {[f.read_text() for f in files]}"
        time.sleep(0.05)
    raise AssertionError(f"no banner within {within}s: {[f.read_text() for f in files]}")


def raw(url: str, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` as is on a new connection and read the whole answer (the server closes after it)."""
    host = urlsplit(url)
    with socket.create_connection((host.hostname, host.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- dot-files, symlinks, traversal ------------------------------------------------------------------------------
def test_the_banner_reaches_a_script_and_its_port_serves(served, hostile_tree):
    """A script starts the server with --port 0 and output to files, reads the port from the banner, and fetches."""
    port = urlsplit(served.url).port
    assert port and port != 8808
    got = requests.get(f"http://127.0.0.1:{port}/{REPO}/resolve/main/config.json", timeout=10)
    assert got.status_code == 200 and got.content == (hostile_tree / REPO / "config.json").read_bytes()


def test_listings_name_no_dot_files_nor_symlinks_that_leave(served, monkeypatch):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=served.url)
    names = api.list_repo_files(REPO)
    assert "config.json" in names and "sub/notes.txt" in names
    info = api.model_info(REPO, files_metadata=True)
    listed = names + [s.rfilename for s in info.siblings]
    listed += [f["path"] for f in requests.get(f"{served.url}/api/models/{REPO}/tree/main", timeout=10).json()]
    listed += list(requests.get(f"{served.url}/{REPO}/.zoo-hashes.json", timeout=10).json())
    for name in listed:
        assert not any(part.startswith(".") for part in name.split("/")), name
        assert name not in ("escape.txt", "env-link.txt", "loop.txt") and not name.startswith("outdir/"), name
    assert requests.get(f"{served.url}/api/models/{REPO}/tree/main/.git", timeout=10).json() == []
    assert requests.get(f"{served.url}/api/models/.hidden-repo", timeout=10).status_code == 404
    assert "Traceback" not in served.log()


@pytest.mark.parametrize("path", [
    "/{repo}/.git/config", "/{repo}/resolve/main/.git/config", "/{repo}/resolve/main/.env", "/{repo}/.env",
    "/{repo}/resolve/main/%2egit/config", "/{repo}/resolve/main/%2Eenv", "/{repo}/resolve/main/%2e%65nv",
    "/{repo}/resolve/main/sub/.hidden/token.txt", "/{repo}/resolve/main/sub%2f.hidden%2ftoken.txt",
    "/{repo}/resolve/main/.cache/huggingface/token", "/.git/config", "/%2egit/config",
    "/{repo}/resolve/main/escape.txt", "/{repo}/resolve/main/env-link.txt", "/{repo}/resolve/main/outdir/outside.txt",
    "/{repo}/resolve/main/outdir/tree/.git/config", "/{repo}/resolve/main/loop.txt", "/{repo}/loop.txt",
    "/{repo}/resolve/main/../../../outside.txt", "/{repo}/resolve/main/%2e%2e/%2e%2e/%2e%2e/outside.txt",
    "/{repo}/resolve/main/..%2f..%2f..%2foutside.txt", "/{repo}/resolve/main/%252e%252e/outside.txt",
    "/{repo}/resolve/main//etc/passwd", "/{repo}/resolve/main/%2fetc%2fpasswd", "//etc/passwd",
    "/{repo}/resolve/main/sub\\..\\..\\outside.txt", "/{repo}/resolve/main/config.json%00.txt",
    "http://evil/{repo}/resolve/main/.env",
])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_hidden_escaping_and_traversing_paths_are_not_served(served, path, method):
    answer = raw(served.url, f"{method} {path.format(repo=REPO)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status_of(answer) in (400, 403, 404), answer[:300]
    assert SECRET.encode() not in answer and b"root:" not in answer
    assert "Traceback" not in served.log()


def test_hf_hub_download_cannot_fetch_dot_files(served, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    for name in (".env", ".git/config", "escape.txt"):
        with pytest.raises(EntryNotFoundError):
            hf_hub_download(REPO, name, endpoint=served.url, cache_dir=tmp_path)
    assert Path(hf_hub_download(REPO, "sub/notes.txt", endpoint=served.url, cache_dir=tmp_path)).read_text().startswith("a plain")


# -- oversized and malformed requests --------------------------------------------------------------------------------
@pytest.mark.parametrize(("request_line", "headers", "expected"), [
    ("GET /{repo}/resolve/main/" + "a" * 8192 + " HTTP/1.1", "", 414),
    ("GET /" + "a" * 8192 + " HTTP/1.1", "", 414),
    ("GET /api/models/" + "a" * 8192 + " HTTP/1.1", "", 414),
    ("HEAD /{repo}/resolve/main/" + "b" * 300 + ".json HTTP/1.1", "", 414),
    ("GET /{repo}/resolve/main/" + "c/" * 5000 + "x HTTP/1.1", "", 414),
    ("GET /{repo}/resolve/main/config.json HTTP/1.1", "X-Pad: " + "p" * 70000 + "\r\n", 431),
    ("GET /{repo}/resolve/main/config.json HTTP/1.1", "".join(f"X-{i}: {'q' * 1000}\r\n" for i in range(90)), 431),
    ("GET /{repo}/resolve/main/config.json HTTP/1.1", "".join(f"X-{i}: 1\r\n" for i in range(150)), 431),
    ("GET /{repo}/resolve/main/%ff%fe.json HTTP/1.1", "", 404),
    ("GET /{repo}/resolve/main/%E2%82%AC.json HTTP/1.1", "", 404),
    ("GET /{repo}/resolve/%E2%82%AC/config.json HTTP/1.1", "", 404),
    ("GET /{repo}/resolve/main/a%0d%0aX-Injected:%20yes HTTP/1.1", "", 404),
    ("GET http://[::1/{repo}/config.json HTTP/1.1", "", 400),
    ("GET /" + "d/" * 3000 + "x HTTP/1.1", "", 404),
    ("GET /{repo}/resolve/x%0d%0aX-Injected:%20yes/config.json HTTP/1.1", "", 404),
    ("BREW /{repo}/config.json HTTP/1.1", "", 501),
    ("GET /{repo}/config.json HTTP/9.9", "", 505),
    ("GET", "", 400),
])
def test_oversized_and_malformed_requests_get_an_answer(served, request_line, headers, expected):
    answer = raw(served.url, f"{request_line.format(repo=REPO)}\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
    assert status_of(answer) == expected, answer[:300]
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nX-Injected" not in head
    assert "Traceback" not in served.log()


@pytest.mark.parametrize(("header", "status", "body"), [
    ("bytes=10-19", 206, slice(10, 20)),
    ("bytes=-10", 206, slice(-10, None)),
    ("bytes=10-", 206, slice(10, None)),
    ("bytes=0-99999999999999999999", 206, slice(0, None)),
    ("bytes=-99999999999999999999", 206, slice(0, None)),
    ("bytes=1_0-20", 200, slice(None)),  # int() would take these; they are not HTTP ranges
    ("bytes= 10 - 20", 200, slice(None)),
    ("bytes=+10-20", 200, slice(None)),
    ("bytes=0x10-", 200, slice(None)),
    ("bytes=" + "9" * 5000 + "-", 200, slice(None)),
    ("bytes=0-1,5-6", 200, slice(None)),  # several ranges: ignored, the whole file (RFC 9110 14.2)
    ("items=0-10", 200, slice(None)),
    ("bytes=abc", 200, slice(None)),
    ("bytes=20-10", 416, None),
    ("bytes=-0", 416, None),
    ("bytes=999999-", 416, None),
])
def test_range_headers_are_parsed_strictly(served, hostile_tree, header, status, body):
    data = (hostile_tree / REPO / "config.json").read_bytes()
    got = requests.get(f"{served.url}/{REPO}/resolve/main/config.json", headers={"Range": header}, timeout=10)
    assert got.status_code == status, got.headers
    if body is not None:
        assert got.content == data[body]
        if status == 206:
            part = data[body]
            start = data.index(part) if body.start is None or body.start >= 0 else len(data) - len(part)
            assert got.headers["Content-Range"] == f"bytes {start}-{start + len(part) - 1}/{len(data)}"
    else:
        assert got.headers["Content-Range"] == f"bytes */{len(data)}"
    assert "Traceback" not in served.log()


def test_head_answers_carry_no_body_and_keep_the_connection_usable(served, hostile_tree):
    host = urlsplit(served.url)
    con = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    data = (hostile_tree / REPO / "config.json").read_bytes()
    for path, status in ((f"/{REPO}/resolve/main/config.json", 200), (f"/{REPO}/resolve/main/nope", 404),
                         (f"/{REPO}/resolve/v9/config.json", 404), ("/api/models/nope/nope", 404), (f"/api/models/{REPO}", 200)):
        con.request("HEAD", path)
        resp = con.getresponse()
        assert resp.status == status and resp.read() == b""
        con.request("GET", f"/{REPO}/resolve/main/config.json")  # the same connection, right after the HEAD
        resp = con.getresponse()
        assert resp.status == 200 and resp.read() == data
    con.close()


# -- connections held open ---------------------------------------------------------------------------------------
def _open_idle(url: str, n: int) -> list[socket.socket]:
    host = urlsplit(url)
    return [socket.create_connection((host.hostname, host.port), timeout=10) for _ in range(n)]


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds, draining what it sent."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(1 << 20):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def test_idle_connections_cannot_pile_up_threads_or_starve_clients(mirror_tree):
    """300 connections that never send a byte: the default server stays within its bounds and still answers."""
    server = serve(mirror_tree).start()
    before = threading.active_count()
    idle = _open_idle(server.url, 300)
    try:
        for _ in range(3):
            started = time.monotonic()
            try:
                got = requests.get(f"{server.url}/{REPO}/resolve/main/config.json", timeout=10)
                assert got.status_code in (200, 503), got.status_code
                if got.status_code == 503:
                    assert int(got.headers["Retry-After"]) >= 1
            except requests.ConnectionError:
                pytest.fail("a real client was dropped instead of answered")
            assert time.monotonic() - started < 5
        assert threading.active_count() - before <= server.limits.max_connections + 1
    finally:
        for s in idle:
            s.close()
        server.shutdown()
        server.server_close()


@pytest.fixture
def tight(hostile_tree: Path, capfd: pytest.CaptureFixture[str]) -> Iterator[MirrorHTTPServer]:
    """A mirror with short timeouts and few connection slots; fails the test if it printed a traceback."""
    server = MirrorHTTPServer(hostile_tree, limits=Limits(io_timeout=0.5, head_timeout=1.0, max_connections=4)).start()
    yield server
    server.shutdown()
    server.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_idle_and_slow_header_connections_are_closed_then_clients_are_served(tight, tmp_path):
    from huggingface_hub import hf_hub_download

    idle = _open_idle(tight.url, 3)
    slow = _open_idle(tight.url, 1)[0]
    slow.sendall(b"GET /" + REPO.encode() + b"/resolve/main/config.json HTTP/1.1\r\nX-Slow: ")
    stop = threading.Event()

    def trickle() -> None:  # one header byte every 50 ms: never idle for long, never done
        while not stop.wait(0.05):
            try:
                slow.send(b"z")
            except OSError:
                return

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        assert all(_closed_by_server(s, within=5) for s in idle)
        assert _closed_by_server(slow, within=5)
    finally:
        stop.set()
        t.join()
        for s in [*idle, slow]:
            s.close()
    deadline = time.monotonic() + 10
    while requests.get(f"{tight.url}/{REPO}/resolve/main/config.json", timeout=10).status_code != 200:
        assert time.monotonic() < deadline
    got = hf_hub_download(REPO, "config.json", endpoint=tight.url, cache_dir=tmp_path)
    assert Path(got).read_bytes() == (tight.catalog.root / REPO / "config.json").read_bytes()


def test_a_client_that_stops_reading_is_dropped_and_frees_its_slot(tight):
    host = urlsplit(tight.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host.hostname, host.port))
    try:
        sock.sendall(f"GET /{REPO}/resolve/main/{BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = len(sock.recv(1024))  # the answer has started; now the client stops reading
        deadline = time.monotonic() + 10
        while tight.connections:  # the server gives up on the stalled send and lets the slot go
            assert time.monotonic() < deadline, "the stalled connection still holds its slot"
            time.sleep(0.05)
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
        assert received < 32 << 20
    finally:
        sock.close()
    assert requests.get(f"{tight.url}/{REPO}/resolve/main/config.json", timeout=10).status_code == 200


def test_the_url_is_the_first_line_on_stdout_for_scripts(tmp_path: Path) -> None:
    (tmp_path / "org" / "repo").mkdir(parents=True)
    (tmp_path / "org" / "repo" / "config.json").write_text("{}")
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "mirror", "serve", str(tmp_path), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/org/repo/resolve/main/config.json", timeout=10).text == "{}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
