"""`zoo mirror serve` speaks the Hub's download protocol; `zoo mirror pull` feeds air-gapped installs."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.fetch.conftest import MODEL
from zoo.catalog import resolve

REPO = resolve(MODEL).repo


def test_hf_hub_download_and_snapshot_download_work_against_the_mirror(mirror, tmp_path):
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.utils import EntryNotFoundError, RevisionNotFoundError

    one = hf_hub_download(REPO, "pytorch_model.bin", endpoint=mirror.url, cache_dir=tmp_path / "a")
    assert Path(one).read_bytes() == (mirror.repo_dir() / "pytorch_model.bin").read_bytes()
    snap = Path(snapshot_download(REPO, endpoint=mirror.url, cache_dir=tmp_path / "b"))
    assert sorted(p.name for p in snap.iterdir()) == sorted(p.name for p in mirror.repo_dir().iterdir())
    for p in mirror.repo_dir().iterdir():
        assert (snap / p.name).read_bytes() == p.read_bytes()
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="v9", endpoint=mirror.url, cache_dir=tmp_path / "c")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "nope.json", endpoint=mirror.url, cache_dir=tmp_path / "c")


def test_resolve_headers_and_ranges(mirror):
    url = f"{mirror.url}/{REPO}/resolve/main/pytorch_model.bin"
    data = (mirror.repo_dir() / "pytorch_model.bin").read_bytes()
    head = requests.head(url, timeout=10)
    assert head.status_code == 200
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert int(head.headers["X-Linked-Size"]) == len(data) == int(head.headers["Content-Length"])
    commit = head.headers["X-Repo-Commit"]
    small = requests.head(f"{mirror.url}/{REPO}/resolve/{commit}/config.json", timeout=10)
    cfg = (mirror.repo_dir() / "config.json").read_bytes()
    assert small.headers["ETag"].strip('"') == hashlib.sha1(b"blob %d\0" % len(cfg) + cfg).hexdigest()  # git blob id
    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = requests.get(url, headers={"Range": "bytes=-10"}, timeout=10)
    assert tail.content == data[-10:]
    bad = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=10)
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("path", [
    "/{repo}/resolve/main/../../../../etc/passwd",
    "/{repo}/resolve/main/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/{repo}/../../../etc/passwd",
    "/api/models/../../etc",
    "/{repo}/resolve/main//etc/passwd",
])
def test_paths_outside_the_mirror_are_refused(mirror, path):
    secret = mirror.root.parent / "secret.txt"
    secret.write_text("do not serve")
    host = urlsplit(mirror.url)
    con = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    con.request("GET", path.format(repo=REPO).replace("etc/passwd", "secret.txt"))  # sent as is, not normalized
    resp = con.getresponse()
    body = resp.read()
    assert resp.status in (403, 404)
    assert b"do not serve" not in body


def test_pull_then_install_from_the_directory_or_a_plain_mirror(cli, mirror, tmp_path, monkeypatch):
    assert cli("download", MODEL).code == 0
    out = tmp_path / "airgap"
    pulled = cli("mirror", "pull", MODEL, "--to", str(out), "--json")
    assert pulled.code == 0, pulled.err
    assert (out / REPO / "pytorch_model.bin").read_bytes() == (mirror.repo_dir() / "pytorch_model.bin").read_bytes()
    mirror.stop()

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "site-a"))
    local = cli("download", MODEL, "--from", str(out), "--json")
    assert local.code == 0, local.err
    assert {f["origin"] for f in local.json()["files"]} == {str(out.resolve())}
    assert all("source sha256" in f["verified_by"] for f in local.json()["files"])  # from the pulled hashes file

    from tests.fetch.conftest import start_mirror

    plain = start_mirror(out)  # the pulled tree, served as a plain HTTP mirror
    try:
        monkeypatch.setenv("ZOO_HOME", str(tmp_path / "site-b"))
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the Hub is unreachable; the mirror comes first
        res = cli("download", MODEL, "--mirror", plain.url, "--json")
    finally:
        plain.stop()
    assert res.code == 0, res.err
    assert {f["sha256"] for f in res.json()["files"]} == {f["sha256"] for f in local.json()["files"]}


def test_mirror_serve_command(mirror_tree, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "mirror", "serve", str(mirror_tree), "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        line = proc.stderr.readline()
        assert "serving 2 repos" in line
        url = line.split(" at ")[1].strip()
        from huggingface_hub import hf_hub_download

        got = hf_hub_download(REPO, "config.json", endpoint=url, cache_dir=tmp_path)
        assert Path(got).read_bytes() == (mirror_tree / REPO / "config.json").read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    missing = subprocess.run([sys.executable, "-m", "zoo", "mirror", "serve", str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 1 and "is not a directory" in missing.stderr
