#!/usr/bin/env python3
"""Real-node benchmark: how long the real things take on the real kubelet (issue 11).

    .venv/bin/python bench/node.py [--rounds N]          (make bench-node)

On the node tier's cluster (hack/cluster.sh up --real-node; the operator as a local process),
with the test images (the server image + one baked model per tag):

* **apply -> first prediction**: a fresh ModelDeployment until its Service answers.
* **rollout under load**: v1 -> v2 with 2 replicas while 25 requests/s go through the Service:
  rollout time and failed requests (target 0).
* **time to rollback**, per real failure: from the first evidence the API shows (the pod's
  ErrImagePull; the server's exit with its load-failure code; the end of the startup budget)
  to stable serving again (the Deployment back on v1, no failed pod left, the ModelDeployment
  Ready on v1). Target: <= 30 s. Requests through the Service during it must all succeed.

Raw results go to bench/results/node-<UTC time>.json (gitignored); bench/README.md quotes one run.
Timing goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "node"))
sys.path.insert(0, str(ROOT / "tests" / "images"))
from e2e_support import Cluster, OperatorProcess, condition, install_crd, local_cluster, wait_until  # noqa: E402
from images_support import Docker, script  # noqa: E402
from node_support import (  # noqa: E402
    MISSING_TAG,
    NODE_CLUSTER,
    OUT,
    ServiceProxy,
    SteadyLoad,
    build_test_images,
    image,
    load_images,
    md,
    namespace_report,
    parse_time,
    serving_stable,
)

RESULTS = ROOT / "bench" / "results"
TARGET_ROLLBACK_S = 30.0

FAILURES: dict[str, dict[str, Any]] = {
    "missing tag (ErrImagePull)": {"image": image(MISSING_TAG)},
    "weights fail to load (server exits)": {"image": image("broken")},
    "load slower than the startup budget": {
        "image": image("slow"),
        "model": {"name": "mlp", "uri": "file:///models/model.pt", "format": "handler", "handler": "slow_handler:Model"},
        "probes": {"startupTimeoutSeconds": 8, "startupPeriodSeconds": 1, "readiness": {"periodSeconds": 1}},
    },
}


def first_evidence(pod: dict[str, Any], budget_s: float) -> float | None:
    """When the API first showed this pod failing (epoch seconds), or None."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
            return time.time()
        for state in (cs.get("state"), cs.get("lastState")):
            term = (state or {}).get("terminated") or {}
            if term.get("exitCode") == 3 and term.get("finishedAt"):
                return parse_time(term["finishedAt"]).timestamp()
        running = (cs.get("state") or {}).get("running") or {}
        if running and not cs.get("started"):
            began = parse_time(running["startedAt"]).timestamp()
            if time.time() >= began + budget_s:
                return began + budget_s
    return None


def ready_on(cluster: Cluster, ns: str, tag: str) -> bool:
    obj = cluster.md(ns, "mlp")
    ready = condition(obj, "Ready")
    return bool(ready and ready["status"] == "True" and (obj.get("status") or {}).get("image") == image(tag))


def fresh_namespace(cluster: Cluster) -> str:
    ns = f"bench-node-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    return ns


def apply_to_prediction(cluster: Cluster, expected: dict[str, Any]) -> dict[str, Any]:
    ns = fresh_namespace(cluster)
    proxy = ServiceProxy(cluster, ns, "mlp")
    try:
        start = time.monotonic()
        cluster.apply({**md("mlp", "v1"), "metadata": {"name": "mlp", "namespace": ns}})
        try:
            wait_until(lambda: ready_on(cluster, ns, "v1"), timeout=180, what="Ready", interval=0.1)
        except AssertionError as error:
            state = "\n".join(f"---- {title} ----\n{text}" for title, text in namespace_report(cluster, ns))
            raise AssertionError(f"{error}\n{state}") from None
        ready = time.monotonic() - start
        wait_until(lambda: proxy.predict().status_code == 200, timeout=60, what="a prediction", interval=0.05)
        return {"ready_s": round(ready, 2), "first_prediction_s": round(time.monotonic() - start, 2)}
    finally:
        proxy.close()
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


def rollout_under_load(cluster: Cluster, expected: dict[str, Any]) -> dict[str, Any]:
    ns = fresh_namespace(cluster)
    manifest = {**md("mlp", "v1", replicas=2), "metadata": {"name": "mlp", "namespace": ns}}
    cluster.apply(manifest)
    wait_until(lambda: ready_on(cluster, ns, "v1"), timeout=180, what="Ready on v1")
    proxy = ServiceProxy(cluster, ns, "mlp")
    try:
        with SteadyLoad(proxy, expected, rate=25) as load:
            time.sleep(3)
            start = time.monotonic()
            manifest["spec"]["image"] = image("v2")
            cluster.apply(manifest)
            wait_until(lambda: ready_on(cluster, ns, "v2"), timeout=180, what="Ready on v2", interval=0.1)
            took = time.monotonic() - start
            wait_until(lambda: len(cluster.pods(ns, "app.kubernetes.io/instance=mlp")) == 2, timeout=120,
                       what="old pods gone")
            time.sleep(2)
        answers = load.snapshot()
        span = answers[-1].at - answers[0].at
        return {"rollout_s": round(took, 2), "requests": len(answers), "rate": round(len(answers) / span, 1),
                "failed": len(load.failures())}
    finally:
        proxy.close()
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


