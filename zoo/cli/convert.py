"""``zoo inspect`` and ``zoo export``: the converter's commands (registered on the main ``zoo`` group)."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zoo.cli.app import console, emit_json, json_option, settings
from zoo.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from zoo.convert.onnx_file import Exported


def _load(name_or_dir: str):  # noqa: ANN202
    from zoo.prepare import load_model, locate

    chosen = settings()
    source = locate(name_or_dir, chosen, fetch=False)
    return source, load_model(source, chosen)


@click.command("inspect")
@click.argument("model")
@json_option
def inspect_cmd(model: str, as_json: bool) -> None:
    """Per-layer shape, sparsity, block-4 conformity, dtype and quantization of MODEL's checkpoint.

    MODEL is a catalog name (installed) or a directory holding a Hub-style repo. Warns where the
    catalog disagrees with what the file holds.
    """
    from zoo.convert.inspect import inspect_model
    from zoo.render import inspect_table

    source, bert = _load(model)
    card = source.card
    report = inspect_model(bert, card.sparsity if card else None, card.pattern if card else None, card.quantized if card else None)
    if as_json:
        return emit_json({"model": source.label, "task": bert.task, **report.to_dict()})
    con = console()
    con.print(inspect_table(source.label, bert.config, bert.task, report.layers))
    con.print(f"encoder: {report.sparsity:.2f}% sparse, {report.pattern}, {'int8 QAT' if report.quantized else 'fp32'}")
    for w in report.warnings:
        sys.stderr.write(f"warning: {w}\n")


def _static_shape(value: str | None) -> tuple[int, int] | None:
    """``BxS`` (``1x128``) as (batch, sequence)."""
    if value is None:
        return None
    batch, _, seq = value.lower().partition("x")
    if not (batch.isdigit() and seq.isdigit()) or int(batch) < 1 or int(seq) < 1:
        raise InputError(f"--static wants BATCHxSEQUENCE, like 1x128; got {value!r}")
    return int(batch), int(seq)


def _provenance(source: Any, bert: Any) -> dict[str, str]:
    """Where the exported weights come from, for the graph's metadata_props: repo, commit, checkpoint sha256,
    measured sparsity and pattern, quantization, zoo version (install facts from the manifest when installed)."""
    from importlib.metadata import PackageNotFoundError, version

    from zoo.convert.inspect import inspect_model
    from zoo.convert.repo import weights_file
    from zoo.fetch.store import Store

    card = source.card
    manifest = Store(settings().home).manifest(card.name) if card else None
    checkpoint = weights_file(source.path)
    recorded = {f.path: f.sha256 for f in manifest.files} if manifest else {}
    digest = recorded.get(checkpoint.name)
    if digest is None:
        h = hashlib.sha256()
        with checkpoint.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
    report = inspect_model(bert)
    try:
        zoo_version = version("obert-zoo")
    except PackageNotFoundError:
        zoo_version = "unknown"
    meta = {"source_repo": manifest.repo if manifest else card.repo if card else str(source.path),
            "revision": manifest.revision if manifest else card.revision if card else "local",
            "commit": (manifest.commit or "") if manifest else "", "checkpoint": checkpoint.name, "checkpoint_sha256": digest,
            "sparsity": f"{report.sparsity:.2f}", "pattern": report.pattern,
            "quantization": (card.quantization if card else "qat-int8") if bert.quantized else "none", "zoo_version": zoo_version}
    if card:
        meta["zoo_name"] = card.name
    return meta


def _unused(graphs: Iterable[Exported]) -> list[str]:
    """The data files earlier exports left beside ``graphs`` that were removed, as the new graphs do not read them; one
    stderr line for each one left where it is (a link, a directory)."""
    from zoo.convert.onnx_file import text

    for graph in graphs:
        if graph.kept:
            sys.stderr.write(f"warning: {graph.kept}\n")
    return [text(str(graph.removed)) for graph in graphs if graph.removed]


def _removed_note(removed: list[str]) -> str:
    return f"; removed the unused {', '.join(removed)}" if removed else ""


@click.command("export")
@click.argument("model")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write: the ONNX file (default: NAME.onnx / NAME.int8.onnx in the current directory, never inside "
                   "the cache), or the directory with --format optimum.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "optimum"]), default="onnx", show_default=True,
              help="optimum: a directory ORTModelFor*.from_pretrained loads (model.onnx, model_quantized.onnx, config, tokenizer).")
@click.option("--static", metavar="BxS", help="Fixed input shapes (e.g. 1x128) for engines that need them; default dynamic.")
@click.option("--fp32", is_flag=True, help="For a QAT model, export the float graph instead of the int8 QDQ graph.")
@click.option("--external-data", is_flag=True,
              help="Weights in a data file beside the graph (NAME.onnx.data; model.onnx_data with --format optimum). "
                   "Graphs over protobuf's 2 GB limit always are; smaller ones are one file by default.")
@json_option
def export_cmd(model: str, output: Path | None, fmt: str, static: str | None, fp32: bool, external_data: bool, as_json: bool) -> None:
    """Export MODEL to ONNX (opset 17, dynamic batch_size and sequence_length), checked by onnx.checker.

    QAT models get an int8 graph with QuantizeLinear/DequantizeLinear at every fake-quant point. Every graph
    carries metadata_props: source repo, revision, commit, checkpoint sha256, sparsity, pattern, quantization,
    zoo version. The file is written one tensor at a time: memory stays near the model's own size.
    """
    from zoo.convert.onnx_export import export_optimum, write_onnx
    from zoo.convert.onnx_file import text

    start = time.perf_counter()
    shape = _static_shape(static)
    if fmt == "optimum" and output is None:
        raise InputError("--format optimum needs -o DIR, the directory to write")
    source, bert = _load(model)
    bert.require_finite()
    # paths (a repo directory's, the output's) as text that JSON, the state database and a terminal take, whatever bytes they hold
    meta, label = {k: text(v) for k, v in _provenance(source, bert).items()}, text(source.label)
    if fmt == "optimum":
        directory = export_optimum(bert, source.path, output, metadata=meta, static=shape,  # type: ignore[arg-type]
                                   external_data=external_data or None)
        files = directory.files
        result = {"model": label, "path": text(str(output)), "format": fmt, "files": files, "removed": _unused(directory.graphs),
                  "metadata": meta, "outputs": bert.output_names, "seconds": round(time.perf_counter() - start, 2)}
        if as_json:
            return emit_json(result)
        console().print(f"wrote {result['path']}: {', '.join(files)} (outputs {', '.join(bert.output_names)}) in {result['seconds']} s"
                        + _removed_note(result["removed"]))
        return None
    quantized = bert.quantized and not fp32
    out = output or Path.cwd() / f"{source.name}{'.int8' if quantized else ''}.onnx"
    done = write_onnx(bert, out, quantized=quantized, metadata=meta, static=shape, external_data=external_data or None)
    from zoo import state

    kind = "onnx-int8" if quantized else "onnx-fp32"
    for written, suffix in ((done, ""), (done.data, "-data")):
        if written is not None:
            state.record_artifact(label, kind + suffix, text(str(written.path.resolve())), written.sha256, written.size, home=settings().home)
    if done.removed is not None:
        state.forget_artifact(text(str(done.removed.resolve())), home=settings().home)
    data = done.data and {"path": text(str(done.data.path)), "sha256": done.data.sha256, "bytes": done.data.size}
    result = {"model": label, "path": text(str(out)), "format": fmt, "sha256": done.sha256, "quantized": quantized, "bytes": done.size,
              "data": data, "removed": _unused([done]), "outputs": bert.output_names, "metadata": meta,
              "seconds": round(time.perf_counter() - start, 2)}
    if as_json:
        return emit_json(result)
    weights = f", weights in {text(done.data.path.name)} ({done.data.size / 1e6:.1f} MB)" if done.data else ""
    console().print(f"wrote {result['path']} ({done.size / 1e6:.1f} MB{weights}, {'int8 QDQ' if quantized else 'fp32'}, "
                    f"outputs {', '.join(bert.output_names)}) sha256 {done.sha256[:16]}... in {result['seconds']} s"
                    + _removed_note(result["removed"]))


COMMANDS = [inspect_cmd, export_cmd]
