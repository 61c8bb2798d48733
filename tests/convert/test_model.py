"""Checkpoint -> BertModel -> reference and ONNX: they agree; QAT folding and sparsity are faithful."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from zoo.convert.bert import BertConfig, describe
from zoo.convert.inspect import inspect_model
from zoo.convert.onnx_export import export
from zoo.convert.reference import forward
from zoo.convert.repo import load_model, read_weights
from zoo.convert.torchsave import save_state_dict
from zoo.errors import CheckpointError
from zoo.synth import SynthSpec, float_state


def inputs(vocab: int, batch: int = 2, seq: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, seq))
    mask = np.ones_like(ids)
    mask[-1, seq // 2:] = 0  # a padded row
    types = (np.arange(seq)[None] >= seq // 3).astype(np.int64).repeat(batch, 0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def run_onnx(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    return session.run(None, feed)


def test_pruned_12_layer_onnx_matches_reference(tmp_path: Path) -> None:
    from zoo.synth import write_repo

    repo = write_repo(tmp_path / "r", SynthSpec(layers=12, hidden=128, heads=4, intermediate=512, vocab_size=1200,
                                                 max_positions=128, sparsity=90, pattern="unstructured", seed=3))
    model = load_model(repo)
    assert len(model.layers) == 12
    export(model, tmp_path / "m.onnx")
    for seq in (1, 7, 64):
        feed = inputs(1200, seq=seq)
        ref = forward(model, **feed)
        out = run_onnx(tmp_path / "m.onnx", feed)
        for name, got in zip(model.output_names, out, strict=True):
            assert got.shape == ref[name].shape == (2, seq)
            assert np.abs(got - ref[name]).max() < 1e-4, (seq, name)


@pytest.mark.parametrize("asym", [False, True])
def test_qat_int8_onnx_within_one_step(repo_factory, tmp_path: Path, asym: bool) -> None:  # noqa: ANN001
    model = load_model(repo_factory(layers=2, sparsity=80, pattern="block4", qat=True, asymmetric_embeddings=asym))
    assert model.quantized and model.layers[0].attn_q is not None
    if asym:
        assert any(q.zero_point != 0 for q in model.embeddings.table_q.values())
    export(model, tmp_path / "q.onnx")
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    feed = inputs(1200)
    ref = forward(model, **feed)
    out = run_onnx(tmp_path / "q.onnx", feed)
    qa = model.qa
    step = qa.input_q.scale * np.abs(qa.weight).sum(axis=1).max()  # one input step moves a logit at most this much
    for name, got in zip(model.output_names, out, strict=True):
        assert np.abs(got - ref[name]).max() <= step, name


def test_qat_reference_differs_from_float(repo_factory) -> None:  # noqa: ANN001
    """The fake-quant points really act: removing them changes the logits."""
    model = load_model(repo_factory(layers=2, sparsity=80, pattern="block4", qat=True))
    feed = inputs(1200)
    quant = forward(model, **feed)["start_logits"]
    for layer in model.layers:
        layer.attn_q = None
        for lin in layer.linears:
            lin.input_q = None
    model.embeddings.output_q = {}
    assert np.abs(forward(model, **feed)["start_logits"] - quant).max() > 1e-4


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 80), ("unstructured", 97), ("block4", 90), ("dense", 0)])
def test_measured_sparsity_equals_generated(repo_factory, pattern: str, sparsity: float) -> None:  # noqa: ANN001
    repo = repo_factory(layers=2, sparsity=sparsity, pattern=pattern)
    spec = SynthSpec(layers=2, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128, sparsity=sparsity, pattern=pattern)
    generated = float_state(spec)
    report = inspect_model(load_model(repo), sparsity, pattern, False)
    assert report.pattern == pattern and not report.warnings
    for row in report.layers:
        w = generated[f"bert.{row.name}.weight"]
        assert row.sparsity == pytest.approx(100 * float(np.mean(w == 0)), abs=1e-9)
    assert abs(report.sparsity - sparsity) < 0.5


def test_inspect_warns_when_catalog_disagrees(repo_factory) -> None:  # noqa: ANN001
    report = inspect_model(load_model(repo_factory(layers=2, sparsity=80, pattern="unstructured")), 90, "block4", True)
    assert len(report.warnings) == 3


def test_qat_block4_pattern_survives_int8_rounding(repo_factory) -> None:  # noqa: ANN001
    report = inspect_model(load_model(repo_factory(layers=2, sparsity=90, pattern="block4", qat=True)))
    assert report.pattern == "block4" and report.quantized
    assert all(r.block4 == 100.0 and r.dtype == "int8" for r in report.layers)


def test_classification_labels_from_config(tmp_path: Path) -> None:
    from zoo.synth import write_repo

    repo = write_repo(tmp_path / "c", SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=64,
                                                task="text-classification", labels=("no", "yes")))
    model = load_model(repo)
    assert model.task == "text-classification" and model.config.labels == ("no", "yes")
    export(model, tmp_path / "c.onnx")
    feed = inputs(1200)
    out = run_onnx(tmp_path / "c.onnx", feed)
    assert out[0].shape == (2, 2)
    assert np.abs(out[0] - forward(model, **feed)["logits"]).max() < 1e-4


def _small_config(**over: object) -> BertConfig:
    cfg = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 1200,
           "max_position_embeddings": 128, "architectures": ["BertForQuestionAnswering"], **over}
    return BertConfig.from_dict(cfg)


def test_key_layouts_without_prefix_or_module_level(tmp_path: Path) -> None:
    spec = SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128)
    sd = float_state(spec)
    plain = describe({k.removeprefix("bert."): v for k, v in sd.items()}, _small_config())
    ref = describe(sd, _small_config())
    feed = inputs(1200)
    assert np.array_equal(forward(plain, **feed)["start_logits"], forward(ref, **feed)["start_logits"])
    from zoo.synth import qat_state

    qat = qat_state(spec, sd)
    flat = {k.replace(".module.", "."): v for k, v in qat.items()}  # re-saved by a tool that dropped the wrapper level
    a, b = describe(qat, _small_config()), describe(flat, _small_config())
    assert b.quantized and np.array_equal(forward(a, **feed)["end_logits"], forward(b, **feed)["end_logits"])


def test_unplaceable_key_is_listed() -> None:
    sd = float_state(SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=128))
    sd["bert.encoder.layer.0.attention.self.mystery.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match="mystery"):
        describe(sd, _small_config())


def test_shape_disagreeing_with_config(repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    repo = tmp_path / "bad"
    shutil.copytree(repo_factory(layers=1), repo)
    cfg = json.loads((repo / "config.json").read_text())
    cfg["intermediate_size"] = 256
    (repo / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"has shape \(128, 64\), config.json implies \(256, 64\)"):
        load_model(repo)


def test_safetensors_and_sharded_repos_load_the_same(repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    from safetensors.numpy import save_file

    src = repo_factory(layers=2, sparsity=80, pattern="unstructured")
    state = {k: np.ascontiguousarray(v) for k, v in read_weights(src).items()}
    st = tmp_path / "st"
    st.mkdir()
    shutil.copy(src / "config.json", st)
    save_file(state, str(st / "model.safetensors"))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(src / "config.json", sharded)
    keys = sorted(state)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"pytorch_model-0000{i + 1}-of-00002.bin"
        save_state_dict({k: state[k] for k in part}, sharded / name)
        weight_map.update({k: name for k in part})
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    feed = inputs(1200)
    expected = forward(load_model(src), **feed)["start_logits"]
    for repo in (st, sharded):
        assert np.array_equal(forward(load_model(repo), **feed)["start_logits"], expected)
    (sharded / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_model(sharded)
