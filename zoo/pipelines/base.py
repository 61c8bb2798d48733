"""What every pipeline shares: a compiled engine, a tokenizer, batching of encodings into arrays.

A task call is planned as ``Job``s (one input's encodings and how their outputs become its answer), run
through ``forward`` and finished; the server batches the jobs of concurrent requests the same way, so an
answer does not depend on what it was batched with.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# Truncating tokenizers kept per pipeline (one per distinct setting; a QA setting varies only with the window size).
TRUNCATING_KEPT = 8


def length_batches(lengths: list[int], size: int, tokens: int | None = None) -> list[list[int]]:
    """Indices into ``lengths`` in engine batches: shortest first (ties in input order), at most ``size`` per batch
    and, with ``tokens``, at most ``tokens`` once padded to the batch's longest (one longer input goes alone)."""
    batches: list[list[int]] = []
    rows: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if rows and (len(rows) == size or (tokens is not None and (len(rows) + 1) * lengths[i] > tokens)):
            batches.append(rows)
            rows = []
        rows.append(i)
    return batches + [rows] if rows else batches


@dataclass(frozen=True)
class Job:
    """One input: its encodings, and ``finish`` turning their outputs (one dict per encoding) into its answer."""

    encodings: list[Any]
    finish: Callable[[list[dict[str, np.ndarray]]], Any]


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

    def forward(self, encodings: list[Any], batch_size: int | None = None) -> list[dict[str, np.ndarray]]:
        """The engine's outputs for each encoding (token outputs cut to the encoding's length).

        Encodings are grouped by length into batches (``length_batches``) of at most ``batch_size`` and at most the
        engine's ``batch_tokens`` padded tokens, each padded only to its own longest; the order of the result is
        the order of ``encodings``.
        """
        size = max(1, batch_size or self.batch_size)
        per_token = self.config.head is None or self.config.head.span
        results: list[dict[str, np.ndarray]] = [{} for _ in encodings]
        lengths = [len(e.ids) for e in encodings]
        for rows in length_batches(lengths, size, getattr(self.engine, "batch_tokens", None)):
            width = max(lengths[i] for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask, types = np.zeros_like(ids), np.zeros_like(ids)
            for row, i in enumerate(rows):
                e = encodings[i]
                n = len(e.ids)
                ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
            for key, value in self.engine(ids, mask, types).items():
                for row, i in enumerate(rows):
                    results[i][key] = value[row][:len(encodings[i].ids)] if per_token else value[row]
        return results

    def run(self, encodings: list[Any]) -> dict[str, Any]:
        """``forward`` with outputs gathered by name (classification logits stacked into one array)."""
        outs = self.forward(encodings)
        names = outs[0] if outs else {}
        return {k: np.stack([o[k] for o in outs]) if k == "logits" else [o[k] for o in outs] for k in names}

    def run_jobs(self, jobs: list[Job]) -> list[Any]:
        """Every job's answer, their encodings run together."""
        outs = self.forward([e for j in jobs for e in j.encodings])
        answers, at = [], 0
        for j in jobs:
            answers.append(j.finish(outs[at:at + len(j.encodings)]))
            at += len(j.encodings)
        return answers

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {type(self.engine).__name__}>"
