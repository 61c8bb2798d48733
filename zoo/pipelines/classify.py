"""Text classification (MNLI, QQP): single texts or pairs, labels from the model's config."""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.errors import InputError
from zoo.pipelines.base import Job, Pipeline


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
        jobs = [self.plan_classify(*(i if isinstance(i, tuple | list) else (i, None)), top_k=top_k, max_length=max_length)
                for i in items]
        results = self.run_jobs(jobs)
        return results[0] if single else results

    def plan_classify(self, text: str, text_pair: str | None = None, top_k: int | None = 1, max_length: int = 512) -> Job:
        """The job classifying one text (or pair): ``{"label", "score"}``, or the ``top_k`` best (all with None)."""
        if not isinstance(text, str) or not (text_pair is None or isinstance(text_pair, str)):
            raise InputError("inputs must be strings or (text, text_pair) pairs of strings")
        for name, value, least in (("top_k", top_k, 1), ("max_length", max_length, 2)):
            if (value is not None or name == "max_length") and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise InputError(f"{name} must be a whole number of at least {least}, got {value!r}")
        tok = self.truncating(max_length=min(max_length, self.config.max_positions), strategy="longest_first")
        encoding = tok.encode(text, text_pair) if text_pair is not None else tok.encode(text)

        def finish(outs: list[dict[str, np.ndarray]]) -> Any:
            logits = outs[0]["logits"].astype(np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            labels = self.labels or tuple(f"LABEL_{i}" for i in range(probs.shape[0]))
            ranked = [{"label": labels[i], "score": round(float(probs[i]), 6)} for i in np.argsort(-probs)]
            return ranked if top_k is None else ranked[0] if top_k == 1 else ranked[:top_k]

        return Job([encoding], finish)
