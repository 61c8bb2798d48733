"""Export a ``BertModel`` to ONNX with the ``onnx`` package: an fp32 graph, and for QAT models an int8
graph with QuantizeLinear/DequantizeLinear at every fake-quant point (so onnxruntime reproduces the
fake-quant reference). Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, dynamic axes named
as Optimum names them, ``batch_size`` and ``sequence_length``, or fixed with ``static``); outputs
``start_logits``, ``end_logits`` (QA) or ``logits`` (classification). Opset 17. ``metadata`` (provenance:
source repo, commit, checkpoint sha256, sparsity ...) is written into the graph's ``metadata_props``.

Initializers are the model's own arrays (views where they can be: a transposed weight is not copied) until
``onnx_file`` streams them to disk one tensor at a time: memory stays near the model's size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.convert import onnx_file
from zoo.convert.bert import BertModel, LayerNorm, Linear, QParams
from zoo.convert.onnx_file import Exported, ModelParts
from zoo.convert.reference import MASK_VALUE
from zoo.errors import ExportError

OPSET = 17
DYNAMIC_AXES = ("batch_size", "sequence_length")  # Optimum's names for the dynamic axes of BERT inputs


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)  # no copy of what already is float32


class _Graph:
    """Accumulates nodes and initializers with unique names; an initializer is kept as the array it was given (often a
    view of the model's weights, transposed or not) until it is written."""

    def __init__(self, quantized: bool) -> None:
        self.nodes: list = []
        self.inits: list[tuple[str, np.ndarray]] = []
        self.quantized = quantized
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: np.ndarray | float | int | list, hint: str = "c", dtype: type | None = None) -> str:
        arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = self.name(hint)
        self.inits.append((name, arr))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, **attrs: object) -> str | list[str]:
        from onnx import helper

        outs = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if outputs == 1 else outs

    def qdq(self, x: str, q: QParams | None) -> str:
        if q is None or not self.quantized:
            return x
        dtype = np.uint8 if q.qmin >= 0 else np.int8
        scale, zp = self.const(np.float32(q.scale), "scale"), self.const(q.zero_point, "zp", dtype)
        return self.op("DequantizeLinear", [self.op("QuantizeLinear", [x, scale, zp]), scale, zp])  # type: ignore[list-item]

    def linear(self, x: str, lin: Linear) -> str:
        x = self.qdq(x, lin.input_q)
        if self.quantized and lin.weight_q is not None and lin.weight_int8 is not None:
            q = lin.weight_q
            w_int8 = self.const(lin.weight_int8.T, f"{lin.name}.weight_int8")
            w = self.op("DequantizeLinear", [w_int8, self.const(np.float32(q.scale), "scale"), self.const(q.zero_point, "zp", np.int8)])
        else:
            w = self.const(_f32(lin.weight).T, f"{lin.name}.weight_t")
        return self.op("Add", [self.op("MatMul", [x, w]), self.const(_f32(lin.bias), f"{lin.name}.bias")])  # type: ignore[list-item]

    def layer_norm(self, x: str, ln: LayerNorm) -> str:
        return self.op("LayerNormalization", [x, self.const(_f32(ln.gamma), "gamma"), self.const(_f32(ln.beta), "beta")],
                       axis=-1, epsilon=float(ln.eps))  # type: ignore[return-value]

    def gelu(self, x: str) -> str:
        erf = self.op("Erf", [self.op("Div", [x, self.const(np.float32(np.sqrt(2.0)))])])  # type: ignore[list-item]
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [erf, self.const(np.float32(1.0))])]), self.const(np.float32(0.5))])  # type: ignore


def _embedding(g: _Graph, table: np.ndarray, table_q: QParams | None, output_q: QParams | None, indices: str, hint: str) -> str:
    """The rows of ``table`` (already dequantized by ``table_q``) at ``indices``, fake-quantized by ``output_q``.

    In an int8 graph the table is stored already quantized by the last of the two points (per-tensor and
    elementwise, so quantizing before the gather equals quantizing after it), gathered as integers, and only the
    gathered rows are dequantized: onnxruntime would otherwise dequantize the whole table on every run,
    DeepSparse cannot gather from a dequantized table, and OpenVINO rejects dequantize-quantize chains there."""
    q = (output_q or table_q) if g.quantized else None
    if q is None:
        return g.op("Gather", [g.const(_f32(table), hint), indices], axis=0)  # type: ignore[return-value]
    dtype = np.uint8 if q.qmin >= 0 else np.int8
    table_int8 = np.empty(table.shape, dtype)
    for i in range(0, len(table), 4096):  # in slices: quantizing a whole 30k-row table at once holds four float copies of it
        table_int8[i:i + 4096] = q.quantize(_f32(table[i:i + 4096]))
    rows = g.op("Gather", [g.const(table_int8, hint + "_int8"), indices], axis=0)
    return g.op("DequantizeLinear", [rows, g.const(np.float32(q.scale), "scale"), g.const(q.zero_point, "zp", dtype)])  # type: ignore


