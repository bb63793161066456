"""Model sources in the spec: s3:// (endpoint, region, path style, credentials from a Secret or
workload identity) and pvc:// (a claim mounted read-only): what the API accepts, what it refuses
and why, and what the builder puts into the pod."""

from __future__ import annotations

from typing import Any

import pytest

from modelship_operator import crdgen
from modelship_operator.core import api, builders, server_env

from .samples import body, md


def _model(uri: str, **extra: Any) -> dict[str, Any]:
    return {"name": "resnet", "uri": uri, "format": "torchscript", **extra}


def _container(m: api.ModelDeployment) -> dict[str, Any]:
    (container,) = builders.desired_deployment(m)["spec"]["template"]["spec"]["containers"]
    return container


def _pod(m: api.ModelDeployment) -> dict[str, Any]:
    return builders.desired_deployment(m)["spec"]["template"]["spec"]


def _env(m: api.ModelDeployment) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(m)["env"]}


def _error(**spec: Any) -> str:
    with pytest.raises(api.InvalidSpec) as info:
        api.parse(body(**spec))
    return str(info.value)


S3_SECRET = {"endpoint": "http://minio.storage:9000", "region": "eu-west-1", "pathStyle": True,
             "credentials": {"secretRef": {"name": "s3-keys", "sessionTokenKey": "token"}}}


def test_s3_with_a_secret_wires_env_from_the_secret_never_its_values() -> None:
    m = md(model=_model("s3://models/resnet/v2/model.pt", sha256="c" * 64, s3=S3_SECRET))
    env = _env(m)
    assert env["MODELSHIP_MODEL_URI"] == "s3://models/resnet/v2/model.pt"
    assert (env["MODELSHIP_S3_ENDPOINT"], env["MODELSHIP_S3_REGION"], env["MODELSHIP_S3_PATH_STYLE"]) == (
        "http://minio.storage:9000", "eu-west-1", "true")
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "s3-keys", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env["AWS_SESSION_TOKEN"] == {"secretKeyRef": {"name": "s3-keys", "key": "token"}}
    # Nothing but references: the pod template carries no credential value.
    assert all("value" not in e for e in _container(m)["env"] if e["name"].startswith("AWS_"))
    # The download lands in the /tmp emptyDir (the root file system is read-only).
    assert {"name": "tmp", "mountPath": "/tmp"} in _container(m)["volumeMounts"]
    assert _container(m)["securityContext"]["readOnlyRootFilesystem"] is True


def test_s3_without_options_leaves_the_servers_defaults() -> None:
    env = _env(md(model=_model("s3://models/m.pt")))
    assert not {"MODELSHIP_S3_ENDPOINT", "MODELSHIP_S3_REGION", "MODELSHIP_S3_PATH_STYLE"} & set(env)
    assert not [name for name in env if name.startswith("AWS_")]


def test_s3_web_identity_projects_a_token_and_sets_the_standard_aws_env() -> None:
    role = "arn:aws:iam::123456789012:role/models-reader"
    m = md(model=_model("s3://models/m.pt", s3={"credentials": {"webIdentity": {"roleArn": role}}}))
    env = _env(m)
    assert env["AWS_ROLE_ARN"] == role
    assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{builders.WEB_IDENTITY_DIR}/{builders.WEB_IDENTITY_TOKEN}"
    (volume,) = [v for v in _pod(m)["volumes"] if v["name"] == builders.WEB_IDENTITY_VOLUME]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "sts.amazonaws.com"
    assert {"name": builders.WEB_IDENTITY_VOLUME, "mountPath": builders.WEB_IDENTITY_DIR, "readOnly": True} in \
        _container(m)["volumeMounts"]
    assert _pod(m)["automountServiceAccountToken"] is False  # only the audience-bound token is there


