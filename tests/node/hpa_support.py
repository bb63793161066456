"""metrics-server and a loaded, autoscaled ModelDeployment on the real node: shared by the node
tier (tests/node/test_autoscaling.py asserts up then down) and the bench (bench/autoscaling.py
times it)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from e2e_support import Cluster, cluster_sh, wait_until
from node_support import NODE_CLUSTER, ServiceProxy, SteadyLoad, md

#: The HPA under test: CPU utilization 20% of a 100m request, i.e. 20m per pod. Measured here: an
#: idle server pod (probed every second) uses ~3m, one answering 40 tiny-MLP predictions/s
#: through the service proxy ~43m. Up to 3 pods. Scale-up reacts at once; scale-down waits 20 s
#: instead of the HPA's default 5 minutes, so a test sees it.
AUTOSCALING: dict[str, Any] = {
    "minReplicas": 1,
    "maxReplicas": 3,
    "metrics": [{"type": "CPU", "averageUtilization": 20}],
    "behavior": {
        "scaleUp": {"stabilizationWindowSeconds": 0},
        "scaleDown": {"stabilizationWindowSeconds": 20,
                      "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
    },
}


def metrics_server_up(cluster: Cluster) -> str:
    """Start metrics-server for the local node cluster (hack/cluster.sh metrics-up); on a user's
    cluster, check that the resource metrics API is there. Returns an error text, or ""."""
    if cluster.local:
        proc = cluster_sh(NODE_CLUSTER, "metrics-up", timeout=1800)
        return "" if proc.returncode == 0 else f"hack/cluster.sh metrics-up exited {proc.returncode}:\n{proc.stderr}"
    found = cluster.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", check=False)
    return "" if found.returncode == 0 else "the cluster in $KUBECONFIG has no metrics.k8s.io API (install metrics-server)"


def metrics_server_down(cluster: Cluster) -> None:
    if cluster.local:
        cluster_sh(NODE_CLUSTER, "metrics-down", timeout=60)


def deployment_replicas(cluster: Cluster, ns: str, name: str) -> int:
    return int(cluster.deployment(ns, name)["spec"].get("replicas") or 0)


def hpa_has_metrics(cluster: Cluster, ns: str, name: str) -> bool:
    """The HPA reads a CPU value for the pods (metrics-server -> API server -> HPA controller)."""
    hpa = cluster.get_json("hpa", name, "-n", ns)
    active = next((c for c in (hpa.get("status") or {}).get("conditions") or [] if c["type"] == "ScalingActive"), {})
    current = (hpa.get("status") or {}).get("currentMetrics") or []
    return active.get("status") == "True" and any((m.get("resource") or {}).get("current") for m in current)


@dataclasses.dataclass
class ScaleRun:
    """What one step of load did, in seconds since the load started (``up_s``) and since it
    stopped (``down_s``); the replica counts seen, with their times."""

    load_rate: float
    up_s: float | None = None
    peak_replicas: int = 1
    down_s: float | None = None
    replicas_seen: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    hpa_seen: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    answers_ok: int = 0
    answers_failed: int = 0


def step_of_load(cluster: Cluster, ns: str, name: str, expected: dict[str, list[list[float]]], *,
                 rate: float = 40, threads: int = 8, up_timeout: float = 240, hold_s: float = 20,
                 down_timeout: float = 300) -> ScaleRun:
    """Load the Service at ``rate`` requests/s until the HPA scales the Deployment above one
    pod (then ``hold_s`` more, to see where it goes), stop, and wait until it is back at one."""
    run = ScaleRun(load_rate=rate)
    proxy = ServiceProxy(cluster, ns, name)

    def look(since: float) -> int:
        count = deployment_replicas(cluster, ns, name)
        run.replicas_seen.append((round(time.monotonic() - since, 1), count))
        hpa = (cluster.get_json("hpa", name, "-n", ns).get("status") or {})
        run.hpa_seen.append({"t": round(time.monotonic() - since, 1), "current": hpa.get("currentReplicas"),
                             "desired": hpa.get("desiredReplicas"),
                             "cpu": [((m.get("resource") or {}).get("current") or {}) for m in
                                     hpa.get("currentMetrics") or []]})
        run.peak_replicas = max(run.peak_replicas, count)
        return count

    try:
        with SteadyLoad(proxy, expected, rate=rate, threads=threads) as load:
            started = time.monotonic()
            wait_until(lambda: look(started) > 1, timeout=up_timeout, interval=1,
                       what=f"the HPA to scale md/{name} above 1 pod under {rate} requests/s")
            run.up_s = round(time.monotonic() - started, 1)
            end = time.monotonic() + hold_s
            while time.monotonic() < end:
                look(started)
                time.sleep(1)
        answers = load.snapshot()
        run.answers_failed = len(load.failures())
        run.answers_ok = len(answers) - run.answers_failed
    finally:
        proxy.close()
    stopped = time.monotonic()
    wait_until(lambda: look(stopped) == 1, timeout=down_timeout, interval=1,
               what=f"the HPA to scale md/{name} back to 1 pod after the load stopped")
    run.down_s = round(time.monotonic() - stopped, 1)
    return run


#: The pods' request: the utilization target is a share of it.
CPU_REQUEST = "100m"


def autoscaled_md(name: str) -> dict[str, Any]:
    obj = md(name, "v1", replicas=1, autoscaling=AUTOSCALING,
             resources={"requests": {"cpu": CPU_REQUEST, "memory": "256Mi"}})
    obj["spec"].pop("replicas")
    return obj


def settled_at_one_pod(cluster: Cluster, ns: str, name: str) -> bool:
    """The HPA reads metrics and wants one pod, and the Deployment has one (the load step
    starts from there: a pod's start-up CPU can make the HPA scale before any load)."""
    hpa = cluster.get_json("hpa", name, "-n", ns).get("status") or {}
    return (hpa_has_metrics(cluster, ns, name) and hpa.get("desiredReplicas") == 1
            and deployment_replicas(cluster, ns, name) == 1)