def build_graph(model: BertModel, quantized: bool | None = None, static: tuple[int, int] | None = None):  # noqa: ANN201 - onnx.ModelProto
    """The ONNX model for ``model``, in memory (``export`` streams it to disk instead); ``quantized`` defaults to True
    for QAT models; ``static`` (batch, sequence) fixes the input and output shapes for engines that need them."""
    return _build(model, quantized, static).with_tensors()


def _build(model: BertModel, quantized: bool | None, static: tuple[int, int] | None) -> ModelParts:
    from onnx import TensorProto, helper

    quantized = model.quantized if quantized is None else quantized
    if quantized and not model.quantized:
        raise ExportError("an int8 graph needs a QAT checkpoint; this model holds no quantization state")
    g = _Graph(quantized)
    c, e = model.config, model.embeddings
    heads, d = c.heads, c.hidden // c.heads
    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"
    batch, sequence = static or DYNAMIC_AXES
    if static is not None and not (1 <= sequence <= c.max_positions and batch >= 1):
        raise ExportError(f"static shape {batch}x{sequence}: batch must be at least 1 and sequence 1..{c.max_positions}")

    seq = g.op("Gather", [g.op("Shape", [ids]), g.const(np.int64(1))], axis=0)  # type: ignore[list-item]
    positions = g.op("Range", [g.const(np.int64(0)), seq, g.const(np.int64(1))])  # type: ignore[list-item]
    rows = {"word": (e.word, ids, "word_embeddings"), "position": (e.position, positions, "position_embeddings"),
            "token_type": (e.token_type, types, "token_type_embeddings")}
    parts = {k: _embedding(g, table, e.table_q.get(k), e.output_q.get(k), at, hint) for k, (table, at, hint) in rows.items()}  # type: ignore
    x = g.layer_norm(g.op("Add", [g.op("Add", [parts["word"], parts["position"]]), parts["token_type"]]), e.ln)  # type: ignore[list-item]

    mask_f = g.op("Cast", [mask], to=TensorProto.FLOAT)
    mask_add = g.op("Mul", [g.op("Sub", [g.const(np.float32(1.0)), mask_f]), g.const(np.float32(MASK_VALUE))])  # type: ignore[list-item]
    mask_add = g.op("Unsqueeze", [mask_add, g.const(np.array([1, 2], dtype=np.int64))])  # type: ignore[list-item]
    split_shape = g.const(np.array([0, 0, heads, d], dtype=np.int64), "split_shape")
    merge_shape = g.const(np.array([0, 0, c.hidden], dtype=np.int64), "merge_shape")
    sqrt_d = g.const(np.float32(np.sqrt(d)), "sqrt_d")

    for layer in model.layers:
        q, k, v = (g.op("Reshape", [g.linear(x, lin), split_shape]) for lin in (layer.query, layer.key, layer.value))
        aq = layer.attn_q if quantized else None
        q = g.qdq(g.op("Transpose", [q], perm=[0, 2, 1, 3]), aq and aq.qk[0])  # type: ignore[arg-type]
        k = g.qdq(g.op("Transpose", [k], perm=[0, 2, 3, 1]), aq and aq.qk[1])  # type: ignore[arg-type]
        scores = g.qdq(g.op("MatMul", [q, k]), aq and aq.qk[2])  # type: ignore[arg-type]
        probs = g.op("Softmax", [g.op("Add", [g.op("Div", [scores, sqrt_d]), mask_add])], axis=-1)  # type: ignore[list-item]
        probs = g.qdq(probs, aq and aq.pv[0])  # type: ignore[arg-type]
        v = g.qdq(g.op("Transpose", [v], perm=[0, 2, 1, 3]), aq and aq.pv[1])  # type: ignore[arg-type]
        ctx = g.qdq(g.op("MatMul", [probs, v]), aq and aq.pv[2])  # type: ignore[arg-type]
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])  # type: ignore[list-item]
        x = g.layer_norm(g.op("Add", [g.linear(ctx, layer.attn_out), x]), layer.ln_attn)  # type: ignore[arg-type, list-item]
        ffn = g.linear(g.gelu(g.linear(x, layer.ffn_in)), layer.ffn_out)
        x = g.layer_norm(g.op("Add", [ffn, x]), layer.ln_out)  # type: ignore[list-item, arg-type]

    names = model.output_names
    head, head_linear = model.head, model.head_linear
    if head is not None and head_linear is not None:
        if head.pooled:
            x = g.op("Gather", [x, g.const(np.int64(0))], axis=1)
            if model.pooler is not None:
                x = g.op("Tanh", [g.linear(x, model.pooler)])  # type: ignore[arg-type]
        logits = g.linear(x, head_linear)  # type: ignore[arg-type]
        if head.span:
            halves = g.op("Split", [logits, g.const(np.array([1, 1], dtype=np.int64))], outputs=2, axis=-1)
            axis = g.const(np.array([-1], dtype=np.int64))
            for half, out in zip(halves, names, strict=True):
                g.nodes.append(helper.make_node("Squeeze", [half, axis], [out], name=g.name("Squeeze")))
            shapes = [[batch, sequence]] * 2
        else:
            g.nodes.append(helper.make_node("Identity", [logits], names, name=g.name("Identity")))
            shapes = [[batch, head_linear.weight.shape[0]]]
    else:
        g.nodes.append(helper.make_node("Identity", [x], names, name=g.name("Identity")))
        shapes = [[batch, sequence, c.hidden]]

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [batch, sequence]) for n in (ids, mask, types)]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes, strict=True)]
    graph = helper.make_graph(g.nodes, "obert_int8" if quantized else "obert_fp32", inputs, outputs)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="obert-zoo")
    onnx_model.ir_version = 8
    return ModelParts(onnx_model, g.inits)


