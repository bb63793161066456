"""The operator image: small, torch-free, non-root, and reconciling a real
ModelDeployment against the local control plane with only a kubeconfig mounted."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from images_support import GID, UID, Container, Docker, free_port, wait_until

#: Issue 5 targets 200 MB; the image is 217 MB on the local base, all but ~4 MB of it the
#: base and site-packages, 59 MB of those the kubernetes client (README, "Images"). This
#: guard catches regressions: torch, FastAPI or a second copy of the venv add far more.
SIZE_LIMIT_MB = 230
CONVERGE_S = 90


def test_operator_image_metadata_and_contents(docker: Docker, operator_image: str) -> None:
    info = docker.inspect(operator_image, "image")
    config = info["Config"]
    assert config["User"] == f"{UID}:{GID}"
    assert config["Entrypoint"] == ["modelship-operator"]
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python3"]
    assert config["Labels"]["org.opencontainers.image.title"] == "modelship-operator"
    probe = ("import importlib.util as u, shutil; "
             "print([m for m in ('torch', 'fastapi', 'uvicorn', 'modelship_server', 'pip') if u.find_spec(m)]"
             " + [s for s in ('modelship-server', 'pip') if shutil.which(s)])")
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "python3", operator_image, "-c", probe).stdout
    assert out.strip() == "[]"
    help_text = docker("run", "--rm", "--network", "none", operator_image, "--help").stdout
    assert "--all-namespaces" in help_text and "--kubeconfig" in help_text


def test_operator_built_from_the_wheelhouse_without_network(operator_build) -> None:  # type: ignore[no-untyped-def]
    assert operator_build.built_offline(), f"expected `docker build --network none` in {operator_build.log}"


def test_operator_image_size(docker: Docker, operator_image: str) -> None:
    size_mb = docker.inspect(operator_image, "image")["Size"] / 1e6
    assert size_mb <= SIZE_LIMIT_MB, f"{operator_image} is {size_mb:.0f} MB (limit {SIZE_LIMIT_MB} MB)"


@pytest.fixture
def kubeconfig_for_container(cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The cluster's kubeconfig with certificates inlined (no host paths), readable by UID 10001."""
    folder = tmp_path_factory.mktemp("kube")
    path = folder / "config"
    path.write_text(cluster.kubectl("config", "view", "--raw", "--flatten", "--minify").stdout)
    folder.chmod(0o755)
    path.chmod(0o644)
    return path


@pytest.fixture
def ns(cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"img-op-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def test_operator_container_reconciles_a_model_deployment(
    docker: Docker, operator_image: str, cluster, crd: str, ns: str, kubeconfig_for_container: Path  # type: ignore[no-untyped-def]
) -> None:
    health_port, metrics_port = free_port(), free_port()
    c = Container(docker, operator_image, [
        "--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=64m",
        "--volume", f"{kubeconfig_for_container}:/etc/modelship/kubeconfig:ro",
        "--env", f"MODELSHIP_HEALTH_PORT={health_port}",
        "--health-interval", "1s",
    ], ["--namespace", ns, "--kubeconfig", "/etc/modelship/kubeconfig",
        "--health-port", str(health_port), "--metrics-port", str(metrics_port)]).start()
    try:
        health = f"http://127.0.0.1:{health_port}/healthz"

        def serving() -> bool:
            assert c.state()["Running"], f"operator container exited:\n{c.logs()}"
            return httpx.get(health, timeout=2).status_code == 200

        wait_until(serving, timeout=120, what="the operator container's /healthz")
        md = {
            "apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "imgtest", "namespace": ns},
            "spec": {"image": "registry.example.com/ml/modelship-server:1.0.0", "replicas": 1,
                     "model": {"name": "imgtest", "uri": "file:///models/imgtest.pt2", "format": "torch-export"}},
        }
        cluster.apply(md)

        # On a shared cluster another operator (a developer's, the e2e tier's) may watch
        # all namespaces too; this container watches only `ns`, so its own reconcile
        # counter is the proof that the image did the work.
        wait_until(lambda: _reconciles_ok(metrics_port) >= 1, timeout=CONVERGE_S,
                   what="a successful reconcile counted by the container's /metrics")

        def ready() -> dict | None:  # type: ignore[type-arg]
            obj = cluster.md(ns, "imgtest")
            conds = {k["type"]: k["status"] for k in (obj.get("status") or {}).get("conditions") or []}
            return obj if conds.get("Ready") == "True" else None

        obj = wait_until(ready, timeout=CONVERGE_S, what="ModelDeployment imgtest Ready")
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        dep = cluster.deployment(ns, "imgtest")
        assert dep["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == md["spec"]["image"]

        wait_until(lambda: c.state()["Health"]["Status"] == "healthy", timeout=60, what="HEALTHCHECK healthy")
        status = c.exec("cat", "/proc/1/status", check=True).stdout
        assert re.search(rf"^Uid:\s+{UID}\s", status, re.M), status

        stop = docker("stop", "--time", "20", c.name, timeout=60)
        assert stop.returncode == 0
        assert c.state()["ExitCode"] == 0, f"operator did not exit cleanly on SIGTERM:\n{c.logs()}"
    finally:
        c.close()


def _reconciles_ok(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return sum(float(v) for v in re.findall(r'^modelship_reconciles_total\{[^}]*result="ok"[^}]*\} (\S+)$', text, re.M))
