"""spec.autoscaling on the real node: metrics-server scrapes the real kubelet, and the real HPA
controller in kube-controller-manager scales a loaded ModelDeployment up, then back down when
the load stops. (How fast is the bench's business: bench/autoscaling.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import Cluster, OperatorProcess, wait_until
from hpa_support import autoscaled_md, metrics_server_down, metrics_server_up, settled_at_one_pod, step_of_load
from node_support import NodeImages, real_nodes


@pytest.fixture(scope="module")
def metrics_server(node_cluster: Cluster) -> Iterator[None]:
    error = metrics_server_up(node_cluster)
    if error:
        pytest.fail(error, pytrace=False)
    yield
    metrics_server_down(node_cluster)


def test_the_real_hpa_scales_a_loaded_model_up_and_back_down(
    node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, metrics_server: None, ns: str
) -> None:
    obj = autoscaled_md("mlp")
    node_cluster.apply({**obj, "metadata": {"name": "mlp", "namespace": ns}})
    wait_until(lambda: settled_at_one_pod(node_cluster, ns, "mlp"), timeout=420, interval=2,
               what="the HPA to read the pod's CPU from metrics-server and settle at one pod")
    pods = node_cluster.pods(ns, "app.kubernetes.io/instance=mlp")
    assert {p["spec"]["nodeName"] for p in pods} <= {n["metadata"]["name"] for n in real_nodes(node_cluster)}

    run = step_of_load(node_cluster, ns, "mlp", {"v1": test_images.expected["v1"]})
    assert run.peak_replicas > 1 and run.down_s is not None, run
    dep = node_cluster.deployment(ns, "mlp")
    managers = {m["manager"] for m in dep["metadata"].get("managedFields") or []
                if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})}
    assert "modelship" not in managers, managers  # the HPA scaled, the operator never wrote replicas
    status = node_cluster.md(ns, "mlp")["status"]["autoscaling"]
    assert status["name"] == "mlp" and status["desiredReplicas"] == 1, status
