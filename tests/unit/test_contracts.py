"""Facts that live in one place and are derived everywhere else: the server env contract, the
spec fields that make a revision, the defaults quoted in the examples. Each test fails when a
second copy would have drifted."""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelship_operator import crdgen
from modelship_operator.core import api, builders, rollout, server_env
from modelship_server import settings as server_settings

from .samples import md

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- the server env contract

SPECS = {
    "cpu-defaults": {},
    "gpu-handler-shaped": {
        "gpu": {"count": 2},
        "model": {"name": "m", "uri": "https://x.example/m.py", "format": "handler", "handler": "pkg.mod:Model",
                  "sha256": "a" * 64, "inputShape": [-1, 3, 32, 32], "inputDatatype": "FP16"},
        "serving": {"port": 9000, "halfPrecision": True, "batching": {"maxBatchSize": 64, "maxLatencyMs": 9},
                    "shutdownDelaySeconds": 7, "drainTimeoutSeconds": 45, "device": "cuda:1",
                    "workers": 4, "modelProcess": "shared", "grpc": {"enabled": True, "port": 9100}},
    },
    "s3-secret": {
        "model": {"name": "m", "uri": "s3://models/resnet/v2/model.pt", "format": "torchscript", "sha256": "b" * 64,
                  "s3": {"endpoint": "http://minio.storage:9000", "region": "eu-west-1", "pathStyle": True,
                         "credentials": {"secretRef": {"name": "s3-keys"}}}},
    },
    "pvc": {"model": {"name": "m", "uri": "pvc://models/resnet/model.pt", "format": "torchscript"}},
}


