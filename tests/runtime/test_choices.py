"""Each Linear's measured packing is kept in the home, so a second load of a model packs without measuring; the record
is per CPU, zoo version and thread count, and a damaged, foreign or unwritable record only means measuring again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zoo.convert.repo import load_model
from zoo.runtime.engine import Engine, compile
from zoo.synth import SynthSpec, write_repo


@pytest.fixture(scope="module", params=["fp32", "qat"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> object:
    kw = dict(sparsity=85, pattern="unstructured") if request.param == "fp32" else dict(sparsity=80, pattern="block4", qat=True)
    spec = SynthSpec(layers=2, seed=7, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=64, **kw)
    return load_model(write_repo(tmp_path_factory.mktemp(request.param), spec))


def _linears(engine: Engine) -> list:
    return [p for layer in engine.layers for p in (layer.qkv, layer.attn_out, layer.ffn_in, layer.ffn_out)]


def _measured(engine: Engine) -> int:
    return sum(1 for p in _linears(engine) if p.timings)


def test_a_second_load_takes_the_kept_packings_without_measuring(tmp_path: Path, model: object) -> None:
    path = tmp_path / "runtime" / "choices.json"
    lines: list[str] = []
    first = compile(model, threads=2, backend="sparse", choices=path, on_status=lines.append)
    assert path.is_file() and _measured(first) > 0
    assert lines == []  # packing two small layers takes well under the second after which a status line is due
    data = json.loads(path.read_text())
    assert data["identity"]["threads"] == 2 and len(data["choices"]) == _measured(first)
    lines.clear()
    second = compile(model, threads=2, backend="sparse", choices=path, on_status=lines.append)
    assert _measured(second) == 0
    assert [p.label for p in _linears(second)] == [p.label for p in _linears(first)]
    ids = np.random.default_rng(0).integers(0, 1200, (2, 30))
    a, b = first(ids), second(ids)
    for name in a:
        assert np.array_equal(a[name], b[name])


def test_another_thread_count_measures_again(tmp_path: Path, model: object) -> None:
    path = tmp_path / "choices.json"
    compile(model, threads=2, backend="sparse", choices=path)
    other = compile(model, threads=1, backend="sparse", choices=path)
    assert _measured(other) > 0
    assert json.loads(path.read_text())["identity"]["threads"] == 1


@pytest.mark.parametrize("damage", ["not json", "a list", "wrong identity", "labels of unknown kinds", "a directory"])
def test_a_damaged_record_is_measured_over(tmp_path: Path, model: object, damage: str) -> None:
    path = tmp_path / "choices.json"
    good = compile(model, threads=2, backend="sparse", choices=path)
    data = json.loads(path.read_text())
    if damage == "not json":
        path.write_text("{not json")
    elif damage == "a list":
        path.write_text("[1, 2]")
    elif damage == "wrong identity":
        path.write_text(json.dumps({**data, "identity": {**data["identity"], "cpu": "0" * 16}}))
    elif damage == "labels of unknown kinds":
        path.write_text(json.dumps({**data, "choices": {k: "warp-drive/99" for k in data["choices"]}}))
    else:
        path.unlink()
        path.mkdir()
    engine = compile(model, threads=2, backend="sparse", choices=path)
    assert _measured(engine) > 0
    ids = np.random.default_rng(1).integers(0, 1200, (1, 17))
    for name, value in good(ids).items():
        np.testing.assert_allclose(engine(ids)[name], value, atol=1e-4)
    if damage != "a directory":
        assert json.loads(path.read_text())["identity"] == data["identity"]  # replaced by a good record


def test_a_home_that_refuses_the_record_says_so_and_still_compiles(tmp_path: Path, model: object) -> None:
    blocker = tmp_path / "runtime"
    blocker.write_text("a file where the runtime directory should be")  # mkdir fails, as on a read-only or full home
    lines: list[str] = []
    engine = compile(model, threads=2, backend="sparse", choices=blocker / "choices.json", on_status=lines.append)
    assert engine.layers and any("could not keep the measured packings" in line for line in lines)
    assert blocker.read_text().startswith("a file")
