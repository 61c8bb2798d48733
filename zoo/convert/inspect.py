"""Measured sparsity and pattern of every encoder Linear, and where the catalog disagrees with the file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from zoo.convert.bert import BertModel, Linear

DENSE_BELOW = 5.0  # percent zeros under which a weight counts as dense
TOLERANCE = 1.0  # percentage points of disagreement tolerated between catalog and file


@dataclass(frozen=True)
class LinearStats:
    name: str
    shape: tuple[int, int]
    sparsity: float  # percent of zeros
    block4: float  # percent of 4-groups along the input dim that are all zero or all non-zero
    dtype: str
    quantization: str

    @property
    def pattern(self) -> str:
        if self.sparsity < DENSE_BELOW:
            return "dense"
        return "block4" if self.block4 >= 99.9 else "unstructured"


@dataclass(frozen=True)
class Inspection:
    layers: list[LinearStats]
    sparsity: float  # over all encoder Linear weights
    pattern: str
    quantized: bool
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        for row, stats in zip(data["layers"], self.layers, strict=True):
            row["pattern"] = stats.pattern
        return data


def linear_stats(lin: Linear) -> LinearStats:
    w = lin.pruning_weight
    nz = w != 0
    out_f, in_f = w.shape
    if in_f % 4 == 0:
        groups = nz.reshape(out_f, in_f // 4, 4).sum(-1)
        block4 = float(np.mean((groups == 0) | (groups == 4)) * 100)
    else:
        block4 = 0.0
    quant = "fp32"
    if lin.weight_q is not None:
        quant = f"int8 w(scale {lin.weight_q.scale:.3g})"
        if lin.input_q is not None:
            quant += f", uint8 x(scale {lin.input_q.scale:.3g}, zp {lin.input_q.zero_point})"
    dtype = "int8" if lin.weight_int8 is not None else str(w.dtype)
    return LinearStats(lin.name.removeprefix("bert."), (out_f, in_f), float(100 - nz.mean() * 100), block4, dtype, quant)


def inspect_model(model: BertModel, expected_sparsity: float | None = None, expected_pattern: str | None = None,
                  expected_quantized: bool | None = None) -> Inspection:
    """Per-layer statistics; ``expected_*`` (from the catalog) add warnings where the file disagrees."""
    rows = [linear_stats(lin) for layer in model.layers for lin in layer.linears]
    total = sum(r.shape[0] * r.shape[1] for r in rows)
    sparsity = sum(r.sparsity * r.shape[0] * r.shape[1] for r in rows) / total if total else 0.0
    patterns = {r.pattern for r in rows}
    pattern = "dense" if sparsity < DENSE_BELOW else ("block4" if patterns <= {"block4", "dense"} else "unstructured")
    warnings = [f"tensor '{name}' holds NaN or inf values: the model cannot answer; loading it is refused"
                for name in model.nonfinite]
    if expected_sparsity is not None and abs(expected_sparsity - sparsity) > TOLERANCE:
        warnings.append(f"catalog says {expected_sparsity:g}% sparse, the file is {sparsity:.2f}%")
    if expected_pattern is not None and expected_pattern != pattern:
        warnings.append(f"catalog says pattern {expected_pattern}, the file looks {pattern}")
    if expected_quantized is not None and expected_quantized != model.quantized:
        warnings.append(f"catalog says {'int8 QAT' if expected_quantized else 'fp32'}, the file {'has' if model.quantized else 'has no'} QAT state")
    return Inspection(rows, sparsity, pattern, model.quantized, warnings)
