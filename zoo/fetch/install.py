"""``download``: catalog entry -> files -> verified blobs -> manifest -> ``$ZOO_HOME/models/<name>``.

What happens to each file is decided first by a pure function (``decide``) from what is known about it,
then carried out under that file's lock. A model counts as installed only once every file is verified and
the manifest is written; a second download of an installed, still-verified model touches no network.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from zoo import config, state
from zoo.catalog import FileSpec, ModelCard, resolve
from zoo.errors import DiskFullError, FetchError, IntegrityError, OfflineError, RemoteNotFoundError, UnvouchedError
from zoo.fetch.hashing import VOUCHED_BY, Expected, StreamHash, check, git_oid_file
from zoo.fetch.progress import Quiet
from zoo.fetch.sources import Listing, Remote, Source, default_sources, hf_blob_claims, hf_cached
from zoo.fetch.store import Lease, Manifest, ManifestFile, Store
from zoo.fetch.transfer import Fetched, Limits, copy_file

log = logging.getLogger("zoo.fetch")
RANK = list(VOUCHED_BY)  # who vouches for a hash, strongest first


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

    @property
    def trusted_on_first_use(self) -> list[str]:
        """Files nothing vouched for, installed only because trust on first use was asked for."""
        return [f.path for f in self.files if f.verified_by == VOUCHED_BY["trust-on-first-use"]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "fetched": self.fetched, "pinned_on_first_use": self.pinned,
                "trusted_on_first_use": self.trusted_on_first_use}


def decide(expected: Expected, in_store: bool, in_hf_cache: bool, partial_bytes: int, can_fetch: bool) -> str:
    """What to do with one file: ``cached``, ``hf-cache``, ``resume``, ``download``, or ``unavailable``."""
    if expected.sha256 and in_store:
        return "cached"
    if in_hf_cache:
        return "hf-cache"
    if not can_fetch:
        return "unavailable"
    return "resume" if partial_bytes else "download"


def expected_for(spec: FileSpec, pin: dict[str, Any] | None, remotes: list[Remote], label: str) -> Expected:
    """Combine what the catalog, an earlier pin and every listing say about a file; disagreement is an error.
    The strongest claim (catalog, pin, a listing, a mirror's hashes file) names the authority."""
    claims = [(who, sha, size) for who, sha, size in (
        ("catalog", spec.sha256, spec.size),
        ("pinned", pin and pin["sha256"], pin and pin["size"]),
        *((r.authority, r.sha256, r.size) for r in remotes),
    ) if sha or size is not None]
    shas = {sha for _, sha, _ in claims if sha}
    sizes = {size for _, _, size in claims if size is not None}
    oids = {r.git_oid for r in remotes if r.git_oid}
    if len(shas) > 1 or len(sizes) > 1 or len(oids) > 1:
        said = "; ".join(f"{who}: {sha or '?'} ({size} bytes)" for who, sha, size in claims)
        raise IntegrityError(f"{label}: sources disagree about the file: {said}",
                             "the upstream file changed or a mirror is wrong; pass --revision to pin a commit")
    vouchers = [who for who, sha, _ in claims if sha] + [r.authority for r in remotes if r.git_oid]
    authority = min(vouchers, key=RANK.index, default=None)
    return Expected(size=next(iter(sizes), None), sha256=next(iter(shas), None), authority=authority,
                    git_oid=next(iter(oids), None))


def vouch(expected: Expected, sha256: str | None, git_oid: str | None, authority: str, label: str) -> Expected:
    """``expected`` with a later claim (a response header, the HF cache's blob name) folded in; must agree."""
    if (sha256 and expected.sha256 and sha256 != expected.sha256) or (git_oid and expected.git_oid and git_oid != expected.git_oid):
        raise IntegrityError(f"{label}: the {authority} says {sha256 or git_oid}, but {expected.verified_by} says "
                             f"{expected.sha256 or expected.git_oid}", "a source is wrong; try another --mirror")
    if not (sha256 or git_oid):
        return expected
    stronger = expected.authority if expected.authority and RANK.index(expected.authority) < RANK.index(authority) else authority
    return replace(expected, sha256=expected.sha256 or sha256, git_oid=expected.git_oid or git_oid, authority=stronger)


def _unvouched(label: str) -> UnvouchedError:
    return UnvouchedError(f"{label}: nothing vouches for this file (no catalog hash, pin, listing hash or hash header), "
                          "so it was not installed",
                          "to accept and pin whatever the source sends, pass --trust-on-first-use "
                          "(ZOO_TRUST_ON_FIRST_USE=1; trust_on_first_use=True in Python)")


def _listings(sources: list[Source], repo: str, revision: str) -> tuple[list[tuple[Source, Listing]], list[str]]:
    """Every reachable source's listing: mirrors serve bytes, but hashes come from wherever they are known (the
    Hub's listing checks a plain mirror's bytes). After the first, each source gets one try, no retries. A
    source that says the repo or revision does not exist ends the search when nothing else lists it."""
    found: list[tuple[Source, Listing]] = []
    errors: list[str] = []
    missing: RemoteNotFoundError | None = None
    for src in sources:
        try:
            found.append((src, src.listing(repo, revision, retries=0 if found else None)))
        except RemoteNotFoundError as exc:
            missing = missing or exc
            errors.append(exc.one_line())
        except FetchError as exc:
            errors.append(exc.one_line())
    if missing is not None and not any(listing.files is not None for _, listing in found):
        raise missing
    return found, errors


def _installed(store: Store, card: ModelCard, revision: str) -> InstallResult | None:
    """The install result of an installed model whose blobs are still verified (the no-network fast path)."""
    found = store.manifest(card.name)
    if found is None or revision not in (found.revision, found.commit):
        return None
    if not all(store.is_verified(f.sha256) and (store.model_dir(card.name) / f.path).exists() for f in found.files):
        return None
    files = tuple(FileResult(f.path, f.size, f.sha256, f.verified_by, "cached", f.origin) for f in found.files)
    return InstallResult(card.name, found.repo, found.revision, found.commit, store.model_dir(card.name), files)


def download(name: str, *, revision: str | None = None, sources: list[Source] | None = None, mirrors: list[str] | None = None,
             offline: bool | None = None, dry_run: bool = False, refresh: bool = False, reporter: Quiet | None = None,
             home: Path | None = None, limits: Limits | None = None, trust_on_first_use: bool | None = None) -> InstallResult:
    """Install a catalog model into ``home`` (default ``ZOO_HOME``), or report what would be fetched with ``dry_run``.

    A file is installed only when its bytes match a hash someone vouches for (catalog, pin, a listing, the
    response's own ETag, a mirror's hashes file); with nothing at all, it is refused unless ``trust_on_first_use``
    (default ``ZOO_TRUST_ON_FIRST_USE``), which pins what arrives. See the module docstring."""
    started = time.perf_counter()
    card = resolve(name, config.Settings.from_env(home=home, offline=offline))
    rev = revision or card.revision
    store = Store(home, lock_timeout=limits.lock_timeout if limits else None)
    offline = config.offline() if offline is None else offline
    trust = config.trust_on_first_use() if trust_on_first_use is None else trust_on_first_use
    rep = reporter or Quiet()
    if not refresh and (done := _installed(store, card, rev)) is not None:
        return done
    if sources is None:
        sources = [] if offline else default_sources(mirrors, limits)
    elif offline:
        sources = [s for s in sources if not s.remote]
    found, errors = _listings(sources, card.repo, rev)
    commit = next((listing.commit for _, listing in found if listing.commit), None)
    lister = found[0][0] if found else None
    known = [listing.files for _, listing in found if listing.files is not None]
    pin_rev = commit or rev
    plan: list[tuple[FileSpec, Expected, str]] = []
    for spec in card.files:
        label = f"{card.name}/{spec.path}"
        remotes = [files[spec.path] for files in known if spec.path in files]
        if known and not remotes:
            if spec.required:
                raise RemoteNotFoundError(f"{lister.label if lister else 'source'}: {card.repo}@{rev} has no {spec.path}")
            continue
        expected = expected_for(spec, state.pinned(card.repo, pin_rev, spec.path, home=store.home), remotes, label)
        in_store = bool(expected.sha256) and store.ensure_verified(expected.sha256)
        in_hf = not in_store and hf_cached(card.repo, pin_rev, spec.path) is not None
        part = store.partial(store.key(card.repo, pin_rev, spec.path))
        action = decide(expected, in_store, in_hf, part.stat().st_size if part.exists() else 0, lister is not None)
        if action == "unavailable" and spec.required:
            if offline:
                raise OfflineError(f"{card.name} is not in the cache ({store.home}) and the network is off (ZOO_OFFLINE/HF_HUB_OFFLINE)",
                                   f"unset them, or on a connected machine run `zoo mirror pull {card.name} --to DIR` "
                                   "and here `zoo download --from DIR`")
            raise FetchError(f"no source could list {card.repo}@{rev}: {'; '.join(errors) or 'no sources'}",
                             "check the network, HF_ENDPOINT or --mirror; ZOO_OFFLINE=1 uses only the cache")
        if action in ("download", "resume") and not expected.vouched and not trust and not any(s.header_hashes for s in sources):
            raise _unvouched(label)  # nothing listed a hash and no source can name one in its headers: refuse up front
        if action != "unavailable":
            plan.append((spec, expected, action))
    if lister is None and any(a not in ("cached", "hf-cache") for _, _, a in plan):
        raise FetchError(f"no source could list {card.repo}@{rev}: {'; '.join(errors)}")
    if dry_run:
        files = tuple(FileResult(s.path, e.size, e.sha256, e.verified_by, a, "") for s, e, a in plan)
        return InstallResult(card.name, card.repo, rev, commit, store.model_dir(card.name), files, dry_run=True)
    _check_space(store, [(e.size or 0) - _partial_bytes(store, card.repo, pin_rev, s.path) if a == "resume" else e.size or 0
                         for s, e, a in plan if a in ("download", "resume")])
    results = []
    with rep, Lease(store) as lease:  # every file and blob stays held until the manifest is written
        rep.start(sum(e.size or 0 for _, e, a in plan if a != "cached") or None)
        for spec, expected, _ in plan:
            try:
                results.append(_obtain(store, lease, sources, card, pin_rev, spec, expected, rep, trust))
            except _Skip:
                continue
        manifest = Manifest(card.name, card.repo, rev, commit, lister.label if lister else "cache",
                            tuple(ManifestFile(r.path, r.sha256 or "", r.size or 0, r.verified_by, r.origin) for r in results))
        path = store.install(manifest)
    now = state.now()
    state.record_install({"name": card.name, "repo": card.repo, "revision": rev, "commit": commit, "source": manifest.source,
                          "installed_at": now, "verified_at": now, "files": [asdict(f) for f in manifest.files]}, home=store.home)
    return InstallResult(card.name, card.repo, rev, commit, path, tuple(results), time.perf_counter() - started)


def _partial_bytes(store: Store, repo: str, pin_rev: str, path: str) -> int:
    part = store.partial(store.key(repo, pin_rev, path))
    return part.stat().st_size if part.exists() else 0


def _check_space(store: Store, sizes: list[int]) -> None:
    """Refuse before fetching when the bytes still to come (a resume counts only its missing part) do not fit."""
    need = max(0, sum(sizes))
    store.home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.home).free
    if need and free < need * 1.02 + 16 * 2**20:
        raise DiskFullError(f"not enough disk space in {store.home}: need {need / 1e6:.1f} MB, {free / 1e6:.1f} MB free",
                            "free some space or set ZOO_HOME to a bigger disk")


