"""Extractive question answering (SQuAD v1.1 style), answer for answer as transformers' question-answering pipeline.

Long contexts are split into windows of ``max_seq_len`` tokens overlapping by ``doc_stride``. In each window the
start and end logits are softmaxed over the context tokens and [CLS] (float32, as transformers does), [CLS] is then
zeroed (its product is the "no answer" score), every span up to ``max_answer_len`` tokens is scored
start_prob x end_prob, and spans are snapped to whole words (``align_to_words``). Spans whose text is the same
(ignoring case) add their scores, across windows too; the ``top_k`` best are returned, a dict when there is one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.errors import InputError
from zoo.pipelines.base import Job, Pipeline

NO_NULL_SCORE = 1000000.0  # transformers' starting "minimum null score": larger than any probability


def span_probabilities(start: np.ndarray, end: np.ndarray, undesired: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end probabilities (float32, shape ``(1, n)``): softmax with ``undesired`` tokens at -10000."""
    probs = []
    for logits in (start, end):
        x = np.where(undesired, -10000.0, np.asarray(logits, dtype=np.float32).reshape(1, -1))
        x = np.exp(x - x.max(axis=-1, keepdims=True))
        probs.append(x / x.sum())
    return probs[0], probs[1]


def decode_spans(p_start: np.ndarray, p_end: np.ndarray, desired: np.ndarray, top_k: int,
                 max_answer_len: int) -> list[tuple[int, int, float]]:
    """(start token, end token, score) of the ``top_k`` best spans (start <= end < start + max_answer_len), best
    first, those touching a token outside ``desired`` dropped afterwards (so fewer than ``top_k`` may come back)."""
    best = _best_in_band(p_start[0], p_end[0], top_k, max_answer_len)
    starts, ends, scores = best if best is not None else _best_of_all(p_start, p_end, top_k, max_answer_len)
    keep = np.isin(starts, desired.nonzero()) & np.isin(ends, desired.nonzero())
    return [(int(s), int(e), float(v)) for s, e, v in zip(starts[keep], ends[keep], scores[keep], strict=True)]


