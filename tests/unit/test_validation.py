"""What the operator rejects, with messages a user can act on."""

import pytest

from modelship_operator.core import api

from .samples import body, md


def _error(**spec) -> str:
    with pytest.raises(api.InvalidSpec) as info:
        api.parse(body(**spec))
    return str(info.value)


def test_minimal_spec_gets_documented_defaults():
    m = md(replicas=None)
    s = m.spec
    assert s.replicas == 1 and s.gpu is None and s.gpu_count == 0
    assert s.serving.port == 8000 and s.serving.batching.max_batch_size == 8
    assert s.probes.startup_timeout_seconds == 600
    assert s.rollout.progress_deadline_seconds == 600 and s.rollout.auto_rollback is True
    assert s.rollout.surge == "auto"
    assert s.disruption_budget is None


@pytest.mark.parametrize(
    "image",
    ["repo/x:1.0", "x:latest", "host:5000/x:1", "x@sha256:" + "0" * 64, "a/b/c:1.0@sha256:" + "f" * 64],
)
def test_pinned_images_pass(image):
    assert md(image=image).spec.image == image


@pytest.mark.parametrize("image", ["repo/x", "host:5000/x", "x@sha256:abc", "", "x:"])
def test_unpinned_images_fail(image):
    assert "spec.image" in _error(image=image)


def test_unknown_model_format_is_invalid_spec():
    msg = _error(model={"name": "m", "uri": "/m", "format": "onnx"})
    assert "spec.model.format" in msg and "torchscript" in msg


def test_handler_required_iff_format_handler():
    assert "model.handler" in _error(model={"name": "m", "uri": "/m", "format": "handler"})
    assert "model.handler" in _error(model={"name": "m", "uri": "/m", "format": "torchscript", "handler": "a:B"})


def test_gpu_count_negative():
    assert "gpu.count must be 0 or more" in _error(gpu={"count": -1})


def test_gpu_in_resources_is_rejected():
    assert "gpu.count" in _error(resources={"limits": {"nvidia.com/gpu": 1}})


def test_port_range():
    assert "between 1024 and 65535" in _error(serving={"port": 80})
    assert "between 1024 and 65535" in _error(serving={"port": 70000})


def test_cuda_device_needs_gpu():
    assert "needs gpu.count" in _error(serving={"device": "cuda"})


def test_budget_exactly_one_and_below_replicas():
    assert "exactly one" in _error(disruptionBudget={})
    assert "exactly one" in _error(disruptionBudget={"minAvailable": 1, "maxUnavailable": 1})
    assert "less than replicas" in _error(disruptionBudget={"minAvailable": 2})
    assert "percentage" in _error(disruptionBudget={"minAvailable": "half"})
    assert md(disruptionBudget={"minAvailable": "50%"}).spec.disruption_budget.min_available == "50%"
    assert md(replicas=0, disruptionBudget={"minAvailable": 1}).spec.replicas == 0


def test_reserved_env_is_rejected():
    msg = _error(env=[{"name": "MODELSHIP_PORT", "value": "1"}])
    assert "MODELSHIP_PORT" in msg


def test_unknown_fields_are_rejected_with_their_path():
    assert "spec.replica" in _error(replica=3)


def test_missing_spec():
    with pytest.raises(api.InvalidSpec, match="spec"):
        api.parse({"metadata": {"name": "x"}})


def test_garbage_status_does_not_block_the_spec():
    data = body()
    data["status"] = {"conditions": "not a list", "kopf": {"x": 1}}
    assert api.parse(data).status.conditions == []


@pytest.mark.parametrize("value", ["lots", "2GB", "1.5 Gi"])
def test_resource_quantities_must_parse(value):
    assert "is not a quantity" in _error(resources={"requests": {"memory": value}})


def test_resource_quantities_accept_kubernetes_forms():
    res = md(resources={"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": 4, "memory": "1e9"}}).spec.resources
    assert res.limits["cpu"] == 4
