"""``download``: catalog entry -> files -> verified blobs -> manifest -> ``$ZOO_HOME/models/<name>``.

What happens to each file is decided first by a pure function (``decide``) from what is known about it,
then carried out under that file's lock. A model counts as installed only once every file is verified and
the manifest is written; a second download of an installed, still-verified model touches no network.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from zoo import config, state
from zoo.catalog import FileSpec, ModelCard, resolve
from zoo.errors import DiskFullError, FetchError, IntegrityError, OfflineError
from zoo.fetch.hashing import Expected, StreamHash, check
from zoo.fetch.progress import Quiet
from zoo.fetch.sources import Listing, Remote, Source, default_sources, hf_cached
from zoo.fetch.store import Manifest, ManifestFile, Store
from zoo.fetch.transfer import copy_file


@dataclass(frozen=True)
class FileResult:
    path: str
    size: int | None
    sha256: str | None
    verified_by: str
    action: str  # cached | hf-cache | download | resume (planned or done)
    origin: str
    fetched: int = 0


@dataclass(frozen=True)
class InstallResult:
    name: str
    repo: str
    revision: str
    commit: str | None
    path: Path
    files: tuple[FileResult, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def fetched(self) -> int:
        return sum(f.fetched for f in self.files)

    @property
    def pinned(self) -> list[str]:
        return [f.path for f in self.files if "pinned on first use" in f.verified_by]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "fetched": self.fetched, "pinned_on_first_use": self.pinned}


def decide(expected: Expected, in_store: bool, in_hf_cache: bool, partial_bytes: int, can_fetch: bool) -> str:
    """What to do with one file: ``cached``, ``hf-cache``, ``resume``, ``download``, or ``unavailable``."""
    if expected.sha256 and in_store:
        return "cached"
    if in_hf_cache:
        return "hf-cache"
    if not can_fetch:
        return "unavailable"
    return "resume" if partial_bytes else "download"


def expected_for(spec: FileSpec, pin: dict[str, Any] | None, remote: Remote | None, label: str) -> Expected:
    """Combine what the catalog, an earlier pin and the source say about a file; disagreement is an error."""
    claims = [(who, sha, size) for who, sha, size in (
        ("catalog", spec.sha256, spec.size),
        ("pinned", pin and pin["sha256"], pin and pin["size"]),
        ("source", remote and remote.sha256, remote and remote.size),
    ) if sha or size]
    shas = {sha for _, sha, _ in claims if sha}
    sizes = {size for _, _, size in claims if size is not None}
    if len(shas) > 1 or len(sizes) > 1:
        said = "; ".join(f"{who}: {sha or '?'} ({size} bytes)" for who, sha, size in claims)
        raise IntegrityError(f"{label}: sources disagree about the file: {said}",
                             "the upstream file changed or a mirror is wrong; pass --revision to pin a commit")
    authority = next((who for who, sha, _ in claims if sha), None)
    return Expected(size=next(iter(sizes), None), sha256=next(iter(shas), None), authority=authority,
                    git_oid=remote.git_oid if remote else None)


def _first_listing(sources: list[Source], repo: str, revision: str) -> tuple[Source | None, Listing, list[str]]:
    errors = []
    for src in sources:
        try:
            return src, src.listing(repo, revision), errors
        except FetchError as exc:
            errors.append(exc.one_line())
    return None, Listing(None, None), errors


def _installed(store: Store, card: ModelCard, revision: str) -> InstallResult | None:
    found = store.manifest(card.name)
    if found is None or revision not in (found.revision, found.commit):
        return None
    if not all(store.is_verified(f.sha256) and (store.model_dir(card.name) / f.path).exists() for f in found.files):
        return None
    files = tuple(FileResult(f.path, f.size, f.sha256, f.verified_by, "cached", f.origin) for f in found.files)
    return InstallResult(card.name, found.repo, found.revision, found.commit, store.model_dir(card.name), files)


def download(name: str, *, revision: str | None = None, sources: list[Source] | None = None, mirrors: list[str] | None = None,
             offline: bool | None = None, dry_run: bool = False, refresh: bool = False, reporter: Quiet | None = None) -> InstallResult:
    """Install a catalog model (or report what would be fetched with ``dry_run``); see the module docstring."""
    started = time.perf_counter()
    card = resolve(name)
    rev = revision or card.revision
    store = Store()
    offline = config.offline() if offline is None else offline
    rep = reporter or Quiet()
    if not refresh and (done := _installed(store, card, rev)) is not None:
        return done
    if sources is None:
        sources = [] if offline else default_sources(mirrors)
    elif offline:
        sources = [s for s in sources if not s.remote]
    lister, listing, errors = _first_listing(sources, card.repo, rev)
    commit = listing.commit
    pin_rev = commit or rev
    plan: list[tuple[FileSpec, Expected, str]] = []
    for spec in card.files:
        label = f"{card.name}/{spec.path}"
        remote = listing.files.get(spec.path) if listing.files is not None else None
        if listing.files is not None and remote is None:
            if spec.required:
                raise FetchError(f"{lister.label if lister else 'source'}: {card.repo}@{rev} has no {spec.path}")
            continue
        expected = expected_for(spec, state.pinned(card.repo, pin_rev, spec.path), remote, label)
        in_store = bool(expected.sha256) and store.ensure_verified(expected.sha256)
        in_hf = not in_store and hf_cached(card.repo, pin_rev, spec.path) is not None
        key = store.key(card.repo, pin_rev, spec.path)
        part = store.partial(key)
        action = decide(expected, in_store, in_hf, part.stat().st_size if part.exists() else 0, lister is not None)
        if action == "unavailable" and spec.required:
            if offline:
                raise OfflineError(f"{card.name} is not in the cache ({store.home}) and the network is off (ZOO_OFFLINE/HF_HUB_OFFLINE)",
                                   f"unset them, or on a connected machine run `zoo mirror pull {card.name} --to DIR` "
                                   "and here `zoo download --from DIR`")
            raise FetchError(f"no source could list {card.repo}@{rev}: {'; '.join(errors) or 'no sources'}",
                             "check the network, HF_ENDPOINT or --mirror; ZOO_OFFLINE=1 uses only the cache")
        if action != "unavailable":
            plan.append((spec, expected, action))
    if lister is None and any(a not in ("cached", "hf-cache") for _, _, a in plan):
        raise FetchError(f"no source could list {card.repo}@{rev}: {'; '.join(errors)}")
    if dry_run:
        files = tuple(FileResult(s.path, e.size, e.sha256, e.verified_by, a, "") for s, e, a in plan)
        return InstallResult(card.name, card.repo, rev, commit, store.model_dir(card.name), files, dry_run=True)
    _check_space(store, [e.size or 0 for _, e, a in plan if a in ("download", "resume")])
    results = []
    with rep:
        rep.start(sum(e.size or 0 for _, e, a in plan if a != "cached") or None)
        for spec, expected, _ in plan:
            try:
                results.append(_obtain(store, sources, card, pin_rev, spec, expected, rep))
            except _Skip:
                continue
    manifest = Manifest(card.name, card.repo, rev, commit, lister.label if lister else "cache",
                        tuple(ManifestFile(r.path, r.sha256 or "", r.size or 0, r.verified_by, r.origin) for r in results))
    path = store.install(manifest)
    now = state.now()
    state.record_install({"name": card.name, "repo": card.repo, "revision": rev, "commit": commit, "source": manifest.source,
                          "installed_at": now, "verified_at": now, "files": [asdict(f) for f in manifest.files]})
    return InstallResult(card.name, card.repo, rev, commit, path, tuple(results), time.perf_counter() - started)


def _check_space(store: Store, sizes: list[int]) -> None:
    need = sum(sizes)
    store.home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.home).free
    if need and free < need * 1.02 + 16 * 2**20:
        raise DiskFullError(f"not enough disk space in {store.home}: need {need / 1e6:.1f} MB, {free / 1e6:.1f} MB free",
                            "free some space or set ZOO_HOME to a bigger disk")


def _obtain(store: Store, sources: list[Source], card: ModelCard, pin_rev: str, spec: FileSpec, expected: Expected,
            rep: Quiet) -> FileResult:
    label = f"{card.name}/{spec.path}"
    key = store.key(card.repo, pin_rev, spec.path)
    with store.lock(key, label):
        if not expected.sha256 and (pin := state.pinned(card.repo, pin_rev, spec.path)):
            expected = replace(expected, sha256=pin["sha256"], authority="pinned")  # another process pinned it meanwhile
        if expected.sha256 and store.ensure_verified(expected.sha256):  # another process finished it meanwhile
            return FileResult(spec.path, expected.size, expected.sha256, expected.verified_by, "cached", "cache")
        part = store.partial(key)
        got, origin, act, fetched = _from_hf_cache(card, pin_rev, spec, part, expected, rep, label)
        if got is None:
            got, origin, act, fetched = _from_sources(store, key, sources, card, pin_rev, spec, expected, rep, label)
        store.adopt(part, got.sha256)
        store.drop_partial(key)
        if not expected.trusted:
            state.pin(card.repo, pin_rev, spec.path, got.sha256, got.size, origin)
    return FileResult(spec.path, got.size, got.sha256, expected.verified_by, act, origin, fetched)


def _from_hf_cache(card: ModelCard, pin_rev: str, spec: FileSpec, part: Path, expected: Expected, rep: Quiet,
                   label: str) -> tuple[StreamHash | None, str, str, int]:
    found = hf_cached(card.repo, pin_rev, spec.path)
    if found is None:
        return None, "", "", 0
    advance = rep.file(f"{spec.path} (HF cache)", expected.size)
    got = copy_file(found, part, expected, advance)
    rep.finish(advance)
    try:
        check(label, expected, got)
    except IntegrityError as exc:
        rep.note(f"[yellow]ignoring the Hugging Face cache copy of {spec.path}: {exc.one_line()}")
        part.unlink(missing_ok=True)
        return None, "", "", 0
    return got, f"hf-cache:{found}", "hf-cache", 0


def _from_sources(store: Store, key: str, sources: list[Source], card: ModelCard, pin_rev: str, spec: FileSpec,
                  expected: Expected, rep: Quiet, label: str) -> tuple[StreamHash, str, str, int]:
    part = store.partial(key)
    errors: list[str] = []
    for src in sources:
        for attempt in (1, 2):
            had = part.stat().st_size if part.exists() else 0
            store.describe_partial(key, model=card.name, repo=card.repo, revision=pin_rev, file=spec.path, source=src.label)
            fetched = [0]
            advance = rep.file(spec.path if attempt == 1 else f"{spec.path} (retry)", expected.size)

            def count(n: int, advance: Any = advance, fetched: list[int] = fetched) -> None:
                fetched[0] += n
                advance(n)

            try:
                got = src.fetch(card.repo, pin_rev, spec.path, part, expected, count, advance)
            except FetchError as exc:
                if not spec.required and "404" in exc.message:
                    raise _Skip() from None
                errors.append(exc.one_line())
                break
            finally:
                rep.finish(advance)
            try:
                check(label, expected, got)
            except IntegrityError as exc:
                store.drop_partial(key)
                if attempt == 2:
                    raise IntegrityError(f"{exc.message} (served twice by {src.label}; the bad copy was deleted)") from None
                rep.note(f"[yellow]{exc.one_line()}: deleted, fetching once more")
                continue
            return got, src.label, "resume" if had else "download", fetched[0]
    raise FetchError(f"could not fetch {label}: {'; '.join(errors) or 'no source available'}",
                     "rerun to resume; --mirror URL or --from DIR add sources")


class _Skip(Exception):
    """An optional file the source does not have."""