def _best_of_all(p_start: np.ndarray, p_end: np.ndarray, top_k: int, max_answer_len: int) -> tuple[np.ndarray, ...]:
    """transformers' selection: every start x end product, outside the band zeroed, the ``top_k`` largest of the
    n x n matrix (argmax, or argpartition then argsort: equal scores come back in numpy's order)."""
    outer = np.matmul(np.expand_dims(p_start, -1), np.expand_dims(p_end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        idx = np.argpartition(-flat, top_k)[0:top_k]
        order = idx[np.argsort(-flat[idx])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    return starts, ends, flat[order]


def _best_in_band(p_start: np.ndarray, p_end: np.ndarray, top_k: int, max_answer_len: int) -> tuple[np.ndarray, ...] | None:
    """``_best_of_all``'s answer from the band alone (n x max_answer_len products instead of n x n), or None when
    it might differ: when fewer than ``top_k`` spans score above 0 or the ``top_k + 1`` best include equal scores
    (whose order only the full matrix's selection decides)."""
    width = min(max_answer_len, p_start.size)
    ends = np.concatenate([p_end, np.zeros(width - 1, dtype=p_end.dtype)])
    band = (p_start[:, None] * np.lib.stride_tricks.sliding_window_view(ends, width)).ravel()  # [start, length - 1]
    if band.size <= top_k:
        return None
    top = np.sort(np.partition(band, band.size - top_k - 1)[band.size - top_k - 1:])[::-1]
    if not (top[top_k - 1] > 0 and np.all(top[:-1] > top[1:])):
        return None
    found = np.flatnonzero(band >= top[top_k - 1])
    found = found[np.argsort(-band[found])]
    starts = found // width
    return starts, starts + found % width, band[found]


def best_spans(start: np.ndarray, end: np.ndarray, undesired: np.ndarray, top_k: int, max_answer_len: int) -> list[tuple[int, int, float]]:
    """(start token, end token, score) of the best spans in one window of logits, none touching an ``undesired`` token."""
    undesired = np.asarray(undesired, dtype=bool).reshape(1, -1)
    p_start, p_end = span_probabilities(start, end, undesired)
    return decode_spans(p_start, p_end, ~undesired, top_k, max_answer_len)


def _char_span(enc: Any, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    """Character offsets in the context of tokens ``s..e``: whole words when ``align_to_words`` (token offsets where
    a token belongs to no word, as [CLS])."""
    if align_to_words:
        start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
        if start_word is not None and end_word is not None:
            first, last = enc.word_to_chars(start_word, 1), enc.word_to_chars(end_word, 1)
            if first is not None and last is not None:
                return first[0], last[1]
    return enc.offsets[s][0], enc.offsets[e][1]


class QuestionAnswering(Pipeline):
    task = "question-answering"

    def __call__(self, *args: Any, question: str | list[str] | None = None, context: str | list[str] | None = None,
                 top_k: int = 1, doc_stride: int | None = None, max_answer_len: int = 15, max_seq_len: int | None = None,
                 max_question_len: int = 64, handle_impossible_answer: bool = False, align_to_words: bool = True) -> Any:
        """``qa(question=..., context=...)`` -> dict (a list of dicts when more than one answer comes back); lists of
        questions and contexts, or a list of ``{"question", "context"}`` dicts, give one result per pair."""
        pairs, single = _pairs(args, question, context)
        jobs = [self.plan_answer(q, c, top_k, doc_stride, max_answer_len, max_seq_len, max_question_len, handle_impossible_answer,
                                 align_to_words) for q, c in pairs]
        results = self.run_jobs(jobs)
        return results[0] if single else results

    def plan_answer(self, question: str, context: str, top_k: int = 1, doc_stride: int | None = None, max_answer_len: int = 15,
                    max_seq_len: int | None = None, max_question_len: int = 64, handle_impossible_answer: bool = False,
                    align_to_words: bool = True) -> Job:
        """The job answering one question: its windows, and how their logits become the answer.

        Defaults are transformers': ``max_seq_len`` min(model maximum, 384), ``doc_stride`` min(max_seq_len // 2, 128).
        The answer is a dict, or a list of dicts best first when ``top_k > 1`` finds more than one; with
        ``handle_impossible_answer`` the empty answer ``""`` (start = end = 0) competes with the [CLS] score.
        Unlike transformers' fast-tokenizer path, questions longer than ``max_question_len`` tokens are cut (as its
        slow path does), and a ``doc_stride`` that leaves no room for new context is reduced instead of refused.
        """
        max_seq_len = min(384, self.config.max_positions) if max_seq_len is None else max_seq_len
        doc_stride = min(_whole(max_seq_len, "max_seq_len") // 2, 128) if doc_stride is None else doc_stride
        for name, value in (("top_k", top_k), ("doc_stride", doc_stride), ("max_answer_len", max_answer_len),
                            ("max_seq_len", max_seq_len), ("max_question_len", max_question_len)):
            _whole(value, name)
        for name, flag in (("handle_impossible_answer", handle_impossible_answer), ("align_to_words", align_to_words)):
            if not isinstance(flag, bool):
                raise InputError(f"{name} must be true or false, got {flag!r}")
        if doc_stride > max_seq_len:
            raise InputError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")
        if not isinstance(question, str) or not isinstance(context, str):
            raise InputError(f"question and context must be strings, got {type(question).__name__} and {type(context).__name__}")
        if not question.strip() or not context.strip():
            raise InputError("question and context must both be non-empty")
        windows = self.windows(question, context, doc_stride, max_seq_len, max_question_len)
        cls_id = self.tokenizer.token_to_id("[CLS]")

        def finish(outs: list[dict[str, np.ndarray]]) -> Any:
            answers, null_score = self._answers(context, windows, outs, cls_id, top_k, max_answer_len, align_to_words)
            if handle_impossible_answer:
                answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
            answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
            return answers[0] if len(answers) == 1 else answers

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
        stride = min(doc_stride, room - 1)
        enc = self.truncating(max_length=max_seq_len, stride=stride, strategy="only_second").encode(question, context)
        return [enc, *enc.overflowing]

    @staticmethod
    def _answers(context: str, windows: list[Any], outs: list[dict[str, np.ndarray]], cls_id: int | None, top_k: int,
                 max_answer_len: int, align_to_words: bool) -> tuple[list[dict[str, Any]], float]:
        """Every window's candidate answers, those with the same text (ignoring case) merged by adding their
        scores, and the smallest [CLS] (no answer) score over the windows."""
        pre_top_k = top_k * 2 + 10 if align_to_words else top_k  # word alignment may merge candidates
        answers: list[dict[str, Any]] = []
        by_text: dict[str, dict[str, Any]] = {}
        null_score = NO_NULL_SCORE
        for enc, out in zip(windows, outs, strict=True):
            ids = np.asarray(enc.ids)
            desired = np.array([[s == 1 for s in enc.sequence_ids]]) | (ids == cls_id)[None]
            p_start, p_end = span_probabilities(out["start_logits"], out["end_logits"], ~desired)
            null_score = min(null_score, float(p_start[0, 0] * p_end[0, 0]))
            p_start[0, 0] = p_end[0, 0] = 0.0
            for s, e, score in decode_spans(p_start, p_end, desired, pre_top_k, max_answer_len):
                a, b = _char_span(enc, s, e, align_to_words)
                text = context[a:b]
                same = by_text.get(text.lower())
                if same is not None:
                    same["score"] += score
                else:
                    by_text[text.lower()] = found = {"score": score, "start": a, "end": b, "answer": text}
                    answers.append(found)
        return answers, null_score


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


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
