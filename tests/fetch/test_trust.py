"""Nothing unvouched is installed, and no hostile server can park, crash or fool `zoo download` (issue 13, parts 1 and 3)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.fetch.conftest import MODEL, start_mirror
from zoo.catalog import resolve

CKPT = "pytorch_model.bin"
ZERO = "0" * 40


def _files(res) -> dict[str, dict]:  # noqa: ANN001
    assert res.code == 0, res.err
    return {f["path"]: f for f in res.json()["files"]}


def _one_line(res, *needles: str) -> None:  # noqa: ANN001
    """Exit 1 with one error line, last; only status lines (retries, lock waits) may come before it."""
    lines = res.err.splitlines()
    assert res.code == 1 and lines and lines[-1].startswith("error: "), res.err
    assert all(line.startswith(("retry ", "waiting for ")) for line in lines[:-1]), res.err
    assert "Traceback" not in res.err
    for needle in needles:
        assert needle in res.err, res.err


def _pins(home: Path) -> dict[str, str]:
    return dict(sqlite3.connect(home / "state.db").execute("select path, sha256 from pins").fetchall())


# -- 1. the integrity chain ---------------------------------------------------------------------------
def test_a_listing_without_hashes_still_checks_the_response_headers(cli, mirror):
    mirror.faults.bare_listing = True  # no lfs.sha256, no blobId: only ETag / X-Linked-Etag name the content
    mirror.faults.flip[CKPT] = 1
    files = _files(cli("download", MODEL, "--json", "--no-validate"))
    assert files[CKPT]["sha256"] == mirror.sha256(MODEL, CKPT)  # the flipped copy was caught and fetched again
    assert [p for p, _ in mirror.faults.gets].count(CKPT) == 2
    assert files[CKPT]["verified_by"].startswith("response header sha256")
    assert files["config.json"]["verified_by"].startswith("response header git oid")


def test_nothing_vouches_is_refused_unless_trust_on_first_use(cli, mirror, isolated_home, tmp_path):
    mirror.faults.bare_listing = True
    mirror.faults.hash_headers = False
    refused = cli("download", MODEL, "--no-validate")
    _one_line(refused, "nothing vouches for this file", "--trust-on-first-use", "ZOO_TRUST_ON_FIRST_USE")
    assert not (isolated_home / "manifests" / f"{MODEL}.json").exists()
    trusted = cli("download", MODEL, "--no-validate", "--trust-on-first-use")
    assert trusted.code == 0, trusted.err
    assert "WARNING: nothing vouched for" in trusted.err
    assert _pins(isolated_home)[CKPT] == mirror.sha256(MODEL, CKPT)  # pinned: a later change is refused
    other = tmp_path / "other-home"
    by_env = cli("download", MODEL, "--no-validate", "--json", env={"ZOO_HOME": str(other), "ZOO_TRUST_ON_FIRST_USE": "1"})
    assert by_env.json()["trusted_on_first_use"] and "WARNING" in by_env.err


def test_a_plain_mirror_is_checked_against_the_hubs_listing(cli, mirror, mirror_tree, monkeypatch):
    plain = start_mirror(mirror_tree)  # no .zoo-hashes.json, no hash headers, and it corrupts the checkpoint
    plain.faults.hashes_file, plain.faults.hash_headers = False, False
    plain.faults.flip[CKPT] = -1
    try:
        files = _files(cli("download", MODEL, "--mirror", plain.url, "--json", "--no-validate"))
    finally:
        plain.stop()
    assert files[CKPT]["sha256"] == mirror.sha256(MODEL, CKPT)
    assert files[CKPT]["origin"] == mirror.url  # the mirror corrupted it twice; the Hub served it
    assert [p for p, _ in plain.faults.gets].count(CKPT) == 2
    assert files["vocab.txt"]["origin"] == plain.url and files["vocab.txt"]["verified_by"].startswith("source")


def test_a_checkpoint_the_converter_refuses_is_uninstalled(cli, private_tree, isolated_home, monkeypatch):
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("echo pwned",))

    repo = private_tree / resolve(MODEL).repo
    with zipfile.ZipFile(repo / CKPT, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
        zf.writestr("archive/version", "3\n")
    m = start_mirror(private_tree)
    monkeypatch.setenv("HF_ENDPOINT", m.url)
    try:
        res = cli("download", MODEL)
    finally:
        m.stop()
    _one_line(res, "uninstalled")
    assert "pwned" not in res.out
    assert not (isolated_home / "manifests" / f"{MODEL}.json").exists()
    assert cli("cache", "list", "--json").json()["models"] == []


def test_bytes_changed_with_the_mtime_restored_are_not_trusted(cli, mirror, isolated_home):
    from zoo.fetch.store import Store

    assert cli("download", MODEL, "--no-validate").code == 0
    blob = (isolated_home / "models" / MODEL / "vocab.txt").resolve()
    sha = blob.name.removeprefix("sha256-")
    st = blob.stat()
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"the", b"teh", 1))  # same size
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    blob.chmod(0o444)
    assert blob.stat().st_mtime_ns == st.st_mtime_ns and blob.stat().st_size == st.st_size
    assert not Store(isolated_home).is_verified(sha)
    files = _files(cli("download", MODEL, "--json", "--no-validate"))
    assert files["vocab.txt"]["action"] == "download"  # re-hashed, found wrong, fetched again
    assert hashlib.sha256((isolated_home / "models" / MODEL / "vocab.txt").read_bytes()).hexdigest() == sha


# -- 3. hostile servers -------------------------------------------------------------------------------
def _resolve_path(name: str = CKPT) -> str:
    return f"/{resolve(MODEL).repo}/resolve/main/{name}"


def test_retry_after_is_capped_and_retries_have_a_budget(cli, mirror):
    mirror.faults.answer[CKPT] = (429, {"Retry-After": "100000"})
    capped = cli("download", MODEL, "--no-validate", env={"ZOO_MAX_RETRY_AFTER": "0.05", "ZOO_RETRIES": "2"})
    _one_line(capped, "HTTP 429", "gave up after 2 retries")
    mirror.faults.answer[CKPT] = (503, {"Retry-After": "1"})
    budget = cli("download", MODEL, "--no-validate", env={"ZOO_RETRY_BUDGET": "0.5", "ZOO_RETRIES": "1000"})
    _one_line(budget, "HTTP 503", "s of waiting")


def test_a_trickling_server_is_dropped(cli, mirror):
    mirror.faults.trickle = 0.02  # 50 bytes/s: each read returns, so a per-read timeout never fires
    res = cli("download", MODEL, "--no-validate",
              env={"ZOO_STALL_TIMEOUT": "0.3", "ZOO_MIN_RATE": "1000", "ZOO_RETRIES": "1"})
    _one_line(res, "stalled")


@pytest.mark.parametrize(("location", "needle"), [(_resolve_path(), "redirect loop"),
                                                  ("file:///etc/passwd", "refused to follow")])
def test_bad_redirects_are_one_line_errors(cli, mirror, location, needle):
    mirror.faults.answer[CKPT] = (302, {"Location": location})
    _one_line(cli("download", MODEL, "--no-validate"), needle)


def test_an_oversized_listing_is_refused(cli, mirror):
    mirror.faults.listing_padding = 100_000
    _one_line(cli("download", MODEL, "--no-validate", env={"ZOO_MAX_API_BYTES": "50000", "ZOO_RETRIES": "0"}),
              "larger than 50000 bytes")


def test_an_unknown_revision_says_so(cli, mirror):
    res = cli("download", MODEL, "--revision", ZERO, "--no-validate")
    _one_line(res, f"has no revision '{ZERO}'")
    assert "check the network" not in res.err


# -- typed fetch errors -------------------------------------------------------------------------------
def test_fetch_errors_are_typed_with_a_status(mirror, tmp_path):
    from zoo.errors import FetchError, RemoteNotFoundError
    from zoo.fetch.hashing import Expected
    from zoo.fetch.transfer import HttpFetcher, Limits

    fetcher = HttpFetcher(limits=Limits(retries=0, backoff=0))
    with pytest.raises(RemoteNotFoundError) as missing:
        fetcher.fetch(mirror.url + _resolve_path("tokenizer.json"), tmp_path / "a.part", Expected())
    assert missing.value.status == 404
    mirror.faults.answer[CKPT] = (403, {})
    with pytest.raises(FetchError) as denied:
        fetcher.fetch(mirror.url + _resolve_path(), tmp_path / "b.part", Expected())
    assert denied.value.status == 403 and not isinstance(denied.value, RemoteNotFoundError)


def test_fetch_settings_are_read_at_call_time_and_home_is_honoured(mirror, isolated_home, tmp_path, monkeypatch):
    import zoo.fetch
    from zoo.fetch import download
    from zoo.fetch.transfer import Limits

    for module in Path(zoo.fetch.__file__).parent.glob("*.py"):
        assert "os.environ" not in module.read_text(), module  # configuration comes from zoo.config, at call time
    monkeypatch.setenv("ZOO_RETRIES", "7")
    assert Limits.from_config().retries == 7
    other = tmp_path / "elsewhere"
    result = download(MODEL, home=other)
    assert result.path == other / "models" / MODEL and (result.path / "config.json").exists()
    rows = sqlite3.connect(other / "state.db").execute("select name from installs").fetchall()
    assert rows == [(MODEL,)]
    assert not (isolated_home / "models").exists() and not (isolated_home / "state.db").exists()
    assert json.loads((other / "manifests" / f"{MODEL}.json").read_text())["name"] == MODEL
