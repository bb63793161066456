"""spec.autoscaling (issue 15): the HPA the operator builds, the Deployment without replicas,
and the rules that refuse what an HPA could not act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelship_operator.core import api, autoscaling, builders

from .samples import md

CPU = {"requests": {"cpu": "500m", "memory": "1Gi"}}


def _hpa(**scaling: Any) -> dict[str, Any]:
    hpa = builders.desired_hpa(md(resources=CPU, autoscaling={"maxReplicas": 5, **scaling}))
    assert hpa is not None
    return hpa


def test_no_autoscaling_no_hpa_and_replicas_from_the_spec() -> None:
    model = md(replicas=3)
    assert builders.desired_hpa(model) is None
    assert builders.desired_deployment(model)["spec"]["replicas"] == 3


def test_the_default_metric_is_cpu_utilization_80() -> None:
    hpa = _hpa()
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}
    ]
    assert "behavior" not in hpa["spec"]
    assert hpa["metadata"]["name"] == "resnet" and hpa["metadata"]["labels"]["app.kubernetes.io/managed-by"]


def test_every_metric_kind_and_the_behavior_pass_through() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 30}}
    hpa = _hpa(minReplicas=2, behavior=behavior, metrics=[
        {"type": "CPU", "averageValue": "250m"},
        {"type": "Memory", "averageUtilization": 70},
        {"type": "InFlightRequests", "averageValue": "4"},
    ])
    cpu, memory, in_flight = hpa["spec"]["metrics"]
    assert cpu["resource"] == {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "250m"}}
    assert memory["resource"] == {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert in_flight == {"type": "Pods", "pods": {"metric": {"name": "modelship_requests_in_flight"},
                                                  "target": {"type": "AverageValue", "averageValue": "4"}}}
    assert hpa["spec"]["behavior"] == behavior and hpa["spec"]["minReplicas"] == 2


def test_the_in_flight_metric_is_the_one_the_server_exports() -> None:
    from modelship_server import metrics

    source = Path(metrics.__file__).read_text()
    assert f'"{api.IN_FLIGHT_METRIC}"' in source


def test_with_autoscaling_the_deployment_has_no_replicas() -> None:
    dep = builders.desired_deployment(md(replicas=4, resources=CPU, autoscaling={"maxReplicas": 5}))
    assert "replicas" not in dep["spec"]


@pytest.mark.parametrize(
    ("live", "expected"),
    [(None, 2), ({"spec": {}}, 2), ({"spec": {"replicas": 1}}, 2), ({"spec": {"replicas": 4}}, 4),
     ({"spec": {"replicas": 9}}, 5)],
)
def test_the_handed_over_count_stays_within_the_bounds(live: dict[str, Any] | None, expected: int) -> None:
    spec = api.Autoscaling(min_replicas=2, max_replicas=5)
    assert autoscaling.seed_replicas(spec, live) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"autoscaling": {"maxReplicas": 3}}, r"CPU utilization needs resources\.requests\.cpu"),
        ({"resources": {"requests": {"cpu": "1"}}, "autoscaling": {"maxReplicas": 3, "metrics": [
            {"type": "Memory", "averageUtilization": 50}]}}, r"resources\.requests\.memory"),
        ({"resources": CPU, "autoscaling": {"minReplicas": 4, "maxReplicas": 3}}, "must not exceed"),
        ({"resources": CPU, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}}, "minReplicas"),
        ({"resources": CPU, "autoscaling": {}}, "maxReplicas"),
        ({"resources": CPU, "autoscaling": {"maxReplicas": 3, "metrics": [
            {"type": "InFlightRequests", "averageUtilization": 50}]}}, "InFlightRequests metric takes averageValue"),
        ({"resources": CPU, "autoscaling": {"maxReplicas": 3, "metrics": [
            {"type": "CPU", "averageUtilization": 50, "averageValue": "1"}]}}, "exactly one"),
        ({"resources": CPU, "autoscaling": {"maxReplicas": 3, "metrics": [{"type": "CPU"}]}}, "exactly one"),
        ({"resources": CPU, "autoscaling": {"maxReplicas": 3, "metrics": [
            {"type": "InFlightRequests", "averageValue": "lots"}]}}, "not a quantity"),
        ({"resources": CPU, "autoscaling": {"maxReplicas": 3, "metrics": [{"type": "GPU", "averageValue": "1"}]}},
         "type"),
        ({"resources": CPU, "autoscaling": {"minReplicas": 2, "maxReplicas": 3},
          "disruptionBudget": {"minAvailable": 2}}, "minAvailable must be less than replicas"),
    ],
)
def test_bad_autoscaling_is_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(api.InvalidSpec, match=message):
        md(**spec)


def test_the_budget_is_judged_against_min_replicas_with_autoscaling() -> None:
    md(replicas=1, resources=CPU, autoscaling={"minReplicas": 3, "maxReplicas": 5}, disruptionBudget={"minAvailable": 2})


def test_hpa_status_is_read_into_the_model_deployment_status() -> None:
    assert autoscaling.observed(None) is None
    st = autoscaling.observed({"metadata": {"name": "m"}, "status": {
        "currentReplicas": 2, "desiredReplicas": 3, "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"},
            {"type": "ScalingLimited", "status": "True", "reason": "TooManyReplicas"}]}})
    assert st is not None and (st.current_replicas, st.desired_replicas, st.message) == (2, 3, "")
