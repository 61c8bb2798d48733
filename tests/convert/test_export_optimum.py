"""``zoo export --format optimum``: a directory other tools open without help, graphs that say where they come from.

Checked with plain onnxruntime + tokenizers following Optimum's loading rules (config.json's model_type, the
standard file names model.onnx / model_quantized.onnx, inputs fed by the session's input names, dynamic axes
batch_size / sequence_length), and with Optimum itself where ``optimum.onnxruntime`` is importable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import zoo
from tests.convert.test_hostile import _repo_with_nan
from zoo.pipelines.tokenizer import load_tokenizer

QUESTION, CONTEXT = "Who won the game?", "The Denver Broncos defeated the Carolina Panthers 24–10 at Levi's Stadium in Santa Clara."
METADATA_KEYS = {"source_repo", "revision", "commit", "checkpoint", "checkpoint_sha256", "sparsity", "pattern", "quantization", "zoo_version"}


@pytest.fixture(scope="module")
def qat_export(repo_factory, tmp_path_factory) -> tuple[Path, Path]:  # noqa: ANN001
    repo = repo_factory(layers=2, sparsity=80, pattern="block4", qat=True, seed=21)
    out = tmp_path_factory.mktemp("optimum") / "qa-quant"
    env = {**os.environ, "ZOO_HOME": str(tmp_path_factory.mktemp("home"))}
    run = subprocess.run([sys.executable, "-m", "zoo", "export", str(repo), "--format", "optimum", "-o", str(out), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert set(json.loads(run.stdout)["files"]) >= {"model.onnx", "model_quantized.onnx", "config.json"}
    return repo, out


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feed(session: ort.InferenceSession, enc) -> dict[str, np.ndarray]:  # noqa: ANN001
    """What Optimum's ORTModel feeds: the tokenizer's arrays for each of the session's input names."""
    arrays = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
    return {i.name: np.array([arrays[i.name]], dtype=np.int64) for i in session.get_inputs()}


def test_optimum_directory_has_the_files_axes_and_config(qat_export) -> None:  # noqa: ANN001
    repo, out = qat_export
    assert {"model.onnx", "model_quantized.onnx", "config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
    for name in ("model.onnx", "model_quantized.onnx"):
        graph = onnx.load(str(out / name), load_external_data=False).graph
        dims = {v.name: [d.dim_param for d in v.type.tensor_type.shape.dim] for v in list(graph.input) + list(graph.output)}
        assert dims == {n: ["batch_size", "sequence_length"] for n in ("input_ids", "attention_mask", "token_type_ids",
                                                                        "start_logits", "end_logits")}
    quant_ops = {n.op_type for n in onnx.load(str(out / "model_quantized.onnx")).graph.node}
    assert "QuantizeLinear" in quant_ops and "QuantizeLinear" not in {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}


def test_every_graph_carries_its_provenance(qat_export) -> None:  # noqa: ANN001
    repo, out = qat_export
    checkpoint_sha = hashlib.sha256((repo / "pytorch_model.bin").read_bytes()).hexdigest()
    for name in ("model.onnx", "model_quantized.onnx"):
        props = {p.key: p.value for p in onnx.load(str(out / name)).metadata_props}
        assert METADATA_KEYS <= set(props), props
        assert props["checkpoint_sha256"] == checkpoint_sha and props["checkpoint"] == "pytorch_model.bin"
        assert props["source_repo"] == str(repo.resolve()) and props["pattern"] == "block4" and props["quantization"] == "qat-int8"
        assert 75 <= float(props["sparsity"]) <= 85


def test_onnxruntime_and_tokenizers_from_the_directory_answer_as_zoo(qat_export) -> None:  # noqa: ANN001
    """A consumer with only onnxruntime and tokenizers, loading as Optimum does, gets zoo's own logits."""
    repo, out = qat_export
    tok = load_tokenizer(out)  # vocab.txt + tokenizer_config.json from the exported directory, as BertTokenizerFast reads them
    enc = tok.encode(QUESTION, CONTEXT)
    int8 = zoo.load(str(repo), engine="onnxruntime", validate=False)  # a QAT model: onnxruntime runs its int8 graph
    for name, quantized in (("model.onnx", False), ("model_quantized.onnx", True)):
        session = _session(out / name)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, _feed(session, enc)), strict=True))
        if quantized:
            want = int8.engine(*(np.array([a], dtype=np.int64) for a in (enc.ids, enc.attention_mask, enc.type_ids)))
            np.testing.assert_allclose(got["start_logits"], want["start_logits"], atol=1e-4)
        assert got["start_logits"].shape == (1, len(enc.ids)) and np.isfinite(got["end_logits"]).all()


