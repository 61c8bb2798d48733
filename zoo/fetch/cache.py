"""What is in the cache, how big it is, re-verification, and removal (``zoo cache`` and ``zoo verify``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo import state
from zoo.fetch.hashing import sha256_file
from zoo.fetch.progress import Quiet
from zoo.fetch.store import Store


@dataclass(frozen=True)
class CachedModel:
    name: str
    repo: str
    revision: str
    commit: str | None
    files: int
    bytes: int
    verified_at: str | None
    path: str


@dataclass(frozen=True)
class CacheReport:
    home: str
    models: tuple[CachedModel, ...]
    blobs: int
    blob_bytes: int
    unreferenced_bytes: int
    partials: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def report(store: Store | None = None, home: Path | None = None) -> CacheReport:
    store = store or Store(home)
    verified = {row["name"]: row["verified_at"] for row in state.installs(home=store.home)}
    manifests = store.manifests()
    models = tuple(CachedModel(m.name, m.repo, m.revision, m.commit, len(m.files), m.size, verified.get(m.name),
                               str(store.model_dir(m.name))) for m in manifests)
    used = {f.sha256 for m in manifests for f in m.files}
    blobs = store.blobs()
    sizes = {b.name.removeprefix("sha256-"): b.stat().st_size for b in blobs}
    return CacheReport(str(store.home), models, len(blobs), sum(sizes.values()),
                       sum(s for sha, s in sizes.items() if sha not in used), tuple(store.partials()))


@dataclass(frozen=True)
class VerifyResult:
    name: str
    ok: bool
    files: int
    bytes: int
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(names: list[str] | None = None, reporter: Quiet | None = None, home: Path | None = None) -> list[VerifyResult]:
    """Re-hash every file of the named (default: all) installed models against its manifest.

    A file that no longer matches is removed from the cache with its model's manifest, so a corrupt file
    is never used; ``zoo download`` then fetches it again.
    """
    from zoo.catalog import resolve

    store = Store(home)
    manifests = [store.require(resolve(n).name) for n in names] if names else store.manifests()
    rep = reporter or Quiet()
    results = []
    with rep:
        rep.start(sum(m.size for m in manifests) or None)
        for m in manifests:
            problems = []
            for f in m.files:
                blob = store.blob(f.sha256)
                if not blob.exists():
                    problems.append(f"{f.path}: missing from the cache")
                    continue
                advance = rep.file(f"{m.name}/{f.path}", f.size)
                actual = sha256_file(blob, advance)
                rep.finish(advance)
                if actual != f.sha256:
                    problems.append(f"{f.path}: sha256 mismatch: expected {f.sha256}, got {actual}")
                    store.drop_blob(f.sha256)
                else:
                    store.mark_verified(f.sha256)
            if problems:
                store.remove(m.name)
                state.forget_install(m.name, home=store.home)
            else:
                state.touch_verified(m.name, home=store.home)
            results.append(VerifyResult(m.name, not problems, len(m.files), m.size, tuple(problems)))
    return results


def remove(name: str, home: Path | None = None) -> dict[str, Any]:
    """Uninstall a model and free its blobs that no other installed model uses (as ``ollama rm`` does); the
    bytes freed are reported. A blob a live download holds is left for ``prune``."""
    from zoo.catalog import resolve
    from zoo.errors import NotInstalledError

    store = Store(home)
    card = resolve(name)
    if store.manifest(card.name) is None:
        raise NotInstalledError(f"{card.name} is not installed in {store.home}: nothing to remove", "`zoo cache list` shows what is")
    manifest = store.remove(card.name)
    state.forget_install(manifest.name, home=store.home)
    blobs, freed = store.prune(partials=False, only={f.sha256 for f in manifest.files})
    return {"name": manifest.name, "files": len(manifest.files), "bytes": manifest.size, "freed_blobs": blobs, "freed_bytes": freed}
