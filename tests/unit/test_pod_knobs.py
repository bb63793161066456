"""The pod knobs (issue 15): each reaches the pod template, bad values are refused with a
message that names the field, and none can take what the operator owns (selector and own
labels, annotations, volumes, paths) or loosen the restricted security context."""

from __future__ import annotations

from typing import Any

import pytest

from modelship_operator import crdgen
from modelship_operator.core import api, builders

from .samples import md

CPU = {"requests": {"cpu": "1"}}


def _pod(**spec: Any) -> dict[str, Any]:
    return builders.desired_deployment(md(**spec))["spec"]["template"]


def _container(template: dict[str, Any]) -> dict[str, Any]:
    (container,) = template["spec"]["containers"]
    return container


EVERY_KNOB: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry-creds"}],
    "imagePullPolicy": "Always",
    "serviceAccountName": "model-reader",
    "podLabels": {"team": "vision", "example.com/cost-center": "42"},
    "podAnnotations": {"example.com/owner": "vision team"},
    "priorityClassName": "inference-high",
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": {"tier": "gold"}}, "matchLabelKeys": ["pod-template-hash"]},
    ],
    "runtimeClassName": "nvidia",
    "volumes": [
        {"name": "labels", "configMap": {"name": "imagenet-labels", "items": [{"key": "l.txt", "path": "l.txt"}]}},
        {"name": "token", "secret": {"secretName": "hub-token", "defaultMode": 0o440}},
        {"name": "weights", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}},
    ],
    "volumeMounts": [
        {"name": "labels", "mountPath": "/config/labels"},
        {"name": "token", "mountPath": "/secrets/hub", "readOnly": True},
        {"name": "weights", "mountPath": "/models", "subPath": "resnet"},
    ],
}


def test_every_knob_lands_in_the_pod_template() -> None:
    template = _pod(**EVERY_KNOB)
    pod, container, meta = template["spec"], _container(template), template["metadata"]
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert container["imagePullPolicy"] == "Always"
    assert pod["serviceAccountName"] == "model-reader"
    assert meta["labels"]["team"] == "vision" and meta["labels"]["example.com/cost-center"] == "42"
    assert meta["annotations"]["example.com/owner"] == "vision team"
    assert pod["priorityClassName"] == "inference-high"
    assert pod["runtimeClassName"] == "nvidia"
    zone, host = pod["topologySpreadConstraints"]
    assert zone["labelSelector"] == {"matchLabels": builders.selector_labels(md())}  # filled in
    assert host["labelSelector"] == {"matchLabels": {"tier": "gold"}}  # the user's kept
    assert host["matchLabelKeys"] == ["pod-template-hash"] and host["whenUnsatisfiable"] == "DoNotSchedule"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["labels"]["configMap"] == {"name": "imagenet-labels", "items": [{"key": "l.txt", "path": "l.txt"}]}
    assert volumes["token"]["secret"] == {"secretName": "hub-token", "defaultMode": 0o440}
    assert volumes["weights"]["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    assert {"tmp"} <= set(volumes)  # the operator's own stay
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/config/labels"] == {"name": "labels", "mountPath": "/config/labels", "readOnly": True}
    assert mounts["/models"]["subPath"] == "resnet" and mounts["/models"]["readOnly"] is True
    assert mounts["/tmp"] == {"name": "tmp", "mountPath": "/tmp"}


def test_without_knobs_the_pod_has_none_of_their_fields() -> None:
    template = _pod()
    for key in ("imagePullSecrets", "serviceAccountName", "priorityClassName", "runtimeClassName",
                "topologySpreadConstraints"):
        assert key not in template["spec"]
    assert _container(template)["imagePullPolicy"] == api.DEFAULT_PULL_POLICY == "IfNotPresent"


def test_a_mount_can_be_written_when_asked() -> None:
    mounts = _container(_pod(volumes=EVERY_KNOB["volumes"][2:], volumeMounts=[
        {"name": "weights", "mountPath": "/cache", "readOnly": False}]))["volumeMounts"]
    assert {"name": "weights", "mountPath": "/cache", "readOnly": False} in mounts


def test_the_security_context_is_the_same_whatever_the_knobs() -> None:
    plain, knobbed = _pod(), _pod(**EVERY_KNOB)
    assert knobbed["spec"]["securityContext"] == plain["spec"]["securityContext"] == builders.pod_security_context()
    assert _container(knobbed)["securityContext"] == builders.container_security_context()
    assert knobbed["spec"]["automountServiceAccountToken"] is False and knobbed["spec"]["enableServiceLinks"] is False
    assert all(("hostPath" not in v and "emptyDir" not in v) or v["name"] in api.OPERATOR_VOLUMES
               for v in knobbed["spec"]["volumes"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"podLabels": {"app.kubernetes.io/instance": "other"}}, "app.kubernetes.io/instance: the operator sets"),
        ({"podLabels": {"app.kubernetes.io/name": "x"}}, "the operator sets this label"),
        ({"podLabels": {"app.kubernetes.io/managed-by": "me"}}, "the operator sets this label"),
        ({"podLabels": {"modelship.io/revision": "1"}}, "keys under modelship.io/ are the operator's"),
        ({"podLabels": {"a.modelship.io/x": "1"}}, "keys under modelship.io/"),
        ({"podLabels": {"team": "not a value"}}, "not a valid label value"),
        ({"podLabels": {"-bad": "x"}}, "not a valid label key"),
        ({"podAnnotations": {"modelship.io/modeldeployment": "other"}}, "keys under modelship.io/"),
        ({"podAnnotations": {"prometheus.io/port": "1"}}, "the operator sets this annotation"),
        ({"podAnnotations": {"container.apparmor.security.beta.kubernetes.io/server": "unconfined"}},
         "restricted security profile"),
        ({"podAnnotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}, "restricted security"),
        ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "hostPath"),
        ({"volumes": [{"name": "e", "emptyDir": {}}]}, "emptyDir"),
        ({"volumes": [{"name": "v", "configMap": {"name": "a"}, "secret": {"secretName": "b"}}]}, "exactly one"),
        ({"volumes": [{"name": "v"}]}, "exactly one"),
        ({"volumes": [{"name": "tmp", "configMap": {"name": "a"}}]}, "are the operator's"),
        ({"volumes": [{"name": "modelship-model", "configMap": {"name": "a"}}]}, "are the operator's"),
        ({"volumes": [{"name": "a", "configMap": {"name": "a"}}, {"name": "a", "secret": {"secretName": "b"}}]},
         "more than once"),
        ({"volumeMounts": [{"name": "nope", "mountPath": "/data"}]}, "not a volume of spec.volumes"),
        ({"volumes": [{"name": "a", "configMap": {"name": "a"}}],
          "volumeMounts": [{"name": "a", "mountPath": "/tmp"}]}, "server's own"),
        ({"volumes": [{"name": "a", "configMap": {"name": "a"}}],
          "volumeMounts": [{"name": "a", "mountPath": "/opt"}]}, "server's own"),  # above /opt/venv
        ({"volumes": [{"name": "a", "configMap": {"name": "a"}}],
          "volumeMounts": [{"name": "a", "mountPath": "/dev/shm"}]}, "server's own"),
        ({"volumes": [{"name": "a", "configMap": {"name": "a"}}],
          "volumeMounts": [{"name": "a", "mountPath": "/"}]}, "mountPath"),
        ({"volumes": [{"name": "a", "configMap": {"name": "a"}}],
          "volumeMounts": [{"name": "a", "mountPath": "/data/../tmp"}]}, "without '..'"),
        ({"volumes": [{"name": "a", "configMap": {"name": "a"}}],
          "volumeMounts": [{"name": "a", "mountPath": "relative"}]}, "mountPath"),
        ({"volumes": [{"name": "a", "configMap": {"name": "a"}}],
          "volumeMounts": [{"name": "a", "mountPath": "/data", "subPath": "../x"}]}, "subPath"),
        ({"volumes": [{"name": "a", "configMap": {"name": "a", "items": [{"key": "k", "path": "../x"}]}}]}, "'..'"),
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
        ({"imagePullSecrets": [{"name": "Not_A_Name"}]}, "imagePullSecrets"),
        ({"serviceAccountName": "UPPER"}, "serviceAccountName"),
        ({"runtimeClassName": "a b"}, "runtimeClassName"),
        ({"priorityClassName": ""}, "priorityClassName"),
        ({"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule"}]},
         "maxSkew"),
        ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "Maybe"}]},
         "whenUnsatisfiable"),
        ({"securityContext": {"privileged": True}}, "securityContext"),  # no such knob: extra fields are refused
    ],
)
def test_bad_knobs_are_refused_with_the_field_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(api.InvalidSpec, match=message.replace("(", r"\(").replace(".", r"\.").replace("*", r"\*")):
        md(**spec)


