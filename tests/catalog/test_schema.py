"""A malformed stub is rejected with a message naming the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zoo.catalog.schema import load_stubs, parse_stub
from zoo.errors import StubError

from ..conftest import STUBS


@pytest.fixture
def stub_dir(tmp_path: Path) -> Path:
    for name in ("obert-3l-80-quant", "obert-12l-90", "obert-12l-90-upstream", "obert-12l-90-upstream-squad"):
        shutil.copy(STUBS / f"{name}.toml", tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture drift: {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def reject(stub_dir: Path) -> StubError:
    with pytest.raises(StubError) as info:
        load_stubs(stub_dir)
    return info.value


def test_real_stubs_are_valid() -> None:
    assert len(load_stubs(STUBS)) == len(list(STUBS.glob("*.toml")))


def test_wrong_type_names_file_and_field(stub_dir: Path) -> None:
    edit(stub_dir / "obert-12l-90.toml", "layers = 12", 'layers = "twelve"')
    err = reject(stub_dir)
    assert err.file == "obert-12l-90.toml" and err.field == "architecture.layers"
    assert "expected integer" in str(err) and "obert-12l-90.toml" in str(err)


def test_unknown_key(stub_dir: Path) -> None:
    edit(stub_dir / "obert-3l-80-quant.toml", "[sparsity]\n", "[sparsity]\nblocks = 4\n")
    err = reject(stub_dir)
    assert (err.file, err.field, err.problem) == ("obert-3l-80-quant.toml", "sparsity.blocks", "unknown key")


@pytest.mark.parametrize("value", ["101", "-1"])
def test_sparsity_out_of_range(stub_dir: Path, value: str) -> None:
    edit(stub_dir / "obert-12l-90.toml", "target = 90", f"target = {value}")
    err = reject(stub_dir)
    assert err.field == "sparsity.target" and "between 0 and 100" in err.problem


def test_duplicate_alias_across_files(stub_dir: Path) -> None:
    edit(stub_dir / "obert-3l-80-quant.toml", 'name = "RedHatAI/oBERT-3-downstream-pruned-block4-80-QAT-squadv1"',
         'name = "neuralmagic/oBERT-12-downstream-pruned-unstructured-90-squadv1"')
    err = reject(stub_dir)
    assert "duplicate" in err.problem and err.field.startswith("aliases[")
    assert "obert-12l-90.toml" in err.problem or err.file == "obert-12l-90.toml"


def test_alias_equal_to_another_name(stub_dir: Path) -> None:
    edit(stub_dir / "obert-3l-80-quant.toml", 'name = "RedHatAI/oBERT-3-downstream-pruned-block4-80-QAT-squadv1"', 'name = "OBERT-12L-90"')
    err = reject(stub_dir)
    assert err.file == "obert-3l-80-quant.toml" and "duplicate name or alias 'OBERT-12L-90'" in err.problem


def test_missing_required_field(stub_dir: Path) -> None:
    edit(stub_dir / "obert-12l-90.toml", 'task = "question-answering"\n', "")
    err = reject(stub_dir)
    assert (err.field, err.problem) == ("task", "missing required field")


def test_bad_choice_and_bad_hash(stub_dir: Path) -> None:
    path = stub_dir / "obert-12l-90.toml"
    edit(path, 'pattern = "unstructured"', 'pattern = "block8"')
    assert "must be one of" in reject(stub_dir).problem
    edit(path, 'pattern = "block8"', 'pattern = "unstructured"')
    edit(path, 'path = "config.json"\n', 'path = "config.json"\nsha256 = "abc"\n')
    err = reject(stub_dir)
    assert err.field == "files[0].sha256" and "64 lower-case hex" in err.problem


def test_dense_pattern_with_nonzero_target(stub_dir: Path) -> None:
    edit(stub_dir / "obert-12l-90.toml", 'pattern = "unstructured"', 'pattern = "dense"')
    assert reject(stub_dir).field == "sparsity.target"


def test_invalid_toml_and_name_mismatch(stub_dir: Path) -> None:
    path = stub_dir / "obert-12l-90.toml"
    original = path.read_text()
    path.write_text(original + "\n[[[broken\n")
    err = reject(stub_dir)
    assert err.field == "<toml>" and err.file == "obert-12l-90.toml"
    path.write_text(original.replace('name = "obert-12l-90"', 'name = "obert-12l-91"', 1))
    err = reject(stub_dir)
    assert err.field == "name" and "file name" in err.problem


def test_unknown_parent(stub_dir: Path) -> None:
    (stub_dir / "obert-12l-90-upstream.toml").unlink()
    err = reject(stub_dir)
    assert err.file == "obert-12l-90-upstream-squad.toml" and err.field == "parent"


def test_defaults_filled(stub_dir: Path) -> None:
    edit(stub_dir / "obert-12l-90.toml", 'revision = "main"\n', "")
    stub = parse_stub(stub_dir / "obert-12l-90.toml")
    assert stub["source"]["revision"] == "main"


def test_runtime_expectation_needs_its_source(stub_dir: Path) -> None:
    path = stub_dir / "obert-12l-90.toml"
    lines = path.read_text().splitlines(keepends=True)
    assert any(line.startswith("speedup_source = ") for line in lines), "fixture drift: no [runtime] source"
    path.write_text("".join(line for line in lines if not line.startswith("speedup_source = ")))
    err = reject(stub_dir)
    assert (err.file, err.field) == ("obert-12l-90.toml", "runtime.amx.speedup_source")
