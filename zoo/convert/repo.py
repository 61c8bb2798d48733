"""A Hub-style repo directory -> state dict -> ``BertModel``: the converter's front door."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zoo.convert.bert import BertConfig, BertModel, describe
from zoo.convert.torchzip import read_state_dict
from zoo.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: not a readable safetensors file: {exc}") from None


def _sharded(index: Path, read: callable) -> dict[str, np.ndarray]:  # type: ignore[valid-type]
    try:
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    except (OSError, KeyError, json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{index.name}: not a valid shard index: {exc}") from None
    state: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = (index.parent / shard).resolve()
        if index.parent.resolve() not in shard_path.parents:
            raise CheckpointError(f"{index.name}: shard path {shard!r} points outside the repo")
        if not shard_path.exists():
            raise CheckpointError(f"{index.name}: shard {shard} is missing")
        state.update(read(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index.name}: {len(missing)} tensors listed but absent from the shards, e.g. {missing[0]}")
    return state


def weights_file(repo: Path) -> Path:
    for name in WEIGHT_FILES:
        if (repo / name).exists():
            return repo / name
    raise CheckpointError(f"{repo}: no model weights found", f"expected one of {', '.join(WEIGHT_FILES)}")


def read_weights(repo: Path) -> dict[str, np.ndarray]:
    """Every tensor of the repo's checkpoint (safetensors preferred, then the torch zip)."""
    path = weights_file(repo)
    if path.name == "model.safetensors":
        return _safetensors(path)
    if path.name == "model.safetensors.index.json":
        return _sharded(path, _safetensors)
    if path.name == "pytorch_model.bin.index.json":
        return _sharded(path, read_state_dict)
    return read_state_dict(path)


def load_model(repo: Path) -> BertModel:
    """Read ``config.json`` and the checkpoint of a Hub-style repo into a ``BertModel``."""
    repo = Path(repo)
    if not repo.is_dir():
        raise CheckpointError(f"{repo}: not a directory")
    if not (repo / "config.json").exists():
        raise CheckpointError(f"{repo}: no config.json", "a Hub-style repo holds config.json, the weights and tokenizer files")
    return describe(read_weights(repo), BertConfig.from_file(repo / "config.json"))
