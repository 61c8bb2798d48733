"""The int8 QDQ export gathers embedding rows as integers (the table stored quantized by its last fake-quant point)
and dequantizes only those rows, never the whole table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from zoo.convert.onnx_export import export
from zoo.convert.reference import forward
from zoo.convert.repo import load_model


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


@pytest.mark.parametrize("asym", [False, True])
def test_embedding_tables_are_gathered_as_int8(repo_factory, tmp_path: Path, asym: bool) -> None:  # noqa: ANN001
    model = load_model(repo_factory(layers=1, sparsity=80, pattern="block4", qat=True, asymmetric_embeddings=asym))
    export(model, tmp_path / "q.onnx")
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    made_by, inits = producers(graph), {i.name: i for i in graph.initializer}
    gathers = [n for n in graph.node if n.op_type == "Gather"]
    assert not [n.name for n in gathers if made_by.get(n.input[0]) and made_by[n.input[0]].op_type == "DequantizeLinear"]
    tables = [inits[n.input[0]] for n in gathers if n.input[0] in inits]
    assert len(tables) == 3 and all(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for t in tables)
    users = {n.input[0]: n for n in graph.node if n.input}
    gathered = [users[n.output[0]].op_type for n in gathers if n.input[0] in inits]
    assert gathered == ["DequantizeLinear"] * 3

    rng = np.random.default_rng(1)
    ids = rng.integers(0, 1200, size=(2, 20))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": (np.arange(20)[None] >= 7).astype(np.int64).repeat(2, 0)}
    ref = forward(model, **feed)
    out = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)
    step = model.qa.input_q.scale * np.abs(model.qa.weight).sum(axis=1).max()
    for name, got in zip(model.output_names, out, strict=True):
        assert np.abs(got - ref[name]).max() <= step, name


def test_fp32_export_keeps_float_tables(repo_factory, tmp_path: Path) -> None:  # noqa: ANN001
    model = load_model(repo_factory(layers=1, sparsity=80, pattern="block4", qat=True))
    export(model, tmp_path / "f.onnx", quantized=False)
    graph = onnx.load(str(tmp_path / "f.onnx")).graph
    assert "DequantizeLinear" not in {n.op_type for n in graph.node}
    inits = {i.name: i for i in graph.initializer}
    tables = [inits[n.input[0]] for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]
    assert len(tables) == 3 and all(t.data_type == onnx.TensorProto.FLOAT for t in tables)
