"""``zoo download``, ``zoo verify``, ``zoo cache ...`` and ``zoo mirror ...`` (registered on ``zoo``)."""

from __future__ import annotations

from pathlib import Path

import click

from zoo.cli.app import console, emit_json, fits, json_option, settings, wide_option
from zoo.config import Settings


def _mb(n: int | None) -> str:
    from zoo.render import megabytes

    return megabytes(n)


QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress bars (they are off anyway when stderr is not a terminal).")


@click.command("download")
@click.argument("names", nargs=-1, required=True)
@click.option("--revision", help="Branch, tag or commit to fetch (default: the catalog's, usually main).")
@click.option("--mirror", "mirrors", multiple=True, metavar="URL",
              help="Base URL of a mirror holding <repo>/<path>, tried before the Hub; repeatable (env: ZOO_MIRRORS).")
@click.option("--from", "from_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Install from a local directory (a repo, or a tree of <org>/<repo>/ from `zoo mirror pull`).")
@click.option("--offline", is_flag=True, default=None, help="Use no network (same as ZOO_OFFLINE=1 or HF_HUB_OFFLINE=1).")
@click.option("--dry-run", is_flag=True, help="Show what would be fetched and how big, then stop.")
@click.option("--refresh", is_flag=True, help="Ask the source again even when the model is installed and verified.")
@click.option("--no-validate", is_flag=True, help="Skip the install-time check of the sparse engine (outputs and latency).")
@click.option("--trust-on-first-use", "tofu", is_flag=True, default=None,
              help="Install files nothing vouches for (no catalog hash, pin, listing or hash header), pinning what arrives "
                   "(env: ZOO_TRUST_ON_FIRST_USE=1). Off by default: such files are refused.")
@QUIET
@wide_option
@json_option
def download_cmd(names: tuple[str, ...], revision: str | None, mirrors: tuple[str, ...], from_dir: Path | None,
                 offline: bool | None, dry_run: bool, refresh: bool, no_validate: bool, tofu: bool | None, quiet: bool,
                 wide: bool, as_json: bool) -> None:
    """Fetch catalog models, verify every file (size + sha256) and install them into the cache.

    \b
    Sources, in order: --from DIR alone if given; else --mirror URLs, then the Hugging Face Hub
    (HF_ENDPOINT, HF_TOKEN honoured). A file already in your Hugging Face cache is reused.
    Files with no hash in the catalog are checked against the source's hash and pinned on first
    use: later downloads must match. Interrupted downloads resume; a second download of an
    installed model touches no network.
    """
    from zoo.fetch.progress import reporter
    from zoo.fetch.sources import LocalDir
    from zoo.prepare import download

    chosen = settings(offline=offline, mirrors=mirrors or None, trust_on_first_use=tofu)
    sources = [LocalDir(from_dir)] if from_dir else None
    results = []
    for name in names:
        result = download(name, chosen, revision=revision, sources=sources, dry_run=dry_run, refresh=refresh,
                          reporter=reporter(quiet or as_json))
        results.append(result)
        if as_json:
            continue
        from zoo.render import install_table

        con = console(wide)
        con.print(install_table(result.files, fits(con)))
        if dry_run:
            todo = [f for f in result.files if f.action in ("download", "resume")]
            con.print(f"{result.name}: would fetch {len(todo)} of {len(result.files)} files, {_mb(sum(f.size or 0 for f in todo))}"
                      f" (commit {result.commit or 'unknown'})")
            continue
        if result.fetched:
            rate = result.fetched / max(result.seconds, 1e-9) / 1e6
            con.print(f"installed {result.name} -> {result.path} ({_mb(result.fetched)} fetched in {result.seconds:.1f} s, {rate:,.0f} MB/s)")
        else:
            con.print(f"{result.name} is installed and verified at {result.path} (nothing fetched)")
        if result.trusted_on_first_use:
            click.echo(f"WARNING: nothing vouched for {', '.join(result.trusted_on_first_use)} of {result.name}; installed "
                       "because trust on first use was asked for, and pinned: later downloads must match", err=True)
        pinned_now = [f.path for f in result.files if f.path in result.pinned and f.action != "cached"]
        if pinned_now:  # said once, when it happens (a cached file was pinned by an earlier download)
            con.print(f"[yellow]pinned on first use[/]: {', '.join(pinned_now)}: the catalog has no hash for these, so the "
                      "source's was trusted and recorded in state.db; later downloads must match it")
    verdicts = {}
    if not (dry_run or no_validate):
        from zoo.prepare import first_load

        for r in results:
            if r.fetched or first_load(r.name, chosen):
                verdicts[r.name] = _validate(r.name, chosen, None if as_json else console())
    if as_json:
        records = [{**r.to_dict(), "validation": verdicts.get(r.name)} for r in results]
        emit_json(records if len(records) > 1 else records[0])


def _validate(name: str, chosen: Settings, con: object) -> dict:
    """Convert, compile and validate an installed model; print the verdict line (and a warning if slow)."""
    from zoo.prepare import prepare

    verdict = prepare(name, chosen, fetch=False, validate_engine=True).verdict
    if verdict is None:  # pragma: no cover - validate_engine=True always yields one
        return {}
    if con is not None:
        con.print(verdict.line())  # type: ignore[attr-defined]
        if verdict.warning:
            con.print(f"[yellow]warning[/]: {verdict.warning}")  # type: ignore[attr-defined]
    return verdict.to_dict()