def _env(model: api.ModelDeployment) -> dict[str, str]:
    (container,) = builders.desired_deployment(model)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_the_env_the_builder_emits_is_what_the_server_parses(spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's own settings parser reads the builder's env: a variable renamed on either side
    fails here (the server would otherwise ignore it and run on its default)."""
    model = md(**spec)
    env = _env(model)
    fields = server_settings.Settings.model_fields
    for name in env:
        assert name.removeprefix("MODELSHIP_").lower() in fields, f"the server has no setting for {name}"
    for name in [n for n in os.environ if n.startswith("MODELSHIP_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parsed = server_settings.load_settings([])
    s, m = model.spec, model.spec.model
    uri = m.uri if m.pvc is None else f"file://{server_env.PVC_MOUNT_PATH}/{m.pvc[1]}"
    assert (parsed.model_name, parsed.model_uri, parsed.model_format) == (m.name, uri, m.format)
    s3 = m.s3 or api.S3Options()
    assert (parsed.s3_endpoint, parsed.s3_region, parsed.s3_path_style) == (s3.endpoint, s3.region, s3.path_style)
    assert (parsed.model_handler, parsed.model_sha256) == (m.handler, m.sha256)
    assert parsed.shape() == m.input_shape and (m.input_shape is None or parsed.input_datatype == m.input_datatype)
    assert (parsed.host, parsed.port) == ("0.0.0.0", s.serving.port)
    assert parsed.device == (s.serving.device or ("cuda" if s.gpu_count else "cpu"))
    assert parsed.require_gpu is (s.gpu_count > 0) and parsed.half_precision is s.serving.half_precision
    assert (parsed.max_batch_size, parsed.max_latency_ms) == (s.serving.batching.max_batch_size,
                                                              s.serving.batching.max_latency_ms)
    assert (parsed.shutdown_delay_s, parsed.graceful_timeout_s) == (s.serving.shutdown_delay_seconds,
                                                                    s.serving.drain_timeout_seconds)
    assert parsed.exit_on_load_failure is True
    assert (parsed.workers, parsed.model_process) == (s.serving.workers, s.serving.model_process)
    assert parsed.grpc_port == (s.serving.grpc.port if s.serving.grpc.enabled else 0)


def test_every_variable_the_operator_sets_is_reserved_and_only_those() -> None:
    emitted = {name for spec in SPECS.values() for name in _env(md(**spec)) if name.startswith("MODELSHIP_")}
    assert emitted == set(server_env.RESERVED) == set(api.RESERVED_ENV)


@pytest.mark.parametrize("name", server_env.RESERVED)
def test_no_reserved_name_passes_the_api_or_the_crd_rule(name: str) -> None:
    with pytest.raises(api.InvalidSpec, match=name):
        md(env=[{"name": name, "value": "1"}])
    env_schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["env"]
    (rule,) = env_schema["x-kubernetes-validations"]
    assert f"'{name}'" in rule["rule"] and name in rule["message"] and rule["message"].startswith("spec.env")


def test_a_spec_never_produces_two_env_entries_of_one_name() -> None:
    with pytest.raises(api.InvalidSpec, match="more than once"):
        md(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])
    names = [e["name"] for e in builders.container_env(md(env=[{"name": "MODELSHIP_LOG_LEVEL", "value": "debug"}]).spec)]
    assert len(names) == len(set(names))


# ---------------------------------------------------------------- what makes a revision

#: A changed value for every spec field. A new field fails the first test until it is added here;
#: then the second says whether it reaches the pod (and so must make a revision) or not.
VARIANTS: dict[str, Any] = {
    "image": "registry.example.com/ml/resnet-server:9.9.9",
    "model": {"name": "other", "uri": "s3://models/other.pt", "format": "torchscript",
              "s3": {"credentials": {"secretRef": {"name": "keys"}}}},
    "replicas": 5,
    "resources": {"requests": {"cpu": "3"}},
    "gpu": {"count": 1},
    "nodeSelector": {"zone": "b"},
    "tolerations": [{"key": "k", "operator": "Exists"}],
    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "env": [{"name": "EXTRA", "value": "1"}],
    "serving": {"port": 9000},
    "probes": {"startupTimeoutSeconds": 1200},
    "rollout": {"progressDeadlineSeconds": 120},
    "disruptionBudget": {"minAvailable": 1},
    "imagePullSecrets": [{"name": "registry-creds"}],
    "imagePullPolicy": "Always",
    "serviceAccountName": "model-reader",
    "podLabels": {"team": "vision"},
    "podAnnotations": {"example.com/owner": "vision"},
    "priorityClassName": "inference-high",
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "runtimeClassName": "nvidia",
    "volumes": [{"name": "labels", "configMap": {"name": "imagenet-labels"}}],
    "volumeMounts": [{"name": "labels", "mountPath": "/etc-labels"}],
    "autoscaling": {"maxReplicas": 4, "metrics": [{"type": "InFlightRequests", "averageValue": "4"}]},
}
#: The sample's revision hash before issue 15's fields existed (computed on the commit before them).
PRE_KNOBS_HASH = "49a86b025433"
#: What a variant needs beside it to be valid (in both the base and the changed spec).
COMPANIONS: dict[str, dict[str, Any]] = {
    "volumeMounts": {"volumes": [{"name": "labels", "configMap": {"name": "imagenet-labels"}}]},
}


def _template(model: api.ModelDeployment) -> dict[str, Any]:
    return builders.desired_deployment(model)["spec"]["template"]


def test_every_spec_field_has_a_variant() -> None:
    wire = {f.alias or n for n, f in api.ModelDeploymentSpec.model_fields.items()}
    assert wire == set(VARIANTS), "add the new field to VARIANTS"


@pytest.mark.parametrize("field", VARIANTS)
def test_a_field_makes_a_revision_exactly_when_it_reaches_the_pod(field: str) -> None:
    base, changed = _pair(field)
    reaches_pod = _template(base) != _template(changed)
    new_revision = rollout.revision_hash(rollout.pod_template(base.spec)) != rollout.revision_hash(
        rollout.pod_template(changed.spec)
    )
    assert reaches_pod == new_revision == (field in api.pod_fields()), (
        f"{field}: reaches the pod {reaches_pod}, new revision {new_revision}: mark it OUTSIDE_POD in api.py or not"
    )


@pytest.mark.parametrize("field", VARIANTS)
def test_a_rollback_restores_every_pod_field(field: str) -> None:
    old, new = _pair(field)
    restored = new.model_copy(update={"spec": rollout.serving_spec(new.spec, rollout.pod_template(old.spec))})
    assert _template(restored) == _template(old)
    if field not in api.pod_fields():  # and what is not the pod's stays as the spec says
        assert getattr(restored.spec, _python_name(field)) == getattr(new.spec, _python_name(field))


def _pair(field: str) -> tuple[api.ModelDeployment, api.ModelDeployment]:
    """The base spec and the one with ``field`` changed (both with the field's companions)."""
    companions = COMPANIONS.get(field, {})
    return md(**companions), md(**{**companions, field: VARIANTS[field]})


def test_a_spec_without_the_newer_fields_keeps_its_revision_hash() -> None:
    """Fields added later default to absent: an operator upgrade must not roll out every
    ModelDeployment. The hash below is the sample's before the pod knobs and autoscaling."""
    assert rollout.revision_hash(rollout.pod_template(md().spec)) == PRE_KNOBS_HASH


def _python_name(alias: str) -> str:
    return next(n for n, f in api.ModelDeploymentSpec.model_fields.items() if (f.alias or n) == alias)


# ---------------------------------------------------------------- quoted defaults


def _api_default(path: list[str]) -> Any:
    model: Any = api.ModelDeploymentSpec
    for i, part in enumerate(path):
        name = _python_name(part) if model is api.ModelDeploymentSpec else next(
            n for n, f in model.model_fields.items() if (f.alias or n) == part
        )
        field = model.model_fields[name]
        if i == len(path) - 1:
            return field.get_default(call_default_factory=True)
        annotation = field.annotation
        model = next(a for a in typing.get_args(annotation) if isinstance(a, type)) if typing.get_args(annotation) \
            else annotation
    raise AssertionError(path)


def test_the_defaults_quoted_in_the_gpu_example_are_the_apis() -> None:
    """examples/gpu-model.yaml quotes each field's default in a comment; they must be the API's
    (one startup-timeout default, not two)."""
    quoted = []
    stack: list[tuple[int, str]] = []
    for line in (ROOT / "examples" / "gpu-model.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z]+):(.*?)#\s*default\s+([^\s:;,]+)", line)
        key = re.match(r"^(\s*)([A-Za-z]+):", line)
        if not key:
            continue
        indent = len(key.group(1))
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key.group(2))]
        if match:
            path = [k for _, k in stack][1:]  # below spec
            quoted.append((path, match.group(4)))
    assert len(quoted) >= 8, quoted
    for path, text in quoted:
        default = _api_default(path)
        assert str(default).lower() == text.lower(), f"{'.'.join(path)}: the example says {text}, the API {default}"


