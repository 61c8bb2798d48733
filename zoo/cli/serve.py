"""``zoo serve``: an inference server (Open Inference Protocol + a task route) for catalog models or directories."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import click

from zoo.cli.app import THREADS, settings
from zoo.errors import InputError, ZooError


def _token(token_file: Path | None) -> str | None:
    if token_file is None:
        return os.environ.get("ZOO_SERVE_TOKEN") or None
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ZooError(f"cannot read the token file {token_file}: {getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise ZooError(f"the token file {token_file} is empty")
    return token


@click.command("serve")
@click.argument("models", nargs=-1)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file: server keys (host, port, max_batch, max_wait_ms, max_queue, timeout, drain_timeout, engine, max_body_mb) "
                   "and [[models]] tables.")
@click.option("--host", default=None, help="Address to listen on  [default: 127.0.0.1; anything else exposes the server]")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port; 0 picks a free one (printed)  [default: 8000]")
@THREADS
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Most encodings (questions' windows, texts) merged into one engine call.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Longest a request waits for others to share its engine call.")
@click.option("--max-queue", type=click.IntRange(min=1), default=None, help="Requests queued per model before 503  [default: 256]")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.01), default=None, help="Seconds before a request gets 504  [default: 60]")
@click.option("--drain-timeout", "drain_timeout_s", type=click.FloatRange(min=0), default=None,
              help="Seconds SIGTERM/Ctrl-C waits for requests in flight; any still running then (or at a second signal) get 503 and the "
                   "exit status is 1  [default: 30]")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=None, help="Largest request body, in MB  [default: 8]")
@click.option("--engine", type=click.Choice(["auto", "sparse", "onnxruntime"]), default="auto", show_default=True,
              help="auto: the sparse engine for sparse models, onnxruntime for dense ones.")
@click.option("--offline", is_flag=True, default=None, help="Serve only what is installed; no network at all.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Require 'Authorization: Bearer <token>' (token in this file; env ZOO_SERVE_TOKEN) on all but health and metrics.")
@click.option("--json-logs", is_flag=True, help="Access log as JSON lines on stderr.")
@click.option("--ray", "on_ray", is_flag=True,
              help="Serve replicas on Ray Serve (the cluster in $RAY_ADDRESS, else a local one); --threads CPUs each [default: 1].")
@click.option("--replicas", type=click.IntRange(min=1), default=None, help="With --ray: this many replicas  [default: 1]")
@click.option("--autoscale", metavar="MIN:MAX", default=None, help="With --ray: autoscale between MIN and MAX replicas.")
def serve_cmd(models: tuple[str, ...], config_file: Path | None, host: str | None, port: int | None, threads: int | None,
              max_batch: int, max_wait_ms: float, max_queue: int | None, timeout_s: float | None, drain_timeout_s: float | None,
              max_body_mb: float | None, engine: str, offline: bool | None, token_file: Path | None, json_logs: bool, on_ray: bool,
              replicas: int | None, autoscale: str | None) -> None:
    """Serve MODELS (catalog names or directories) over HTTP until Ctrl-C or SIGTERM.

    \b
    Each model is downloaded if needed, verified, converted, compiled, validated and warmed
    before the port opens. Routes (Open Inference Protocol, KServe v2, so tritonclient works):
      GET  /v2/health/live  /v2/health/ready  /v2  /v2/models/NAME  /v2/models/NAME/ready
      POST /v2/models/NAME/infer   BYTES question+context (or text [+text_pair]), or INT64 input_ids
      POST /models/NAME            {"inputs": {"question": ..., "context": ...}, "parameters": {"top_k": 3}}
      GET  /metrics                Prometheus
    \b
    Examples:
      zoo serve obert-3l-80-quant --port 8000
      curl -s localhost:8000/models/obert-3l-80-quant -d '{"inputs": {"question": "Who?", "context": "Ann did."}}'
      zoo serve --config serve.toml --token-file ~/.zoo-token
      RAY_ADDRESS=head:6379 zoo serve --ray --replicas 4 --threads 2 obert-3l-80-quant
    """
    from zoo.serve import ModelSpec, ServeOptions, read_config, serve

    defaults = ModelSpec(model="", max_batch=max_batch, max_wait_ms=max_wait_ms, engine=engine)
    server_keys, from_file = read_config(config_file, defaults) if config_file else ({}, [])
    specs = [*from_file, *(replace(defaults, model=m) for m in models)]
    options = ServeOptions(
        host=host or server_keys.get("host", "127.0.0.1"), port=port if port is not None else int(server_keys.get("port", 8000)),
        max_queue=max_queue or int(server_keys.get("max_queue", 256)),
        timeout_s=timeout_s or float(server_keys.get("timeout", 60.0)),
        drain_timeout_s=drain_timeout_s if drain_timeout_s is not None else float(server_keys.get("drain_timeout", 30.0)),
        max_body_bytes=int((max_body_mb or float(server_keys.get("max_body_mb", 8))) * 1e6),
        token=_token(token_file), json_logs=json_logs, models=tuple(specs))
    say = lambda text: click.echo(text, err=True)  # noqa: E731
    if on_ray:
        if drain_timeout_s is not None or "drain_timeout" in server_keys:
            raise InputError("--drain-timeout is for the built-in server; on Ray Serve a replica drains for up to --timeout")
        from zoo.integrations import ray_module

        ray_module()
        from zoo.integrations.ray_serve import Scale, serve_on_ray

        return serve_on_ray(options, settings(offline=offline, threads=threads), Scale.parse(replicas, autoscale), say)
    if replicas is not None or autoscale is not None:
        raise InputError("--replicas and --autoscale need --ray")
    serve(options, settings(offline=offline, threads=threads), say)
    return None


COMMANDS = [serve_cmd]
