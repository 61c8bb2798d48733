"""Conversion: Hub-style repo -> safe state dict -> ``BertModel`` -> ONNX (and the numpy reference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo import config
from zoo.errors import NotInstalledError

if TYPE_CHECKING:
    from zoo.catalog import ModelCard


@dataclass(frozen=True)
class Source:
    """Where a model's files are: a directory, and the catalog entry when the user named one."""

    path: Path
    card: ModelCard | None

    @property
    def label(self) -> str:
        return self.card.name if self.card else str(self.path)


def locate(name_or_dir: str | Path) -> Source:
    """A local Hub-style directory as given, or the installed copy of a catalog entry."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return Source(path.resolve(), None)
    from zoo.catalog import resolve
    from zoo.fetch.store import Store

    card = resolve(str(name_or_dir))
    installed = config.model_dir(card.name)
    if Store().manifest(card.name) is not None and (installed / "config.json").exists():
        return Source(installed, card)
    raise NotInstalledError(f"{card.name} is not installed", f"run `zoo download {card.name}`, or pass a directory holding its Hub repo")