def _obtain(store: Store, lease: Lease, sources: list[Source], card: ModelCard, pin_rev: str, spec: FileSpec,
            expected: Expected, rep: Quiet, trust: bool) -> FileResult:
    label = f"{card.name}/{spec.path}"
    key = store.key(card.repo, pin_rev, spec.path)
    lease.file(key, label)
    if not expected.sha256 and (pin := state.pinned(card.repo, pin_rev, spec.path, home=store.home)):
        expected = replace(expected, sha256=pin["sha256"], authority="pinned")  # another process pinned it meanwhile
    if expected.sha256:
        lease.blob(expected.sha256)
        if store.ensure_verified(expected.sha256):  # in the store already (or another process finished it meanwhile)
            return FileResult(spec.path, expected.size, expected.sha256, expected.verified_by, "cached", "cache")
    part = store.partial(key)
    got, expected, origin, act, fetched = _from_hf_cache(card, pin_rev, spec, part, expected, rep, label)
    if got is None:
        got, expected, origin, act, fetched = _from_sources(store, key, sources, card, pin_rev, spec, expected, rep, label, trust)
    lease.blob(got.sha256)
    store.adopt(part, got.sha256)
    store.drop_partial(key)
    if not expected.trusted:
        state.pin(card.repo, pin_rev, spec.path, got.sha256, got.size, origin, home=store.home)
    if expected.authority == "trust-on-first-use":
        msg = f"{label}: nothing vouched for this file; trusted on first use and pinned as sha256 {got.sha256}"
        log.warning("WARNING: %s", msg)
        rep.note(f"[bold red]WARNING[/]: {msg}")
    return FileResult(spec.path, got.size, got.sha256, expected.verified_by, act, origin, fetched)