def time_to_rollback(cluster: Cluster, expected: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    ns = fresh_namespace(cluster)
    manifest = {**md("mlp", "v1"), "metadata": {"name": "mlp", "namespace": ns}}
    cluster.apply(manifest)
    wait_until(lambda: ready_on(cluster, ns, "v1"), timeout=180, what="Ready on v1")
    budget = float(change.get("probes", {}).get("startupTimeoutSeconds", 600))
    proxy = ServiceProxy(cluster, ns, "mlp")
    evidence_at: float | None = None
    try:
        with SteadyLoad(proxy, {"v1": expected["v1"]}, rate=20) as load:
            cluster.apply({**manifest, "spec": {**manifest["spec"], **change}})
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                pods = [p for p in cluster.pods(ns, "app.kubernetes.io/instance=mlp")
                        if p["spec"]["containers"][0]["image"] == change["image"]]
                if evidence_at is None:
                    seen = [t for p in pods if (t := first_evidence(p, budget)) is not None]
                    evidence_at = min(seen) if seen else None
                if evidence_at is not None and serving_stable(cluster, ns, image("v1")):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"no rollback within 240 s (evidence seen: {evidence_at is not None})")
            stable_at = time.time()
        history = (cluster.md(ns, "mlp").get("status") or {}).get("history") or []
        entry = next(e for e in history if e.get("outcome") == "RolledBack")
        return {"evidence_to_stable_s": round(stable_at - evidence_at, 2), "reason": entry["reason"],
                "requests": len(load.snapshot()), "failed": len(load.failures())}
    finally:
        proxy.close()
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    docker = Docker()
    with local_cluster(NODE_CLUSTER, OUT / "bench-cluster-up.log", real_node=True) as cluster:
        # The server image of this checkout (a no-op when docker's cache has it).
        script("build.sh", "server", log=OUT / "bench-build-server.log", timeout=3600)
        server = "modelship-server:dev"
        images = build_test_images(docker, server, Path(OUT / "bench-models"), OUT / "bench-images.log")
        import_s = load_images(NODE_CLUSTER, [image(t) for t in images.ids], OUT / "bench-images.log")
        install_crd(cluster)
        op = OperatorProcess(cluster, OUT / "bench-operator.log")
        op.start()
        try:
            results: dict[str, Any] = {"import_s": round(import_s, 1), "apply": [], "rollout": [], "rollback": {}}
            for _ in range(args.rounds):
                results["apply"].append(apply_to_prediction(cluster, images.expected))
                results["rollout"].append(rollout_under_load(cluster, images.expected))
                for name, change in FAILURES.items():
                    results["rollback"].setdefault(name, []).append(time_to_rollback(cluster, images.expected, change))
        except AssertionError:
            print(f"operator log (tail):\n{op.log_tail()}", file=sys.stderr)
            raise
        finally:
            op.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"node-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"started": started.isoformat(), "rounds": args.rounds, **results}, indent=2))

    med = statistics.median
    print(f"\nreal node, {args.rounds} rounds (medians); raw: {out.relative_to(ROOT)}")
    print(f"image import (this run): {results['import_s']} s")
    print(f"apply -> Ready {med(r['ready_s'] for r in results['apply']):.1f} s, "
          f"-> first prediction {med(r['first_prediction_s'] for r in results['apply']):.1f} s")
    ro = results["rollout"]
    print(f"rollout v1 -> v2 under load: {med(r['rollout_s'] for r in ro):.1f} s, "
          f"{sum(r['requests'] for r in ro)} requests, {sum(r['failed'] for r in ro)} failed")
    print("\n| failure | reason | evidence -> stable serving (median, max) | target | requests failed |")
    print("|---|---|---:|---:|---:|")
    for name, runs in results["rollback"].items():
        times = [r["evidence_to_stable_s"] for r in runs]
        ok = "met" if max(times) <= TARGET_ROLLBACK_S else "NOT met"
        print(f"| {name} | {runs[0]['reason']} | {med(times):.1f} s, {max(times):.1f} s | <= 30 s ({ok}) "
              f"| {sum(r['failed'] for r in runs)} of {sum(r['requests'] for r in runs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
