"""The internal description of a BERT model: config, weights per role, and folded QAT state.

Checkpoint keys (transformers' ``bert.`` layout, SparseML's QAT layout with ``.module.`` levels and
FakeQuantize buffers, or either without the ``bert.`` prefix) are placed by role and suffix; a key
that cannot be placed is an error listing it, never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import CheckpointError

ACT_RANGE = (0, 255)  # uint8 activations
WEIGHT_RANGE = (-128, 127)  # int8 weights and embedding tables
IGNORED_SUFFIXES = ("fake_quant_enabled", "observer_enabled", "activation_post_process.eps", "min_val", "max_val", ".eps")
IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization: q = clamp(round(x / scale) + zero_point, qmin, qmax)."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x / np.float32(self.scale)) + self.zero_point, self.qmin, self.qmax)

    def fake(self, x: np.ndarray) -> np.ndarray:
        """Quantize-dequantize exactly as torch's FakeQuantize does (round half to even)."""
        return ((self.quantize(x) - self.zero_point) * np.float32(self.scale)).astype(x.dtype, copy=False)


def fake_quant(q: QParams | None, x: np.ndarray) -> np.ndarray:
    """``x`` quantize-dequantized by ``q``, or unchanged where the point is not quantized."""
    return x if q is None else q.fake(x)


@dataclass
class Linear:
    name: str
    weight: np.ndarray  # [out, in] float32; for QAT models the dequantized int8 weight
    bias: np.ndarray
    weight_q: QParams | None = None
    weight_int8: np.ndarray | None = None
    input_q: QParams | None = None
    stored_weight: np.ndarray | None = None  # QAT: the float weight as the checkpoint holds it (its zeros are the pruning)

    @property
    def pruning_weight(self) -> np.ndarray:
        """The weight whose zeros are the pruning pattern (int8 rounding adds zeros of its own)."""
        return self.stored_weight if self.stored_weight is not None else self.weight


@dataclass
class LayerNorm:
    gamma: np.ndarray
    beta: np.ndarray
    eps: float


@dataclass
class AttentionQuant:
    """Fake-quant points of the two attention matmuls (Q.K^T and probs.V): inputs 0/1 and the output."""

    qk: tuple[QParams, QParams, QParams]
    pv: tuple[QParams, QParams, QParams]


@dataclass
class Layer:
    query: Linear
    key: Linear
    value: Linear
    attn_out: Linear
    ln_attn: LayerNorm
    ffn_in: Linear
    ffn_out: Linear
    ln_out: LayerNorm
    attn_q: AttentionQuant | None = None

    @property
    def linears(self) -> list[Linear]:
        return [self.query, self.key, self.value, self.attn_out, self.ffn_in, self.ffn_out]


