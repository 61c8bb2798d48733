"""Synthetic oBERT-shaped Hub repos: any shape, dense / unstructured / block4 sparsity, optional QAT state
in SparseML's layout, written as a true torch zip checkpoint without torch. Deterministic from a seed.

Tests and benchmarks use these because the real Hub is unreachable from our machines. The weights are
random (BERT's N(0, 0.02) init), pruned by magnitude to exactly the requested sparsity; QAT scales are
calibrated by running the float model on random inputs, the way SparseML's observers would see them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from zoo.convert.bert import BertConfig, describe
from zoo.convert.heads import HEADS
from zoo.convert.torchsave import save_state_dict

SPECIALS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
WORDS = (
    "the of and to in a is was for on as with by he at from his an were are which this be that or it has had also "
    "first new one two three time after their who its but not they her been she more than into during other all "
    "when there would these only some most year city called made world used may over later many where about such "
    "between what how why can could should will up out did him people team music film school state university war "
    "river name game house water book language north south east west country government system number part series "
    "question answer context model sparse dense bert paris france london capital tower built height meters century "
    "king queen river denver broncos super bowl football champion computer science optimal surgeon pruning weight"
).split()
SUFFIXES = ("s", "ed", "ing", "ly", "er", "est", "ion", "al", "ness", "ment")


@dataclass(frozen=True)
class SynthSpec:
    layers: int = 3
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    vocab_size: int = 30522
    max_positions: int = 512
    sparsity: float = 0.0  # percent of each encoder Linear weight that is zero
    pattern: str = "dense"  # dense | unstructured | block4
    qat: bool = False
    asymmetric_embeddings: bool = False  # 2022-era SparseML quantized embedding tables asymmetrically
    task: str = "question-answering"  # or text-classification
    labels: tuple[str, ...] = ("entailment", "neutral", "contradiction")
    seed: int = 0

    @classmethod
    def for_card(cls, card: object, **overrides: object) -> SynthSpec:
        """A full-size spec shaped like a catalog entry (layers, sparsity, pattern, QAT, task)."""
        c = card
        labels = ("not_duplicate", "duplicate") if getattr(c, "dataset", "") == "qqp" else cls.labels
        base = cls(layers=c.layers, hidden=c.hidden, heads=c.heads, intermediate=c.intermediate, vocab_size=c.vocab_size,  # type: ignore[attr-defined]
                   max_positions=c.max_positions, sparsity=c.sparsity, pattern=c.pattern, qat=c.quantized,  # type: ignore[attr-defined]
                   task=c.task if c.task in ("question-answering", "text-classification") else "question-answering",  # type: ignore[attr-defined]
                   labels=labels)
        return replace(base, **overrides)  # type: ignore[arg-type]


def vocabulary(size: int) -> list[str]:
    """A BERT-like WordPiece vocabulary of exactly ``size`` tokens ([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102)."""
    chars = list("!\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~") + list("àáâäçèéêëìíîïñòóôöùúûüß")
    pieces = chars + WORDS + [f"##{c}" for c in chars if c.isalnum()] + [f"##{s}" for s in SUFFIXES]
    tokens = [f"[unused{i}]" for i in range(104)]
    for tok, idx in SPECIALS.items():
        tokens[idx] = tok
    tokens += list(dict.fromkeys(pieces))
    if size < len(tokens):
        raise ValueError(f"vocab_size {size} is too small for the synthetic vocabulary ({len(tokens)} tokens needed)")
    tokens += [f"[unused{i}]" for i in range(104, 104 + size - len(tokens))]
    return tokens


def prune(w: np.ndarray, sparsity: float, pattern: str) -> np.ndarray:
    """Zero exactly round(sparsity% of the weights) by magnitude; block4 zeroes groups of 4 along the input dim."""
    if pattern == "dense" or sparsity <= 0:
        return w
    if pattern == "unstructured":
        n = int(round(w.size * sparsity / 100.0))
        flat = w.reshape(-1).copy()
        flat[np.argpartition(np.abs(flat), n - 1)[:n]] = 0
        return flat.reshape(w.shape)
    if pattern == "block4":
        out_f, in_f = w.shape
        if in_f % 4:
            raise ValueError(f"block4 pruning needs an input size divisible by 4, got {in_f}")
        blocks = w.reshape(out_f, in_f // 4, 4)
        norms = np.linalg.norm(blocks, axis=-1).reshape(-1)
        n = int(round(norms.size * sparsity / 100.0))
        keep = np.ones(norms.size, dtype=bool)
        keep[np.argpartition(norms, n - 1)[:n]] = False
        return (blocks * keep.reshape(out_f, in_f // 4, 1)).reshape(out_f, in_f).astype(w.dtype)
    raise ValueError(f"unknown pattern {pattern!r}")


def config_dict(spec: SynthSpec) -> dict:
    arch = next(h.architectures[0] for h in HEADS if h.task == spec.task)
    cfg = {
        "architectures": [arch], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": spec.hidden, "initializer_range": 0.02, "intermediate_size": spec.intermediate, "layer_norm_eps": 1e-12,
        "max_position_embeddings": spec.max_positions, "model_type": "bert", "num_attention_heads": spec.heads,
        "num_hidden_layers": spec.layers, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": spec.vocab_size,
        "torch_dtype": "float32",
    }
    if spec.task == "text-classification":
        cfg["id2label"] = {str(i): label for i, label in enumerate(spec.labels)}
        cfg["label2id"] = {label: i for i, label in enumerate(spec.labels)}
    return cfg


def float_state(spec: SynthSpec) -> dict[str, np.ndarray]:
    """transformers-style float32 state dict, pruned as the spec says."""
    rng = np.random.default_rng(spec.seed)
    h, f = spec.hidden, spec.intermediate
    normal = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))  # noqa: E731
    near_one = lambda n: (1.0 + 0.05 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)  # noqa: E731
    sd: dict[str, np.ndarray] = {
        "bert.embeddings.word_embeddings.weight": normal(spec.vocab_size, h),
        "bert.embeddings.position_embeddings.weight": normal(spec.max_positions, h),
        "bert.embeddings.token_type_embeddings.weight": normal(2, h),
        "bert.embeddings.LayerNorm.weight": near_one(h), "bert.embeddings.LayerNorm.bias": normal(h),
    }
    shapes = {"attention.self.query": (h, h), "attention.self.key": (h, h), "attention.self.value": (h, h),
              "attention.output.dense": (h, h), "intermediate.dense": (f, h), "output.dense": (h, f)}
    for i in range(spec.layers):
        p = f"bert.encoder.layer.{i}"
        for name, shape in shapes.items():
            sd[f"{p}.{name}.weight"] = prune(normal(*shape), spec.sparsity, spec.pattern)
            sd[f"{p}.{name}.bias"] = normal(shape[0])
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[f"{p}.{ln}.weight"], sd[f"{p}.{ln}.bias"] = near_one(h), normal(h)
    if spec.task == "question-answering":
        sd["qa_outputs.weight"], sd["qa_outputs.bias"] = normal(2, h), normal(2)
    else:
        sd["bert.pooler.dense.weight"], sd["bert.pooler.dense.bias"] = normal(h, h), normal(h)
        sd["classifier.weight"], sd["classifier.bias"] = normal(len(spec.labels), h), normal(len(spec.labels))
    return sd


def _fake_quantize_buffers(prefix: str, scale: float, zp: int, lo: float, hi: float) -> dict[str, np.ndarray]:
    """The buffers torch's FakeQuantize saves (the observer's under ``activation_post_process``)."""
    return {
        f"{prefix}.fake_quant_enabled": np.array([1], dtype=np.uint8), f"{prefix}.observer_enabled": np.array([0], dtype=np.uint8),
        f"{prefix}.scale": np.array([scale], dtype=np.float32), f"{prefix}.zero_point": np.array([zp], dtype=np.int32),
        f"{prefix}.activation_post_process.eps": np.array([np.finfo(np.float32).eps], dtype=np.float32),
        f"{prefix}.activation_post_process.min_val": np.array(lo, dtype=np.float32),
        f"{prefix}.activation_post_process.max_val": np.array(hi, dtype=np.float32),
    }


def _qparams(lo: float, hi: float, kind: str) -> tuple[float, int]:
    """Scale and zero point as torch's MinMax observers compute them: 'asym' uint8, 'sym128' uint8, 'sym' int8."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    eps = float(np.finfo(np.float32).eps)
    if kind == "asym":
        scale = max((hi - lo) / 255.0, eps)
        return float(np.float32(scale)), int(np.clip(-round(lo / scale), 0, 255))
    amax = max(-lo, hi)
    return float(np.float32(max(amax / 127.5, eps))), (128 if kind == "sym128" else 0)


