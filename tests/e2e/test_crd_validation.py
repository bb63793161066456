"""The API server itself rejects bad ModelDeployments, with messages a user can act on.

Each row is applied with `kubectl apply --server-side --dry-run=server`, exactly
what a user (or Argo CD / Flux) would run; the assertion is on the text kubectl
prints. Schema, enum, range and CEL rules all come from the generated CRD.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from e2e_support import Cluster, model_deployment


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of a valid manifest with spec.<path> set (None = removed)."""
    obj = copy.deepcopy(base or model_deployment("bad"))
    node = obj["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return obj


def _spec(**fields: Any) -> dict[str, Any]:
    obj = model_deployment("bad")
    obj["spec"].update(fields)
    return obj


MODEL = {"name": "bad", "uri": "file:///models/bad.pt2", "format": "torch-export"}

# (id, manifest, fragment kubectl must print)
BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("no-image", _with("image", None), 'spec.image: Required value'),
    ("image-without-tag", _with("image", "registry.example.com/ml/server"),
     "image must carry a tag or a digest"),
    ("image-registry-port-no-tag", _with("image", "localhost:5000/ml/server"),
     "image must carry a tag or a digest"),
    ("no-model", _with("model", None), "spec.model: Required value"),
    ("unknown-format", _with("model.format", "onnx"), 'Unsupported value: "onnx"'),
    ("handler-format-without-handler", _with("model", {**MODEL, "format": "handler"}),
     "model.handler (module:Class) is required when model.format is handler"),
    ("handler-with-torchscript", _with("model", {**MODEL, "handler": "pkg.mod:Model"}),
     "model.handler (module:Class) is required when model.format is handler"),
    ("model-name-uppercase", _with("model.name", "ResNet"), "spec.model.name"),
    ("negative-replicas", _spec(replicas=-1), "spec.replicas: Invalid value: -1"),
    ("too-many-replicas", _spec(replicas=5000), "spec.replicas: Invalid value: 5000"),
    ("negative-gpu-count", _spec(gpu={"count": -1}), "gpu.count must be 0 or more"),
    ("gpu-in-resources", _spec(resources={"limits": {"nvidia.com/gpu": 1}}),
     "set GPUs with gpu.count, not resources.requests/limits nvidia.com/gpu"),
    ("privileged-port", _spec(serving={"port": 80}), "serving.port must be between 1024 and 65535"),
    ("reserved-env", _spec(env=[{"name": "MODELSHIP_MODEL_URI", "value": "file:///other.pt2"}]),
     "env must not set the MODELSHIP_* vars the operator derives from the spec"),
    # Found by hand (issue 13): accepted, then every Deployment apply refused for a duplicate env entry.
    ("reserved-env-shutdown-delay", _spec(env=[{"name": "MODELSHIP_SHUTDOWN_DELAY_S", "value": "9"}]),
     "spec.env: Invalid value"),
    ("env-name-twice", _spec(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
     '.spec.env: duplicate entries for key [name="A"]'),
    ("budget-both-fields", _spec(disruptionBudget={"minAvailable": 1, "maxUnavailable": 1}),
     "set exactly one of disruptionBudget.minAvailable or disruptionBudget.maxUnavailable"),
    ("budget-blocks-eviction", _spec(replicas=2, disruptionBudget={"minAvailable": 2}),
     "disruptionBudget.minAvailable must be less than replicas"),
    ("budget-bad-percentage", _spec(disruptionBudget={"maxUnavailable": "half"}),
     "a disruption budget is a count (0 or more) or a percentage"),
    ("cuda-without-gpu", _spec(serving={"device": "cuda"}), "serving.device cuda needs gpu.count >= 1"),
    ("unknown-surge-mode", _spec(rollout={"surge": "fast"}), 'Unsupported value: "fast"'),
    ("zero-startup-budget", _spec(probes={"startupTimeoutSeconds": 0}),
     "spec.probes.startupTimeoutSeconds: Invalid value: 0"),
    ("misspelled-field", _spec(replica=2), ".spec.replica: field not declared in schema"),
]


def _dry_run_apply(cluster: Cluster, ns: str, obj: dict[str, Any]):
    return cluster.kubectl(
        "-n", ns, "apply", "--server-side", "--dry-run=server", "--field-manager=e2e-user", "-f", "-",
        input=json.dumps(obj), check=False,
    )


def test_crd_is_established_with_short_names(cluster: Cluster, crd: str) -> None:
    found = cluster.kubectl("api-resources", "--api-group=modelship.io", "-o", "wide").stdout
    assert "modeldeployments" in found and "md,mdeploy" in found, found


def test_valid_minimal_spec_is_accepted(cluster: Cluster, crd: str) -> None:
    proc = _dry_run_apply(cluster, "default", model_deployment("good"))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("manifest", "message"), [(m, msg) for _, m, msg in BAD_SPECS],
                         ids=[i for i, _, _ in BAD_SPECS])
def test_invalid_spec_is_rejected_with_readable_message(
    cluster: Cluster, crd: str, manifest: dict[str, Any], message: str
) -> None:
    # Dry run: nothing is stored, so the default namespace is fine and no cleanup is needed.
    proc = _dry_run_apply(cluster, "default", manifest)
    assert proc.returncode != 0, f"accepted by the API server: {json.dumps(manifest['spec'])}"
    assert message in proc.stderr, f"expected {message!r} in:\n{proc.stderr}"
