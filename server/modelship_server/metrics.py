"""Prometheus metrics, kept as plain numbers and rendered at scrape time.

Why not prometheus_client's Counter/Histogram objects on the hot path: each ``inc``/``observe``
takes a lock, and a request touched five of them (~4 µs, a tenth of a tiny model's whole
request on one core). Here a request costs one dict lookup, a ``bisect`` and three integer
additions on the event loop thread (the only thread that records). The registry gets one
collector that renders the numbers as standard metric families when scraped.

Several processes (``workers``): each keeps its own numbers; :meth:`Metrics.snapshot` turns them
into plain JSON, :func:`merge` adds snapshots up, and the process that answers ``/metrics``
renders the sum (see ``workers.py``). The endpoint label is the route template
(``/v2/models/{name}/infer``), never the raw path, so a scanner probing random URLs cannot blow
up cardinality.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
_FIXED = {"/health", "/health/live", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/v1/models",
          "/openapi.json"}  # fmt: skip

Snapshot = dict[str, Any]
"""One process's metrics as plain JSON (see :meth:`Metrics.snapshot`)."""


def endpoint_label(path: str) -> str:
    if path in _FIXED:
        return path
    for pattern, label in _ROUTES:
        if pattern.match(path):
            return label
    return "other"


class Histogram:
    """Bucket counts (not cumulative), sum and count: what a Prometheus histogram needs."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.total += value

    def dump(self) -> list[Any]:
        return [list(self.counts), self.total]


class Metrics:
    """Every metric one process exports. Recording methods run on the event loop thread."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], Histogram] = {}
        self.in_flight = 0
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.load_seconds: dict[str, float] = {}
        self.model_ready: dict[str, int] = {}
        self.device: list[str] | None = None
        self._gpu: torch.device | None = None
        self._queue_depth: Callable[[], int] = lambda: 0
        self._others: list[Snapshot] = []
        self.registry = CollectorRegistry()
        self.registry.register(_Exporter(self))

    # -- recording (hot path) -------------------------------------------------------------------

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        histogram = self.requests.get(key)
        if histogram is None:
            histogram = self.requests[key] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_seconds.observe(seconds)

    # -- state ----------------------------------------------------------------------------------

    def set_device(self, dev: torch.device, dtype: torch.dtype, threads: int) -> None:
        facts = device_mod.gpu_facts(dev)
        self.device = [
            str(dev),
            str(dtype).removeprefix("torch."),
            str(facts.get("gpu_name", "")),
            torch.__version__,
            str(threads),
        ]
        if dev.type == "cuda":
            self._gpu = dev

    def set_model(self, name: str, *, ready: bool, load_seconds: float | None = None) -> None:
        self.model_ready[name] = int(ready)
        if load_seconds is not None:
            self.load_seconds[name] = load_seconds

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self._queue_depth = depth

    def snapshot(self) -> Snapshot:
        """This process's numbers as plain JSON (what another process merges)."""
        gpu = device_mod.gpu_facts(self._gpu) if self._gpu is not None else None
        return {
            "requests": [[*key, *hist.dump()] for key, hist in self.requests.items()],
            "in_flight": self.in_flight,
            "batch_rows": self.batch_rows.dump(),
            "batch_seconds": self.batch_seconds.dump(),
            "queue_depth": self._queue_depth(),
            "load_seconds": dict(self.load_seconds),
            "model_ready": dict(self.model_ready),
            "devices": [self.device] if self.device else [],
            "gpus": [[str(self._gpu), gpu]] if gpu else [],
            "processes": 1,
        }

    def render(self, others: list[Snapshot] | None = None) -> bytes:
        """The Prometheus text exposition of this process, plus ``others`` (other processes'
        snapshots, gathered by the caller) added in."""
        self._others = others or []
        try:
            return generate_latest(self.registry)
        finally:
            self._others = []


def merge(snapshots: list[Snapshot]) -> Snapshot:
    """Add several processes' snapshots up: counts and sums add, readiness is the minimum (one
    process not ready makes the model not ready), load time the maximum."""
    merged: Snapshot = {
        "requests": [],
        "in_flight": 0,
        "batch_rows": [[0] * (len(BATCH_BUCKETS) + 1), 0.0],
        "batch_seconds": [[0] * (len(LATENCY_BUCKETS) + 1), 0.0],
        "queue_depth": 0,
        "load_seconds": {},
        "model_ready": {},
        "devices": [],
        "gpus": [],
        "processes": 0,
    }
    requests: dict[tuple[str, str, int], list[Any]] = {}
    for snap in snapshots:
        for endpoint, method, status, counts, total in snap["requests"]:
            into = requests.setdefault((endpoint, method, status), [[0] * len(counts), 0.0])
            _add(into, [counts, total])
        for key in ("in_flight", "queue_depth", "processes"):
            merged[key] += snap[key]
        _add(merged["batch_rows"], snap["batch_rows"])
        _add(merged["batch_seconds"], snap["batch_seconds"])
        for name, seconds in snap["load_seconds"].items():
            merged["load_seconds"][name] = max(seconds, merged["load_seconds"].get(name, 0.0))
        for name, ready in snap["model_ready"].items():
            merged["model_ready"][name] = min(ready, merged["model_ready"].get(name, 1))
        merged["devices"] += [d for d in snap["devices"] if d not in merged["devices"]]
        merged["gpus"] += [g for g in snap["gpus"] if g[0] not in {have[0] for have in merged["gpus"]}]
    merged["requests"] = [[*key, *value] for key, value in requests.items()]
    return merged


