"""``zoo bench``: our sparse engine beside onnxruntime fp32 / int8 on the same weights (registered on ``zoo``)."""

from __future__ import annotations

from contextlib import ExitStack

import click

from zoo.cli.app import THREADS, console, emit_json, fits, json_option, settings


def _model_for(name: str, synthetic: bool, stack: ExitStack, hidden: int | None = None):  # noqa: ANN202
    """(label, BertModel): an installed model or directory, or with --synthetic a full-size stand-in of a catalog entry.

    A synthetic repo lives in a temporary directory held open by ``stack``: its checkpoint is memory-mapped.
    """
    if synthetic:
        import tempfile
        from pathlib import Path

        from zoo.catalog import resolve
        from zoo.convert.repo import load_model as convert
        from zoo.synth import SynthSpec, write_repo

        card = resolve(name)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="zoo-synth-"))
        spec = SynthSpec.for_card(card)
        return card.name, convert(write_repo(Path(tmp) / card.name, spec if hidden is None else narrow(spec, hidden)))
    from zoo.prepare import load_model, locate

    chosen = settings()
    source = locate(name, chosen, fetch=False)
    return source.label, load_model(source, chosen)


@click.command("bench")
@click.argument("names", nargs=-1)
@click.option("--batch", default=1, show_default=True, help="Sequences per call.")
@click.option("--seq", default=128, show_default=True, help="Tokens per sequence.")
@THREADS
@click.option("--engines", default="sparse,onnxruntime,onnxruntime-int8", show_default=True, help="Comma-separated engines to compare.")
@click.option("--runs", default=30, show_default=True, help="Timed calls per engine (after 3 warm-up calls).")
@click.option("--synthetic", is_flag=True, help="Benchmark a full-size synthetic model shaped like each catalog entry (no download needed).")
@click.option("--history", is_flag=True, help="Show stored results instead of running (optionally for NAMES).")
@click.option("--plot", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
              help="Chart SQuAD F1 (published) against latency measured here, with DistilBERT and TinyBERT-4 timed on onnxruntime "
                   "and the Pareto front: FILE.png/.svg/.pdf, or in the terminal when no FILE (put --plot last). "
                   "With --history: latency over time.")
@click.option("--all", "all_variants", is_flag=True, help="With --plot: every question-answering variant with a published F1.")
@click.option("--hidden", type=click.IntRange(min=16), default=None,
              help="With --synthetic: build the models (and the chart's references) this wide instead of full size, for a quick look.")
@json_option
def bench_cmd(names: tuple[str, ...], batch: int, seq: int, threads: int | None, engines: str, runs: int, synthetic: bool, history: bool,
              plot: str | None, all_variants: bool, hidden: int | None, as_json: bool) -> None:
    """p50/p90 latency and throughput of NAMES on each engine, with speedups vs onnxruntime fp32.

    NAMES are installed catalog names or Hub-style directories; with --synthetic, any catalog name.
    Results are stored in the state database ($ZOO_HOME/state.db); see them with --history.
    """
    from zoo import state
    from zoo.errors import InputError, ZooError
    from zoo.render import bench_history_table, bench_table

    if hidden is not None and not synthetic:
        raise InputError("--hidden shrinks synthetic models only", "add --synthetic")
    if history:
        rows = [r for n in (names or (None,)) for r in state.bench_history(n, home=settings().home)]
        if plot is not None:
            return history_chart(rows, plot)
        if as_json:
            return emit_json(rows)
        con = console()
        return con.print(bench_history_table(rows, fits(con)))
    if plot is not None:
        return pareto_chart(names, all_variants, plot, synthetic, hidden, batch=batch, seq=seq, threads=threads, runs=runs, as_json=as_json)
    if not names:
        raise ZooError("name at least one model to benchmark", "e.g. `zoo bench obert-3l-80-quant --synthetic`")
    from zoo.runtime.bench import bench_model

    chosen = tuple(e.strip() for e in engines.split(",") if e.strip())
    home = settings().home
    threads = settings(threads=threads).engine_threads
    from zoo.runtime.bench import ENGINES

    if unknown := sorted(set(chosen) - set(ENGINES)):  # before any work or status line
        raise ZooError(f"unknown engine(s): {', '.join(unknown)}", f"choose from {', '.join(ENGINES)}")
    report, unsaved = [], None
    facts = machine()
    for name in names:
        click.echo(f"bench {name}{' (synthetic, built first)' if synthetic else ''}: {', '.join(chosen)}; "
                   f"batch {batch}, seq {seq}, {threads} threads, {runs} runs each", err=True)
        with ExitStack() as stack:
            label, model = _model_for(name, synthetic, stack, hidden)
            results = bench_model(model, chosen, batch=batch, seq=seq, threads=threads, runs=runs)
        try:
            state.record_bench(label, synthetic, results, facts, home=home)
        except (ZooError, OSError) as exc:
            unsaved = exc.one_line() if isinstance(exc, ZooError) else str(exc)
        report.append({"model": label, "synthetic": synthetic, "results": results})
    if as_json:
        emit_json(report)
    else:
        console().print(bench_table(report, f"batch {batch}, seq {seq}, {threads} threads, {runs} runs"))
    if unsaved:
        click.echo(f"warning: the results were not saved to the history: {unsaved}", err=True)
    return None