@dataclass
class Embeddings:
    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray
    ln: LayerNorm
    table_q: dict[str, QParams] = field(default_factory=dict)
    output_q: dict[str, QParams] = field(default_factory=dict)


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    architecture: str
    labels: tuple[str, ...]
    hidden_act: str = "gelu"

    @property
    def task(self) -> str:
        arch = self.architecture
        if arch.endswith("ForQuestionAnswering"):
            return "question-answering"
        if arch.endswith("ForSequenceClassification"):
            return "text-classification"
        return "feature-extraction"

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BertConfig:
        try:
            archs = cfg.get("architectures") or ["BertModel"]
            id2label = cfg.get("id2label") or {}
            labels = tuple(id2label[k] for k in sorted(id2label, key=int)) if id2label else ()
            if not labels and cfg.get("num_labels"):
                labels = tuple(f"LABEL_{i}" for i in range(int(cfg["num_labels"])))
            conf = cls(
                hidden=int(cfg["hidden_size"]), layers=int(cfg["num_hidden_layers"]), heads=int(cfg["num_attention_heads"]),
                intermediate=int(cfg["intermediate_size"]), vocab_size=int(cfg["vocab_size"]),
                max_positions=int(cfg.get("max_position_embeddings", 512)), type_vocab_size=int(cfg.get("type_vocab_size", 2)),
                eps=float(cfg.get("layer_norm_eps", 1e-12)), architecture=str(archs[0]), labels=labels,
                hidden_act=str(cfg.get("hidden_act", "gelu")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"config.json lacks or mistypes a BERT field: {exc}") from None
        if conf.hidden % conf.heads:
            raise CheckpointError(f"config.json: hidden_size {conf.hidden} is not divisible by num_attention_heads {conf.heads}")
        if conf.hidden_act not in ("gelu", "gelu_new", "gelu_python"):
            raise CheckpointError(f"config.json: hidden_act {conf.hidden_act!r} is not supported (gelu only)")
        return conf

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot read config.json: {exc}") from None


@dataclass
class BertModel:
    config: BertConfig
    embeddings: Embeddings
    layers: list[Layer]
    qa: Linear | None = None
    pooler: Linear | None = None
    classifier: Linear | None = None

    @property
    def task(self) -> str:
        if self.qa is not None:
            return "question-answering"
        if self.classifier is not None:
            return "text-classification"
        return "feature-extraction"

    @property
    def quantized(self) -> bool:
        return any(lin.weight_q is not None for layer in self.layers for lin in layer.linears)

    @property
    def output_names(self) -> list[str]:
        return {"question-answering": ["start_logits", "end_logits"], "text-classification": ["logits"]}.get(
            self.task, ["last_hidden_state"])


class _Keys:
    """A state dict under a common prefix; records which keys were placed."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.used: set[str] = set()
        self.prefix = "bert." if any(k.startswith("bert.") for k in state) else ""

    def find(self, *candidates: str, bare: bool = False) -> str | None:
        for c in candidates:
            key = c if bare else self.prefix + c
            if key in self.state:
                return key
        return None

    def take(self, *candidates: str, bare: bool = False, shape: tuple[int, ...] | None = None) -> np.ndarray:
        key = self.find(*candidates, bare=bare)
        if key is None:
            raise CheckpointError(f"checkpoint has no tensor '{(candidates[0] if bare else self.prefix + candidates[0])}'",
                                  "is this a BERT checkpoint matching its config.json?")
        arr = self.state[key]
        if shape is not None and tuple(arr.shape) != shape:
            raise CheckpointError(f"tensor '{key}' has shape {tuple(arr.shape)}, config.json implies {shape}")
        self.used.add(key)
        return np.asarray(arr, dtype=np.float32)

    def qparams(self, base: str, qrange: tuple[int, int], bare: bool = False) -> QParams | None:
        scale_key = self.find(f"{base}.scale", bare=bare)
        zp_key = self.find(f"{base}.zero_point", bare=bare)
        if scale_key is None or zp_key is None:
            return None
        self.used.update((scale_key, zp_key))
        scale = float(np.asarray(self.state[scale_key]).reshape(-1)[0])
        zp = int(np.asarray(self.state[zp_key]).reshape(-1)[0])
        if not scale > 0:
            raise CheckpointError(f"'{scale_key}' is {scale}: a quantization scale must be positive")
        return QParams(scale, zp, *qrange)

    def leftovers(self) -> list[str]:
        return sorted(k for k in self.state if k not in self.used and not k.endswith(IGNORED_SUFFIXES)
                      and not any(k.endswith(i) for i in IGNORED_KEYS))


def _linear(keys: _Keys, name: str, out_f: int, in_f: int, bare: bool = False) -> Linear:
    weight = keys.take(f"{name}.module.weight", f"{name}.weight", bare=bare, shape=(out_f, in_f))
    bias = keys.take(f"{name}.module.bias", f"{name}.bias", bare=bare, shape=(out_f,))
    wq = keys.qparams(f"{name}.module.weight_fake_quant", WEIGHT_RANGE, bare) or keys.qparams(f"{name}.weight_fake_quant", WEIGHT_RANGE, bare)
    iq = keys.qparams(f"{name}.quant.activation_post_process", ACT_RANGE, bare)
    lin = Linear(name=name, weight=weight, bias=bias, weight_q=wq, input_q=iq)
    if wq is not None:
        lin.stored_weight = weight
        lin.weight_int8 = wq.quantize(weight).astype(np.int8)
        lin.weight = ((lin.weight_int8.astype(np.float32) - wq.zero_point) * np.float32(wq.scale)).astype(np.float32)
    return lin


def _layer_norm(keys: _Keys, name: str, hidden: int, eps: float) -> LayerNorm:
    return LayerNorm(keys.take(f"{name}.weight", f"{name}.gamma", shape=(hidden,)),
                     keys.take(f"{name}.bias", f"{name}.beta", shape=(hidden,)), eps)


def _attention_quant(keys: _Keys, base: str) -> AttentionQuant | None:
    points = []
    for mm in ("attention_scores_matmul", "context_layer_matmul"):
        trio = (keys.qparams(f"{base}.{mm}.input_quant_stubs.0.activation_post_process", ACT_RANGE),
                keys.qparams(f"{base}.{mm}.input_quant_stubs.1.activation_post_process", ACT_RANGE),
                keys.qparams(f"{base}.{mm}.output_quant_stubs.0.activation_post_process", ACT_RANGE))
        if any(p is None for p in trio):
            return None
        points.append(trio)
    return AttentionQuant(qk=points[0], pv=points[1])  # type: ignore[arg-type]


def _embeddings(keys: _Keys, c: BertConfig) -> Embeddings:
    tables = {"word": (c.vocab_size, "word_embeddings"), "position": (c.max_positions, "position_embeddings"),
              "token_type": (c.type_vocab_size, "token_type_embeddings")}
    arrays: dict[str, np.ndarray] = {}
    table_q: dict[str, QParams] = {}
    output_q: dict[str, QParams] = {}
    for role, (rows, name) in tables.items():
        table = keys.take(f"embeddings.{name}.weight", f"embeddings.{name}.module.weight", shape=(rows, c.hidden))
        tq = keys.qparams(f"embeddings.{name}.weight_fake_quant", WEIGHT_RANGE)
        oq = keys.qparams(f"embeddings.{name}.activation_post_process", ACT_RANGE)
        if tq is not None:
            table_q[role] = tq
            table = tq.fake(table)
        if oq is not None:
            output_q[role] = oq
        arrays[role] = table
    ln = _layer_norm(keys, "embeddings.LayerNorm", c.hidden, c.eps)
    return Embeddings(arrays["word"], arrays["position"], arrays["token_type"], ln, table_q, output_q)


def describe(state: dict[str, np.ndarray], config: BertConfig) -> BertModel:
    """Place every tensor of ``state`` into a ``BertModel`` matching ``config``, folding QAT state."""
    keys = _Keys(state)
    h, f = config.hidden, config.intermediate
    layers = []
    for i in range(config.layers):
        p = f"encoder.layer.{i}"

        def lin(n: str, o: int, i_: int, p: str = p) -> Linear:
            return _linear(keys, keys.prefix + f"{p}.{n}", o, i_, bare=True)

        layers.append(Layer(
            query=lin("attention.self.query", h, h), key=lin("attention.self.key", h, h), value=lin("attention.self.value", h, h),
            attn_out=lin("attention.output.dense", h, h), ln_attn=_layer_norm(keys, f"{p}.attention.output.LayerNorm", h, config.eps),
            ffn_in=lin("intermediate.dense", f, h), ffn_out=lin("output.dense", h, f),
            ln_out=_layer_norm(keys, f"{p}.output.LayerNorm", h, config.eps),
            attn_q=_attention_quant(keys, f"{p}.attention.self"),
        ))
    model = BertModel(config=config, embeddings=_embeddings(keys, config), layers=layers)
    if keys.find("qa_outputs.module.weight", "qa_outputs.weight", bare=True):
        model.qa = _linear(keys, "qa_outputs", 2, h, bare=True)
    elif keys.find("classifier.module.weight", "classifier.weight", bare=True):
        n = len(config.labels) or int(state.get("classifier.weight", state.get("classifier.module.weight")).shape[0])
        model.classifier = _linear(keys, "classifier", n, h, bare=True)
        if keys.find("pooler.dense.weight", "pooler.dense.module.weight"):
            model.pooler = _linear(keys, keys.prefix + "pooler.dense", h, h, bare=True)
    else:
        ignorable = [k for k in keys.leftovers() if k.startswith(("cls.", keys.prefix + "pooler."))]
        keys.used.update(ignorable)  # masked-LM and pooler heads of upstream models: encoder-only use
    extra = keys.leftovers()
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise CheckpointError(f"checkpoint has {len(extra)} tensor(s) that fit no BERT role: {shown}")
    return model