def _from_hf_cache(card: ModelCard, pin_rev: str, spec: FileSpec, part: Path, expected: Expected, rep: Quiet,
                   label: str) -> tuple[StreamHash | None, Expected, str, str, int]:
    found = hf_cached(card.repo, pin_rev, spec.path)
    if found is None:
        return None, expected, "", "", 0
    try:
        seen = vouch(expected, *hf_blob_claims(found), "header", label)  # the HF cache names blobs by the Hub's ETag
    except IntegrityError as exc:
        rep.note(f"[yellow]ignoring the Hugging Face cache copy of {spec.path}: {exc.one_line()}")
        return None, expected, "", "", 0
    if not seen.vouched:
        return None, expected, "", "", 0
    advance = rep.file(f"{spec.path} (HF cache)", seen.size)
    got = copy_file(found, part, replace(seen, size=seen.size or found.stat().st_size), advance)
    rep.finish(advance)
    try:
        check(label, seen, got, git_oid_file(part) if seen.git_oid and not got.git_oid else None)
    except IntegrityError as exc:
        rep.note(f"[yellow]ignoring the Hugging Face cache copy of {spec.path}: {exc.one_line()}")
        part.unlink(missing_ok=True)
        return None, expected, "", "", 0
    return got, seen, f"hf-cache:{found}", "hf-cache", 0


