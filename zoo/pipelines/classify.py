"""Text classification (MNLI, QQP): single texts or pairs, labels from the model's config."""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.errors import ZooError
from zoo.pipelines.base import Pipeline


class TextClassification(Pipeline):
    task = "text-classification"

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def __call__(self, text: str | list[Any] | tuple[str, str], text_pair: str | None = None, top_k: int | None = 1,
                 max_length: int = 512) -> Any:
        """``clf("a")``, ``clf("premise", "hypothesis")``, ``clf([("p", "h"), ...])`` or ``clf(["a", "b"])``.

        Returns ``{"label", "score"}`` per input (``top_k=None``: every label with its score, best first).
        """
        single = isinstance(text, str)
        if single:
            items: list[Any] = [(text, text_pair) if text_pair is not None else text]
        elif isinstance(text, tuple) and len(text) == 2 and all(isinstance(t, str) for t in text):
            items, single = [text], True
        else:
            items = list(text)
        if not items:
            return []
        tok = self.truncating(max_length=min(max_length, self.config.max_positions), strategy="longest_first")
        try:
            encodings = [tok.encode(*i) if isinstance(i, tuple | list) else tok.encode(i) for i in items]
        except TypeError:
            raise ZooError("inputs must be strings or (text, text_pair) pairs") from None
        logits = self.run(encodings)["logits"].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        labels = self.labels or tuple(f"LABEL_{i}" for i in range(probs.shape[1]))
        results = []
        for row in probs:
            order = np.argsort(-row)
            ranked = [{"label": labels[i], "score": round(float(row[i]), 6)} for i in order]
            results.append(ranked if top_k is None else ranked[0] if top_k == 1 else ranked[:top_k])
        return results[0] if single else results
