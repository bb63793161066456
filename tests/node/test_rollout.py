"""Zero downtime, measured: v1 -> v2 (another model, so answers change) on real pods while a
steady load goes through the Service. Every request must succeed.

What makes it hold: maxUnavailable 0 (a new pod is Ready before an old one goes), readiness on
/health (model loaded and warmed), and on SIGTERM the server answers 503 to readiness at once
but keeps serving for serving.shutdownDelaySeconds, so the endpoint is withdrawn before its
listener closes; then it drains what is in flight within the grace period the builder sets.
"""

from __future__ import annotations

import json
import time

from e2e_support import Cluster, OperatorProcess, condition, wait_until
from node_support import OUT, NodeImages, ServiceProxy, SteadyLoad, image, md

READY_S = 180
RATE = 25  # requests per second, above the floor of 20


def test_rolling_v1_to_v2_under_load_drops_no_request(
    node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, ns: str
) -> None:
    manifest = {**md("mlp", "v1", replicas=2), "metadata": {"name": "mlp", "namespace": ns}}
    node_cluster.apply(manifest)
    wait_until(lambda: _ready_on(node_cluster, ns, "v1"), timeout=READY_S, what="md/mlp Ready on v1")

    proxy = ServiceProxy(node_cluster, ns, "mlp")
    try:
        with SteadyLoad(proxy, test_images.expected, rate=RATE) as load:
            wait_until(lambda: len(load.snapshot()) >= RATE * 3, timeout=30, what="3 s of load on v1")
            started = time.monotonic()
            manifest["spec"]["image"] = image("v2")
            node_cluster.apply(manifest)
            wait_until(lambda: _ready_on(node_cluster, ns, "v2"), timeout=READY_S, what="md/mlp Ready on v2")
            rollout_s = time.monotonic() - started
            # Old pods may still be draining; keep the load on until they are gone.
            wait_until(lambda: len(node_cluster.pods(ns, "app.kubernetes.io/instance=mlp")) == 2,
                       timeout=120, what="the v1 pods to terminate")
            time.sleep(2)
    finally:
        proxy.close()

    answers = load.snapshot()
    span = answers[-1].at - answers[0].at
    kinds = [a.kind for a in answers]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rollout.json").write_text(json.dumps({
        "requests": len(answers), "seconds": round(span, 1), "rate": round(len(answers) / span, 1),
        "rollout_seconds": round(rollout_s, 1), "failures": [a.kind for a in load.failures()],
    }, indent=2))
    print(f"\nrollout v1 -> v2: {rollout_s:.1f} s, {len(answers)} requests over {span:.0f} s "
          f"({len(answers) / span:.1f}/s), {len(load.failures())} failed")
    assert load.failures() == [], load.failures()[:10]
    assert len(answers) / span >= 20, f"the load ran at {len(answers) / span:.1f} requests/s"
    # v1 answered first, v2 last, and once v2 answers only v1's draining pods may still answer v1.
    assert kinds[0] == "v1" and kinds[-1] == "v2"
    first_v2 = kinds.index("v2")
    assert all(k == "v2" for k in kinds[-RATE:]), "the last second still had v1 answers"
    assert "v1" in kinds[:first_v2] and kinds.count("v2") >= RATE


def _ready_on(cluster: Cluster, ns: str, tag: str) -> bool:
    obj = cluster.md(ns, "mlp")
    ready = condition(obj, "Ready")
    status = obj.get("status") or {}
    return bool(ready and ready["status"] == "True" and status.get("image") == image(tag))