def test_every_label_and_annotation_the_operator_puts_on_a_pod_is_refused_as_a_knob() -> None:
    from modelship_operator.core import rollout

    model = md()
    template = rollout.desired_deployment(model, rollout.plan_rollout(model, rollout.Observed(), now=_now()))
    meta = template["spec"]["template"]["metadata"]
    assert meta["labels"] and meta["annotations"]
    for key in meta["labels"]:
        assert api.reserved_pod_key(key, "label"), key
    for key in meta["annotations"]:
        assert api.reserved_pod_key(key, "annotation"), key


def test_every_path_the_operator_mounts_is_a_server_path() -> None:
    model = md(serving={"workers": 2, "modelProcess": "shared"})
    for _, path, _ in builders.scratch_volumes(model.spec.serving):
        assert any(path == p or path.startswith(p + "/") for p in api.SERVER_PATHS), path
    for name, _, _ in builders.scratch_volumes(model.spec.serving):
        assert name in api.OPERATOR_VOLUMES


def test_the_crd_carries_the_same_rules() -> None:
    spec = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    labels_rule = props["podLabels"]["x-kubernetes-validations"][0]["rule"]
    assert all(f"'{k}'" in labels_rule for k in api.OPERATOR_LABELS) and "modelship" in labels_rule
    annotations_rule = props["podAnnotations"]["x-kubernetes-validations"][0]["rule"]
    assert all(p in annotations_rule for p in api.SECURITY_ANNOTATION_PREFIXES)
    volume = props["volumes"]["items"]
    assert set(volume["properties"]) == {"name", "configMap", "secret", "persistentVolumeClaim"}
    mount_rule = props["volumeMounts"]["items"]["properties"]["mountPath"]["x-kubernetes-validations"][0]["rule"]
    assert all(f"'{p}'" in mount_rule for p in api.SERVER_PATHS)
    assert any("volumeMounts" in r["rule"] for r in spec["x-kubernetes-validations"])


def _now():
    import datetime as dt

    return dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
