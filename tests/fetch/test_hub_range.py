"""The lowest huggingface_hub that pyproject.toml declares, end to end against the mirror.

The rest of the suite runs the newest huggingface_hub (httpx-based from 1.0 on); 0.x hands out requests
sessions and responses instead. This installs the declared lower bound (read from pyproject.toml) with pip
into a side directory cached under ``~/.cache/zoo-tests`` and runs zoo in child processes that put it first
on ``sys.path``: every child asserts the version it imported. A failed install is a failure, not a skip: the
declared range must be the tested range. Cold, the install takes about 15 s (pip, the registry reachable);
warm, the three tests take about 20 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT, CliResult
from tests.fetch.conftest import MODEL, start_mirror
from zoo.catalog import resolve

OTHER = "obert-3l-90"  # in the mirror tree as well
ABSENT = "obert-12l-80"  # a catalog entry whose repo the mirror does not hold
TOKEN = "hf_rangeTestToken"

# Run first in every child: the huggingface_hub it imports is the one named by argv[1], else it fails.
PRELUDE = """\
import runpy, sys
import huggingface_hub
from packaging.version import Version
wanted = sys.argv.pop(1)
assert Version(huggingface_hub.__version__) == Version(wanted), f"imported huggingface_hub {huggingface_hub.__version__}, not {wanted}"
"""
CLI = PRELUDE + "sys.argv[0] = 'zoo'\nrunpy.run_module('zoo', run_name='__main__', alter_sys=True)\n"

# The Hub-facing calls zoo makes outside `zoo download` / `zoo catalog add`: the token lookup and the headers built
# from it, and the user's HF cache as huggingface_hub itself fills it (snapshot_download), read by try_to_load_from_cache.
PROBE = PRELUDE + """\
import json
from huggingface_hub import snapshot_download
from zoo import config
from zoo.fetch.sources import HubSource, hf_blob_claims, hf_cached
repo, endpoint = sys.argv[1:3]
snapshot_download(repo, endpoint=endpoint, cache_dir=config.hf_cache_dir())
found = hf_cached(repo, "main", "pytorch_model.bin")
print(json.dumps({"token": config.hf_token(), "authorization": HubSource(token=config.hf_token())._headers().get("authorization"),
                  "cached": str(found) if found else None, "claims": hf_blob_claims(found) if found else None}))
"""


def lowest_declared() -> str:
    """The ``>=`` bound of the huggingface_hub dependency in pyproject.toml."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if Requirement(d).name.replace("_", "-").lower() == "huggingface-hub")
    return next(s.version for s in req.specifier if s.operator == ">=")


def _install(version: str) -> Path:
    """``pip install --target`` huggingface_hub==version (with its dependencies), once per Python minor version."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo-tests"
    target = root / f"huggingface_hub-{version}-py{sys.version_info.major}{sys.version_info.minor}"
    if (target / "huggingface_hub").is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check",
                               "--target", str(partial), f"huggingface_hub=={version}"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"pip could not install huggingface_hub=={version}, the lower bound pyproject.toml declares "
                        f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)
        try:
            partial.rename(target)
        except OSError:  # another run installed it meanwhile
            pass
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def hub_lowest() -> tuple[str, Path]:
    version = lowest_declared()
    return version, _install(version)


@pytest.fixture
def run_lowest(hub_lowest: tuple[str, Path]):  # noqa: ANN201
    """Run a script (``CLI`` or ``PROBE``) in a child that imports the lowest huggingface_hub; the rest of its environment is the test's."""
    version, target = hub_lowest

    def run(script: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
        path = os.pathsep.join([str(target), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        proc = subprocess.run([sys.executable, "-c", script, version, *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "COLUMNS": "200", **(env or {}), "PYTHONPATH": path})
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


def _one_line_error(res: CliResult, needle: str) -> None:
    lines = res.err.splitlines()
    assert res.code == 1 and lines and lines[-1].startswith("error: ") and needle in lines[-1], res.err
    assert all(line.startswith("retry ") for line in lines[:-1]) and "Traceback" not in res.err, res.err


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_and_its_typed_errors(run_lowest, mirror, isolated_home, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    got = run_lowest(CLI, "download", MODEL, "--json")
    assert got.code == 0, got.err
    record = json.loads(got.out)
    assert len(record["commit"]) == 40 and record["files"]
    for f in record["files"]:
        assert f["action"] == "download" and f["sha256"] == mirror.sha256(MODEL, f["path"])
        assert _sha256(isolated_home / "models" / MODEL / f["path"]) == f["sha256"]
    by_path = {f["path"]: f for f in record["files"]}
    assert by_path["pytorch_model.bin"]["verified_by"].startswith("source sha256")  # the listing came through hub_get
    assert by_path["config.json"]["verified_by"].startswith("source git oid")

    _one_line_error(run_lowest(CLI, "download", ABSENT), f"repository {resolve(ABSENT).repo} not found")
    _one_line_error(run_lowest(CLI, "download", OTHER, "--revision", "0" * 40, "--no-validate"), f"has no revision '{'0' * 40}'")
    down = run_lowest(CLI, "download", OTHER, env={"HF_ENDPOINT": "http://127.0.0.1:9", "ZOO_RETRIES": "0"})
    _one_line_error(down, "cannot reach the Hub")


def test_token_and_the_users_hf_cache(run_lowest, mirror, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    repo = resolve(OTHER).repo
    probe = run_lowest(PROBE, repo, mirror.url)
    assert probe.code == 0, probe.err
    seen = json.loads(probe.out)
    assert seen["token"] == TOKEN and seen["authorization"] == f"Bearer {TOKEN}"
    assert seen["cached"] and _sha256(Path(seen["cached"])) == mirror.sha256(OTHER, "pytorch_model.bin")
    assert seen["claims"][0] == mirror.sha256(OTHER, "pytorch_model.bin")  # the blob is named by the sha256 ETag
    mirror.stop()
    offline = run_lowest(CLI, "download", OTHER, "--offline", "--json")
    assert offline.code == 0, offline.err
    files = json.loads(offline.out)["files"]
    assert {f["action"] for f in files} == {"hf-cache"} and all(f["sha256"] == mirror.sha256(OTHER, f["path"]) for f in files)


def test_catalog_add_from_the_hub(run_lowest, private_tree, isolated_home):
    shutil.copytree(private_tree / resolve(OTHER).repo, private_tree / "team" / "my-bert")
    m = start_mirror(private_tree)
    try:
        env = {"HF_ENDPOINT": m.url}
        added = run_lowest(CLI, "catalog", "add", "team/my-bert", "--name", "team-bert", "--json", env=env)
        assert added.code == 0, added.err
        stub = tomllib.loads((isolated_home / "stubs" / "team-bert.toml").read_text())
        assert stub["source"]["repo"] == "team/my-bert" and stub["architecture"]["layers"] == 3
        served = {p.name: _sha256(p) for p in (private_tree / "team" / "my-bert").iterdir() if p.is_file() and not p.name.startswith(".")}
        assert {f["path"]: f["sha256"] for f in stub["files"]} == served
        _one_line_error(run_lowest(CLI, "catalog", "add", "team/nope", "--name", "nope", env=env), "repository team/nope not found")
    finally:
        m.stop()
