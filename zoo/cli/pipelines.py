"""``zoo run``, ``zoo eval`` and ``zoo demo`` (registered on ``zoo``)."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from zoo.cli.app import THREADS, console, emit_json, emit_json_line, json_option, settings
from zoo.errors import InputError, ZooError

ENGINE = click.option("--engine", type=click.Choice(["auto", "sparse", "onnxruntime"]), default="auto", show_default=True,
                      help="auto: the sparse engine for sparse models, onnxruntime for dense ones.")


def _status(text: str) -> None:
    click.echo(text, err=True)


def _load(name: str, engine: str, threads: int | None) -> Any:
    from zoo.prepare import load

    return load(name, settings(threads=threads), engine=engine, on_verdict=lambda v: click.echo(v.line(), err=True),
                on_status=_status)


def answer(pipe: Any, job: Any, say: Callable[[str], None] = lambda text: None) -> Any:
    """Run one job as ``run_jobs`` would (same batches, same result); a long input says how many windows it has
    and shows a bar on a terminal."""
    size = pipe.batch_size
    if len(job.encodings) <= size:
        return pipe.run_jobs([job])[0]
    say(f"answering: {len(job.encodings)} windows")
    order = sorted(range(len(job.encodings)), key=lambda i: len(job.encodings[i].ids))
    outs: list[Any] = [None] * len(order)
    with _bar(len(order)) as advance:
        for at in range(0, len(order), size):
            rows = order[at:at + size]
            for i, out in zip(rows, pipe.forward([job.encodings[i] for i in rows]), strict=True):
                outs[i] = out
            advance(len(rows))
    return job.finish(outs)


@contextmanager
def _bar(total: int, label: str = "windows") -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def answer_lines(pipe: Any, records: Iterable[tuple[int, dict[str, Any]]], top_k: int,
                 write: Callable[[dict[str, Any]], None], say: Callable[[str], None] = lambda text: None) -> int:
    """Answer each (line number, record) and ``write`` ``{"line": N, "id": <the record's, if any>, "result": R}`` as
    soon as it is answered; R is what the pipeline (and ``zoo serve``'s task route) returns for that input. The count."""
    from zoo.batch import plan

    count = 0
    for n, rec in records:
        result = answer(pipe, plan(pipe, rec, top_k, f"input line {n}"), say)
        write({"line": n, **({"id": rec["id"]} if "id" in rec else {}), "result": result})
        count += 1
    return count


def _context(path: Path) -> str:
    data = path.read_bytes()
    if b"\0" in data:
        raise InputError(f"--context-file {path} is a binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"--context-file {path} is not UTF-8 text (byte {exc.start})", "convert it, e.g. `iconv -t utf-8`") from None


@click.command("run")
@click.argument("name")
@click.option("--question", help="Question (question-answering models).")
@click.option("--context", help="Context to find the answer in.")
@click.option("--context-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Read the context from a file.")
@click.option("--text", help="Text to classify (MNLI/QQP models).")
@click.option("--text-pair", help="Second text of a pair (hypothesis, or the other question).")
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Answers (or labels) per input.")
@ENGINE
@THREADS
@json_option
@click.option("--input", "input_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Score a JSON Lines (.jsonl) or Parquet (.parquet) file of inputs into --output, in order, resumably.")
@click.option("--output", "output_file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --input: the JSON Lines answers file (appended to: a stopped run goes on where it stopped).")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="With --input: score on Ray Data actors at ADDRESS ('auto', 'local', host:port).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="With --input: inputs per shard.")
def run_cmd(name: str, question: str | None, context: str | None, context_file: Path | None, text: str | None,
            text_pair: str | None, top_k: int, engine: str, threads: int | None, as_json: bool, input_file: Path | None,
            output_file: Path | None, ray_address: str | None, batch_size: int) -> None:
    """Answer a question or classify text with NAME (a catalog model, installed on first use, or a directory).

    \b
    Many inputs: give none of the options and pipe JSON lines on stdin, one object per line:
      {"question": "...", "context": "..."}        question answering
      {"text": "...", "text_pair": "..."}           classification (text_pair optional)
    an "id" field is echoed back. With --json, one line per input as it is answered:
      {"line": N, "id": ..., "result": R}   R: {"answer"/"label", "score", ...}, a list of them with --top-k > 1
    \b
    Files: --input big.jsonl|big.parquet --output out.jsonl [--ray ADDRESS] [--batch-size N] writes those lines
    in input order; run it again after a stop and it goes on after the last complete line.
    """
    if input_file or output_file or ray_address:
        return _score_file(name, input_file, output_file, ray_address, batch_size, top_k, engine, threads,
                           bool(question or context or context_file or text or as_json))
    if context_file:
        context = _context(context_file)
    if question or context:
        records: Iterable[tuple[int, dict[str, Any]]] = [(1, {"question": question or "", "context": context or ""})]
    elif text:
        records = [(1, {"text": text, "text_pair": text_pair})]
    elif not sys.stdin.isatty():
        from zoo.batch import EXAMPLE, read_records

        records = read_records(sys.stdin.buffer)
        first = next(records, None)
        if first is None:
            raise InputError("no input: stdin is empty", f"give --question and --context, --text, or JSON lines: {EXAMPLE}")
        records = itertools.chain([first], records)
    else:
        raise InputError("nothing to run", "give --question and --context, --text, or JSON lines on stdin")
    pipe = _load(name, engine, threads)
    if as_json:
        answer_lines(pipe, records, top_k, emit_json_line, _status)
        return None
    results: list[Any] = []
    answer_lines(pipe, records, top_k, lambda rec: results.append(rec["result"]), _status)
    from zoo.render import answers_table

    console().print(answers_table(pipe.task, results))
    return None


def _score_file(name: str, input_file: Path | None, output_file: Path | None, ray_address: str | None, batch_size: int,
                top_k: int, engine: str, threads: int | None, other_inputs: bool) -> None:
    """``zoo run --input ... --output ...``: ``zoo.batch`` in this process, or on Ray Data actors with ``--ray``."""
    if input_file is None or output_file is None:
        raise InputError("--input and --output go together", "e.g. zoo run NAME --input questions.jsonl --output answers.jsonl")
    if other_inputs:
        raise InputError("--input reads every input from the file; drop --question/--context/--text/--json")
    from zoo.batch import Scoring, run

    scoring = Scoring(name, input_file, output_file, batch_size=batch_size, top_k=top_k, engine=engine)
    conf = settings(threads=threads)
    score = None
    if ray_address:
        from zoo.integrations import ray_module

        ray_module()
        from zoo.integrations.ray_data import scorer

        score = scorer(ray_address, scoring, conf, say=_status)
    with _progress("inputs") as progress:
        result = run(scoring, conf, say=_status, progress=progress, score=score)
    _status(result.line())


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """``progress(done, total)``: a bar on a terminal, else a status line at each tenth of the way."""
    with ExitStack() as stack:
        state: dict[str, Any] = {}

        def progress(done: int, total: int) -> None:
            if "advance" not in state:
                state.update(advance=stack.enter_context(_bar(total, label)), done=0, tenth=done * 10 // max(total, 1))
            state["advance"](done - state["done"])
            state["done"] = done
            tenth = done * 10 // max(total, 1)
            if not sys.stderr.isatty() and tenth > state["tenth"] and done < total:
                _status(f"{label}: {done} of {total}")
            state["tenth"] = tenth

        yield progress


@click.command("eval")
@click.argument("name")
@click.option("--squad", "squad_file", type=click.Path(path_type=Path), required=True, help="SQuAD v1.1-format JSON file.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions (at least 1).")
@click.option("--predictions", type=click.Path(path_type=Path), help="Also write {id: answer} here.")
@ENGINE
@THREADS
@json_option
def eval_cmd(name: str, squad_file: Path, limit: int | None, predictions: Path | None, engine: str, threads: int | None,
             as_json: bool) -> None:
    """Exact match and F1 of NAME on a SQuAD v1.1 file, scored as the official v1.1 script does."""
    from zoo.pipelines.squad import evaluate, read_squad

    examples = list(read_squad(squad_file))[:limit]
    if not examples:
        raise ZooError(f"{squad_file} has no questions")
    pipe = _load(name, engine, threads)
    if pipe.task != "question-answering":
        raise ZooError(f"{pipe.name} is a {pipe.task} model; SQuAD needs a question-answering one")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    preds: dict[str, str] = {}
    start = time.perf_counter()
    quiet = as_json or not sys.stderr.isatty()
    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=quiet,
                  console=__import__("rich.console").console.Console(stderr=True)) as bar:
        task = bar.add_task("eval", total=len(examples))
        for ex in examples:
            preds[ex.id] = pipe(question=ex.question, context=ex.context)["answer"]
            bar.advance(task)
    seconds = time.perf_counter() - start
    scores = {**evaluate(examples, preds), "seconds": round(seconds, 2), "questions_per_s": round(len(examples) / seconds, 2),
              "model": pipe.name, "file": str(squad_file)}
    scores["published"] = _published(pipe.name)
    if predictions:
        predictions.write_text(json.dumps(preds, indent=1, ensure_ascii=False) + "\n")
    if as_json:
        return emit_json(scores)
    console().print(f"{pipe.name} on {squad_file.name}: exact match {scores['exact_match']:.2f}, F1 {scores['f1']:.2f} "
                    f"over {scores['count']} questions ({scores['questions_per_s']:.1f} questions/s)")
    published = scores["published"]
    if published:
        figures = ", ".join(f"{label} {published[key]:.2f}" for key, label in (("exact_match", "exact match"), ("f1", "F1")) if key in published)
        console().print(f"published ({published['dataset']}): {figures}; source: {published['source']}", soft_wrap=True)
    return None


def _published(name: str) -> dict[str, Any] | None:
    """The catalog's published SQuAD figures for ``name`` (None for a directory or a model without them)."""
    from zoo.catalog import resolve

    try:
        metrics = [m for m in resolve(name).metrics if m.name in ("exact_match", "f1")]
    except ZooError:
        return None
    if not metrics:
        return None
    return {**{m.name: m.value for m in metrics}, "dataset": metrics[0].dataset, "source": metrics[0].source}


@click.command("demo")
@click.option("--home", type=click.Path(path_type=Path), help="Keep the demo's cache here (default: a temporary directory).")
@click.option("--hidden", default=768, show_default=True, help="Width of the synthetic model (768: oBERT's full size).")
@THREADS
@json_option
def demo_cmd(home: Path | None, hidden: int, threads: int | None, as_json: bool) -> None:
    """See it work offline: synthesize an oBERT-shaped model, serve it from a local mirror, download,
    verify, convert, validate latency, and answer a question. Your own cache is not touched."""
    from zoo.demo import run

    con = console()
    result = run((lambda _: None) if as_json else con.print, home=home, hidden=hidden, threads=threads)
    if as_json:
        emit_json(result)


COMMANDS = [run_cmd, eval_cmd, demo_cmd]
