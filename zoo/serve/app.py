"""The ASGI application (Starlette): Open Inference Protocol routes, a Hugging Face-shaped task route, metrics.

Every error is a JSON body ``{"error": "..."}`` with the status that names it (400 malformed input, 401 no
or wrong token, 404 unknown model, 413 body too large, 503 queue full with ``Retry-After``, 504 timed out);
an unexpected failure is a 500 whose body says only "internal error" (the log line names the exception).
A request still running when the server gives up draining (``--drain-timeout``, or a second signal) is answered 503 too.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zoo.errors import InputError, ZooError
from zoo.serve.batcher import QueueFullError
from zoo.serve.metrics import Metrics
from zoo.serve.models import ServedModel
from zoo.serve.protocol import HEADER, encode_response, parse_infer

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/metrics")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 << 20
    timeout_s: float = 60.0
    token: str | None = None
    json_logs: bool = False


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Server:
    """The models by name (and alias), the limits, the metrics; ``app`` is what uvicorn runs."""

    def __init__(self, models: list[ServedModel], limits: Limits, metrics: Metrics) -> None:
        self.models = models
        self.by_name = {n: m for m in models for n in (m.name, *m.aliases)}
        self.limits, self.metrics = limits, metrics
        self.ready = False
        self.in_flight = 0  # requests received and not yet answered
        self.stopping = False  # set when SIGTERM/SIGINT starts the drain
        self.cut_short = False  # set when a second signal ends the drain at once
        self.cut = 0  # requests still running at the drain deadline (or the second signal), cancelled and answered 503
        routes = [
            Route("/v2/health/live", self.live), Route("/v2/health/ready", self.health_ready), Route("/v2", self.server_metadata),
            Route("/v2/models/{name:path}/versions/{version}/ready", self.model_ready),
            Route("/v2/models/{name:path}/versions/{version}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{name:path}/versions/{version}", self.model_metadata),
            Route("/v2/models/{name:path}/ready", self.model_ready), Route("/v2/models/{name:path}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{name:path}", self.model_metadata), Route("/models/{name:path}", self.task_route, methods=["POST"]),
            Route("/metrics", self.metrics_route),
        ]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)
        self.app.add_middleware(_Guard, server=self)  # type: ignore[arg-type]

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette):  # noqa: ANN202
        for m in self.models:
            m.batcher.start()
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            await asyncio.gather(*(m.batcher.stop() for m in self.models))

    def model(self, request: Request) -> ServedModel:
        name = request.path_params["name"]
        model = self.by_name.get(name)
        if model is None:
            raise HTTPError(404, f"unknown model {name!r}; serving: {', '.join(sorted(self.by_name))}")
        return model

    async def body(self, request: Request) -> bytes:
        cap = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise HTTPError(413, f"request body of {declared} bytes is over the {cap}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise HTTPError(413, f"request body is over the {cap}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def timed(self, model: ServedModel, work: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(work, self.limits.timeout_s)
        except TimeoutError:
            raise HTTPError(504, f"{model.name}: no answer within {self.limits.timeout_s:g} s") from None
        except QueueFullError:
            raise HTTPError(503, f"{model.name}: the queue is full, retry shortly", {"Retry-After": "1"}) from None

    # -- routes --------------------------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def health_ready(self, request: Request) -> Response:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        from importlib.metadata import version

        return JSONResponse({"name": "obert-zoo", "version": version("obert-zoo"), "extensions": ["binary_tensor_data"],
                             "models": sorted(m.name for m in self.models)})

    async def model_metadata(self, request: Request) -> Response:
        return JSONResponse(self.model(request).metadata())

    async def model_ready(self, request: Request) -> Response:
        self.model(request)
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def infer(self, request: Request) -> Response:
        model = self.model(request)
        parsed = parse_infer(await self.body(request), request.headers.get(HEADER))
        tensors = await self.timed(model, model.infer(parsed))
        body, headers = encode_response(model.name, parsed, tensors)
        return Response(body, headers=headers)

    async def task_route(self, request: Request) -> Response:
        model = self.model(request)
        try:
            doc = json.loads(await self.body(request))
        except (ValueError, RecursionError):
            raise InputError("request body is not valid JSON") from None
        if not isinstance(doc, dict) or "inputs" not in doc:
            raise InputError('send {"inputs": {"question": ..., "context": ...}} or {"inputs": "text"}')
        inputs = doc["inputs"]
        item = {"text": inputs} if isinstance(inputs, str) else inputs
        if not isinstance(item, dict):
            raise InputError("'inputs' must be a string or an object")
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise InputError("'parameters' must be an object")
        answer = await self.timed(model, model.answer(item, model.params(params)))
        return JSONResponse(answer)

    async def metrics_route(self, request: Request) -> Response:
        for m in self.models:
            self.metrics.queue_depth.labels(m.name).set(m.batcher.depth)
        body, content_type = self.metrics.render()
        return Response(body, media_type=content_type)


class _Guard:
    """Outermost middleware: authentication, the error contract, metrics per route, one access-log line."""

    def __init__(self, app: Callable[..., Any], server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path, method = scope.get("path", ""), scope.get("method", "")
        status = {"code": 500, "started": False}

        async def tracking_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        self.server.in_flight += 1
        self.server.metrics.request_started(path, self.server.by_name)
        try:
            self._authorize(scope, path)
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:  # what still runs at the drain deadline, or at a second signal, is cancelled
            if status["started"] or not self.server.stopping:
                raise
            self.server.cut += 1
            why = "a second signal cut its drain short" if self.server.cut_short else "its drain timeout ran out"
            await _error(503, f"the server stopped before answering ({why}); retry", {"Retry-After": "1"})(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the one place errors become responses
            response = self._response_for(exc)
            await response(scope, receive, tracking_send)
        finally:
            self.server.in_flight -= 1
            self.server.metrics.request_ended(path, self.server.by_name)
        seconds = time.perf_counter() - started
        self.server.metrics.observe_request(path, status["code"], seconds, self.server.by_name)
        self._log(scope, method, path, status["code"], seconds)
        return None

    def _authorize(self, scope: dict[str, Any], path: str) -> None:
        token = self.server.limits.token
        if token is None or path in OPEN_PATHS:
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _response_for(exc: Exception) -> Response:
        if isinstance(exc, HTTPError):
            return _error(exc.status, exc.message, exc.headers)
        if isinstance(exc, ZooError):  # InputError and every other user-facing error: the input is at fault
            return _error(400, exc.one_line()[:2000])
        sys.stderr.write(f"zoo serve: internal error: {type(exc).__name__}: {str(exc)[:500]}\n")
        return _error(500, "internal error (see the server log)")

    def _log(self, scope: dict[str, Any], method: str, path: str, status: int, seconds: float) -> None:
        client = (scope.get("client") or ("-", 0))[0]
        if self.server.limits.json_logs:
            line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "client": client, "method": method, "path": path,
                               "status": status, "ms": round(seconds * 1000, 3)})
        else:
            line = f'{client} "{method} {path}" {status} {seconds * 1000:.1f} ms'
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
