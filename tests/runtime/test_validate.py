"""The install-time check's expectation: the catalog's per-variant figure for this CPU family (with its source), else the
default rule; onnxruntime's timing comes from a child process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import zoo
from zoo.convert.repo import load_model
from zoo.prepare import expectation
from zoo.runtime.engine import compile
from zoo.runtime.validate import SPARSE_EXPECTED, cpu_family, validate
from zoo.synth import SynthSpec, write_repo


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SynthSpec(layers=1, vocab_size=1200, max_positions=256, hidden=64, heads=4, intermediate=128, sparsity=80,
                     pattern="unstructured")
    return write_repo(tmp_path_factory.mktemp("val"), spec)


class SlowEngine:
    """The real engine, 40 ms late: far below any expectation, with outputs that still match."""

    def __init__(self, engine) -> None:  # noqa: ANN001
        self.engine = engine

    def kinds(self) -> dict[str, int]:
        return self.engine.kinds()

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        time.sleep(0.04)
        return self.engine(*args, **kwargs)


@pytest.mark.parametrize("family", ["amx", "avx512-vnni", "avx2"])
def test_catalog_figures_are_used_for_this_cpu_family(tiny: Path, raw_stubs: dict[str, dict], family: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(tiny)
    monkeypatch.setattr("zoo.runtime.validate.cpu_family", lambda: family)
    with_figure = {name: s["runtime"][family] for name, s in raw_stubs.items() if family in s.get("runtime", {})}
    assert with_figure, f"no stub carries a [runtime.{family}] expectation: the test would be vacuous"
    for name, rt in with_figure.items():
        expected = (rt["expected_speedup"], f"catalog, {family} CPUs: {rt['speedup_source']}")
        assert expectation(zoo.resolve(name), model) == expected
        assert zoo.resolve(name).expected_speedup(family) == (rt["expected_speedup"], rt["speedup_source"])


def test_a_family_without_a_figure_gets_the_default_rule_and_says_so(tiny: Path, raw_stubs: dict[str, dict],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    name = next(n for n, s in raw_stubs.items() if "avx512-vnni" in s.get("runtime", {}) and "avx2" not in s["runtime"])
    monkeypatch.setattr("zoo.runtime.validate.cpu_family", lambda: "avx2")
    figure, why = expectation(zoo.resolve(name), load_model(tiny))
    assert figure == SPARSE_EXPECTED and "no figure for avx2 CPUs" in why


@pytest.mark.parametrize(("flags", "family"), [({"avx2", "avx512_vnni", "amx_int8"}, "amx"), ({"avx2", "avx512f", "avx512_vnni"}, "avx512-vnni"),
                                               ({"avx2", "fma", "avx512f"}, "avx2"), ({"sse4_2"}, "portable")])
def test_cpu_family_from_flags(flags: set[str], family: str) -> None:
    assert cpu_family(flags) == family


def test_a_slow_engine_warns_against_the_catalog_figure(tiny: Path, raw_stubs: dict[str, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("zoo.runtime.validate.cpu_family", lambda: "avx512-vnni")
    model = load_model(tiny)
    slow = SlowEngine(compile(model, threads=1, backend="sparse"))
    verdict = validate("obert-3l-80-quant", model, slow, threads=1, runs=3, expected=expectation(zoo.resolve("obert-3l-80-quant"), model))
    figure = raw_stubs["obert-3l-80-quant"]["runtime"]["avx512-vnni"]["expected_speedup"]
    assert verdict.outputs_match and verdict.expected_speedup == round(figure, 2)
    assert verdict.warning is not None and verdict.speedup < figure
    assert "catalog, avx512-vnni CPUs: bench/engines.py" in verdict.warning and "likely cause" in verdict.warning


def test_uncatalogued_directories_get_the_default_rule(tiny: Path) -> None:
    model = load_model(tiny)
    slow = SlowEngine(compile(model, threads=1, backend="sparse"))
    verdict = validate(str(tiny), model, slow, threads=1, runs=3, expected=expectation(None, model))
    assert verdict.expected_speedup == SPARSE_EXPECTED
    assert verdict.warning is not None and "default for sparse encoders" in verdict.warning


def test_onnxruntime_is_timed_in_a_child_process(tiny: Path) -> None:
    """Its thread pool never shares our process: the verdict names the child that timed it."""
    import os

    model = load_model(tiny)
    verdict = validate(str(tiny), model, compile(model, threads=1, backend="sparse"), threads=1, runs=3)
    assert verdict.ort_timed_in.startswith("child process "), verdict.ort_timed_in
    assert int(verdict.ort_timed_in.split()[-1]) != os.getpid() and verdict.ort_fp32_p50_ms > 0
    assert verdict.to_dict()["ort_timed_in"] == verdict.ort_timed_in  # recorded with the verdict in the state DB


def test_onnxruntime_engines_are_timed_in_their_own_process(tiny: Path) -> None:
    model = load_model(tiny)
    verdict = validate(str(tiny), model, compile(model, threads=1, backend="onnxruntime"), threads=1, runs=3)
    assert verdict.ort_timed_in == "same process" and verdict.engine == "onnxruntime"
