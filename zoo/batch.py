"""Batch scoring: a JSON Lines or Parquet file of inputs -> a JSON Lines file of answers, in input order, resumable.

The input is cut into shards (runs of ``batch_size`` consecutive records: a byte range of a JSON Lines file found
by one scan, or a slice of a Parquet row group read from its footer), so any worker that can open the path can
read its own shard and nothing but shard descriptors travels. A ``Scorer`` (one pipeline, loaded once through
``zoo.prepare``) turns a shard into output lines, its records' jobs run together as ``zoo serve`` batches them.
In one process the shards are scored one after another; on Ray (``zoo.integrations.ray_data``) a pool of
actors scores them and the results come back in input order. Either way this module writes them: one line
``{"line": N, "id": ..., "result": R}`` per input (what ``zoo run --json`` prints; ``id`` only when the input
has one), flushed after each shard, so a run that stops leaves complete lines and a partial last one at most.
Running the same command again drops that partial line, checks the lines kept against the input and goes on
after them. A malformed input record stops the run with its line number after everything before it is written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo.config import Settings
from zoo.errors import InputError

EXAMPLE = '{"question": ..., "context": ...} or {"text": ..., "text_pair": ...}'
KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def read_records(lines: Iterable[bytes], start: int = 1) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of JSON Lines, read lazily (answers stream as lines arrive);
    a line that is not UTF-8, not JSON or not an object is an ``InputError`` naming it. ``start``: the first line's number."""
    for n, raw in enumerate(lines, start):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"input line {n} is not UTF-8 text") from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise InputError(f"input line {n} is not JSON", f"one object per line: {EXAMPLE}") from None
        if not isinstance(rec, dict):
            raise InputError(f"input line {n} is a JSON {type(rec).__name__}, not an object", f"one object per line: {EXAMPLE}")
        yield n, rec


def plan(pipe: Any, rec: dict[str, Any], top_k: int, where: str) -> Any:
    """The pipeline ``Job`` answering one input record (``where`` names it in errors: "input line 3")."""
    if pipe.task == "question-answering":
        if "question" not in rec or "context" not in rec:
            raise InputError(f"{where}: {pipe.name} answers questions: each input needs 'question' and 'context'")
        fields = {"question": rec["question"], "context": rec["context"]}
    else:
        if "text" not in rec:
            raise InputError(f"{where}: {pipe.name} classifies text: each input needs 'text' (and optionally 'text_pair')")
        fields = {"text": rec["text"], "text_pair": rec.get("text_pair")}
    wrong = [k for k, v in fields.items() if not isinstance(v, str) and not (k == "text_pair" and v is None)]
    if wrong:
        raise InputError(f"{where}: '{wrong[0]}' must be a string, got {type(fields[wrong[0]]).__name__}")
    try:
        if pipe.task == "question-answering":
            return pipe.plan_answer(fields["question"], fields["context"], top_k=top_k)
        return pipe.plan_classify(fields["text"], fields["text_pair"], top_k=top_k)
    except InputError as exc:
        raise InputError(f"{where}: {exc.message}", exc.hint) from None


def output_line(n: int, rec: dict[str, Any], result: Any) -> str:
    """One output record as a compact JSON line (no newline): ``{"line": N, "id": ..., "result": R}``."""
    return json.dumps({"line": n, **({"id": rec["id"]} if "id" in rec else {}), "result": result}, ensure_ascii=False,
                      separators=(",", ":"))


# -- input: kinds, shards, records ---------------------------------------------------------------------------


