"""Rich renderings of catalog dataclasses for the CLI (the API returns the dataclasses themselves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from zoo.catalog.cards import ModelCard

_METRIC_LABELS = {"f1": "F1", "exact_match": "EM", "accuracy": "acc", "accuracy_matched": "acc-m"}


def sparsity_text(card: ModelCard) -> str:
    return "dense" if card.pattern == "dense" else f"{card.sparsity:g}% {card.pattern}"


def quant_text(card: ModelCard) -> str:
    return "int8 QAT" if card.quantization == "int8-qat" else "fp32"


def size_text(card: ModelCard) -> str:
    mb = card.checkpoint_size_mb
    if mb is None:
        return "?"
    exact = all(f.size is not None for f in card.files if f.required)
    return f"{mb:,.0f} MB" if exact else f"~{mb:,.0f} MB"


def headline_text(card: ModelCard) -> str:
    m = card.headline_metric
    return "-" if m is None else f"{_METRIC_LABELS[m.name]} {m.value:.2f}"


@dataclass(frozen=True)
class Col:
    """A column of a table that fits the terminal: ``drop`` > 0 columns go first at narrow widths (highest first);
    cells never end in "…": identifiers (names, repo ids, URLs, hashes) fold onto the next line instead. Cells are
    text, never markup: a catalog's or a manifest's ``[/x]`` is shown as written."""

    header: str
    right: bool = False
    drop: int = 0


def _natural_width(table: Table) -> int:
    con = Console(width=100_000)
    return con.measure(table).maximum


def fitted(cols: tuple[Col, ...], rows: list[tuple[str, ...]], width: int | None, **table_args: Any) -> Table:
    """A table of formatted ``rows`` that fits ``width`` columns (None: any width): it drops the least important
    columns until its natural width fits, then folds what is still too wide (never truncating with an ellipsis)."""
    shown = list(range(len(cols)))
    while True:
        table = Table(**table_args)
        for i in shown:
            table.add_column(cols[i].header, justify="right" if cols[i].right else "left", overflow="fold")
        for row in rows:
            table.add_row(*(escape(row[i]) for i in shown))
        droppable = [i for i in shown if cols[i].drop]
        if width is None or not droppable or _natural_width(table) <= width:
            return table
        shown.remove(max(droppable, key=lambda i: cols[i].drop))


MODEL_COLUMNS = (Col("name"), Col("L", right=True, drop=4), Col("sparsity", drop=2), Col("quant", drop=3), Col("data", drop=1),
                 Col("accuracy", right=True), Col("size", right=True))


def model_table(cards: list[ModelCard], width: int | None = None) -> Table:
    """``zoo list`` / ``zoo search``: at narrow widths the layer count and quantization (both in the name) go first."""
    rows = [(c.name, str(c.layers), sparsity_text(c), "int8" if c.quantized else "fp32", c.dataset.removesuffix("-v1.1"),
             headline_text(c), size_text(c)) for c in cards]
    return fitted(MODEL_COLUMNS, rows, width, title=f"{len(cards)} model{'s' if len(cards) != 1 else ''}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)


def megabytes(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n / 1e3:,.1f} kB"


INSTALL_COLUMNS = (Col("file"), Col("size", right=True), Col("sha256", drop=2), Col("verified by", drop=3), Col("action"),
                   Col("from", drop=1))


def install_table(files: Any, width: int | None = None) -> Table:
    """``zoo download``: one row per file; at narrow widths the source (said once below), then how it was verified go."""
    rows = [(f.path, megabytes(f.size), (f.sha256 or "?")[:12], f.verified_by, f.action, f.origin or "") for f in files]
    return fitted(INSTALL_COLUMNS, rows, width, box=None, pad_edge=False)


CACHE_COLUMNS = (Col("model"), Col("repo"), Col("revision", drop=2), Col("files", right=True, drop=3), Col("size", right=True),
                 Col("verified", drop=1))


def cache_table(models: Any, width: int | None = None) -> Table:
    """``zoo cache list``: installed models; the repo id folds, never truncated."""
    rows = [(m.name, m.repo, (m.commit or m.revision)[:12], str(m.files), megabytes(m.bytes), m.verified_at or "") for m in models]
    return fitted(CACHE_COLUMNS, rows, width, box=None, pad_edge=False)


def _kv(rows: list[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    return table


def card_view(card: ModelCard, width: int | None = None) -> Panel:
    """``zoo show``: the catalog's text is escaped wherever it meets markup (``[dim]``), so it is shown as written."""
    params = f"{card.params_millions:g}M" if card.params_millions else "unknown"
    quant = quant_text(card)
    if card.quantized:
        quant += escape(f" (weights {card.quant_weights}; activations {card.quant_activations})")
    parts: list = [
        Text(card.description, style="italic"),
        _kv([
            ("task", escape(f"{card.task} ({card.dataset}, {card.stage})" + (f", fine-tuned from {card.parent}" if card.parent else ""))),
            ("shape", f"{card.layers} layers, hidden {card.hidden}, {card.heads} heads, FFN {card.intermediate}, vocab {card.vocab_size}"),
            ("parameters", params + (f"  [dim]source: {escape(card.params_source)}[/dim]" if card.params_source else "")),
            ("sparsity", escape(sparsity_text(card) + (f" of {card.sparsity_scope}" if card.sparsity_scope and card.pattern != "dense" else ""))),
            ("quantization", quant),
            ("hub", escape(f"{card.hub_url} @ {card.revision}")),
            ("expected speed", "\n".join(f"{family}: >= {x:g}x onnxruntime fp32 (batch 1, sequence 128)  [dim]source: {escape(src)}[/dim]"
                                          for family, (x, src) in card.speedups.items())
             or "not measured: the install-time check expects >= 1x (sparse) or >= 1/1.1x (dense)"),
            ("tags", escape(", ".join(card.tags)) or "-"),
        ]),
    ]
    metrics = fitted((Col("metric"), Col("value", right=True), Col("dataset", drop=1), Col("source")),
                     [(_METRIC_LABELS[m.name], f"{m.value:.2f}", m.dataset, m.source) for m in card.metrics]
                     or [("-", "unknown", card.dataset, "no published figure found")],
                     width and width - 4, title="accuracy", title_justify="left")
    files = fitted((Col("path"), Col("required", drop=1), Col("size", right=True, drop=2), Col("sha256")),
                   [(f.path, "yes" if f.required else "optional", _file_size(f), f.sha256 or "unknown (pinned on first download)")
                    for f in card.files], width and width - 4, title="files", title_justify="left")
    aliases = fitted((Col("alias"), Col("kind"), Col("verified", drop=1)),
                     [(a.name, a.kind, "yes" if a.verified else "no") for a in card.aliases], width and width - 4,
                     title="aliases", title_justify="left")
    parts += [metrics, files, aliases]
    if card.recipe:
        stages = escape(", ".join(card.recipe.stages)) or "-"
        epochs = f"{card.recipe.epochs:g} epochs, " if card.recipe.epochs else ""
        parts.append(_kv([("recipe", f"{epochs}{stages}  [dim]source: {escape(card.recipe.source)}[/dim]  (`zoo recipe {card.name}`)")]))
    return Panel(Group(*parts), title=f"[bold]{card.name}[/bold]", title_align="left", expand=width is not None)


