"""Helpers for the node tier: the test images, traffic through the API server's service proxy,
and a steady load that records every answer.

Network rule: requests go to the API server on loopback, which proxies them to a ready
endpoint of the Service (``/api/v1/namespaces/NS/services/NAME:http/proxy/...``): never to a
ClusterIP, never to another address.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes import config as k8s_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
import node_models  # noqa: E402
from e2e_support import API_VERSION, CLUSTER_NAME, Cluster, cluster_sh  # noqa: E402

#: The node tier's own cluster (never the e2e tier's: its KWOK CPU nodes would take the pods).
NODE_CLUSTER = f"{CLUSTER_NAME}-node"
OUT = ROOT / "_out" / f"node-{NODE_CLUSTER}"

TEST_IMAGE = "modelship-models"
#: A tag that no image store has: pulling it is a real ErrImagePull (refused on loopback).
MISSING_TAG = "missing"
SAMPLE = [[0.5, -1.0, 0.25, 2.0], [1.0, 0.0, -0.5, 0.75]]


def real_nodes(cluster: Cluster) -> list[dict]:
    """Ready, schedulable nodes that a kubelet runs (not KWOK fakes)."""
    out = []
    for node in cluster.get_json("nodes")["items"]:
        meta, spec, status = node["metadata"], node.get("spec") or {}, node.get("status") or {}
        fake = (meta.get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake"
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        if not fake and ready and not spec.get("unschedulable"):
            out.append(node)
    return out


def node_trouble(cluster: Cluster) -> list[str]:
    """Why the real nodes could not take a pod now (pressure taints, conditions), if they could not."""
    out = []
    for node in cluster.get_json("nodes")["items"]:
        meta, spec = node["metadata"], node.get("spec") or {}
        if (meta.get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake":
            continue
        for taint in spec.get("taints") or []:
            out.append(f"node {meta['name']} has the taint {taint['key']}:{taint['effect']}")
        for cond in (node.get("status") or {}).get("conditions") or []:
            if cond["type"].endswith("Pressure") and cond["status"] == "True":
                out.append(f"node {meta['name']}: {cond['type']} ({cond.get('message', '')})")
    return out


def namespace_report(cluster: Cluster, ns: str) -> list[tuple[str, str]]:
    """What a failure leaves to read, as (title, text) sections: the namespace's objects, why the
    real node could not take pods (if it could not), and its ModelDeployments."""
    objs = cluster.kubectl("-n", ns, "get", "md,deploy,rs,pods,svc,endpointslices,pdb,events", "-o", "wide",
                           check=False, timeout=30)
    sections = [(f"objects in {ns}", objs.stdout + objs.stderr)]
    trouble = node_trouble(cluster)
    if trouble:  # e.g. disk-pressure: every new pod Pending, whatever the test
        sections.append(("the real node could not take pods", "\n".join(trouble)))
    mds = cluster.kubectl("-n", ns, "get", "md", "-o", "yaml", check=False, timeout=30)
    sections.append((f"ModelDeployments in {ns}", mds.stdout[-8000:]))
    return sections


def parse_time(value: str) -> datetime.datetime:
    """An RFC 3339 timestamp from the API (second precision, 'Z')."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def image(tag: str) -> str:
    return f"{TEST_IMAGE}:{tag}"


@dataclasses.dataclass(frozen=True)
class NodeImages:
    """The test images as built here: tag -> docker image ID, and each model's answers to
    SAMPLE computed locally with torch from the very files baked into the images."""

    ids: dict[str, str]
    expected: dict[str, list[list[float]]]


def build_test_images(docker: Any, server_image: str, models_dir: Path, log: Path) -> NodeImages:
    """One image per tag of node_models.TAGS, FROM the server image (hack/docker/model-images.sh),
    and the v1/v2 models' answers from a second copy of the same reproducible files."""
    import torch  # the node tier's only torch use: the local reference answers

    env = {**os.environ, "SERVER_IMAGE": server_image, "PYTHON": sys.executable}
    with log.open("a") as fh:
        proc = subprocess.run(["bash", str(ROOT / "hack" / "docker" / "model-images.sh")], env=env,
                              stdout=fh, stderr=subprocess.STDOUT, timeout=900, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"hack/docker/model-images.sh failed; see {log}:\n{log.read_text()[-3000:]}")
    ids = {tag: docker("image", "inspect", "--format", "{{.Id}}", image(tag)).stdout.strip() for tag in node_models.TAGS}
    subprocess.run([sys.executable, str(HERE / "node_models.py"), str(models_dir)],
                   env={**os.environ, "PYTHONHASHSEED": "0"}, check=True, timeout=300)
    expected = {}
    for tag in ("v1", "v2"):
        model = torch.jit.load(str(models_dir / tag / "models" / "model.pt")).eval()
        with torch.no_grad():
            expected[tag] = model(torch.tensor(SAMPLE)).tolist()
    return NodeImages(ids, expected)