@click.command("verify")
@click.argument("names", nargs=-1)
@QUIET
@json_option
def verify_cmd(names: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Re-hash installed models (default: all) against their manifests; a bad file is removed, exit 1."""
    from zoo.errors import IntegrityError
    from zoo.fetch import verify
    from zoo.fetch.progress import reporter

    results = verify(list(names) or None, reporter(quiet or as_json), home=settings().home)
    if as_json:
        emit_json([r.to_dict() for r in results])
    else:
        con = console()
        if not results:
            con.print("nothing installed")
        for r in results:
            con.print(f"{r.name}: {'ok' if r.ok else '[red]FAILED[/]'} ({r.files} files, {_mb(r.bytes)})")
            for p in r.problems:
                con.print(f"  {p}")
    bad = [r.name for r in results if not r.ok]
    if bad:
        raise IntegrityError(f"verification failed for {', '.join(bad)}; the bad files were removed", f"run `zoo download {' '.join(bad)}`")


@click.group("cache")
def cache_group() -> None:
    """Inspect and clean the cache ($ZOO_HOME, default ~/.cache/obert-zoo)."""


@cache_group.command("list")
@wide_option
@json_option
def cache_list(wide: bool, as_json: bool) -> None:
    """Installed models (files, size, last verified) and partial downloads waiting to resume."""
    from zoo.fetch import report
    from zoo.render import cache_table

    rep = report(home=settings().home)
    if as_json:
        return emit_json(rep)
    con = console(wide)
    con.print(cache_table(rep.models, fits(con)) if rep.models else f"no models installed in {rep.home}")
    for p in rep.partials:
        con.print(f"partial: {p.get('model', '?')}/{p.get('file', '?')} {_mb(p['bytes'])} from {p.get('source', '?')} (resumes on download)")
    return None


@cache_group.command("size")
@json_option
def cache_size(as_json: bool) -> None:
    """Bytes used by blobs, of which unreferenced (freed by prune), and by partial downloads."""
    from zoo.fetch import report

    rep = report(home=settings().home)
    partial = sum(p["bytes"] for p in rep.partials)
    if as_json:
        return emit_json({"home": rep.home, "blobs": rep.blobs, "blob_bytes": rep.blob_bytes,
                          "unreferenced_bytes": rep.unreferenced_bytes, "partial_bytes": partial})
    console().print(f"{rep.home}: {_mb(rep.blob_bytes)} in {rep.blobs} blobs ({_mb(rep.unreferenced_bytes)} unreferenced), "
                    f"{_mb(partial)} in {len(rep.partials)} partial downloads")
    return None


@cache_group.command("rm")
@click.argument("names", nargs=-1, required=True)
@json_option
def cache_rm(names: tuple[str, ...], as_json: bool) -> None:
    """Uninstall models and free the disk they used (files another installed model shares stay)."""
    from zoo.fetch.cache import remove

    removed = [remove(n, home=settings().home) for n in names]
    if as_json:
        return emit_json(removed)
    for r in removed:
        shared = r["files"] - r["freed_blobs"]
        console().print(f"removed {r['name']} ({r['files']} files): {_mb(r['freed_bytes'])} freed"
                        + (f"; {shared} files kept (another installed model uses them)" if shared > 0 else ""))
    return None


@cache_group.command("prune")
@click.option("--keep-partial", is_flag=True, help="Keep partial downloads (they resume).")
@json_option
def cache_prune(keep_partial: bool, as_json: bool) -> None:
    """Delete blobs no installed model uses, and partial downloads."""
    from zoo.fetch.store import Store

    count, freed = Store(settings().home).prune(partials=not keep_partial)
    if as_json:
        return emit_json({"files": count, "bytes": freed})
    console().print(f"pruned {count} files, {_mb(freed)} freed")
    return None


@click.group("mirror")
def mirror_group() -> None:
    """Serve a directory of repos as a Hub-compatible endpoint, or fill one from the cache."""


@mirror_group.command("serve")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8808, show_default=True, help="Port (0 picks a free one).")
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def mirror_serve(root: Path, host: str, port: int, verbose: bool) -> None:
    """Serve ROOT/<org>/<repo>/ as a Hub endpoint: HF_ENDPOINT=http://HOST:PORT works for zoo and huggingface_hub."""
    from zoo.fetch.mirror import serve

    server = serve(root, host, port, verbose)
    repos = server.catalog.repos()
    click.echo(server.url)  # stdout, flushed: `URL=$(zoo mirror serve DIR --port 0 | head -1)` works in scripts
    click.echo(f"serving {len(repos)} repo{'s' if len(repos) != 1 else ''} from {server.catalog.root} at {server.url}", err=True)
    if not repos:
        click.echo(f"note: no repos found: they are served from {server.catalog.root}/<org>/<repo>/", err=True)
    click.echo(f"use: HF_ENDPOINT={server.url} zoo download NAME   (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()


@mirror_group.command("pull")
@click.argument("names", nargs=-1, required=True)
@click.option("--to", "to", type=click.Path(path_type=Path), required=True, help="Directory to fill with <org>/<repo>/.")
@json_option
def mirror_pull(names: tuple[str, ...], to: Path, as_json: bool) -> None:
    """Copy installed, verified models into DIR (with their hashes) for `zoo download --from` or `zoo mirror serve`."""
    from zoo.fetch.mirror import pull

    done = pull(list(names), to)
    if as_json:
        return emit_json(done)
    for d in done:
        console().print(f"{d['name']} -> {d['path']} ({d['files']} files, {_mb(d['bytes'])})")
    return None


COMMANDS = [download_cmd, verify_cmd, cache_group, mirror_group]
