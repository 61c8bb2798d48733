"""Extractive question answering (SQuAD v1.1 style) with the Hugging Face pipeline's conventions.

Long contexts are split into windows of ``max_seq_len`` tokens overlapping by ``doc_stride``; start and end
logits of context tokens are turned into probabilities per window (softmax), every span up to
``max_answer_len`` tokens is scored start_prob x end_prob, and the best ``top_k`` spans over all windows
are returned with their character offsets in the original context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.errors import InputError
from zoo.pipelines.base import Job, Pipeline


@dataclass(frozen=True)
class Answer:
    answer: str
    score: float
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "score": self.score, "start": self.start, "end": self.end}


def _softmax_masked(logits: np.ndarray, undesired: np.ndarray) -> np.ndarray:
    x = np.where(undesired, -10000.0, logits.astype(np.float64))
    x = np.exp(x - x.max())
    return x / x.sum()


def best_spans(start: np.ndarray, end: np.ndarray, undesired: np.ndarray, top_k: int, max_answer_len: int) -> list[tuple[int, int, float]]:
    """(start token, end token, score) of the best spans in one window: start <= end < start + max_answer_len."""
    p_start, p_end = _softmax_masked(start, undesired), _softmax_masked(end, undesired)
    scores = np.triu(np.tril(np.outer(p_start, p_end), max_answer_len - 1))
    scores[undesired, :] = 0.0
    scores[:, undesired] = 0.0
    flat = scores.ravel()
    k = min(len(flat), max(top_k * 4, top_k))
    idx = np.argpartition(-flat, k - 1)[:k] if k < len(flat) else np.arange(len(flat))
    idx = idx[np.argsort(-flat[idx])]
    n = scores.shape[1]
    return [(int(i // n), int(i % n), float(flat[i])) for i in idx if flat[i] > 0][:top_k]


class QuestionAnswering(Pipeline):
    task = "question-answering"

    def __call__(self, *args: Any, question: str | list[str] | None = None, context: str | list[str] | None = None,
                 top_k: int = 1, doc_stride: int = 128, max_answer_len: int = 15, max_seq_len: int = 384,
                 max_question_len: int = 64) -> Any:
        """``qa(question=..., context=...)`` -> dict (a list of dicts when ``top_k > 1``); lists of questions
        and contexts, or a list of ``{"question", "context"}`` dicts, give one result per pair."""
        pairs, single = _pairs(args, question, context)
        jobs = [self.plan_answer(q, c, top_k, doc_stride, max_answer_len, max_seq_len, max_question_len) for q, c in pairs]
        results = self.run_jobs(jobs)
        return results[0] if single else results

    def plan_answer(self, question: str, context: str, top_k: int = 1, doc_stride: int = 128, max_answer_len: int = 15,
                    max_seq_len: int = 384, max_question_len: int = 64) -> Job:
        """The job answering one question: its windows, and how their logits become the answer (a dict, or a
        list of ``top_k`` dicts when ``top_k > 1``; an empty answer when no span qualifies)."""
        for name, value in (("top_k", top_k), ("doc_stride", doc_stride), ("max_answer_len", max_answer_len),
                            ("max_seq_len", max_seq_len), ("max_question_len", max_question_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not isinstance(question, str) or not isinstance(context, str):
            raise InputError(f"question and context must be strings, got {type(question).__name__} and {type(context).__name__}")
        if not question.strip() or not context.strip():
            raise InputError("question and context must both be non-empty")
        windows = self.windows(question, context, doc_stride, max_seq_len, max_question_len)

        def finish(outs: list[dict[str, np.ndarray]]) -> Any:
            dicts = [a.to_dict() for a in self._best(context, windows, outs, top_k, max_answer_len)]
            dicts = dicts or [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
            return dicts[0] if top_k == 1 else dicts

        return Job(windows, finish)

    def windows(self, question: str, context: str, doc_stride: int, max_seq_len: int, max_question_len: int) -> list[Any]:
        """The encodings of every window of ``context`` (question first, then a slice of the context)."""
        max_seq_len = min(max_seq_len, self.config.max_positions)
        tok = self.tokenizer
        q_enc = tok.encode(question, add_special_tokens=False)
        q_ids = q_enc.ids
        if len(q_ids) > max_question_len:
            question = question[:q_enc.offsets[max_question_len - 1][1]]
            q_ids = q_ids[:max_question_len]
        room = max_seq_len - len(q_ids) - 3
        if room < 2:
            raise InputError(f"max_seq_len {max_seq_len} leaves no room for the context after a {len(q_ids)}-token question")
        stride = min(doc_stride, max_seq_len // 2, room - 1)
        enc = self.truncating(max_length=max_seq_len, stride=stride, strategy="only_second").encode(question, context)
        return [enc, *enc.overflowing]

    @staticmethod
    def _best(context: str, windows: list[Any], outs: list[dict[str, np.ndarray]], top_k: int, max_answer_len: int) -> list[Answer]:
        found: dict[tuple[int, int], float] = {}
        for enc, out in zip(windows, outs, strict=True):
            seq_ids = np.array([s if s is not None else -1 for s in enc.sequence_ids])
            undesired = seq_ids != 1
            for s, e, score in best_spans(out["start_logits"], out["end_logits"], undesired, top_k, max_answer_len):
                span = (enc.offsets[s][0], enc.offsets[e][1])
                found[span] = max(score, found.get(span, 0.0))
        best = sorted(found.items(), key=lambda kv: -kv[1])[:top_k]
        return [Answer(context[s:e], round(score, 6), s, e) for (s, e), score in best]


def _pairs(args: tuple[Any, ...], question: Any, context: Any) -> tuple[list[tuple[str, str]], bool]:
    if args:
        items = args[0]
        if isinstance(items, dict):
            return [(items["question"], items["context"])], True
        if isinstance(items, list | tuple) and all(isinstance(i, dict) for i in items):
            return [(i["question"], i["context"]) for i in items], False
        raise InputError("pass question= and context=, or a list of {'question': ..., 'context': ...}")
    if question is None or context is None:
        raise InputError("pass question= and context=")
    if isinstance(question, str) and isinstance(context, str):
        return [(question, context)], True
    qs = [question] * len(context) if isinstance(question, str) else list(question)
    cs = [context] * len(qs) if isinstance(context, str) else list(context)
    if len(qs) != len(cs):
        raise InputError(f"{len(qs)} questions but {len(cs)} contexts")
    return list(zip(qs, cs, strict=True)), False
