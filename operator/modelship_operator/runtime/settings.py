"""The operator's one typed settings object, built from the command line in ``main()``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import kopf

from modelship_operator.runtime.leader import LeaseConfig

#: Where a pod finds its own namespace (the default namespace of the leader Lease).
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace(default: str = "default") -> str:
    """The namespace this process runs in (in a pod), else ``default``."""
    try:
        return POD_NAMESPACE_FILE.read_text().strip() or default
    except OSError:
        return default


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

    leader_elect: bool = False
    """Run leader election (replicas > 1): only the replica holding the Lease reconciles. Off
    for the default single replica, which needs no Lease and no Lease RBAC."""

    lease_name: str = "modelship"
    """Name of the ``coordination.k8s.io/v1`` Lease the replicas compete for."""

    lease_namespace: str = "default"
    """Namespace of that Lease: the operator's own (``main()`` reads the pod's namespace)."""

    lease_duration_seconds: float = 15.0
    """How long a standby waits after the leader's last renewal before taking over, s (client-go's
    default). With SIGKILL of the leader, the hand-over takes this plus one retry period."""

    renew_deadline_seconds: float = 10.0
    """How long the leader tries to renew before it stops writing and steps down, s. Shorter than
    the lease duration, so it has stopped before anyone else may start (client-go's default)."""

    retry_period_seconds: float = 2.0
    """Interval between attempts to acquire or renew the Lease, s (client-go's default)."""

    def lease_config(self, identity: str) -> LeaseConfig:
        """The leader election of a process that calls itself ``identity``."""
        return LeaseConfig(
            namespace=self.lease_namespace, name=self.lease_name, identity=identity,
            lease_duration=self.lease_duration_seconds, renew_deadline=self.renew_deadline_seconds,
            retry_period=self.retry_period_seconds,
        )

    def check(self) -> None:
        """Raise ValueError for settings that cannot work together."""
        if self.leader_elect:
            self.lease_config("check")

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
        # Leader election is modelship's own (a Lease, see runtime.leader): kopf runs standalone.
        settings.peering.standalone = True
        return settings
