"""Serving replicas on Ray Serve: each replica runs the very app of ``zoo serve``, so a client cannot tell one from many.

A replica loads its models through ``zoo.serve.load_models`` (``zoo.prepare``: downloaded from the team mirror
or found in its node's cache, verified, compiled, validated, warmed) with as many engine threads as CPUs Ray
gave it, builds the same Starlette app with the same dynamic batcher, and hands it to Ray Serve as its ASGI
ingress; Ray's HTTP proxy spreads requests over the replicas. Every response carries ``X-Zoo-Replica`` (which
replica answered); routes, bodies, errors and limits are those of ``zoo serve``, and ``/metrics`` is the
answering replica's own.

Two ways in: ``zoo serve --ray [--replicas N | --autoscale MIN:MAX]`` (``serve_on_ray``), or Ray's own CLI on an
application builder: ``serve run zoo.integrations.ray_serve:app model=obert-3l-80-quant replicas=2``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ray import serve

from zoo.config import Settings
from zoo.errors import InputError, ZooError
from zoo.integrations import assigned_threads, connect
from zoo.serve import ENGINES, ModelSpec, ServeOptions, bind, build, load_models

APP_NAME = "zoo"
REPLICA_HEADER = "x-zoo-replica"


@dataclass(frozen=True)
class Scale:
    """How many replicas: a fixed number, or autoscaling between ``autoscale[0]`` and ``autoscale[1]``."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None

    @classmethod
    def parse(cls, replicas: int | None, autoscale: str | None) -> Scale:
        """From ``--replicas N`` or ``--autoscale MIN:MAX`` (not both); malformed values are an ``InputError``."""
        if replicas is not None and autoscale is not None:
            raise InputError("give --replicas or --autoscale, not both")
        if autoscale is None:
            if replicas is not None and replicas < 1:
                raise InputError(f"--replicas must be at least 1, got {replicas}")
            return cls(replicas or 1)
        low, sep, high = autoscale.partition(":")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit() or not 0 <= int(low) <= int(high) or int(high) < 1:
            raise InputError(f"--autoscale {autoscale!r} is not MIN:MAX", "two whole numbers, 0 <= MIN <= MAX, MAX >= 1: e.g. 1:4")
        return cls(int(low), (int(low), int(high)))

    def options(self, target: int) -> dict[str, Any]:
        if self.autoscale is None:
            return {"num_replicas": self.replicas}
        low, high = self.autoscale
        return {"autoscaling_config": {"min_replicas": low, "max_replicas": high, "initial_replicas": max(low, 1),
                                       "target_ongoing_requests": target}}

    def describe(self) -> str:
        if self.autoscale is None:
            return f"{self.replicas} replica{'s' if self.replicas != 1 else ''}"
        return f"{self.autoscale[0]} to {self.autoscale[1]} replicas, autoscaled"