def load_images(cluster_name: str, images: list[str], log: Path) -> float:
    """Import into the real node's containerd (once per image ID); returns the seconds it took."""
    started = time.monotonic()
    with log.open("a") as fh:
        proc = cluster_sh(cluster_name, "load", *images, stdout=fh, stderr=subprocess.STDOUT, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"hack/cluster.sh load {' '.join(images)} failed; see {log}:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
    return time.monotonic() - started


def md(name: str, tag: str = "v1", *, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    """A ModelDeployment of the test image: the MLP at /models/model.pt, small CPU requests."""
    body: dict[str, Any] = {
        "image": image(tag),
        "replicas": replicas,
        "model": {"name": "mlp", "uri": f"file://{node_models.MODEL_PATH}", "format": "torchscript"},
        # Two cores for everything on this machine: ask for little, so surge pods fit.
        "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "serving": {"batching": {"maxBatchSize": 8, "maxLatencyMs": 2}},
        "probes": {"startupPeriodSeconds": 1, "readiness": {"periodSeconds": 1}},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}


def serving_stable(cluster: Cluster, ns: str, img: str, name: str = "mlp") -> bool:
    """``img`` serves alone: the Deployment carries it, every replica is updated and available,
    and no pod of another image is left (after a rollback, Ready stays False by design: spec
    still names the image that failed)."""
    dep = cluster.deployment(ns, name)
    st, want = dep.get("status") or {}, dep["spec"]["replicas"]
    template = {c["image"] for c in dep["spec"]["template"]["spec"]["containers"]}
    pods = cluster.pods(ns, f"app.kubernetes.io/instance={name}")
    return (
        template == {img}
        and st.get("observedGeneration") == dep["metadata"]["generation"]
        and st.get("updatedReplicas") == st.get("availableReplicas") == st.get("replicas") == want
        and all(c["image"] == img for p in pods for c in p["spec"]["containers"])
        and (cluster.md(ns, name).get("status") or {}).get("image") == img
    )


class ApiProxy:
    """HTTP through the API server's proxy (``/api/v1/namespaces/NS/services|pods/NAME:PORT/proxy``)
    with the kubeconfig's credentials; answers come back as the server sent them (status, body)."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, port: str | int = "http", *,
                 kind: str = "services") -> None:
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
        headers = {}
        if cfg.api_key.get("authorization"):
            headers["Authorization"] = cfg.api_key["authorization"]
        tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            tls.load_cert_chain(cfg.cert_file, cfg.key_file)
        self.base = f"{cfg.host}/api/v1/namespaces/{namespace}/{kind}/{name}:{port}/proxy"
        self.client = httpx.Client(verify=tls, headers=headers, timeout=10)

    def get(self, path: str) -> httpx.Response:
        return self.client.get(self.base + path)

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.client.post(self.base + path, json=body)

    def predict(self, model: str = "mlp", instances: list[list[float]] = SAMPLE) -> httpx.Response:
        return self.post(f"/v1/models/{model}:predict", {"instances": instances})

    def close(self) -> None:
        self.client.close()


def ServiceProxy(cluster: Cluster, namespace: str, service: str, port: str = "http") -> ApiProxy:
    """The Service's proxy: the API server picks a ready endpoint for each request."""
    return ApiProxy(cluster, namespace, service, port, kind="services")


def PodProxy(cluster: Cluster, namespace: str, pod: str, port: int) -> ApiProxy:
    """One pod's proxy: straight to that pod's port, ready or not."""
    return ApiProxy(cluster, namespace, pod, port, kind="pods")


@dataclasses.dataclass
class Answer:
    at: float
    status: int
    #: "v1", "v2" (which model answered), "other" (a 200 that matches neither) or the error text
    kind: str


class SteadyLoad:
    """``rate`` predictions per second through the service proxy, from a few threads, until
    stopped; every answer is recorded and classified by which model produced it."""

    def __init__(self, proxy: ApiProxy, expected: dict[str, list[list[float]]], rate: float = 25, threads: int = 4):
        self.proxy, self.expected, self.rate, self.threads = proxy, expected, rate, threads
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _classify(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        got = response.json().get("predictions")
        for name, want in self.expected.items():
            if close(got, want):
                return name
        return "other"

    def _run(self, offset: float) -> None:
        period = self.threads / self.rate
        next_at = time.monotonic() + offset
        while not self._stop.is_set():
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += period
            at = time.monotonic()
            try:
                response = self.proxy.predict()
                answer = Answer(at, response.status_code, self._classify(response))
            except httpx.HTTPError as exc:
                answer = Answer(at, 0, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.answers.append(answer)

    def __enter__(self) -> SteadyLoad:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i / self.rate,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return sorted(self.answers, key=lambda a: a.at)

    def failures(self) -> list[Answer]:
        return [a for a in self.snapshot() if a.status != 200 or a.kind not in self.expected]


def close(got: Any, want: list[list[float]], tol: float = 1e-5) -> bool:
    try:
        return len(got) == len(want) and all(
            len(g) == len(w) and all(abs(float(a) - b) <= tol * max(1.0, abs(b)) for a, b in zip(g, w, strict=True))
            for g, w in zip(got, want, strict=True)
        )
    except (TypeError, ValueError):
        return False


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    start = time.monotonic()
    try:
        yield out
    finally:
        out["seconds"] = time.monotonic() - start
