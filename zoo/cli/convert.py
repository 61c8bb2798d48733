"""``zoo inspect`` and ``zoo export``: the converter's commands (registered on the main ``zoo`` group)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from zoo.cli.app import console, emit_json, json_option, settings


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


@click.command("export")
@click.argument("model")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to write the ONNX file (default: next to the checkpoint).")
@click.option("--fp32", is_flag=True, help="For a QAT model, export the float graph instead of the int8 QDQ graph.")
@json_option
def export_cmd(model: str, output: Path | None, fp32: bool, as_json: bool) -> None:
    """Export MODEL to ONNX (opset 17, dynamic batch and sequence), checked by onnx.checker.

    QAT models get an int8 graph with QuantizeLinear/DequantizeLinear at every fake-quant point.
    """
    from zoo.convert.onnx_export import export

    start = time.perf_counter()
    source, bert = _load(model)
    quantized = bert.quantized and not fp32
    out = output or source.path / ("model.int8.onnx" if quantized else "model.onnx")
    digest = export(bert, out, quantized=quantized)
    from zoo import state

    state.record_artifact(source.label, "onnx-int8" if quantized else "onnx-fp32", str(out.resolve()), digest, out.stat().st_size,
                          home=settings().home)
    result = {"model": source.label, "path": str(out), "sha256": digest, "quantized": quantized, "bytes": out.stat().st_size,
              "outputs": bert.output_names, "seconds": round(time.perf_counter() - start, 2)}
    if as_json:
        return emit_json(result)
    console().print(f"wrote {out} ({result['bytes'] / 1e6:.1f} MB, {'int8 QDQ' if quantized else 'fp32'}, "
                    f"outputs {', '.join(bert.output_names)}) sha256 {digest[:16]}... in {result['seconds']} s")


COMMANDS = [inspect_cmd, export_cmd]
