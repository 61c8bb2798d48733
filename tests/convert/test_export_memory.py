"""``zoo export`` streams the ONNX file (issue #14): memory near the model's own size, the same bytes as before,
and the external-data layout for graphs over protobuf's 2 GB limit (or on request) that onnxruntime loads."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from zoo.convert import onnx_export, onnx_file
from zoo.convert.repo import load_model
from zoo.errors import ExportError

FEED = {"input_ids": np.array([[101, 7, 8, 9, 10, 102]], dtype=np.int64), "attention_mask": np.ones((1, 6), dtype=np.int64),
        "token_type_ids": np.array([[0, 0, 0, 1, 1, 1]], dtype=np.int64)}
META = {"source_repo": "here", "checkpoint_sha256": "ab" * 32}


@pytest.fixture(scope="module")
def qat_model(repo_factory):  # noqa: ANN001, ANN201
    return load_model(repo_factory(layers=2, sparsity=80, pattern="block4", qat=True, seed=14))


def _run(path: Path) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, FEED)


@pytest.mark.parametrize("quantized", [False, True])
def test_streamed_file_is_byte_for_byte_what_onnx_serializes(qat_model, tmp_path: Path, quantized: bool) -> None:  # noqa: ANN001
    done = onnx_export.write_onnx(qat_model, tmp_path / "m.onnx", quantized=quantized, metadata=META)
    reference = onnx_export.build_graph(qat_model, quantized)  # the whole ModelProto in memory, as export used to build it
    helper.set_model_props(reference, META)
    data = (tmp_path / "m.onnx").read_bytes()
    assert data == reference.SerializeToString()
    assert (done.sha256, done.size, done.data) == (hashlib.sha256(data).hexdigest(), len(data), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no data file, no temporary left behind


@pytest.mark.parametrize("quantized", [False, True])
def test_external_data_layout_loads_and_answers_the_same(qat_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         quantized: bool) -> None:  # noqa: ANN001
    monkeypatch.setattr(onnx_file, "ALIGN_ABOVE", 4096)  # the test model has no 1 MiB tensor; align the larger ones
    one = onnx_export.write_onnx(qat_model, tmp_path / "one.onnx", quantized=quantized, metadata=META)
    split = onnx_export.write_onnx(qat_model, tmp_path / "split.onnx", quantized=quantized, metadata=META, external_data=True)
    assert split.data is not None and split.data.path == tmp_path / "split.onnx.data"
    assert split.data.sha256 == hashlib.sha256(split.data.path.read_bytes()).hexdigest() and split.size < one.size / 4
    for got, want in zip(_run(tmp_path / "split.onnx"), _run(tmp_path / "one.onnx"), strict=True):
        np.testing.assert_array_equal(got, want)

    graph = onnx.load(str(tmp_path / "split.onnx"), load_external_data=False)
    assert {p.key: p.value for p in graph.metadata_props} == META
    external = {t.name: {e.key: e.value for e in t.external_data} for t in graph.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL}
    sizes = {name: arr.nbytes for name, arr in onnx_export._build(qat_model, quantized, None).inits}
    assert set(external) == {name for name, size in sizes.items() if size >= onnx_file.EXTERNAL_ABOVE}
    assert {e["location"] for e in external.values()} == {"split.onnx.data"}
    assert all(int(e["offset"]) % onnx_file.ALIGN == 0 for n, e in external.items() if sizes[n] >= 4096)
    full = onnx.load(str(tmp_path / "split.onnx"))  # with the data file: the same tensors as the one-file graph
    want = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "one.onnx")).graph.initializer}
    for tensor in full.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), want[tensor.name])


def test_a_graph_over_the_protobuf_limit_keeps_its_weights_outside(qat_model, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(onnx_file, "SINGLE_FILE_LIMIT", 100_000)
    digest = onnx_export.export(qat_model, tmp_path / "big.onnx", quantized=False)
    assert (tmp_path / "big.onnx.data").is_file() and digest == hashlib.sha256((tmp_path / "big.onnx").read_bytes()).hexdigest()
    assert len(_run(tmp_path / "big.onnx")) == 2


def test_a_graph_the_checker_refuses_leaves_no_file(qat_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(onnx_export, "OPSET", 11)  # LayerNormalization is opset 17
    for external in (False, True):
        with pytest.raises(ExportError, match="failed onnx.checker") as err:
            onnx_export.write_onnx(qat_model, tmp_path / "m.onnx", quantized=False, external_data=external)
        assert "\n" not in str(err.value)
        assert list(tmp_path.iterdir()) == []


def test_cli_external_data_and_optimum(cli, repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    repo = repo_factory(layers=1, sparsity=80, pattern="block4", qat=True, seed=15)
    result = cli("export", str(repo), "--fp32", "--external-data", "-o", str(tmp_path / "m.onnx"), "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["data"]["path"] == str(tmp_path / "m.onnx.data")
    assert data["data"]["sha256"] == hashlib.sha256((tmp_path / "m.onnx.data").read_bytes()).hexdigest()
    from zoo import state

    assert {a["kind"] for a in state.artifacts(str(repo))} == {"onnx-fp32", "onnx-fp32-data"}
    assert len(_run(tmp_path / "m.onnx")) == 2

    out = tmp_path / "optimum"
    result = cli("export", str(repo), "--format", "optimum", "--external-data", "-o", str(out), "--json")
    assert result.code == 0, result.err
    assert {"model.onnx", "model.onnx_data", "model_quantized.onnx", "model_quantized.onnx_data"} <= set(result.json()["files"])
    for name in ("model.onnx", "model_quantized.onnx"):
        locations = {e.value for t in onnx.load(str(out / name), load_external_data=False).graph.initializer
                     for e in t.external_data if e.key == "location"}
        assert locations == {f"{name}_data"}
        assert len(_run(out / name)) == 2


def test_cli_unwritable_output_is_one_line(cli, repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "file").write_text("not a directory")
    for extra in ((), ("--external-data",)):
        result = cli("export", str(repo_factory(layers=1)), "-o", str(tmp_path / "file" / "m.onnx"), *extra)
        assert result.code == 1 and result.err.startswith("error: cannot write") and len(result.err.strip().splitlines()) == 1


# A process's peak RSS counts the memory of the process it was forked from (Linux carries the old address space's
# high-water mark through exec), so the CLI is started by this small launcher, never straight from pytest.
LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
            "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == 'darwin' else 1024))")


def _peak_rss(*args: str) -> int:
    """Bytes of resident memory ``python -m zoo ARGS`` peaked at."""
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                              timeout=600)
    rc, peak = launched.stdout.split()
    assert rc == "0", launched.stderr
    return int(peak)


@pytest.mark.skipif(sys.platform == "win32", reason="needs resource.getrusage")
def test_cli_export_peak_memory_stays_near_the_model_size(tmp_path: Path) -> None:
    """A full-width 1-layer model (124 MB of fp32 weights): the export used to peak at the interpreter plus 4.6x the
    weights (in-memory TensorProtos, their serialized copy, the checker's copy); streamed, it is about 1x."""
    from zoo.synth import SynthSpec, write_repo

    tiny = write_repo(tmp_path / "tiny", SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128))
    wide = write_repo(tmp_path / "wide", SynthSpec(layers=1))
    base = _peak_rss("export", str(tiny), "--fp32", "-o", str(tmp_path / "tiny.onnx"))  # the interpreter and its imports
    peak = _peak_rss("export", str(wide), "--fp32", "-o", str(tmp_path / "wide.onnx"))
    weights = (tmp_path / "wide.onnx").stat().st_size
    assert weights > 100e6
    assert peak - base < 2 * weights, f"export peaked at {peak / 1e6:.0f} MB: {base / 1e6:.0f} MB + {(peak - base) / weights:.1f}x the weights"
