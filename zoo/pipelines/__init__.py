"""Task pipelines over a compiled engine: question answering and text classification.

``zoo.load`` (composed in ``zoo.prepare``) picks the pipeline from ``TASKS`` by the checkpoint's head.
"""

from __future__ import annotations

from zoo.pipelines.base import Pipeline
from zoo.pipelines.classify import TextClassification
from zoo.pipelines.qa import QuestionAnswering

TASKS: dict[str, type[Pipeline]] = {"question-answering": QuestionAnswering, "text-classification": TextClassification}

__all__ = ["TASKS", "Pipeline", "QuestionAnswering", "TextClassification"]
