"""Real failures on the real kubelet, each rolled back while the stable revision keeps serving:

* a tag that is in no image store: the kubelet's pull is refused (loopback), ErrImagePull
* weights that do not load: the server exits with its load-failure code, the kubelet restarts it
* a model that loads slower than probes.startupTimeoutSeconds: the startup budget runs out

The tests assert the rollback and that its evidence was seen; how long it took is measured by
bench/node.py (target: 30 s from first evidence to stable serving), never asserted here.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import Cluster, OperatorProcess, condition, wait_until
from node_support import MISSING_TAG, NodeImages, ServiceProxy, SteadyLoad, image, md, serving_stable

READY_S = 180
ROLLBACK_S = 150

CASES = {
    # name: (spec changes, the history reason, what the pods show on the way)
    "missing-tag": ({"image": image(MISSING_TAG)}, "ImagePullFailed", ("ErrImagePull", "ImagePullBackOff")),
    "broken-weights": ({"image": image("broken")}, "ModelLoadFailed", ("failed to load",)),
    "slow-load": (
        {
            "image": image("slow"),
            "model": {"name": "mlp", "uri": "file:///models/model.pt", "format": "handler",
                      "handler": "slow_handler:Model"},
            "probes": {"startupTimeoutSeconds": 8, "startupPeriodSeconds": 1, "readiness": {"periodSeconds": 1}},
        },
        "StartupTimeout",
        ("Startup probe failed",),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_real_failure_rolls_back_while_the_stable_revision_serves(
    case: str, node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, ns: str
) -> None:
    change, reason, signs = CASES[case]
    manifest = {**md("mlp", "v1"), "metadata": {"name": "mlp", "namespace": ns}}
    node_cluster.apply(manifest)
    wait_until(lambda: _ready_on(node_cluster, ns, image("v1")), timeout=READY_S, what="md/mlp Ready on v1")

    proxy = ServiceProxy(node_cluster, ns, "mlp")
    try:
        with SteadyLoad(proxy, {"v1": test_images.expected["v1"]}, rate=20) as load:
            bad = {**manifest, "spec": {**manifest["spec"], **change}}
            node_cluster.apply(bad)
            entry = wait_until(lambda: _rolled_back(node_cluster, ns), timeout=ROLLBACK_S,
                               what=f"md/mlp to roll back ({case})")
            wait_until(lambda: serving_stable(node_cluster, ns, image("v1")), timeout=READY_S,
                       what="v1 serving alone again (Deployment back on v1, no failed pod left)")
    finally:
        proxy.close()

    assert entry["image"] == change["image"] and entry["reason"] == reason, entry
    obj = node_cluster.md(ns, "mlp")
    degraded, ready = condition(obj, "Degraded"), condition(obj, "Ready")
    assert degraded and degraded["reason"] == "RolledBack", degraded
    # Ready stays False: spec asks for the bad image, which does not serve (kstatus: not done).
    assert ready and ready["status"] == "False" and obj["status"]["image"] == image("v1"), ready
    # The evidence was the real kubelet's: its Events say so.
    messages = " ".join(e.get("message", "") for e in node_cluster.get_json("events", "-n", ns)["items"])
    assert any(sign in messages for sign in signs), (signs, messages[-2000:])
    # spec still names the bad revision (GitOps owns spec); the Deployment serves v1.
    assert obj["spec"]["image"] == change["image"]
    answers = load.snapshot()
    assert load.failures() == [], load.failures()[:10]
    assert len(answers) >= 20, "the load never ran"


def _ready_on(cluster: Cluster, ns: str, img: str) -> bool:
    obj = cluster.md(ns, "mlp")
    ready = condition(obj, "Ready")
    return bool(ready and ready["status"] == "True" and (obj.get("status") or {}).get("image") == img)


def _rolled_back(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    history = (cluster.md(ns, "mlp").get("status") or {}).get("history") or []
    return next((e for e in history if e.get("outcome") == "RolledBack"), None)
