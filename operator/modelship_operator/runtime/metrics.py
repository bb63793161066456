"""Prometheus metrics of the operator, on their own registry (served on --metrics-port)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modelship_operator.core.rollout import RolloutPlan

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
LEADER = Gauge(
    "modelship_leader",
    "1 while this replica may reconcile (it holds the leader Lease, or runs without leader election).",
    registry=REGISTRY,
)
WORKQUEUE_DEPTH = Gauge(
    "modelship_workqueue_depth",
    "Keys due now or being reconciled (not those scheduled for later).",
    registry=REGISTRY,
)
WORKQUEUE_SCHEDULED = Gauge(
    "modelship_workqueue_scheduled",
    "Keys scheduled for later: resyncs, rollout polls, retries (about one per ModelDeployment).",
    registry=REGISTRY,
)
CACHE_ENTRIES = Gauge(
    "modelship_cache_entries",
    "Entries in the operator's watch cache, by part (objects, tombstones, pod_sets, pods_gone).",
    ["part"],
    registry=REGISTRY,
)

ROLLOUTS_STARTED = Counter(
    "modelship_rollouts_started_total", "Rollouts started (new revision or retry).", registry=REGISTRY
)
ROLLOUTS_SUCCEEDED = Counter(
    "modelship_rollouts_succeeded_total", "Rollouts that completed (the revision became stable).", registry=REGISTRY
)
ROLLOUTS_ROLLED_BACK = Counter(
    "modelship_rollouts_rolled_back_total",
    "Rollbacks, by trigger: auto (failure evidence) or manual (modelship.io/rollback-to).",
    ["trigger"],
    registry=REGISTRY,
)
ROLLOUTS_HALTED = Counter(
    "modelship_rollouts_halted_total",
    "Failed rollouts left in place (autoRollback off, or no stable revision to go back to).",
    registry=REGISTRY,
)
TIME_TO_ROLLBACK = Histogram(
    "modelship_time_to_rollback_seconds",
    "From the first failure evidence on a new revision's pods to the automatic rollback.",
    registry=REGISTRY,
    buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300),
)


def observe_rollout(plan: RolloutPlan) -> None:
    """Count what one rollout plan decided."""
    if plan.started:
        ROLLOUTS_STARTED.inc()
    if plan.succeeded:
        ROLLOUTS_SUCCEEDED.inc()
    if plan.rolled_back:
        ROLLOUTS_ROLLED_BACK.labels(trigger=plan.rolled_back).inc()
    if plan.time_to_rollback_s is not None:
        TIME_TO_ROLLBACK.observe(plan.time_to_rollback_s)
    if any(e.reason == "RolloutHalted" for e in plan.events):
        ROLLOUTS_HALTED.inc()


def watch_sizes(queue_depth: Callable[[], int], queue_scheduled: Callable[[], int],
                cache_sizes: Callable[[], dict[str, int]]) -> None:
    """Read the work queue's and the cache's sizes at each scrape (no bookkeeping on the hot path)."""
    WORKQUEUE_DEPTH.set_function(queue_depth)
    WORKQUEUE_SCHEDULED.set_function(queue_scheduled)
    for part in cache_sizes():
        CACHE_ENTRIES.labels(part=part).set_function(_reader(cache_sizes, part))


def _reader(sizes: Callable[[], dict[str, int]], part: str) -> Callable[[], float]:
    return lambda: sizes()[part]


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a daemon thread."""
    start_http_server(port, registry=REGISTRY)
