"""zoo.load and zoo run: classification labels, JSON lines on stdin, offline behaviour, validation records."""

from __future__ import annotations

import json
import sqlite3

import numpy as np

import zoo
from tests.fetch.conftest import MODEL


def test_classification_labels_come_from_the_config(mnli_repo, tmp_path):
    clf = zoo.load(str(mnli_repo))
    assert clf.task == "text-classification"
    config = json.loads((mnli_repo / "config.json").read_text())
    labels = [config["id2label"][k] for k in sorted(config["id2label"], key=int)]
    ranked = clf("The game was played.", "A game happened.", top_k=None)
    assert sorted(r["label"] for r in ranked) == sorted(labels)
    assert abs(sum(r["score"] for r in ranked) - 1.0) < 1e-5
    assert ranked[0] == clf("The game was played.", "A game happened.")
    logits = clf.run([clf.tokenizer.encode("The game was played.", "A game happened.")])["logits"][0]
    assert ranked[0]["label"] == labels[int(np.argmax(logits))]

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for p in mnli_repo.iterdir():
        (renamed / p.name).write_bytes(p.read_bytes())
    config["id2label"] = {"0": "yes", "1": "maybe", "2": "no"}
    (renamed / "config.json").write_text(json.dumps(config))
    assert {r["label"] for r in zoo.load(str(renamed))("x", top_k=None)} == {"yes", "maybe", "no"}


def test_zoo_run_reads_json_lines(cli, qa_repo, mnli_repo):
    lines = "\n".join(json.dumps({"question": q, "context": "The Broncos beat the Panthers in California."})
                      for q in ("Who won?", "Where?")) + "\n"
    res = cli("run", str(qa_repo), "--json", input=lines)
    assert res.code == 0, res.err
    out = [json.loads(line) for line in res.out.splitlines()]  # JSON Lines: one compact object per input
    assert [o["line"] for o in out] == [1, 2] and all({"answer", "score", "start", "end"} <= set(o["result"]) for o in out)
    clf = cli("run", str(mnli_repo), "--json", input='{"text": "a", "text_pair": "b"}\n{"text": "c"}\n')
    assert clf.code == 0 and [json.loads(line)["line"] for line in clf.out.splitlines()] == [1, 2]
    table = cli("run", str(qa_repo), "--question", "Who won?", "--context", "The Broncos beat the Panthers.")
    assert table.code == 0 and "answer" in table.out
    wrong = cli("run", str(mnli_repo), "--json", input='{"question": "q", "context": "c"}\n')
    assert wrong.code == 1 and "needs 'text'" in wrong.err


def test_load_offline_with_nothing_cached_is_a_one_line_hint(cli, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    res = cli("run", MODEL, "--question", "q", "--context", "c")
    assert res.code == 1 and res.err.count("\n") == 1
    assert "not in the cache" in res.err and "unset them" in res.err


def test_download_validates_and_load_then_works_without_network(cli, mirror, isolated_home, monkeypatch):
    res = cli("download", MODEL)
    assert res.code == 0, res.err
    assert f"{MODEL}  " in res.out and "onnxruntime-fp32  outputs match" in res.out  # the verdict line
    con = sqlite3.connect(isolated_home / "state.db")
    records = [json.loads(r[0]) for r in con.execute("select record from validations where model = ?", (MODEL,))]
    assert len(records) == 1 and records[0]["outputs_match"] is True and records[0]["p50_ms"] > 0
    assert records[0]["max_abs_diff"] <= records[0]["tolerance"]
    mirror.stop()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    run = cli("run", MODEL, "--question", "Who won?", "--context", "The Broncos beat the Panthers.", "--json")
    assert run.code == 0, run.err
    assert "outputs match" not in run.err  # validated once, at install; not again on load
    assert len(con.execute("select * from validations").fetchall()) == 1


def test_no_validate_records_nothing(cli, mirror, isolated_home):
    assert cli("download", MODEL, "--no-validate").code == 0
    con = sqlite3.connect(isolated_home / "state.db")
    assert con.execute("select count(*) from validations").fetchone()[0] == 0


def test_demo_runs_end_to_end(cli):
    res = cli("demo", "--hidden", "64", "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert out["verdict"]["outputs_match"] is True
    assert set(out["steps_s"]) == {"synthesize", "download", "verify", "load", "answer"}
    assert {"answer", "score", "start", "end"} <= set(out["answer"])


def test_a_tokenizer_larger_than_the_model_is_a_one_line_error(cli, qa_repo, tmp_path):
    """A vocab.txt with words past the model's vocab_size yields ids the embeddings lack: refused, not read out of bounds."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in qa_repo.iterdir():
        if p.name != "tokenizer.json":  # make the tokenizer come from vocab.txt
            (broken / p.name).write_bytes(p.read_bytes())
    vocab_size = json.loads((broken / "config.json").read_text())["vocab_size"]
    words = (broken / "vocab.txt").read_text().splitlines()
    assert len(words) <= vocab_size, "fixture drift: the vocabulary already exceeds the model"
    words += [f"[unused{i}]" for i in range(vocab_size - len(words))] + ["zzzextraword"]
    (broken / "vocab.txt").write_text("\n".join(words) + "\n")
    res = cli("run", str(broken), "--question", "zzzextraword", "--context", "The Broncos won.")
    assert res.code == 1 and res.err.count("\n") == 1
    assert "token ids must lie in [0, " in res.err and "disagree on the vocabulary" in res.err
