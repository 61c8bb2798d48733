"""``zoo bench`` through the real CLI: results parse back, are stored, and show in --history."""

from __future__ import annotations

from pathlib import Path

from zoo.synth import SynthSpec, write_repo


def test_bench_dir_json_and_history(cli, tmp_path: Path) -> None:  # noqa: ANN001
    repo = write_repo(tmp_path / "m", SynthSpec(layers=1, hidden=64, heads=4, intermediate=128, vocab_size=1200, max_positions=64,
                                                sparsity=80, pattern="unstructured"))
    result = cli("bench", str(repo), "--engines", "sparse,onnxruntime", "--runs", "3", "--seq", "16", "--threads", "1", "--json")
    assert result.code == 0, result.err
    report = result.json()
    engines = {r["engine"]: r for r in report[0]["results"]}
    assert set(engines) == {"sparse", "onnxruntime"}
    assert engines["onnxruntime"]["speedup_vs_ort_fp32"] == 1.0
    for r in engines.values():
        assert r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and r["seq"] == 16 and r["runs"] == 3
    history = cli("bench", "--history", "--json").json()
    assert {(h["model"], h["engine"]) for h in history} == {(str(repo), "sparse"), (str(repo), "onnxruntime")}
    assert cli("bench", "--history").code == 0


def test_bench_errors(cli) -> None:  # noqa: ANN001
    missing = cli("bench")
    assert missing.code == 1 and "name at least one model" in missing.err
    bad = cli("bench", "obert-3l-80-quant", "--synthetic", "--engines", "tensorrt")
    assert bad.code == 1 and "unknown engine" in bad.err and len(bad.err.strip().splitlines()) == 1
