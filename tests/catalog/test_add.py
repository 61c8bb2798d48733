"""``zoo catalog add``: a synthetic checkpoint becomes an entry that downloads, verifies, loads and answers like any other."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import zoo
from zoo.synth import SynthSpec, write_repo

from ..fetch.conftest import SMALL, start_mirror

NAME = "my-bert-3l-90"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("mine") / "team" / "my-bert", SynthSpec(layers=3, sparsity=90, pattern="unstructured", **SMALL))


def test_add_local_dir_then_download_load_answer(cli, repo: Path, isolated_home: Path) -> None:
    r = cli("catalog", "add", str(repo), "--name", NAME, "--metric", "f1=88.1:our eval, 2026-01", "--json")
    assert r.code == 0, r.err
    stub = tomllib.loads((isolated_home / "stubs" / f"{NAME}.toml").read_text())
    assert (stub["architecture"]["layers"], stub["sparsity"]["pattern"], stub["quantization"]["scheme"]) == (3, "unstructured", "none")
    assert abs(stub["sparsity"]["target"] - 90) < 1
    assert {f["path"] for f in stub["files"]} == {p.name for p in repo.iterdir()} and all(len(f["sha256"]) == 64 for f in stub["files"])
    card = cli("show", NAME, "--json").json()
    assert card["metrics"][0]["value"] == 88.1 and card["repo"] == f"local/{NAME}"
    assert NAME in cli("list").out and "obert-3l-90" in cli("list").out  # merged with the bundled catalog
    r = cli("download", NAME, "--from", str(repo))
    assert r.code == 0, r.err
    qa = zoo.load(NAME)
    assert qa(question="what is it?", context="it is a small sparse model")["answer"] is not None


def test_add_clash_is_an_error(cli, repo: Path, isolated_home: Path) -> None:
    r = cli("catalog", "add", str(repo), "--name", "obert-3l-90")
    assert r.code == 1 and r.err == "error: cannot add obert-3l-90: 'obert-3l-90' is already the catalog entry obert-3l-90 (choose another --name)\n"
    assert not (isolated_home / "stubs").exists() or not list((isolated_home / "stubs").iterdir())
    (isolated_home / "stubs").mkdir(exist_ok=True)  # a hand-written stub shadowing a bundled alias
    text = (Path(__file__).parents[2] / "stubs" / "obert-3l-90.toml").read_text().replace('name = "obert-3l-90"', 'name = "mine-3l"', 1)
    (isolated_home / "stubs" / "mine-3l.toml").write_text(text)
    r = cli("list")
    assert r.code == 1 and "mine-3l.toml: name" in r.err and "is already in the catalog at sqlite:///" in r.err and r.err.count("\n") == 1


def test_add_hub_id_from_mirror_and_push(cli, repo: Path, tmp_path: Path, pg_url: str) -> None:
    """A Hub repo id is fetched from HF_ENDPOINT (the test mirror); --to pushes it to the team's PostgreSQL."""
    mirror = start_mirror(repo.parent.parent)
    try:
        env = {"HF_ENDPOINT": mirror.url}
        r = cli("catalog", "push", pg_url)
        assert r.code == 0, r.err
        r = cli("catalog", "add", "team/my-bert", "--name", "team-bert", "--to", pg_url, "--json", env=env)
        assert r.code == 0, r.err
        assert r.json()["pushed_to"].startswith("postgresql://zoo:***@") and r.json()["stub"] is None
        env["ZOO_CATALOG_URL"] = pg_url
        card = cli("show", "team/my-bert", "--json", env=env).json()  # the Hub id is an alias
        assert card["name"] == "team-bert" and card["layers"] == 3
        r = cli("download", "team-bert", env=env)
        assert r.code == 0, r.err
        r = cli("run", "team-bert", "--question", "what?", "--context", "a sparse model answers", "--json", env=env)
        assert r.code == 0, r.err
    finally:
        mirror.stop()
