"""What every pipeline shares: a compiled engine, a tokenizer, batching of encodings into arrays."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# Truncating tokenizers kept per pipeline (one per distinct setting; a QA setting varies only with the window size).
TRUNCATING_KEPT = 8


@dataclass
class Pipeline:
    """A ready model: ``engine`` (sparse or onnxruntime) + ``tokenizer``; subclasses add the task.

    A pipeline may be called from many threads at once: the engine is thread-safe, ``tokenizer`` is never
    changed after load, and truncation runs on copies configured once per setting (``truncating``).
    """

    name: str
    path: Path
    engine: Any
    tokenizer: Any
    config: Any  # zoo.convert.bert.BertConfig
    batch_size: int = 8
    task: ClassVar[str] = ""
    _truncating: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def truncating(self, **settings: Any) -> Any:
        """A copy of ``tokenizer`` with ``enable_truncation(**settings)``, made on first use and then only read,
        so concurrent calls share no tokenizer state that changes (a copy costs ~0.1 s for a 30k vocabulary)."""
        key = tuple(sorted(settings.items()))
        tok = self._truncating.get(key)
        if tok is None:
            tok = copy.deepcopy(self.tokenizer)
            tok.enable_truncation(**settings)
            kept = list(self._truncating)  # a snapshot: other threads may add settings meanwhile
            if len(kept) >= TRUNCATING_KEPT:
                self._truncating.pop(kept[0], None)
            tok = self._truncating.setdefault(key, tok)
        return tok

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
