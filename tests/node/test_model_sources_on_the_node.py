"""Model sources on the real node: real pods load their model from S3 (MinIO, itself a pod on
the real node, from a FROM-scratch image of the binary `make setup` built) and from a
PersistentVolumeClaim (a hostPath volume this test creates); a bad source ends in the
ModelDeployment's status with the server's own reason; a missing claim is reported, then served
once the claim exists.

Network: the server pods reach MinIO pod to pod on the node's bridge (the FORWARD rule of
hack/cluster/node.sh accepts bridge-local traffic and still drops everything leaving it); the
test writes objects through `kubectl port-forward` (API server -> kubelet -> pod) on loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Cluster, OperatorProcess, condition, wait_until
from node_support import NODE_CLUSTER, OUT, ROOT, NodeImages, PodProxy, ServiceProxy, close, load_images, md

sys.path.insert(0, str(ROOT / "tests" / "server"))
from s3_support import Minio, minio_binary

READY_S = 180
ROLLBACK_S = 150
BUCKET = "models"
KEY = "mlp/v1/model.pt"
MINIO_PORT = 9000
RESTRICTED = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _restricted_ns(cluster: Cluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "modelship.io/node-test=true",
                    "pod-security.kubernetes.io/enforce=restricted")
    return name


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The v1 MLP (node_models.py: the same weights as modelship-models:v1, so the same answers)."""
    out = tmp_path_factory.mktemp("s3-models")
    subprocess.run([sys.executable, str(ROOT / "tests" / "node" / "node_models.py"), str(out)],
                   env={**os.environ, "PYTHONHASHSEED": "0"}, check=True, timeout=300)
    return out / "v1" / "models" / "model.pt"


@pytest.fixture(scope="module")
def minio_image(node_cluster: Cluster, docker: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """MinIO as an image: FROM scratch + the static binary (nothing pulled), on the real node."""
    binary = minio_binary()
    tag = f"modelship-minio:{binary.parent.name.removeprefix('minio-')}"
    ctx = tmp_path_factory.mktemp("minio-image")
    shutil.copy(binary, ctx / "minio")
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY minio /minio\nUSER 10001:10001\nENTRYPOINT ["/minio"]\n')
    docker("build", "--network", "none", "-t", tag, str(ctx), timeout=300)
    if node_cluster.local:
        load_images(NODE_CLUSTER, [tag], OUT / "images.log")
    return tag


@contextlib.contextmanager
def port_forward(cluster: Cluster, ns: str, pod: str, port: int) -> Iterator[int]:
    """``kubectl port-forward`` to a pod on a free loopback port."""
    proc = subprocess.Popen(
        [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "-n", ns, "port-forward",
         "--address", "127.0.0.1", f"pod/{pod}", f":{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not found:
            raise AssertionError(f"port-forward did not start: {line}{proc.stdout.read() if proc.stdout else ''}")
        yield int(found.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def minio_pod(node_cluster: Cluster, minio_image: str, model_file: Path) -> Iterator[tuple[Minio, str]]:
    """MinIO as a restricted pod on the real node, holding the v1 model at s3://models/mlp/v1/model.pt.
    Yields (a client through port-forward, the endpoint as pods reach it: the pod's IP)."""
    ns = _restricted_ns(node_cluster, "node-minio")
    user, password = "modelship-node", secrets.token_hex(16)
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "minio", "namespace": ns},
        "spec": {
            "containers": [{
                "name": "minio", "image": minio_image, "imagePullPolicy": "Never",
                "args": ["server", "/data/export", "--address", f":{MINIO_PORT}", "--certs-dir", "/data/certs"],
                "env": [{"name": "MINIO_ROOT_USER", "value": user}, {"name": "MINIO_ROOT_PASSWORD", "value": password},
                        {"name": "MINIO_BROWSER", "value": "off"}, {"name": "MINIO_UPDATE", "value": "off"},
                        {"name": "HOME", "value": "/data"}],
                "ports": [{"name": "s3", "containerPort": MINIO_PORT}],
                "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": MINIO_PORT}, "periodSeconds": 1},
                "securityContext": {k: v for k, v in RESTRICTED.items() if k not in ("runAsUser", "runAsGroup")},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "data", "emptyDir": {}}],
            "automountServiceAccountToken": False,
        },
    }
    node_cluster.apply(pod)
    try:
        def ready() -> dict[str, Any] | None:
            (got,) = node_cluster.pods(ns)
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in got["status"].get("conditions") or [])
            return got if ok else None

        got = wait_until(ready, timeout=READY_S, what="the MinIO pod Ready")
        with port_forward(node_cluster, ns, "minio", MINIO_PORT) as port:
            client = Minio(f"http://127.0.0.1:{port}", user, password)
            client.put(BUCKET, KEY, model_file)
            yield client, f"http://{got['status']['podIP']}:{MINIO_PORT}"
    finally:
        node_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _s3_model(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"name": "mlp", "uri": f"s3://{BUCKET}/{KEY}", "format": "torchscript",
            "s3": {"endpoint": endpoint, "pathStyle": True, "credentials": {"secretRef": {"name": "s3-keys"}}}, **extra}