def _calibrate(spec: SynthSpec, sd: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    from zoo.convert.reference import Reference

    model = describe(sd, BertConfig.from_dict(config_dict(spec)))
    ranges: dict[str, tuple[float, float]] = {}

    def observe(name: str, x: np.ndarray) -> None:
        lo, hi = ranges.get(name, (np.inf, -np.inf))
        ranges[name] = (min(lo, float(x.min())), max(hi, float(x.max())))

    rng = np.random.default_rng(spec.seed + 1)
    seq = min(64, spec.max_positions)
    ids = rng.integers(0, spec.vocab_size, size=(2, seq))
    types = (np.arange(seq) >= seq // 2).astype(np.int64)[None].repeat(2, 0)
    Reference(model, observe=observe)(ids, np.ones_like(ids), types)
    return ranges


def qat_state(spec: SynthSpec, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rewrite a float state dict into SparseML's QAT layout (``.module.`` levels and FakeQuantize buffers)."""
    ranges = _calibrate(spec, sd)
    out: dict[str, np.ndarray] = {}
    linears = sorted({k[: -len(".weight")] for k in sd if k.endswith(".weight") and ("encoder.layer" in k or k.startswith("qa_outputs"))
                      and "LayerNorm" not in k} | ({"bert.pooler.dense", "classifier"} if spec.task != "question-answering" else set()))
    for key, value in sd.items():
        base = key.rsplit(".", 1)[0]
        if base in linears:
            out[key.replace(base, f"{base}.module", 1)] = value
        else:
            out[key] = value
    for lin in linears:
        w = sd[f"{lin}.weight"]
        scale, zp = _qparams(float(w.min()), float(w.max()), "sym")
        out.update(_fake_quantize_buffers(f"{lin}.module.weight_fake_quant", scale, zp, float(w.min()), float(w.max())))
        lo, hi = ranges[f"{lin}.quant"]
        out.update(_fake_quantize_buffers(f"{lin}.quant.activation_post_process", *_qparams(lo, hi, "asym"), lo, hi))
    for role, name in (("word", "word_embeddings"), ("position", "position_embeddings"), ("token_type", "token_type_embeddings")):
        table = sd[f"bert.embeddings.{name}.weight"]
        kind = "asym" if spec.asymmetric_embeddings else "sym"
        scale, zp = _qparams(float(table.min()), float(table.max()), kind)
        if kind == "asym":  # int8 range: shift the uint8-style zero point down by 128
            zp -= 128
        out.update(_fake_quantize_buffers(f"bert.embeddings.{name}.weight_fake_quant", scale, zp, float(table.min()), float(table.max())))
        lo, hi = ranges[f"embeddings.{role}"]
        out.update(_fake_quantize_buffers(f"bert.embeddings.{name}.activation_post_process", *_qparams(lo, hi, "asym"), lo, hi))
    for i in range(spec.layers):
        base = f"encoder.layer.{i}.attention.self"
        for mm, tag in (("attention_scores_matmul", "qk"), ("context_layer_matmul", "pv")):
            for stub, point, kind in (("input_quant_stubs.0", "in0", "asym"), ("input_quant_stubs.1", "in1", "sym128"),
                                      ("output_quant_stubs.0", "out", "asym")):
                lo, hi = ranges[f"{base}.{tag}.{point}"]
                out.update(_fake_quantize_buffers(f"bert.{base}.{mm}.{stub}.activation_post_process", *_qparams(lo, hi, kind), lo, hi))
    return out


def make_state(spec: SynthSpec) -> dict[str, np.ndarray]:
    sd = float_state(spec)
    return qat_state(spec, sd) if spec.qat else sd


def write_repo(path: Path, spec: SynthSpec) -> Path:
    """Write a complete Hub-style repo (config, checkpoint, tokenizer files, recipe for QAT) into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config_dict(spec), indent=2) + "\n")
    (path / "vocab.txt").write_text("\n".join(vocabulary(spec.vocab_size)) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": spec.max_positions,
                                                            "tokenizer_class": "BertTokenizer"}, indent=2) + "\n")
    (path / "special_tokens_map.json").write_text(json.dumps({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                                              "cls_token": "[CLS]", "mask_token": "[MASK]"}, indent=2) + "\n")
    if spec.qat:
        (path / "recipe.yaml").write_text("version: 1.1.0\nmodifiers:\n  - !QuantizationModifier\n    quantize_embeddings: 1\n"
                                          "    quantize_linear_activations: 0\n    exclude_module_types: ['LayerNorm']\n"
                                          "    submodules: ['bert.embeddings', 'bert.encoder', 'qa_outputs']\n")
    save_state_dict(make_state(spec), path / "pytorch_model.bin")
    return path
