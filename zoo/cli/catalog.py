"""``zoo list``, ``show``, ``search``, ``recipe`` and ``zoo catalog ...``: the catalog's commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from zoo.cli.app import console, emit_json, fits, json_option, settings, wide_option
from zoo.errors import ZooError


def _print_cards(cards: list, as_json: bool, wide: bool = False) -> None:
    if as_json:
        return emit_json(cards)
    from zoo.render import model_table

    con = console(wide)
    con.print(model_table(cards, fits(con)))


@click.command("list")
@click.option("--layers", type=int, help="Only models with this many encoder layers (12, 6, 3).")
@click.option("--sparsity", type=float, help="Only models with this target sparsity in percent (0 = dense).")
@click.option("--pattern", type=click.Choice(["dense", "unstructured", "block4"]), help="Only this sparsity pattern.")
@click.option("--quant/--no-quant", default=None, help="Only int8 QAT models, or only fp32 ones.")
@click.option("--task", type=click.Choice(["question-answering", "text-classification", "fill-mask"]), help="Only this task.")
@click.option("--min-f1", type=float, help="Only models with a published SQuAD F1 of at least this.")
@click.option("--sort", type=click.Choice(["name", "f1", "latency", "size"]), default="name", show_default=True,
              help="f1: best first; latency: least encoder work first; size: smallest checkpoint first.")
@wide_option
@json_option
def list_cmd(layers: int | None, sparsity: float | None, pattern: str | None, quant: bool | None, task: str | None,
             min_f1: float | None, sort: str, wide: bool, as_json: bool) -> None:
    """List catalog entries, optionally filtered and sorted."""
    from zoo.catalog import Filters, list_models

    filters = Filters(layers=layers, sparsity=sparsity, pattern=pattern, quantized=quant, task=task, min_f1=min_f1)
    _print_cards(list_models(filters, sort=sort, settings=settings()), as_json, wide)


@click.command()
@click.argument("name")
@wide_option
@json_option
def show(name: str, wide: bool, as_json: bool) -> None:
    """Everything about one entry: shape, sparsity, accuracy with sources, files, aliases, recipe.

    NAME is a catalog name, a Hub repo id (or URL) or a SparseZoo stub.
    """
    from zoo.catalog import resolve

    card = resolve(name, settings())
    if as_json:
        return emit_json(card)
    from zoo.render import card_view

    con = console(wide)
    con.print(card_view(card, fits(con)))


@click.command("search")
@click.argument("words", nargs=-1, required=True)
@wide_option
@json_option
def search_cmd(words: tuple[str, ...], wide: bool, as_json: bool) -> None:
    """Find entries whose name, alias, description or tags contain every one of WORDS (`zoo search block4 qat`)."""
    from zoo.catalog import search

    _print_cards(search(" ".join(words), settings=settings()), as_json, wide)


@click.command()
@click.argument("name")
@json_option
def recipe(name: str, as_json: bool) -> None:
    """Print an entry's training recipe as SparseML-style YAML."""
    from zoo.catalog import resolve
    from zoo.catalog.recipe import to_yaml

    card = resolve(name, settings())
    if as_json:
        return emit_json({"name": card.name, "recipe": card.recipe})
    sys.stdout.write(to_yaml(card))


@click.group("catalog")
def catalog_group() -> None:
    """Build and check registry.db from stubs/, push a team catalog to a database server, add your own models."""


def _stubs_dir(stubs: Path | None) -> Path:
    from zoo import config

    path = stubs or config.project_root() / "stubs"
    if not path.is_dir():
        raise ZooError(f"stubs directory not found: {path}", "pass --stubs DIR (a source checkout has stubs/)")
    return path


STUBS_OPT = click.option("--stubs", type=click.Path(path_type=Path), help="Directory of *.toml stubs (default: the checkout's stubs/).")


@catalog_group.command("build")
@STUBS_OPT
@click.option("--out", type=click.Path(path_type=Path), help="SQLite file to write (default: the checkout's registry.db).")
@json_option
def catalog_build(stubs: Path | None, out: Path | None, as_json: bool) -> None:
    """Validate every stub and compile them into registry.db (same stubs, same bytes)."""
    from zoo import config
    from zoo.catalog.build import build

    src = _stubs_dir(stubs)
    target = out or config.project_root() / "registry.db"
    count = build(src, target)
    if as_json:
        return emit_json({"models": count, "path": target})
    console().print(f"built {target} with {count} models from {src}")


