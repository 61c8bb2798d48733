"""`zoo mirror serve` answers every read call huggingface_hub and the `hf` CLI make: listings with the Hub's
parameters, refs, paths-info, trees, model info, downloads, and the pages a browser opens. Hidden files stay
hidden through each of them, and a POST body cannot hold the server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.utils import RevisionNotFoundError

from tests.fetch.conftest import MODEL
from zoo.catalog import resolve
from zoo.fetch.httpserver import Limits
from zoo.fetch.mirror import MirrorHTTPServer

QAT = resolve(MODEL).repo  # neuralmagic/oBERT-3-downstream-pruned-block4-80-QAT-squadv1
U90 = resolve("obert-3l-90").repo
SECRET = "hf_SECRET_do_not_list"


@pytest.fixture(scope="module")
def hub_tree(tmp_path_factory: pytest.TempPathFactory, mirror_tree: Path) -> Path:
    """The two synthetic repos, a subfolder, planted dot-files and a hidden repo; the QAT repo is the newer one."""
    root = tmp_path_factory.mktemp("hub") / "tree"
    shutil.copytree(mirror_tree, root)
    (root / QAT / "sub" / "deeper").mkdir(parents=True)
    (root / QAT / "sub" / "notes.txt").write_text("notes\n")
    (root / QAT / "sub" / "deeper" / "more.txt").write_text("more\n")
    (root / QAT / ".env").write_text(SECRET)
    (root / QAT / "sub" / ".token").write_text(SECRET)
    (root / "neuralmagic" / ".hidden-repo").mkdir()
    (root / "neuralmagic" / ".hidden-repo" / "config.json").write_text("{}")
    for repo, when in ((U90, 1_600_000_000), (QAT, 1_700_000_000)):
        for path in (root / repo).rglob("*"):
            os.utime(path, (when, when), follow_symlinks=False)
    return root


@pytest.fixture(scope="module")
def hub(hub_tree: Path) -> Iterator[MirrorHTTPServer]:
    server = MirrorHTTPServer(hub_tree, limits=Limits(head_timeout=2.0)).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(hub: MirrorHTTPServer) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


def test_list_models_takes_the_hubs_search_author_sort_limit_and_full(api):
    assert [m.id for m in api.list_models()] == [QAT, U90]  # by id; the hidden repo is not listed
    assert [m.id for m in api.list_models(search="unstructured-90")] == [U90]
    assert [m.id for m in api.list_models(search="QAT", author="neuralmagic")] == [QAT]
    assert list(api.list_models(author="someone-else")) == []
    assert [m.id for m in api.list_models(sort="last_modified")] == [QAT, U90]  # newest first
    assert [m.id for m in api.list_models(sort="created_at", limit=1)] == [QAT]
    assert [m.id for m in api.list_models(pipeline_tag="question-answering")] == [QAT, U90]
    assert list(api.list_models(filter="text-classification")) == []
    brief = next(iter(api.list_models(search="QAT")))
    assert brief.siblings is None and brief.pipeline_tag == "question-answering" and "pytorch" in brief.tags
    full = {m.id: m for m in api.list_models(full=True)}
    assert full[QAT].last_modified.timestamp() == 1_700_000_000
    names = {s.rfilename for s in full[QAT].siblings}
    assert {"config.json", "pytorch_model.bin", "sub/notes.txt", "sub/deeper/more.txt"} <= names
    assert not any(n.startswith(".") or "/." in n for n in names)
    assert full[QAT].sha == api.model_info(QAT).sha


def test_direction_expand_pages_and_bad_parameters(hub, api):
    got = requests.get(f"{hub.url}/api/models", params={"sort": "lastModified", "direction": "1"}, timeout=10).json()
    assert [m["id"] for m in got] == [U90, QAT]  # ascending
    got = requests.get(f"{hub.url}/api/models", params=[("expand[]", "sha"), ("expand[]", "siblings")], timeout=10).json()
    assert set(got[0]) == {"_id", "id", "sha", "siblings"}
    hub.page_size = 1
    try:
        page = requests.get(f"{hub.url}/api/models", timeout=10)
        assert len(page.json()) == 1 and "cursor=1" in page.links["next"]["url"]
        assert [m.id for m in api.list_models()] == [QAT, U90]  # huggingface_hub follows the Link header
    finally:
        hub.page_size = MirrorHTTPServer.page_size
    for params in ({"sort": "stars"}, {"direction": "up", "sort": "id"}, {"limit": "-1"}, {"cursor": "x"}):
        bad = requests.get(f"{hub.url}/api/models", params=params, timeout=10)
        assert bad.status_code == 400 and bad.headers["X-Error-Code"] == "BadRequest", params


def test_refs_name_main_at_the_served_commit(api):
    refs = api.list_repo_refs(QAT, include_pull_requests=True)
    sha = api.model_info(QAT).sha
    assert [(b.name, b.ref, b.target_commit) for b in refs.branches] == [("main", "refs/heads/main", sha)]
    assert refs.tags == [] and refs.converts == [] and refs.pull_requests == []


def test_paths_info_answers_files_and_folders_and_leaves_out_missing_and_hidden(api, hub_tree):
    got = api.get_paths_info(QAT, ["config.json", "pytorch_model.bin", "sub", "nope.txt", ".env", "sub/.token"])
    assert [(type(e).__name__, e.path) for e in got] == [("RepoFile", "config.json"), ("RepoFile", "pytorch_model.bin"),
                                                         ("RepoFolder", "sub")]
    config, weights = got[0], got[1]
    assert config.size == (hub_tree / QAT / "config.json").stat().st_size and config.lfs is None
    assert weights.lfs is not None and len(weights.lfs.sha256) == 64
    sha = api.model_info(QAT).sha
    expanded = api.get_paths_info(QAT, ["config.json"], expand=True, revision=sha)
    assert expanded[0].last_commit.oid == sha
    with pytest.raises(RevisionNotFoundError):
        api.get_paths_info(QAT, ["config.json"], revision="v9")


def test_trees_list_direct_children_or_everything_and_downloads_follow(api, hub, tmp_path):
    top = {(type(e).__name__, e.path) for e in api.list_repo_tree(QAT)}
    assert ("RepoFolder", "sub") in top and ("RepoFile", "config.json") in top
    assert not any("/" in path for _, path in top)
    assert {e.path for e in api.list_repo_tree(QAT, path_in_repo="sub")} == {"sub/deeper", "sub/notes.txt"}
    files = api.list_repo_files(QAT)
    assert {"sub/notes.txt", "sub/deeper/more.txt", "config.json"} <= set(files)
    assert not any(".env" in f or ".token" in f for f in files)
    assert api.model_info(QAT, files_metadata=True).siblings[0].size > 0
    one = hf_hub_download(QAT, "sub/deeper/more.txt", endpoint=hub.url, cache_dir=tmp_path / "a", token=False)
    assert Path(one).read_text() == "more\n"
    snap = Path(snapshot_download(QAT, endpoint=hub.url, cache_dir=tmp_path / "b", token=False))
    assert sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()) == sorted(files)


def test_hf_cli_lists_models_and_files(hub, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path), "HF_HUB_DISABLE_TELEMETRY": "1"}

    def hf(*args: str) -> str:
        proc = subprocess.run(["hf", *args], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    listed = json.loads(hf("models", "ls", "--search", "pruned", "--author", "neuralmagic", "--sort", "last_modified",
                           "--limit", "1", "--format", "json"))
    assert [m["id"] for m in listed] == [QAT]  # the newer of the two
    assert "sub/deeper/more.txt" in hf("models", "ls", QAT, "--recursive", "--format", "quiet").split()


def test_index_and_model_pages(hub):
    index = requests.get(f"{hub.url}/", timeout=10)
    assert index.status_code == 200 and index.headers["Content-Type"].startswith("text/html")
    assert f'href="/{QAT}"' in index.text and f'href="/{U90}"' in index.text and "hidden-repo" not in index.text
    page = requests.get(f"{hub.url}/{QAT}", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f"/{QAT}/resolve/main/pytorch_model.bin" in page.text and ".env" not in page.text and SECRET not in page.text
    as_json = requests.get(f"{hub.url}/{QAT}", headers={"Accept": "application/json"}, timeout=10).json()
    assert as_json["id"] == QAT and "sub/notes.txt" in {s["rfilename"] for s in as_json["siblings"]}
    missing = requests.get(f"{hub.url}/neuralmagic/nothing-here", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "repository not found"


def test_several_ranges_get_the_whole_file(hub, hub_tree):
    data = (hub_tree / QAT / "config.json").read_bytes()
    got = requests.get(f"{hub.url}/{QAT}/resolve/main/config.json", headers={"Range": "bytes=0-1, 5-6"}, timeout=10)
    assert got.status_code == 200 and got.content == data


def _raw(url: str, request: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server answers until it closes the connection."""
    host = urlsplit(url)
    with socket.create_connection((host.hostname, host.port), timeout=wait) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize(("headers", "body", "status"), [
    ("Content-Type: application/x-www-form-urlencoded\r\n", b"paths=config.json", 411),  # no length
    ("Transfer-Encoding: chunked\r\n", b"5\r\npaths\r\n0\r\n\r\n", 411),
    ("Content-Length: 2000000\r\n", b"paths=", 413),  # refused before a byte of the body is read
    ("Content-Length: 1e3\r\n", b"", 400),
    ("Content-Length: 11\r\nContent-Type: application/json\r\n", b"{not json}}", 400),
])
def test_paths_info_bodies_are_bounded(hub, headers, body, status):
    head = f"POST /api/models/{QAT}/paths-info/main HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    answer = _raw(hub.url, head.encode() + body)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]


def test_a_body_that_never_arrives_is_dropped_and_other_posts_are_refused(hub):
    head = f"POST /api/models/{QAT}/paths-info/main HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npaths=conf"
    assert _raw(hub.url, head.encode()) == b""  # closed after the 2 s head_timeout, no answer, no thread left waiting
    other = requests.post(f"{hub.url}/{QAT}/resolve/main/config.json", data=b"x", timeout=10)
    assert other.status_code == 405
    other = requests.post(f"{hub.url}/api/models/{QAT}/tree/main", data=b"x", timeout=10)
    assert other.status_code == 404
