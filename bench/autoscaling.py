#!/usr/bin/env python3
"""Autoscaling on the real node: time to scale up under a step of load (issue 15).

    .venv/bin/python bench/autoscaling.py [--rounds N] [--rate R]

On the node tier's cluster (hack/cluster.sh up --real-node, metrics-server from
hack/cluster.sh metrics-up, the operator as a local process), one autoscaled ModelDeployment
(tests/node/hpa_support.py: CPU utilization 20% of a 100m request, 1-3 pods, scale-down after
20 s) gets a step of R requests/s through the API server's service proxy:

* **time to scale up**: from the first request of the step until the Deployment asks for more
  than one pod (the HPA controller's write). It adds up: metrics-server's scrape interval
  (10 s here), the kubelet's CPU window, the HPA's sync period (5 s here, 15 s by default).
* **time to scale down**: from the end of the load until the Deployment is back at one pod.

Raw results (with every replica count and HPA reading seen): bench/autoscaling/results/
<UTC time>.json, committed; bench/README.md quotes one run. Timing goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import statistics
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "node"))
sys.path.insert(0, str(ROOT / "tests" / "images"))
from e2e_support import OperatorProcess, install_crd, local_cluster, wait_until  # noqa: E402
from hpa_support import (  # noqa: E402
    AUTOSCALING,
    autoscaled_md,
    metrics_server_down,
    metrics_server_up,
    settled_at_one_pod,
    step_of_load,
)
from images_support import Docker, script  # noqa: E402
from node_support import NODE_CLUSTER, OUT, build_test_images, image, load_images  # noqa: E402

RESULTS = ROOT / "bench" / "autoscaling" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="steps of load, each on a fresh ModelDeployment")
    parser.add_argument("--rate", type=float, default=40, help="requests per second during the step")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    docker = Docker()
    runs = []
    with local_cluster(NODE_CLUSTER, OUT / "bench-cluster-up.log", real_node=True) as cluster:
        script("build.sh", "server", log=OUT / "bench-build-server.log", timeout=3600)
        images = build_test_images(docker, "modelship-server:dev", Path(OUT / "bench-models"), OUT / "bench-images.log")
        load_images(NODE_CLUSTER, [image("v1")], OUT / "bench-images.log")
        install_crd(cluster)
        error = metrics_server_up(cluster)
        if error:
            print(error, file=sys.stderr)
            return 1
        op = OperatorProcess(cluster, OUT / "bench-autoscaling-operator.log")
        op.start()
        try:
            for _ in range(args.rounds):
                ns = f"bench-hpa-{uuid.uuid4().hex[:5]}"
                cluster.kubectl("create", "namespace", ns)
                try:
                    cluster.apply({**autoscaled_md("mlp"), "metadata": {"name": "mlp", "namespace": ns}})
                    wait_until(lambda ns=ns: settled_at_one_pod(cluster, ns, "mlp"), timeout=420, interval=2,
                               what="the HPA to read the pod's CPU and settle at one pod")
                    run = step_of_load(cluster, ns, "mlp", {"v1": images.expected["v1"]}, rate=args.rate)
                    runs.append(dataclasses.asdict(run))
                    print(f"round {len(runs)}: up in {run.up_s} s (peak {run.peak_replicas} pods), "
                          f"down in {run.down_s} s; {run.answers_ok} answers, {run.answers_failed} failed")
                finally:
                    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        finally:
            op.stop()
            metrics_server_down(cluster)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{started:%Y-%m-%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"started": started.isoformat(), "rate": args.rate, "autoscaling": AUTOSCALING,
                               "hpa_sync_period_s": 5, "metric_resolution_s": 10, "runs": runs}, indent=2))
    ups = [r["up_s"] for r in runs]
    downs = [r["down_s"] for r in runs]
    print(f"\n{len(runs)} steps of {args.rate} requests/s; raw: {out.relative_to(ROOT)}")
    print(f"time to scale up: median {statistics.median(ups):.1f} s, max {max(ups):.1f} s")
    print(f"time to scale down after the load: median {statistics.median(downs):.1f} s, max {max(downs):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
