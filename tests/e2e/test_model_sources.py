"""Model sources against a real API server: the CRD's rules for s3:// and pvc:// as kubectl
prints them, the operator wiring S3 credentials by reference (never by value) and workload
identity into the pod, and a pvc:// model whose claim is missing reported in status (reason
ModelClaimNotFound + a Warning Event), then served once the claim exists."""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_support import Cluster, condition, model_deployment, wait_until

CONVERGE_S = 60
ROLE = "arn:aws:iam::123456789012:role/models-reader"


def _model(uri: str, **extra: Any) -> dict[str, Any]:
    return {"name": "m", "uri": uri, "format": "torchscript", **extra}


def _dry_run(cluster: Cluster, obj: dict[str, Any]) -> Any:
    return cluster.kubectl("-n", "default", "apply", "--server-side", "--dry-run=server", "--field-manager=e2e-user",
                           "-f", "-", input=json.dumps(obj), check=False)


GOOD = [
    ("s3-secret", _model("s3://models/resnet/v2/model.pt", s3={
        "endpoint": "http://minio.storage:9000", "region": "eu-west-1", "pathStyle": True,
        "credentials": {"secretRef": {"name": "s3-keys", "sessionTokenKey": "token"}}})),
    ("s3-web-identity", _model("s3://models/m.pt", s3={"credentials": {"webIdentity": {"roleArn": ROLE}}})),
    ("s3-bare", _model("s3://models/m.pt")),
    ("pvc", _model("pvc://models/resnet/model.pt")),
]

BAD = [
    ("s3-options-elsewhere", _model("file:///m.pt", s3={"region": "eu-west-1"}), "model.s3 is only for an s3:// model.uri"),
    ("s3-no-key", _model("s3://models"), "an s3 model.uri is s3://bucket/key"),
    ("pvc-no-path", _model("pvc://models"), "a pvc model.uri is pvc://claim/path"),
    ("pvc-dotdot", _model("pvc://models/a/../../etc/passwd"), "without '..'"),
    ("two-credential-kinds", _model("s3://models/m.pt", s3={"credentials": {
        "secretRef": {"name": "k"}, "webIdentity": {"roleArn": ROLE}}}),
     "set exactly one of secretRef or webIdentity"),
    ("bad-role-arn", _model("s3://models/m.pt", s3={"credentials": {"webIdentity": {"roleArn": "reader"}}}),
     "spec.model.s3.credentials.webIdentity.roleArn"),
]


@pytest.mark.parametrize("model", [m for _, m in GOOD], ids=[i for i, _ in GOOD])
def test_the_api_server_accepts_each_source(cluster: Cluster, crd: str, model: dict[str, Any]) -> None:
    proc = _dry_run(cluster, model_deployment("good", model=model))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("model", "message"), [(m, w) for _, m, w in BAD], ids=[i for i, _, _ in BAD])
def test_the_api_server_refuses_bad_sources_with_a_reason(
    cluster: Cluster, crd: str, model: dict[str, Any], message: str
) -> None:
    proc = _dry_run(cluster, model_deployment("bad", model=model))
    assert proc.returncode != 0, f"accepted: {json.dumps(model)}"
    assert message in proc.stderr, f"expected {message!r} in:\n{proc.stderr}"


def test_credentials_env_from_the_secret_set_in_spec_env_is_refused(cluster: Cluster, crd: str) -> None:
    model = _model("s3://models/m.pt", s3={"credentials": {"secretRef": {"name": "k"}}})
    proc = _dry_run(cluster, model_deployment("bad", model=model, env=[{"name": "AWS_ACCESS_KEY_ID", "value": "x"}]))
    assert proc.returncode != 0 and "spec.env must not set the AWS credential vars" in proc.stderr, proc.stderr