@catalog_group.command("check")
@STUBS_OPT
@click.option("--db", type=click.Path(path_type=Path), help="Catalog file to check (default: the bundled registry.db).")
@json_option
def catalog_check(stubs: Path | None, db: Path | None, as_json: bool) -> None:
    """Validate the stubs and exit 1 when registry.db was not built from them as they are now."""
    from zoo import config
    from zoo.catalog.build import is_fresh
    from zoo.catalog.schema import load_stubs

    src = _stubs_dir(stubs)
    count = len(load_stubs(src))
    target = db or config.bundled_registry()
    fresh = is_fresh(target, src)
    if as_json:
        emit_json({"fresh": fresh, "path": target, "stubs": count})
    elif fresh:
        console().print(f"{target} is up to date with {count} stubs in {src}")
    if not fresh:
        raise ZooError(f"{target} is stale against {src}", "run `zoo catalog build`")


@catalog_group.command("push")
@click.argument("url")
@click.option("--stubs", "dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A directory of your team's own *.toml stubs (repeatable), pushed with the bundled ones.")
@click.option("--bundled/--no-bundled", default=True, show_default=True, help="Also push the catalog's own stubs/.")
@json_option
def catalog_push(url: str, dirs: tuple[Path, ...], bundled: bool, as_json: bool) -> None:
    """Create or migrate the catalog tables at URL (any SQLAlchemy URL, e.g. postgresql://user@host/db) and
    upsert the bundled entries plus --stubs DIR, in one transaction. Pushing the same stubs again changes nothing.

    Then point everybody's zoo at it: export ZOO_CATALOG_URL=URL (passwords: ~/.pgpass or PGPASSFILE).
    """
    from zoo.catalog.push import push, stub_files

    for d in dirs:
        if not d.is_dir():
            raise ZooError(f"stubs directory not found: {d}")
    texts = stub_files(([_stubs_dir(None)] if bundled else []) + list(dirs))
    if not texts:
        raise ZooError("no stubs to push", "give --stubs DIR or leave --bundled on")
    result = push(url, texts)
    if as_json:
        return emit_json(result)
    migrated = f", migrated from schema version {result.migrated_from}" if result.migrated_from is not None else ""
    console().print(f"pushed to {result.url}: {result.models} models ({len(result.added)} added, {len(result.updated)} updated, "
                    f"{result.unchanged} unchanged), schema version {result.schema_version}, revision {result.revision}{migrated}")


@catalog_group.command("add")
@click.argument("source", metavar="DIR_OR_HUB_ID")
@click.option("--name", required=True, help="The catalog name of the new entry (lower-case letters, digits, '.', '-').")
@click.option("--task", type=click.Choice(["question-answering", "text-classification", "fill-mask"]),
              help="Its task (default: from the config's architecture).")
@click.option("--dataset", default="custom", show_default=True, help="What it was fine-tuned and evaluated on.")
@click.option("--description", help="One line for listings (default: shape, sparsity and quantization measured).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=VALUE:SOURCE", help="A published number, e.g. f1=88.1:my-eval (repeatable).")
@click.option("--repo", help="The repo id the files are fetched as (default: the Hub id, else local/NAME).")
@click.option("--revision", default="main", show_default=True)
@click.option("--to", "to", metavar="URL", help="Push the entry to this catalog database instead of writing $ZOO_HOME/stubs/NAME.toml.")
@json_option
def catalog_add(source: str, name: str, task: str | None, dataset: str, description: str | None, metrics: tuple[str, ...],
                repo: str | None, revision: str, to: str | None, as_json: bool) -> None:
    """Add your own checkpoint: inspect it (shape, sparsity, pattern, int8 QAT, file hashes) and write a validated stub.

    \b
    Then: zoo download NAME --from DIR   (or from a mirror / the Hub), zoo run NAME ..., zoo serve NAME
    """
    from zoo.enroll import Metric, enroll

    done = enroll(source, name, settings(), task=task, dataset=dataset, description=description,
                  metrics=[Metric.parse(m) for m in metrics], repo=repo, revision=revision, to=to)
    if as_json:
        return emit_json(done)
    where = f"pushed to {done.pushed_to}" if done.pushed_to else f"wrote {done.stub}"
    console().print(f"{where}: {done.name} ({done.layers} layers, {done.pattern} {done.sparsity:g}% sparse, "
                    f"{done.quantization}, {done.files} files hashed) as repo {done.repo}")


COMMANDS = [list_cmd, show, search_cmd, recipe, catalog_group]