def test_static_shape_fixes_inputs_and_outputs(repo_factory, tmp_path, cli) -> None:  # noqa: ANN001
    repo = repo_factory(layers=1, task="text-classification", seed=22)
    out = tmp_path / "static.onnx"
    run = cli("export", str(repo), "-o", str(out), "--static", "1x128")
    assert run.code == 0, run.err
    graph = onnx.load(str(out)).graph
    assert [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input] == [[1, 128]] * 3
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1, 3]
    session = _session(out)
    feed = {i.name: np.ones((1, 128), dtype=np.int64) for i in session.get_inputs()}
    assert session.run(None, feed)[0].shape == (1, 3)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {i.name: np.ones((1, 64), dtype=np.int64) for i in session.get_inputs()})
    bad = cli("export", str(repo), "-o", str(tmp_path / "x.onnx"), "--static", "1by128")
    assert bad.code == 1 and bad.err.startswith("error: --static wants BATCHxSEQUENCE")
    too_long = cli("export", str(repo), "-o", str(tmp_path / "x.onnx"), "--static", "1x4096")
    assert too_long.code == 1 and "sequence 1..128" in too_long.err


def test_optimum_format_needs_an_output_directory(repo_factory, cli) -> None:  # noqa: ANN001
    run = cli("export", str(repo_factory(layers=1)), "--format", "optimum")
    assert run.code == 1 and run.err.strip() == "error: --format optimum needs -o DIR, the directory to write"


def test_export_refuses_nan_weights(repo_factory, tmp_path, cli) -> None:  # noqa: ANN001
    repo = _repo_with_nan(repo_factory, tmp_path)
    out = tmp_path / "nan.onnx"
    run = cli("export", str(repo), "-o", str(out))
    assert run.code == 1 and run.err.startswith("error: tensor ") and "NaN or inf" in run.err
    assert not out.exists()


def test_optimum_loads_the_directory_and_answers_in_a_transformers_pipeline(qat_export, tmp_path) -> None:  # noqa: ANN001
    optimum_ort = pytest.importorskip("optimum.onnxruntime", reason="optimum[onnxruntime] is not installed (it needs transformers<5)")
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "QuestionAnsweringPipeline"):
        pytest.skip(f"transformers {transformers.__version__} has no question-answering pipeline")
    repo, out = qat_export
    fp32_only = tmp_path / "fp32"
    shutil.copytree(out, fp32_only)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    ours = zoo.load(str(repo), engine="onnxruntime", validate=False)
    for file_name in ("model.onnx", "model_quantized.onnx"):
        model = optimum_ort.ORTModelForQuestionAnswering.from_pretrained(out, file_name=file_name)
        answer = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer)(question=QUESTION, context=CONTEXT)
        assert set(answer) == {"answer", "score", "start", "end"} and CONTEXT[answer["start"]:answer["end"]] == answer["answer"]
        if file_name == "model_quantized.onnx":  # the graph zoo's onnxruntime engine runs for a QAT model
            mine = ours(question=QUESTION, context=CONTEXT)
            assert (mine["answer"], mine["start"], mine["end"]) == (answer["answer"], answer["start"], answer["end"])
            assert abs(mine["score"] - answer["score"]) < 1e-4
