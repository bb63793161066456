"""The operator, as a real process, against the real control plane.

Children, probes and GPU scheduling; Ready only when the pods are; printer
columns and the scale subresource; drift undone; garbage collection; Pod
Security "restricted"; convergence after a restart with changes made while
the operator was down.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_support import (
    CPU_NODES,
    GPU_NODES,
    GPU_PRODUCT,
    IMAGE_NEVERREADY,
    IMAGE_OK,
    Cluster,
    OperatorProcess,
    condition,
    model_deployment,
    wait_until,
)
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.usefixtures("operator")

#: Seconds for the operator + controllers + KWOK to turn a spec into Ready pods.
CONVERGE_S = 60


def _gone(fn: Any) -> bool:
    try:
        fn()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def _ready(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    md = cluster.md(ns, name)
    cond = condition(md, "Ready")
    return md if cond and cond["status"] == "True" else None


def _wait_ready(cluster: Cluster, ns: str, name: str, timeout: float = CONVERGE_S) -> dict[str, Any]:
    return wait_until(lambda: _ready(cluster, ns, name), timeout=timeout, what=f"md/{name} Ready")


def _pods_ready(pods: list[dict[str, Any]]) -> int:
    return sum(
        1 for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    )


def _selector(md: dict[str, Any]) -> str:
    return f"app.kubernetes.io/instance={md['metadata']['name']},app.kubernetes.io/name=modelship-server"


def _free_gpus(cluster: Cluster) -> dict[str, int]:
    """Free nvidia.com/gpu per GPU node (other tests, the demo may hold some)."""
    free = {n: 2 for n in GPU_NODES}
    for pod in cluster.core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items:
        if pod.spec.node_name in free:
            for c in pod.spec.containers:
                limits = (c.resources and c.resources.limits) or {}
                free[pod.spec.node_name] -= int(limits.get("nvidia.com/gpu", 0))
    return free


def test_cpu_model_gets_deployment_service_and_pdb(cluster: Cluster, ns: str) -> None:
    cluster.apply(
        model_deployment("cpu", replicas=2, disruptionBudget={"minAvailable": 1},
                         resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}, namespace=ns)
    )
    dep = wait_until(lambda: cluster.deployment(ns, "cpu"), timeout=CONVERGE_S, what="Deployment cpu")
    md = cluster.md(ns, "cpu")

    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ModelDeployment", "cpu", md["metadata"]["uid"], True
    )
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == IMAGE_OK
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # The default 600 s load budget, probed every 5 s, before liveness may kill the pod.
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MODELSHIP_MODEL_URI"] == "file:///models/cpu.pt2"
    assert env["MODELSHIP_MODEL_FORMAT"] == "torch-export"
    assert env["MODELSHIP_PORT"] == "8000"
    assert "nvidia.com/gpu" not in (c["resources"].get("limits") or {})
    assert c["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert "nodeSelector" not in pod and "tolerations" not in pod

    svc = cluster.api.sanitize_for_serialization(
        wait_until(lambda: cluster.core.read_namespaced_service("cpu", ns), timeout=CONVERGE_S, what="Service cpu")
    )
    assert svc["spec"]["ports"][0]["port"] == 8000
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    pdb = cluster.api.sanitize_for_serialization(
        wait_until(lambda: cluster.policy.read_namespaced_pod_disruption_budget("cpu", ns), timeout=CONVERGE_S, what="PDB cpu")
    )
    assert pdb["spec"]["minAvailable"] == 1
    for child in (svc, pdb):
        assert child["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]

    md = _wait_ready(cluster, ns, "cpu")
    pods = cluster.pods(ns, _selector(md))
    assert len(pods) == 2 and _pods_ready(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} <= set(CPU_NODES)
    assert md["status"]["readyReplicas"] == 2
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]


def test_gpu_pods_land_only_on_gpu_nodes(cluster: Cluster, ns: str) -> None:
    if not cluster.local:
        pytest.fail("needs the local cluster's fake GPU nodes; unset KUBECONFIG")
    cluster.apply(model_deployment("gpu", replicas=2, gpu=1, product=GPU_PRODUCT, namespace=ns))
    dep = wait_until(lambda: cluster.deployment(ns, "gpu"), timeout=CONVERGE_S, what="Deployment gpu")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": GPU_PRODUCT}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]

    md = _wait_ready(cluster, ns, "gpu")
    pods = cluster.pods(ns, _selector(md))
    assert len(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} <= set(GPU_NODES), [p["spec"]["nodeName"] for p in pods]


def test_gpu_exhaustion_leaves_pods_pending_and_says_so(cluster: Cluster, ns: str) -> None:
    if not cluster.local:
        pytest.fail("needs the local cluster's fake GPU nodes; unset KUBECONFIG")
    # Pods of earlier tests may still be terminating (namespaces are deleted without waiting).
    whole = lambda: sum(1 for free in _free_gpus(cluster).values() if free == 2)  # noqa: E731
    try:
        wait_until(lambda: whole() == len(GPU_NODES), timeout=60, what="all GPU nodes free")
    except AssertionError:
        pass  # someone else holds GPUs: work with what is free
    whole_nodes = whole()
    assert whole_nodes >= 1, f"no GPU node is free (other workloads hold GPUs: {_free_gpus(cluster)})"
    replicas = whole_nodes + 1  # each pod takes a whole node's 2 GPUs: exactly one cannot fit
    cluster.apply(model_deployment("big", replicas=replicas, gpu=2, namespace=ns))

    def one_pending() -> list[dict[str, Any]] | None:
        md = cluster.md(ns, "big")
        pods = cluster.pods(ns, _selector(md))
        pending = [p for p in pods if not p["spec"].get("nodeName")]
        return pods if len(pods) == replicas and len(pending) == 1 and _pods_ready(pods) == whole_nodes else None

    pods = wait_until(one_pending, timeout=CONVERGE_S, what=f"{whole_nodes} Ready and 1 Pending pod")
    (pending,) = [p for p in pods if not p["spec"].get("nodeName")]
    sched = next(c for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
    assert sched["reason"] == "Unschedulable" and "nvidia.com/gpu" in sched["message"], sched

    def reported() -> dict[str, Any] | None:
        md = cluster.md(ns, "big")
        status = md.get("status") or {}
        text = json.dumps(status.get("conditions") or [])
        ok = status.get("readyReplicas") == whole_nodes and "nvidia.com/gpu" in text
        return md if ok else None

    md = wait_until(reported, timeout=CONVERGE_S, what="status naming the GPU shortage")
    assert condition(md, "Ready")["status"] != "True"


def test_ready_only_when_pods_are_ready_and_kubectl_wait_works(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_deployment("slow", image=IMAGE_NEVERREADY, namespace=ns))

    def observed_not_ready() -> dict[str, Any] | None:
        md = cluster.md(ns, "slow")
        status, cond = md.get("status") or {}, condition(md, "Ready")
        running = [p for p in cluster.pods(ns, _selector(md)) if p["status"].get("phase") == "Running"]
        return md if cond and status.get("observedGeneration") == md["metadata"]["generation"] and running else None

    md = wait_until(observed_not_ready, timeout=CONVERGE_S, what="status observed with a Running pod")
    assert condition(md, "Ready")["status"] != "True", condition(md, "Ready")
    assert md["status"].get("readyReplicas", 0) == 0

    wait = cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "md/slow", "--timeout=2s", check=False)
    assert wait.returncode != 0, "kubectl wait succeeded on a ModelDeployment whose pod is not ready"

    cluster.kubectl("-n", ns, "patch", "md/slow", "--type=merge", "-p", json.dumps({"spec": {"image": IMAGE_OK}}))
    wait = cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "md/slow", f"--timeout={CONVERGE_S}s", check=False)
    assert wait.returncode == 0, wait.stderr
    md = cluster.md(ns, "slow")
    pods = [p for p in cluster.pods(ns, _selector(md)) if not p["metadata"].get("deletionTimestamp")]
    assert pods and all(p["spec"]["containers"][0]["image"] == IMAGE_OK for p in pods if _pods_ready([p]))
    assert md["status"]["image"] == IMAGE_OK


def test_printer_columns_and_scale_subresource(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_deployment("cols", namespace=ns))
    _wait_ready(cluster, ns, "cols")
    out = cluster.kubectl("-n", ns, "get", "md").stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "IMAGE", "READY", "STATUS", "AGE"], out
    assert row.split()[:3] == ["cols", IMAGE_OK, "1"], out
    wide = cluster.kubectl("-n", ns, "get", "md", "-o", "wide").stdout
    assert "DESIRED" in wide.splitlines()[0] and "REPLICAS" in wide.splitlines()[0], wide

    cluster.kubectl("-n", ns, "scale", "md/cols", "--replicas=3")
    wait_until(lambda: cluster.deployment(ns, "cols")["spec"]["replicas"] == 3, timeout=CONVERGE_S, what="Deployment replicas 3")
    md = wait_until(
        lambda: (m := _ready(cluster, ns, "cols")) and m["status"].get("readyReplicas") == 3 and m,
        timeout=CONVERGE_S, what="3 ready replicas in status",
    )
    assert md["status"]["replicas"] == 3
    scale = json.loads(cluster.kubectl("-n", ns, "get", "--raw",
                                       f"/apis/modelship.io/v1alpha1/namespaces/{ns}/modeldeployments/cols/scale").stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert "app.kubernetes.io/instance=cols" in scale["status"]["selector"]


def test_drift_edited_deployment_is_restored(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_deployment("drift", replicas=1, namespace=ns))
    _wait_ready(cluster, ns, "drift")
    patch = {"spec": {"replicas": 4, "template": {"spec": {"containers": [{"name": "server", "image": "evil.example/x:1"}]}}}}
    cluster.kubectl("-n", ns, "patch", "deployment/drift", "--type=strategic", "-p", json.dumps(patch))

    def restored() -> bool:
        dep = cluster.deployment(ns, "drift")
        return dep["spec"]["replicas"] == 1 and dep["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_OK

    wait_until(restored, timeout=CONVERGE_S, what="the edited Deployment to be restored")


def test_drift_deleted_deployment_is_recreated(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_deployment("gone", namespace=ns))
    _wait_ready(cluster, ns, "gone")
    old_uid = cluster.deployment(ns, "gone")["metadata"]["uid"]
    cluster.kubectl("-n", ns, "delete", "deployment/gone", "--wait=true")
    dep = wait_until(
        lambda: (d := cluster.deployment(ns, "gone"))["metadata"]["uid"] != old_uid and d,
        timeout=CONVERGE_S, what="a new Deployment",
    )
    assert dep["metadata"]["ownerReferences"][0]["name"] == "gone"
    _wait_ready(cluster, ns, "gone")


def test_deleting_the_model_deployment_garbage_collects_children(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_deployment("gc", replicas=2, disruptionBudget={"maxUnavailable": 1}, namespace=ns))
    _wait_ready(cluster, ns, "gc")
    wait_until(lambda: cluster.policy.read_namespaced_pod_disruption_budget("gc", ns), timeout=CONVERGE_S, what="PDB gc")
    cluster.kubectl("-n", ns, "delete", "md/gc", "--wait=true", "--timeout=60s")
    for what, read in [
        ("Deployment", lambda: cluster.apps.read_namespaced_deployment("gc", ns)),
        ("Service", lambda: cluster.core.read_namespaced_service("gc", ns)),
        ("PodDisruptionBudget", lambda: cluster.policy.read_namespaced_pod_disruption_budget("gc", ns)),
    ]:
        wait_until(lambda read=read: _gone(read), timeout=CONVERGE_S, what=f"{what} gc garbage-collected")
    wait_until(lambda: not cluster.pods(ns, "app.kubernetes.io/instance=gc"), timeout=CONVERGE_S, what="pods gone")


def test_restricted_namespace_admits_generated_pods(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    cluster.apply([
        model_deployment("psa-cpu", replicas=1, namespace=ns),
        model_deployment("psa-gpu", replicas=1, gpu=1, namespace=ns),
    ])
    for name in ("psa-cpu", "psa-gpu"):
        md = _wait_ready(cluster, ns, name)
        assert _pods_ready(cluster.pods(ns, _selector(md))) == 1
    events = cluster.kubectl("-n", ns, "get", "events", "--field-selector=reason=FailedCreate", "-o", "name").stdout
    assert not events.strip(), cluster.kubectl("-n", ns, "get", "events").stdout


def test_operator_restart_converges_on_changes_made_while_down(
    cluster: Cluster, ns: str, operator: OperatorProcess
) -> None:
    cluster.apply([
        model_deployment("keep", replicas=1, namespace=ns),
        model_deployment("drop", namespace=ns),
    ])
    _wait_ready(cluster, ns, "keep")
    _wait_ready(cluster, ns, "drop")

    operator.stop(kill=True)  # a crash, not a graceful shutdown
    new_image = "registry.example.com/ml/modelship-server:1.1.0"
    cluster.kubectl("-n", ns, "patch", "md/keep", "--type=merge", "-p",
                    json.dumps({"spec": {"image": new_image, "replicas": 2}}))
    cluster.apply(model_deployment("born", replicas=1, namespace=ns))
    cluster.kubectl("-n", ns, "delete", "md/drop", "--wait=false")
    # No finalizer: a ModelDeployment deleted while the operator is down is gone at once.
    wait_until(lambda: _gone(lambda: cluster.md(ns, "drop")), timeout=CONVERGE_S, what="md/drop deleted while down")
    # Nothing acts on the specs while the operator is down (children keep the old values).
    assert cluster.deployment(ns, "keep")["spec"]["replicas"] == 1
    assert _gone(lambda: cluster.apps.read_namespaced_deployment("born", ns))

    operator.start()
    md = wait_until(
        lambda: (m := _ready(cluster, ns, "keep")) and m["status"].get("image") == new_image
        and m["status"].get("readyReplicas") == 2 and m,
        timeout=CONVERGE_S, what="md/keep Ready on the new image with 2 replicas",
    )
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
    dep = cluster.deployment(ns, "keep")
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["template"]["spec"]["containers"][0]["image"] == new_image
    _wait_ready(cluster, ns, "born")
    wait_until(lambda: _gone(lambda: cluster.apps.read_namespaced_deployment("drop", ns)), timeout=CONVERGE_S,
               what="drop's Deployment garbage-collected")


def test_the_finalizer_left_by_0_1_0_is_taken_off(cluster: Cluster, ns: str) -> None:
    """0.1.0 ran kopf timers, which put kopf's finalizer on every ModelDeployment: deleting one
    hung while that operator was down. This operator takes the finalizer (and kopf's
    annotations) off, and the object deletes normally afterwards."""
    legacy = model_deployment("legacy", replicas=1, namespace=ns)
    legacy["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    legacy["metadata"]["annotations"] = {"modelship.io/last-handled-configuration": "{}"}
    cluster.apply(legacy)

    def cleaned() -> dict[str, Any] | None:
        meta = cluster.md(ns, "legacy")["metadata"]
        annotations = meta.get("annotations") or {}
        return meta if not meta.get("finalizers") and "modelship.io/last-handled-configuration" not in annotations else None

    wait_until(cleaned, timeout=CONVERGE_S, what="kopf's finalizer taken off md/legacy")
    _wait_ready(cluster, ns, "legacy")
    cluster.kubectl("-n", ns, "delete", "md/legacy", "--wait=true", "--timeout=60s")
