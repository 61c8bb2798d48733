"""Render a catalog recipe as SparseML-style YAML (``!Modifier`` tagged list items)."""

from __future__ import annotations

import json
from typing import Any

from zoo.catalog.cards import ModelCard
from zoo.errors import CatalogError

_MODIFIERS = {
    "learning_rate": "LearningRateFunctionModifier",
    "pruning": "OBSPruningModifier",
    "distillation": "DistillationModifier",
    "quantization": "QuantizationModifier",
}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a JSON string is a valid YAML scalar, quoted safely


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


def to_yaml(card: ModelCard) -> str:
    """The recipe of ``card`` as YAML; fields the catalog does not know are simply absent."""
    recipe = card.recipe
    if recipe is None:
        raise CatalogError(f"no recipe catalogued for {card.name}", "see the model's Hub page")
    lines = [f"# recipe for {card.name}", f"# source: {recipe.source}", "version: 1.1.0"]
    if recipe.epochs is not None:
        lines.append(f"num_epochs: {_scalar(recipe.epochs)}")
    lines.append("modifiers:")
    if recipe.epochs is not None:
        lines += ["  - !EpochRangeModifier", "    start_epoch: 0.0", f"    end_epoch: {_scalar(float(recipe.epochs))}"]
    notes = []
    for stage, fields in recipe.stages.items():
        params = dict(fields)
        modifier = params.pop("modifier", None) or (None if "held_from" in params else _MODIFIERS.get(stage))
        if modifier is None:
            notes += [f"# {stage}: {k} = {_value(v)}" for k, v in params.items()]
            continue
        if "schedule" in params:
            lines.append(f"  # schedule: {params.pop('schedule')}")
        lines.append(f"  - !{modifier}")
        lines += [f"    {k}: {_value(v)}" for k, v in params.items()]
    return "\n".join(lines + notes) + "\n"