def narrow(spec, hidden: int):  # noqa: ANN001, ANN201
    """``spec`` scaled to ``hidden`` (4 heads, widths in proportion, a small vocabulary): quick, not representative."""
    from dataclasses import replace

    scale = hidden / 768
    return replace(spec, hidden=max(16, round(spec.hidden * scale / 4) * 4), heads=4,
                   intermediate=max(16, round(spec.intermediate * scale / 4) * 4), vocab_size=1200)


def pareto_chart(names: tuple[str, ...], all_variants: bool, plot: str, synthetic: bool, hidden: int | None, *, batch: int, seq: int,
                 threads: int | None, runs: int, as_json: bool) -> None:
    """``zoo bench --plot``: time each variant on our engine and the published references on onnxruntime, then chart
    published F1 against those latencies."""
    import tempfile
    from pathlib import Path

    from zoo import plot as charts
    from zoo import state
    from zoo.catalog import Filters, list_models, resolve
    from zoo.convert.repo import load_model as convert
    from zoo.errors import InputError, ZooError
    from zoo.runtime.bench import bench_model
    from zoo.synth import SynthSpec, write_repo

    target = None if plot == "-" else charts.check_target(Path(plot))
    if all_variants:
        names = tuple(c.name for c in list_models(Filters(task="question-answering")) if c.f1 is not None)
    if not names:
        raise InputError("name the variants to chart, or give --all", "e.g. `zoo bench --all --synthetic --plot pareto.png`")
    threads = settings(threads=threads).engine_threads
    points, left_out, facts = [], [], machine()
    for name in names:
        try:
            f1 = next((m for m in resolve(name).metrics if m.name == "f1"), None)
        except ZooError:
            f1 = None
        if f1 is None:
            left_out.append(name)
            continue
        click.echo(f"chart {name}: sparse engine, batch {batch}, seq {seq}, {threads} threads, {runs} runs", err=True)
        with ExitStack() as stack:
            label, model = _model_for(name, synthetic, stack, hidden)
            results = bench_model(model, ("sparse",), batch=batch, seq=seq, threads=threads, runs=runs)
        try:
            state.record_bench(label, synthetic, results, facts, home=settings().home)
        except (ZooError, OSError):
            pass  # the chart does not need the history
        points.append(charts.Point(label, results[0].p50_ms, f1.value, f1.source))
    for ref in charts.REFERENCES:
        click.echo(f"chart {ref.label} (published reference, synthetic weights): onnxruntime fp32", err=True)
        spec = SynthSpec(layers=ref.layers, hidden=ref.hidden, heads=ref.heads, intermediate=ref.intermediate)
        with tempfile.TemporaryDirectory(prefix="zoo-ref-") as tmp:
            model = convert(write_repo(Path(tmp) / ref.label, spec if hidden is None else narrow(spec, hidden)))
            results = bench_model(model, ("onnxruntime",), batch=batch, seq=seq, threads=threads, runs=runs)
        points.append(charts.Point(ref.label, results[0].p50_ms, ref.f1, ref.source, "onnxruntime", True))
    subtitle = (f"batch {batch}, seq {seq}, {threads} threads, p50 of {runs} runs"
                f"{', synthetic weights' if synthetic else ''}{f', hidden {hidden} (not full size)' if hidden else ''}")
    front = {p.label for p in charts.pareto(points)}
    if target is not None:
        charts.draw(points, target, subtitle)
    if as_json:
        emit_json({"file": None if target is None else str(target), "points": [{**p.to_dict(), "pareto": p.label in front} for p in points],
                   "left_out": left_out})
    else:
        text = None if target is not None else charts.terminal(points, subtitle)
        if text is not None:
            click.echo(text)
        for p in sorted(points, key=lambda p: p.latency_ms):
            click.echo(f"{'*' if p.label in front else ' '} {p.label:28} {p.latency_ms:9.2f} ms  F1 {p.f1:5.2f}  ({p.engine}; F1: {p.source})")
        if target is not None:
            click.echo(f"wrote {target} (* = on the Pareto front)")
        elif text is None:
            click.echo("(install plotext to see the chart here: pip install 'obert-zoo[plot]')", err=True)
    for name in left_out:
        click.echo(f"warning: {name} has no published F1 in the catalog: left off the chart", err=True)


def history_chart(rows: list[dict], plot: str) -> None:
    """``zoo bench --history --plot``: p50 latency of each stored (model, engine) over time."""
    from pathlib import Path

    from zoo import plot as charts

    target = None if plot == "-" else charts.check_target(Path(plot))
    text = charts.draw_history(rows, target)
    if target is not None:
        click.echo(f"wrote {target}")
    elif text is None:
        click.echo("(install plotext to see the chart here: pip install 'obert-zoo[plot]')", err=True)
    else:
        click.echo(text)


def machine() -> dict[str, object]:
    """What tells one machine's benchmark rows from another's: CPU model, kernels, cores, load, zoo version."""
    import os
    from importlib.metadata import version

    from zoo.runtime.validate import cpu_summary

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "kernels": cpu_summary(), "cores": len(os.sched_getaffinity(0)), "load_avg": round(os.getloadavg()[0], 2),
            "zoo_version": version("obert-zoo")}


COMMANDS = [bench_cmd]