def test_pvc_mounts_the_claim_read_only_and_hands_the_server_a_file_uri() -> None:
    m = md(model=_model("pvc://models/resnet/v2/model.pt"))
    assert m.spec.model.pvc == ("models", "resnet/v2/model.pt")
    assert _env(m)["MODELSHIP_MODEL_URI"] == f"file://{server_env.PVC_MOUNT_PATH}/resnet/v2/model.pt"
    assert {"name": builders.MODEL_PVC_VOLUME, "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} \
        in _pod(m)["volumes"]
    assert {"name": builders.MODEL_PVC_VOLUME, "mountPath": server_env.PVC_MOUNT_PATH, "readOnly": True} \
        in _container(m)["volumeMounts"]


def test_every_volume_the_operator_adds_has_a_name_users_may_not_take() -> None:
    """A user's spec.volumes can never collide with the operator's own (scratch, shm, sources)."""
    web = {"credentials": {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/r"}}}
    models = [md(model=_model("pvc://models/m.pt")), md(model=_model("s3://models/m.pt", s3=web)),
              md(model=_model("s3://models/m.pt"), serving={"modelProcess": "shared", "workers": 2})]
    names = {v["name"] for m in models for v in _pod(m)["volumes"]}
    assert {builders.MODEL_PVC_VOLUME, builders.WEB_IDENTITY_VOLUME} <= names
    for name in names:
        assert name in api.OPERATOR_VOLUMES or name.startswith(api.OPERATOR_VOLUME_PREFIX), name
        with pytest.raises(ValueError, match="are the operator's"):
            api.ModelDeployment.model_validate(
                body(volumes=[{"name": name, "configMap": {"name": "c"}}],
                     volumeMounts=[{"name": name, "mountPath": "/etc-extra"}]))


def test_other_sources_get_no_source_volumes() -> None:
    pod = _pod(md())
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (_model("file:///m.pt", s3={"region": "eu-west-1"}), "model.s3 is only for an s3:// model.uri"),
        (_model("s3://models"), "an s3 model.uri is s3://bucket/key"),
        (_model("s3://Models/x.pt"), "an s3 model.uri is s3://bucket/key"),
        (_model("pvc://models"), "a pvc model.uri is pvc://claim/path"),
        (_model("pvc://models/../etc/passwd"), "without '..'"),
        (_model("pvc://Models/x.pt"), "a pvc model.uri is pvc://claim/path"),
        (_model("s3://models/x.pt", s3={"credentials": {}}), "exactly one of secretRef or webIdentity"),
        (_model("s3://models/x.pt", s3={"credentials": {"secretRef": {"name": "a"},
                                                        "webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/r"}}}),
         "exactly one of secretRef or webIdentity"),
        (_model("s3://models/x.pt", s3={"credentials": {"webIdentity": {"roleArn": "reader"}}}), "roleArn"),
        (_model("s3://models/x.pt", s3={"endpoint": "minio:9000"}), "endpoint"),
    ],
    ids=["s3-options-elsewhere", "s3-no-key", "s3-bad-bucket", "pvc-no-path", "pvc-dotdot", "pvc-bad-claim",
         "no-credentials-kind", "two-credentials-kinds", "bad-role-arn", "endpoint-without-scheme"],
)
def test_bad_sources_are_refused_with_a_reason(model: dict[str, Any], words: str) -> None:
    assert words in _error(model=model)


def test_env_may_not_set_what_the_credentials_set() -> None:
    model = _model("s3://models/x.pt", s3={"credentials": {"secretRef": {"name": "keys"}}})
    message = _error(model=model, env=[{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}])
    assert "AWS_SECRET_ACCESS_KEY" in message and "model.s3.credentials" in message
    # Other AWS_* vars stay the user's (e.g. a CA bundle for a private endpoint).
    assert md(model=model, env=[{"name": "AWS_CA_BUNDLE", "value": "/etc/ca.pem"}])
    # Without credentials in the spec, the user may wire keys by hand.
    assert md(model=_model("s3://models/x.pt"), env=[{"name": "AWS_ACCESS_KEY_ID", "value": "x"}])


def _schema_rules(schema: dict[str, Any]) -> list[str]:
    rules = [r["rule"] for r in schema.get("x-kubernetes-validations", [])]
    for child in (schema.get("properties") or {}).values():
        rules += _schema_rules(child)
    if "items" in schema:
        rules += _schema_rules(schema["items"])
    return rules


def test_the_crd_carries_the_source_rules() -> None:
    """The API server refuses the same forms (the e2e tier sends them to a real one)."""
    spec = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = " ".join(_schema_rules(spec))
    for fragment in ("self.uri.startsWith('s3://')", "self.uri.startsWith('pvc://')",
                     "has(self.secretRef) != has(self.webIdentity)", "'AWS_SECRET_ACCESS_KEY'"):
        assert fragment in rules
    s3 = spec["properties"]["model"]["properties"]["s3"]["properties"]
    assert set(s3) == {"endpoint", "region", "pathStyle", "credentials"}
