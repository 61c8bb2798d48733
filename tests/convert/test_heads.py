"""One task-head table: each architecture runs as the head it names, and an unsupported head is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from zoo.convert.heads import HEADS, head_for
from zoo.convert.reference import forward
from zoo.convert.repo import load_model
from zoo.errors import CheckpointError
from zoo.runtime.engine import compile


def _with_architecture(repo: Path, tmp_path: Path, arch: str) -> Path:
    copy = tmp_path / arch
    shutil.copytree(repo, copy)
    config = json.loads((copy / "config.json").read_text())
    config["architectures"] = [arch]
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_token_classification_is_refused_not_loaded_as_sequence_classification(repo_factory, tmp_path, cli) -> None:
    repo = _with_architecture(repo_factory(task="text-classification", labels=("a", "b", "c")), tmp_path, "BertForTokenClassification")
    with pytest.raises(CheckpointError, match="BertForTokenClassification"):
        load_model(repo)
    res = cli("inspect", str(repo))
    assert res.code == 1 and res.err.count("\n") == 1 and "BertForTokenClassification" in res.err and "Traceback" not in res.err


def test_a_config_whose_head_weights_are_missing_is_refused(repo_factory, tmp_path) -> None:
    qa_weights = repo_factory(task="question-answering")
    repo = _with_architecture(qa_weights, tmp_path, "BertForSequenceClassification")
    with pytest.raises(CheckpointError, match="no classifier.weight"):
        load_model(repo)


def test_encoder_only_configs_run_the_encoder_and_ignore_task_weights(repo_factory, tmp_path) -> None:
    repo = _with_architecture(repo_factory(task="question-answering"), tmp_path, "BertModel")
    model = load_model(repo)
    assert model.task == "feature-extraction" and model.output_names == ["last_hidden_state"]
    feed = {"input_ids": np.array([[2, 7, 9, 3]]), "attention_mask": np.ones((1, 4), dtype=np.int64)}
    ref = forward(model, **feed)
    out = compile(model, threads=1, backend="sparse")(**feed)
    assert out["last_hidden_state"].shape == (1, 4, model.config.hidden)
    np.testing.assert_allclose(out["last_hidden_state"], ref["last_hidden_state"], atol=1e-4)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.task)
def test_every_head_in_the_table_converts_runs_and_exports_with_its_outputs(head, repo_factory, tmp_path) -> None:
    import onnxruntime as ort

    from zoo.convert.onnx_export import export

    kw = {"labels": ("x", "y")} if head.pooled else {}
    model = load_model(repo_factory(task=head.task, **kw))
    assert head_for(model.config.architecture) is head and model.head is head
    assert model.output_names == list(head.outputs)
    feed = {"input_ids": np.array([[2, 11, 12, 3], [2, 13, 3, 0]]), "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]]),
            "token_type_ids": np.zeros((2, 4), dtype=np.int64)}
    ref = forward(model, **feed)
    eng = compile(model, threads=1, backend="sparse")(**feed)
    path = tmp_path / "m.onnx"
    export(model, path, quantized=False)
    onnx_out = dict(zip(model.output_names, ort.InferenceSession(str(path)).run(None, feed), strict=True))
    for name in head.outputs:
        expected_shape = (2, 4) if head.span else (2, 2)
        assert ref[name].shape == eng[name].shape == onnx_out[name].shape == expected_shape
        np.testing.assert_allclose(eng[name], ref[name], atol=1e-4)
        np.testing.assert_allclose(onnx_out[name], ref[name], atol=1e-4)