def _file_size(f: Any) -> str:
    if f.size is not None:
        return f"{f.size:,} B"
    return f"~{f.approx_size_mb:g} MB ({f.size_source})" if f.approx_size_mb else "unknown"


def rows_table(columns: tuple[str, ...], rows: list[tuple[str, ...]], title: str | None = None, right: tuple[str, ...] = (),
               plain: bool = False) -> Table:
    """A table of already formatted cells; ``right``-aligned columns; ``plain``: no box, no title (compact listings)."""
    table = Table(box=None, pad_edge=False) if plain else Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def inspect_table(label: str, config: Any, task: str, layers: list[Any]) -> Table:
    """``zoo inspect``: one row per encoder Linear."""
    return rows_table(("layer", "shape", "sparsity", "block4", "pattern", "dtype", "quantization"),
                      [(r.name, f"{r.shape[0]}x{r.shape[1]}", f"{r.sparsity:.2f}%", f"{r.block4:.1f}%", r.pattern, r.dtype, r.quantization)
                       for r in layers],
                      title=f"{label}: {config.layers} layers, hidden {config.hidden}, {task}", right=("sparsity", "block4"))


def answers_table(task: str, results: list[Any]) -> Table:
    """``zoo run``: answers (question answering) or labels (classification), flattened over inputs and top-k."""
    flat = [r for item in results for r in (item if isinstance(item, list) else [item])]
    cols = ("answer", "score", "start", "end") if task == "question-answering" else ("label", "score")
    return rows_table(cols, [tuple(f"{r[c]:.4f}" if c == "score" else str(r[c]) for c in cols) for r in flat], plain=True)


def _speed(x: float | None) -> str:
    return f"{x:.2f}x" if x else "-"


def bench_history_table(rows: list[dict[str, Any]], width: int | None = None) -> Table:
    """``zoo bench --history``: with the machine each row was measured on (CPU, load, zoo version), so rows
    from different machines are told apart."""
    cols = (Col("at", drop=3), Col("model"), Col("engine"), Col("batch", right=True, drop=4), Col("seq", right=True, drop=4),
            Col("threads", right=True), Col("p50 ms", right=True), Col("p90 ms", right=True, drop=5),
            Col("vs ort fp32", right=True), Col("cpu", drop=2), Col("load", right=True, drop=1), Col("zoo", drop=1))
    out = []
    for r in rows:
        extra = r.get("extra") or {}
        out.append((r["at"], r["model"] + (" (synthetic)" if r["synthetic"] else ""), r["engine"], str(r["batch"]), str(r["seq"]),
                    str(r["threads"]), f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", _speed(r["speedup_vs_ort_fp32"]),
                    f"{extra.get('cpu', '?')} ({extra.get('kernels', '?')})" if extra else "?",
                    str(extra.get("load_avg", "?")), str(extra.get("zoo_version", "?"))))
    return fitted(cols, out, width, title="benchmark history", title_justify="left")


def bench_table(report: list[dict[str, Any]], title: str) -> Table:
    """``zoo bench``: one row per (model, engine) with p50/p90, throughput and the speedup over onnxruntime fp32."""
    return rows_table(("model", "engine", "p50 ms", "p90 ms", "items/s", "vs ort fp32"),
                      [(e["model"] + (" (synthetic)" if e["synthetic"] else ""), r.engine, f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
                        f"{r.items_per_s:.1f}", _speed(r.speedup_vs_ort_fp32)) for e in report for r in e["results"]],
                      title=title, right=("p50 ms", "p90 ms", "items/s", "vs ort fp32"))
