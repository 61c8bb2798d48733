"""The one composer: a name or a directory -> verified files -> model -> engine -> validation verdict.

The CLI (``download``, ``run``, ``eval``, ``bench``, ``inspect``, ``export``), ``zoo.load``, ``zoo demo``
and the server all come through here; nothing below this module composes stages or writes the state
database on its own. Every step takes its settings from the ``Settings`` passed in (home, offline,
mirrors, threads, trust on first use), built once at the edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.config import Settings
from zoo.errors import CheckpointError, InputError, NotInstalledError, ZooError

if TYPE_CHECKING:
    from zoo.catalog import ModelCard
    from zoo.convert.bert import BertModel
    from zoo.fetch import InstallResult
    from zoo.pipelines.base import Pipeline
    from zoo.runtime.validate import Verdict


@dataclass(frozen=True)
class Located:
    """Where a model's files are: a directory, the catalog entry when the user named one, the install done."""

    name: str
    path: Path
    card: ModelCard | None = None
    install: InstallResult | None = None

    @property
    def label(self) -> str:
        return self.card.name if self.card else str(self.path)


@dataclass(frozen=True)
class Prepared:
    """A ready engine for a located model, with the verdict of its validation when one ran."""

    located: Located
    model: BertModel
    engine: Any  # zoo.runtime.engine.Engine | OnnxRuntimeEngine
    threads: int
    verdict: Verdict | None = None

    @property
    def name(self) -> str:
        return self.located.name

    def __repr__(self) -> str:
        return f"<Prepared {self.name} on {type(self.engine).__name__}, {self.threads} threads>"


def settings_for(settings: Settings | None, **overrides: object) -> Settings:
    """``settings`` (or the environment's) with the keyword overrides that are not None."""
    return (settings or Settings.from_env()).with_(**overrides)


def locate(name_or_dir: str | Path, settings: Settings, *, fetch: bool = True, revision: str | None = None,
           sources: list[Any] | None = None, reporter: Any = None, on_status: Callable[[str], None] | None = None) -> Located:
    """A local Hub-style directory as given, or the installed (with ``fetch``: downloaded if needed) catalog entry."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        path = path.resolve()
        return Located(path.name, path)
    if path.exists() or str(name_or_dir).startswith(("/", "./", "../", "~")):
        raise InputError(f"{name_or_dir} is not a directory" if path.exists() else f"no such directory: {name_or_dir}",
                         "give a directory holding a Hub-style repo (config.json, weights, vocab), or a catalog name")
    from zoo.catalog import resolve

    card = resolve(str(name_or_dir), settings)
    if not fetch:
        from zoo.fetch.store import Store

        installed = settings.model_dir(card.name)
        if Store(settings.home).manifest(card.name) is not None and (installed / "config.json").exists():
            return Located(card.name, installed, card)
        raise NotInstalledError(f"{card.name} is not installed in {settings.home}",
                                f"run `zoo download {card.name}`, or pass a directory holding its Hub repo")
    result = _download(card, settings, revision, sources, reporter, on_status)
    return Located(card.name, result.path, card, result)


def download(name: str, settings: Settings, *, revision: str | None = None, sources: list[Any] | None = None,
             dry_run: bool = False, refresh: bool = False, reporter: Any = None) -> InstallResult:
    """Install a catalog model into ``settings.home`` (see ``zoo.fetch.download``)."""
    from zoo.fetch import download as fetch_download

    return fetch_download(name, revision=revision, sources=sources, mirrors=list(settings.mirrors) or None,
                          offline=settings.offline, dry_run=dry_run, refresh=refresh, reporter=reporter, home=settings.home,
                          trust_on_first_use=settings.trust_on_first_use)


def _download(card: ModelCard, settings: Settings, revision: str | None, sources: list[Any] | None, reporter: Any,
              on_status: Callable[[str], None] | None) -> InstallResult:
    from zoo.fetch.store import Store

    if on_status is not None and not settings.offline and Store(settings.home).manifest(card.name) is None:
        on_status(f"{card.name} is not installed: downloading it first")
    return download(card.name, settings, revision=revision, sources=sources, reporter=reporter)


def load_model(located: Located, settings: Settings) -> BertModel:
    """The converted model; a catalog install whose checkpoint the converter refuses is uninstalled, and the error says so."""
    from zoo.convert.repo import load_model as convert

    try:
        return convert(located.path)
    except CheckpointError as exc:  # UnsafeCheckpointError is a CheckpointError too
        if located.card is None:
            raise
        _uninstall(located.name, settings)
        raise type(exc)(f"{exc.message}; {located.name} was uninstalled so it is not used again",
                        f"report it to the source; `zoo download {located.name} --refresh` fetches it anew") from exc


def _uninstall(name: str, settings: Settings) -> None:
    from zoo.fetch.store import Store

    store = Store(settings.home)
    if store.manifest(name) is not None:
        store.remove(name)
    from zoo import state

    state.forget_install(name, home=settings.home)


def expectation(card: ModelCard | None, model: BertModel) -> tuple[float, str]:
    """The speedup over onnxruntime fp32 this variant should reach on this CPU's family, and where that figure comes from."""
    from zoo.runtime.validate import cpu_family, default_expectation

    family = cpu_family()
    found = card.expected_speedup(family) if card is not None else None
    if found:
        return found[0], f"catalog, {family} CPUs: {found[1]}"
    figure, why = default_expectation(model)
    return figure, why + (f" (the catalog has no figure for {family} CPUs)" if card is not None and card.speedups else "")


