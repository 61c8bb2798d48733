"""The Hub listing and bytes (one ``requests`` session) against a hostile or broken endpoint: every answer, however
malformed, encoded, redirected or slow, ends a `zoo download` with one line and a non-zero exit (never a traceback or
a hang), the token never follows a redirect to another host nor goes out when a header cannot carry it, and a
listing's claims (sizes, hashes, commit) are refused unless they have the Hub's form."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import ROOT, CliResult
from tests.fetch.conftest import MODEL, Faults, faulty_handler
from zoo import state
from zoo.catalog import resolve
from zoo.fetch import hubapi
from zoo.fetch.mirror import MirrorHTTPServer

REPO = resolve(MODEL).repo
LISTING = f"/api/models/{REPO}/revision/main"
TOKEN = "hf_zoo_hostile_token"
Answer = Callable[[Any, dict[str, Any]], None]  # (handler, the real listing) -> writes the whole response itself


class Hub:
    """The test mirror at 127.0.0.1 (or ``host``) whose listing is answered by ``answer`` and whose file requests go
    to ``files`` when given; it serves under ``prefix`` (a Hub behind a reverse proxy's path). Every request is logged
    as (path, Authorization header, all headers)."""

    def __init__(self, root: Path, answer: Answer | None = None, host: str = "127.0.0.1", files: Answer | None = None,
                 prefix: str = "") -> None:
        self.answer, self.files, self.seen = answer, files, []
        hub = self

        class Handler(faulty_handler(Faults())):  # type: ignore[misc]
            def route(self, head: bool) -> None:
                hub.seen.append((self.path, self.headers.get("Authorization"), dict(self.headers)))
                if prefix and not self.path.startswith(prefix + "/"):
                    return self.error(404, "outside the prefix", "EntryNotFound")  # type: ignore[arg-type]
                self.path = self.path.removeprefix(prefix)
                path = self.path.split("?")[0]
                answer = hub.answer if path.startswith("/api/models/") else hub.files if "/resolve/" in path else None
                if answer is None:
                    return super().route(head)
                self.close_connection = True
                try:
                    answer(self, hub.listing())
                except OSError:  # the client hung up, as it should on some answers
                    pass
                return None

        family = {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET}
        self.server = type("Server", (MirrorHTTPServer,), family)(root, host=host, handler=Handler).start()
        self.root = root
        host_part = f"[{host}]" if ":" in host else host
        self.url = f"http://{host_part}:{self.server.server_address[1]}"

    def listing(self) -> dict[str, Any]:
        """The listing the mirror would send."""
        catalog = self.server.catalog
        return hubapi.model_info(hubapi.repo(catalog, REPO, self.root / REPO))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(mirror_tree: Path) -> Iterator[Callable[..., Hub]]:
    made: list[Hub] = []

    def start(answer: Answer | None = None, **kw: Any) -> Hub:
        made.append(Hub(mirror_tree, answer, **kw))
        return made[-1]

    yield start
    for h in made:
        h.stop()


def raw(head: bytes, body: bytes = b"", pause: float = 0.0) -> Answer:
    """An answer written byte for byte (status line and headers included), optionally one byte every ``pause`` s."""
    def answer(handler: Any, _: dict[str, Any]) -> None:
        data = head + body
        if not pause:
            handler.wfile.write(data)
            return
        for i in range(len(data)):
            handler.wfile.write(data[i:i + 1])
            handler.wfile.flush()
            time.sleep(pause)
    return answer


def ok(body: bytes, *headers: str) -> Answer:
    return raw(b"HTTP/1.1 200 OK\r\n" + b"".join(h.encode() + b"\r\n" for h in (*headers, f"Content-Length: {len(body)}"))
               + b"\r\n", body)


def listing_as(change: Callable[[dict[str, Any]], Any], *headers: str, encode: Callable[[bytes], bytes] = bytes) -> Answer:
    """The real listing, changed by ``change`` (which may return a new value or edit in place) and encoded."""
    def answer(handler: Any, real: dict[str, Any]) -> None:
        value = change(real)
        body = encode(json.dumps(real if value is None else value).encode())
        ok(body, "Content-Type: application/json", *headers)(handler, real)
    return answer


def sibling(path: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
    """Change one sibling's fields (``None`` removes one)."""
    def change(real: dict[str, Any]) -> None:
        entry = next(s for s in real["siblings"] if s["rfilename"] == path)
        for key, value in fields.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
    return change


def download(cli: Callable[..., CliResult], hub: Hub | str, **env: str) -> CliResult:
    url = hub if isinstance(hub, str) else hub.url
    return cli("download", MODEL, "--no-validate", env={"HF_ENDPOINT": url, "ZOO_RETRIES": "0", "ZOO_READ_TIMEOUT": "5", **env})


def refused(r: CliResult, said: str, home: Path) -> None:
    """One line naming the problem, a non-zero exit, nothing installed or pinned."""
    assert r.code == 1 and said in r.err and "Traceback" not in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert not (home / "models" / MODEL).exists()
    assert not (home / "blobs").exists() or not any((home / "blobs").iterdir())


def double_gzip_bomb(gib: int = 4) -> bytes:
    """``gib`` GiB of spaces gzipped twice, a few KiB on the wire (``Content-Encoding: gzip, gzip``): the inner stream
    is one 16 MiB gzip member repeated (gzip readers go on to the next member)."""
    member = gzip.compress(b" " * (16 << 20), 9)
    return gzip.compress(member * (gib * 64), 9)


# -- the body: encodings, lengths, framing, JSON ---------------------------------------------------------------------

def test_a_gzip_encoded_listing_is_read(cli, isolated_home: Path, hub) -> None:
    r = download(cli, hub(listing_as(lambda _: None, "Content-Encoding: gzip", encode=gzip.compress)))
    assert r.code == 0, r.err


def test_a_gzip_bomb_is_refused_by_the_size_cap_in_bounded_memory(cli, isolated_home: Path, hub) -> None:
    """4 GiB of spaces gzipped twice (a few KB sent): refused at ZOO_MAX_API_BYTES, the process never near the 4 GiB
    (its address space is capped at 1.5 GiB here)."""
    bomb = double_gzip_bomb()
    assert len(bomb) < 256 << 10
    server = hub(ok(bomb, "Content-Type: application/json", "Content-Encoding: gzip, gzip"))
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29)); from zoo.cli import main; "
            "sys.argv[0] = 'zoo'; main()")
    proc = subprocess.run([sys.executable, "-c", code, "download", MODEL, "--no-validate"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_ENDPOINT": server.url, "ZOO_RETRIES": "0",
                                            "ZOO_MAX_API_BYTES": str(1 << 20)})
    refused(CliResult(proc.returncode, proc.stdout, proc.stderr), "is larger than 1048576 bytes; refused", isolated_home)


