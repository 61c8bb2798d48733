"""``zoo bench``: our sparse engine beside onnxruntime fp32 / int8 on the same weights (registered on ``zoo``)."""

from __future__ import annotations

from contextlib import ExitStack

import click

from zoo.cli.app import THREADS, console, emit_json, fits, json_option, settings


def _model_for(name: str, synthetic: bool, stack: ExitStack):  # noqa: ANN202
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
        return card.name, convert(write_repo(Path(tmp) / card.name, SynthSpec.for_card(card)))
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
@json_option
def bench_cmd(names: tuple[str, ...], batch: int, seq: int, threads: int | None, engines: str, runs: int, synthetic: bool, history: bool,
              as_json: bool) -> None:
    """p50/p90 latency and throughput of NAMES on each engine, with speedups vs onnxruntime fp32.

    NAMES are installed catalog names or Hub-style directories; with --synthetic, any catalog name.
    Results are stored in the state database ($ZOO_HOME/state.db); see them with --history.
    """
    from zoo import state
    from zoo.errors import ZooError
    from zoo.render import bench_history_table, bench_table

    if history:
        rows = [r for n in (names or (None,)) for r in state.bench_history(n, home=settings().home)]
        if as_json:
            return emit_json(rows)
        con = console()
        return con.print(bench_history_table(rows, fits(con)))
    if not names:
        raise ZooError("name at least one model to benchmark", "e.g. `zoo bench obert-3l-80-quant --synthetic`")
    from zoo.runtime.bench import bench_model

    chosen = tuple(e.strip() for e in engines.split(",") if e.strip())
    home = settings().home
    threads = settings(threads=threads).engine_threads
    report, unsaved = [], None
    facts = machine()
    for name in names:
        click.echo(f"bench {name}{' (synthetic, built first)' if synthetic else ''}: {', '.join(chosen)}; "
                   f"batch {batch}, seq {seq}, {threads} threads, {runs} runs each", err=True)
        with ExitStack() as stack:
            label, model = _model_for(name, synthetic, stack)
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