def _from_sources(store: Store, key: str, sources: list[Source], card: ModelCard, pin_rev: str, spec: FileSpec,
                  expected: Expected, rep: Quiet, label: str, trust: bool) -> tuple[StreamHash, Expected, str, str, int]:
    """Fetch from each source in turn; a copy that fails its hash is deleted and fetched once more, and a source
    that corrupts it twice is passed over for the next one (refused when none is left)."""
    part = store.partial(key)
    errors: list[str] = []
    bad: IntegrityError | None = None
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
            except RemoteNotFoundError as exc:
                if not spec.required:
                    raise _Skip() from None
                errors.append(exc.message)
                break
            except FetchError as exc:
                errors.append(exc.message)  # the hint comes once, from the error raised below
                break
            finally:
                rep.finish(advance)
            try:
                seen = _checked(label, expected, got, part, trust)
            except UnvouchedError:
                store.drop_partial(key)
                raise
            except IntegrityError as exc:
                store.drop_partial(key)
                bad = IntegrityError(f"{exc.message} (served twice by {src.label}; the bad copy was deleted)")
                if attempt == 1:
                    rep.note(f"[yellow]{exc.one_line()}: deleted, fetching once more")
                continue
            return got.hash, seen, src.label, "resume" if had else "download", fetched[0]
        if bad is not None:
            errors.append(bad.message)
    if bad is not None:
        raise bad
    raise FetchError(f"could not fetch {label}: {'; '.join(errors) or 'no source available'}",
                     "rerun to resume; --mirror URL or --from DIR add sources")


def _checked(label: str, expected: Expected, got: Fetched, part: Path, trust: bool) -> Expected:
    """``expected`` completed by the response's own hash headers, after checking the bytes against it."""
    seen = vouch(expected, got.header_sha256, got.header_git_oid, "header", label)
    if not seen.vouched:
        if not trust:
            raise _unvouched(label)
        seen = replace(seen, authority="trust-on-first-use")
    check(label, seen, got.hash, git_oid_file(part) if seen.git_oid and not seen.sha256 and not got.hash.git_oid else None)
    return seen


class _Skip(Exception):
    """An optional file the source does not have."""