def test_urllib3_is_required_at_a_version_that_bounds_decompression() -> None:
    """urllib3 before 2.6 inflates each read of a ``gzip, gzip`` body whole (a 7 KB answer took 8 GB with 2.5.0)."""
    Requirement = pytest.importorskip("packaging.requirements").Requirement
    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    floor = next(d for d in deps if d.name == "urllib3").specifier
    assert not floor.contains("2.5.0") and floor.contains("2.6.0"), floor


@pytest.mark.parametrize(("answer", "said"), [
    (ok(b"\x00\x01not brotli", "Content-Encoding: br"), "cannot reach the Hub (ContentDecodingError)"),
    (ok(b"not gzip at all", "Content-Encoding: gzip"), "cannot reach the Hub (ContentDecodingError)"),
    (raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b'{"siblings": []'), "cannot reach the Hub (ConnectionError)"),
    (raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\nabc\r\n"), "cannot reach the Hub (ConnectionError)"),
    (raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b'{"siblings": []}'), "is not JSON"),
    (raw(b"HTTP/1.1 200 OK\r\nContent-Le"), "is not JSON"),
    (raw(b""), "cannot reach the Hub (ConnectionError)"),
    (raw(b"SSH-2.0-OpenSSH\r\n\r\n"), "cannot reach the Hub (ConnectionError)"),
    (ok(b"<!doctype html><html><body>Welcome</body></html>", "Content-Type: text/html"), "is not JSON"),
    (ok(b'{"sha": "\xff\xfe", "siblings": []}'), "is not JSON"),
    (ok(b"[" * 100_000 + b"]" * 100_000), "is not JSON"),
    (ok(b'{"a": ' * 100_000 + b"1" + b"}" * 100_000), "is not JSON"),
    (ok(b"null"), "malformed listing"),
    (ok(b'{"siblings": "abc"}'), "malformed listing"),
    (ok(b'{"siblings": [1, 2]}'), "malformed listing"),
], ids=["bad-brotli", "bad-gzip", "content-length-lie", "bad-chunk", "truncated", "closed-mid-headers", "closed-at-once",
        "not-http", "html", "not-utf8", "nested-arrays", "nested-objects", "null", "siblings-string", "siblings-ints"])
