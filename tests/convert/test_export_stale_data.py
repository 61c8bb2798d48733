"""Re-exporting to the same place leaves only the files the new export uses: a one-file graph written where an
external-data export was removes the data file it no longer reads (NAME.onnx.data, or model.onnx_data and
model_quantized.onnx_data with --format optimum), never a user's own files, and never a link or directory at that
name (one stderr line says so); the other way round, the new data file simply appears beside the graph."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import onnx
import pytest

from tests.convert.test_export_memory import _run

OPTIMUM_COPIED = {"config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}


def _export(cli, repo: Path, out: Path, *extra: str) -> dict:  # noqa: ANN001
    result = cli("export", str(repo), "-o", str(out), "--json", *extra)
    assert result.code == 0 and result.err == "", result.err
    return result.json()


def _locations(graph: Path) -> set[str]:
    """The data files ``graph`` reads its weights from."""
    model = onnx.load(str(graph), load_external_data=False)
    return {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}


@pytest.fixture(scope="module")
def repo(repo_factory):  # noqa: ANN001, ANN201
    return repo_factory(layers=1, sparsity=80, pattern="block4", qat=True, seed=31)


def test_one_file_after_external_data_removes_the_data_file_and_back(cli, repo: Path, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "m.onnx"
    (tmp_path / "m.onnx.data.bak").write_bytes(b"the user's own")  # names near the data file's are never touched
    (tmp_path / "other.onnx.data").write_bytes(b"the user's own")
    mine = {"m.onnx.data.bak", "other.onnx.data"}
    split = _export(cli, repo, out, "--fp32", "--external-data")
    assert {p.name for p in tmp_path.iterdir()} == mine | {"m.onnx", "m.onnx.data"} and split["data"] is not None

    one = _export(cli, repo, out, "--fp32")
    assert {p.name for p in tmp_path.iterdir()} == mine | {"m.onnx"}
    assert one["data"] is None and one["removed"] == [str(tmp_path / "m.onnx.data")]
    from zoo import state

    recorded = {a["path"]: a["kind"] for a in state.artifacts(str(repo))}
    assert recorded.get(str(out.resolve())) == "onnx-fp32" and str((tmp_path / "m.onnx.data").resolve()) not in recorded, recorded
    assert _locations(out) == set() and len(onnx.load(str(out)).graph.initializer) > 0
    assert len(_run(out)) == 2

    again = _export(cli, repo, out, "--fp32", "--external-data")  # and back: the data file appears again, nothing stale
    assert {p.name for p in tmp_path.iterdir()} == mine | {"m.onnx", "m.onnx.data"}
    assert again["removed"] == [] and again["data"]["path"] == str(tmp_path / "m.onnx.data")
    assert _locations(out) == {"m.onnx.data"} and len(_run(out)) == 2
    assert all((tmp_path / name).read_bytes() == b"the user's own" for name in mine)


def test_optimum_one_file_after_external_data_removes_both_data_files_and_back(cli, repo: Path, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "optimum"
    graphs = {"model.onnx", "model_quantized.onnx"}
    split = _export(cli, repo, out, "--format", "optimum", "--external-data")
    assert {p.name for p in out.iterdir()} == OPTIMUM_COPIED | graphs | {f"{g}_data" for g in graphs} == set(split["files"])

    one = _export(cli, repo, out, "--format", "optimum")
    assert {p.name for p in out.iterdir()} == OPTIMUM_COPIED | graphs == set(one["files"])
    assert sorted(one["removed"]) == sorted(str(out / f"{g}_data") for g in graphs)
    for graph in graphs:
        assert _locations(out / graph) == set() and len(_run(out / graph)) == 2

    again = _export(cli, repo, out, "--format", "optimum", "--external-data")
    assert {p.name for p in out.iterdir()} == OPTIMUM_COPIED | graphs | {f"{g}_data" for g in graphs} and again["removed"] == []
    for graph in graphs:
        assert _locations(out / graph) == {f"{graph}_data"} and len(_run(out / graph)) == 2


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="symlinks")
def test_a_link_or_directory_at_the_data_name_is_left_and_said_so(cli, repo: Path, tmp_path: Path) -> None:  # noqa: ANN001
    victim = tmp_path / "victim"
    victim.write_bytes(b"not zoo's")
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.onnx.data").symlink_to(victim)
    (out / "n.onnx.data").mkdir()
    (out / "n.onnx.data" / "inside").write_bytes(b"not zoo's")
    for name, what in (("m.onnx", "a link"), ("n.onnx", "a directory")):
        result = cli("export", str(repo), "--fp32", "-o", str(out / name), "--json")
        assert result.code == 0, result.err
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("warning: left ") and f"{name}.data alone: it is {what}" in lines[0], result.err
        assert result.json()["removed"] == []
        assert len(_run(out / name)) == 2
    assert (out / "m.onnx.data").is_symlink() and victim.read_bytes() == b"not zoo's"
    assert (out / "n.onnx.data" / "inside").read_bytes() == b"not zoo's"
    assert {p.name for p in out.iterdir()} == {"m.onnx", "m.onnx.data", "n.onnx", "n.onnx.data"}
