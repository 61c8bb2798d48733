"""Filters, sorting, alias resolution and suggestions, checked against the stubs read independently."""

from __future__ import annotations

import pytest

import zoo
from zoo.catalog import Filters, list_models, resolve, search, suggestions
from zoo.errors import UnknownModelError


def test_every_stub_is_listed(raw_stubs: dict[str, dict]) -> None:
    assert sorted(c.name for c in list_models()) == sorted(raw_stubs)


def test_catalog_covers_the_27_squad_variants(raw_stubs: dict[str, dict]) -> None:
    squad = [s for s in raw_stubs.values() if s["dataset"] == "squad-v1.1" and s["stage"] == "downstream"]
    shapes = {(s["architecture"]["layers"], s["sparsity"]["pattern"], s["sparsity"]["target"], s["quantization"]["scheme"]) for s in squad}
    assert len(squad) == len(shapes) == 27
    for layers in (12, 6, 3):
        assert sum(1 for s in shapes if s[0] == layers) == 9


@pytest.mark.parametrize(
    ("filters", "predicate"),
    [
        (Filters(layers=3), lambda s: s["architecture"]["layers"] == 3),
        (Filters(sparsity=80), lambda s: s["sparsity"]["target"] == 80),
        (Filters(pattern="block4"), lambda s: s["sparsity"]["pattern"] == "block4"),
        (Filters(quantized=True), lambda s: s["quantization"]["scheme"] != "none"),
        (Filters(quantized=False), lambda s: s["quantization"]["scheme"] == "none"),
        (Filters(task="text-classification"), lambda s: s["task"] == "text-classification"),
        (Filters(min_f1=85), lambda s: any(m["name"] == "f1" and m["value"] >= 85 for m in s.get("metrics", []))),
        (Filters(layers=3, sparsity=80, pattern="block4", quantized=True), lambda s: s["name"] == "obert-3l-80-quant"),
    ],
)
def test_filters(raw_stubs: dict[str, dict], filters: Filters, predicate) -> None:  # noqa: ANN001
    expected = sorted(name for name, s in raw_stubs.items() if predicate(s))
    assert expected, "filter case selects nothing: the test would be vacuous"
    assert sorted(c.name for c in list_models(filters)) == expected


def test_sort_f1_descending_unknown_last() -> None:
    cards = list_models(sort="f1")
    scores = [c.f1 for c in cards]
    known = [s for s in scores if s is not None]
    assert known == sorted(known, reverse=True)
    assert scores.index(None) == len(known)  # every unknown after every known


def test_sort_size_and_latency() -> None:
    sizes = [c.checkpoint_size_mb for c in list_models(sort="size")]
    known = [s for s in sizes if s is not None]
    assert known == sorted(known) and all(s is None for s in sizes[len(known):])
    order = [c.name for c in list_models(Filters(layers=12, task="question-answering", quantized=False), sort="latency")]
    assert order.index("obert-12l-97") < order.index("obert-12l-90") < order.index("obert-12l-80") < order.index("obert-12l-dense")
    assert list_models(Filters(sparsity=90, pattern="block4"), sort="latency")[0].layers == 3


@pytest.mark.parametrize(
    "alias",
    [
        "neuralmagic/oBERT-12-downstream-pruned-unstructured-90-squadv1",
        "RedHatAI/oBERT-12-downstream-pruned-unstructured-90-squadv1",
        "https://huggingface.co/neuralmagic/oBERT-12-downstream-pruned-unstructured-90-squadv1",
        "NEURALMAGIC/obert-12-downstream-pruned-unstructured-90-squadv1",
        "zoo:nlp/question_answering/obert-base/pytorch/huggingface/squad/pruned90-none",
        "OBERT-12L-90",
    ],
)
def test_alias_resolution(alias: str) -> None:
    assert resolve(alias).name == "obert-12l-90"


def test_resolve_does_not_treat_like_wildcards() -> None:
    with pytest.raises(UnknownModelError):
        resolve("obert-_l-90")


def test_verified_sparsezoo_alias_flags(raw_stubs: dict[str, dict]) -> None:
    card = resolve("obert-12l-90-quant")
    zoo_alias = next(a for a in card.aliases if a.kind == "sparsezoo")
    assert zoo_alias.name.endswith("pruned90_quant-none") and zoo_alias.verified
    assert all(not a.verified for a in resolve("obert-3l-80-quant").aliases if a.kind == "sparsezoo")


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve("obert-3l-85")
    err = info.value
    assert err.suggestions and "obert-3l-80" in err.suggestions
    assert all(s.startswith("obert-") for s in err.suggestions)
    assert "did you mean" in str(err) and "\n" not in str(err)
    assert suggestions("completely-unrelated-xyz") == []


def test_search_matches_names_aliases_and_tags() -> None:
    assert {c.name for c in search("mnli")} == {c.name for c in list_models(Filters(task="text-classification")) if c.dataset == "mnli"}
    assert [c.name for c in search("pruned-block4-80-QAT squadv1 oBERT-3")] == ["obert-3l-80-quant"]
    assert {c.name for c in search("compound")} == {c.name for c in list_models(Filters(quantized=True)) if c.pattern == "block4"}
    assert search("no-such-word") == []


def test_model_card_facts_from_stubs(raw_stubs: dict[str, dict]) -> None:
    card = zoo.show("obert-3l-80-quant")
    stub = raw_stubs["obert-3l-80-quant"]
    assert (card.layers, card.sparsity, card.pattern, card.quantization) == (3, 80, "block4", "int8-qat")
    assert {m.name: (m.value, m.source) for m in card.metrics} == {m["name"]: (m["value"], m["source"]) for m in stub["metrics"]}
    assert card.hub_url == "https://huggingface.co/" + stub["source"]["repo"]
    assert all(f.repo == stub["source"]["repo"] and f.revision == "main" for f in card.files)


def test_catalog_url_override(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from zoo.catalog.build import build

    from ..conftest import STUBS

    db = tmp_path / "team.db"
    build(STUBS, db)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{db}")
    assert resolve("obert-6l-90").layers == 6
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    from zoo.errors import CatalogError

    with pytest.raises(CatalogError):
        list_models()