def test_a_broken_listing_is_one_line(cli, isolated_home: Path, hub, answer: Answer, said: str) -> None:
    refused(download(cli, hub(answer)), said, isolated_home)


def test_a_chunked_drip_is_cut_off(cli, isolated_home: Path, hub) -> None:
    def drip(handler: Any, _: dict[str, Any]) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(2000):
            handler.wfile.write(b"1\r\n \r\n")
            handler.wfile.flush()
            time.sleep(0.05)

    started = time.monotonic()
    refused(download(cli, hub(drip), ZOO_READ_TIMEOUT="1"), "took longer than 1 s to arrive", isolated_home)
    assert time.monotonic() - started < 30


DRIPPED_HEADS = {"status-line": b"HTTP/1.1 200 OK" + b"K" * 150 + b"\r\n\r\n",  # a byte every 0.2 s: 30 s or more
                 "headers": b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 25 + b"\r\n"}


@pytest.mark.parametrize("where", DRIPPED_HEADS)
def test_a_drip_before_the_listing_body_is_cut_off_too(cli, isolated_home: Path, hub, where: str) -> None:
    """A byte every 0.2 s never trips a 1 s read timeout; the total deadline covers the status line and headers
    (a server could drip 100 header lines of 64 KiB each)."""
    started = time.monotonic()
    refused(download(cli, hub(raw(DRIPPED_HEADS[where], pause=0.2)), ZOO_READ_TIMEOUT="1"), "took longer than 1 s", isolated_home)
    assert time.monotonic() - started < 15


def test_a_drip_before_a_files_body_is_cut_off(cli, isolated_home: Path, hub) -> None:
    started = time.monotonic()
    r = download(cli, hub(None, files=raw(DRIPPED_HEADS["headers"], pause=0.2)), ZOO_READ_TIMEOUT="1")
    refused(r, "no status line and headers within 1 s", isolated_home)
    assert time.monotonic() - started < 15


# -- redirects -------------------------------------------------------------------------------------------------------