def _pod_spec(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    dep = wait_until(lambda: _get_deployment(cluster, ns, name), timeout=CONVERGE_S, what=f"deployment/{name}")
    return dep["spec"]["template"]["spec"]


def _get_deployment(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("-n", ns, "get", "deployment", name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


@pytest.mark.usefixtures("operator")
def test_s3_credentials_reach_the_pod_by_reference_only(cluster: Cluster, ns: str) -> None:
    secret_value = "very-secret-value-e2e"
    cluster.kubectl("-n", ns, "create", "secret", "generic", "s3-keys",
                    "--from-literal=AWS_ACCESS_KEY_ID=modelship", f"--from-literal=AWS_SECRET_ACCESS_KEY={secret_value}")
    model = _model("s3://models/m.pt", s3={"endpoint": "http://minio.storage:9000", "pathStyle": True,
                                          "credentials": {"secretRef": {"name": "s3-keys"}}})
    cluster.apply(model_deployment("s3m", namespace=ns, model=model))
    pod = _pod_spec(cluster, ns, "s3m")
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-keys", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env["MODELSHIP_S3_ENDPOINT"]["value"] == "http://minio.storage:9000"
    assert secret_value not in json.dumps(_get_deployment(cluster, ns, "s3m"))
    # KWOK runs the pod (its env resolves from the real Secret): Ready like any other.
    wait_until(lambda: (condition(cluster.md(ns, "s3m"), "Ready") or {}).get("status") == "True",
               timeout=CONVERGE_S, what="md/s3m Ready")


@pytest.mark.usefixtures("operator")
def test_web_identity_projects_an_audience_bound_token(cluster: Cluster, ns: str) -> None:
    model = _model("s3://models/m.pt", s3={"credentials": {"webIdentity": {"roleArn": ROLE}}})
    cluster.apply(model_deployment("wi", namespace=ns, model=model))
    pod = _pod_spec(cluster, ns, "wi")
    (volume,) = [v for v in pod["volumes"] if "projected" in v]
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "sts.amazonaws.com"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["AWS_ROLE_ARN"] == ROLE and env["AWS_WEB_IDENTITY_TOKEN_FILE"].startswith("/var/run/secrets/")


def _events(cluster: Cluster, ns: str, reason: str) -> list[dict[str, Any]]:
    items = cluster.get_json("-n", ns, "events", f"--field-selector=reason={reason}").get("items") or []
    return [e for e in items if e.get("involvedObject", {}).get("kind") == "ModelDeployment"]


@pytest.mark.usefixtures("operator")
def test_a_missing_claim_is_reported_then_the_model_starts_once_it_exists(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_deployment("pvcm", namespace=ns, model=_model("pvc://models/resnet/model.pt")))

    def reported() -> dict[str, Any] | None:
        cond = condition(cluster.md(ns, "pvcm"), "Degraded")
        return cond if cond and cond["reason"] == "ModelClaimNotFound" else None

    cond = wait_until(reported, timeout=CONVERGE_S, what="Degraded ModelClaimNotFound")
    assert cond["status"] == "True" and "PersistentVolumeClaim models" in cond["message"]
    assert (condition(cluster.md(ns, "pvcm"), "Ready") or {}).get("reason") == "ModelClaimNotFound"
    wait_until(lambda: _events(cluster, ns, "ModelClaimNotFound"), timeout=30, what="a ModelClaimNotFound Event")
    assert _get_deployment(cluster, ns, "pvcm") is None  # no pod left waiting in Pending

    # A volume and its claim (bound by the real PV controller); the watch on claims passes the
    # ModelDeployment at once.
    pv = f"{ns}-models"
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                   "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                            "hostPath": {"path": "/nonexistent/modelship-e2e"}}})
    try:
        cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models", "namespace": ns},
                       "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                                "resources": {"requests": {"storage": "1Gi"}}}})
        pod = _pod_spec(cluster, ns, "pvcm")
        (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["MODELSHIP_MODEL_URI"] == "file:///mnt/models/resnet/model.pt"
        wait_until(lambda: (condition(cluster.md(ns, "pvcm"), "Ready") or {}).get("status") == "True",
                   timeout=CONVERGE_S, what="md/pvcm Ready once its claim exists")
    finally:
        cluster.kubectl("delete", "pv", pv, "--wait=false", "--ignore-not-found", check=False)
