"""``zoo inspect`` and ``zoo export`` as a user runs them, including broken input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx


def test_inspect_json(cli, repo_factory) -> None:  # noqa: ANN001
    repo = repo_factory(layers=2, sparsity=90, pattern="block4")
    result = cli("inspect", str(repo), "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["pattern"] == "block4" and len(data["layers"]) == 12 and data["quantized"] is False
    assert abs(data["sparsity"] - 90) < 0.5


def test_export_writes_checked_onnx(cli, repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    repo = repo_factory(layers=1, sparsity=80, pattern="block4", qat=True)
    out = tmp_path / "model.onnx"
    result = cli("export", str(repo), "-o", str(out), "--json")
    assert result.code == 0, result.err
    data = result.json()
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert data["quantized"] is True and [o.name for o in proto.graph.output] == ["start_logits", "end_logits"]
    assert proto.opset_import[0].version >= 17
    import hashlib

    assert data["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    from zoo import state

    recorded = state.artifacts(str(repo))
    assert [(a["path"], a["sha256"], a["kind"]) for a in recorded] == [(str(out.resolve()), data["sha256"], "onnx-int8")]
    batch = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in batch] == ["batch_size", "sequence_length"]  # Optimum's names


def test_corrupt_checkpoint_one_line_error(cli, repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    repo = tmp_path / "broken"
    shutil.copytree(repo_factory(layers=1), repo)
    data = (repo / "pytorch_model.bin").read_bytes()
    (repo / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    for command in ("inspect", "export"):
        result = cli(command, str(repo))
        assert result.code == 1
        assert result.err.startswith("error: pytorch_model.bin:") and len(result.err.strip().splitlines()) == 1
        assert "Traceback" not in result.err
    assert not list(repo.glob("*.onnx")) and not list(repo.glob(".*.tmp"))


def test_malicious_checkpoint_via_cli(cli, repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    import os
    import pickle
    import zipfile

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    repo = tmp_path / "evil"
    repo.mkdir()
    shutil.copy(repo_factory(layers=1) / "config.json", repo)
    with zipfile.ZipFile(repo / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    result = cli("inspect", str(repo))
    assert result.code == 1 and "refused to unpickle global" in result.err and not marker.exists()


def test_uninstalled_name_hints(cli) -> None:  # noqa: ANN001
    result = cli("inspect", "obert-3l-80-quant")
    assert result.code == 1 and "not installed" in result.err and len(result.err.strip().splitlines()) == 1
    unknown = cli("export", "obert-3l-85")
    assert unknown.code == 1 and "did you mean" in unknown.err


def test_np_array_of_inspect_is_consistent(repo_factory) -> None:  # noqa: ANN001
    from zoo.convert.inspect import inspect_model
    from zoo.convert.repo import load_model

    report = inspect_model(load_model(repo_factory(layers=1, sparsity=80, pattern="unstructured")))
    weights = [r.sparsity for r in report.layers]
    assert report.sparsity == np.average(weights, weights=[r.shape[0] * r.shape[1] for r in report.layers])


def test_export_without_output_writes_to_the_current_directory_not_the_repo(repo_factory, tmp_path) -> None:  # noqa: ANN001
    import os
    import subprocess
    import sys

    repo = repo_factory(layers=1)
    before = sorted(p.name for p in repo.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "zoo", "export", str(repo), "--json"], cwd=work, capture_output=True, text=True,
                          env={**os.environ}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (work / f"{repo.name}.onnx").is_file() and sorted(p.name for p in repo.iterdir()) == before