def moved(location: str, status: str = "302 Found") -> Answer:
    return raw(f"HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())


@pytest.mark.parametrize(("answer", "said"), [
    (raw(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"), "failed: HTTP 302"),
    (raw(b"HTTP/1.1 204 No Content\r\n\r\n"), "failed: HTTP 204"),
    (moved("file:///etc/passwd", "301 Moved Permanently"), "cannot reach the Hub (InvalidSchema)"),
    (moved("ftp://127.0.0.1/x"), "cannot reach the Hub (InvalidSchema)"),
    (moved(LISTING + "?blobs=True"), "cannot reach the Hub (TooManyRedirects)"),
    (moved("http://[::1"), "cannot reach the Hub (InvalidURL)"),
    (moved("http://127.0.0.1:99999/x"), "cannot reach the Hub (InvalidURL)"),
], ids=["no-location", "no-content", "file", "ftp", "loop", "bad-ipv6", "bad-port"])
def test_a_hostile_redirect_is_one_line_and_not_retried(cli, isolated_home: Path, hub, answer: Answer, said: str) -> None:
    server = hub(answer)
    refused(download(cli, server, ZOO_RETRIES="3"), said, isolated_home)
    assert len(server.seen) == (31 if said.endswith("(TooManyRedirects)") else 1), server.seen  # requests follows 30


def test_a_file_redirect_to_a_malformed_location_is_one_line(cli, isolated_home: Path, hub) -> None:
    server = hub(None, files=moved("http://[::1"))
    refused(download(cli, server), "refused to follow the server's answer (InvalidURL", isolated_home)


@pytest.mark.parametrize("head", [b"HTTP/1.1 302 Found\r\nContent-Length: 5\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n",
                                  b"HTTP/1.1 203 Non-Authoritative\r\nContent-Length: 5\r\n\r\n"], ids=["302", "204", "203"])
def test_a_file_answer_other_than_200_or_206_is_not_its_content(cli, isolated_home: Path, hub, head: bytes) -> None:
    """Even trusting on first use, the body of a 204, a 203 or a 3xx with no Location is not pinned as the file."""
    def bare(real: dict[str, Any]) -> None:
        real["siblings"] = [{"rfilename": s["rfilename"]} for s in real["siblings"]]

    r = download(cli, hub(listing_as(bare), files=raw(head, b"oops!")), ZOO_TRUST_ON_FIRST_USE="1")
    refused(r, f"HTTP {head.split()[1].decode()}", isolated_home)
    assert state.installs(home=isolated_home) == [] and state.pinned(REPO, "main", "config.json", home=isolated_home) is None


def test_the_token_does_not_follow_a_redirect_to_another_host(cli, isolated_home: Path, hub) -> None:
    """127.0.0.1 redirects the listing and every file to ``localhost``: the other host gets no Authorization."""
    other = hub(None)
    elsewhere = other.url.replace("127.0.0.1", "localhost")

    def follow(handler: Any, _: dict[str, Any]) -> None:
        moved(elsewhere + handler.path)(handler, _)

    first = hub(follow, files=follow)
    r = download(cli, first, HF_TOKEN=TOKEN)
    assert r.code == 0, r.err
    assert [a for _, a, _ in first.seen] == [f"Bearer {TOKEN}"] * len(first.seen) and len(first.seen) > 2
    assert other.seen and [a for _, a, _ in other.seen] == [None] * len(other.seen), other.seen


# -- the listing's claims --------------------------------------------------------------------------------------------

def _many_siblings(real: dict[str, Any]) -> None:
    hostile = ["../escape.txt", "/etc/passwd", "a\x00b", "..", "", "C:\\x", "\u202egnp.exe"]
    real["siblings"] += [{"rfilename": name, "size": 1} for name in hostile]
    real["siblings"] += [{"rfilename": f"pad/{i}.bin", "size": i, "lfs": {"sha256": f"{i:064x}", "size": i}} for i in range(100_000)]


def test_a_listing_of_100k_siblings_with_hostile_names_installs_only_the_catalog_files(cli, isolated_home: Path, hub) -> None:
    server = hub(listing_as(_many_siblings))
    r = download(cli, server)
    assert r.code == 0, r.err
    installed = sorted(p.relative_to(isolated_home / "models" / MODEL).as_posix() for p in (isolated_home / "models" / MODEL).rglob("*"))
    assert installed == sorted(f.path for f in resolve(MODEL).files if (server.root / REPO / f.path).exists()), installed
    assert not (isolated_home.parent / "escape.txt").exists() and not (isolated_home / "escape.txt").exists()


@pytest.mark.parametrize("change", [
    sibling("config.json", size=-5), sibling("config.json", size="12"),
    sibling("config.json", size=True), sibling("config.json", size=12.5), sibling("config.json", size=[1]),
    sibling("pytorch_model.bin", lfs={"sha256": "z" * 64, "size": 1}),
    sibling("pytorch_model.bin", lfs={"sha256": "../../../../x", "size": 1}),
    sibling("pytorch_model.bin", lfs={"sha256": "\x1b]0;owned\x07" + "a" * 50, "size": 1}),
    sibling("pytorch_model.bin", lfs={"sha256": 5, "size": 1}),
    sibling("config.json", blobId="not-hex"), sibling("config.json", blobId={"a": 1}),
    lambda real: real.update(sha="../../etc/passwd"), lambda real: real.update(sha="a" * 1_000_000),
    lambda real: real.update(sha=123), lambda real: real.update(sha="[bold red]x[/]"),
], ids=["size-negative", "size-string", "size-bool", "size-float", "size-list", "sha-not-hex", "sha-path",
        "sha-escape", "sha-int", "blob-not-hex", "blob-dict", "commit-path", "commit-huge", "commit-int", "commit-markup"])
def test_a_listing_claim_not_in_the_hubs_form_is_refused(cli, isolated_home: Path, hub, change: Callable) -> None:
    refused(download(cli, hub(listing_as(change))), "malformed listing", isolated_home)


def test_a_huge_size_is_refused_for_want_of_space(cli, isolated_home: Path, hub) -> None:
    refused(download(cli, hub(listing_as(sibling("config.json", size=10**40)))), "not enough disk space", isolated_home)


def test_a_size_of_infinity_is_refused(cli, isolated_home: Path, hub) -> None:
    def answer(handler: Any, real: dict[str, Any]) -> None:
        body = json.dumps(real).replace('"size": ', '"size": 1e999, "x": ', 1).encode()
        ok(body)(handler, real)

    refused(download(cli, hub(answer)), "malformed listing", isolated_home)


# -- the endpoint, the environment, the token, the revision ----------------------------------------------------------

@pytest.mark.parametrize(("shape", "prefix"), [("{url}/", ""), ("{url}//", ""), ("{url}/prefix", "/prefix"),
                                               ("{url}/hub/v1/", "/hub/v1")])
def test_an_endpoint_with_a_path_or_slashes_works(cli, isolated_home: Path, hub, shape: str, prefix: str) -> None:
    server = hub(None, prefix=prefix)
    r = download(cli, shape.format(url=server.url))
    assert r.code == 0, r.err
    assert server.seen[0][0].split("?")[0] == prefix + LISTING, server.seen


def test_an_endpoint_with_userinfo_keeps_the_password_out_of_messages(cli, isolated_home: Path, hub) -> None:
    server = hub(raw(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"))
    url = server.url.replace("http://", "http://alice:s3cret@")
    r = download(cli, url)
    assert r.code == 1 and "HTTP 500" in r.err and "s3cret" not in r.err and "Traceback" not in r.err, r.err


@pytest.mark.parametrize("endpoint", ["127.0.0.1:1", "http://", "http://127.0.0.1:1/?x=1", "http://127.0.0.1:1#x", "ftp://127.0.0.1",
                                      "http://127.0.0.1:99999", "http://127.0.0.1:1 ", "http://[::1"])
def test_a_malformed_endpoint_is_one_line(cli, isolated_home: Path, endpoint: str) -> None:
    """Refused up front (no retries), before huggingface_hub, which parses HF_ENDPOINT as it is imported, sees it."""
    started = time.monotonic()
    refused(download(cli, endpoint, ZOO_RETRIES="5", HF_TOKEN=TOKEN), "HF_ENDPOINT is not the http(s) URL of a Hub", isolated_home)
    assert time.monotonic() - started < 20


def test_an_ipv6_endpoint_works(cli, isolated_home: Path, hub) -> None:
    try:
        socket.socket(socket.AF_INET6).close()
        server = hub(None, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    r = download(cli, server)
    assert r.code == 0, r.err


def test_no_proxy_reaches_a_local_endpoint_past_a_dead_proxy(cli, isolated_home: Path, hub) -> None:
    """requests honours NO_PROXY for 127.0.0.1 (and without it goes to the dead proxy: one line)."""
    server = hub(None)
    dead = "http://127.0.0.1:9"
    r = download(cli, server, HTTP_PROXY=dead, http_proxy=dead, NO_PROXY="", no_proxy="")
    refused(r, "cannot reach the Hub (ProxyError)", isolated_home)
    r = download(cli, server, HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead, NO_PROXY="127.0.0.1",
                 no_proxy="127.0.0.1")
    assert r.code == 0, r.err


def test_a_token_cannot_inject_a_header(cli, isolated_home: Path, hub) -> None:
    server = hub(None)
    r = download(cli, server, HF_TOKEN=f"{TOKEN}\r\nX-Injected: yes")
    assert all("X-Injected" not in headers for _, _, headers in server.seen), server.seen
    assert "Traceback" not in r.err, r.err


@pytest.mark.parametrize("token", [f"{TOKEN}\U0001f600", f"{TOKEN}\x7f", f"{TOKEN} x", f"{TOKEN}\x1b[2J"])
def test_a_token_no_header_can_carry_is_one_line(cli, isolated_home: Path, hub, token: str) -> None:
    server = hub(None)
    refused(download(cli, server, HF_TOKEN=token), "HF_TOKEN", isolated_home)
    assert server.seen == []


@pytest.mark.parametrize("revision", ["refs/pr/1", "a b", "x%2Fy"])
def test_a_revision_is_one_path_segment(cli, isolated_home: Path, hub, revision: str) -> None:
    server = hub(None)
    r = cli("download", MODEL, "--no-validate", "--revision", revision, env={"HF_ENDPOINT": server.url, "ZOO_RETRIES": "0"})
    refused(r, f"has no revision '{revision}'", isolated_home)
    assert server.seen[0][0].split("?")[0] == f"/api/models/{REPO}/revision/{quote(revision, safe='')}", server.seen


@pytest.mark.parametrize("revision", ["..", "."])
def test_a_revision_that_would_change_the_url_is_refused(cli, isolated_home: Path, hub, revision: str) -> None:
    server = hub(None)
    r = cli("download", MODEL, "--no-validate", "--revision", revision, env={"HF_ENDPOINT": server.url, "ZOO_RETRIES": "0"})
    refused(r, "revision", isolated_home)
    assert server.seen == [], server.seen
