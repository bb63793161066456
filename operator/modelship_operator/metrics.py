"""Prometheus metrics of the operator, on their own registry (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "modelship_reconciles_total",
    "Reconciles of ModelDeployments, by trigger and result.",
    ["trigger", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "modelship_reconcile_duration_seconds",
    "Wall time of one reconcile (API calls included).",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a daemon thread."""
    start_http_server(port, registry=REGISTRY)
