"""``zoo run``, ``zoo eval`` and ``zoo demo`` (registered on ``zoo``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from zoo.cli.app import THREADS, console, emit_json, json_option, settings
from zoo.errors import ZooError

ENGINE = click.option("--engine", type=click.Choice(["auto", "sparse", "onnxruntime"]), default="auto", show_default=True,
                      help="auto: the sparse engine for sparse models, onnxruntime for dense ones.")


def _load(name: str, engine: str, threads: int | None) -> Any:
    from zoo.prepare import load

    return load(name, settings(threads=threads), engine=engine, on_verdict=lambda v: click.echo(v.line(), err=True),
                on_status=lambda text: click.echo(text, err=True))


def _stdin_records() -> list[dict[str, Any]]:
    records = []
    for n, line in enumerate(sys.stdin, 1):
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                raise ZooError(f"stdin line {n} is not JSON") from None
            if not isinstance(rec, dict):
                raise ZooError(f"stdin line {n}: expected an object like {{\"question\": ..., \"context\": ...}} or {{\"text\": ...}}")
            records.append(rec)
    return records


@click.command("run")
@click.argument("name")
@click.option("--question", help="Question (question-answering models).")
@click.option("--context", help="Context to find the answer in.")
@click.option("--context-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Read the context from a file.")
@click.option("--text", help="Text to classify (MNLI/QQP models).")
@click.option("--text-pair", help="Second text of a pair (hypothesis, or the other question).")
@click.option("--top-k", default=1, show_default=True, help="Answers (or labels) per input.")
@ENGINE
@THREADS
@json_option
def run_cmd(name: str, question: str | None, context: str | None, context_file: Path | None, text: str | None,
            text_pair: str | None, top_k: int, engine: str, threads: int | None, as_json: bool) -> None:
    """Answer a question or classify text with NAME (a catalog model, installed on first use, or a directory).

    \b
    Many inputs: give none of the options and pipe JSON lines on stdin, one object per line:
      {"question": "...", "context": "..."}        question answering
      {"text": "...", "text_pair": "..."}           classification (text_pair optional)
    """
    if context_file:
        context = context_file.read_text(encoding="utf-8")
    if question or context:
        records = [{"question": question or "", "context": context or ""}]
    elif text:
        records = [{"text": text, "text_pair": text_pair}]
    elif not sys.stdin.isatty():
        records = _stdin_records()
    else:
        raise ZooError("nothing to run", "give --question and --context, --text, or JSON lines on stdin")
    pipe = _load(name, engine, threads)
    results = []
    for rec in records:
        if pipe.task == "question-answering":
            if "question" not in rec or "context" not in rec:
                raise ZooError(f"{pipe.name} answers questions: each input needs 'question' and 'context'")
            out = pipe(question=rec["question"], context=rec["context"], top_k=top_k)
        else:
            if "text" not in rec:
                raise ZooError(f"{pipe.name} classifies text: each input needs 'text' (and optionally 'text_pair')")
            out = pipe(rec["text"], rec.get("text_pair"), top_k=top_k)
        results.extend(out if isinstance(out, list) and top_k == 1 else [out])
    if as_json:
        return emit_json(results if len(results) > 1 else results[0])
    from zoo.render import answers_table

    console().print(answers_table(pipe.task, results))
    return None


@click.command("eval")
@click.argument("name")
@click.option("--squad", "squad_file", type=click.Path(path_type=Path), required=True, help="SQuAD v1.1-format JSON file.")
@click.option("--limit", type=int, help="Only the first N questions.")
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
    if predictions:
        predictions.write_text(json.dumps(preds, indent=1, ensure_ascii=False) + "\n")
    if as_json:
        return emit_json(scores)
    console().print(f"{pipe.name} on {squad_file.name}: exact match {scores['exact_match']:.2f}, F1 {scores['f1']:.2f} "
                    f"over {scores['count']} questions ({scores['questions_per_s']:.1f} questions/s)")
    return None


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
