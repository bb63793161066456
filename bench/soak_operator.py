"""Operator soak, long mode (issue 13 item 4): 1,000 ModelDeployments through >= 10 minutes of resync cycles.

    .venv/bin/python bench/soak_operator.py [--n 1000] [--minutes 10] [--resync 30]     (make soak-operator)

On the local control plane (hack/cluster.sh, the e2e tier's cluster; or $KUBECONFIG): extra fake
nodes hold the pods, a fresh operator process runs with the given resync, the N objects are
created at once and, once all are Ready, the operator is sampled every few seconds (memory,
threads, descriptors, work queue, cache; tests/e2e/soak_support.py). Writes the raw samples and
the figures to bench/results/soak-operator-*.json and the curves to docs/operator-soak.svg, and
exits 1 if the judge saw growth. The bounded version runs in `make test`
(tests/e2e/test_operator_soak.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from e2e_support import IMAGE_OK  # noqa: E402
from scale import bench_cluster, bench_nodes, bulk_create  # noqa: E402
from soak_support import Sample, SoakOperator, SoakResult, soak  # noqa: E402
from svg import Panel, chart  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PLOT = ROOT / "docs" / "operator-soak.svg"


def plot(result: SoakResult) -> str:
    pts = result.samples

    def series(get: Callable[[Sample], float]) -> list[tuple[float, float]]:
        return [(s.t, float(get(s))) for s in pts]

    return chart(
        f"modelship operator, {result.n} ModelDeployments, resync {result.resync_s:g} s "
        f"(warm-up: first {result.warmup_s:g} s)",
        [
            Panel("resident memory (MB)", {"RSS": series(lambda s: s.rss_mb)}),
            Panel("threads and open file descriptors", {"threads": series(lambda s: s.threads),
                                                        "fds": series(lambda s: s.fds)}),
            Panel("work queue", {"scheduled (resyncs, polls)": series(lambda s: s.queue_scheduled),
                                 "due or running": series(lambda s: s.queue_depth)}),
            Panel("watch cache entries", {part: series(lambda s, part=part: s.cache.get(part, 0))
                                          for part in (pts[0].cache if pts else {})}),
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="ModelDeployments (default 1000)")
    parser.add_argument("--minutes", type=float, default=10, help="sampling time after the warm-up (default 10)")
    parser.add_argument("--resync", type=float, default=30, help="the operator's --resync-seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=120, help="seconds of samples not judged (default 120)")
    parser.add_argument("--sample", type=float, default=5, help="seconds between samples (default 5)")
    parser.add_argument("--rss-tolerance", type=float, default=0.05, help="allowed RSS growth (default 0.05)")
    args = parser.parse_args()

    cluster = bench_cluster()

    ns = f"soak-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    bench_nodes(cluster, create=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    op = SoakOperator(cluster, ROOT / "_out" / "bench" / f"operator-soak-{stamp}.log",
                      ["--resync-seconds", str(args.resync)])
    try:
        op.start()
        result = soak(cluster, ns, op, n=args.n, resync_s=args.resync, duration_s=args.warmup + args.minutes * 60,
                      warmup_s=args.warmup, sample_s=args.sample, rss_tolerance=args.rss_tolerance, image=IMAGE_OK,
                      create=lambda items: bulk_create(cluster, ns, items), progress=lambda line: print(line, flush=True))
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
        bench_nodes(cluster, create=False)
    out = RESULTS / f"soak-operator-{stamp}.json"
    result.write(out)
    PLOT.write_text(plot(result))
    print(json.dumps(result.figures(), indent=1))
    print(f"wrote {out} and {PLOT}")
    for problem in result.problems():
        print(f"PROBLEM: {problem}")
    return 1 if result.problems() else 0


if __name__ == "__main__":
    raise SystemExit(main())
