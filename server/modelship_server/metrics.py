"""Prometheus metrics: one registry per app (tests build many apps), one ASGI middleware.

The endpoint label is the route template (``/v2/models/{name}/infer``), never the raw path,
so a scanner probing random URLs cannot blow up cardinality.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import device as device_mod

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/v1/models/[^/]+:predict$"), "/v1/models/{name}:predict"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$"), "/v2/models/{name}/infer"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/ready$"), "/v2/models/{name}/ready"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/config$"), "/v2/models/{name}/config"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?$"), "/v2/models/{name}"),
    (re.compile(r"^/v1/models/[^/:]+$"), "/v1/models/{name}"),
]
_FIXED = {"/health", "/health/live", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/v1/models"}


def endpoint_label(path: str) -> str:
    if path in _FIXED:
        return path
    for pattern, label in _ROUTES:
        if pattern.match(path):
            return label
    return "other"


class Metrics:
    """Every metric the server exports, on its own registry."""

    def __init__(self) -> None:
        disable_created_metrics()  # *_created series double the scrape for no use here
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "modelship_requests",
            "HTTP requests by endpoint, method and status code",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "modelship_request_duration_seconds",
            "HTTP request latency by endpoint and status code",
            ["endpoint", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("modelship_requests_in_flight", "HTTP requests being handled", registry=r)
        self.batch_size = Histogram(
            "modelship_batch_size",
            "Rows per model call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "modelship_batch_duration_seconds",
            "Model call time per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("modelship_queue_depth", "Requests waiting for the model", registry=r)
        self.load_seconds = Gauge(
            "modelship_model_load_seconds",
            "Time to fetch, load and warm up the model",
            ["model"],
            registry=r,
        )
        self.model_ready = Gauge("modelship_model_ready", "1 when the model serves", ["model"], registry=r)
        self.device_info = Gauge(
            "modelship_device_info",
            "Where the model runs (value always 1)",
            ["device", "dtype", "gpu_name", "torch_version", "threads"],
            registry=r,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._gpu: GpuCollector | None = None

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:  # labels() is slow-ish; cache the children per label set
            code = str(status)
            children = (
                self.requests.labels(endpoint, method, code),
                self.latency.labels(endpoint, method, code),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.batch_seconds.observe(seconds)

    def set_device(self, dev: torch.device, dtype: torch.dtype, threads: int) -> None:
        facts = device_mod.gpu_facts(dev)
        self.device_info.labels(
            str(dev),
            str(dtype).removeprefix("torch."),
            str(facts.get("gpu_name", "")),
            torch.__version__,
            str(threads),
        ).set(1)
        if dev.type == "cuda" and self._gpu is None:
            self._gpu = GpuCollector(dev)
            self.registry.register(self._gpu)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)


class GpuCollector(Collector):
    """GPU memory, read at scrape time (cheap: no device sync)."""

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev

    def collect(self) -> Iterator[GaugeMetricFamily]:
        facts = device_mod.gpu_facts(self.dev)
        labels = [str(self.dev), str(facts["gpu_name"])]
        for key, help_text in [
            ("gpu_memory_total_bytes", "Total memory of the GPU"),
            ("gpu_memory_allocated_bytes", "GPU memory held by tensors"),
            ("gpu_memory_reserved_bytes", "GPU memory reserved by torch's caching allocator"),
        ]:
            family = GaugeMetricFamily(f"modelship_{key}", help_text, labels=["device", "gpu_name"])
            family.add_metric(labels, float(facts[key]))  # type: ignore[arg-type]
            yield family


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: it costs a task and a queue per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        self.metrics.in_flight.inc()

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe_request(
                endpoint_label(scope["path"]), scope["method"], status, time.perf_counter() - started
            )
