"""The catalog through the real ``zoo`` command: tables, --json parsed back, errors, API agreement."""

from __future__ import annotations

import json

import yaml

import zoo


def test_list_shows_every_entry(cli, raw_stubs) -> None:  # noqa: ANN001
    result = cli("list")
    assert result.code == 0
    for name in raw_stubs:
        assert f" {name} " in result.out
    assert f"{len(raw_stubs)} models" in result.out


def test_list_json_agrees_with_api(cli) -> None:  # noqa: ANN001
    result = cli("list", "--layers", "3", "--quant", "--sort", "f1", "--json")
    assert result.code == 0
    data = result.json()
    api = zoo.list_models(layers=3, quantized=True, sort="f1")
    assert [d["name"] for d in data] == [c.name for c in api]
    assert data == json.loads(json.dumps([c.to_dict() for c in api]))


def test_list_filters_on_cli(cli) -> None:  # noqa: ANN001
    data = cli("list", "--pattern", "block4", "--no-quant", "--min-f1", "85", "--json").json()
    assert data and all(d["pattern"] == "block4" and d["quantization"] == "none" for d in data)
    assert all(any(m["name"] == "f1" and m["value"] >= 85 for m in d["metrics"]) for d in data)
    assert cli("list", "--sparsity", "97", "--task", "text-classification", "--json").json()[0]["name"] == "obert-12l-97-mnli"


def test_show_obert_3l_80_quant(cli, raw_stubs) -> None:  # noqa: ANN001
    result = cli("show", "obert-3l-80-quant")
    assert result.code == 0
    out = " ".join(result.out.split())
    assert "3 layers" in out and "80% block4" in out and "int8 QAT" in out
    assert "82.04" in out and "72.70" in out
    source = raw_stubs["obert-3l-80-quant"]["metrics"][0]["source"]
    assert source.split()[0] in out  # the citation is printed beside the number
    assert "https://huggingface.co/neuralmagic/oBERT-3-downstream-pruned-block4-80-QAT-squadv1" in out


def test_show_by_hub_id_and_json(cli) -> None:  # noqa: ANN001
    result = cli("show", "neuralmagic/oBERT-12-downstream-pruned-unstructured-90-squadv1", "--json")
    assert result.code == 0
    data = result.json()
    assert data["name"] == "obert-12l-90"
    assert data == json.loads(json.dumps(zoo.show("obert-12l-90").to_dict()))


def test_unknown_name_exits_1_with_suggestions(cli) -> None:  # noqa: ANN001
    result = cli("show", "obert-3l-85")
    assert result.code == 1 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'obert-3l-85'" in lines[0] and "did you mean: obert-3l-80" in lines[0]
    assert "Traceback" not in result.err
    assert cli("recipe", "obert-3l-85").code == 1


def test_search_cli(cli) -> None:  # noqa: ANN001
    data = cli("search", "qqp", "--json").json()
    assert {d["name"] for d in data} == {c.name for c in zoo.search("qqp")}
    assert all(d["dataset"] == "qqp" for d in data)


class _AnyTagLoader(yaml.SafeLoader):
    pass


_AnyTagLoader.add_multi_constructor("!", lambda loader, tag, node: {tag: loader.construct_mapping(node)})


def test_recipe_yaml_parses_back(cli, raw_stubs) -> None:  # noqa: ANN001
    result = cli("recipe", "obert-12l-80-block4")
    assert result.code == 0
    doc = yaml.load(result.out, Loader=_AnyTagLoader)
    mods = {k: v for m in doc["modifiers"] for k, v in m.items()}
    pruning = raw_stubs["obert-12l-80-block4"]["recipe"]["pruning"]
    assert mods["OBSPruningModifier"]["mask_type"] == pruning["mask_type"] == "block4"
    assert mods["OBSPruningModifier"]["final_sparsity"] == pruning["final_sparsity"]
    assert mods["OBSPruningModifier"]["params"] == pruning["params"]
    assert mods["EpochRangeModifier"]["end_epoch"] == raw_stubs["obert-12l-80-block4"]["recipe"]["epochs"]
    quant = yaml.load(cli("recipe", "obert-3l-80-quant").out, Loader=_AnyTagLoader)
    qmods = {k: v for m in quant["modifiers"] for k, v in m.items()}
    assert qmods["QuantizationModifier"]["quantize_embeddings"] is True
    assert qmods["QuantizationModifier"]["quantize_linear_activations"] is False


def test_recipe_json(cli) -> None:  # noqa: ANN001
    data = cli("recipe", "obert-6l-90", "--json").json()
    assert data["recipe"]["stages"]["pruning"]["init_sparsity"] == 0.3


def test_help_lists_commands(cli) -> None:  # noqa: ANN001
    result = cli("--help")
    assert result.code == 0
    for command in ("list", "show", "search", "recipe", "catalog"):
        assert command in result.out


def test_works_from_any_directory(cli, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    assert cli("show", "obert-6l-80-block4", "--json").json()["layers"] == 6
