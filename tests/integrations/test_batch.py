"""``zoo run NAME --input FILE --output FILE`` in one process: order, ids, Parquet, resuming, clean failures.

The answers are compared with ``zoo run --json`` (stdin, one input at a time): same line numbers and ids, same
answer spans, scores within 1e-6 (the engine picks its kernels by measuring, so the last float bits may vary
between processes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONTEXT = "The Denver Broncos beat the Carolina Panthers 24 to 10 in Santa Clara. Von Miller was the most valuable player."


def qa_inputs(n: int) -> list[dict]:
    records = []
    for i in range(n):
        rec = {"question": f"Who won game {i}?", "context": f"Game {i} was played on day {3 * i}. " * (1 + i % 4) + CONTEXT}
        if i % 5 != 3:  # some records carry no id: none comes back for them
            rec["id"] = f"q{i}" if i % 2 else i
        records.append(rec)
    return records


def write_jsonl(path: Path, records: list[dict], blank_after: tuple[int, ...] = ()) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, rec in enumerate(records):
            f.write(json.dumps(rec) + "\n")
            if i in blank_after:
                f.write("\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_answers(got: list[dict], expected: list[dict]) -> None:
    assert [(r["line"], r.get("id", "-")) for r in got] == [(r["line"], r.get("id", "-")) for r in expected]
    for g, e in zip(got, expected, strict=True):
        g_res, e_res = g["result"], e["result"]
        keys = [k for k in e_res if k != "score"]
        assert {k: g_res[k] for k in keys} == {k: e_res[k] for k in keys}, (g, e)
        assert abs(g_res["score"] - e_res["score"]) < 1e-6, (g, e)


@pytest.fixture(scope="module")
def qa_file(qa_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("batch") / "questions.jsonl", qa_inputs(23), blank_after=(4, 11))


@pytest.fixture(scope="module")
def reference(qa_repo: Path, qa_file: Path) -> list[dict]:
    """What ``zoo run --json`` prints for the same inputs piped on stdin."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "zoo", "run", str(qa_repo), "--json", "--threads", "1"], input=qa_file.read_bytes(),
                          capture_output=True, env=os.environ, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_file_answers_equal_zoo_run_json_in_input_order_with_ids(cli, qa_repo: Path, qa_file: Path, reference: list[dict],
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    run = cli("run", str(qa_repo), "--input", str(qa_file), "--output", str(out), "--batch-size", "4", "--threads", "1")
    assert run.code == 0, run.err
    got = read_jsonl(out)
    assert len(got) == 23 and got[5]["line"] == 7  # the blank line after the fifth input is skipped but counted
    assert "id" not in got[3] and got[1]["id"] == "q1" and got[2]["id"] == 2
    assert_same_answers(got, reference)
    assert "scored 23 of 23 inputs" in run.err and "on 1 worker" in run.err


def test_a_cut_run_resumes_after_its_last_complete_line(cli, qa_repo: Path, qa_file: Path, reference: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    assert cli("run", str(qa_repo), "--input", str(qa_file), "--output", str(out), "--threads", "1").code == 0
    full = out.read_bytes()
    lines = full.splitlines(keepends=True)
    kept = b"".join(lines[:9])
    out.write_bytes(kept + lines[9][:17])  # nine complete answers and the start of a tenth, as a killed run leaves it
    run = cli("run", str(qa_repo), "--input", str(qa_file), "--output", str(out), "--batch-size", "5", "--threads", "1")
    assert run.code == 0, run.err
    assert "resuming: 9 of 23 inputs already answered" in run.err and "scored 14 of 23 inputs" in run.err
    assert out.read_bytes().startswith(kept)
    assert_same_answers(read_jsonl(out), reference)
    again = cli("run", str(qa_repo), "--input", str(qa_file), "--output", str(out), "--threads", "1")
    assert again.code == 0 and "scored 0 of 23 inputs" in again.err and out.read_bytes().count(b"\n") == 23


def test_an_output_of_other_inputs_is_refused_untouched(cli, qa_repo: Path, qa_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    out.write_text('{"line":1,"id":"elsewhere","result":{"answer":"x","score":0.5,"start":0,"end":1}}\n')
    before = out.read_bytes()
    run = cli("run", str(qa_repo), "--input", str(qa_file), "--output", str(out), "--threads", "1")
    assert run.code == 1
    assert run.err.startswith("error: --output") and "id 'elsewhere'" in run.err and len(run.err.strip().splitlines()) == 1
    assert out.read_bytes() == before


def test_a_malformed_input_stops_after_every_answer_before_it_then_resumes_once_fixed(cli, qa_repo: Path, tmp_path: Path) -> None:
    records = qa_inputs(10)
    broken = [dict(r) for r in records]
    del broken[5]["context"]
    source = write_jsonl(tmp_path / "in.jsonl", broken)
    out = tmp_path / "answers.jsonl"
    run = cli("run", str(qa_repo), "--input", str(source), "--output", str(out), "--batch-size", "4", "--threads", "1")
    assert run.code == 1
    assert run.err.strip().splitlines()[-1].startswith("error: input line 6: ") and "'question' and 'context'" in run.err
    assert [r["line"] for r in read_jsonl(out)] == [1, 2, 3, 4, 5]  # the shard's answers before the bad record are kept
    write_jsonl(source, records)
    fixed = cli("run", str(qa_repo), "--input", str(source), "--output", str(out), "--batch-size", "4", "--threads", "1")
    assert fixed.code == 0 and "resuming: 5 of 10" in fixed.err
    assert [r["line"] for r in read_jsonl(out)] == list(range(1, 11))


def test_parquet_rows_across_row_groups_answer_as_their_json_lines(cli, mnli_repo: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pairs = [{"id": 100 + i, "text": f"A man plays game {i}.", "text_pair": None if i % 3 == 0 else f"Someone plays {i % 4}."}
             for i in range(13)]
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(pairs), parquet, row_group_size=5)  # shards of 4 cut through groups of 5
    assert pq.ParquetFile(parquet).metadata.num_row_groups == 3
    out = tmp_path / "labels.jsonl"
    run = cli("run", str(mnli_repo), "--input", str(parquet), "--output", str(out), "--batch-size", "4", "--threads", "1")
    assert run.code == 0, run.err
    reference = cli("run", str(mnli_repo), "--json", "--threads", "1", input="".join(json.dumps(p) + "\n" for p in pairs))
    assert reference.code == 0, reference.err
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [p["id"] for p in pairs] and [r["line"] for r in got] == list(range(1, 14))
    assert_same_answers(got, [json.loads(line) for line in reference.out.splitlines()])


def test_file_mistakes_are_one_line(cli, qa_repo: Path, qa_file: Path, tmp_path: Path) -> None:
    for args, expected in [
        (["--input", str(qa_file)], "error: --input and --output go together"),
        (["--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "o.jsonl")], "no such file"),
        (["--input", str(qa_file), "--output", str(qa_file)], "is the input file"),
        (["--input", str(qa_file), "--output", str(tmp_path / "o.jsonl"), "--question", "Who?"], "drop --question"),
        (["--input", str(qa_file), "--output", str(tmp_path / "no" / "o.jsonl")], "no directory"),
    ]:
        run = cli("run", str(qa_repo), *args)
        assert run.code == 1 and run.err.startswith("error: ") and expected in run.err and len(run.err.strip().splitlines()) == 1, run.err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    run = cli("run", str(qa_repo), "--input", str(empty), "--output", str(tmp_path / "o.jsonl"))
    assert run.code == 1 and "holds no inputs" in run.err
