"""``zoo catalog add``: your own checkpoint becomes a catalog entry (a local stub, or a row on the team's server).

A directory (or a Hub repo id, fetched from ``HF_ENDPOINT``) is read by the converter, measured (layers,
shape, sparsity, pattern, int8 QAT) and hashed file by file; the stub written from that is validated by the
catalog's own schema, so the entry downloads (sizes and sha256 vouched by the catalog), verifies, loads,
benchmarks and serves like a bundled one. Local stubs go to ``$ZOO_HOME/stubs/``; ``to=URL`` pushes instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo.config import Settings
from zoo.errors import CatalogError, InputError, UnknownModelError


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    source: str

    @classmethod
    def parse(cls, text: str) -> Metric:
        """``f1=88.1:where the number comes from``."""
        name, eq, rest = text.partition("=")
        value, colon, source = rest.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not eq or not colon or not source.strip() or number is None:
            raise InputError(f"--metric {text!r} is not NAME=VALUE:SOURCE", "e.g. --metric 'f1=88.1:my eval on squad dev, 2026-01-02'")
        return cls(name.strip(), number, source.strip())


@dataclass(frozen=True)
class Enrolled:
    name: str
    repo: str
    layers: int
    sparsity: float
    pattern: str
    quantization: str
    files: int
    stub: Path | None  # the local stub written, or None when pushed
    pushed_to: str | None  # the catalog URL (password masked) it was pushed to
    text: str  # the stub

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _checkout(source: str, settings: Settings, revision: str) -> tuple[Path, str | None]:
    """The repo directory to inspect, and the Hub repo id when ``source`` is one."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), None
    if source.count("/") != 1 or path.exists():
        raise InputError(f"{source} is neither a directory nor a Hub repo id (org/name)")
    if settings.offline:
        raise InputError(f"{source} is a Hub repo id and the network is off", "give a local directory instead")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError

    from zoo import config

    try:
        got = snapshot_download(source, revision=revision, endpoint=config.hf_endpoint(), token=config.hf_token(),
                                cache_dir=settings.home / "enroll")
    except RepositoryNotFoundError:
        raise CatalogError(f"{config.hf_endpoint()}: repository {source} not found", "private or gated? set HF_TOKEN") from None
    except (HfHubHTTPError, OSError) as exc:
        raise CatalogError(f"cannot fetch {source} from {config.hf_endpoint()}: {str(exc).splitlines()[0]}") from None
    return Path(got), source


def _files(directory: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            h = hashlib.sha256()
            with p.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out.append({"path": rel.as_posix(), "required": True, "size": p.stat().st_size, "sha256": h.hexdigest()})
    return out


def describe(directory: Path, name: str, repo: str, revision: str, *, task: str | None, dataset: str,
             description: str | None, metrics: list[Metric], hub: bool) -> dict[str, Any]:
    """The stub record of the checkpoint in ``directory``, measured by the converter."""
    from zoo.catalog.fields import TASKS
    from zoo.convert.inspect import inspect_model
    from zoo.convert.repo import load_model

    model = load_model(directory)
    found = inspect_model(model)
    chosen = task or model.task
    if chosen not in TASKS:
        raise InputError(f"{directory} is a {chosen} model; the catalog lists {', '.join(TASKS)}", "pass --task")
    c = model.config
    dense = found.pattern == "dense"
    return {
        "name": name,
        "description": description or f"{name}: {c.layers}-layer BERT, {'dense' if dense else f'{found.sparsity:.0f}% {found.pattern}'}"
                                      f"{', int8 QAT' if found.quantized else ''} (added with zoo catalog add)",
        "task": chosen, "dataset": dataset, "stage": "downstream", "tags": ["user"],
        "source": {"repo": repo, "revision": revision},
        "architecture": {"layers": c.layers, "hidden": c.hidden, "heads": c.heads, "intermediate": c.intermediate,
                         "vocab_size": c.vocab_size, "max_positions": c.max_positions},
        "sparsity": {"target": 0.0 if dense else round(found.sparsity, 1), "pattern": found.pattern,
                     "scope": "encoder Linear weights, measured by zoo catalog add"},
        "quantization": {"scheme": "int8-qat" if found.quantized else "none"},
        "aliases": [{"name": repo, "kind": "hub", "verified": True}] if hub else [],
        "files": _files(directory),
        "metrics": [{"name": m.name, "value": m.value, "dataset": dataset, "source": m.source} for m in metrics],
    }


def _taken(keys: list[str], settings: Settings) -> str | None:
    from zoo.catalog import resolve

    for key in keys:
        try:
            return f"{key!r} is already the catalog entry {resolve(key, settings).name}"
        except UnknownModelError:
            continue
    return None


def enroll(source: str, name: str, settings: Settings, *, task: str | None = None, dataset: str = "custom",
           description: str | None = None, metrics: list[Metric] | None = None, repo: str | None = None,
           revision: str = "main", to: str | None = None) -> Enrolled:
    """Inspect ``source`` (a directory or Hub repo id) and add it to the catalog as ``name``; see the module docstring."""
    from zoo.catalog import source as catalog_source
    from zoo.catalog import user
    from zoo.catalog.push import push
    from zoo.catalog.stubfile import checked, to_toml

    directory, hub = _checkout(source, settings, revision)
    repo_id = repo or hub or f"local/{name}"
    stub = describe(directory, name, repo_id, revision, task=task, dataset=dataset, description=description,
                    metrics=metrics or [], hub=hub is not None)
    text = to_toml(stub, f"{name}: added by `zoo catalog add {source}`")
    parsed = checked(text, name)
    common = dict(name=name, repo=repo_id, layers=parsed["architecture"]["layers"], sparsity=parsed["sparsity"]["target"],
                  pattern=parsed["sparsity"]["pattern"], quantization=parsed["quantization"]["scheme"], files=len(parsed["files"]),
                  text=text)
    if to is not None:
        push(to, {name: text})
        return Enrolled(**common, stub=None, pushed_to=catalog_source.masked(to))
    target = user.stubs_dir(settings.home) / f"{name}.toml"
    if target.exists():
        raise CatalogError(f"{target} exists", f"delete it first to add {name} again")
    if (problem := _taken([name, *(a["name"] for a in parsed["aliases"])], settings)) is not None:
        raise CatalogError(f"cannot add {name}: {problem}", "choose another --name")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return Enrolled(**common, stub=target, pushed_to=None)
