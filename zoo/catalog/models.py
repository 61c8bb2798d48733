"""SQLAlchemy 2.0 ORM tables of the catalog (``registry.db``): models, aliases, files, metrics, recipes, sources."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = "2"


class Base(DeclarativeBase):
    pass


class Source(Base):
    """A citation: where a number or recipe comes from. Shared by metrics and recipes."""

    __tablename__ = "sources"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String, unique=True)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    description: Mapped[str]
    task: Mapped[str] = mapped_column(String(64), index=True)
    dataset: Mapped[str]
    stage: Mapped[str]
    parent: Mapped[str | None]
    repo: Mapped[str]
    revision: Mapped[str]
    layers: Mapped[int] = mapped_column(index=True)
    hidden: Mapped[int]
    heads: Mapped[int]
    intermediate: Mapped[int]
    vocab_size: Mapped[int]
    max_positions: Mapped[int]
    params_millions: Mapped[float | None]
    params_source: Mapped[str | None]
    sparsity: Mapped[float] = mapped_column(index=True)
    pattern: Mapped[str] = mapped_column(String(32), index=True)
    sparsity_scope: Mapped[str | None]
    quantization: Mapped[str] = mapped_column(String(32))
    quant_weights: Mapped[str | None]
    quant_activations: Mapped[str | None]
    expected_speedup: Mapped[float | None]  # vs onnxruntime fp32 on the same weights, batch 1, sequence 128
    speedup_source: Mapped[str | None]
    stub_file: Mapped[str]

    aliases: Mapped[list[Alias]] = relationship(back_populates="model", cascade="all, delete-orphan", order_by="Alias.id")
    files: Mapped[list[File]] = relationship(back_populates="model", cascade="all, delete-orphan", order_by="File.id")
    metrics: Mapped[list[Metric]] = relationship(back_populates="model", cascade="all, delete-orphan", order_by="Metric.id")
    tags: Mapped[list[Tag]] = relationship(back_populates="model", cascade="all, delete-orphan", order_by="Tag.id")
    recipe: Mapped[Recipe | None] = relationship(back_populates="model", cascade="all, delete-orphan")


class Alias(Base):
    __tablename__ = "aliases"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    name_lower: Mapped[str] = mapped_column(String(256), unique=True, index=True)
    kind: Mapped[str]
    verified: Mapped[bool]
    model: Mapped[Model] = relationship(back_populates="aliases")


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("model_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[Model] = relationship(back_populates="tags")


class File(Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("model_id", "path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    path: Mapped[str]
    required: Mapped[bool]
    size: Mapped[int | None]
    sha256: Mapped[str | None]
    approx_size_mb: Mapped[float | None]
    size_source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id"))
    size_source: Mapped[Source | None] = relationship()
    model: Mapped[Model] = relationship(back_populates="files")


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("model_id", "name", "dataset"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str]
    value: Mapped[float]
    dataset: Mapped[str]
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    source: Mapped[Source] = relationship()
    model: Mapped[Model] = relationship(back_populates="metrics")


class Recipe(Base):
    """The training recipe as structured fields; ``stages`` maps a modifier group to its parameters."""

    __tablename__ = "recipes"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), unique=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    epochs: Mapped[float | None]
    stages: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[Source] = relationship()
    model: Mapped[Model] = relationship(back_populates="recipe")


class Meta(Base):
    """Build facts: schema version and the digest of the stubs the database was built from."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str]
