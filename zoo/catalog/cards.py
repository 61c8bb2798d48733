"""Frozen dataclasses the catalog hands to the rest of the program (never ORM rows)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class AliasInfo:
    name: str
    kind: str
    verified: bool


@dataclass(frozen=True)
class FileSpec:
    """One expected file of a model's repo; ``size``/``sha256`` are None when the catalog does not know them."""

    repo: str
    revision: str
    path: str
    required: bool = True
    size: int | None = None
    sha256: str | None = None
    approx_size_mb: float | None = None
    size_source: str | None = None


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float
    dataset: str
    source: str


@dataclass(frozen=True)
class RecipeInfo:
    source: str
    epochs: float | None
    stages: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """Everything the catalog knows about one entry."""

    name: str
    description: str
    task: str
    dataset: str
    stage: str
    parent: str | None
    repo: str
    revision: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    params_millions: float | None
    params_source: str | None
    sparsity: float
    pattern: str
    sparsity_scope: str | None
    quantization: str
    quant_weights: str | None
    quant_activations: str | None
    tags: tuple[str, ...] = ()
    aliases: tuple[AliasInfo, ...] = ()
    files: tuple[FileSpec, ...] = ()
    metrics: tuple[MetricValue, ...] = ()
    recipe: RecipeInfo | None = None
    expected_speedup: float | None = None  # sparse runtime vs onnxruntime fp32, batch 1, sequence 128 (install-time check)
    speedup_source: str | None = None

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    @property
    def hub_url(self) -> str:
        return f"{HUB_URL}/{self.repo}"

    def metric(self, name: str) -> float | None:
        return next((m.value for m in self.metrics if m.name == name), None)

    @property
    def f1(self) -> float | None:
        return self.metric("f1")

    @property
    def headline_metric(self) -> MetricValue | None:
        """The number a listing shows: F1 for QA, accuracy for classification."""
        order = ("f1", "accuracy_matched", "accuracy", "exact_match")
        return min(self.metrics, key=lambda m: order.index(m.name), default=None)

    @property
    def checkpoint_size_mb(self) -> float | None:
        """Known exact size of the required files in MB, else the catalog's approximate checkpoint size."""
        required = [f for f in self.files if f.required]
        if required and all(f.size is not None for f in required):
            return sum(f.size or 0 for f in required) / 1e6
        return next((f.approx_size_mb for f in self.files if f.approx_size_mb), None)

    @property
    def relative_cost(self) -> float:
        """Estimated encoder work relative to a dense fp32 12-layer pass, used only to order by latency.

        Encoder Linear work scales with layers x density; attention score/context products (~3% of a
        layer at sequence 128) are not sparse; int8 kernels are counted at half the fp32 cost.
        """
        density = 1.0 - self.sparsity / 100.0
        linear = density * (0.5 if self.quantized else 1.0)
        return self.layers / 12.0 * (0.03 + 0.97 * linear)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hub_url"] = self.hub_url
        return data
