"""The operator's one typed settings object, built from the command line in ``main()``."""

from __future__ import annotations

import dataclasses
import logging

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's change detection, switched off: it deep-copies every object on every event to
    diff it against the last handled state, which only create/update handlers use. modelship
    has none (only on.event handlers); the copies were a fifth of its CPU at scale."""

    def build(self, *, body: kopf.Body, extra_fields: object = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


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

    retry_delay_seconds: float = 2.0
    """First delay before retrying a pass that hit a transient API error (conflict, throttling,
    outage), s; doubled on every further failure of the same object."""

    retry_max_seconds: float = 300.0
    """Longest delay between retries of one object, s."""

    workers: int = 32
    """Threads running reconcile passes. They mostly wait on API round trips, so more threads
    than cores keep the API server busy: at 1,000 ModelDeployments created at once
    (bench/scale.py), 32 created every Deployment about 10 % sooner than 16. Passes for one
    object never run at once."""

    burst_hold_seconds: float = 0.5
    """While new ModelDeployments keep arriving less than this apart, the workers create their
    Deployments and nothing else (status refreshes, Services, Events wait), s. 0 = off."""

    worker_limit: int | None = None
    """Maximum concurrent per-object workers in kopf; None = unlimited. kopf's workers only
    record an event and queue a key, but each lingers ``idle_timeout`` seconds after its last
    event: with a limit (it was 64), the 65th object waited seconds for a free worker."""

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
        settings = kopf.OperatorSettings()
        # Only on.event handlers: kopf stores no progress and diffs nothing. (Should it ever
        # store progress, not in status: the CRD's structural schema would prune status.kopf.)
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelship.io")
        settings.persistence.diffbase_storage = NoDiffBase()
        # modelship records its own, meaningful Events; kopf's per-handler ones are noise.
        settings.posting.level = logging.WARNING
        settings.queueing.worker_limit = self.worker_limit
        # A per-object kopf worker lingers this long after its last event (default 5 s): at a
        # thousand objects arriving at once, thousands of idle tasks held memory for nothing.
        settings.queueing.idle_timeout = 1.0
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