def first_load(name: str, settings: Settings) -> bool:
    from zoo import state

    return not state.validations(name, limit=1, home=settings.home)


def validate(located: Located, model: BertModel, engine: Any, threads: int, settings: Settings) -> Verdict:
    """Check ``engine`` against the reference and onnxruntime, with the catalog's expectation; record the verdict."""
    from zoo import state
    from zoo.runtime.validate import validate as run_validation

    verdict = run_validation(located.name, model, engine, threads, expected=expectation(located.card, model))
    state.record_validation(located.name, verdict.to_dict(), home=settings.home)
    return verdict


def prepare(name_or_dir: str | Path, settings: Settings | None = None, *, engine: str = "auto", revision: str | None = None,
            sources: list[Any] | None = None, fetch: bool = True, validate_engine: bool | None = None, reporter: Any = None,
            on_status: Callable[[str], None] | None = None, on_verdict: Callable[[Verdict], None] | None = None) -> Prepared:
    """Locate (download and verify if needed), convert, compile and, on a catalog model's first load, validate.

    ``validate_engine``: None validates a catalog model the first time it is prepared in this home; True
    always; False never. ``on_verdict`` receives the verdict when one is made.
    """
    from zoo.runtime.engine import compile

    settings = settings or Settings.from_env()
    located = locate(name_or_dir, settings, fetch=fetch, revision=revision, sources=sources, reporter=reporter, on_status=on_status)
    model = load_model(located, settings)
    threads = settings.engine_threads
    compiled = compile(model, threads=threads, backend=engine, choices=settings.home / "runtime" / "choices.json", on_status=on_status)
    verdict = None
    if validate_engine or (validate_engine is None and located.card is not None and first_load(located.name, settings)):
        verdict = validate(located, model, compiled, threads, settings)
        if on_verdict is not None:
            on_verdict(verdict)
    return Prepared(located, model, compiled, threads, verdict)


def pipeline(prepared: Prepared) -> Pipeline:
    """The task pipeline (question answering or classification) for a prepared model."""
    from zoo.pipelines import TASKS
    from zoo.pipelines.tokenizer import load_tokenizer

    model, located = prepared.model, prepared.located
    task = model.config.task
    if task not in TASKS:
        raise ZooError(f"{located.name} is a {model.config.architecture} ({task}); zoo.load serves {', '.join(TASKS)}",
                       "use zoo.convert / zoo.runtime directly for other heads")
    return TASKS[task](name=located.name, path=located.path, engine=prepared.engine, tokenizer=load_tokenizer(located.path),
                       config=model.config)


def load(name_or_dir: str | Path, settings: Settings | None = None, *, engine: str = "auto", threads: int | None = None,
         revision: str | None = None, offline: bool | None = None, validate: bool | None = None, home: str | Path | None = None,
         reporter: Any = None, on_status: Callable[[str], None] | None = None,
         on_verdict: Callable[[Verdict], None] | None = None) -> Pipeline:
    """``zoo.load``: a ready pipeline for a catalog model (downloaded and verified if needed) or a local directory."""
    settings = settings_for(settings, home=home, offline=offline, threads=threads)
    prepared = prepare(name_or_dir, settings, engine=engine, revision=revision, validate_engine=validate, reporter=reporter,
                       on_status=on_status, on_verdict=on_verdict)
    return pipeline(prepared)