def _models(model: type[api.BaseModel]) -> list[type[api.BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        for t in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(t, type) and issubclass(t, api.BaseModel) and t not in found:
                found += [m for m in _models(t) if m not in found]
    return found


def test_every_default_a_field_description_quotes_is_the_fields() -> None:
    checked = 0
    for model in _models(api.ModelDeploymentSpec):
        for name, field in model.model_fields.items():
            quoted = re.search(r"Default: ([\w.-]+?)\.?(?:\s|$)", field.description or "")
            if not quoted or quoted.group(1) in ("none", "cuda", "any"):
                continue
            default = field.get_default(call_default_factory=True)
            assert str(default).lower() == quoted.group(1).lower(), f"{model.__name__}.{name}: says {quoted.group(1)}"
            checked += 1
    assert checked >= 12, checked


def test_surge_auto_means_one_thing() -> None:
    description = api.Rollout.model_fields["surge"].description or ""
    assert "auto (default): surge, switching to no-surge when a surge pod cannot be scheduled" in description
    assert builders.resolve_surge("auto") == "surge" and builders.resolve_surge("auto", gpus_short=True) == "no-surge"
    assert builders.resolve_surge("auto") == builders.resolve_surge("auto", gpus_short=False)
    for path in (ROOT / "examples").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == api.KIND:
                model = api.parse({**doc, "metadata": {**doc["metadata"], "uid": "u"}})
                if model.spec.rollout.surge == "auto":  # GPU or not, a rollout starts with surge
                    assert builders.desired_deployment(model)["spec"]["strategy"]["rollingUpdate"] == builders.SURGE
