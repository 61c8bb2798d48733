"""The seed's chart: SQuAD F1 against latency measured here, with the Pareto front marked, as a PNG/SVG (matplotlib)
or in the terminal (plotext); and a variant's latency over time from the benchmark history.

Both libraries are optional (``pip install 'obert-zoo[plot]'``) and imported only when a chart is drawn. The
reference points are published dense baselines of other compression methods, timed here on onnxruntime with
same-shaped synthetic weights; their F1 is the figure their paper reports, with the table cited.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import InputError, ZooError

SUFFIXES = (".png", ".svg", ".pdf")


@dataclass(frozen=True)
class Reference:
    """A published model the chart compares against: its shape (to time it here) and its published SQuAD v1.1 dev scores."""

    label: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    f1: float
    exact_match: float
    source: str


REFERENCES = (
    Reference("DistilBERT", 6, 768, 12, 3072, 85.8, 77.7,
              "Sanh et al. 2019, DistilBERT, arXiv 1910.01108, Table 2: SQuAD v1.1 dev EM/F1 77.7/85.8 "
              "(79.1/86.9 with a second distillation step)"),
    Reference("TinyBERT-4", 4, 312, 12, 1200, 82.1, 72.7,
              "Jiao et al. 2020, TinyBERT, Findings of EMNLP 2020 (arXiv 1909.10351v5), Appendix Table 6: "
              "SQuAD v1.1 dev EM/F1 72.7/82.1"),
)


@dataclass(frozen=True)
class Point:
    """One model on the chart: latency measured here (ms, p50), F1 as published, and where the F1 comes from."""

    label: str
    latency_ms: float
    f1: float
    source: str
    engine: str = "sparse"
    reference: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "latency_ms": self.latency_ms, "f1": self.f1, "source": self.source,
                "engine": self.engine, "reference": self.reference}


def pareto(points: list[Point]) -> list[Point]:
    """The points no other point beats on both axes (faster or as fast, and at least as accurate), fastest first."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.latency_ms, -p.f1)):
        if not front or p.f1 > front[-1].f1:
            front.append(p)
    return front


def check_target(path: Path) -> Path:
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"--plot writes {', '.join(SUFFIXES)} files, not {path.name!r}",
                         "name the chart file (e.g. --plot pareto.png), or give --plot last and alone for the terminal")
    return path


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ZooError("drawing a chart file needs matplotlib", "pip install 'obert-zoo[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(points: list[Point], path: Path, subtitle: str) -> Path:
    """F1 vs latency as ``path`` (PNG, SVG or PDF by its suffix): our variants, the references, the Pareto front."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    front = pareto(points)
    ax.step([p.latency_ms for p in front], [p.f1 for p in front], where="post", color="0.6", lw=1, ls="--", zorder=1,
            label="Pareto front")
    ours = [p for p in points if not p.reference]
    refs = [p for p in points if p.reference]
    ax.scatter([p.latency_ms for p in ours], [p.f1 for p in ours], s=36, color="tab:blue", zorder=2, label="oBERT (zoo engine)")
    ax.scatter([p.latency_ms for p in refs], [p.f1 for p in refs], s=60, marker="s", color="tab:orange", zorder=2,
               label="published baselines (onnxruntime fp32)")
    ax.scatter([p.latency_ms for p in front], [p.f1 for p in front], s=110, facecolors="none", edgecolors="black", zorder=3)
    for p in points:
        ax.annotate(p.label, (p.latency_ms, p.f1), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if str(round(x))[0] in "25" else ""))
    ax.set_xlabel("latency, ms (p50, measured on this machine; log scale)")
    ax.set_ylabel("SQuAD v1.1 dev F1 (published)")
    ax.set_title(f"Accuracy vs latency\n{subtitle}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    notes = "F1: oBERT from the catalog (sparseml oBERT research README); " + "; ".join(
        f"{r.label}: {r.source.split(':')[0]}" for r in REFERENCES if any(p.label == r.label for p in refs))
    fig.text(0.01, 0.005, notes, fontsize=6, color="0.35", wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _figure(title: str, xlabel: str, ylabel: str, width: int, height: int) -> Any:
    """plotext's (6.x) figure, cleared and dressed; None when plotext is not installed."""
    try:
        import plotext
    except ImportError:
        return None
    fig = plotext.figure
    fig.clear()
    fig.title(title)
    fig.label(xlabel)
    fig.label(ylabel, axis="y")
    fig.plot_size(width, height)
    fig.theme("colorless")
    return fig


def terminal(points: list[Point], subtitle: str, width: int = 100, height: int = 28) -> str | None:
    """The same chart as text (plotext), or None when plotext is not installed."""
    fig = _figure(f"SQuAD F1 vs latency - {subtitle}", "latency, ms (p50, here)", "F1 (published)", width, height)
    if fig is None:
        return None
    front = pareto(points)
    for group, marker, label in ((False, "o", "oBERT (zoo engine)"), (True, "x", "published baselines (onnxruntime)")):
        chosen = [p for p in points if p.reference is group]
        if chosen:
            fig.draw(fig.signal([p.latency_ms for p in chosen], [p.f1 for p in chosen], marker=marker).label(label))
    if len(front) > 1:
        fig.draw(fig.signal([p.latency_ms for p in front], [p.f1 for p in front], marker=".").lines().label("Pareto front"))
    for p in front:
        fig.draw(fig.text(p.latency_ms, p.f1, f" {p.label}"))
    return str(fig.build())


def _series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[Any, float]]]:
    series: dict[str, list[tuple[Any, float]]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: str(r["at"])):
        series[f"{r['model']} {r['engine']}"].append((r["at"], float(r["p50_ms"])))
    return dict(series)


def draw_history(rows: list[dict[str, Any]], path: Path | None, width: int = 100, height: int = 24) -> str | None:
    """p50 latency of each (model, engine) over time: a chart file when ``path`` is given (returns None), else text
    (None when plotext is missing)."""
    if not rows:
        raise InputError("no benchmark history to plot", "run `zoo bench NAME` first")
    series = _series(rows)
    if path is not None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
        for label, pts in series.items():
            ax.plot([_when(t) for t, _ in pts], [v for _, v in pts], marker="o", label=label)
        ax.set_ylabel("p50 latency, ms")
        ax.set_title("Latency over time (zoo bench history)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return None
    fig = _figure("p50 latency (ms) per run, oldest first", "run", "p50 latency, ms", width, height)
    if fig is None:
        return None
    for label, pts in series.items():
        fig.draw(fig.signal(list(range(1, len(pts) + 1)), [v for _, v in pts], marker="o").lines().label(label))
    return str(fig.build())


def _when(at: Any) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(at) if isinstance(at, str) else at
