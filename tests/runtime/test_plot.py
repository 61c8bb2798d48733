"""`zoo bench --plot`: published F1 against latency measured here, with DistilBERT and TinyBERT-4 timed on
onnxruntime, the Pareto front marked, as a file or in the terminal; the history over time; `zoo eval` beside the
published figures. Models are narrowed (--hidden 64) so the whole file runs in seconds."""

from __future__ import annotations

import json

from zoo.catalog import resolve
from zoo.fetch.mirror import MirrorHTTPServer
from zoo.plot import REFERENCES, Point, pareto
from zoo.synth import SynthSpec, write_repo

QUICK = ("--synthetic", "--hidden", "64", "--runs", "3", "--seq", "16", "--threads", "1")


def test_the_pareto_front_keeps_only_undominated_points():
    pts = [Point("slow-good", 10, 89, "s"), Point("fast-bad", 1, 80, "s"), Point("mid", 5, 85, "s"),
           Point("dominated", 6, 84, "s"), Point("same-speed-worse", 5, 83, "s"), Point("slow-worse", 12, 88, "s")]
    assert [p.label for p in pareto(pts)] == ["fast-bad", "mid", "slow-good"]


def test_references_are_the_published_figures_with_their_tables():
    by_label = {r.label: r for r in REFERENCES}
    assert (by_label["DistilBERT"].layers, by_label["DistilBERT"].hidden, by_label["DistilBERT"].intermediate) == (6, 768, 3072)
    assert (by_label["DistilBERT"].f1, by_label["DistilBERT"].exact_match) == (85.8, 77.7)
    assert "1910.01108" in by_label["DistilBERT"].source and "Table 2" in by_label["DistilBERT"].source
    assert (by_label["TinyBERT-4"].layers, by_label["TinyBERT-4"].hidden, by_label["TinyBERT-4"].intermediate) == (4, 312, 1200)
    assert (by_label["TinyBERT-4"].f1, by_label["TinyBERT-4"].exact_match) == (82.1, 72.7)
    assert "1909.10351" in by_label["TinyBERT-4"].source and "Table 6" in by_label["TinyBERT-4"].source


def test_bench_plot_writes_a_png_with_catalog_f1_references_and_the_front(cli, tmp_path):
    png = tmp_path / "pareto.png"
    res = cli("bench", "obert-3l-90", "obert-12l-80", "obert-3l-97", *QUICK, "--plot", str(png), "--json")
    assert res.code == 0, res.err
    out = res.json()
    points = {p["label"]: p for p in out["points"]}
    assert set(points) == {"obert-3l-90", "obert-12l-80", "DistilBERT", "TinyBERT-4"}
    assert out["left_out"] == ["obert-3l-97"]  # no published F1: left off, never invented
    assert "no published F1" in res.err
    assert points["obert-3l-90"]["f1"] == resolve("obert-3l-90").f1 == 82.50
    assert points["obert-12l-80"]["f1"] == 89.04 and "sparseml" in points["obert-12l-80"]["source"]
    assert points["obert-12l-80"]["engine"] == "sparse" and not points["obert-12l-80"]["reference"]
    assert points["DistilBERT"]["engine"] == "onnxruntime" and points["DistilBERT"]["reference"] and points["DistilBERT"]["f1"] == 85.8
    assert all(p["latency_ms"] > 0 for p in points.values())
    front = {p.label for p in pareto([Point(p["label"], p["latency_ms"], p["f1"], p["source"]) for p in out["points"]])}
    assert {label for label, p in points.items() if p["pareto"]} == front
    assert "obert-12l-80" in front  # the most accurate point is always on the front
    assert out["file"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_bench_plot_in_the_terminal_and_history_over_time(cli, tmp_path):
    res = cli("bench", "obert-3l-90", *QUICK, "--plot")
    assert res.code == 0, res.err
    assert "Pareto front" in res.out and "latency, ms" in res.out and "┤" in res.out  # plotext's chart, axes and legend
    assert "obert-3l-90" in res.out and "TinyBERT-4" in res.out and "Jiao et al. 2020" in res.out
    cli("bench", "obert-3l-90", *QUICK, "--engines", "sparse")
    svg = tmp_path / "history.svg"
    hist = cli("bench", "--history", "obert-3l-90", "--plot", str(svg))
    assert hist.code == 0, hist.err
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "obert-3l-90 sparse" in text
    assert "p50 latency" in cli("bench", "--history", "--plot").out
    bad = cli("bench", "obert-3l-90", *QUICK, "--plot", "chart.txt")
    assert bad.code == 1 and bad.err.startswith("error: --plot writes .png") and len(bad.err.strip().splitlines()) == 1
    narrow = cli("bench", "obert-3l-90", "--hidden", "64")
    assert narrow.code == 1 and "--hidden shrinks synthetic models only" in narrow.err


def test_eval_prints_the_published_figures_beside_the_measured_ones(cli, tmp_path):
    card = resolve("obert-3l-90")
    write_repo(tmp_path / "mirror" / card.repo, SynthSpec(layers=3, sparsity=90, pattern="unstructured", hidden=64, heads=4,
                                                          intermediate=128, vocab_size=1200, max_positions=128))
    server = MirrorHTTPServer(tmp_path / "mirror").start()
    try:
        got = cli("download", "obert-3l-90", env={"HF_ENDPOINT": server.url})
        assert got.code == 0, got.err
    finally:
        server.shutdown()
        server.server_close()
    context = "Denver Broncos defeated the Carolina Panthers in Santa Clara, California."
    squad = tmp_path / "dev.json"
    squad.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "a", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]}]}]}]}))
    out = cli("eval", "obert-3l-90", "--squad", str(squad), "--json")
    assert out.code == 0, out.err
    published = out.json()["published"]
    assert (published["f1"], published["exact_match"], published["dataset"]) == (82.50, 73.61, "squad-v1.1-dev")
    assert "sparseml" in published["source"]
    text = cli("eval", "obert-3l-90", "--squad", str(squad)).out
    assert "published (squad-v1.1-dev): exact match 73.61, F1 82.50; source: neuralmagic/sparseml" in text