def _secret(cluster: Cluster, ns: str, name: str, key_id: str, secret: str) -> None:
    cluster.kubectl("-n", ns, "create", "secret", "generic", name,
                    f"--from-literal=AWS_ACCESS_KEY_ID={key_id}", f"--from-literal=AWS_SECRET_ACCESS_KEY={secret}")


def _ready(cluster: Cluster, ns: str, name: str = "mlp") -> bool:
    cond = condition(cluster.md(ns, name), "Ready")
    return bool(cond and cond["status"] == "True")


def test_a_real_pod_loads_its_model_from_s3_and_a_bad_source_is_named_in_status(
    node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, minio_pod: tuple[Minio, str],
    model_file: Path, ns: str,
) -> None:
    minio, endpoint = minio_pod
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    _secret(node_cluster, ns, "s3-keys", minio.access_key, minio.secret_key)
    good = {**md("mlp", "v1", model=_s3_model(endpoint, sha256=digest)), "metadata": {"name": "mlp", "namespace": ns}}
    node_cluster.apply(good)
    wait_until(lambda: _ready(node_cluster, ns), timeout=READY_S, what="md/mlp Ready from s3")

    proxy = ServiceProxy(node_cluster, ns, "mlp")
    try:
        answer = proxy.predict()
        assert answer.status_code == 200 and close(answer.json()["predictions"], test_images.expected["v1"]), answer.text
    finally:
        proxy.close()
    (pod,) = node_cluster.pods(ns, "app.kubernetes.io/instance=mlp")
    pod_proxy = PodProxy(node_cluster, ns, pod["metadata"]["name"], 8000)
    try:
        download = pod_proxy.get("/health").json()["model"]["download"]
    finally:
        pod_proxy.close()
    size = model_file.stat().st_size
    assert (download["state"], download["bytes_done"], download["bytes_total"]) == ("done", size, size)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"] and minio.secret_key not in str(pod["spec"])

    # A wrong sha256 (the same object, so only the check can refuse it): the server exits with
    # the load-failure code, the rollout names it, and the revision that served keeps serving.
    node_cluster.apply({**good, "spec": {**good["spec"], "model": _s3_model(endpoint, sha256="0" * 64)}})
    entry = wait_until(lambda: _rolled_back(node_cluster, ns), timeout=ROLLBACK_S, what="the bad sha256 rolled back")
    assert entry["reason"] == "ModelLoadFailed", entry
    said = _status_text(node_cluster, ns)
    assert "sha256 mismatch" in said and digest in said, said[-3000:]
    wait_until(lambda: _ready_on_revision(node_cluster, ns, 1), timeout=READY_S, what="revision 1 serving again")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"secret": "wrong"}, ("access denied", "SignatureDoesNotMatch")),
        ({"key": "mlp/absent.pt"}, ("the object does not exist (NoSuchKey)",)),
    ],
    ids=["bad-credentials", "missing-key"],
)
def test_a_bad_s3_source_fails_the_pod_with_its_reason_in_status(
    node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, minio_pod: tuple[Minio, str],
    ns: str, change: dict[str, str], words: tuple[str, ...],
) -> None:
    minio, endpoint = minio_pod
    _secret(node_cluster, ns, "s3-keys", minio.access_key, change.get("secret", minio.secret_key))
    model = _s3_model(endpoint)
    if "key" in change:
        model["uri"] = f"s3://{BUCKET}/{change['key']}"
    node_cluster.apply({**md("mlp", "v1", model=model), "metadata": {"name": "mlp", "namespace": ns}})

    def named() -> str | None:
        text = _status_text(node_cluster, ns)
        return text if all(w in text for w in words) and "ModelLoadFailed" in text else None

    said = wait_until(named, timeout=ROLLBACK_S, what=f"status to name {words}")
    assert f"s3://{BUCKET}/" in said
    (pod,) = node_cluster.pods(ns, "app.kubernetes.io/instance=mlp")
    terminated = [((c.get("lastState") or {}).get("terminated") or (c.get("state") or {}).get("terminated") or {})
                  for c in pod["status"].get("containerStatuses") or []]
    assert any(t.get("exitCode") == 3 and words[0] in (t.get("message") or "") for t in terminated), terminated


