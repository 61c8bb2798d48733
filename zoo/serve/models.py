"""What the server serves: each model's pipeline, its batcher, its names, and how a request becomes jobs.

A text request (question + context, or text [+ text_pair]) becomes one pipeline ``Job`` per input, planned
exactly as ``zoo run`` plans it, so a batched answer equals the answer served alone. Token requests
(``input_ids`` ...) go straight to the engine and return its logits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.errors import InputError
from zoo.pipelines.base import Pipeline
from zoo.serve.batcher import Batcher
from zoo.serve.protocol import InferRequest, Tensor, output_tensor, strings

QA_PARAMS: dict[str, Any] = {"top_k": (1, 100), "doc_stride": (1, 4096), "max_answer_len": (1, 4096), "max_seq_len": (8, 4096),
                             "max_question_len": (1, 4096), "handle_impossible_answer": bool, "align_to_words": bool}
CLASSIFY_PARAMS: dict[str, Any] = {"top_k": (1, 1000), "max_length": (2, 4096), "function_to_apply": ("softmax", "sigmoid", "none")}
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class ServedModel:
    name: str
    pipeline: Pipeline
    batcher: Batcher
    aliases: tuple[str, ...] = ()
    max_batch: int = 32
    max_wait_ms: float = 5.0
    load_seconds: float = 0.0
    verdict: dict[str, Any] | None = None
    token_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))

    @property
    def task(self) -> str:
        return self.pipeline.task

    @property
    def text_inputs(self) -> tuple[str, ...]:
        return ("question", "context") if self.task == "question-answering" else ("text", "text_pair")

    def text_outputs(self) -> list[str]:
        return ["answer", "score", "start", "end"] if self.task == "question-answering" else ["label", "score"]

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata: text inputs (BYTES) and the token inputs for clients that tokenize themselves."""
        text = [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in self.text_inputs]
        tokens = [{"name": n, "datatype": "INT64", "shape": [-1, -1]} for n in TOKEN_INPUTS]
        outs = {"answer": "BYTES", "label": "BYTES", "score": "FP32", "start": "INT64", "end": "INT64"}
        outputs = [{"name": n, "datatype": outs[n], "shape": [-1]} for n in self.text_outputs()]
        outputs += [{"name": n, "datatype": "FP32", "shape": [-1, -1]} for n in self.pipeline.engine.output_names]
        return {"name": self.name, "versions": ["1"], "platform": f"obert-zoo/{type(self.pipeline.engine).__name__}",
                "inputs": text + tokens, "outputs": outputs,
                "parameters": {"task": self.task, "aliases": list(self.aliases), "max_batch": self.max_batch}}

    # -- requests ------------------------------------------------------------------------------------------

    def params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Task parameters from a request, checked: known names, whole numbers in range, booleans, named choices."""
        allowed = QA_PARAMS if self.task == "question-answering" else CLASSIFY_PARAMS
        chosen: dict[str, Any] = {}
        for key, value in (given or {}).items():
            if key in ("binary_data_output", "timeout", "priority"):
                continue
            if key not in allowed:
                raise InputError(f"unknown parameter {key!r} for {self.task}; known: {', '.join(allowed)}")
            kind = allowed[key]
            if kind is bool:
                if not isinstance(value, bool):
                    raise InputError(f"parameter {key!r} must be true or false, got {value!r}")
            elif isinstance(kind[0], str):
                if value not in kind:
                    raise InputError(f"parameter {key!r} must be one of {', '.join(kind)}, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or not kind[0] <= value <= kind[1]:
                raise InputError(f"parameter {key!r} must be a whole number in [{kind[0]}, {kind[1]}], got {value!r}")
            chosen[key] = value
        return chosen

    async def answer(self, item: dict[str, Any], params: dict[str, Any]) -> Any:
        """One input's answer, exactly as the pipeline gives it for a single input (``zoo run --json``)."""
        if self.task == "question-answering":
            question, context = item.get("question"), item.get("context")
            if not isinstance(question, str) or not isinstance(context, str):
                raise InputError(f"{self.name} answers questions: give 'question' and 'context' as strings")
            job = self.pipeline.plan_answer(question, context, **params)  # type: ignore[attr-defined]
        else:
            text, pair = item.get("text"), item.get("text_pair")
            if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
                raise InputError(f"{self.name} classifies text: give 'text' (and optionally 'text_pair') as strings")
            job = self.pipeline.plan_classify(text, pair, **params)  # type: ignore[attr-defined]
        return await self.batcher.submit(job)

    async def infer(self, request: InferRequest) -> list[Tensor]:
        """A v2 inference: text tensors through the batcher, or token tensors straight to the engine."""
        if "input_ids" in request.inputs:
            return await self._infer_tokens(request)
        first, second = self.text_inputs
        if first not in request.inputs or (self.task == "question-answering" and second not in request.inputs):
            need = f"'{first}' and '{second}'" if self.task == "question-answering" else f"'{first}' (and optionally '{second}')"
            raise InputError(f"{self.name} takes BYTES inputs {need}, or INT64 'input_ids'")
        a = strings(request.inputs[first])
        b = strings(request.inputs[second]) if second in request.inputs else [None] * len(a)  # type: ignore[list-item]
        if len(b) == 1 and len(a) > 1:
            b = b * len(a)
        if len(a) != len(b) or not a:
            raise InputError(f"'{first}' and '{second}' must hold the same number of elements (or one '{second}')")
        params = self.params(request.parameters)
        items = [{first: x, second: y} for x, y in zip(a, b, strict=True)]
        results = await asyncio.gather(*(self.answer(i, params) for i in items))
        return self._text_tensors(results, request, params.get("top_k", 1))

    def _text_tensors(self, results: list[Any], request: InferRequest, top_k: int) -> list[Tensor]:
        rows = [r if isinstance(r, list) else [r] for r in results]
        width = max(top_k, 1)
        columns: dict[str, list[Any]] = {n: [] for n in self.text_outputs()}
        blank = {"answer": "", "label": "", "score": 0.0, "start": 0, "end": 0}
        for row in rows:
            padded = row[:width] + [blank] * (width - len(row[:width]))
            for n in columns:
                columns[n].extend(r[n] for r in padded)
        shape = (len(rows), width) if width > 1 else (len(rows),)
        kinds = {"score": np.float32, "start": np.int64, "end": np.int64}
        tensors = [output_tensor(n, np.array(v, dtype=kinds.get(n, object)).reshape(shape)) for n, v in columns.items()]
        names = request.requested([t.name for t in tensors])
        return [t for t in tensors if t.name in names]

    async def _infer_tokens(self, request: InferRequest) -> list[Tensor]:
        arrays = {}
        for n in TOKEN_INPUTS:
            t = request.inputs.get(n)
            if t is None:
                continue
            if t.datatype not in ("INT64", "INT32") or len(t.shape) != 2:
                raise InputError(f"input {n!r} must be INT64 [batch, sequence], got {t.datatype} {t.shape}")
            arrays[n] = t.data.astype(np.int64)
        shape = arrays["input_ids"].shape
        if any(a.shape != shape for a in arrays.values()) or 0 in shape:
            raise InputError(f"token inputs must share one non-empty [batch, sequence] shape; input_ids is {list(shape)}")
        async with self.token_slots:
            out = await asyncio.to_thread(self.pipeline.engine, **arrays)
        tensors = [output_tensor(n, np.asarray(v, dtype=np.float32)) for n, v in out.items()]
        names = request.requested([t.name for t in tensors])
        return [t for t in tensors if t.name in names]
