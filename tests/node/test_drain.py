"""`kubectl drain` of the real node respects the ModelDeployment's disruption budget
(2 replicas, maxUnavailable 1), and the ModelDeployment says what happened."""

from __future__ import annotations

from e2e_support import Cluster, OperatorProcess, condition, wait_until
from node_support import NodeImages, md

READY_S = 180
SELECTOR = "app.kubernetes.io/instance=mlp"


def test_drain_evicts_one_pod_and_the_budget_holds_the_other(
    node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, ns: str
) -> None:
    manifest = {**md("mlp", "v1", replicas=2, disruptionBudget={"maxUnavailable": 1}),
                "metadata": {"name": "mlp", "namespace": ns}}
    node_cluster.apply(manifest)
    wait_until(lambda: _ready(node_cluster, ns), timeout=READY_S, what="md/mlp Ready with 2 replicas")
    wait_until(lambda: node_cluster.policy.read_namespaced_pod_disruption_budget("mlp", ns).status.disruptions_allowed == 1,
               timeout=60, what="the PDB to allow one disruption")
    before = {p["metadata"]["name"] for p in node_cluster.pods(ns, SELECTOR)}
    node = node_cluster.pods(ns, SELECTOR)[0]["spec"]["nodeName"]
    assert len(before) == 2
    try:
        drain = node_cluster.kubectl(
            "drain", node, "--pod-selector", SELECTOR, "--delete-emptydir-data", "--ignore-daemonsets",
            "--timeout=25s", check=False, timeout=90,
        )
        # The second eviction is refused for the whole timeout: the first pod's replacement
        # cannot run anywhere while the only real node is cordoned.
        assert drain.returncode != 0, drain.stdout
        assert "disruption budget" in (drain.stdout + drain.stderr), drain.stdout + drain.stderr
        after = node_cluster.pods(ns, SELECTOR)
        survivors = [p for p in after if p["metadata"]["name"] in before and not p["metadata"].get("deletionTimestamp")]
        assert len(survivors) == 1, [p["metadata"]["name"] for p in after]
        assert all(c["ready"] for c in survivors[0]["status"]["containerStatuses"])

        def reported() -> dict | None:
            obj = node_cluster.md(ns, "mlp")
            ready, degraded = condition(obj, "Ready"), condition(obj, "Degraded")
            if ready and ready["status"] == "False" and degraded and degraded["reason"] == "Unschedulable":
                return obj
            return None

        obj = wait_until(reported, timeout=60, what="md/mlp to report the unschedulable replacement")
        assert obj["status"]["readyReplicas"] == 1 and obj["status"]["replicas"] >= 2, obj["status"]
        assert "were unschedulable" in condition(obj, "Degraded")["message"], condition(obj, "Degraded")
        events = node_cluster.get_json("events", "-n", ns, "--field-selector",
                                       "involvedObject.kind=ModelDeployment,involvedObject.name=mlp")["items"]
        assert any(e["reason"] == "Unschedulable" for e in events), [e["reason"] for e in events]
    finally:
        node_cluster.kubectl("uncordon", node, check=False)
    wait_until(lambda: _ready(node_cluster, ns), timeout=READY_S, what="md/mlp Ready again after uncordon")


def _ready(cluster: Cluster, ns: str) -> bool:
    cond = condition(cluster.md(ns, "mlp"), "Ready")
    return bool(cond and cond["status"] == "True")