class _ReplicaHeader:
    """ASGI middleware: names the replica that answered in every HTTP response."""

    def __init__(self, app: Callable[..., Any], replica: str) -> None:
        self.app, self.header = app, (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        return await self.app(scope, receive, named)


class Replica:
    """One Ray Serve replica: the models of ``options`` loaded and warmed, and ``zoo serve``'s app over them."""

    def __init__(self, options: ServeOptions, settings: Settings) -> None:
        threads = assigned_threads(settings.threads or 1)
        replica = serve.get_replica_context().replica_id.unique_id
        say = lambda text: print(f"zoo replica {replica}: {text}", file=sys.stderr, flush=True)  # noqa: E731
        self.server = build(load_models(options.models, settings.with_(threads=threads), say), options)
        self.server.app.add_middleware(_ReplicaHeader, replica=replica)  # type: ignore[arg-type]

    def __serve_build_asgi_app__(self) -> Any:
        return self.server.app


def application(options: ServeOptions, settings: Settings, scale: Scale) -> Any:
    """The Ray Serve application: the ``Replica`` deployment, as many as ``scale`` says, ``settings.threads`` CPUs each."""
    threads = settings.threads or 1
    biggest = max((m.max_batch for m in options.models), default=32)
    deployment = serve.deployment(serve.ingress()(Replica), name="zoo-serve", ray_actor_options={"num_cpus": threads},
                                  max_ongoing_requests=min(options.max_queue, 2 * biggest), graceful_shutdown_timeout_s=options.timeout_s,
                                  **scale.options(target=biggest))
    return deployment.bind(options, settings)


def serve_on_ray(options: ServeOptions, settings: Settings, scale: Scale, say: Callable[[str], None]) -> None:
    """``zoo serve --ray``: join the cluster (``RAY_ADDRESS``, else a local one), deploy, print the banner, serve
    until SIGTERM/SIGINT, then delete the application (its replicas answer what they hold first)."""
    if not options.models:
        raise ZooError("name at least one model to serve", "e.g. `zoo serve --ray obert-3l-80-quant`, or --config FILE")
    from zoo.prepare import locate

    # names resolved and files fetched once, here, so mistakes are one line before Ray starts
    located = [locate(spec.model, settings, on_status=say).name for spec in options.models]
    port = options.port
    if port == 0:
        sock = bind(options.host, 0)
        port = sock.getsockname()[1]
        sock.close()
    ray = connect(None)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(http_options={"host": options.host, "port": port})
    say(f"deploying {', '.join(located)} on Ray Serve: {scale.describe()}, "
        f"{settings.threads or 1} CPU{'s' if (settings.threads or 1) != 1 else ''} each")
    try:
        serve.run(application(options, settings, scale), name=APP_NAME, route_prefix="/", blocking=False)
    except Exception as exc:  # noqa: BLE001 - Ray reports a replica that failed to start as a RuntimeError with its traceback
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise ZooError(f"the replicas did not start: {(lines[-1] if lines else type(exc).__name__)[:300]}",
                       "see the replica logs under Ray's session directory (/tmp/ray/session_latest/logs)") from None
    host = options.host
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    names = ", ".join(n + (f" (also {', '.join(m.aliases)})" if m.aliases else "") for n, m in zip(located, options.models, strict=True))
    sys.stdout.write(f"zoo serve: ready at {url}: {names} (Ray Serve, {scale.describe()})\n")
    sys.stdout.flush()
    _wait_for_signal()
    say("zoo serve: stopping (replicas answer what they hold)")
    serve.delete(APP_NAME)
    if not set(serve.status().applications) - {APP_NAME}:  # Serve holds nothing else: take its controller and proxy down too
        serve.shutdown()
    ray.shutdown()
    say("zoo serve: stopped")


def _wait_for_signal() -> None:
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def app(args: dict[str, str]) -> Any:
    """Application builder for Ray's CLI: ``serve run zoo.integrations.ray_serve:app model=NAME[,NAME...] [replicas=N |
    autoscale=MIN:MAX] [threads=N] [max_batch=N] [max_wait_ms=MS] [engine=auto|sparse|onnxruntime] [max_queue=N]
    [timeout=S]``; settings (home, mirrors, offline) from the environment of the process that runs it."""
    known = {"model", "replicas", "autoscale", "threads", "max_batch", "max_wait_ms", "engine", "max_queue", "timeout"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InputError(f"unknown argument {unknown[0]!r}", f"known: {', '.join(sorted(known))}")
    models = [m.strip() for m in str(args.get("model", "")).split(",") if m.strip()]
    if not models:
        raise InputError("name the model to serve: model=NAME (a catalog name or a directory; several comma-separated)")

    def number(key: str, kind: type, default: Any) -> Any:
        try:
            value = kind(args[key]) if key in args else default
        except ValueError:
            raise InputError(f"{key}={args[key]!r} is not a number") from None
        if value is not None and value <= 0:
            raise InputError(f"{key} must be positive, got {args[key]!r}")
        return value

    engine = args.get("engine", "auto")
    if engine not in ENGINES:
        raise InputError(f"engine={engine!r} is not one of {', '.join(ENGINES)}")
    spec = ModelSpec(model="", max_batch=number("max_batch", int, 32), max_wait_ms=number("max_wait_ms", float, 5.0), engine=engine)
    options = ServeOptions(max_queue=number("max_queue", int, 256), timeout_s=number("timeout", float, 60.0),
                           models=tuple(replace(spec, model=m) for m in models))
    settings = Settings.from_env(threads=number("threads", int, None))
    return application(options, settings, Scale.parse(number("replicas", int, None), args.get("autoscale")))