def _rolled_back(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    history = (cluster.md(ns, "mlp").get("status") or {}).get("history") or []
    return next((e for e in history if e.get("outcome") == "RolledBack"), None)


def _ready_on_revision(cluster: Cluster, ns: str, revision: int) -> bool:
    status = cluster.md(ns, "mlp").get("status") or {}
    return (status.get("rollout") or {}).get("servingRevision") == revision and status.get("readyReplicas", 0) >= 1


def _status_text(cluster: Cluster, ns: str) -> str:
    """Every message the ModelDeployment's status and Events carry, with the reasons."""
    status = cluster.md(ns, "mlp").get("status") or {}
    parts = [f"{c.get('reason')}: {c.get('message')}" for c in status.get("conditions") or []]
    parts += [f"{e.get('reason')}: {e.get('message')}" for e in status.get("history") or []]
    evidence = (status.get("rollout") or {}).get("evidence") or {}
    parts.append(f"{evidence.get('kind')}: {evidence.get('message')}")
    events = cluster.get_json("events", "-n", ns).get("items") or []
    parts += [f"{e.get('reason')}: {e.get('message')}" for e in events]
    return "\n".join(parts)


@pytest.fixture
def host_models(model_file: Path) -> Iterator[Path]:
    """A folder on this host with the v1 model, readable by the pod's UID (a hostPath volume)."""
    folder = Path(f"/tmp/modelship-node-pv-{uuid.uuid4().hex[:8]}")
    (folder / "mlp").mkdir(parents=True)
    shutil.copy(model_file, folder / "mlp" / "model.pt")
    for path in (folder, folder / "mlp"):
        path.chmod(0o755)
    (folder / "mlp" / "model.pt").chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_missing_claim_is_reported_then_a_real_pod_serves_from_it(
    node_cluster: Cluster, operator: OperatorProcess, test_images: NodeImages, host_models: Path, ns: str,
) -> None:
    model = {"name": "mlp", "uri": "pvc://models/mlp/model.pt", "format": "torchscript"}
    node_cluster.apply({**md("mlp", "v1", model=model), "metadata": {"name": "mlp", "namespace": ns}})

    def reported() -> dict[str, Any] | None:
        cond = condition(node_cluster.md(ns, "mlp"), "Degraded")
        return cond if cond and cond["reason"] == "ModelClaimNotFound" else None

    wait_until(reported, timeout=60, what="Degraded ModelClaimNotFound")
    assert node_cluster.pods(ns, "app.kubernetes.io/instance=mlp") == []  # nothing Pending

    pv = f"{ns}-models"
    node_cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                                 "hostPath": {"path": str(host_models), "type": "Directory"}}})
    try:
        node_cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "metadata": {"name": "models", "namespace": ns},
                            "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                                     "resources": {"requests": {"storage": "1Gi"}}}})
        wait_until(lambda: _ready(node_cluster, ns), timeout=READY_S, what="md/mlp Ready from the claim")
        proxy = ServiceProxy(node_cluster, ns, "mlp")
        try:
            answer = proxy.predict()
        finally:
            proxy.close()
        (pod,) = node_cluster.pods(ns, "app.kubernetes.io/instance=mlp")
        assert answer.status_code == 200 and close(answer.json()["predictions"], test_images.expected["v1"]), answer.text
        write = node_cluster.kubectl("-n", ns, "exec", pod["metadata"]["name"], "-c", "server", "--", "python3", "-c",
                                     "open('/mnt/models/mlp/x', 'w')", check=False, timeout=60)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    finally:
        node_cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=60s", check=False, timeout=90)
        node_cluster.kubectl("delete", "pv", pv, "--ignore-not-found", check=False)
