"""Scale benchmark: N ModelDeployments applied at once, against a floor measured in the same run.

    .venv/bin/python bench/scale.py [--sizes 1,100,1000]        (make bench-scale)

For each N, on the local control plane (hack/cluster.sh; or $KUBECONFIG):

floor     the N Deployments the operator would create (built by the operator's own
          builders, owner references stripped, before the clock starts) created at once
          straight on the API server (16 concurrent POSTs, no client throttling): time until
          all exist, all Ready.
operator  a fresh operator process; the N ModelDeployments created at once the same way:
          time until all N Deployments exist, until all N ModelDeployments are Ready,
          the operator's peak RSS (VmHWM) and its CPU time until then (on a machine shared
          with other work, CPU time moves much less than wall time).

MODELSHIP_BENCH_TUNE=limit=64,batch=0.5 runs the operator with those kopf settings (worker
limit, batch window) instead of its defaults; MODELSHIP_BENCH_ARGS="--workers 16" adds
operator flags.

Both phases run in their own namespace, which is deleted (and awaited) before the next
phase so they never compete. Extra fake nodes (kwok-bench-*) hold the N pods and are
removed at the end. Not a test: it prints a table and writes bench/results/scale-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from e2e_support import (  # noqa: E402
    CLUSTER_NAME,
    CRD_FILE,
    CRD_NAME,
    GROUP,
    IMAGE_OK,
    LOCAL_KUBECONFIG,
    PLURAL,
    VERSION,
    Cluster,
    OperatorProcess,
    cluster_sh,
    model_deployment,
    wait_until,
)
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes import watch  # noqa: E402
from kubernetes.client import ApiClient  # noqa: E402

from modelship_operator.core import api, builders  # noqa: E402

OUT = ROOT / "_out" / "bench"
RESULTS = ROOT / "bench" / "results"
BENCH_NODES = 5
PODS_PER_BENCH_NODE = 250
#: Concurrent POSTs for "applied at once" (same for the floor and the operator run).
CREATE_THREADS = 16


@dataclass
class Row:
    n: int
    floor_apply_s: float
    floor_exist_s: float
    floor_ready_s: float
    create_floor_exist_s: float
    op_apply_s: float
    op_exist_s: float
    op_ready_s: float
    op_peak_rss_mb: float
    op_cpu_exist_s: float = float("nan")
    """The operator's CPU time (user + system) from the bulk create until all Deployments exist."""
    op_cpu_ready_s: float = float("nan")
    """...and until all ModelDeployments are Ready: a measure of its own work that the other
    processes on a shared machine do not move as much as they move wall times."""

    @property
    def exist_ratio(self) -> float:
        return self.op_exist_s / self.floor_exist_s if self.floor_exist_s else float("nan")

    @property
    def create_ratio(self) -> float:
        return self.op_exist_s / self.create_floor_exist_s if self.create_floor_exist_s else float("nan")


class Tracker:
    """Watches one resource in one namespace; records when each name was first seen / done."""

    def __init__(self, list_fn: Any, args: tuple[Any, ...], done: Any):
        self.list_fn, self.args, self.done = list_fn, args, done
        self.seen: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Tracker:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        rv = None
        while not self._stop.is_set():
            w = watch.Watch()
            kwargs: dict[str, Any] = {"timeout_seconds": 30, "allow_watch_bookmarks": True}
            if rv:
                kwargs["resource_version"] = rv
            else:
                initial = self.list_fn(*self.args)
                if not isinstance(initial, dict):  # typed list -> plain dicts, as watch's raw_object
                    initial = ApiClient().sanitize_for_serialization(initial)
                rv = initial["metadata"]["resourceVersion"]
                for obj in initial.get("items") or []:  # after a dropped watch: catch up
                    self._record(obj)
                kwargs["resource_version"] = rv
                self._ready.set()
            try:
                for event in w.stream(self.list_fn, *self.args, **kwargs):
                    obj = event["raw_object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] == "BOOKMARK":
                        continue
                    self._record(obj)
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001 - a dropped watch resumes from rv
                rv = None
                self._ready.set()

    def _record(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        now = time.monotonic()
        self.seen.setdefault(name, now)
        if name not in self.finished and self.done(obj):
            self.finished[name] = now

    def stop(self) -> None:
        self._stop.set()


def deployment_ready(obj: dict[str, Any]) -> bool:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = spec.get("replicas", 1)
    return status.get("readyReplicas", 0) == want and status.get("updatedReplicas", 0) == want


def md_ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def manifests(n: int) -> list[dict[str, Any]]:
    return [model_deployment(f"m{i:04d}", image=IMAGE_OK) for i in range(n)]


def floor_deployments(mds: list[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    out = []
    for md in mds:
        obj = api.ModelDeployment.model_validate(
            {**md, "metadata": {"name": md["metadata"]["name"], "namespace": ns, "uid": str(uuid.uuid4())}}
        )
        dep = builders.desired_deployment(obj)
        dep["metadata"].pop("ownerReferences")  # no owner exists: GC would delete them
        out.append(dep)
    return out


def bulk_create(cluster: Cluster, ns: str, items: list[dict[str, Any]], *, apply: bool = False) -> float:
    """Create every object at once: POSTs (``apply``: server-side applies) from a thread pool,
    no client-side throttling.

    kubectl apply of a List goes one object at a time behind client-side rate
    limiting, which would measure kubectl, not the API server or the operator.
    """
    api = _bench_client(cluster)
    apps, custom = k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)

    def create(obj: dict[str, Any]) -> None:
        if obj["kind"] == "Deployment" and apply:
            apps.patch_namespaced_deployment(
                obj["metadata"]["name"], ns, obj, field_manager="bench", force=True,
                _content_type="application/apply-patch+yaml", _preload_content=False,
            ).drain_conn()
        elif obj["kind"] == "Deployment":
            apps.create_namespaced_deployment(ns, obj, field_manager="bench", _preload_content=False).drain_conn()
        else:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj, field_manager="bench")

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=CREATE_THREADS) as pool:
        list(pool.map(create, items))
    return time.monotonic() - start


def _bench_client(cluster: Cluster) -> ApiClient:
    config = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=config)
    config.connection_pool_maxsize = CREATE_THREADS
    return ApiClient(config)


