"""The operator itself as a real pod: the image from Dockerfile.operator, installed by the Helm
chart into a namespace enforcing Pod Security "restricted", talking to the API server with
in-cluster config (its ServiceAccount token, the `kubernetes` Service), and reconciling a
ModelDeployment whose real pod becomes Ready and answers."""

from __future__ import annotations

import sys
import uuid

from e2e_support import ROOT, Cluster, OperatorProcess, condition, wait_until
from node_support import NodeImages, ServiceProxy, close, md, real_nodes

sys.path.insert(0, str(ROOT / "tests" / "helm"))
from helm_support import CHART, run_helm

READY_S = 180


def test_the_chart_runs_the_operator_image_as_a_restricted_pod_that_reconciles(
    node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, operator_image: str, ns: str,
    crd: str,
) -> None:
    repository, tag = operator_image.rsplit(":", 1)
    models_ns = f"{ns}-models"
    release = f"ms-{uuid.uuid4().hex[:5]}"
    kubeconfig = node_cluster.kubeconfig
    operator.stop()  # one operator at a time: the chart's pod is the only one acting here
    try:
        run_helm("install", release, str(CHART), "-n", ns, "--wait", "--timeout", "180s",
                 "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                 "--set", "image.pullPolicy=Never", "--set", "crds.enabled=false",
                 kubeconfig=kubeconfig, timeout=240)
        pod = node_cluster.pods(ns, f"app.kubernetes.io/instance={release}")[0]
        assert pod["spec"]["nodeName"] in {n["metadata"]["name"] for n in real_nodes(node_cluster)}
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] is True and status["restartCount"] == 0, status
        assert status["image"].endswith(operator_image) or status["imageID"], status
        # In-cluster config: the ServiceAccount's projected token, no kubeconfig anywhere.
        volumes = [v for v in pod["spec"].get("volumes") or [] if "projected" in v]
        assert volumes and pod["spec"]["serviceAccountName"].endswith("modelship")
        assert not any("kubeconfig" in a for a in pod["spec"]["containers"][0].get("args") or [])

        node_cluster.kubectl("create", "namespace", models_ns)
        node_cluster.kubectl("label", "namespace", models_ns, "pod-security.kubernetes.io/enforce=restricted")
        node_cluster.apply({**md("mlp", "v1"), "metadata": {"name": "mlp", "namespace": models_ns}})
        wait_until(lambda: _ready(node_cluster, models_ns), timeout=READY_S, what="md/mlp Ready (chart operator)")
        proxy = ServiceProxy(node_cluster, models_ns, "mlp")
        try:
            answer = proxy.predict()
        finally:
            proxy.close()
        assert answer.status_code == 200 and close(answer.json()["predictions"], test_images.expected["v1"])
        managers = {m["manager"] for m in node_cluster.deployment(models_ns, "mlp")["metadata"]["managedFields"]}
        assert "modelship" in managers
        # The Events name their reporter's host: the operator pod, not this machine.
        events = node_cluster.get_json("events", "-n", models_ns, "--field-selector",
                                       "involvedObject.kind=ModelDeployment")["items"]
        hosts = {(e.get("source") or {}).get("host") or e.get("reportingInstance") for e in events}
        assert hosts == {pod["metadata"]["name"]}, hosts
        logs = node_cluster.kubectl("-n", ns, "logs", pod["metadata"]["name"]).stdout
        assert "kube-probe" in logs and "ERROR" not in logs, logs[-2000:]
    finally:
        run_helm("uninstall", release, "-n", ns, "--wait", "--timeout", "120s", kubeconfig=kubeconfig,
                 check=False, timeout=180)
        node_cluster.kubectl("delete", "namespace", models_ns, "--wait=false", "--ignore-not-found", check=False)
        operator.start()


def _ready(cluster: Cluster, ns: str) -> bool:
    cond = condition(cluster.md(ns, "mlp"), "Ready")
    return bool(cond and cond["status"] == "True")

