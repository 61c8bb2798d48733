"""SQuAD v1.1 evaluation, computed as the official ``evaluate-v1.1.py`` does: answers are normalized
(lower case, punctuation and the articles a/an/the removed, whitespace collapsed); exact match and
token-level F1 take the best over the ground-truth answers; both are averaged over questions x 100."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import InputError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def f1_score(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def best_over_truths(metric, prediction: str, truths: list[str]) -> float:  # noqa: ANN001
    return max(metric(prediction, t) for t in truths)


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]


def read_squad(path: Path) -> Iterator[Example]:
    """Examples of a SQuAD v1.1-format file (``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for article in data["data"]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    yield Example(str(qa["id"]), qa["question"], para["context"], tuple(a["text"] for a in qa["answers"]))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not SQuAD v1.1 JSON ({type(exc).__name__}: {exc})",
                       "expected {'data': [{'paragraphs': [{'context', 'qas': [{'id', 'question', 'answers'}]}]}]}") from None


def evaluate(examples: list[Example], predictions: dict[str, str]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over the examples that have ground truths."""
    scored = [e for e in examples if e.answers]
    if not scored:
        raise InputError("no examples with answers to score")
    em = sum(best_over_truths(exact_match_score, predictions.get(e.id, ""), list(e.answers)) for e in scored)
    f1 = sum(best_over_truths(f1_score, predictions.get(e.id, ""), list(e.answers)) for e in scored)
    return {"exact_match": 100.0 * em / len(scored), "f1": 100.0 * f1 / len(scored), "count": len(scored)}
