"""Text classification (MNLI, QQP): single texts or pairs, labels from the model's config, scores as transformers'
text-classification pipeline gives them."""

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

    def __call__(self, text: str | list[Any] | tuple[str, str] | dict[str, str], text_pair: str | None = None, top_k: int | None = 1,
                 max_length: int = 512, function_to_apply: str | None = None) -> Any:
        """``clf("a")``, ``clf("premise", "hypothesis")``, ``clf({"text": p, "text_pair": h})``, ``clf([("p", "h"), ...])``
        or ``clf(["a", "b"])``.

        Returns ``{"label", "score"}`` per input, or the ``top_k`` best as a list (``top_k=None``: every label).
        Scores are transformers' text-classification pipeline's, to the float: ``function_to_apply`` (softmax,
        sigmoid or none) defaults as there, by the config's problem type and number of labels.
        """
        single = isinstance(text, str | dict)
        if isinstance(text, str):
            items: list[Any] = [(text, text_pair) if text_pair is not None else text]
        elif isinstance(text, tuple) and len(text) == 2 and all(isinstance(t, str) for t in text):
            items, single = [text], True
        else:
            items = [text] if isinstance(text, dict) else list(text)
        if not items:
            return []
        jobs = [self.plan_classify(*_text_and_pair(i), top_k=top_k, max_length=max_length, function_to_apply=function_to_apply)
                for i in items]
        results = self.run_jobs(jobs)
        return results[0] if single else results

    def default_function(self) -> str:
        """transformers' choice: none for regression, sigmoid for multi-label or a single label, else softmax."""
        problem = getattr(self.config, "problem_type", None)
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or len(self.labels) == 1:
            return "sigmoid"
        return "softmax"

    def plan_classify(self, text: str, text_pair: str | None = None, top_k: int | None = 1, max_length: int = 512,
                      function_to_apply: str | None = None) -> Job:
        """The job classifying one text (or pair): ``{"label", "score"}``, or the ``top_k`` best (all with None)."""
        if not isinstance(text, str) or not (text_pair is None or isinstance(text_pair, str)):
            raise InputError("inputs must be strings or (text, text_pair) pairs of strings")
        for name, value, least in (("top_k", top_k, 1), ("max_length", max_length, 2)):
            if (value is not None or name == "max_length") and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise InputError(f"{name} must be a whole number of at least {least}, got {value!r}")
        function = self.default_function() if function_to_apply is None else function_to_apply
        if not isinstance(function, str) or function.lower() not in SCORES:
            raise InputError(f"function_to_apply must be one of {', '.join(SCORES)}, got {function_to_apply!r}")
        score = SCORES[function.lower()]
        tok = self.truncating(max_length=min(max_length, self.config.max_positions), strategy="longest_first")
        encoding = tok.encode(text, text_pair) if text_pair is not None else tok.encode(text)

        def finish(outs: list[dict[str, np.ndarray]]) -> Any:
            scores = score(np.asarray(outs[0]["logits"], dtype=np.float32))
            labels = self.labels or tuple(f"LABEL_{i}" for i in range(scores.shape[0]))
            if top_k == 1:
                return {"label": labels[int(scores.argmax())], "score": float(scores.max())}
            ranked = sorted(({"label": labels[i], "score": float(s)} for i, s in enumerate(scores)), key=lambda r: r["score"], reverse=True)
            return ranked if top_k is None else ranked[:top_k]

        return Job([encoding], finish)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# transformers' ClassificationFunction, computed as it computes them (float32 logits).
SCORES = {"softmax": _softmax, "sigmoid": _sigmoid, "none": lambda x: x}


def _text_and_pair(item: Any) -> tuple[Any, Any]:
    if isinstance(item, dict):
        if "text" not in item or set(item) - {"text", "text_pair"}:
            raise InputError(f"a dict input needs 'text' (and optionally 'text_pair'), got keys {sorted(item)}")
        return item["text"], item.get("text_pair")
    return tuple(item) if isinstance(item, tuple | list) else (item, None)  # type: ignore[return-value]
