"""The Hub listing (``/api/models/<repo>/revision/<rev>``) read through zoo's own HTTP session: the Hub's error
headers keep their meaning, a drip-fed listing is cut off, and a download sends exactly the requests it needs
(no side request to the endpoint, such as huggingface_hub 2.x's agent registry)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.fetch.conftest import MODEL, Faults, Mirror, faulty_handler
from zoo.catalog import resolve
from zoo.fetch.mirror import MirrorHTTPServer

REPO = resolve(MODEL).repo


class Scripted:
    """A mirror whose listing answers as told (``mode``) and that logs every request path."""

    def __init__(self, root: Path, mode: str) -> None:
        self.mode, self.paths, self.lock = mode, [], threading.Lock()
        scripted = self

        class Handler(faulty_handler(Faults())):  # type: ignore[misc]
            def route(self, head: bool) -> None:
                with scripted.lock:
                    scripted.paths.append(self.path.split("?")[0])
                if self.path.startswith("/api/models/") and scripted.listing(self):
                    return None
                return super().route(head)

        self.server = MirrorHTTPServer(root, handler=Handler).start()

    def listing(self, handler) -> bool:  # noqa: ANN001
        """Answer the listing request in ``self.mode``; False: let the mirror answer it."""
        mode = self.mode
        if mode == "ok":
            return False
        if mode == "drip":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            for _ in range(100000):
                try:
                    handler.wfile.write(b" ")
                    handler.wfile.flush()
                except OSError:
                    break
                time.sleep(0.05)
            return True
        status, headers = {"revision": (404, {"X-Error-Code": "RevisionNotFound"}),
                           "gated": (403, {"X-Error-Code": "GatedRepo"}),
                           "anonymous-401": (401, {}),
                           "bad-token": (401, {"X-Error-Message": "Invalid credentials in Authorization header"}),
                           "disabled": (403, {"X-Error-Message": "Access to this resource is disabled."})}[mode]
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"{}")
        return True

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted(mirror_tree: Path):  # noqa: ANN201
    made: list[Scripted] = []

    def start(mode: str) -> Scripted:
        made.append(Scripted(mirror_tree, mode))
        return made[-1]

    yield start
    for s in made:
        s.stop()


def test_a_download_sends_only_the_listing_and_the_files(cli, isolated_home: Path, scripted) -> None:
    server = scripted("ok")
    r = cli("download", MODEL, "--no-validate", env={"HF_ENDPOINT": server.server.url, "HF_HUB_DISABLE_TELEMETRY": ""})
    assert r.code == 0, r.err
    listing = f"/api/models/{REPO}/revision/main"
    assert server.paths[0] == listing and server.paths.count(listing) == 1, server.paths
    others = [p for p in server.paths[1:] if not p.startswith(f"/{REPO}/resolve/")]
    assert others == [], f"requests a download does not need: {others}"


@pytest.mark.parametrize(("mode", "said"), [
    ("revision", "has no revision 'main'"),
    ("gated", f"repository {REPO} not found"),
    ("anonymous-401", f"repository {REPO} not found"),
    ("bad-token", "listing " + REPO + " failed: HTTP 401"),
    ("disabled", "listing " + REPO + " failed: HTTP 403"),
])
def test_hub_error_headers_keep_their_meaning(cli, isolated_home: Path, scripted, mode: str, said: str) -> None:
    server = scripted(mode)
    r = cli("download", MODEL, "--no-validate", env={"HF_ENDPOINT": server.server.url, "ZOO_RETRIES": "0"})
    assert r.code != 0 and said in r.err, r.err
    assert "Traceback" not in r.err and len(server.paths) == 1, (r.err, server.paths)  # a 4xx is not retried


def test_a_drip_fed_listing_is_cut_off_with_one_line(cli, isolated_home: Path, scripted) -> None:
    server = scripted("drip")
    started = time.monotonic()
    r = cli("download", MODEL, "--no-validate", env={"HF_ENDPOINT": server.server.url, "ZOO_READ_TIMEOUT": "1",
                                                      "ZOO_RETRIES": "0"})
    elapsed = time.monotonic() - started
    assert r.code != 0 and "took longer than 1 s to arrive" in r.err and "Traceback" not in r.err, r.err
    assert elapsed < 30, f"a byte every 50 ms kept the download waiting {elapsed:.0f} s"
    assert not (isolated_home / "models" / MODEL).exists()


def test_the_token_reaches_the_listing_and_the_files(cli, isolated_home: Path, mirror: Mirror, monkeypatch) -> None:
    seen: list[tuple[str, str | None]] = []

    class Recording(mirror.server.RequestHandlerClass):  # type: ignore[misc, valid-type]
        def route(self, head: bool) -> None:
            seen.append((self.path.split("?")[0], self.headers.get("Authorization")))
            return super().route(head)

    mirror.server.RequestHandlerClass = Recording
    r = cli("download", MODEL, "--no-validate", env={"HF_TOKEN": "hf_zoo_test_token"})
    assert r.code == 0, r.err
    assert seen and all(auth == "Bearer hf_zoo_test_token" for _, auth in seen), seen
