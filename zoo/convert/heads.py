"""The task heads zoo runs, described once: which architectures carry them, their weights, their outputs.

The converter, the numpy reference, the ONNX export, the sparse engine, validation and the pipelines
all read this table; an architecture it does not list is refused by name instead of being loaded as
something it is not (a token classifier's ``classifier.weight`` looks like a sequence classifier's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from zoo.errors import CheckpointError

T = TypeVar("T")


@dataclass(frozen=True)
class Head:
    """One task head: ``pooled`` heads read the [CLS] token (through the pooler when present); ``span``
    heads emit one start and one end logit per token."""

    task: str
    architectures: tuple[str, ...]
    weight: str  # state-dict prefix of the head's Linear
    outputs: tuple[str, ...]
    pooled: bool

    @property
    def span(self) -> bool:
        return len(self.outputs) == 2

    def outputs_of(self, logits: T, split: Callable[[T, int], T]) -> dict[str, T]:
        """Name the head's logits: a span head's two columns (``split(logits, i)``) or the logits as they are."""
        if self.span:
            return {name: split(logits, i) for i, name in enumerate(self.outputs)}
        return {self.outputs[0]: logits}


QUESTION_ANSWERING = Head("question-answering", ("BertForQuestionAnswering",), "qa_outputs", ("start_logits", "end_logits"),
                          pooled=False)
SEQUENCE_CLASSIFICATION = Head("text-classification", ("BertForSequenceClassification",), "classifier", ("logits",), pooled=True)
HEADS = (QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION)

ENCODER_ONLY = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertLMHeadModel")  # heads ignored: the encoder is used
FEATURE_EXTRACTION = "feature-extraction"
ENCODER_OUTPUTS = ("last_hidden_state",)


def head_for(architecture: str) -> Head | None:
    """The head of a ``config.json`` architecture; None for encoder-only ones; a ``CheckpointError`` otherwise."""
    for head in HEADS:
        if architecture in head.architectures:
            return head
    if architecture in ENCODER_ONLY:
        return None
    supported = ", ".join(a for h in HEADS for a in h.architectures)
    raise CheckpointError(f"config.json: architecture {architecture!r} has a head zoo does not run",
                          f"supported: {supported}; encoder-only: {', '.join(ENCODER_ONLY)}")


def task_of(head: Head | None) -> str:
    return head.task if head is not None else FEATURE_EXTRACTION


def outputs_of(head: Head | None) -> list[str]:
    return list(head.outputs if head is not None else ENCODER_OUTPUTS)
