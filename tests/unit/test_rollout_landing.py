"""How a rollout plan lands on the Deployment (core.rollout) and the status (core.status)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from typing import Any

from modelship_operator.core import api, builders, rollout, status

from .samples import body

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
GOOD = "registry.example.com/ml/resnet-server:1.4.2"
BAD = "fail.modelship.test/server:imagepull"


def deployment_for(desired: dict[str, Any], *, ready: bool = True) -> dict[str, Any]:
    dep = copy.deepcopy(desired)
    replicas = dep["spec"]["replicas"]
    dep["metadata"].update(generation=1)
    dep["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                     "readyReplicas": replicas if ready else 0, "availableReplicas": replicas if ready else 0,
                     "conditions": []}
    return dep


def one_pass(md: api.ModelDeployment, dep: dict[str, Any] | None, pods: list[dict[str, Any]], now: dt.datetime
             ) -> tuple[api.ModelDeployment, rollout.RolloutPlan, dict[str, Any]]:
    """What the reconciler does: plan → desired Deployment → the next status."""
    plan = rollout.plan_rollout(md, rollout.Observed(dep, pods), now=now)
    desired = rollout.desired_deployment(md, plan)
    merged = status.next_status(md, dep, pods, plan, now=now)
    data = {"metadata": md.metadata, "spec": md.spec.wire(), "status": merged.wire()}
    return api.parse(data), plan, desired


def stable_md(image: str = GOOD) -> tuple[api.ModelDeployment, dict[str, Any]]:
    md = api.parse(body(image=image))
    md, _, desired = one_pass(md, None, [], NOW)
    md, plan, desired = one_pass(md, deployment_for(desired), [], NOW + dt.timedelta(seconds=5))
    assert plan.phase == "Complete"
    return md, deployment_for(desired)


def with_image(md: api.ModelDeployment, image: str, annotations: dict[str, str] | None = None) -> api.ModelDeployment:
    data = {"metadata": {**md.metadata, "annotations": annotations or {}}, "spec": {**md.spec.wire(), "image": image},
            "status": md.status.wire()}
    return api.parse(data)


def cond(md: api.ModelDeployment, type_: str) -> api.Condition:
    return next(c for c in md.status.conditions if c.type == type_)


def test_state_survives_the_status_round_trip() -> None:
    md, _ = stable_md()
    assert md.status.rollout.phase == "Complete" and md.status.rollout.serving_revision == 1
    entry = md.status.history[0]
    assert entry.outcome == "Succeeded" and entry.hash and entry.template and entry.template["image"] == GOOD
    assert cond(md, "Ready").status == "True" and md.status.image == GOOD and md.status.stable_image == GOOD


def test_desired_deployment_carries_revision_labels_and_surge() -> None:
    md, _ = stable_md()
    plan = rollout.plan_rollout(md, rollout.Observed(None, []), now=NOW)
    dep = rollout.desired_deployment(md, plan)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels[rollout.REVISION_LABEL] == "1" and labels[rollout.REVISION_HASH_LABEL] == plan.serving_hash
    assert dep["spec"]["strategy"]["rollingUpdate"] == builders.SURGE
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert rollout.REVISION_LABEL not in dep["spec"]["selector"]["matchLabels"]


def test_rollback_serves_the_stable_template_and_status_says_so() -> None:
    md, dep = stable_md()
    md = with_image(md, BAD)
    md, plan, desired = one_pass(md, dep, [], NOW + dt.timedelta(seconds=10))
    assert plan.serving_revision == 2 and desired["spec"]["template"]["spec"]["containers"][0]["image"] == BAD
    rolling = deployment_for(desired, ready=False)
    pod = {"metadata": {"name": "resnet-x", "labels": {rollout.REVISION_LABEL: "2"},
                        "creationTimestamp": "2026-11-26T12:00:10Z"},
           "spec": {"containers": [{"name": builders.CONTAINER, "image": BAD}]},
           "status": {"containerStatuses": [{"name": builders.CONTAINER, "image": BAD, "ready": False,
                                             "restartCount": 0,
                                             "state": {"waiting": {"reason": "InvalidImageName"}}}]}}
    md, plan, desired = one_pass(md, rolling, [pod], NOW + dt.timedelta(seconds=12))
    assert plan.rolled_back == "auto"
    assert desired["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD
    assert rollout.deployment_outdated(rolling, plan)
    degraded = cond(md, "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "RolledBack") and BAD in degraded.message
    assert cond(md, "Stalled").reason == "RolledBack"
    assert md.spec.image == BAD and [h.outcome for h in md.status.history] == ["Succeeded", "RolledBack"]
    # back on the stable Deployment: still not Ready (the spec's image is not serving), still Degraded
    md, plan, _ = one_pass(md, deployment_for(desired), [], NOW + dt.timedelta(seconds=20))
    assert (cond(md, "Ready").status, cond(md, "Ready").reason) == ("False", "RolledBack")
    assert cond(md, "Degraded").reason == "RolledBack" and not plan.events


def test_plan_events_covered_by_degraded_are_not_doubled() -> None:
    plan = rollout.RolloutPlan(
        phase="RolledBack", serving_revision=1, serving_template={}, serving_hash="h", surge_mode="surge",
        status=api.ModelDeploymentStatus(), conditions=(), ready_blocker=None, requeue_after=None,
        events=(rollout.Event("Warning", "RolledBack", "x"), rollout.Event("Normal", "RolloutStarted", "y"),
                rollout.Event("Normal", "RolledBack", "manual")),
    )
    assert [e.reason for e in rollout.events_to_record(plan)] == ["RolloutStarted", "RolledBack"]


def test_template_that_no_longer_validates_falls_back_to_its_image() -> None:
    md, _ = stable_md()
    plan = rollout.plan_rollout(md, rollout.Observed(None, []), now=NOW)
    broken = dataclasses.replace(plan, serving_template={"image": "old/server:0.9", "model": 7}, serving_hash="other")
    assert rollout.serving_model(md, broken).spec.image == "old/server:0.9"
