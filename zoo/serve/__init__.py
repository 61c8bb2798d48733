"""``zoo serve``: the catalog's models behind the Open Inference Protocol (KServe v2), with dynamic batching.

Models come through the same verified path as ``zoo.load`` (``zoo.prepare``); every model is loaded,
validated and warmed before the port opens, so a listening server is a ready one. Uvicorn runs the
Starlette app on a socket bound here (``--port 0`` picks a free port, printed in the banner); SIGTERM
or Ctrl-C stops accepting, lets requests in flight finish, drains the queues and exits 0. Requests still
running after ``drain_timeout_s`` are cut (answered 503) and the exit status is 1, with one line saying so;
a second signal during the drain cuts them at once, the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zoo.config import Settings
from zoo.errors import ZooError

ENGINES = ("auto", "sparse", "onnxruntime")


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve: a catalog name or a directory, the extra names it answers to, its batching."""

    model: str
    aliases: tuple[str, ...] = ()
    max_batch: int = 32
    max_wait_ms: float = 5.0
    engine: str = "auto"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    max_queue: int = 256
    timeout_s: float = 60.0
    drain_timeout_s: float = 30.0
    max_body_bytes: int = 8 << 20
    token: str | None = None
    json_logs: bool = False
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)


def _positive(table: dict[str, Any], key: str, where: str, kind: type = int, minimum: float = 1) -> Any:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)) or value < minimum:
        raise ZooError(f"{where}: '{key}' must be a {'whole ' if kind is int else ''}number >= {minimum:g}, got {value!r}")
    return kind(value)


def read_config(path: Path, defaults: ModelSpec) -> tuple[dict[str, Any], list[ModelSpec]]:
    """A serve config file (TOML): top-level server keys, then ``[[models]]`` tables; ``ZooError`` when malformed."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ZooError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ZooError(f"{path} is not valid TOML: {exc}") from None
    server_keys = {"host", "port", "max_batch", "max_wait_ms", "max_queue", "timeout", "drain_timeout", "engine", "max_body_mb"}
    unknown = set(doc) - server_keys - {"models"}
    if unknown:
        raise ZooError(f"{path}: unknown key {sorted(unknown)[0]!r}", f"known: {', '.join(sorted(server_keys | {'models'}))}")
    if "drain_timeout" in doc:
        _positive(doc, "drain_timeout", str(path), float, 0)
    base = defaults
    if "max_batch" in doc:
        base = replace(base, max_batch=_positive(doc, "max_batch", str(path)))
    if "max_wait_ms" in doc:
        base = replace(base, max_wait_ms=_positive(doc, "max_wait_ms", str(path), float, 0))
    if "engine" in doc:
        base = replace(base, engine=doc["engine"])
    models = []
    tables = doc.get("models", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ZooError(f"{path}: 'models' must be [[models]] tables")
    for i, table in enumerate(tables, 1):
        where = f"{path}: models #{i}"
        extra = set(table) - {"model", "aliases", "max_batch", "max_wait_ms", "engine"}
        if extra or not isinstance(table.get("model"), str):
            raise ZooError(f"{where}: needs 'model' (a name or directory)" + (f"; unknown key {sorted(extra)[0]!r}" if extra else ""))
        aliases = table.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise ZooError(f"{where}: 'aliases' must be a list of names")
        spec = replace(base, model=table["model"], aliases=tuple(aliases))
        if "max_batch" in table:
            spec = replace(spec, max_batch=_positive(table, "max_batch", where))
        if "max_wait_ms" in table:
            spec = replace(spec, max_wait_ms=_positive(table, "max_wait_ms", where, float, 0))
        if "engine" in table:
            spec = replace(spec, engine=table["engine"])
        models.append(spec)
    for spec in models:
        if spec.engine not in ENGINES:
            raise ZooError(f"{path}: engine {spec.engine!r} is not one of {', '.join(ENGINES)}")
    return {k: doc[k] for k in server_keys & set(doc) - {"max_batch", "max_wait_ms", "engine"}}, models


@dataclass(frozen=True)
class Loaded:
    """A model ready to serve: its spec, its warm pipeline, what loading took and the verdict when one was made."""

    spec: ModelSpec
    name: str
    pipeline: Any
    seconds: float
    verdict: dict[str, Any] | None


def load_models(specs: tuple[ModelSpec, ...], settings: Settings, say: Callable[[str], None]) -> list[Loaded]:
    """Prepare, validate and warm every model; a name used twice is an error."""
    from zoo.prepare import pipeline, prepare

    loaded: list[Loaded] = []
    seen: dict[str, str] = {}
    for spec in specs:
        started = time.perf_counter()
        verdicts: list[Any] = []
        prepared = prepare(spec.model, settings, engine=spec.engine, on_status=say, on_verdict=verdicts.append)
        pipe = pipeline(prepared)
        name = prepared.name
        for n in (name, *spec.aliases):
            if n in seen:
                raise ZooError(f"the name {n!r} is used by two served models ({seen[n]} and {spec.model})")
            seen[n] = spec.model
        _warm(pipe)
        seconds = time.perf_counter() - started
        verdict = verdicts[0].to_dict() if verdicts else None
        say(f"loaded {name} ({pipe.task}, {type(pipe.engine).__name__}, {prepared.threads} threads) in {seconds:.1f} s"
            + (f": {verdicts[0].line()}" if verdicts else ""))
        loaded.append(Loaded(spec, name, pipe, seconds, verdict))
    return loaded


def _warm(pipe: Any) -> None:
    if pipe.task == "question-answering":
        pipe(question="What warms the engine?", context="A first call warms the engine.")
    else:
        pipe("A first call warms the engine.")


def build(loaded: list[Loaded], options: ServeOptions) -> Any:
    """The ``Server`` (ASGI app + state) for loaded models, each with its batcher and metrics."""
    from zoo.serve.app import Limits, Server
    from zoo.serve.batcher import Batcher
    from zoo.serve.metrics import Metrics
    from zoo.serve.models import ServedModel

    metrics = Metrics()
    models = []
    for m in loaded:
        batcher = Batcher(m.pipeline.forward, m.spec.max_batch, m.spec.max_wait_ms / 1000, options.max_queue,
                          on_batch=lambda stats, name=m.name: metrics.observe_batch(name, stats))
        metrics.model_loaded(m.name, m.seconds, m.verdict)
        models.append(ServedModel(m.name, m.pipeline, batcher, m.spec.aliases, m.spec.max_batch, m.spec.max_wait_ms, m.seconds, m.verdict))
    return Server(models, Limits(options.max_body_bytes, options.timeout_s, options.token, options.json_logs), metrics)


def _uvicorn_server() -> type:
    import uvicorn

    class Drain(uvicorn.Server):
        """Uvicorn's server, but SIGTERM/SIGINT end in exit 0 after the drain (uvicorn re-raises the signal), the drain
        says how many requests it waits for, and a second signal cuts the requests in flight at once. Uvicorn's own
        second Ctrl-C (``force_exit``) skips the app's shutdown, which asyncio then cancels with a traceback; here the
        requests are cancelled instead (the app answers them 503) and the shutdown runs as after any drain."""

        def __init__(self, config: uvicorn.Config, on_stopping: Callable[[], None], on_cut_short: Callable[[], None]) -> None:
            super().__init__(config)
            self.on_stopping, self.on_cut_short = on_stopping, on_cut_short
            self.second_signal = asyncio.Event()

        @contextlib.contextmanager
        def capture_signals(self):  # noqa: ANN202
            loop = asyncio.get_running_loop()

            def stop(signum: int, frame: Any) -> None:
                if self.should_exit:
                    loop.call_soon_threadsafe(self.second_signal.set)
                self.should_exit = True

            previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            self.on_stopping()
            drain = asyncio.ensure_future(super().shutdown(sockets))
            second = asyncio.ensure_future(self.second_signal.wait())
            await asyncio.wait((drain, second), return_when=asyncio.FIRST_COMPLETED)
            second.cancel()
            if self.second_signal.is_set() and self.server_state.tasks:
                self.on_cut_short()
                for task in list(self.server_state.tasks):
                    task.cancel()
            await drain

    return Drain


def _quiet_uvicorn_cancel_line(record: logging.LogRecord) -> bool:
    """Drop uvicorn's own line about cancelling at the drain deadline: ``serve`` says it in its words."""
    return "timeout graceful shutdown exceeded" not in record.getMessage()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: a free one); a port in use is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ZooError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "pick another --port (0 picks a free one)") from None
    sock.listen(2048)
    return sock


