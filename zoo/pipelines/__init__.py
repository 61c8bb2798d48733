"""``zoo.load``: a name or a directory -> a ready pipeline (download, verify, convert, compile, validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.pipelines.base import Pipeline
from zoo.pipelines.classify import TextClassification
from zoo.pipelines.qa import QuestionAnswering

TASKS: dict[str, type[Pipeline]] = {"question-answering": QuestionAnswering, "text-classification": TextClassification}


def load(name_or_dir: str | Path, *, engine: str = "auto", threads: int | None = None, revision: str | None = None,
         offline: bool | None = None, validate: bool | None = None, reporter: Any = None,
         on_verdict: Any = None) -> Pipeline:
    """A pipeline for a catalog model (downloaded and verified if needed) or a local Hub-style directory.

    ``engine``: ``auto`` (the sparse engine for sparse models, onnxruntime for dense ones), ``sparse`` or
    ``onnxruntime``. The first load of a catalog model validates the engine against the reference and
    onnxruntime (``validate=False`` skips it, ``True`` forces it); ``on_verdict`` receives the ``Verdict``.
    """
    from zoo.convert.repo import load_model
    from zoo.pipelines.tokenizer import load_tokenizer
    from zoo.runtime.engine import compile, default_threads

    path = Path(name_or_dir).expanduser()
    from_catalog = not path.is_dir()
    if not from_catalog:
        name = path.resolve().name
    else:
        from zoo.fetch import download

        result = download(str(name_or_dir), revision=revision, offline=offline, reporter=reporter)
        name, path = result.name, result.path
    model = load_model(path)
    task = model.config.task
    if task not in TASKS:
        raise ZooError(f"{name} is a {model.config.architecture} ({task}); zoo.load serves {', '.join(TASKS)}",
                       "use zoo.convert / zoo.runtime directly for other heads")
    threads = threads or default_threads()
    compiled = compile(model, threads=threads, backend=engine)
    if validate or (validate is None and from_catalog and _first_load(name)):
        from zoo.runtime.validate import validate as run_validation

        verdict = run_validation(name, model, compiled, threads)
        if on_verdict is not None:
            on_verdict(verdict)
    return TASKS[task](name=name, path=path, engine=compiled, tokenizer=load_tokenizer(path), config=model.config)


def _first_load(name: str) -> bool:
    from zoo import state

    return not state.validations(name, limit=1)
