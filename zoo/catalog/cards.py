"""Frozen dataclasses the catalog hands to the rest of the program (never ORM rows).

They are also the one description of every catalog field: ``column(...)`` says where a field sits in a
stub, how it is checked and how it is stored; ``fields.py`` explains how the rest is derived from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from zoo.catalog.fields import (
    ALIAS_KINDS,
    CPU_FAMILIES,
    METRICS,
    NAME_RE,
    PATTERNS,
    QUANT_SCHEMES,
    SHA256_RE,
    STAGES,
    TASKS,
    column,
    git_revision,
    hub_repo,
    in_range,
    matches,
    one_of,
    repo_relative,
)

HUB_URL = "https://huggingface.co"
PERCENT = in_range(0, 100)


@dataclass(frozen=True)
class AliasInfo:
    name: str = column("name", length=256, unique=True)
    kind: str = column("kind", check=one_of(ALIAS_KINDS))
    verified: bool = column("verified", default=False)


@dataclass(frozen=True)
class FileSpec:
    """One expected file of a model's repo; ``size``/``sha256`` are None when the catalog does not know them."""

    repo: str  # the model's, not stored per file
    revision: str
    path: str = column("path", check=repo_relative)
    required: bool = column("required", default=True, card_default=True)
    size: int | None = column("size", check=in_range(0, 1 << 45), card_default=None)
    sha256: str | None = column("sha256", check=matches(SHA256_RE, "64 lower-case hex digits"), card_default=None)
    approx_size_mb: float | None = column("approx_size_mb", check=in_range(0, 1 << 25), card_default=None)
    size_source: str | None = column("size_source", cite=True, card_default=None)


@dataclass(frozen=True)
class MetricValue:
    name: str = column("name", check=one_of(METRICS))
    value: float = column("value", check=PERCENT)
    dataset: str = column("dataset")
    source: str = column("source", cite=True)


@dataclass(frozen=True)
class RecipeInfo:
    """``stages`` maps a modifier group (pruning, distillation...) to its parameters, as the stub gives them."""

    source: str = column("source", cite=True)
    epochs: float | None = column("epochs", check=in_range(0, 1000))
    stages: dict[str, Any] = column(None, card_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """Everything the catalog knows about one entry."""

    name: str = column("name", check=matches(NAME_RE, "lower-case letters, digits, '.' and '-'"), length=128, unique=True, index=True)
    description: str = column("description")
    task: str = column("task", check=one_of(TASKS), length=64, index=True)
    dataset: str = column("dataset")
    stage: str = column("stage", default="downstream", check=one_of(STAGES))
    parent: str | None = column("parent")
    repo: str = column("source.repo", check=hub_repo)
    revision: str = column("source.revision", default="main", check=git_revision)
    layers: int = column("architecture.layers", check=in_range(1, 48), index=True)
    hidden: int = column("architecture.hidden", check=in_range(1, 8192))
    heads: int = column("architecture.heads", check=in_range(1, 128))
    intermediate: int = column("architecture.intermediate", check=in_range(1, 32768))
    vocab_size: int = column("architecture.vocab_size", check=in_range(1, 1_000_000))
    max_positions: int = column("architecture.max_positions", check=in_range(1, 65536))
    params_millions: float | None = column("architecture.params_millions", check=in_range(0, 100_000))
    params_source: str | None = column("architecture.params_source")
    sparsity: float = column("sparsity.target", check=PERCENT, index=True)
    pattern: str = column("sparsity.pattern", check=one_of(PATTERNS), length=32, index=True)
    sparsity_scope: str | None = column("sparsity.scope")
    quantization: str = column("quantization.scheme", check=one_of(QUANT_SCHEMES), length=32)
    quant_weights: str | None = column("quantization.weights")
    quant_activations: str | None = column("quantization.activations")
    tags: tuple[str, ...] = ()
    aliases: tuple[AliasInfo, ...] = ()
    files: tuple[FileSpec, ...] = ()
    metrics: tuple[MetricValue, ...] = ()
    recipe: RecipeInfo | None = None
    # sparse runtime vs onnxruntime fp32, batch 1, sequence 128 (install-time check), per CPU family
    # ([runtime.amx], [runtime.avx512-vnni], [runtime.avx2] in a stub); in each, figure and source: both or neither
    expected_speedup_amx: float | None = column("runtime.amx.expected_speedup", required=True, check=in_range(0.01, 1000), card_default=None)
    speedup_source_amx: str | None = column("runtime.amx.speedup_source", required=True, card_default=None)
    expected_speedup_avx512_vnni: float | None = column("runtime.avx512-vnni.expected_speedup", required=True, check=in_range(0.01, 1000),
                                                        card_default=None)
    speedup_source_avx512_vnni: str | None = column("runtime.avx512-vnni.speedup_source", required=True, card_default=None)
    expected_speedup_avx2: float | None = column("runtime.avx2.expected_speedup", required=True, check=in_range(0.01, 1000), card_default=None)
    speedup_source_avx2: str | None = column("runtime.avx2.speedup_source", required=True, card_default=None)

    def expected_speedup(self, family: str) -> tuple[float, str] | None:
        """The catalog's speedup over onnxruntime fp32 for CPUs of ``family`` (one of ``CPU_FAMILIES``) and its
        source, or None where it has no figure for that family."""
        key = family.replace("-", "_")
        figure = getattr(self, f"expected_speedup_{key}", None) if family in CPU_FAMILIES else None
        return (figure, getattr(self, f"speedup_source_{key}")) if figure else None

    @property
    def speedups(self) -> dict[str, tuple[float, str]]:
        """Every CPU family the catalog has a figure for: (speedup, source)."""
        return {f: e for f in CPU_FAMILIES if (e := self.expected_speedup(f))}

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