def serve(options: ServeOptions, settings: Settings, say: Callable[[str], None]) -> None:
    """Load, bind, serve until SIGTERM/SIGINT, drain. The banner line goes to stdout, flushed."""
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ZooError(f"zoo serve needs {exc.name}, which is not installed", "pip install 'obert-zoo[serve]'") from None

    if not options.models:
        raise ZooError("name at least one model to serve", "e.g. `zoo serve obert-3l-80-quant`, or --config FILE")
    models = load_models(options.models, settings, say)
    server = build(models, options)
    sock = bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    drain = options.drain_timeout_s
    config = uvicorn.Config(server.app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=5,
                            timeout_graceful_shutdown=drain, limit_concurrency=options.max_queue + 64, server_header=False)
    logging.getLogger("uvicorn.error").addFilter(_quiet_uvicorn_cancel_line)

    def stopping() -> None:
        server.stopping = True
        say(f"zoo serve: stopping: waiting up to {drain:g} s for {_requests(server.in_flight)} in flight")

    def cut_short() -> None:
        server.cut_short = True

    names = ", ".join(m.name + (f" (also {', '.join(m.spec.aliases)})" if m.spec.aliases else "") for m in models)
    sys.stdout.write(f"zoo serve: ready at {url}: {names}\n")
    sys.stdout.flush()
    _uvicorn_server()(config, stopping, cut_short).run(sockets=[sock])
    if server.cut_short:
        raise ZooError(f"stopped at once (second signal), cutting {_requests(server.cut)} in flight (answered 503)",
                       "one SIGTERM/Ctrl-C waits up to --drain-timeout for them")
    if server.cut:
        raise ZooError(f"stopped after the {drain:g} s drain timeout, cutting {_requests(server.cut)} still running "
                       "(answered 503)", "--drain-timeout sets how long SIGTERM waits")
    say("zoo serve: stopped (requests in flight were answered)")


def _requests(n: int) -> str:
    return f"{n} request{'s' * (n != 1)}"