def input_kind(path: Path) -> str:
    """``jsonl`` or ``parquet``, from the file name; anything else is an ``InputError``."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"--input {path}: unknown format {path.suffix or '(no suffix)'!r}",
                         "give a JSON Lines file (.jsonl) or a Parquet file (.parquet)")
    if not path.is_file():
        raise InputError(f"--input {path}: no such file")
    return kind


@dataclass(frozen=True)
class Shard:
    """A run of consecutive input records: ``first`` (0-based index of its first record) and ``count`` of them;
    JSON Lines: bytes ``offset``.. ``offset + length`` starting at line ``line``; Parquet: row group ``offset``
    from its row ``length`` (its rows are numbered ``line``.. in the file)."""

    path: str
    kind: str
    first: int
    count: int
    offset: int
    length: int
    line: int

    def where(self, n: int) -> str:
        return f"input {'line' if self.kind == 'jsonl' else 'row'} {n}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Shard:
        return cls(**json.loads(text))


def _blank(raw: bytes) -> bool:
    return not raw.strip() or not raw.decode("utf-8", "replace").strip()


def shards(path: Path, kind: str, size: int, skip: int = 0) -> tuple[int, list[Shard]]:
    """The input's record count and its shards of ``size`` records, the first starting after ``skip`` records."""
    if kind == "parquet":
        return _parquet_shards(path, size, skip)
    out: list[Shard] = []
    total = 0
    start = None  # (first record index, byte offset, line number) of the shard being gathered
    offset = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not _blank(raw):
                if total >= skip and start is None:
                    start = (total, offset, n)
                total += 1
                if start is not None and total - start[0] == size:
                    out.append(Shard(str(path), kind, start[0], size, start[1], offset + len(raw) - start[1], start[2]))
                    start = None
            offset += len(raw)
    if start is not None:
        out.append(Shard(str(path), kind, start[0], total - start[0], start[1], offset - start[1], start[2]))
    return total, out


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow, which is not installed", "pip install 'obert-zoo[ray]' (or pyarrow)") from None
    return pq


def _parquet_file(path: Path) -> Any:
    pq = _pyarrow_parquet()
    try:
        return pq.ParquetFile(str(path))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError ... for a file that is not Parquet
        raise InputError(f"--input {path} is not a Parquet file: {str(exc).splitlines()[0][:200]}") from None


def _parquet_shards(path: Path, size: int, skip: int) -> tuple[int, list[Shard]]:
    meta = _parquet_file(path).metadata
    out: list[Shard] = []
    first = 0
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        for at in range(0, rows, size):
            count = min(size, rows - at)
            begin = max(at, skip - first)
            if begin < at + count:
                out.append(Shard(str(path), "parquet", first + begin, at + count - begin, group, begin, first + begin + 1))
        first += rows
    return first, out


def read_shard(shard: Shard) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, record) for each record of ``shard``; a malformed one raises ``InputError`` when reached."""
    if shard.kind == "parquet":
        table = _parquet_file(Path(shard.path)).read_row_group(shard.offset).slice(shard.length, shard.count)
        yield from enumerate(table.to_pylist(), shard.line)
        return
    with open(shard.path, "rb") as f:
        f.seek(shard.offset)
        data = f.read(shard.length)
    yield from read_records(data.splitlines(keepends=True), shard.line)


def records(path: Path, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every record of the input, in order, read lazily."""
    if kind == "parquet":
        total, parts = _parquet_shards(path, 1 << 16, 0)
        for part in parts:
            yield from read_shard(part)
        return
    with open(path, "rb") as f:
        yield from read_records(f)


# -- scoring -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """A shard's output lines (JSON, no newlines), the error that stopped it early, and the worker that scored it."""

    first: int
    lines: list[str]
    error: str = ""
    worker: str = ""


class Scorer:
    """One pipeline, loaded once through ``zoo.prepare``, scoring shards."""

    def __init__(self, model: str, settings: Settings, *, engine: str = "auto", top_k: int = 1,
                 on_status: Callable[[str], None] | None = None, on_verdict: Callable[[Any], None] | None = None) -> None:
        from zoo.prepare import pipeline, prepare

        self.pipe = pipeline(prepare(model, settings, engine=engine, on_status=on_status, on_verdict=on_verdict))
        self.top_k = top_k
        import socket

        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def score(self, shard: Shard) -> Scored:
        """Every record's answer; at a malformed record, the answers before it and the error naming it."""
        planned, error = [], ""
        try:
            for n, rec in read_shard(shard):
                planned.append((n, rec, plan(self.pipe, rec, self.top_k, shard.where(n))))
        except InputError as exc:
            error = exc.one_line()
        answers = self.pipe.run_jobs([job for _, _, job in planned])
        lines = [output_line(n, rec, result) for (n, rec, _), result in zip(planned, answers, strict=True)]
        return Scored(shard.first, lines, error, self.worker)


