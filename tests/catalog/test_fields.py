"""Each catalog field is described once (``column(...)`` on a card); stub, table, build and card all follow it."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from zoo.catalog import resolve
from zoo.catalog.cards import AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.catalog.fields import column, described, in_range, one_of
from zoo.catalog.schema import Array, Table, load_stubs, record

from ..conftest import STUBS

STRUCTURAL = {"tags", "aliases", "files", "metrics", "recipe"}  # ModelCard fields that are relationships, not columns


def at(stub: dict[str, Any], dotted: str) -> Any:
    value: Any = stub
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def same(card: object, stub: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Described fields of ``card`` that differ from the parsed stub record: {field: (card, stub)}."""
    return {
        d.name: (getattr(card, d.name), at(stub, d.column.stub))
        for d in described(type(card))
        if d.column.stub is not None and getattr(card, d.name) != at(stub, d.column.stub)
    }


def leaves(spec: Table, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, sub in spec.fields.items():
        if isinstance(sub, Table):
            out |= leaves(sub, f"{prefix}{key}.")
        elif not isinstance(sub, Array):
            out.add(f"{prefix}{key}")
    return out


def test_every_model_card_field_is_described_or_structural() -> None:
    names = {f.name for f in dataclasses.fields(ModelCard)}
    assert names - {d.name for d in described(ModelCard)} == STRUCTURAL


@pytest.fixture(scope="module")
def stubs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled stubs, one of them also giving a file's size and sha256 so every described field is set somewhere."""
    directory = tmp_path_factory.mktemp("stubs")
    shutil.copytree(STUBS, directory, dirs_exist_ok=True)
    path = directory / "obert-3l-80-quant.toml"
    text = path.read_text()
    assert '[[files]]\npath = "config.json"\n' in text, "fixture drift"
    path.write_text(text.replace('[[files]]\npath = "config.json"\n', f'[[files]]\npath = "config.json"\nsize = 1234\nsha256 = "{"ab" * 32}"\n', 1))
    return directory


@pytest.fixture
def catalog(stubs_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """Those stubs built into a fresh catalog that ``resolve`` reads; returns the stubs as parsed, by name."""
    from zoo.catalog.build import build

    db = tmp_path_factory.getbasetemp() / "fields-catalog.db"
    if not db.exists():
        build(stubs_dir, db)
    monkeypatch.setenv("ZOO_CATALOG_URL", f"sqlite:///{db}")
    return {s["name"]: s for _, s in load_stubs(stubs_dir)}


@pytest.mark.parametrize("name", sorted(p.stem for p in STUBS.glob("*.toml")))
def test_every_stub_round_trips_to_its_card(catalog: dict[str, dict[str, Any]], name: str) -> None:
    stub, card = catalog[name], resolve(name)
    assert same(card, stub) == {}
    assert card.tags == tuple(dict.fromkeys(stub["tags"]))
    assert len(card.aliases) == len(stub["aliases"]) and all(same(a, s) == {} for a, s in zip(card.aliases, stub["aliases"], strict=True))
    assert len(card.files) == len(stub["files"]) and all(same(f, s) == {} for f, s in zip(card.files, stub["files"], strict=True))
    assert all((f.repo, f.revision) == (card.repo, card.revision) for f in card.files)
    assert len(card.metrics) == len(stub["metrics"]) and all(same(m, s) == {} for m, s in zip(card.metrics, stub["metrics"], strict=True))
    if stub["recipe"] is None:
        assert card.recipe is None
    else:
        assert card.recipe is not None and same(card.recipe, stub["recipe"]) == {}
        groups = {k: {p: v for p, v in g.items() if v is not None} for k, g in stub["recipe"].items() if isinstance(g, dict)}
        assert card.recipe.stages == groups


def test_the_round_trip_exercises_every_described_field(catalog: dict[str, dict[str, Any]]) -> None:
    """Each described field is set in at least one stub, so the round trip above checks it for real, not None == None."""
    stubs = list(catalog.values())
    records: dict[type, list[dict[str, Any]]] = {
        ModelCard: stubs,
        AliasInfo: [a for s in stubs for a in s["aliases"]],
        FileSpec: [f for s in stubs for f in s["files"]],
        MetricValue: [m for s in stubs for m in s["metrics"]],
        RecipeInfo: [s["recipe"] for s in stubs if s["recipe"]],
    }
    for card, rows in records.items():
        for d in described(card):
            if d.column.stub is not None:
                assert any(at(r, d.column.stub) is not None for r in rows), f"{card.__name__}.{d.name} is never set"


def test_stub_schema_is_the_cards_description() -> None:
    from zoo.catalog.schema import STUB

    assert {d.column.stub for d in described(ModelCard)} | {"tags"} == {k for k in leaves(STUB) if not k.startswith("recipe.")}
    recipe = STUB.fields["recipe"]
    assert isinstance(recipe, Table) and {d.column.stub for d in described(RecipeInfo)} - {None} <= leaves(recipe)
    files = STUB.fields["files"]
    assert isinstance(files, Array) and leaves(files.table) == {d.column.stub for d in described(FileSpec)}


@dataclass(frozen=True)
class Gadget:
    """A card that is not in the catalog, to show a new description needs nothing else."""

    name: str = column("name", length=64, unique=True)
    kind: str = column("kind", default="lamp", check=one_of(("lamp", "fan")))
    watts: float | None = column("power.watts", check=in_range(0, 10_000))
    rated: int = column("power.rated")


def test_a_new_described_field_flows_from_stub_to_card(tmp_path: Path) -> None:
    from sqlalchemy import Integer, create_engine, select
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    from zoo.catalog.build import _row, _Sources
    from zoo.catalog.models import FIRST, card_values, columns_of
    from zoo.catalog.schema import _check_table
    from zoo.errors import StubError

    spec = record(Gadget)
    assert spec.fields["power"].required  # holds ``rated``, which the card cannot do without
    parsed = _check_table("g.toml", "", spec, {"name": "desk", "power": {"watts": 40, "rated": 230}})
    assert parsed == {"name": "desk", "kind": "lamp", "power": {"watts": 40, "rated": 230}}
    with pytest.raises(StubError, match="power.watts"):
        _check_table("g.toml", "", spec, {"name": "desk", "power": {"watts": -1, "rated": 230}})

    class Base(DeclarativeBase):
        pass

    class GadgetRow(columns_of(Gadget), Base):
        __tablename__ = "gadgets"
        id = mapped_column(Integer, primary_key=True, sort_order=FIRST)

    assert [c.name for c in GadgetRow.__table__.columns] == ["id", "name", "kind", "watts", "rated"]
    engine = create_engine(f"sqlite:///{tmp_path / 'g.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(_row(GadgetRow, Gadget, parsed, _Sources()))
        session.commit()
        card = Gadget(**card_values(Gadget, session.scalars(select(GadgetRow)).one()))
    engine.dispose()
    assert card == Gadget(name="desk", kind="lamp", watts=40.0, rated=230)
    assert isinstance(card.watts, float)
