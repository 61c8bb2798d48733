"""A Hub-style repo directory -> state dict -> ``BertModel``: the converter's front door."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zoo.convert.bert import BertConfig, BertModel, describe
from zoo.convert.torchzip import read_state_dict
from zoo.errors import CheckpointError

MAX_INDEX_BYTES = 16 << 20
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError, KeyError) as exc:  # numpy's own errors for odd dtypes and shapes
        raise CheckpointError(f"{path.name}: not a readable safetensors file: {str(exc)[:200]}") from None


def _sharded(index: Path, read: callable) -> dict[str, np.ndarray]:  # type: ignore[valid-type]
    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise CheckpointError(f"{index.name}: {index.stat().st_size} bytes, over the {MAX_INDEX_BYTES} byte limit for a shard index")
        weight_map = json.loads(index.read_bytes().decode("utf-8"))["weight_map"]
    except (OSError, KeyError, ValueError, TypeError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        raise CheckpointError(f"{index.name}: not a valid shard index: {str(exc)[:200]}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index.name}: weight_map must map tensor names to shard file names")
    state: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        try:
            shard_path = (index.parent / shard).resolve()
        except (OSError, ValueError) as exc:  # a NUL byte, a symlink loop
            raise CheckpointError(f"{index.name}: bad shard path {shard[:100]!r}: {exc}") from None
        if index.parent.resolve() not in shard_path.parents:
            raise CheckpointError(f"{index.name}: shard path {shard[:100]!r} points outside the repo")
        if not shard_path.is_file():
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
    """Read ``config.json`` and the checkpoint of a Hub-style repo into a ``BertModel``.

    The config is validated first (cheap), then every tensor is checked against the shape it implies.
    Weights holding NaN or inf are listed in ``model.nonfinite``: ``compile`` refuses such a model.
    """
    repo = Path(repo)
    if not repo.is_dir():
        raise CheckpointError(f"{repo}: not a directory")
    if not (repo / "config.json").exists():
        raise CheckpointError(f"{repo}: no config.json", "a Hub-style repo holds config.json, the weights and tokenizer files")
    config = BertConfig.from_file(repo / "config.json")
    return describe(read_weights(repo), config)
