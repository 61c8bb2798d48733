"""Compile ``stubs/*.toml`` into a SQLite catalog, deterministically (same stubs, same bytes)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from zoo.catalog.models import SCHEMA_VERSION, Alias, Base, File, Meta, Metric, Model, Recipe, Source, Tag
from zoo.catalog.schema import load_stubs
from zoo.errors import CatalogError


def stubs_digest(directory: Path) -> str:
    """sha256 over every stub's name and bytes, in file-name order."""
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.toml")):
        data = path.read_bytes()
        h.update(f"{path.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


class _Sources:
    """Deduplicates citation texts into ``Source`` rows."""

    def __init__(self) -> None:
        self.rows: dict[str, Source] = {}

    def __call__(self, text: str) -> Source:
        if text not in self.rows:
            self.rows[text] = Source(text=text)
        return self.rows[text]


def _model_row(file: str, stub: dict[str, Any], source: _Sources) -> Model:
    arch, sp, qz, rt = stub["architecture"], stub["sparsity"], stub["quantization"], stub["runtime"] or {}
    model = Model(
        name=stub["name"], description=stub["description"], task=stub["task"], dataset=stub["dataset"],
        stage=stub["stage"], parent=stub["parent"], repo=stub["source"]["repo"], revision=stub["source"]["revision"],
        layers=arch["layers"], hidden=arch["hidden"], heads=arch["heads"], intermediate=arch["intermediate"],
        vocab_size=arch["vocab_size"], max_positions=arch["max_positions"],
        params_millions=arch["params_millions"], params_source=arch["params_source"],
        sparsity=float(sp["target"]), pattern=sp["pattern"], sparsity_scope=sp["scope"],
        quantization=qz["scheme"], quant_weights=qz["weights"], quant_activations=qz["activations"],
        expected_speedup=rt.get("expected_speedup"), speedup_source=rt.get("speedup_source"), stub_file=file,
    )
    model.tags = [Tag(name=t) for t in dict.fromkeys(stub["tags"])]
    model.aliases = [Alias(name=a["name"], name_lower=a["name"].lower(), kind=a["kind"], verified=a["verified"]) for a in stub["aliases"]]
    model.files = [
        File(path=f["path"], required=f["required"], size=f["size"], sha256=f["sha256"], approx_size_mb=f["approx_size_mb"],
             size_source=source(f["size_source"]) if f["size_source"] else None)
        for f in stub["files"]
    ]
    model.metrics = [
        Metric(name=m["name"], value=float(m["value"]), dataset=m["dataset"], source=source(m["source"])) for m in stub["metrics"]
    ]
    if stub["recipe"]:
        r = stub["recipe"]
        stages = {
            k: {field: value for field, value in v.items() if value is not None}
            for k, v in r.items() if k not in ("source", "epochs") and v is not None
        }
        model.recipe = Recipe(source=source(r["source"]), epochs=r["epochs"], stages=stages)
    return model


def _create_schema(engine: Any) -> None:
    """Create tables, then their indexes in name order (``create_all`` orders indexes by set iteration)."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            conn.execute(CreateTable(table))
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(CreateIndex(index))


def build(stubs_dir: Path, out: Path) -> int:
    """Validate every stub and write the catalog to ``out`` atomically; returns the number of models."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    stubs = load_stubs(stubs_dir)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{tmp}")
    try:
        _create_schema(engine)
        source = _Sources()
        with Session(engine) as session:
            session.add_all(_model_row(file, stub, source) for file, stub in stubs)
            session.add_all([Meta(key="schema_version", value=SCHEMA_VERSION), Meta(key="stubs_digest", value=stubs_digest(stubs_dir))])
            session.commit()
    finally:
        engine.dispose()
    with sqlite3.connect(tmp) as conn:
        conn.execute("VACUUM")
    conn.close()
    os.replace(tmp, out)
    return len(stubs)


def built_digest(url: str) -> str:
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    engine = create_engine(url)
    try:
        with Session(engine) as session:
            value = session.scalar(select(Meta.value).where(Meta.key == "stubs_digest"))
    finally:
        engine.dispose()
    if value is None:
        raise CatalogError(f"catalog at {url} has no build digest", "rebuild it with `zoo catalog build`")
    return value


def is_fresh(db: Path, stubs_dir: Path) -> bool:
    """True when ``db`` was built from exactly the stubs now in ``stubs_dir``."""
    return db.exists() and built_digest(f"sqlite:///{db}") == stubs_digest(stubs_dir)
