"""A ModelDeployment on the real node: Ready only once the real kubelet's probes pass against
the real server, and its Service answers what the same model answers locally with torch."""

from __future__ import annotations

from e2e_support import Cluster, OperatorProcess, condition, wait_until
from node_support import SAMPLE, NodeImages, PodProxy, ServiceProxy, close, md, parse_time, real_nodes
from prometheus_client.parser import text_string_to_metric_families

READY_S = 180


def test_ready_only_after_the_real_probes_and_the_prediction_is_torchs(
    node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, ns: str
) -> None:
    node_cluster.apply({**md("mlp", "v1"), "metadata": {"name": "mlp", "namespace": ns}})
    obj = wait_until(lambda: _ready(node_cluster, ns, "mlp"), timeout=READY_S, what="md/mlp Ready")

    pod = node_cluster.pods(ns, "app.kubernetes.io/instance=mlp")[0]
    assert pod["spec"]["nodeName"] in {n["metadata"]["name"] for n in real_nodes(node_cluster)}, "not on a real node"
    server = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "server")
    assert server["started"] is True and server["ready"] is True
    started_at = parse_time(server["state"]["running"]["startedAt"])
    pod_ready = parse_time(condition(pod, "Ready")["lastTransitionTime"])
    md_ready = parse_time(condition(obj, "Ready")["lastTransitionTime"])
    assert started_at <= pod_ready <= md_ready

    # The kubelet's probes reached the real server and were answered 200 before anyone else asked
    # it anything: the server's own count of GET /health, read first thing through the pod's proxy.
    # (Whether a startup probe failed first depends on how fast torch imports on the machine.)
    port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "http")
    pod_proxy = PodProxy(node_cluster, ns, pod["metadata"]["name"], port)
    try:
        scraped = pod_proxy.get("/metrics")
    finally:
        pod_proxy.close()
    assert scraped.status_code == 200, scraped.text
    probed = sum(
        sample.value for family in text_string_to_metric_families(scraped.text) for sample in family.samples
        if sample.name == "modelship_requests_total" and sample.labels.get("endpoint") == "/health"
        and sample.labels.get("status") == "200"
    )
    assert probed >= 1, "the kubelet's probes never got a 200 from /health"
    events = node_cluster.get_json("events", "-n", ns, "--field-selector",
                                   f"involvedObject.name={pod['metadata']['name']}")["items"]
    probe_failures = [e["message"] for e in events if e.get("reason") == "Unhealthy"]
    assert not any(m.startswith(("Liveness", "Readiness")) for m in probe_failures), probe_failures

    proxy = ServiceProxy(node_cluster, ns, "mlp")
    try:
        health = proxy.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ready", health.text
        assert health.json()["model"]["uri"] == "file:///models/model.pt"
        answer = proxy.predict()
        assert answer.status_code == 200, answer.text
        got = answer.json()["predictions"]
        assert close(got, test_images.expected["v1"]), (got, test_images.expected["v1"])
        assert not close(got, test_images.expected["v2"])
        bad = proxy.post("/v1/models/mlp:predict", {"instances": [[1.0, 2.0]]})
        assert bad.status_code == 400 and "shape" in bad.json()["detail"], bad.text
    finally:
        proxy.close()
    assert len(SAMPLE) == len(got)


def _ready(cluster: Cluster, ns: str, name: str) -> dict | None:
    obj = cluster.md(ns, name)
    cond = condition(obj, "Ready")
    return obj if cond and cond["status"] == "True" else None
