"""The operator -> server contract on a real pod, which no KWOK pod can check: the env the
builder emits is what the server reads, the probes hit the server's port and paths, the
Service gets endpoints on its named port, the restricted pod really runs read-only as UID
10001, and SIGTERM drains within the grace period the builder sets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import Cluster, OperatorProcess, condition, wait_until
from kubernetes import watch
from node_support import NodeImages, PodProxy, ServiceProxy, md, parse_time

READY_S = 180
SELECTOR = "app.kubernetes.io/instance=mlp"
#: The server's settings as it parsed them, printed from inside the running container.
SETTINGS_PROBE = (
    "import json; from modelship_server.settings import load_settings; "
    "print(json.dumps(load_settings([]).model_dump(mode='json')))"
)


@pytest.fixture(scope="module")
def served(node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages) -> Iterator[tuple[str, dict]]:
    """One ModelDeployment (1 replica) in its own restricted namespace, Ready."""
    ns = f"node-contract-{int(time.time()) % 100000}"
    node_cluster.kubectl("create", "namespace", ns)
    node_cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
                         "modelship.io/node-test=true")
    node_cluster.apply({**md("mlp", "v1", serving={"port": 8123, "shutdownDelaySeconds": 3, "drainTimeoutSeconds": 7}),
                        "metadata": {"name": "mlp", "namespace": ns}})

    def ready() -> bool:
        cond = condition(node_cluster.md(ns, "mlp"), "Ready")
        return bool(cond and cond["status"] == "True")

    wait_until(ready, timeout=READY_S, what="md/mlp Ready")
    yield ns, node_cluster.pods(ns, SELECTOR)[0]
    node_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _exec(cluster: Cluster, ns: str, pod: str, *cmd: str) -> Any:
    return cluster.kubectl("-n", ns, "exec", pod, "-c", "server", "--", *cmd, check=False, timeout=60)


def test_the_env_the_builder_emits_is_what_the_server_reads(node_cluster: Cluster, served: tuple[str, dict]) -> None:
    ns, pod = served
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}
    proc = _exec(node_cluster, ns, pod["metadata"]["name"], "python3", "-c", SETTINGS_PROBE)
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout)
    for name, value in env.items():
        key = name.removeprefix("MODELSHIP_").lower()
        assert key in settings, f"the server has no setting for {name} (renamed on one side?)"
        parsed = settings[key]
        if isinstance(parsed, bool):
            assert parsed == (value == "true"), (name, value, parsed)
        elif isinstance(parsed, list):
            assert ",".join(map(str, parsed)) == value, (name, value, parsed)
        else:
            assert str(parsed) == value or float(parsed) == float(value), (name, value, parsed)
    assert settings["port"] == 8123 and settings["exit_on_load_failure"] is True


def test_probes_and_the_service_use_the_servers_port_and_paths(node_cluster: Cluster, served: tuple[str, dict]) -> None:
    ns, pod = served
    container = pod["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 8123, "protocol": "TCP"}]
    for probe, path in (("startupProbe", "/health"), ("readinessProbe", "/health"), ("livenessProbe", "/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http", "scheme": "HTTP"}, probe
    # The kubelet's probes passed against the real server (Ready, no liveness restarts) ...
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["restartCount"] == 0
    # ... and the server answers those paths on that port (the API server's pod proxy).
    name = pod["metadata"]["name"]
    for path, want in (("/health", "ready"), ("/health/live", None)):
        answer = PodProxy(node_cluster, ns, name, 8123).get(path)
        assert answer.status_code == 200 and (want is None or answer.json()["status"] == want), answer.text
    slices = node_cluster.get_json("endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=mlp")["items"]
    ports = [p for s in slices for p in s.get("ports") or []]
    assert ports == [{"name": "http", "port": 8123, "protocol": "TCP"}], ports
    addresses = [a for s in slices for e in s["endpoints"] if e["conditions"].get("ready") for a in e["addresses"]]
    assert addresses == [pod["status"]["podIP"]]
    proxy = ServiceProxy(node_cluster, ns, "mlp")
    try:
        assert proxy.predict().status_code == 200
    finally:
        proxy.close()


def test_read_only_root_and_uid_10001_hold_in_the_running_pod(node_cluster: Cluster, served: tuple[str, dict]) -> None:
    ns, pod = served
    name = pod["metadata"]["name"]
    ids = _exec(node_cluster, ns, name, "python3", "-c", "import os; print(os.getuid(), os.getgid())")
    assert ids.stdout.split() == ["10001", "10001"], ids.stdout + ids.stderr
    root = _exec(node_cluster, ns, name, "python3", "-c", "open('/model-cache', 'w')")
    assert root.returncode != 0 and "Read-only file system" in root.stderr, root.stderr
    tmp = _exec(node_cluster, ns, name, "python3", "-c", "open('/tmp/ok', 'w').write('x')")
    assert tmp.returncode == 0, tmp.stderr


def test_sigterm_drains_within_the_grace_period_the_builder_sets(node_cluster: Cluster, served: tuple[str, dict]) -> None:
    """Deleting the pod: readiness is 503 at once while the listener keeps serving for the
    shutdown delay, then the server exits 0 (drained) well before the kubelet's SIGKILL."""
    ns, pod = served
    name, grace = pod["metadata"]["name"], pod["spec"]["terminationGracePeriodSeconds"]
    assert grace == 3 + 7 + 5
    finals: list[dict] = []

    def watch_pod() -> None:
        w = watch.Watch()
        for event in w.stream(node_cluster.core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}",
                              timeout_seconds=grace + 30):
            obj = node_cluster.api.sanitize_for_serialization(event["object"])
            for cs in (obj.get("status") or {}).get("containerStatuses") or []:
                if (cs.get("state") or {}).get("terminated"):
                    finals.append(cs["state"]["terminated"])
            if event["type"] == "DELETED":
                w.stop()

    watcher = threading.Thread(target=watch_pod, daemon=True)
    watcher.start()
    time.sleep(0.5)
    deleted_at = time.time()
    node_cluster.kubectl("-n", ns, "delete", "pod", name, "--wait=false")
    health, served_during_delay = None, False
    proxy = PodProxy(node_cluster, ns, name, 8123)
    try:
        deadline = time.monotonic() + 2.5  # inside the 3 s shutdown delay
        while time.monotonic() < deadline and not (health and served_during_delay):
            h = proxy.get("/health")
            if h.status_code == 503 and h.json().get("status") == "draining":
                health = "draining"
            p = proxy.post("/v1/models/mlp:predict", {"instances": [[0, 0, 0, 0]]})
            served_during_delay = served_during_delay or (p.status_code == 200 and "predictions" in p.json())
    finally:
        proxy.close()
    assert health == "draining", "readiness did not turn 503 (draining) on SIGTERM"
    assert served_during_delay, "the listener stopped serving before the shutdown delay ended"
    watcher.join(timeout=grace + 40)
    assert finals, "never saw the container's termination"
    final = finals[-1]
    took = parse_time(final["finishedAt"]).timestamp() - deleted_at
    assert final["exitCode"] == 0, final
    assert took < grace, f"the server took {took:.1f}s to exit, the grace period is {grace}s"
