"""The internal description of a BERT model: config, weights per role, and folded QAT state.

Checkpoint keys (transformers' ``bert.`` layout, SparseML's QAT layout with ``.module.`` levels and
FakeQuantize buffers, or either without the ``bert.`` prefix) are placed by role and suffix; a key
that cannot be placed is an error listing it, never silently dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.convert.heads import Head, head_for, outputs_of, task_of
from zoo.errors import CheckpointError

ACT_RANGE = (0, 255)  # uint8 activations
WEIGHT_RANGE = (-128, 127)  # int8 weights and embedding tables
IGNORED_SUFFIXES = ("fake_quant_enabled", "observer_enabled", "activation_post_process.eps", "min_val", "max_val", ".eps")
IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")
MAX_CONFIG_BYTES = 16 << 20
# config.json integer fields: (default when absent, None = required; smallest; largest). The upper bounds are
# sanity bounds; the real bound is the checkpoint, whose every tensor must match the shape the config implies.
CONFIG_INTS: dict[str, tuple[int | None, int, int]] = {
    "hidden_size": (None, 1, 1 << 16), "num_hidden_layers": (None, 1, 1 << 10), "num_attention_heads": (None, 1, 1 << 12),
    "intermediate_size": (None, 1, 1 << 18), "vocab_size": (None, 1, 1 << 24), "max_position_embeddings": (512, 1, 1 << 20),
    "type_vocab_size": (2, 1, 1 << 10),
}
MAX_LABELS = 1 << 16


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization: q = clamp(round(x / scale) + zero_point, qmin, qmax)."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.asarray(x / np.float32(self.scale))  # one temporary, then in place: a 12-layer checkpoint is 85 M weights
        np.round(q, out=q)
        q += self.zero_point
        return np.clip(q, self.qmin, self.qmax, out=q)

    def fake(self, x: np.ndarray) -> np.ndarray:
        """Quantize-dequantize exactly as torch's FakeQuantize does (round half to even)."""
        q = self.quantize(x)
        q -= self.zero_point
        q *= np.float32(self.scale)
        return q.astype(x.dtype, copy=False)


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


PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")


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
    problem_type: str | None = None  # regression | single_label_classification | multi_label_classification

    @property
    def head(self) -> Head | None:
        return head_for(self.architecture)

    @property
    def task(self) -> str:
        return task_of(self.head)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BertConfig:
        """Validate every field a BERT config.json carries; a bad one is a ``CheckpointError`` naming it."""
        if not isinstance(cfg, dict):
            raise CheckpointError(f"config.json holds a JSON {type(cfg).__name__}, not an object")
        ints = {key: _config_int(cfg, key, *bounds) for key, bounds in CONFIG_INTS.items()}
        hidden, heads = ints["hidden_size"], ints["num_attention_heads"]
        if hidden % heads:
            raise CheckpointError(f"config.json: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        eps = cfg.get("layer_norm_eps", 1e-12)
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not (math.isfinite(eps) and 0 < eps <= 1):
            raise CheckpointError(f"config.json: layer_norm_eps must be a finite number in (0, 1], got {_shown(eps)}")
        archs = cfg.get("architectures") or ["BertModel"]
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise CheckpointError(f"config.json: architectures must be a list of names, got {_shown(archs)}")
        hidden_act = cfg.get("hidden_act", "gelu")
        if hidden_act not in ("gelu", "gelu_new", "gelu_python"):
            raise CheckpointError(f"config.json: hidden_act {_shown(hidden_act)} is not supported (gelu only)")
        problem_type = cfg.get("problem_type")
        if problem_type not in PROBLEM_TYPES:
            raise CheckpointError(f"config.json: problem_type must be one of {', '.join(map(str, PROBLEM_TYPES))}, got {_shown(problem_type)}")
        return cls(hidden=hidden, layers=ints["num_hidden_layers"], heads=heads, intermediate=ints["intermediate_size"],
                   vocab_size=ints["vocab_size"], max_positions=ints["max_position_embeddings"],
                   type_vocab_size=ints["type_vocab_size"], eps=float(eps), architecture=archs[0], labels=_config_labels(cfg),
                   hidden_act=hidden_act, problem_type=problem_type)

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        path = Path(path)
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise CheckpointError(f"{path}: config.json is {path.stat().st_size} bytes, over the {MAX_CONFIG_BYTES} byte limit")
            data = json.loads(path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read config.json: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{path}: config.json is not UTF-8 text (byte {exc.start})") from None
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits in an integer, nesting
            raise CheckpointError(f"{path}: config.json is not valid JSON: {str(exc)[:200]}") from None
        return cls.from_dict(data)


def _shown(value: object) -> str:
    """A config value for an error message: short even when the value is a 5,000-digit integer."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
    return text if len(text) <= 60 else text[:57] + "..."


def _config_int(cfg: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int:
    if key not in cfg and default is not None:
        return default
    value = cfg.get(key)
    if key not in cfg:
        raise CheckpointError(f"config.json lacks {key}", "is this a BERT model's config?")
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CheckpointError(f"config.json: {key} must be an integer from {lo} to {hi}, got {_shown(value)}")
    return value


def _config_labels(cfg: dict[str, Any]) -> tuple[str, ...]:
    """Label names from ``id2label`` (keys "0".."n-1"), else ``LABEL_i`` for ``num_labels``."""
    id2label = cfg.get("id2label") or {}
    if not isinstance(id2label, dict) or len(id2label) > MAX_LABELS:
        raise CheckpointError(f"config.json: id2label must be an object of at most {MAX_LABELS} labels")
    if id2label:
        if sorted(id2label) != sorted(str(i) for i in range(len(id2label))) or not all(isinstance(v, str) for v in id2label.values()):
            raise CheckpointError("config.json: id2label must map \"0\", \"1\", ... to label names")
        return tuple(id2label[str(i)] for i in range(len(id2label)))
    num = cfg.get("num_labels")
    if num is None or num == 0:
        return ()
    return tuple(f"LABEL_{i}" for i in range(_config_int(cfg, "num_labels", None, 1, MAX_LABELS)))


@dataclass
class BertModel:
    config: BertConfig
    embeddings: Embeddings
    layers: list[Layer]
    head: Head | None = None  # from zoo.convert.heads, chosen by the config's architecture
    head_linear: Linear | None = None
    pooler: Linear | None = None  # pooled heads only, when the checkpoint has one
    nonfinite: tuple[str, ...] = ()  # checkpoint tensors holding NaN or inf (inspect warns, compile refuses)

    def require_finite(self) -> None:
        """Refuse a model whose weights hold NaN or inf: it would answer "" with score 0, silently."""
        if self.nonfinite:
            more = f" and {len(self.nonfinite) - 1} more" if len(self.nonfinite) > 1 else ""
            raise CheckpointError(f"tensor '{self.nonfinite[0]}'{more} holds NaN or inf values; refusing to run this model",
                                  "the checkpoint is corrupt or was saved after training diverged")

    @property
    def task(self) -> str:
        return task_of(self.head)

    @property
    def qa(self) -> Linear | None:
        return self.head_linear if self.head is not None and self.head.span else None

    @property
    def classifier(self) -> Linear | None:
        return self.head_linear if self.head is not None and not self.head.span else None

    @property
    def quantized(self) -> bool:
        return any(lin.weight_q is not None for layer in self.layers for lin in layer.linears)

    @property
    def output_names(self) -> list[str]:
        return outputs_of(self.head)


class _Keys:
    """A state dict under a common prefix; records which keys were placed."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.used: set[str] = set()
        self.nonfinite: list[str] = []
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
        out = np.asarray(arr, dtype=np.float32)
        if not np.isfinite(out.sum(dtype=np.float64)):  # a float64 sum of float32 values overflows only on inf/NaN
            self.nonfinite.append(key)
        return out

    def qparams(self, base: str, qrange: tuple[int, int], bare: bool = False) -> QParams | None:
        scale_key = self.find(f"{base}.scale", bare=bare)
        zp_key = self.find(f"{base}.zero_point", bare=bare)
        if scale_key is None or zp_key is None:
            return None
        self.used.update((scale_key, zp_key))
        scale_arr, zp_arr = np.asarray(self.state[scale_key]).reshape(-1), np.asarray(self.state[zp_key]).reshape(-1)
        if not scale_arr.size or not zp_arr.size:
            raise CheckpointError(f"'{scale_key}' or '{zp_key}' is empty: a quantization point needs a scale and a zero point")
        scale, zp = float(scale_arr[0]), zp_arr[0]
        if not np.isfinite(zp) or not math.isfinite(scale):
            self.nonfinite.append(scale_key if not math.isfinite(scale) else zp_key)
            scale, zp = (scale if math.isfinite(scale) else 1.0), (zp if np.isfinite(zp) else 0)
        zp = int(zp)
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
    head = model.head = config.head
    if head is not None:
        name = head.weight
        if not keys.find(f"{name}.module.weight", f"{name}.weight", bare=True):
            raise CheckpointError(f"{config.architecture} checkpoint has no {name}.weight", "the file does not match its config.json")
        n = 2 if head.span else len(config.labels) or (np.shape(state.get(f"{name}.weight", state.get(f"{name}.module.weight")))[:1] or (0,))[0]
        model.head_linear = _linear(keys, name, n, h, bare=True)
        if head.pooled and keys.find("pooler.dense.weight", "pooler.dense.module.weight"):
            model.pooler = _linear(keys, keys.prefix + "pooler.dense", h, h, bare=True)
    else:  # masked-LM, pooler and task heads of encoder-only configs: the encoder is used alone
        keys.used.update(k for k in keys.leftovers() if k.startswith(("cls.", "qa_outputs.", "classifier.", keys.prefix + "pooler.")))
    extra = keys.leftovers()
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise CheckpointError(f"checkpoint has {len(extra)} tensor(s) that fit no BERT role: {shown}")
    model.nonfinite = tuple(keys.nonfinite)
    return model