def _add(into: list[Any], other: list[Any]) -> None:
    into[0] = [a + b for a, b in zip(into[0], other[0], strict=True)]
    into[1] += other[1]


def _histogram(
    name: str, doc: str, labels: list[str], bounds: tuple[float, ...]
) -> tuple[HistogramMetricFamily, Callable[[list[str], list[Any]], None]]:
    family = HistogramMetricFamily(name, doc, labels=labels)

    def add(values: list[str], dumped: list[Any]) -> None:
        counts, total = dumped
        cumulative, running = [], 0
        for bound, count in zip([*map(_le, bounds), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(values, cumulative, total)

    return family, add


def _le(bound: float) -> str:
    return floatToGoString(bound)  # what prometheus_client's own Histogram writes


class _Exporter(Collector):
    """Renders a (merged) snapshot as the metric families the server has always exported."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        snaps = [self.metrics.snapshot(), *self.metrics._others]
        snap = merge(snaps) if len(snaps) > 1 else snaps[0]
        labels = ["endpoint", "method", "status"]
        requests = CounterMetricFamily(
            "modelship_requests", "HTTP requests by endpoint, method and status code", labels=labels
        )
        latency, add_latency = _histogram(
            "modelship_request_duration_seconds",
            "HTTP request latency by endpoint and status code",
            labels,
            LATENCY_BUCKETS,
        )
        for endpoint, method, status, counts, total in snap["requests"]:
            values = [endpoint, method, str(status)]
            requests.add_metric(values, sum(counts))
            add_latency(values, [counts, total])
        yield requests
        yield latency
        yield GaugeMetricFamily("modelship_requests_in_flight", "HTTP requests being handled", snap["in_flight"])
        rows, add_rows = _histogram("modelship_batch_size", "Rows per model call", [], BATCH_BUCKETS)
        add_rows([], snap["batch_rows"])
        yield rows
        seconds, add_seconds = _histogram(
            "modelship_batch_duration_seconds", "Model call time per batch", [], LATENCY_BUCKETS
        )
        add_seconds([], snap["batch_seconds"])
        yield seconds
        yield GaugeMetricFamily("modelship_queue_depth", "Requests waiting for the model", snap["queue_depth"])
        load = GaugeMetricFamily(
            "modelship_model_load_seconds", "Time to fetch, load and warm up the model", labels=["model"]
        )
        for name, value in snap["load_seconds"].items():
            load.add_metric([name], value)
        yield load
        ready = GaugeMetricFamily("modelship_model_ready", "1 when the model serves", labels=["model"])
        for name, value in snap["model_ready"].items():
            ready.add_metric([name], value)
        yield ready
        device = GaugeMetricFamily(
            "modelship_device_info",
            "Where the model runs (value always 1)",
            labels=["device", "dtype", "gpu_name", "torch_version", "threads"],
        )
        for values in snap["devices"]:
            device.add_metric(values, 1)
        yield device
        yield GaugeMetricFamily(
            "modelship_processes", "Server processes whose metrics this answer adds up", snap["processes"]
        )
        yield from _gpu_families(snap["gpus"])


def _gpu_families(gpus: list[list[Any]]) -> Iterator[GaugeMetricFamily]:
    """GPU memory, read at scrape time (cheap: no device sync)."""
    for key, help_text in [
        ("gpu_memory_total_bytes", "Total memory of the GPU"),
        ("gpu_memory_allocated_bytes", "GPU memory held by tensors"),
        ("gpu_memory_reserved_bytes", "GPU memory reserved by torch's caching allocator"),
    ]:
        if not gpus:
            return
        family = GaugeMetricFamily(f"modelship_{key}", help_text, labels=["device", "gpu_name"])
        for dev, facts in gpus:
            family.add_metric([dev, str(facts["gpu_name"])], float(facts[key]))
        yield family


class MetricsMiddleware:
    """Counts the routes FastAPI serves (the hot routes count themselves, see ``hotpath.py``).
    Pure ASGI: BaseHTTPMiddleware would cost a task and a queue per request."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        self.metrics.in_flight += 1

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight -= 1
            self.metrics.observe_request(
                endpoint_label(scope["path"]), scope["method"], status, time.perf_counter() - started
            )
