"""Fault cases through the real CLI against a mirror that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fetch.conftest import MODEL

CKPT = "pytorch_model.bin"


def _blob_files(home: Path) -> set[str]:
    return {p.name for p in (home / "blobs").glob("sha256-*") if not p.name.endswith(".ok")} if (home / "blobs").exists() else set()


def _assert_cache_consistent(home: Path) -> None:
    """Every blob in the store hashes to its own name: nothing partial or corrupt ever sits at a final path."""
    for name in _blob_files(home):
        assert hashlib.sha256((home / "blobs" / name).read_bytes()).hexdigest() == name.removeprefix("sha256-")


def _ok(res) -> None:  # noqa: ANN001
    assert res.code == 0, res.err


def test_server_errors_then_recovery(cli, mirror):
    mirror.faults.fail_first = 3
    _ok(cli("download", MODEL))
    assert mirror.faults.statuses[500] == 3
    assert cli("verify", MODEL).code == 0


def test_connection_drop_resumes_instead_of_restarting(cli, mirror, isolated_home):
    size = mirror.size(MODEL, CKPT)
    mirror.faults.drop_after[CKPT] = size // 3
    _ok(cli("download", MODEL))
    ranges = [r for p, r in mirror.faults.gets if p == CKPT]
    assert ranges == [None, f"bytes={size // 3}-"]
    assert mirror.faults.body_bytes[CKPT] == size  # every byte sent exactly once
    _assert_cache_consistent(isolated_home)


def test_bit_flipped_file_is_retried_once_then_rejected(cli, mirror, isolated_home):
    mirror.faults.flip[CKPT] = -1
    res = cli("download", MODEL)
    assert res.code == 1 and res.err.count("\n") == 1
    expected = mirror.sha256(MODEL, CKPT)
    assert f"{MODEL}/{CKPT}: sha256 mismatch: expected {expected}" in res.err and ", got " in res.err
    assert [p for p, _ in mirror.faults.gets].count(CKPT) == 2  # deleted, fetched once more, rejected again
    assert f"sha256-{expected}" not in _blob_files(isolated_home)
    assert not (isolated_home / "manifests" / f"{MODEL}.json").exists()
    assert not list((isolated_home / "partial").glob("*.part")) or all(
        p.stat().st_size == 0 for p in (isolated_home / "partial").glob("*.part"))
    _assert_cache_consistent(isolated_home)


def test_one_bad_copy_is_replaced_by_the_retry(cli, mirror):
    mirror.faults.flip[CKPT] = 1
    res = cli("download", MODEL, "--json")
    assert res.code == 0, res.err
    assert [p for p, _ in mirror.faults.gets].count(CKPT) == 2
    assert next(f for f in res.json()["files"] if f["path"] == CKPT)["sha256"] == mirror.sha256(MODEL, CKPT)


def _spawn(*args: str, **kw: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zoo", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"}, **kw)  # type: ignore[call-overload]


def _wait_for_partial(home: Path, proc: subprocess.Popen, minimum: int = 1) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = list((home / "partial").glob("*.part")) if (home / "partial").exists() else []
        sizes = [p.stat().st_size for p in parts]
        if sizes and max(sizes) >= minimum:
            return max(sizes)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("the download never started")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_mid_file_then_rerun_resumes(cli, mirror, isolated_home, sig):
    size = mirror.size(MODEL, CKPT)
    mirror.faults.delay = 0.01  # ~1.6 MB/s, so the process is surely mid-file when it is stopped
    proc = _spawn("download", MODEL)
    _wait_for_partial(isolated_home, proc, minimum=64 * 1024)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:  # Ctrl-C: one line, no traceback, exit 130
        assert proc.returncode == 130 and err.strip().startswith("interrupted") and err.strip().count("\n") == 0, err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (isolated_home / "manifests" / f"{MODEL}.json").exists()
    assert f"sha256-{mirror.sha256(MODEL, CKPT)}" not in _blob_files(isolated_home)
    _assert_cache_consistent(isolated_home)
    kept = max(p.stat().st_size for p in (isolated_home / "partial").glob("*.part"))
    assert 0 < kept < size
    mirror.faults.delay = 0
    _ok(cli("download", MODEL))
    resumed = [r for p, r in mirror.faults.gets if p == CKPT][-1]
    assert resumed == f"bytes={kept}-"
    assert cli("verify", MODEL).code == 0
    assert not list((isolated_home / "partial").glob("*.part"))


def test_eight_processes_download_once_and_all_succeed(mirror, isolated_home):
    mirror.faults.delay = 0.001
    procs = [_spawn("download", MODEL, "--json") for _ in range(8)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e for _, e in results]
    for name in ("config.json", CKPT, "vocab.txt", "recipe.yaml"):
        assert mirror.faults.body_bytes[name] == mirror.size(MODEL, name)  # each byte fetched once
    assert sum(1 for p, _ in mirror.faults.gets if p == CKPT) == 1
    _assert_cache_consistent(isolated_home)


def test_disk_full_mid_write_is_one_line_and_the_cache_stays_intact(cli, mirror, isolated_home):
    limit = mirror.size(MODEL, CKPT) // 2

    def small_disk() -> None:  # writes past `limit` bytes fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "zoo", "download", MODEL], capture_output=True, text=True,
                          preexec_fn=small_disk, env=os.environ.copy(), timeout=300)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: no space left writing") and "partial download is kept" in proc.stderr
    assert not (isolated_home / "manifests" / f"{MODEL}.json").exists()
    _assert_cache_consistent(isolated_home)
    _ok(cli("download", MODEL))  # room again: resumes from what was written
    assert [r for p, r in mirror.faults.gets if p == CKPT][-1] == f"bytes={limit}-"


def test_not_enough_space_is_refused_before_fetching(mirror, isolated_home, monkeypatch):
    import shutil
    from collections import namedtuple

    from zoo.errors import DiskFullError
    from zoo.fetch import download

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(DiskFullError, match="not enough disk space"):
        download(MODEL)
    assert [p for p, _ in mirror.faults.gets] == []
    assert _blob_files(isolated_home) == set()
