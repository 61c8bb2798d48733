"""Prometheus metrics of one server (its own registry, so two servers in one process never mix counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from zoo.serve.batcher import BatchStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("zoo_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.request_seconds = Histogram("zoo_request_seconds", "Total time per HTTP request", ["route"], buckets=LATENCY_BUCKETS,
                                         registry=r)
        self.queue_seconds = Histogram("zoo_queue_seconds", "Time a request waited for its batch", ["model"], buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.inference_seconds = Histogram("zoo_inference_seconds", "Engine time per batch", ["model"], buckets=LATENCY_BUCKETS,
                                           registry=r)
        self.batch_size = Histogram("zoo_batch_size", "Encodings per engine call", ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("zoo_batch_requests", "Requests merged into one engine call", ["model"], buckets=BATCH_BUCKETS,
                                        registry=r)
        self.in_flight = Gauge("zoo_requests_in_flight", "HTTP requests received and not yet answered, by route", ["route"], registry=r)
        self.queue_depth = Gauge("zoo_queue_depth", "Requests waiting for a batch", ["model"], registry=r)
        self.load_seconds = Gauge("zoo_model_load_seconds", "Seconds to download, verify, convert, compile and warm", ["model"], registry=r)
        self.validation = Gauge("zoo_model_validation", "Install-time check: 1 outputs match, 0 differ; speedup vs onnxruntime fp32",
                                ["model", "field"], registry=r)

    def request_started(self, path: str, models: dict | None = None) -> None:
        self.in_flight.labels(_route(path, models or {})).inc()

    def request_ended(self, path: str, models: dict | None = None) -> None:
        self.in_flight.labels(_route(path, models or {})).dec()

    def observe_request(self, path: str, status: int, seconds: float, models: dict | None = None) -> None:
        route = _route(path, models or {})
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def observe_batch(self, model: str, stats: BatchStats) -> None:
        self.inference_seconds.labels(model).observe(stats.run_seconds)
        self.batch_size.labels(model).observe(stats.encodings)
        self.batch_requests.labels(model).observe(stats.requests)
        for q in stats.queue_seconds:
            self.queue_seconds.labels(model).observe(q)

    def model_loaded(self, model: str, seconds: float, verdict: dict | None) -> None:
        self.load_seconds.labels(model).set(seconds)
        if verdict:
            self.validation.labels(model, "outputs_match").set(1.0 if verdict.get("outputs_match") else 0.0)
            self.validation.labels(model, "speedup").set(float(verdict.get("speedup") or 0.0))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _route(path: str, models: dict) -> str:
    """A low-cardinality route label: a served model's name stays in (others are "unknown"), then the verb."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["v2", "models"] and len(parts) >= 3:
        verb = parts[-1] if len(parts) > 3 and parts[-1] in ("infer", "ready") else "metadata"
        name = "/".join(parts[2:-1] if verb != "metadata" else parts[2:])
        name = name.split("/versions/")[0]
        return f"/v2/models/{name if name in models else 'unknown'}/{verb}"
    if parts[:1] == ["models"] and len(parts) >= 2:
        name = "/".join(parts[1:])
        return f"/models/{name if name in models else 'unknown'}"
    known = {"v2/health/live", "v2/health/ready", "v2", "metrics"}
    return "/" + "/".join(parts) if "/".join(parts) in known else "other"
