"""The local control plane keeps its contract: fake nodes, real scheduler, KWOK failure images.

These run without the operator: plain Pods against the real scheduler and the
KWOK stages in hack/cluster/kwok.yaml. The operator tests build on them, so a
broken stage shows up here first, with a precise message.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import (
    CPU_NODES,
    GPU_NODES,
    GPU_PRODUCT,
    IMAGE_CRASHLOOP,
    IMAGE_IMAGEPULL,
    IMAGE_NEVERREADY,
    IMAGE_OK,
    Cluster,
    wait_until,
)


@pytest.fixture
def local(cluster: Cluster) -> Cluster:
    if not cluster.local:
        pytest.fail("this test checks the local KWOK cluster's contract; unset KUBECONFIG to run it")
    return cluster


def _pod(name: str, image: str, *, gpu: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpu)}}
        spec["nodeSelector"] = {"nvidia.com/gpu.product": GPU_PRODUCT}
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.core.read_namespaced_pod(name, ns).to_dict()["status"]


def _when(value: dict[str, Any], test: Any) -> dict[str, Any] | None:
    return value if test(value) else None


def _ready(status: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def test_fake_nodes_match_the_contract(local: Cluster) -> None:
    nodes = {n.metadata.name: n for n in local.core.list_node().items}
    assert set(CPU_NODES + GPU_NODES) <= set(nodes), sorted(nodes)
    for name in CPU_NODES + GPU_NODES:
        node = nodes[name]
        ready = [c.status for c in node.status.conditions or [] if c.type == "Ready"]
        assert ready == ["True"], f"{name} not Ready: {node.status.conditions}"
        gpus = node.status.allocatable.get("nvidia.com/gpu")
        if name in GPU_NODES:
            assert gpus == "2" and node.status.capacity.get("nvidia.com/gpu") == "2", name
            assert node.metadata.labels.get("nvidia.com/gpu.product") == GPU_PRODUCT, name
            taints = [(t.key, t.value, t.effect) for t in node.spec.taints or []]
            assert ("nvidia.com/gpu", "present", "NoSchedule") in taints, taints
        else:
            assert gpus is None, f"{name} must not advertise GPUs"


def test_api_server_listens_on_loopback_only(local: Cluster) -> None:
    server = local.api.configuration.host
    assert server.startswith(("https://127.0.0.1:", "http://127.0.0.1:")), server


def test_default_image_becomes_ready_on_a_cpu_node(local: Cluster, ns: str) -> None:
    local.core.create_namespaced_pod(ns, _pod("ok", IMAGE_OK))
    status = wait_until(lambda: _when(_status(local, ns, "ok"), _ready), timeout=30, what="pod Ready")
    assert status["phase"] == "Running"
    assert local.core.read_namespaced_pod("ok", ns).spec.node_name in CPU_NODES


def test_gpu_pod_is_placed_on_a_gpu_node_by_the_scheduler(local: Cluster, ns: str) -> None:
    local.core.create_namespaced_pod(ns, _pod("gpu", IMAGE_OK, gpu=1))
    wait_until(lambda: _ready(_status(local, ns, "gpu")), timeout=30, what="GPU pod Ready")
    assert local.core.read_namespaced_pod("gpu", ns).spec.node_name in GPU_NODES


def test_imagepull_image_backs_off_and_never_becomes_ready(local: Cluster, ns: str) -> None:
    local.core.create_namespaced_pod(ns, _pod("pull", IMAGE_IMAGEPULL))

    def waiting_reason() -> str | None:
        statuses = _status(local, ns, "pull").get("container_statuses") or []
        return statuses and (statuses[0]["state"].get("waiting") or {}).get("reason")

    assert wait_until(waiting_reason, timeout=30, what="a waiting reason") == "ImagePullBackOff"
    status = _status(local, ns, "pull")
    assert status["phase"] == "Pending" and not _ready(status)


def test_crashloop_image_restarts_with_rising_count(local: Cluster, ns: str) -> None:
    local.core.create_namespaced_pod(ns, _pod("crash", IMAGE_CRASHLOOP))

    def restarts() -> int:
        statuses = _status(local, ns, "crash").get("container_statuses") or []
        return statuses[0]["restart_count"] if statuses else 0

    wait_until(lambda: restarts() >= 2, timeout=60, what="restartCount >= 2")
    status = _status(local, ns, "crash")
    assert status["container_statuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["container_statuses"][0]["last_state"]["terminated"]["exit_code"] == 1
    assert not _ready(status)


def test_neverready_image_runs_but_is_never_ready(local: Cluster, ns: str) -> None:
    local.core.create_namespaced_pod(ns, _pod("slow", IMAGE_NEVERREADY))
    status = wait_until(
        lambda: _when(_status(local, ns, "slow"), lambda s: s["phase"] == "Running"), timeout=30, what="Running"
    )
    container = status["container_statuses"][0]
    assert container["state"].get("running") and not container["ready"] and not container["started"]
    assert not _ready(status)


def test_restricted_namespace_rejects_a_root_pod(local: Cluster, ns: str) -> None:
    """Pod Security admission is on: without it the operator's restricted test proves nothing."""
    local.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    root_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": IMAGE_OK}]},
    }
    root_pod["metadata"]["namespace"] = ns
    proc = local.apply(root_pod, check=False)
    assert proc.returncode != 0 and 'violates PodSecurity "restricted' in proc.stderr, proc.stderr