# -- output: resume, write -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scoring:
    """What to score: a model (catalog name or directory) over an input file, into an output file."""

    model: str
    input: Path
    output: Path
    batch_size: int = 64
    top_k: int = 1
    engine: str = "auto"


@dataclass(frozen=True)
class BatchResult:
    output: Path
    total: int
    resumed: int
    scored: int
    seconds: float
    workers: int

    def line(self) -> str:
        rate = f" ({self.scored / self.seconds:.1f}/s)" if self.seconds > 0 and self.scored else ""
        kept = f", {self.resumed} kept from an earlier run" if self.resumed else ""
        on = f" on {self.workers} worker{'s' if self.workers != 1 else ''}" if self.workers else ""
        return f"scored {self.scored} of {self.total} inputs in {self.seconds:.1f} s{rate}{on}{kept} -> {self.output}"


def resume_point(scoring: Scoring, kind: str) -> int:
    """How many records ``scoring.output`` already holds for this input (0 when it does not exist); a partial
    last line (a run cut mid-write) is cut off; lines that do not match the input's start are an ``InputError``."""
    out = scoring.output
    if not out.parent.is_dir():
        raise InputError(f"--output {out}: no directory {out.parent}")
    if not out.exists():
        return 0
    if out.resolve() == scoring.input.resolve():
        raise InputError(f"--output {out} is the input file")
    hint = f"delete {out} (or pick another --output) to score from the start"
    with open(out, "rb+") as f:
        data = f.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            f.truncate(complete)
    expected = records(scoring.input, kind)
    count = 0
    for k, raw in enumerate(data[:complete].splitlines(), 1):
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("line"), int) or "result" not in rec:
            raise InputError(f"--output {out} line {k} is not an answer record, so it cannot be resumed", hint)
        try:
            n, source = next(expected)
        except StopIteration:
            raise InputError(f"--output {out} holds more answers than {scoring.input} has inputs", hint) from None
        except InputError:
            raise InputError(f"--output {out} line {k} answers an input that is malformed now", hint) from None
        if rec["line"] != n or rec.get("id") != source.get("id"):
            raise InputError(f"--output {out} line {k} answers input {rec['line']} (id {rec.get('id')!r}), but input "
                             f"#{k} of {scoring.input} is {n} (id {source.get('id')!r})", hint)
        count = k
    return count


ScoreShards = Callable[[list[Shard]], Iterator[Scored]]


def run(scoring: Scoring, settings: Settings, *, say: Callable[[str], None] = lambda text: None,
        progress: Callable[[int, int], None] = lambda done, total: None, score: ScoreShards | None = None) -> BatchResult:
    """Score ``scoring.input`` into ``scoring.output`` (resuming it) in input order. ``score`` maps shards to their
    ``Scored`` in order (Ray's actor pool); by default one ``Scorer`` in this process does it. ``progress(done, total)``."""
    kind = input_kind(scoring.input)
    done = resume_point(scoring, kind)
    total, parts = shards(scoring.input, kind, scoring.batch_size, done)
    if total == 0:
        raise InputError(f"--input {scoring.input} holds no inputs", f"one object per line: {EXAMPLE}")
    if done:
        say(f"resuming: {done} of {total} inputs already answered in {scoring.output}")
    started = time.perf_counter()
    workers: set[str] = set()
    progress(done, total)
    scored = 0
    if parts:
        if score is None:
            scorer = Scorer(scoring.model, settings, engine=scoring.engine, top_k=scoring.top_k, on_status=say,
                            on_verdict=lambda v: say(v.line()))
            started = time.perf_counter()
            results: Iterable[Scored] = (scorer.score(p) for p in parts)
        else:
            results = score(parts)
        with open(scoring.output, "ab") as f:
            for result in results:
                if result.lines:
                    f.write(("\n".join(result.lines) + "\n").encode("utf-8"))
                    f.flush()
                scored += len(result.lines)
                workers.add(result.worker)
                progress(done + scored, total)
                if result.error:
                    raise InputError(f"{result.error} ({done + scored} answers are in {scoring.output}; "
                                     "fix the input and run again to go on from there)")
    return BatchResult(scoring.output, total, done, scored, time.perf_counter() - started, len(workers - {""}))
