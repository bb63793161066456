"""The operator's one typed settings object, built from the command line in ``main()``."""

from __future__ import annotations

import dataclasses
import logging

import kopf


@dataclasses.dataclass(frozen=True)
class Settings:
    """How this operator process runs. Nothing here is read at import time."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty = all namespaces (cluster-wide). A namespace list needs only
    namespaced RBAC, which is what multi-tenant clusters want."""

    kubeconfig: str | None = None
    """Explicit kubeconfig path; None = in-cluster config, else $KUBECONFIG / ~/.kube/config."""

    health_port: int = 8080
    """Port of the liveness endpoint (GET /healthz), for the operator's own probes."""

    metrics_port: int = 9090
    """Port of the Prometheus endpoint (GET /metrics): reconcile and rollout metrics."""

    resync_seconds: float = 60.0
    """Safety-net re-reconcile of every ModelDeployment, s. Watches on children (Deployments,
    Services, PDBs, pods) react within a second; this only catches a missed watch event."""

    retry_delay_seconds: float = 5.0
    """Delay before retrying a reconcile that hit a transient API error (conflict, throttling), s."""

    worker_limit: int = 64
    """Maximum concurrent per-object workers in kopf; bounds API load on large clusters.
    64, not 20: at 100 ModelDeployments created at once (bench/scale.py) 64 workers with 16
    threads took 27 s where 20 with 8 took 61 s; the API server was idle either way."""

    executor_threads: int = 16
    """Threads running the (synchronous) handlers; the kubernetes client blocks on I/O, so
    more threads than cores keep the API round trips overlapping."""

    watch_server_timeout: int = 300
    """Server-side watch timeout, s: watches are re-established this often, so a silently
    dropped connection is noticed within minutes, not hours."""

    request_timeout: float = 60.0
    """Client-side timeout of one API request made by kopf, s."""

    log_level: str = "INFO"
    """Python logging level for the operator."""

    peering: str | None = None
    """kopf peering object name for HA (several replicas, one active); None = standalone, the
    right mode for the default single replica (no KopfPeering CRDs needed)."""

    peering_lifetime: int = 60
    """How long, s, a silent peer is still considered alive: the failover time after a crash."""

    peering_priority: int = 0
    """kopf peering priority; peers with the same priority would all pause, so ``main()`` gives
    each process a random one unless set."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def liveness_endpoint(self) -> str:
        return f"http://0.0.0.0:{self.health_port}/healthz"

    def kopf_settings(self) -> kopf.OperatorSettings:
        """kopf tuning derived from these settings."""
        import concurrent.futures

        settings = kopf.OperatorSettings()
        # Progress and diff-base go to annotations under our own prefix: the CRD's structural
        # schema would prune kopf's default status.kopf field and kopf would warn forever.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelship.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="modelship.io", key="last-handled-configuration"
        )
        # modelship records its own, meaningful Events; kopf's per-handler ones are noise.
        settings.posting.level = logging.WARNING
        settings.queueing.worker_limit = self.worker_limit
        settings.execution.executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.executor_threads)
        settings.watching.server_timeout = self.watch_server_timeout
        settings.watching.client_timeout = self.watch_server_timeout + 30
        settings.networking.request_timeout = self.request_timeout
        if self.peering:
            settings.peering.name = self.peering
            settings.peering.mandatory = True
            settings.peering.lifetime = self.peering_lifetime
            settings.peering.priority = self.peering_priority
            settings.peering.clusterwide = self.clusterwide
        else:
            settings.peering.standalone = True
        return settings
