"""What every pipeline shares: a compiled engine, a tokenizer, batching of encodings into arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


@dataclass
class Pipeline:
    """A ready model: ``engine`` (sparse or onnxruntime) + ``tokenizer``; subclasses add the task."""

    name: str
    path: Path
    engine: Any
    tokenizer: Any
    config: Any  # zoo.convert.bert.BertConfig
    batch_size: int = 8
    task: ClassVar[str] = ""

    def run(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        """Run the engine over encodings (padded per batch to the longest), concatenating outputs."""
        outputs: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(encodings), self.batch_size):
            chunk = encodings[i:i + self.batch_size]
            width = max(len(e.ids) for e in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            types = np.zeros_like(ids)
            for row, e in enumerate(chunk):
                n = len(e.ids)
                ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
            for key, value in self.engine(ids, mask, types).items():
                outputs.setdefault(key, []).extend(list(value))
        return {k: np.stack(v) if k == "logits" else v for k, v in outputs.items()}  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {type(self.engine).__name__}>"