def write_onnx(model: BertModel, out: Path, quantized: bool | None = None, metadata: dict[str, str] | None = None,
               static: tuple[int, int] | None = None, external_data: bool | None = None, data_name: str | None = None) -> Exported:
    """Write the checked ONNX graph to ``out`` atomically, ``metadata`` in its ``metadata_props``, streamed by
    ``onnx_file.write``: one file up to protobuf's 2 GB limit, else (or with ``external_data``) the weights in
    ``data_name`` beside it (default: ``out``'s name + ``.data``)."""
    from onnx import helper

    model.require_finite()
    parts = _build(model, quantized, static)
    if metadata:
        helper.set_model_props(parts.proto, {onnx_file.text(str(k)): onnx_file.text(str(v)) for k, v in metadata.items()})
    return onnx_file.write(parts, out, external_data, data_name)


def export(model: BertModel, out: Path, quantized: bool | None = None, metadata: dict[str, str] | None = None,
           static: tuple[int, int] | None = None, external_data: bool | None = None) -> str:
    """``write_onnx``; returns the graph file's sha256."""
    return write_onnx(model, out, quantized, metadata, static, external_data).sha256


# What an Optimum model directory holds beside the graphs: the model's config and its tokenizer files.
OPTIMUM_COPIED = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
OPTIMUM_FILES = {False: "model.onnx", True: "model_quantized.onnx"}  # Optimum's names for the fp32 and quantized graphs


@dataclass(frozen=True)
class OptimumExport:
    """What ``export_optimum`` wrote: each file's name and sha256, and the graphs as written (``Exported.removed`` and
    ``kept`` name the data files an earlier export left)."""

    files: dict[str, str]
    graphs: tuple[Exported, ...]


def export_optimum(model: BertModel, repo: Path, out_dir: Path, metadata: dict[str, str] | None = None,
                   static: tuple[int, int] | None = None, external_data: bool | None = None) -> OptimumExport:
    """A directory ``optimum.onnxruntime.ORTModelFor*.from_pretrained`` loads as it is: ``model.onnx`` (fp32),
    ``model_quantized.onnx`` for a QAT model (int8 QDQ), and ``repo``'s config and tokenizer files; external
    weights, where there are any, in ``model.onnx_data`` (Optimum's name, which it fetches beside a Hub graph).

    A one-file graph removes the ``_data`` file an earlier external-data export left beside it."""
    import shutil

    out_dir = Path(out_dir)
    if not (Path(repo) / "config.json").is_file():
        raise ExportError(f"{repo} has no config.json, which an Optimum directory needs")
    out_dir.mkdir(parents=True, exist_ok=True)
    written, graphs = {}, []
    for quantized in (False, True) if model.quantized else (False,):
        name = OPTIMUM_FILES[quantized]
        done = write_onnx(model, out_dir / name, quantized, metadata, static, external_data, data_name=f"{name}_data")
        written[name] = done.sha256
        graphs.append(done)
        if done.data is not None:
            written[done.data.path.name] = done.data.sha256
    for name in OPTIMUM_COPIED:
        source = Path(repo) / name
        if source.is_file():
            try:
                shutil.copyfile(source, out_dir / name)
            except OSError as exc:
                raise ExportError(f"cannot write {out_dir / name}: {exc.strerror}") from None
            written[name] = hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
    return OptimumExport(written, tuple(graphs))