def wait_all(tracker: Tracker, n: int, attr: str, timeout: float, what: str) -> float:
    wait_until(lambda: len(getattr(tracker, attr)) >= n, timeout=timeout, what=f"{what} ({n})", interval=0.1)
    return max(getattr(tracker, attr).values())


def delete_namespace(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")
    wait_until(
        lambda: cluster.kubectl("get", "namespace", ns, check=False).returncode != 0,
        timeout=900, what=f"namespace {ns} deleted", interval=1,
    )


def bench_nodes(cluster: Cluster, create: bool) -> None:
    names = [f"kwok-bench-{i}" for i in range(BENCH_NODES)]
    if not create:
        cluster.kubectl("delete", "node", *names, "--ignore-not-found", check=False)
        return
    cap = {"cpu": "1000", "memory": "4Ti", "pods": str(PODS_PER_BENCH_NODE)}
    nodes = [
        {"apiVersion": "v1", "kind": "Node",
         "metadata": {"name": n, "annotations": {"kwok.x-k8s.io/node": "fake"},
                      "labels": {"kubernetes.io/hostname": n, "type": "kwok", "modelship.io/bench": "true"}},
         "status": {"capacity": cap, "allocatable": cap}}
        for n in names
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
    cluster.kubectl("wait", "--for=condition=Ready", "node", "-l", "modelship.io/bench=true", "--timeout=60s")


class RssSampler:
    def __init__(self, pid: int):
        self.pid, self.peak_kb = pid, 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _read(self, key: str) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self._read("VmRSS"), self._read("VmHWM"))
            time.sleep(0.1)

    def cpu(self) -> float:
        """CPU seconds (user + system) the process has used so far."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        self.peak_kb = max(self.peak_kb, self._read("VmHWM"))
        self._stop.set()
        return self.peak_kb / 1024


#: Runs the operator's own main() with kopf settings overridden from MODELSHIP_BENCH_TUNE
#: ("limit=64,batch=0.5"; operator flags such as --workers go in MODELSHIP_BENCH_ARGS).
TUNED_LAUNCHER = """
import os, sys
from modelship_operator import __main__ as m
from modelship_operator.runtime import settings as s
tune = dict(kv.split("=") for kv in os.environ.get("MODELSHIP_BENCH_TUNE", "").split(",") if kv)
plain = s.Settings.kopf_settings
def tuned(self):
    k = plain(self)
    if "limit" in tune: k.queueing.worker_limit = int(tune["limit"])
    if "batch" in tune: k.batching.batch_window = float(tune["batch"])
    return k
s.Settings.kopf_settings = tuned
m.main(sys.argv[1:] + os.environ.get("MODELSHIP_BENCH_ARGS", "").split())
"""


def run_size(cluster: Cluster, n: int, timeout: float) -> Row:
    tag = uuid.uuid4().hex[:5]
    mds = manifests(n)
    OUT.mkdir(parents=True, exist_ok=True)

    # --- create floor: the same Deployments POSTed (cheaper for the API server than an apply;
    # reported beside the apply floor, only until they exist).
    ns = f"bench-create-{n}-{tag}"
    cluster.kubectl("create", "namespace", ns)
    deps = Tracker(cluster.apps.list_namespaced_deployment, (ns,), lambda o: deployment_ready(o)).start()
    objects = floor_deployments(mds, ns)  # built before the clock starts, as the operator's phase builds nothing on it
    t0 = time.monotonic()
    bulk_create(cluster, ns, objects)
    create_floor_exist = wait_all(deps, n, "seen", timeout, "floor Deployments exist") - t0
    deps.stop()
    print(f"  create    N={n}: exist {create_floor_exist:.2f}s", flush=True)
    delete_namespace(cluster, ns)

    # --- floor: the same Deployments server-side applied straight to the API server.
    ns = f"bench-floor-{n}-{tag}"
    cluster.kubectl("create", "namespace", ns)
    deps = Tracker(cluster.apps.list_namespaced_deployment, (ns,), lambda o: deployment_ready(o)).start()
    objects = floor_deployments(mds, ns)
    t0 = time.monotonic()
    floor_apply = bulk_create(cluster, ns, objects, apply=True)
    floor_exist = wait_all(deps, n, "seen", timeout, "floor Deployments exist") - t0
    floor_ready = wait_all(deps, n, "finished", timeout, "floor Deployments Ready") - t0
    deps.stop()
    print(f"  floor     N={n}: apply {floor_apply:.2f}s, exist {floor_exist:.2f}s, ready {floor_ready:.2f}s", flush=True)
    delete_namespace(cluster, ns)

    # --- operator: a fresh process, the ModelDeployments bulk-applied.
    ns = f"bench-op-{n}-{tag}"
    cluster.kubectl("create", "namespace", ns)
    tuned = os.environ.get("MODELSHIP_BENCH_TUNE") or os.environ.get("MODELSHIP_BENCH_ARGS")
    entry = ("-c", TUNED_LAUNCHER) if tuned else ("-m", "modelship_operator")
    op = OperatorProcess(cluster, OUT / f"operator-{n}.log", entry=entry)
    op.start()
    assert op.proc is not None
    sampler = RssSampler(op.proc.pid)
    try:
        # Warm-up: one object through the whole path, so the timed run starts with kopf watching.
        warm = model_deployment("warmup")
        cluster.kubectl("-n", ns, "apply", "--server-side", "--field-manager=bench", "-f", "-", input=json.dumps(warm))
        wait_until(lambda: cluster.deployment(ns, "warmup"), timeout=120, what="warm-up Deployment")
        deps = Tracker(cluster.apps.list_namespaced_deployment, (ns,), lambda o: deployment_ready(o)).start()
        ready = Tracker(cluster.custom.list_namespaced_custom_object, (GROUP, VERSION, ns, PLURAL), md_ready).start()
        cpu0 = sampler.cpu()
        t0 = time.monotonic()
        op_apply = bulk_create(cluster, ns, mds)
        names = {m["metadata"]["name"] for m in mds}
        wait_until(lambda: names <= deps.seen.keys(), timeout=timeout, what=f"{n} Deployments from the operator", interval=0.1)
        op_exist = max(deps.seen[k] for k in names) - t0
        cpu_exist = sampler.cpu() - cpu0
        wait_until(lambda: names <= ready.finished.keys(), timeout=timeout, what=f"{n} ModelDeployments Ready", interval=0.1)
        op_ready = max(ready.finished[k] for k in names) - t0
        cpu_ready = sampler.cpu() - cpu0
        deps.stop()
        ready.stop()
        rss = sampler.stop()
        print(f"  operator  N={n}: apply {op_apply:.2f}s, exist {op_exist:.2f}s, ready {op_ready:.2f}s, "
              f"peak RSS {rss:.0f} MB, CPU {cpu_exist:.1f}s to exist, {cpu_ready:.1f}s to Ready", flush=True)
        # While the operator still runs, as a user would delete them.
        delete_namespace(cluster, ns)
    finally:
        sampler.stop()
        op.stop()
    return Row(n, floor_apply, floor_exist, floor_ready, create_floor_exist, op_apply, op_exist, op_ready, rss,
               cpu_exist, cpu_ready)


def bench_cluster() -> Cluster:
    """$KUBECONFIG's cluster when it names another one, else the local control plane (started
    if need be); the committed CRD installed and Established."""
    user = os.environ.get("KUBECONFIG")
    if user and Path(user).resolve() != LOCAL_KUBECONFIG.resolve():
        cluster = Cluster(kubeconfig=Path(user), local=False)
    else:
        if cluster_sh(CLUSTER_NAME, "up", capture_output=False).returncode != 0:
            raise SystemExit(f"hack/cluster.sh up failed (cluster {CLUSTER_NAME})")
        cluster = Cluster(kubeconfig=LOCAL_KUBECONFIG, local=True)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return cluster


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,1000", help="comma-separated N values")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per wait")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    cluster = bench_cluster()

    bench_nodes(cluster, create=True)
    rows: list[Row] = []
    try:
        for n in sizes:
            print(f"N={n}", flush=True)
            rows.append(run_size(cluster, n, args.timeout))
    finally:
        bench_nodes(cluster, create=False)

    print()
    print("| N | floor (apply): Deployments exist | operator: Deployments exist | ratio | floor (create) | ratio "
          "| floor: Deployments Ready | operator: MDs Ready | operator peak RSS | operator CPU (exist / Ready) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.n} | {r.floor_exist_s:.2f} s | {r.op_exist_s:.2f} s | {r.exist_ratio:.2f}x "
            f"| {r.create_floor_exist_s:.2f} s | {r.create_ratio:.2f}x "
            f"| {r.floor_ready_s:.2f} s | {r.op_ready_s:.2f} s | {r.op_peak_rss_mb:.0f} MB "
            f"| {r.op_cpu_exist_s:.1f} s / {r.op_cpu_ready_s:.1f} s |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"scale-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps([asdict(r) | {"exist_ratio": r.exist_ratio, "create_ratio": r.create_ratio} for r in rows], indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
